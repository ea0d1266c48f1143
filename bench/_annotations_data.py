"""Inputs and checks of the annotation benchmark (``bench/annotations.py``).

Everything here is untimed: preparing the TotalSegmentator reference pair,
generating the label schema (mida) and the segment metadata (dcmqi) for the
same labels, placing any label map or segmentation onto the DICOM series'
voxel grid by its affine, and comparing voxels.

Grids are ``[slice, row, column]`` arrays with a 4x4 affine from those indices
to LPS millimetres (DICOM's patient space). NIfTI affines (RAS) are turned to
LPS first. Two grids are only compared when one is a lattice of the other (the
axes permuted and flipped, whole-voxel offsets): no resampling, so "equal"
means every voxel.
"""

from __future__ import annotations

import colorsys
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TS_DIR = REPO.parent / "shared" / "data" / "labelled" / "totalsegmentator_ref"
SERIES_DIR = "example_ct_dicom"
LABEL_MAP = "example_seg_dicom.nii.gz"
#: Class names: TotalSegmentator writes statistics.json in its class-map order
#: (key i is label value i), and example_seg_fast.nii.gz is the map it describes.
STATS = ("example_seg_fast/statistics.json", "example_seg_fast.nii.gz")

#: One generic concept for every label (no per-class SNOMED mapping ships in shared/).
PROPERTY_TYPE = {"CodeValue": "123037004", "CodingSchemeDesignator": "SCT",
                 "CodeMeaning": "Anatomical Structure"}
CATEGORY = {"CodeValue": "91723000", "CodingSchemeDesignator": "SCT",
            "CodeMeaning": "Anatomical Structure"}
SCHEMA_NAME = "totalsegmentator-bench"
SCHEMA_VERSION = "1.0.0"
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# ----------------------------------------------------------------- label names

def class_names(ts_dir: Path, values: list[int]) -> tuple[dict[int, str], str]:
    """Names of the label values, and where they came from.

    TotalSegmentator's class map is not in the shared folder, but its
    ``statistics.json`` lists every class of the "total" task in class-map order
    with the volume it found. The order is accepted as the class map only if
    each class's volume equals (0.1 %) the voxel count of that value in
    ``example_seg_fast.nii.gz`` times the voxel volume; otherwise every value is
    named ``label-<n>``. Names are lower-cased (mida label names are).
    """
    import nibabel as nib

    fallback = {v: f"label-{v}" for v in values}
    stats_path, map_path = ts_dir / STATS[0], ts_dir / STATS[1]
    if not stats_path.is_file() or not map_path.is_file():
        return fallback, f"label-<n>: {STATS[0]} is absent"
    stats = json.loads(stats_path.read_text())
    names = list(stats)
    img = nib.load(str(map_path))
    assert isinstance(img, nib.Nifti1Image | nib.Nifti2Image)
    data = np.asanyarray(img.dataobj)
    voxel_mm3 = float(np.prod(img.header.get_zooms()[:3]))
    counts = np.bincount(data.ravel().astype(np.int64), minlength=len(names) + 1)
    for i, name in enumerate(names, 1):
        volume = float(stats[name].get("volume", -1))
        if abs(volume - counts[i] * voxel_mm3) > 1e-3 * max(volume, 1.0):
            return fallback, (f"label-<n>: {STATS[0]} does not match {STATS[1]} at class {i} "
                              f"({name}), so its order is not taken as the class map")
    if max(values) > len(names):
        return fallback, f"label-<n>: values above the {len(names)} classes of {STATS[0]}"
    return ({v: names[v - 1].lower() for v in values},
            f"TotalSegmentator class names from {STATS[0]} (key order = label value, checked "
            f"against the volumes of {STATS[1]}: all {len(names)} classes agree), lower-cased")


def palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct RGB colours (evenly spaced hues), the same for both tools."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb(i / max(n, 1), 0.75, 0.95)
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return out


def mida_schema(names: dict[int, str]) -> dict[str, Any]:
    """The mida label schema: one mask label per value present, in value order."""
    colours = palette(len(names))
    return {
        "name": SCHEMA_NAME, "version": SCHEMA_VERSION,
        "description": "TotalSegmentator classes present in the benchmark's label map",
        "labels": [{"name": name, "type": "mask", "concept": PROPERTY_TYPE, "category": CATEGORY,
                    "colour": "#{:02x}{:02x}{:02x}".format(*colours[i])}
                   for i, (_, name) in enumerate(sorted(names.items()))],
    }  # fmt: skip


