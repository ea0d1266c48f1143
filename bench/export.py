"""Export benchmark: mida release exports (NIfTI, nnU-Net) against dcm2niix, one run.

Input: 2,000 synthetic CT instances (4 patients x 1 series x 500 slices of
512x512 int16, about 1.05 GB; ``--quick``: the same 4 series with 25 slices)
from ``_export_data`` (a body phantom with lungs and 12 HU of noise, so gzip
has real work), cached under ``--cache-dir``. Set-up, timed and reported but
not part of any ratio: a fresh mida node ingests the files (de-identifying
them), each series gets a ``submitted`` mask annotation (a 60 mm ball), a
release of the node is created, and the release's ``dicom`` export writes
the de-identified files, byte for byte the blobs mida stores. Both tools
then convert those same 4 series from local disk: dcm2niix reads the files
(hard-linked into one folder per series), mida reads its blob store through
the release manifest. The page cache is warmed for both first.

Questions, each answered on the same input, machine and run for both tools
(ratio = peer time / mida time; above 1: mida faster):

1. **Release export to NIfTI** (``export(s, store, row, ["nifti"], out)``:
   images, JSON sidecars, one label map per reader, ``labels.json``) against
   ``dcm2niix -z y`` (pigz, when installed) and ``dcm2niix -z i`` (its
   internal single-threaded compressor).
2. **Release export to nnU-Net** (``["nnunet"]``: images, label maps,
   ``dataset.json``) against the same; and ``["nifti", "nnunet"]`` in one
   pass (each volume is converted and gzipped once for both).
3. **The converter alone** (``series_to_nifti`` + ``write_nifti``, what the
   exports call), gzipped against ``dcm2niix -z i`` / ``-z y``, and
   uncompressed (``.nii``) against ``dcm2niix -z n``.

Each run is a fresh child process (mida: ``python bench/_export_data.py
export|convert ...``), so the wall time includes start-up for both tools
and peak RSS covers the whole process tree (dcm2niix and its pigz). mida's
child also reports the seconds of the export call itself. Every output of the
last run is checked against ``dcm2niix -z n``: shape, data type, stored
values and scaling equal, affine within 1e-4 mm (dcm2niix's gzipped files:
the same bytes once decompressed); mida's label maps lie on their image's
grid and hold the annotated ball voxel for voxel.

Times are the median of ``--repeat`` runs, the methods taking turns within
each round. ``--quick`` (100 instances, one round) finishes in under a
minute. Results: ``bench/results/export-<date>[-quick][-r<N>].json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import _export_data as data
from _procmon import PeakRssSampler
from _result import MIB, die_with_parent, log_tail, machine_info

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_REPEAT = 3
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "mida-bench-cache"


@dataclass(frozen=True)
class Method:
    """One timed way of converting the 4 series."""

    key: str
    tool: str  # "mida" or "dcm2niix"
    what: str
    gzip: str  # which compressor, at which level
    args: tuple[str, ...]  # dcm2niix options, or the child's sub-command and options


REFERENCE = "dcm2niix-zn"
METHODS: dict[str, Method] = {m.key: m for m in (
    Method(REFERENCE, "dcm2niix", "dcm2niix -z n", "none (.nii)", ("-z", "n")),
    Method("mida-convert-nii", "mida", "converter, .nii (series_to_nifti + write_nifti)",
           "none (.nii)", ("convert",)),
    Method("dcm2niix-zy", "dcm2niix", "dcm2niix -z y", "pigz -6 (all cores), else miniz",
           ("-z", "y")),
    Method("dcm2niix-zi", "dcm2niix", "dcm2niix -z i", "internal miniz, level 6, 1 thread",
           ("-z", "i")),
    Method("mida-convert-gz", "mida", "converter, .nii.gz (series_to_nifti + write_nifti)",
           "zlib level 6, 4 MiB chunks on all cores", ("convert", "--gzip")),
    Method("mida-nifti", "mida", "release export nifti",
           "zlib level 6, 4 MiB chunks on all cores", ("export", "--format", "nifti")),
    Method("mida-nnunet", "mida", "release export nnunet",
           "zlib level 6, 4 MiB chunks on all cores", ("export", "--format", "nnunet")),
    Method("mida-nifti+nnunet", "mida", "release export nifti,nnunet (one pass)",
           "zlib level 6, 4 MiB chunks on all cores", ("export", "--format", "nifti,nnunet")),
)}  # fmt: skip
#: (question, mida method, peer method): the ratios reported.
RATIOS = (
    ("nifti", "mida-nifti", "dcm2niix-zy"),
    ("nifti", "mida-nifti", "dcm2niix-zi"),
    ("nnunet", "mida-nnunet", "dcm2niix-zy"),
    ("nnunet", "mida-nnunet", "dcm2niix-zi"),
    ("nifti+nnunet", "mida-nifti+nnunet", "dcm2niix-zy"),
    ("converter .nii.gz", "mida-convert-gz", "dcm2niix-zi"),
    ("converter .nii.gz", "mida-convert-gz", "dcm2niix-zy"),
    ("converter .nii", "mida-convert-nii", REFERENCE),
)


@dataclass(frozen=True)
class Options:
    """Parsed command line."""

    quick: bool
    repeat: int
    methods: tuple[str, ...]
    cache_dir: Path
    results_dir: Path
    output: Path | None
    tmp_dir: Path | None
    timeout_s: float
    quiet: bool


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults, and keep the module docstring's layout."""


