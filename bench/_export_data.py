"""Input, mida node, timed child runs and output checks for ``bench/export.py``.

The input is a deterministic synthetic CT corpus (``_corpus``: a body-like
phantom with lungs, 12 HU of noise, PHI in every header) of 4 patients x 1
series x 500 slices of 512x512 int16, cached under ``/tmp``. A fresh mida node
ingests it (de-identifying it), every series gets one mask annotation (a ball,
status ``submitted``), and a release of the whole node is created; the
release's ``dicom`` export then gives the de-identified files on disk, byte
for byte the blobs mida reads, which is what dcm2niix is given.

Run as a program, this module is the child process that does one timed mida
run (so its peak memory and start-up are measured like dcm2niix's)::

    python bench/_export_data.py export --home H --release bench-ct@1.0.0 --format nifti --out O
    python bench/_export_data.py convert --home H --out O [--gzip]

and prints ``{"call_s": ...}``: the seconds of the export (or conversion)
call itself, without the interpreter's start-up and imports.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _corpus import Corpus, CorpusSpec, ensure_corpus
from pydicom.uid import CTImageStorage

#: 4 patients x 1 series x 500 slices = 2,000 CT instances (about 1.05 GB) at full size.
SPEC = CorpusSpec("export-ct", "CT", CTImageStorage, 512, 512, 1, 4, 1, 500)
#: ``--quick``: the same 4 series with 25 slices each (100 instances, about 53 MB).
QUICK_SCALE = 0.05
RELEASE = "bench-ct"
VERSION = "1.0.0"
READER = "bench-reader"
#: Radius of the annotated ball, mm (centred on each series' grid).
BALL_RADIUS_MM = 60.0
SCHEMA: dict[str, Any] = {
    "name": "bench-export",
    "version": "1.0.0",
    "description": "Export benchmark: one mask label",
    "labels": [
        {"name": "lesion", "type": "mask", "dims": 3, "colour": "#e6194b", "key": "1",
         "concept": {"CodeValue": "52988006", "CodingSchemeDesignator": "SCT",
                     "CodeMeaning": "Lesion"},
         "category": {"CodeValue": "49755003", "CodingSchemeDesignator": "SCT",
                      "CodeMeaning": "Morphologically Altered Structure"}},
    ],
}


def ensure_input(quick: bool, cache_dir: Path) -> tuple[Corpus, bool, float]:
    """The cached corpus: ``(corpus, generated now, seconds spent generating)``."""
    scale = QUICK_SCALE if quick else 1.0
    count = SPEC.size_at(scale)
    existed = any(cache_dir.glob(f"{SPEC.name}-n{count}-v*/manifest.json"))
    start = time.perf_counter()
    corpus = ensure_corpus(SPEC, scale, cache_dir)
    return corpus, not existed, time.perf_counter() - start


def ball(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """A ``[slice, row, column]`` ball of :data:`BALL_RADIUS_MM` around the grid's centre.

    ``spacing`` is (column, row, slice) in mm, as :class:`SeriesGeometry` gives it.
    """
    nz, ny, nx = shape
    sx, sy, sz = spacing
    y, x = np.ogrid[:ny, :nx]
    plane = ((y - (ny - 1) / 2) * sy) ** 2 + ((x - (nx - 1) / 2) * sx) ** 2
    out = np.zeros(shape, dtype=np.uint8)
    for k in range(nz):  # one slice at a time: a 500x512x512 float grid would take 1 GB
        dz2 = ((k - (nz - 1) / 2) * sz) ** 2
        if dz2 <= BALL_RADIUS_MM**2:
            out[k] = plane + dz2 <= BALL_RADIUS_MM**2
    return out


def setup_node(home: Path, corpus: Corpus) -> dict[str, Any]:
    """Init a node in ``home``, ingest, annotate each series and create the release.

    The calls are what ``mida init``, ``mida ingest``, ``mida labels add``,
    ``mida annotations import`` and ``mida release create`` run; each step is
    timed. Returns the timings and, per series, the catalog UID and the
    number of voxels in its mask.
    """
    from sqlalchemy import select

    from mida.annotations import store
    from mida.annotations.geometry import series_geometry
    from mida.annotations.schema import parse_schema
    from mida.catalog.models import Series, Study
    from mida.config import Settings
    from mida.datasets import release
    from mida.ingest import ingest_paths
    from mida.node import init_node

    times: dict[str, float] = {}
    start = time.perf_counter()
    node = init_node(Settings(home=home), "BENCH", "Bench")
    times["init_s"] = time.perf_counter() - start
    start = time.perf_counter()
    summary = ingest_paths(node, [corpus.dicom_dir], "bench", workers=2)
    times["ingest_s"] = time.perf_counter() - start
    if summary.stored != len(corpus.files):
        raise SystemExit(f"mida stored {summary.stored} of {len(corpus.files)} instances: "
                         f"{summary}")
    masks: dict[str, int] = {}
    start = time.perf_counter()
    with node.catalog().session() as s:
        schema, _ = store.add_schema(s, parse_schema(SCHEMA))
        s.flush()
        for ser in s.scalars(select(Series).order_by(Series.SeriesInstanceUID)):
            study = s.get(Study, ser.study_id)
            assert study is not None
            geo = series_geometry(s, ser.SeriesInstanceUID)
            mask = ball(geo.shape, geo.spacing)
            store.create(s, node.store(), target=store.Target(study=study, series=ser),
                         schema=schema, label="lesion", reader=READER, status="submitted",
                         mask=mask, geometry=geo)
            masks[ser.SeriesInstanceUID] = int(mask.sum())
        s.commit()
    times["annotate_s"] = time.perf_counter() - start
    start = time.perf_counter()
    with node.catalog().session() as s:
        row = release.create(s, node.store(), RELEASE, VERSION, expression='modality = "CT"',
                             description="export benchmark")
        s.commit()
        manifest = release.load_manifest(node.store(), row)
    times["release_s"] = time.perf_counter() - start
    series = {m["SeriesInstanceUID"]: {
        "split": m["split"], "PatientID": m["PatientID"], "instances": len(m["instances"]),
        "bytes": sum(i["size"] for i in m["instances"]),
        "sop_uids": {i["SOPInstanceUID"] for i in m["instances"]},
        "mask_voxels": masks[m["SeriesInstanceUID"]]} for m in manifest["series"]}
    return {"times": {k: round(v, 3) for k, v in times.items()}, "series": series,
            "instances": summary.stored, "release": f"{RELEASE}@{VERSION}"}


def dicom_input(home: Path, ref: str, series: dict[str, dict[str, Any]], work: Path) \
        -> tuple[Path, float]:
    """Export the release's de-identified DICOM and lay the image series out for dcm2niix.

    mida's ``dicom`` export writes each stored blob byte for byte, plus a DICOM
    SEG of the masks; dcm2niix gets the image files only, hard-linked into
    ``work/dcm/<n>/`` (one folder per series). Returns that folder and the
    seconds of the export.
    """
    from mida.config import Settings
    from mida.datasets import release
    from mida.datasets.export import export
    from mida.node import load_node

    node = load_node(Settings(home=home))
    out = work / "dicom-export"
    start = time.perf_counter()
    with node.catalog().session() as s:
        export(s, node.store(), release.get(s, ref), ["dicom"], out)
    seconds = time.perf_counter() - start
    root = work / "dcm"
    for n, (uid, meta) in enumerate(sorted(series.items()), 1):
        folders = [p for p in out.glob(f"DICOM/*/*/*/{uid}") if p.is_dir()]
        if len(folders) != 1:
            raise SystemExit(f"the dicom export holds {len(folders)} folders for series {uid}")
        files = sorted(folders[0].glob("*.dcm"))
        if {f.stem for f in files} != meta["sop_uids"]:
            raise SystemExit(f"the dicom export of series {uid} is not its release instances")
        dest = root / f"s{n}"
        dest.mkdir(parents=True)
        for f in files:
            os.link(f, dest / f.name)
    return root, seconds


def warm(paths: list[Path]) -> int:
    """Read every file under ``paths`` once (page cache), returning the bytes read."""
    total = 0
    for top in paths:
        for dirpath, _dirs, names in os.walk(top):
            for name in names:
                with open(os.path.join(dirpath, name), "rb") as f:
                    while chunk := f.read(1 << 22):
                        total += len(chunk)
    return total


# -- checks --------------------------------------------------------------------
def _raw(img: Any) -> np.ndarray:
    return np.asanyarray(img.dataobj.get_unscaled())


def compare(got_path: Path, ref_path: Path) -> dict[str, Any]:
    """``got`` against the reference NIfTI: shape, type, stored values, scaling, affine.

    As ``tests/datasets/test_convert.py``: stored values equal element for
    element with the same data type, ``scl_slope``/``scl_inter`` equal, and
    the affines within 1e-4 mm.
    """
    import nibabel as nib

    got: Any = nib.load(got_path)
    ref: Any = nib.load(ref_path)
    out: dict[str, Any] = {"shape": list(got.shape), "dtype": str(got.get_data_dtype())}
    out["shape_equal"] = got.shape == ref.shape
    out["dtype_equal"] = got.get_data_dtype() == ref.get_data_dtype()
    out["values_equal"] = bool(out["shape_equal"] and np.array_equal(_raw(got), _raw(ref)))
    out["scaling_equal"] = bool(
        np.isclose(float(got.dataobj.slope), float(ref.dataobj.slope), rtol=1e-6)
        and np.isclose(float(got.dataobj.inter), float(ref.dataobj.inter), rtol=1e-6,
                       atol=1e-6))
    out["affine_max_diff"] = float(np.abs(got.affine - ref.affine).max())
    out["equal"] = bool(out["shape_equal"] and out["dtype_equal"] and out["values_equal"]
                        and out["scaling_equal"] and out["affine_max_diff"] < 1e-4)
    return out


def gunzip_sha256(path: Path) -> str:
    """sha256 of a ``.gz`` file's decompressed bytes."""
    h = hashlib.sha256()
    with gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def label_check(label_path: Path, image_path: Path, voxels: int) -> dict[str, Any]:
    """A label map lies on its image's grid and holds the annotated ball, voxel for voxel."""
    import nibabel as nib

    lab: Any = nib.load(label_path)
    img: Any = nib.load(image_path)
    arr = np.asanyarray(lab.dataobj)
    count = int((arr == 1).sum())
    return {"shape_equal": lab.shape == img.shape,
            "affine_max_diff": float(np.abs(lab.affine - img.affine).max()),
            "voxels": count, "expected_voxels": voxels,
            "equal": bool(lab.shape == img.shape and count == voxels and arr.max() == 1
                          and np.allclose(lab.affine, img.affine, atol=1e-6))}