def dcmqi_metadata(names: dict[int, str]) -> dict[str, Any]:
    """dcmqi's segmentation metadata JSON for the same labels, codes and colours."""
    colours = palette(len(names))
    segments = [{
        "labelID": value, "SegmentLabel": name, "SegmentDescription": name,
        "SegmentAlgorithmType": "AUTOMATIC", "SegmentAlgorithmName": "TotalSegmentator",
        "SegmentedPropertyCategoryCodeSequence": CATEGORY,
        "SegmentedPropertyTypeCodeSequence": PROPERTY_TYPE,
        "recommendedDisplayRGBValue": list(colours[i]),
    } for i, (value, name) in enumerate(sorted(names.items()))]
    return {
        "ContentCreatorName": "TotalSegmentator", "ClinicalTrialSeriesID": "1",
        "ClinicalTrialTimePointID": "1", "SeriesDescription": "TotalSegmentator",
        "SeriesNumber": "900", "InstanceNumber": "1", "ContentLabel": "SEGMENTATION",
        "ContentDescription": "TotalSegmentator", "BodyPartExamined": "",
        "ClinicalTrialCoordinatingCenterName": "bench", "segmentAttributes": [segments],
    }  # fmt: skip


# ----------------------------------------------------------------- the series

def repair_series(src: Path, dst: Path) -> dict[str, Any]:
    """Copy the series with the UIDs its headers leave empty filled in.

    The reference series has empty SOP Class, SOP Instance, Study Instance and
    Series Instance UIDs (its file meta keeps the SOP UIDs). Both tools need
    them (mida quarantines such files as ``missing_uid``; dcmqi references the
    SOP Instance UIDs). The SOP UIDs are taken from the file meta, the study and
    series UIDs derived from the Frame of Reference UID; nothing else changes
    (the JPEG 2000 pixel data is copied as it is).
    """
    import pydicom
    from pydicom.uid import generate_uid

    dst.mkdir(parents=True, exist_ok=True)
    filled: dict[str, int] = {}
    files = sorted(p for p in src.iterdir() if p.is_file())
    for path in files:
        ds = pydicom.dcmread(path)
        base = str(ds.get("FrameOfReferenceUID") or "bench")
        wanted = {
            "SOPClassUID": str(ds.file_meta.MediaStorageSOPClassUID),
            "SOPInstanceUID": str(ds.file_meta.MediaStorageSOPInstanceUID),
            "StudyInstanceUID": generate_uid(entropy_srcs=[base, "study"]),
            "SeriesInstanceUID": generate_uid(entropy_srcs=[base, "series"]),
        }
        for keyword, value in wanted.items():
            if not str(ds.get(keyword, "") or "").strip():
                setattr(ds, keyword, value)
                filled[keyword] = filled.get(keyword, 0) + 1
        ds.save_as(dst / (path.name + ".dcm"), enforce_file_format=True)
    return {"files": len(files), "filled": filled,
            "transfer_syntax": str(pydicom.dcmread(dst / (files[0].name + ".dcm"),
                                                   stop_before_pixels=True)
                                   .file_meta.TransferSyntaxUID)}


@dataclass(frozen=True)
class Grid:
    """A ``[slice, row, column]`` voxel grid in LPS."""

    shape: tuple[int, int, int]
    affine: np.ndarray  # (slice, row, column) index -> LPS mm
    sop_uids: tuple[str, ...]  # slice k's SOP Instance UID (empty for non-DICOM grids)


def grid_affine(origin: Any, spacing_src: Any, row_cos: Any, col_cos: Any,
                normal: Any) -> np.ndarray:
    """Affine of a ``[slice, row, column]`` grid: spacing is (slice, row, column) mm."""
    a = np.eye(4)
    a[:3, 0] = np.asarray(normal, float) * float(spacing_src[0])
    a[:3, 1] = np.asarray(col_cos, float) * float(spacing_src[1])  # down the rows
    a[:3, 2] = np.asarray(row_cos, float) * float(spacing_src[2])  # along a row
    a[:3, 3] = np.asarray(origin, float)
    return a


def dicom_grid(folder: Path) -> Grid:
    """The series' grid from its headers, slices sorted along the normal."""
    import pydicom

    heads = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]
    iop = np.asarray([float(x) for x in heads[0].ImageOrientationPatient])
    row_cos, col_cos = iop[:3], iop[3:]
    normal = np.cross(row_cos, col_cos)
    heads.sort(key=lambda d: float(np.dot(normal, [float(x) for x in d.ImagePositionPatient])))
    pos = np.asarray([[float(x) for x in d.ImagePositionPatient] for d in heads])
    step = float(np.median(np.diff(pos @ normal))) if len(heads) > 1 else 1.0
    ps = [float(x) for x in heads[0].PixelSpacing]
    affine = grid_affine(pos[0], (step, ps[0], ps[1]), row_cos, col_cos, normal)
    return Grid((len(heads), int(heads[0].Rows), int(heads[0].Columns)), affine,
                tuple(str(d.SOPInstanceUID) for d in heads))


