"""Annotation benchmark: mida against dcmqi (DICOM SEG) and MedPy (agreement), one run.

Input: TotalSegmentator's reference pair in
``../shared/data/labelled/totalsegmentator_ref``: ``example_ct_dicom/`` (a
20-slice 512x512 CT series, JPEG 2000 lossless) and ``example_seg_dicom.nii.gz``
(TotalSegmentator's multi-label output for that series). The series' headers
leave the SOP, study and series UIDs empty, which neither tool accepts, so both
get the same copy with those UIDs filled in (``_annotations_data.repair_series``;
pixels untouched). The label map's affine is checked against the series'
geometry first; it must be the same voxel lattice.

Questions, each answered on the same input, machine and run for both tools
(ratio = peer time / mida time; above 1: mida faster):

1. **Label map -> DICOM SEG.** mida: a fresh node with the series ingested
   (``init_node`` + ``ingest_paths``, what ``mida init`` and ``mida ingest``
   run, timed separately) and a label schema for the values present, then
   ``import_path(label map, "nifti")`` + ``export(..., "seg")``, timed in a
   warm process (the Python API the CLI calls) and as the two CLI commands
   (new process each, start-up included). dcmqi: ``itkimage2segimage`` on the
   label map and the (non-de-identified) DICOM folder with a metadata JSON for
   the same labels, codes and colours. Each output: bytes, dciodvfy errors,
   and whether highdicom reads back the input's voxels, segment by segment,
   (a) placed by the frames' plane positions and (b) laid on the source
   images the frames reference.
2. **SEG -> masks.** Both SEGs read back by mida (``import_path(..., "seg")``,
   warm), dcmqi ``segimage2itkimage`` (one NIfTI per segment) and plain
   highdicom ``segread`` + ``get_volume`` (the reference); voxels checked.
3. **Agreement metrics.** Dice and HD95 (mm) of organ masks from the label
   map, dilated vs eroded, with ``mida.annotations.agreement`` and MedPy's
   ``dc`` / ``hd95(voxelspacing=...)``: same values (1e-6) and time.

Times are the median of ``--repeat`` runs (``--repeat 1 --no-cli``: a quick
run, under a minute on an idle 2-core machine). Results:
``bench/results/annotations-<date>[-r<N>][-q<Q>][-nocli].json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import _annotations_data as data
import _mida
import numpy as np
from _procmon import PeakRssSampler
from _result import MIB, die_with_parent, log_tail, machine_info

BENCH_DIR = Path(__file__).resolve().parent
ALL_QUESTIONS = (1, 2, 3)
DEFAULT_REPEAT = 5
#: Organs of the label map whose masks the agreement question compares (a large, a small one).
ORGANS = ("liver", "aorta")
#: How far the second mask of each pair is moved, in voxels (slice, row, column).
SHIFT = (1, 3, -2)


@dataclass(frozen=True)
class Options:
    """Parsed command line."""

    repeat: int
    questions: tuple[int, ...]
    ts_dir: Path
    results_dir: Path
    output: Path | None
    tmp_dir: Path | None
    mida: str
    timeout_s: float
    quiet: bool
    cli: bool


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults, and keep the module docstring's layout."""


def parse_args(argv: list[str] | None = None) -> Options:
    """Parse the command line into :class:`Options`."""
    parser = argparse.ArgumentParser(prog="bench/annotations.py", description=__doc__,
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                        help="timed runs per measurement (median reported); 1 = quick run")
    parser.add_argument("--questions", default="1,2,3",
                        help="comma-separated subset of 1,2,3 (2 reads 1's SEGs, so runs 1 too)")
    parser.add_argument("--ts-dir", type=Path, default=data.TS_DIR,
                        help="TotalSegmentator reference folder")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: dated)")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="parent of the work dir")
    parser.add_argument("--mida", default=_mida.default_binary(), help="mida executable")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds allowed per external command")
    parser.add_argument("--quiet", action="store_true", help="no progress or table; JSON only")
    parser.add_argument("--no-cli", action="store_true",
                        help="leave out the mida CLI rows of question 1 (~13 s per repeat)")
    ns = parser.parse_args(argv)
    try:
        questions = tuple(sorted({int(q) for q in ns.questions.split(",") if q.strip()}))
    except ValueError:
        parser.error("--questions takes numbers, e.g. 1,3")
    if not questions or set(questions) - set(ALL_QUESTIONS):
        parser.error("--questions: choose from 1,2,3")
    if ns.repeat < 1:
        parser.error("--repeat must be at least 1")
    return Options(repeat=ns.repeat, questions=questions, ts_dir=ns.ts_dir,
                   results_dir=ns.results_dir, output=ns.output, tmp_dir=ns.tmp_dir,
                   mida=ns.mida, timeout_s=ns.timeout, quiet=ns.quiet, cli=not ns.no_cli)