# -- the child process -----------------------------------------------------------
def _child_export(home: Path, ref: str, fmt: str, out: Path) -> dict[str, Any]:
    from mida.config import Settings
    from mida.datasets import release
    from mida.datasets.export import export
    from mida.node import load_node

    node = load_node(Settings(home=home))
    with node.catalog().session() as s:
        row = release.get(s, ref)
        start = time.perf_counter()
        result = export(s, node.store(), row, [fmt], out)
        call = time.perf_counter() - start
    return {"call_s": call, "files": len(result.report["files"]), "notes": result.notes}


def _child_convert(home: Path, out: Path, gz: bool) -> dict[str, Any]:
    from sqlalchemy import select

    from mida.catalog.models import Series
    from mida.config import Settings
    from mida.datasets.convert import series_to_nifti, write_nifti
    from mida.node import load_node

    node = load_node(Settings(home=home))
    files = 0
    with node.catalog().session() as s:
        uids = list(s.scalars(select(Series.SeriesInstanceUID).order_by(Series.id)))
        start = time.perf_counter()
        for uid in uids:
            for vol in series_to_nifti(s, node.store(), uid):
                files += len(write_nifti(vol, out / uid, gzip=gz, sidecar=True))
                del vol  # one series in memory at a time, as the export does
        call = time.perf_counter() - start
    return {"call_s": call, "files": files, "notes": []}


def child_main(argv: list[str] | None = None) -> int:
    """Entry point of the child process (module docstring)."""
    parser = argparse.ArgumentParser(prog="bench/_export_data.py")
    sub = parser.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export")
    ex.add_argument("--home", type=Path, required=True)
    ex.add_argument("--release", required=True)
    ex.add_argument("--format", required=True)
    ex.add_argument("--out", type=Path, required=True)
    cv = sub.add_parser("convert")
    cv.add_argument("--home", type=Path, required=True)
    cv.add_argument("--out", type=Path, required=True)
    cv.add_argument("--gzip", action="store_true")
    ns = parser.parse_args(argv)
    if ns.cmd == "export":
        res = _child_export(ns.home, ns.release, ns.format, ns.out)
    else:
        res = _child_convert(ns.home, ns.out, ns.gzip)
    sys.stdout.write(json.dumps(res) + "\n")
    return 0


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(child_main())