def parse_args(argv: list[str] | None = None) -> Options:
    """Parse the command line into :class:`Options`."""
    parser = argparse.ArgumentParser(prog="bench/export.py", description=__doc__,
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="100 instances (4 series x 25), one round: under a minute")
    parser.add_argument("--repeat", type=int, default=None,
                        help=f"rounds (median reported); default {DEFAULT_REPEAT}, 1 with --quick")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {', '.join(METHODS)} "
                             f"({REFERENCE} always runs: it is the reference)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="where the generated DICOM input is kept between runs")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: dated)")
    parser.add_argument("--tmp-dir", type=Path, default=None,
                        help="parent of the work dir (node, DICOM copy, outputs; ~4 GB at "
                             "full size)")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds allowed per timed run")
    parser.add_argument("--quiet", action="store_true", help="no progress or table; JSON only")
    ns = parser.parse_args(argv)
    chosen = [m.strip() for m in ns.methods.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    methods = tuple(k for k in METHODS if k in chosen or k == REFERENCE)
    repeat = ns.repeat if ns.repeat is not None else (1 if ns.quick else DEFAULT_REPEAT)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    return Options(quick=ns.quick, repeat=repeat, methods=methods, cache_dir=ns.cache_dir,
                   results_dir=ns.results_dir, output=ns.output, tmp_dir=ns.tmp_dir,
                   timeout_s=ns.timeout, quiet=ns.quiet)


# -- measuring -----------------------------------------------------------------
@dataclass
class Row:
    """The timed runs of one method."""

    method: Method
    input_bytes: int
    seconds: list[float] = field(default_factory=list)
    call_seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    loadavg_1m: list[float] = field(default_factory=list)
    peak_rss_bytes: int = 0
    image_bytes: int | None = None
    output_bytes: int | None = None
    status: str = "ok"
    note: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        """Median wall seconds of the process."""
        return statistics.median(self.seconds) if self.seconds else None

    @property
    def call_median(self) -> float | None:
        """Median seconds of mida's export (or conversion) call, without start-up."""
        return statistics.median(self.call_seconds) if self.call_seconds else None

    def mb_per_s(self, seconds: float | None) -> float | None:
        """MB (10^6 bytes) of DICOM input per second."""
        return round(self.input_bytes / 1e6 / seconds, 1) if seconds else None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        m = self.method
        med, call = self.median, self.call_median
        return {
            "method": m.key, "tool": m.tool, "what": m.what, "gzip": m.gzip,
            "status": self.status,
            "seconds_median": None if med is None else round(med, 3),
            "seconds_all": [round(s, 3) for s in self.seconds],
            "mb_per_s": self.mb_per_s(med),
            "call_seconds_median": None if call is None else round(call, 3),
            "call_mb_per_s": self.mb_per_s(call),
            "cpu_seconds_median": (round(statistics.median(self.cpu_seconds), 2)
                                   if self.cpu_seconds else None),
            "peak_rss_mib": round(self.peak_rss_bytes / MIB, 1) if self.seconds else None,
            "loadavg_1m_before": self.loadavg_1m,
            "image_bytes": self.image_bytes, "output_bytes": self.output_bytes,
            "note": self.note, "config": self.config, "check": self.check,
        }  # fmt: skip


class CommandError(RuntimeError):
    """A timed run failed; the message carries the tail of its log."""


def run_timed(cmd: list[str], log: Path, stdout: Path, timeout_s: float) \
        -> tuple[float, int, float]:
    """Run ``cmd``: (wall seconds, peak RSS of its process tree, CPU seconds of the tree)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("wb") as err, stdout.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                preexec_fn=die_with_parent)
        with PeakRssSampler(proc.pid) as rss:
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
                raise CommandError(f"{Path(cmd[0]).name} did not finish within "
                                   f"{timeout_s:.0f} s") from None
        seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if rc != 0:
        raise CommandError(f"{Path(cmd[0]).name} exited {rc}:\n{log_tail(log)}\n"
                           f"{log_tail(stdout)}")
    return seconds, rss.peak_bytes, cpu


def _sizes(out: Path, kind: str) -> tuple[int, int]:
    """(bytes of the image NIfTI files, bytes of every file) under ``out``."""
    images = total = 0
    for p in out.rglob("*"):
        if not p.is_file():
            continue
        size = p.stat().st_size
        total += size
        name = p.name
        if not name.endswith((".nii", ".nii.gz")) or "_label-" in name:
            continue
        if kind == "nnunet" and "/labels" in p.as_posix():
            continue
        images += size
    return images, total


# -- the bench -----------------------------------------------------------------
class Bench:
    """Prepares input, node and DICOM copy in ``work``, then times every method."""

    def __init__(self, opts: Options, work: Path) -> None:
        self.opts = opts
        self.work = work
        self.home = work / "home"
        self.info: dict[str, Any] = {}
        self.notes: list[str] = []
        self.rows: dict[str, Row] = {}
        self.series: dict[str, dict[str, Any]] = {}
        self.dcm = work / "dcm"
        self.ref_dir = work / "out" / REFERENCE
        self.release = ""

    def log(self, message: str) -> None:
        """Progress line on stderr."""
        if not self.opts.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def prepare(self) -> None:
        """Input corpus, mida node with annotations and release, the DICOM copy, warm cache."""
        self.log("input (generated once into the cache) ...")
        corpus, generated, gen_s = data.ensure_input(self.opts.quick, self.opts.cache_dir)
        self.info["corpus"] = {"description": corpus.description, "root": str(corpus.root),
                               "instances": len(corpus.files), "bytes": corpus.total_bytes,
                               "generated_now": generated,
                               "generate_s": round(gen_s, 1) if generated else None}
        self.log(f"input: {corpus.description}, {corpus.total_bytes / 1e6:.0f} MB; "
                 "mida init + ingest + annotate + release ...")
        setup = data.setup_node(self.home, corpus)
        self.series = setup["series"]
        self.release = setup["release"]
        self.log("mida release export --format dicom (the files dcm2niix reads) ...")
        self.dcm, dicom_s = data.dicom_input(self.home, self.release, self.series, self.work)
        input_bytes = sum(m["bytes"] for m in self.series.values())
        on_disk = sum(p.stat().st_size for p in self.dcm.rglob("*.dcm"))
        if on_disk != input_bytes:
            raise SystemExit(f"the DICOM copy holds {on_disk} bytes, the release {input_bytes}")
        setup["times"]["dicom_export_s"] = round(dicom_s, 3)
        ingest_s = setup["times"]["ingest_s"]
        self.info["mida_setup"] = {
            **setup["times"], "instances": setup["instances"],
            "ingest_inst_per_s": round(setup["instances"] / ingest_s, 1),
            "ingest_mb_per_s": round(corpus.total_bytes / 1e6 / ingest_s, 1),
            "calls": "init_node; ingest_paths(node, [DIR], 'bench', workers=2); add_schema + "
                     "store.create(mask=ball, status='submitted') per series; release.create("
                     "expression='modality = \"CT\"'); export(..., ['dicom'], ...)"}
        self.info["release"] = self.release
        self.info["input"] = {
            "series": len(self.series), "instances": sum(m["instances"] for m in
                                                         self.series.values()),
            "bytes": input_bytes,
            "slices_per_series": sorted({m["instances"] for m in self.series.values()}),
            "splits": sorted(m["split"] for m in self.series.values()),
            "dcm2niix_reads": "the release's dicom export (the stored blobs byte for byte), "
                              "hard-linked into one folder per series",
            "mida_reads": "its blob store (local folder) through the release manifest"}
        start = time.perf_counter()
        warmed = data.warm([self.dcm, self.home])
        self.info["page_cache_warmed_bytes"] = warmed
        self.log(f"page cache warmed: {warmed / 1e6:.0f} MB in {time.perf_counter() - start:.1f} s")
        for key in self.opts.methods:
            self.rows[key] = Row(METHODS[key], input_bytes, config=self._config(METHODS[key]))

    def _config(self, m: Method) -> dict[str, Any]:
        if m.tool == "dcm2niix":
            return {"command": f"dcm2niix {' '.join(m.args)} -f %j -o OUT DCM",
                    "defaults": "-b y (BIDS sidecar), -ba y, -1..-9: 6, -d 5, -m 2"}
        return {"command": f"python bench/_export_data.py {' '.join(m.args)} --home H "
                           + ("--release REF --out O" if m.args[0] == "export" else "--out O")}

    def command(self, m: Method, out: Path) -> list[str]:
        """The command line of one run of ``m`` writing into ``out``."""
        if m.tool == "dcm2niix":
            return ["dcm2niix", *m.args, "-f", "%j", "-o", str(out), str(self.dcm)]
        cmd = [sys.executable, str(BENCH_DIR / "_export_data.py"), m.args[0], "--home",
               str(self.home), "--out", str(out), *m.args[1:]]
        if m.args[0] == "export":
            cmd += ["--release", self.release]
        return cmd

    def run(self) -> None:
        """``repeat`` rounds; every method once per round; the last round's outputs checked."""
        for rnd in range(self.opts.repeat):
            last = rnd == self.opts.repeat - 1
            for key, row in self.rows.items():
                if row.status != "ok":
                    continue
                m = row.method
                out = self.work / "out" / key
                shutil.rmtree(out, ignore_errors=True)
                if m.tool == "dcm2niix":
                    out.mkdir(parents=True)
                row.loadavg_1m.append(round(os.getloadavg()[0], 2))
                log, stdout = self.work / f"{key}.log", self.work / f"{key}.out"
                try:
                    seconds, rss, cpu = run_timed(self.command(m, out), log, stdout,
                                                  self.opts.timeout_s)
                except CommandError as exc:
                    row.status, row.note = "error", str(exc)[-800:]
                    self.log(f"{key}: {row.note}")
                    continue
                row.seconds.append(seconds)
                row.cpu_seconds.append(cpu)
                row.peak_rss_bytes = max(row.peak_rss_bytes, rss)
                if m.tool == "mida":
                    res = json.loads(stdout.read_text().strip().splitlines()[-1])
                    row.call_seconds.append(float(res["call_s"]))
                    row.config["notes"] = res["notes"]
                else:
                    self._dcm2niix_log(row, log, stdout)
                kind = "nnunet" if m.key == "mida-nnunet" else ""
                row.image_bytes, row.output_bytes = _sizes(out, kind)
                self.log(f"round {rnd + 1}/{self.opts.repeat} {key}: {seconds:.2f} s "
                         f"({row.input_bytes / 1e6 / seconds:.1f} MB/s), cpu {cpu:.1f} s, "
                         f"peak {rss / MIB:.0f} MiB")
                if last:
                    try:
                        row.check = self.verify(key, out)
                    except (OSError, RuntimeError, ValueError, KeyError) as exc:
                        row.check = {"equal": False, "error": f"{type(exc).__name__}: {exc}"}
                    if not row.check.get("equal"):
                        row.status, row.note = "invalid", "outputs differ from dcm2niix's"
                if key != REFERENCE:
                    shutil.rmtree(out, ignore_errors=True)

    def _dcm2niix_log(self, row: Row, log: Path, stdout: Path) -> None:
        text = stdout.read_text(errors="replace") + log.read_text(errors="replace")
        found = re.search(r'Compress: "([^"]+)"(.*?)"', text)
        if found:
            row.config["compressor"] = found.group(1).strip() + " " + found.group(2).strip()
        elif "-z" in row.method.args and row.method.args[1] in ("y", "i"):
            row.config["compressor"] = "internal (miniz)"
        warnings = sorted({ln.strip() for ln in text.splitlines() if "Warning" in ln})
        row.config["warnings"] = warnings

    # ---- checks
    def _reference(self, uid: str) -> Path:
        return self.ref_dir / f"{uid}.nii"

    def verify(self, key: str, out: Path) -> dict[str, Any]:
        """Check the outputs of ``key`` in ``out`` against the reference (module docstring)."""
        m = METHODS[key]
        per: dict[str, Any] = {}
        ok = True
        if key == REFERENCE:
            found = sorted(p.name for p in out.glob("*.nii"))
            want = sorted(f"{u}.nii" for u in self.series)
            return {"equal": found == want, "volumes": len(found),
                    "summary": f"{len(found)} volumes, one per series, named by UID"
                               if found == want else f"unexpected files: {found[:5]}"}
        ref_sha = {u: data.file_sha256(self._reference(u)) for u in self.series}
        for uid, meta in sorted(self.series.items()):
            item: dict[str, Any] = {}
            if m.tool == "dcm2niix":
                gz = out / f"{uid}.nii.gz"
                item["same_bytes_as_reference_after_gunzip"] = (
                    gz.is_file() and data.gunzip_sha256(gz) == ref_sha[uid])
                item["equal"] = item["same_bytes_as_reference_after_gunzip"]
            elif m.args[0] == "convert":
                path = out / (f"{uid}.nii.gz" if "--gzip" in m.args else f"{uid}.nii")
                item["image"] = data.compare(path, self._reference(uid))
                item["equal"] = item["image"]["equal"]
            else:
                item["equal"] = True
                if "nifti" in m.args[2]:
                    image = _one(out.glob(f"nifti/*/*/{uid}.nii.gz"))
                    label = _one(out.glob(f"nifti/*/*/{uid}_label-*.nii.gz"))
                    item["nifti_image"] = data.compare(image, self._reference(uid))
                    item["nifti_label"] = data.label_check(label, image, meta["mask_voxels"])
                    item["equal"] &= item["nifti_image"]["equal"] and item["nifti_label"]["equal"]
                if "nnunet" in m.args[2]:
                    image, label = self._nnunet_case(out, uid)
                    item["nnunet_image"] = data.compare(image, self._reference(uid))
                    item["nnunet_label"] = data.label_check(label, image, meta["mask_voxels"])
                    item["equal"] &= (item["nnunet_image"]["equal"]
                                      and item["nnunet_label"]["equal"])
            per[uid] = item
            ok &= bool(item["equal"])
        n_ok = sum(1 for v in per.values() if v["equal"])
        worst = max((v2.get("affine_max_diff", 0.0) for v in per.values() for v2 in v.values()
                     if isinstance(v2, dict)), default=0.0)
        what = ("the same bytes as dcm2niix -z n once decompressed" if m.tool == "dcm2niix"
                else "shape, type, stored values, scaling equal to dcm2niix -z n, affine "
                     f"within 1e-4 (max diff {worst:.1e})"
                     + ("; label maps on the image grid with the ball's voxels"
                        if m.args[0] == "export" else ""))
        return {"equal": ok, "series_equal": n_ok, "series": len(per),
                "summary": f"{n_ok}/{len(per)} series: {what}", "per_series": per}

    def _nnunet_case(self, out: Path, uid: str) -> tuple[Path, Path]:
        cases_file = _one(out.glob("nnUNet_raw/*/mida_cases.json"))
        cases = json.loads(cases_file.read_text())["cases"]
        case = next(c for c, v in cases.items() if v["series"] == uid)
        root = cases_file.parent
        image = _one(root.glob(f"images*/{case}_0000.nii.gz"))
        label = _one(root.glob(f"labels*/{case}.nii.gz"))
        return image, label

    def ratios(self) -> list[dict[str, Any]]:
        """Peer median / mida median: process wall time (the ratio), wall time against
        mida's call alone (``ratio_call``), and CPU seconds of the process trees
        (``ratio_cpu``: less sensitive to other work on a shared machine, but it
        credits nothing for using several cores)."""
        out = []
        for question, mk, pk in RATIOS:
            mr, pr = self.rows.get(mk), self.rows.get(pk)
            if mr is None or pr is None or mr.status != "ok" or pr.status != "ok":
                continue
            wall = pr.median / mr.median if pr.median and mr.median else None
            call = pr.median / mr.call_median if pr.median and mr.call_median else None
            mc, pc = (statistics.median(r.cpu_seconds) if r.cpu_seconds else None
                      for r in (mr, pr))
            cpu = pc / mc if pc and mc else None
            size = (round(mr.image_bytes / pr.image_bytes, 4)
                    if mr.image_bytes and pr.image_bytes else None)
            out.append({"question": question, "mida": mk, "peer": pk,
                        "ratio": None if wall is None else round(wall, 2),
                        "ratio_call": None if call is None else round(call, 2),
                        "ratio_cpu": None if cpu is None else round(cpu, 2),
                        "image_bytes_mida_over_peer": size})
        return out


def _one(paths: Any) -> Path:
    found = list(paths)
    if len(found) != 1:
        raise RuntimeError(f"expected one file, found {len(found)}: {found[:3]}")
    return Path(found[0])


# -- report --------------------------------------------------------------------
def table(rows: list[Row]) -> str:
    """Markdown table of the rows."""
    lines = ["| method | gzip | median s | MB/s | call s | call MB/s | CPU s | peak RSS MiB | "
             "images MB | check |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        j = r.to_json()

        def f(v: Any, fmt: str = "{:.2f}") -> str:
            return "—" if v is None else fmt.format(v)

        check = r.check.get("summary", "") if r.status == "ok" else f"{r.status}: {r.note[:80]}"
        lines.append(
            f"| {r.method.what} | {r.method.gzip} | {f(j['seconds_median'])} | "
            f"{f(j['mb_per_s'], '{:.1f}')} | {f(j['call_seconds_median'])} | "
            f"{f(j['call_mb_per_s'], '{:.1f}')} | {f(j['cpu_seconds_median'], '{:.1f}')} | "
            f"{f(j['peak_rss_mib'], '{:.0f}')} | "
            f"{f(None if r.image_bytes is None else r.image_bytes / 1e6, '{:.1f}')} | {check} |")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    """Versions of the measured tools and the libraries they rest on."""
    out: dict[str, str] = {}
    for dist in ("mida", "nibabel", "numpy", "pydicom"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["zlib (Python's, mida's gzip)"] = zlib.ZLIB_RUNTIME_VERSION
    try:
        proc = subprocess.run(["dcm2niix", "--version"], capture_output=True, text=True,
                              timeout=60, check=False)
        found = re.search(r"version (v\S+)", proc.stdout + proc.stderr)
        out["dcm2niix"] = found.group(1) if found else "unknown"
    except OSError:
        out["dcm2niix"] = "not installed"
    pigz = shutil.which("pigz")
    if pigz:
        proc = subprocess.run([pigz, "--version"], capture_output=True, text=True, timeout=60,
                              check=False)
        out["pigz"] = f"{(proc.stdout + proc.stderr).strip()} ({pigz}; {os.cpu_count()} threads)"
    else:
        out["pigz"] = "not installed (dcm2niix -z y falls back to its internal miniz)"
    return out


def main(argv: list[str] | None = None) -> int:
    """Prepare, time every method, check the outputs, print the table and write the JSON."""
    opts = parse_args(argv)
    if shutil.which("dcm2niix") is None:
        raise SystemExit("dcm2niix is not on PATH: install it (Debian package dcm2niix)")
    machine = machine_info()
    work = Path(tempfile.mkdtemp(prefix="mida-export-bench-", dir=opts.tmp_dir))
    bench = Bench(opts, work)
    try:
        bench.prepare()
        bench.run()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    rows = list(bench.rows.values())
    ratios = bench.ratios()
    result = {
        "benchmark": "export",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": opts.quick, "repeat": opts.repeat, "machine": machine,
        "versions": versions(), **bench.info,
        "ratios": ratios, "rows": [r.to_json() for r in rows], "notes": bench.notes,
    }  # fmt: skip
    out = opts.output
    if out is None:
        suffix = "-quick" if opts.quick else ""
        default_repeat = 1 if opts.quick else DEFAULT_REPEAT
        if opts.repeat != default_repeat:
            suffix += f"-r{opts.repeat}"
        out = opts.results_dir / f"export-{dt.date.today().isoformat()}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")
    if not opts.quiet:
        print(table(rows))
        print()
        for r in ratios:
            print(f"{r['question']}: {r['peer']} / {r['mida']} = {r['ratio']} "
                  f"(mida call only: {r['ratio_call']}; CPU: {r['ratio_cpu']}; image bytes "
                  "mida/peer "
                  f"{r['image_bytes_mida_over_peer']})")
        print(f"\nresult: {out}")
    bad = [r.method.key for r in rows if r.status != "ok"]
    return 2 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