# -- measuring -----------------------------------------------------------------
@dataclass
class Row:
    """One timed step of one tool."""

    question: int
    tool: str
    step: str
    input: str
    seconds: list[float] = field(default_factory=list)
    peak_rss_bytes: int | None = None
    status: str = "ok"
    note: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        """Median seconds of the timed runs."""
        return statistics.median(self.seconds) if self.seconds else None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        med = self.median
        return {
            "question": self.question, "tool": self.tool, "step": self.step,
            "input": self.input, "status": self.status,
            "seconds_median": None if med is None else round(med, 4),
            "seconds_min": round(min(self.seconds), 4) if self.seconds else None,
            "seconds_all": [round(s, 4) for s in self.seconds],
            "peak_rss_mib": (None if self.peak_rss_bytes is None
                             else round(self.peak_rss_bytes / MIB, 1)),
            "note": self.note, "config": self.config, "check": self.check,
        }  # fmt: skip


class CommandError(RuntimeError):
    """An external command failed; the message carries the tail of its log."""


def run_process(cmd: list[str], log_path: Path, timeout_s: float,
                env: dict[str, str] | None = None) -> tuple[float, int]:
    """Run ``cmd`` to completion: (wall seconds, peak RSS of its process tree)."""
    with log_path.open("wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent)
        with PeakRssSampler(proc.pid, interval_s=0.02) as rss:
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
                raise CommandError(f"{Path(cmd[0]).name} did not finish within "
                                   f"{timeout_s:.0f} s") from None
        seconds = time.perf_counter() - start
    if rc != 0:
        raise CommandError(f"{Path(cmd[0]).name} exited {rc}:\n{log_tail(log_path)}")
    return seconds, rss.peak_bytes


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one in-process call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def dcmqi_binary(name: str) -> Path | None:
    """The native dcmqi program shipped in the ``dcmqi`` wheel (not its Python wrapper)."""
    try:
        import dcmqi
    except ImportError:
        return None
    path = Path(dcmqi.__file__).parent / "bin" / name
    return path if path.is_file() else None


def _seg_summary(out: dict[str, Any]) -> str:
    """One table cell for a written SEG: size, validator errors, voxels read back."""
    pos, src = out["voxels_by_position"], out["voxels_by_source_image"]
    return (f"{out['bytes'] / 1e6:.1f} MB, {out['frames']} frames, dciodvfy "
            f"{out['dciodvfy'].get('errors', '?')} errors; voxels equal {pos['equal']}/"
            f"{pos['segments']} by position, {src['equal']}/{src['segments']} on the "
            "source images")


def read_volume(path: Path) -> Any:
    """highdicom's own reading of a SEG: ``segread`` then ``get_volume`` (every segment)."""
    import highdicom as hd

    return hd.seg.segread(path).get_volume(combine_segments=False)


def ratio(peer: float | None, mida: float | None) -> float | None:
    """Peer time / mida time (above 1: mida faster)."""
    if not peer or not mida:
        return None
    return round(peer / mida, 2)


# -- the bench -----------------------------------------------------------------
class Bench:
    """Prepares the input and a mida node in ``work``, then answers the questions."""

    def __init__(self, opts: Options, work: Path) -> None:
        self.opts = opts
        self.work = work
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.info: dict[str, Any] = {}
        self.outputs: dict[str, Path] = {}
        self._by_position: dict[Path, dict[str, Any]] = {}
        self.node: Any = None
        self.series_uid = ""
        self.env = {**os.environ, "MIDA_HOME": str(work / "mida" / "home"), "NO_COLOR": "1",
                    "COLUMNS": "200"}

    def log(self, message: str) -> None:
        """Progress line on stderr."""
        if not self.opts.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    # ---- set-up (untimed, except the ingest, reported on its own)
    def prepare(self) -> None:
        """Repair the series, check the geometry, derive labels, start a mida node."""
        src = self.opts.ts_dir / data.SERIES_DIR
        label_map = self.opts.ts_dir / data.LABEL_MAP
        if not src.is_dir() or not label_map.is_file():
            raise SystemExit(f"{src} or {label_map} is absent: the benchmark needs the shared "
                             "TotalSegmentator reference files")
        self.ct = self.work / "ct"
        self.label_map = label_map
        self.info["repair"] = data.repair_series(src, self.ct)
        self.grid = data.dicom_grid(self.ct)
        self.info["geometry"] = geo = data.geometry_check(label_map, self.grid)
        if not geo["consistent"]:
            raise SystemExit(f"{label_map.name} does not line up with the series: {geo}")
        arr, _ = data.nifti_on_lps(label_map)
        values = [int(v) for v in np.unique(arr) if v]
        self.names, source = data.class_names(self.opts.ts_dir, values)
        self.info["labels"] = {"values": len(values), "names_from": source,
                               "concept": data.PROPERTY_TYPE, "category": data.CATEGORY}
        self.truth, self.label_array = data.truth_on_grid(label_map, self.grid, self.names)
        self.log(f"input: {len(values)} labels on a {self.grid.shape} grid; names: {source[:60]}")
        schema_path = self.work / "schema.json"
        schema_path.write_text(json.dumps(data.mida_schema(self.names), indent=1))
        (self.work / "dcmqi-meta.json").write_text(
            json.dumps(data.dcmqi_metadata(self.names), indent=1))

        # The node is made in this process with the functions `mida init`, `mida ingest` and
        # `mida labels add` run (four CLI start-ups cost ~10 s here, and are not the question).
        from sqlalchemy import select

        from mida.annotations.schema import parse_schema
        from mida.annotations.store import add_schema
        from mida.catalog.models import Series
        from mida.config import Settings
        from mida.deid.pseudonyms import Pseudonymizer
        from mida.ingest import ingest_paths
        from mida.node import init_node

        self.log("mida init + ingest ...")
        start = time.perf_counter()
        self.node = init_node(Settings(home=Path(self.env["MIDA_HOME"])), "BENCH", "Bench")
        init_s = time.perf_counter() - start
        ingest_s, summary = timed(lambda: ingest_paths(self.node, [self.ct], "bench", workers=1))
        if summary.stored != len(self.grid.sop_uids):
            raise SystemExit(f"mida stored {summary.stored} of {len(self.grid.sop_uids)} "
                             f"instances: {summary}")
        self.info["mida_setup"] = {
            "init_s": round(init_s, 3), "ingest_s": round(ingest_s, 3),
            "instances": summary.stored,
            "calls": "init_node(Settings(home=H), 'BENCH', 'Bench'); ingest_paths(node, [CT], "
                     "'bench', workers=1); add_schema(schema): what `mida init`, `mida ingest` "
                     "and `mida labels add` run"}  # fmt: skip
        with self.node.catalog().session() as s:
            add_schema(s, parse_schema(json.loads(schema_path.read_text())))
            self.series_uid = str(s.scalars(select(Series.SeriesInstanceUID)).one())
        pseudo = Pseudonymizer(self.node.key())
        self.catalog_sop_uids = [pseudo.uid(u) for u in self.grid.sop_uids]
        self.label_map_args = {str(v): name for v, name in self.names.items()}

    def by_position(self, path: Path) -> dict[str, Any]:
        """highdicom's reading of ``path`` (by plane positions) against the label map; cached."""
        if path not in self._by_position:
            self._by_position[path] = data.compare(data.seg_masks_by_position(path, self.grid),
                                                   self.truth)
        return self._by_position[path]

    # ---- question 1: label map -> SEG
    def _check_seg(self, key: str, path: Path, source_uids: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"bytes": path.stat().st_size, "dciodvfy": data.dciodvfy(path)}
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        shared = ds.SharedFunctionalGroupsSequence[0]
        item = (shared.get("DerivationImageSequence")
                or ds.PerFrameFunctionalGroupsSequence[0].get("DerivationImageSequence"))
        src_item = item[0].SourceImageSequence[0] if item else None
        out["frames"] = int(ds.NumberOfFrames)
        out["image_orientation"] = [float(x) for x in
                                    shared.PlaneOrientationSequence[0].ImageOrientationPatient]
        out["spatial_locations_preserved"] = (
            None if src_item is None else src_item.get("SpatialLocationsPreserved"))
        out["voxels_by_position"] = self.by_position(path)
        out["voxels_by_source_image"] = data.compare(
            data.seg_masks_by_source(path, source_uids), self.truth)
        self.log(f"{key}: {out['bytes']} bytes, dciodvfy errors "
                 f"{out['dciodvfy'].get('errors')}, voxels equal by position "
                 f"{out['voxels_by_position']['equal']}/{out['voxels_by_position']['segments']}, "
                 f"by source image {out['voxels_by_source_image']['equal']}")
        return out

    def question1(self) -> dict[str, Any]:
        """Label map -> DICOM SEG: mida (API and CLI) and dcmqi."""
        from mida.annotations.formats import ExportOptions, ImportOptions, export, import_path

        n = self.opts.repeat
        schema_ref = f"{data.SCHEMA_NAME}@{data.SCHEMA_VERSION}"

        def api(reader: str, out: Path, label_map: Path = self.label_map,
                labels: dict[str, str] = self.label_map_args) -> tuple[float, float, Path]:
            opts = ImportOptions(reader=reader, reader_kind="model", model_version="bench",
                                 schema=schema_ref, series_uid=self.series_uid, label_map=labels)
            t_imp, res = timed(lambda: import_path(self.node, label_map, "nifti", opts))
            if len(res.created) != len(labels):
                raise RuntimeError(f"mida imported {len(res.created)} of {len(labels)} "
                                   f"labels: {res.skipped[:3]}")
            t_exp, ex = timed(lambda: export(self.node, "seg",
                                             ExportOptions(out=out, reader=reader)))
            if len(ex.files) != 1:
                raise RuntimeError(f"mida export wrote {len(ex.files)} files: {ex.skipped[:3]}")
            return t_imp, t_exp, ex.files[0]

        self.log("Q1 mida API (warm-up on one label, untimed) ...")
        first = min(self.names)
        warm = data.single_label(self.label_map, first, self.work / "warmup.nii.gz")
        api("warmup", self.work / "q1" / "warmup", warm, {str(first): self.names[first]})
        imp = Row(1, "mida", "import NIfTI label map (API, warm)", data.LABEL_MAP, config={
            "call": "import_path(node, label_map, 'nifti', ImportOptions(schema=..., "
                    "series_uid=..., label_map={value: label}, reader_kind='model'))"})
        exp = Row(1, "mida", "export SEG (API, warm)", "the imported masks", config={
            "call": "export(node, 'seg', ExportOptions(out=..., reader=...))"})
        path = None
        for i in range(n):
            t_imp, t_exp, path = api(f"api-{i}", self.work / "q1" / f"api-{i}")
            imp.seconds.append(t_imp)
            exp.seconds.append(t_exp)
        assert path is not None
        self.outputs["mida"] = path
        self.rows += [imp, exp]
        self.log(f"Q1 mida API: import {imp.median:.2f} s, export {exp.median:.2f} s")

        cli_imp = Row(1, "mida", "import NIfTI label map (CLI)", data.LABEL_MAP, config={
            "command": "mida annotations import LABELMAP --format nifti --schema S --series UID "
                       "--label-map V=NAME (x31) --reader R --json"})
        cli_exp = Row(1, "mida", "export SEG (CLI)", "the imported masks", config={
            "command": "mida annotations export --format seg --out DIR --reader R --json"})
        try:
            for i in range(n if self.opts.cli else 0):
                reader = f"cli-{i}"
                cmd = [self.opts.mida, "annotations", "import", str(self.label_map),
                       "--format", "nifti", "--schema", schema_ref, "--series", self.series_uid,
                       "--reader", reader, "--json"]
                for v, name in self.label_map_args.items():
                    cmd += ["--label-map", f"{v}={name}"]
                s, rss = run_process(cmd, self.work / "cli-import.log", self.opts.timeout_s,
                                     self.env)
                cli_imp.seconds.append(s)
                cli_imp.peak_rss_bytes = max(cli_imp.peak_rss_bytes or 0, rss)
                out = self.work / "q1" / f"cli-{i}"
                s, rss = run_process([self.opts.mida, "annotations", "export", "--format", "seg",
                                      "--out", str(out), "--reader", reader, "--json"],
                                     self.work / "cli-export.log", self.opts.timeout_s, self.env)
                cli_exp.seconds.append(s)
                cli_exp.peak_rss_bytes = max(cli_exp.peak_rss_bytes or 0, rss)
                if len(list(out.glob("*.dcm"))) != 1:
                    raise CommandError(f"mida annotations export wrote no SEG into {out}")
        except CommandError as exc:
            for row in (cli_imp, cli_exp):
                row.status, row.note = "error", str(exc)[-600:]
        if not self.opts.cli:
            for row in (cli_imp, cli_exp):
                row.status, row.note = "skipped", "--no-cli"
        self.rows += [cli_imp, cli_exp]
        if cli_imp.median and cli_exp.median:
            cli_imp.note = ("CLI has no --reader-kind: segments are written as MANUAL "
                            "(the API rows say AUTOMATIC, as dcmqi)")
            self.log(f"Q1 mida CLI: import {cli_imp.median:.2f} s, export {cli_exp.median:.2f} s")

        dq = Row(1, "dcmqi", "itkimage2segimage", f"{data.LABEL_MAP} + DICOM folder", config={
            "command": "itkimage2segimage --inputImageList LABELMAP --inputDICOMDirectory CT "
                       "--inputMetadata meta.json --outputDICOM out.dcm",
            "binary": "the native program in the dcmqi wheel, called directly",
            "metadata": "segmentAttributes for the same labels: labelID, SegmentLabel, "
                        "category and type codes, AUTOMATIC/TotalSegmentator, same colours"})
        exe = dcmqi_binary("itkimage2segimage")
        if exe is None:
            dq.status, dq.note = "error", "dcmqi is not installed (pip install dcmqi)"
        else:
            try:
                for i in range(n):
                    out_path = self.work / "q1" / f"dcmqi-{i}.dcm"
                    s, rss = run_process([str(exe), "--inputImageList", str(self.label_map),
                                          "--inputDICOMDirectory", str(self.ct),
                                          "--inputMetadata", str(self.work / "dcmqi-meta.json"),
                                          "--outputDICOM", str(out_path)],
                                         self.work / "dcmqi.log", self.opts.timeout_s)
                    dq.seconds.append(s)
                    dq.peak_rss_bytes = max(dq.peak_rss_bytes or 0, rss)
                self.outputs["dcmqi"] = out_path
                self.log(f"Q1 dcmqi: {dq.median:.2f} s")
            except CommandError as exc:
                dq.status, dq.note = "error", str(exc)[-600:]
        self.rows.append(dq)

        result: dict[str, Any] = {"outputs": {}}
        self.log("Q1 checking the outputs (dciodvfy, highdicom read-back) ...")
        result["outputs"]["mida"] = self._check_seg("mida SEG", self.outputs["mida"],
                                                    self.catalog_sop_uids)
        exp.check = {"summary": _seg_summary(result["outputs"]["mida"])}
        if "dcmqi" in self.outputs:
            result["outputs"]["dcmqi"] = self._check_seg("dcmqi SEG", self.outputs["dcmqi"],
                                                         list(self.grid.sop_uids))
            dq.check = {"summary": _seg_summary(result["outputs"]["dcmqi"])}
        mida_total = (imp.median or 0) + (exp.median or 0)
        cli_total = (cli_imp.median or 0) + (cli_exp.median or 0)
        result["ratios"] = {
            "dcmqi / mida API import+export": ratio(dq.median, mida_total),
            "dcmqi / mida CLI import+export": ratio(dq.median, cli_total),
            "dcmqi / mida API export only": ratio(dq.median, exp.median),
        }
        return result

    # ---- question 2: SEG -> masks
    def _mida_masks(self, created: list[str]) -> dict[int, np.ndarray]:
        """Segment number -> the imported mask placed on the reference grid."""
        from mida.annotations import store
        from mida.annotations.geometry import SeriesGeometry

        out = {}
        blob = self.node.store()
        with self.node.catalog().session() as s:
            for uid in created:
                ann = store.get(s, uid)
                rev = store.latest(s, ann)
                g = SeriesGeometry.from_json(rev.geometry or {})
                aff = data.grid_affine(g.origin, g.spacing, *g.direction)
                mask, _ = data.onto_grid(store.load_mask(blob, rev).astype(np.uint8), aff,
                                         self.grid)
                out[int(rev.data["source_segment"])] = mask.astype(bool)
        return out

    def question2(self) -> dict[str, Any]:
        """Read both SEGs back: highdicom (reference), mida import, dcmqi segimage2itkimage."""
        import pydicom

        from mida.annotations.formats import ImportOptions, import_path

        n = self.opts.repeat
        result: dict[str, Any] = {}
        exe = dcmqi_binary("segimage2itkimage")
        for key, path in self.outputs.items():
            label = f"{key} SEG"
            labels = data.segment_labels(pydicom.dcmread(path, stop_before_pixels=True))
            ref = Row(2, "highdicom", "segread + get_volume (reference)", label, config={
                "call": "hd.seg.segread(path).get_volume(combine_segments=False)"})
            for _ in range(n):  # warm: question 1's checks made the same calls
                s, _vol = timed(functools.partial(read_volume, path))
                ref.seconds.append(s)
            ref.check = self.by_position(path)
            self.rows.append(ref)

            mi = Row(2, "mida", "import SEG (API, warm)", label, config={
                "call": "import_path(node, seg, 'seg', ImportOptions(reader=...)); schema "
                        "derived from the file"})
            created: list[str] = []
            try:
                for i in range(n):
                    opts = ImportOptions(reader=f"seg-{key}-{i}")
                    s, res = timed(functools.partial(import_path, self.node, path, "seg", opts))
                    mi.seconds.append(s)
                    created = res.created
                masks = self._mida_masks(created)
                mi.check = data.compare({labels[k]: m for k, m in masks.items()}, self.truth)
            except Exception as exc:  # a refusal (mida's error) is a result, reported
                mi.status, mi.note = "error", f"{type(exc).__name__}: {exc}"[:600]
            self.rows.append(mi)

            dq = Row(2, "dcmqi", "segimage2itkimage -t nifti", label, config={
                "command": "segimage2itkimage --inputDICOM SEG --outputDirectory DIR -t nifti "
                           "(one NIfTI per segment)"})
            if exe is None:
                dq.status, dq.note = "error", "dcmqi is not installed"
            else:
                try:
                    for i in range(n):
                        out = self.work / "q2" / f"{key}-{i}"
                        out.mkdir(parents=True)
                        s, rss = run_process([str(exe), "--inputDICOM", str(path),
                                              "--outputDirectory", str(out), "-t", "nifti"],
                                             self.work / "segimage2itkimage.log",
                                             self.opts.timeout_s)
                        dq.seconds.append(s)
                        dq.peak_rss_bytes = max(dq.peak_rss_bytes or 0, rss)
                    dq.check = data.compare(self._dcmqi_masks(out), self.truth)
                except CommandError as exc:
                    dq.status, dq.note = "error", str(exc)[-600:]
            self.rows.append(dq)
            result[label] = {"ratios": {
                "highdicom / mida": ratio(ref.median, mi.median),
                "dcmqi / mida": ratio(dq.median, mi.median)}}
            self.log(f"Q2 {label}: highdicom {ref.median:.2f} s "
                     f"(equal {ref.check.get('equal')}), mida "
                     f"{mi.median or float('nan'):.2f} s (equal {mi.check.get('equal')}), dcmqi "
                     f"{dq.median or float('nan'):.2f} s (equal {dq.check.get('equal')})")
        return result

    def _dcmqi_masks(self, folder: Path) -> dict[str, np.ndarray]:
        """segimage2itkimage's per-segment NIfTI files, named through its meta.json."""
        meta = json.loads((folder / "meta.json").read_text())
        out = {}
        for i, attrs in enumerate(meta["segmentAttributes"], 1):
            arr, aff = data.nifti_on_lps(folder / f"{i}.nii.gz")
            placed, _ = data.onto_grid(arr, aff, self.grid)
            out[str(attrs[0]["SegmentLabel"])] = placed != 0
        return out

    # ---- question 3: agreement metrics
    def question3(self) -> dict[str, Any]:
        """Dice and HD95 of organ masks: mida.annotations.agreement vs MedPy."""
        from scipy import ndimage

        from mida.annotations import agreement

        try:
            from medpy.metric.binary import dc, hd95
        except ImportError:
            return {"status": "error", "note": "medpy is not installed (pip install medpy)"}
        spacing = tuple(float(np.linalg.norm(self.grid.affine[:3, a])) for a in range(3))
        n = self.opts.repeat
        six = ndimage.generate_binary_structure(3, 1)
        pairs = []
        mida_dice = Row(3, "mida", "agreement.dice", "organ pairs")
        medpy_dice = Row(3, "medpy", "metric.binary.dc", "organ pairs")
        mida_hd = Row(3, "mida", "agreement.hd95", "organ pairs",
                      config={"spacing_mm": spacing})
        medpy_hd = Row(3, "medpy", "metric.binary.hd95(voxelspacing=...)", "organ pairs",
                       config={"spacing_mm": spacing})
        # times per pair are summed over the organs: one "run" = every pair once
        for row in (mida_dice, medpy_dice, mida_hd, medpy_hd):
            row.seconds = [0.0] * n
        worst = 0.0
        for organ in ORGANS:
            if organ not in self.truth or not self.truth[organ].any():
                self.notes.append(f"Q3: no {organ} in the label map; left out")
                continue
            m = self.truth[organ]
            a = ndimage.binary_dilation(m, structure=six, iterations=2)
            b = data.shifted(ndimage.binary_erosion(m, structure=six, iterations=1), SHIFT)
            calls: list[tuple[Row, str, Callable[[], Any]]] = [
                (mida_dice, "mida_dice", functools.partial(agreement.dice, a, b)),
                (medpy_dice, "medpy_dice", functools.partial(dc, a, b)),
                (mida_hd, "mida_hd95", functools.partial(agreement.hd95, a, b, spacing)),
                (medpy_hd, "medpy_hd95", functools.partial(hd95, a, b, voxelspacing=spacing)),
            ]
            values: dict[str, float | None] = {}
            for i in range(n):
                for row, key, fn in calls:
                    s, v = timed(fn)
                    row.seconds[i] += s
                    values[key] = None if v is None else float(v)
            d_dice = abs((values["mida_dice"] or 0) - (values["medpy_dice"] or 0))
            d_hd = abs((values["mida_hd95"] or 0) - (values["medpy_hd95"] or 0))
            worst = max(worst, d_dice, d_hd)
            pairs.append({"organ": organ, "a": "dilated 2 voxels (6-connected)",
                          "b": f"eroded 1 voxel (6-connected), moved {SHIFT} voxels "
                               "(slice, row, column)",
                          "voxels": [int(a.sum()), int(b.sum())],
                          **{k: None if v is None else round(v, 8) for k, v in values.items()},
                          "abs_diff_dice": d_dice, "abs_diff_hd95": d_hd})
            self.log(f"Q3 {organ}: dice {values['mida_dice']:.6f} / {values['medpy_dice']:.6f}, "
                     f"hd95 {values['mida_hd95']} / {values['medpy_hd95']}")
        same = f"values of {len(pairs)} pairs equal to MedPy's (max abs. difference {worst:.1e})"
        mida_dice.check = mida_hd.check = {"summary": same}
        self.rows += [mida_dice, medpy_dice, mida_hd, medpy_hd]
        return {"pairs": pairs, "max_abs_diff": worst, "same_to_1e-6": worst <= 1e-6,
                "array_shape": list(self.grid.shape), "spacing_mm": spacing,
                "ratios": {"medpy / mida dice": ratio(medpy_dice.median, mida_dice.median),
                           "medpy / mida hd95": ratio(medpy_hd.median, mida_hd.median)}}


# -- report --------------------------------------------------------------------
def table(rows: list[Row]) -> str:
    """Markdown table of the rows."""
    lines = ["| Q | tool | step | input | median s | min s | peak RSS MiB | check |",
             "|---|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        med = "—" if r.median is None else f"{r.median:.3f}"
        low = "—" if not r.seconds else f"{min(r.seconds):.3f}"
        rss = "—" if r.peak_rss_bytes is None else f"{r.peak_rss_bytes / MIB:.0f}"
        chk = ""
        if r.check.get("summary"):
            chk = str(r.check["summary"])
        elif "equal" in r.check:
            chk = f"{r.check['equal']}/{r.check['segments']} segments equal"
            flipped = r.check.get("equal_with_rows_reversed")
            if flipped:
                chk += f" ({flipped} with the rows reversed)"
        if r.status != "ok":
            chk = f"{r.status}: {r.note[:80]}"
        lines.append(f"| {r.question} | {r.tool} | {r.step} | {r.input} | {med} | {low} | "
                     f"{rss} | {chk} |")
    return "\n".join(lines)


def collect_ratios(answers: dict[str, Any]) -> dict[str, Any]:
    """Every ``ratios`` entry of the answers, by where it sits."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "ratios":
                    out[prefix] = v
                else:
                    walk(f"{prefix} {k}".strip(), v)

    walk("", answers)
    return out




def versions() -> dict[str, str]:
    """Versions of the measured tools and the libraries they rest on."""
    out: dict[str, str] = {}
    for dist in ("mida", "dcmqi", "medpy", "highdicom", "pydicom", "nibabel", "SimpleITK",
                 "numpy", "scipy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    exe = dcmqi_binary("itkimage2segimage")
    if exe is not None:
        proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True,
                              timeout=60, check=False)
        tag = [w for w in (proc.stdout + proc.stderr).split() if w.startswith("v1.")]
        out["dcmqi_binary"] = tag[0] if tag else "unknown"
    dciodvfy = shutil.which("dciodvfy")
    out["dciodvfy"] = dciodvfy or "not installed"
    return out


def main(argv: list[str] | None = None) -> int:
    """Prepare, answer the selected questions, print the table and write the JSON."""
    opts = parse_args(argv)
    machine = machine_info()
    work = Path(tempfile.mkdtemp(prefix="mida-annotations-bench-", dir=opts.tmp_dir))
    bench = Bench(opts, work)
    answers: dict[str, Any] = {}
    try:
        bench.prepare()
        if 1 in opts.questions or 2 in opts.questions:
            answers["q1_labelmap_to_seg"] = bench.question1()
        if 2 in opts.questions:
            answers["q2_seg_to_masks"] = bench.question2()
        if 3 in opts.questions:
            answers["q3_agreement"] = bench.question3()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {
        "benchmark": "annotations",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "repeat": opts.repeat, "questions": list(opts.questions),
        "machine": machine, "versions": versions(),
        "input": {"series": f"{data.SERIES_DIR}/", "label_map": data.LABEL_MAP, **bench.info},
        **answers, "rows": [r.to_json() for r in bench.rows], "notes": bench.notes,
    }  # fmt: skip
    out = opts.output
    if out is None:
        suffix = "" if opts.repeat == DEFAULT_REPEAT else f"-r{opts.repeat}"
        if opts.questions != ALL_QUESTIONS:
            suffix += f"-q{''.join(map(str, opts.questions))}"
        if not opts.cli:
            suffix += "-nocli"
        out = opts.results_dir / f"annotations-{dt.date.today().isoformat()}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")
    if not opts.quiet:
        print(table(bench.rows))
        print()
        for key, ratios in collect_ratios(answers).items():
            print(f"{key}: {ratios}")
        print(f"\nresult: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