def nifti_on_lps(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI volume's array ``[i, j, k]`` and the affine from those indices to LPS."""
    import nibabel as nib

    img = nib.load(str(path))
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ValueError(f"{path.name} is not a NIfTI image")
    data = np.asanyarray(img.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data, LPS_FROM_RAS @ np.asarray(img.affine, dtype=np.float64)


def single_label(label_map: Path, value: int, out: Path) -> Path:
    """A copy of ``label_map`` holding only ``value`` (same header and affine)."""
    import nibabel as nib

    img = nib.load(str(label_map))
    assert isinstance(img, nib.Nifti1Image)
    arr = np.asanyarray(img.dataobj)
    nib.Nifti1Image(np.where(arr == value, arr, 0).astype(arr.dtype), img.affine,
                    img.header).to_filename(str(out))
    return out


class NotALattice(ValueError):
    """The two grids are not the same lattice (would need resampling)."""


def lattice_map(src_affine: np.ndarray, grid: Grid,
                tol: float = 1e-3) -> tuple[list[int], list[int], list[int]]:
    """How target axis ``a`` reads the source: ``(src_axis, sign, offset)`` lists.

    Raises :class:`NotALattice`, naming the difference, when the source's axes
    are not the grid's axes permuted/flipped with the same spacing, or its voxel
    centres are not on the grid's (``tol`` voxels).
    """
    m = np.linalg.inv(src_affine) @ grid.affine  # target index -> source index
    axes, signs, offsets = [], [], []
    for a in range(3):
        col = m[:3, a]
        b = int(np.argmax(np.abs(col)))
        if abs(abs(col[b]) - 1) > tol or np.abs(np.delete(col, b)).max() > tol:
            raise NotALattice(f"target axis {a} maps to source {np.round(col, 4).tolist()}: "
                              "other spacing or orientation")
        off = m[b, 3]
        if abs(off - round(off)) > tol:
            raise NotALattice(f"voxel centres are {off - round(off):+.4f} voxels apart on "
                              f"source axis {b}")
        axes.append(b)
        signs.append(round(col[b]))
        offsets.append(round(off))
    if sorted(axes) != [0, 1, 2]:
        raise NotALattice(f"axes do not correspond one to one ({axes})")
    return axes, signs, offsets


def onto_grid(data: np.ndarray, src_affine: np.ndarray, grid: Grid) -> tuple[np.ndarray, int]:
    """``data`` placed on ``grid`` (0 outside it), and its non-zero voxels left outside."""
    axes, signs, offsets = lattice_map(src_affine, grid)
    src = np.transpose(data, axes)
    index, valid, views = [], [], []
    for a in range(3):
        idx = signs[a] * np.arange(grid.shape[a]) + offsets[a]
        ok = (idx >= 0) & (idx < src.shape[a])
        index.append(np.where(ok, idx, 0))
        valid.append(ok)
        if ok.all():  # the whole axis lies inside the source: a (reversed) slice, no copy
            last = int(idx[-1]) + signs[a]
            views.append(slice(int(idx[0]), None if last < 0 else last, signs[a]))
    if len(views) == 3:
        out = np.ascontiguousarray(src[tuple(views)])
    else:
        out = src[np.ix_(*index)]
        keep = valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]
        out = np.where(keep, out, 0).astype(data.dtype)
    lost = int(np.count_nonzero(data)) - int(np.count_nonzero(out))
    return out, lost


def geometry_check(label_map: Path, grid: Grid) -> dict[str, Any]:
    """Does the label map line up with the series? (lattice, axes, voxels lost)."""
    data, aff = nifti_on_lps(label_map)
    out: dict[str, Any] = {"label_map_shape": list(data.shape),
                           "series_shape": list(grid.shape),
                           "label_map_affine_lps": np.round(aff, 4).tolist(),
                           "series_affine_lps": np.round(grid.affine, 4).tolist()}
    try:
        axes, signs, offsets = lattice_map(aff, grid)
    except NotALattice as exc:
        out.update(consistent=False, why=str(exc))
        return out
    _, lost = onto_grid(data, aff, grid)
    # the same voxels exactly: same extent on every axis, first voxel at the grid's corner
    exact = all(data.shape[axes[a]] == grid.shape[a]
                and offsets[a] == (0 if signs[a] > 0 else grid.shape[a] - 1) for a in range(3))
    out.update(consistent=lost == 0 and exact,
               label_map_axis_of_series_axis=axes, flipped=[s < 0 for s in signs],
               offsets=offsets, labelled_voxels_outside=lost)
    return out


def truth_on_grid(label_map: Path, grid: Grid,
                  names: dict[int, str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per label name, the reference mask on the series grid; and the label array."""
    data, aff = nifti_on_lps(label_map)
    arr, _ = onto_grid(data, aff, grid)
    return {name: arr == value for value, name in names.items()}, arr


def shifted(mask: np.ndarray, shift: tuple[int, ...]) -> np.ndarray:
    """``mask`` moved by ``shift`` voxels per axis; what leaves the array is dropped."""
    out = np.zeros_like(mask)
    dst, src = [], []
    for d, n in zip(shift, mask.shape, strict=True):
        dst.append(slice(d, n) if d >= 0 else slice(0, n + d))
        src.append(slice(0, n - d) if d >= 0 else slice(-d, n))
    out[tuple(dst)] = mask[tuple(src)]
    return out


# ----------------------------------------------------------------- checks

def dciodvfy(path: Path) -> dict[str, Any]:
    """dciodvfy's Error and Warning lines (plain and ``-new`` checks), counted."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        return {"available": False}
    errors: list[str] = []
    warnings = 0
    for args in ([], ["-new"]):
        proc = subprocess.run([exe, *args, str(path)], capture_output=True, text=True,
                              errors="replace", timeout=300, check=False)
        for line in (proc.stdout + proc.stderr).splitlines():
            line = line.strip()
            if line.startswith("Error"):
                errors.append(line)
            elif line.startswith("Warning"):
                warnings += 1
    return {"available": True, "errors": len(errors), "warnings": warnings,
            "first_errors": errors[:5]}


def segment_labels(seg: Any) -> dict[int, str]:
    """Segment number -> Segment Label of a SEG dataset (pydicom or highdicom)."""
    return {int(item.SegmentNumber): str(item.SegmentLabel) for item in seg.SegmentSequence}


def seg_masks_by_position(path: Path, grid: Grid) -> dict[str, np.ndarray]:
    """highdicom ``segread`` + ``get_volume``: each segment placed by its frames' positions."""
    import highdicom as hd

    seg = hd.seg.segread(path)
    vol = seg.get_volume(combine_segments=False)
    labels = segment_labels(seg)
    arr = np.asarray(vol.array)
    numbers = sorted(labels)
    out = {}
    for j, num in enumerate(numbers):
        placed, _ = onto_grid(arr[..., j] if arr.ndim == 4 else arr, np.asarray(vol.affine), grid)
        out[labels[num]] = placed.astype(bool)
    return out


def seg_masks_by_source(path: Path, sop_uids: list[str]) -> dict[str, np.ndarray]:
    """highdicom ``get_pixels_by_source_instance``: frames laid on the images they reference.

    This is how a reader that trusts the Derivation Image Sequence overlays a
    SEG on its source images. ``ignore_spatial_locations`` is set because a
    file that does not state Spatial Locations Preserved is otherwise refused.
    """
    import highdicom as hd

    seg = hd.seg.segread(path)
    labels = segment_labels(seg)
    numbers = sorted(labels)
    px = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=sop_uids, segment_numbers=numbers, combine_segments=False,
        ignore_spatial_locations=True)
    return {labels[num]: np.asarray(px[..., j]).astype(bool) for j, num in enumerate(numbers)}


def compare(masks: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> dict[str, Any]:
    """Segment-by-segment voxel equality against the reference label map."""
    equal, differing, missing = 0, [], sorted(set(truth) - set(masks))
    voxels_differing = 0
    for name, ref in truth.items():
        got = masks.get(name)
        if got is None:
            continue
        if got.shape == ref.shape and np.array_equal(got, ref):
            equal += 1
        else:
            differing.append(name)
            voxels_differing += (int(np.count_nonzero(got != ref)) if got.shape == ref.shape
                                 else int(ref.sum()))
    out: dict[str, Any] = {
        "segments": len(truth), "equal": equal, "differing": differing[:10],
        "differing_count": len(differing), "missing": missing,
        "extra": sorted(set(masks) - set(truth)), "voxels_differing": voxels_differing,
        "all_equal": equal == len(truth) and not missing}
    if differing:  # diagnose: would the segments match with the rows or columns reversed?
        for axis, what in ((1, "rows"), (2, "columns")):
            out[f"equal_with_{what}_reversed"] = sum(
                1 for name in differing
                if masks[name].shape == truth[name].shape
                and np.array_equal(np.flip(masks[name], axis=axis), truth[name]))
    return out
