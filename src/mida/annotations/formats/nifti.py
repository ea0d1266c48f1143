"""NIfTI label maps: import onto a catalogued series, export one map per (series, reader).

Import
------
``import_path(node, path, options)`` reads a NIfTI-1/2 label map (``.nii`` or
``.nii.gz``, nibabel) that annotates the catalogued series ``options.series_uid``
(required). Every non-zero value of the map becomes one mask annotation:

* with ``options.label_map`` (``--label-map 1=anterior 2=posterior``) a value
  ``v`` goes to the label the map names for ``str(v)``; values the map does not
  name are not imported and are listed in ``ImportResult.skipped``;
* without a map, value ``v`` is the ``v``-th **mask** label of the schema,
  counted from 1 in the order the schema lists its labels, skipping labels of
  other types (in a schema ``[lesion (mask), size (measurement), liver (mask)]``
  1 is lesion and 2 is liver). A value with no such label is an error that lists
  the values found. Maps written by :func:`export` follow this convention, so
  they import without a map;
* without ``options.schema``, a ``labels.json`` written by :func:`export` next
  to the file names the schema (and its values are used).

Geometry: the map's affine (nibabel's choice of sform, then qform) maps its
``[i, j, k]`` voxels to RAS millimetres; the series grid is LPS and indexed
``[slice, row, column]`` (:mod:`mida.annotations.geometry`). The two grids are
compared in patient space, never by array shape:

1. **Same lattice** (the map's axes are the series' axes up to order and sign,
   and its voxel centres fall on series voxel centres within
   :data:`~mida.annotations.geometry.TOLERANCE_MM` plus 0.1 % of a voxel): the
   voxels are taken directly, axes permuted and flipped as the affine says
   (e.g. a dcm2niix map stored ``[column, flipped row, slice]``). A map that
   covers only part of the series (a crop) is padded with background; a map
   that covers all of it and more (the series is a crop of the map's space)
   is cut to the series, and ``skipped`` counts the labelled voxels left out;
   a map that lies partly over the series and partly beyond it is refused,
   since that is what a transposed array saved with the series' affine looks
   like. A map without a usable affine (see 3.) must be exactly the grid.
2. **Same space, other sampling** (axes parallel, voxel centres elsewhere):
   the map is resampled onto the series grid with SimpleITK's nearest-neighbour
   interpolator and every record's provenance says ``"resampled": true``.
   Refused when the map has the series' voxel counts but another spacing or a
   sub-voxel shift (a wrong header, not a resampling), or when the two do not
   overlap at all.
3. Anything else raises :class:`~mida.errors.GeometryMismatchError` naming the
   differences (shape, spacing, origin in mm, orientation): axes that are not
   parallel to the series' axes (oblique to it; nearest-neighbour resampling
   across a rotation would distort the outline), a sheared or singular affine,
   and an identity or missing affine (qform and sform codes 0) that does not
   happen to be the series' grid.

The file is never stored: provenance keeps its sha256, the format, the tool and
the label value. Importing the same file again for the same reader creates
nothing.

Export
------
``export(node, options)`` writes, per label schema, a folder
``<schema>@<version>/`` holding ``labels.json`` (value -> label name, coded
concept, colour; the files written and the annotations in each) and one
``<SeriesInstanceUID>_<reader>.nii.gz`` per (series, reader): an unsigned
integer array stored ``[column, row, slice]`` with the affine
``SeriesGeometry.affine_ras()`` (sform and qform code 1, scanner), values as in
the import convention above. Where two labels of one reader overlap, the label
listed later in the schema keeps the voxel and ``ExportResult.skipped`` says how
many voxels were lost.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from sqlalchemy.orm import Session

from mida import __version__
from mida.annotations import store
from mida.annotations.formats import (
    ExportOptions,
    ExportResult,
    ImportOptions,
    ImportResult,
    file_sha256,
    previous_import,
)
from mida.annotations.geometry import TOLERANCE_MM, SeriesGeometry, geometry_of_series
from mida.annotations.schema import Label, Schema
from mida.catalog.models import Annotation, AnnotationRevision, LabelSchema, Series
from mida.deid.pseudonyms import Pseudonymizer
from mida.errors import AnnotationError, GeometryMismatchError, SchemaError

FORMAT = "nifti"
LABELS_FORMAT = "mida-nifti-labels/1"
#: Axes count as parallel when their direction cosines differ by less than this.
AXIS_TOLERANCE = 1e-2
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# ----------------------------------------------------------------- reading

def _read(path: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    """(integer label array [i, j, k], RAS affine, whether the header records a space)."""
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for a non-NIfTI file
        raise AnnotationError(f"{path.name}: not a readable NIfTI file "
                              f"({type(exc).__name__}); give a .nii or .nii.gz label map") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise AnnotationError(f"{path.name}: not a NIfTI image ({type(img).__name__})")
    data = np.asanyarray(img.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    if data.ndim != 3:
        raise AnnotationError(f"{path.name}: a label map is one 3D volume; this file has shape "
                              f"{tuple(data.shape)}")
    if not np.issubdtype(data.dtype, np.integer) and (
            not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data))):
        raise AnnotationError(f"{path.name}: label values must be whole numbers; this file "
                              "holds fractional values (an image or a probability map, not "
                              "a label map)")
    if data.size and data.min() < 0:
        raise AnnotationError(f"{path.name}: label values must be 0 (background) or positive")
    if not np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.int64 if data.size and data.max() >= 2**31 else np.int32)
    hdr = img.header
    coded = int(hdr["sform_code"]) > 0 or int(hdr["qform_code"]) > 0
    return data, np.asarray(img.affine, dtype=float), coded


# ----------------------------------------------------------------- geometry

@dataclass
class _Grid:
    """A voxel grid in LPS: ``affine`` maps (i, j, k) indices to LPS mm."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return np.asarray(np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def axes(self) -> np.ndarray:
        return np.asarray(self.affine[:3, :3] / self.spacing)

    def corners(self) -> np.ndarray:
        idx = np.array([[i, j, k] for i in (0, self.shape[0] - 1) for j in (0, self.shape[1] - 1)
                        for k in (0, self.shape[2] - 1)], dtype=float)
        return np.asarray((self.affine @ np.c_[idx, np.ones(8)].T).T[:, :3])


def _series_grid(g: SeriesGeometry) -> _Grid:
    return _Grid((g.shape[2], g.shape[1], g.shape[0]), g.affine_lps())


def _mm(v: Any) -> str:
    return "(" + ", ".join(f"{float(x):.3f}" for x in v) + ")"


def _axis_match(series: _Grid, other: _Grid) -> tuple[list[int], list[int]] | None:
    """For each series axis, the map's axis parallel to it and the sign; None if oblique."""
    cos = series.axes.T @ other.axes  # [series axis, map axis]
    perm, sign = [], []
    for a in range(3):
        b = int(np.argmax(np.abs(cos[a])))
        if abs(abs(cos[a, b]) - 1.0) > AXIS_TOLERANCE:
            return None
        perm.append(b)
        sign.append(1 if cos[a, b] > 0 else -1)
    return (perm, sign) if sorted(perm) == [0, 1, 2] else None


def _describe(g: SeriesGeometry, grid: _Grid, match: tuple[list[int], list[int]] | None,
              coded: bool, identity: bool) -> list[str]:
    """The differences between a map's grid and the series' grid, in the series' terms."""
    sgrid = _series_grid(g)
    out = []
    if match is None:
        out.append("orientation differs: the map's axes (LPS) are "
                   + "; ".join(_mm(grid.axes[:, b]) for b in range(3))
                   + " but the series' column, row and slice axes are "
                   + "; ".join(_mm(sgrid.axes[:, a]) for a in range(3))
                   + " (not parallel: an oblique reformat cannot be resampled faithfully)")
        shape = tuple(grid.shape)
        out.append(f"shape: the map has {shape} voxels (i, j, k) and the series "
                   f"{tuple(g.shape)} (slices, rows, columns)")
    else:
        perm = match[0]
        shape_s = (grid.shape[perm[2]], grid.shape[perm[1]], grid.shape[perm[0]])
        if shape_s != tuple(g.shape):
            out.append(f"shape differs: the map has {shape_s} voxels as (slices, rows, columns) "
                       f"but the series has {tuple(g.shape)}")
        sp = grid.spacing
        sp_s = (sp[perm[2]], sp[perm[1]], sp[perm[0]])
        if not np.allclose(sp_s, g.spacing, rtol=1e-3, atol=1e-3):
            out.append(f"spacing differs: the map's voxels are {_mm(sp_s)} mm (slice, row, "
                       f"column) but the series' are {_mm(g.spacing)} mm")
    first = _first_voxel_lps(grid, g, match)
    if np.linalg.norm(first - np.asarray(g.origin)) > TOLERANCE_MM:
        which = ("first voxel (0, 0, 0)" if match is None
                 else "voxel that corresponds to the series' first voxel")
        out.append(f"origin differs: the map's {which} is at LPS {_mm(first)} mm but the "
                   f"series starts at {_mm(g.origin)} mm "
                   f"({np.linalg.norm(first - np.asarray(g.origin)):.3f} mm apart)")
    if not _overlaps(sgrid, grid):
        lo_m, hi_m = grid.corners().min(axis=0), grid.corners().max(axis=0)
        lo_s, hi_s = sgrid.corners().min(axis=0), sgrid.corners().max(axis=0)
        out.append(f"no overlap: the map covers LPS {_mm(lo_m)}..{_mm(hi_m)} mm and the series "
                   f"{_mm(lo_s)}..{_mm(hi_s)} mm")
    if identity or not coded:
        out.append("the map's affine is " + ("the identity" if identity else "not set (qform "
                   "and sform codes 0)") + ": it was saved without the image's geometry; save "
                   "it with the series' affine (mida annotations export --format nifti writes "
                   "one; SimpleITK: CopyInformation from the image read with ImageSeriesReader)")
    if not g.has_patient_frame:
        out.append("the series has no patient frame of reference (projection or photo): "
                   "only a map on mida's own grid (as exported) fits it")
    return out


def _overlaps(sgrid: _Grid, grid: _Grid) -> bool:
    """Whether the map's voxels (as boxes) meet the series' voxels, in series index space."""
    m = np.linalg.inv(sgrid.affine) @ grid.affine
    idx = (np.linalg.inv(sgrid.affine) @ np.c_[grid.corners(), np.ones(8)].T).T[:, :3]
    half = 0.5 * np.abs(m[:3, :3]).sum(axis=1)  # half a map voxel, in series voxels
    lo, hi = idx.min(axis=0) - half, idx.max(axis=0) + half
    n = np.asarray(sgrid.shape, dtype=float)
    return bool(np.all(hi > -0.5) and np.all(lo < n - 0.5))


def _first_voxel_lps(grid: _Grid, g: SeriesGeometry,
                     match: tuple[list[int], list[int]] | None) -> np.ndarray:
    """The map's voxel corresponding to the series' voxel (0, 0, 0) in the map's own order."""
    if match is None:
        return np.asarray(grid.affine[:3, 3])
    perm, sign = match
    idx = np.zeros(3)
    for a in range(3):
        b = perm[a]
        idx[b] = 0 if sign[a] > 0 else grid.shape[b] - 1
    return np.asarray((grid.affine @ np.r_[idx, 1.0])[:3])


def _mismatch(path: Path, g: SeriesGeometry, reasons: list[str]) -> GeometryMismatchError:
    return GeometryMismatchError(
        f"{path.name} does not fit series {g.series_uid}: " + "; ".join(reasons))


def map_to_series(path: Path, data: np.ndarray, affine_ras: np.ndarray, coded: bool,
                  g: SeriesGeometry) -> tuple[np.ndarray, bool, list[str]]:
    """The label array on the series grid ``[slice, row, column]``, whether it was resampled,
    and notes on labelled voxels left outside the series.

    See the module docstring for the rules; raises :class:`GeometryMismatchError`.
    """
    lps = LPS_FROM_RAS @ affine_ras
    grid = _Grid(tuple(int(x) for x in data.shape), lps)  # type: ignore[arg-type]
    identity = bool(np.allclose(affine_ras, np.eye(4)))
    if abs(np.linalg.det(lps[:3, :3])) < 1e-9 or np.any(grid.spacing < 1e-6):
        raise _mismatch(path, g, ["the map's affine is singular (a zero voxel size or "
                                  "collinear axes): it records no usable geometry"])
    ortho = grid.axes.T @ grid.axes
    if not np.allclose(ortho, np.eye(3), atol=1e-3):
        raise _mismatch(path, g, ["the map's affine is sheared (its axes are not "
                                  "perpendicular), which no DICOM series is"])
    sgrid = _series_grid(g)
    match = _axis_match(sgrid, grid)
    if match is None:
        raise _mismatch(path, g, _describe(g, grid, match, coded, identity))
    # map voxel index -> series (column, row, slice) index
    m = np.linalg.inv(sgrid.affine) @ grid.affine
    corners_idx = np.array([[i, j, k, 1.0] for i in (0, grid.shape[0] - 1)
                            for j in (0, grid.shape[1] - 1) for k in (0, grid.shape[2] - 1)])
    mapped = (m @ corners_idx.T).T[:, :3]
    resid_mm = np.abs(mapped - np.round(mapped)) * sgrid.spacing
    tol = TOLERANCE_MM + 1e-3 * float(sgrid.spacing.max())
    perm, sign = match
    lattice = bool(np.all(resid_mm < tol)) and np.allclose(
        np.abs(m[:3, :3]), _perm_matrix(perm), atol=1e-3)
    series_shape = sgrid.shape  # (columns, rows, slices)
    if lattice:
        lo = np.round(mapped.min(axis=0)).astype(int)
        hi = np.round(mapped.max(axis=0)).astype(int)
        n = np.asarray(series_shape)
        exact = bool(np.all(lo == 0) and np.all(hi == n - 1))
        inside = bool(np.all(lo >= 0) and np.all(hi <= n - 1))
        superset = bool(np.all(lo <= 0) and np.all(hi >= n - 1))
        if not exact and (identity or not coded or not (inside or superset)):
            reasons = _describe(g, grid, match, coded, identity)
            if _overlaps(sgrid, grid) and not (inside or superset):
                span = f"{tuple(int(x) for x in lo)}..{tuple(int(x) for x in hi)}"
                reasons.append("the map lies on the series' voxel grid but only partly over "
                               f"it (series voxels {span} as (column, row, slice)); a "
                               "transposed array saved with the series' affine looks like this")
            raise _mismatch(path, g, reasons)
        arr = np.transpose(data, perm)
        for a in range(3):
            if sign[a] < 0:
                arr = np.flip(arr, axis=a)
        notes: list[str] = []
        if superset:  # the series is a crop of the map's space
            inner = arr[-lo[0]:-lo[0] + n[0], -lo[1]:-lo[1] + n[1], -lo[2]:-lo[2] + n[2]]
            before = dict(zip(*np.unique(arr, return_counts=True), strict=True))
            after = dict(zip(*np.unique(inner, return_counts=True), strict=True))
            for v, count in sorted(before.items()):
                lost = int(count) - int(after.get(v, 0))
                if v != 0 and lost:
                    notes.append(f"label value {int(v)}: {lost} voxel(s) lie outside the series "
                                 "(the map covers a larger region); those were not imported")
            out = inner
        else:
            out = np.zeros(series_shape, dtype=data.dtype)
            out[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = arr
        return np.ascontiguousarray(np.transpose(out, (2, 1, 0))), False, notes
    reasons = _describe(g, grid, match, coded, identity)
    shape_s = tuple(grid.shape[perm[a]] for a in range(3))
    if identity or not coded:
        raise _mismatch(path, g, reasons)
    if shape_s == series_shape:
        reasons.append("the map has the series' voxel counts but not its voxel positions: a "
                       "resampled map would have other counts, so the header (spacing or "
                       "origin) is probably wrong")
        raise _mismatch(path, g, reasons)
    if not _overlaps(sgrid, grid):
        raise _mismatch(path, g, reasons)
    return _resample(data, lps, g), True, []


def _perm_matrix(perm: list[int]) -> np.ndarray:
    p = np.zeros((3, 3))
    for a, b in enumerate(perm):
        p[a, b] = 1.0
    return p


def _resample(data: np.ndarray, lps: np.ndarray, g: SeriesGeometry) -> np.ndarray:
    """Nearest-neighbour resampling (SimpleITK) of the map onto the series grid."""
    dtype = np.uint8 if data.max(initial=0) < 256 else np.uint16 if data.max() < 65536 \
        else np.uint32
    moving = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
                                    .astype(dtype))
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    axes = lps[:3, :3] / spacing
    moving.SetSpacing([float(x) for x in spacing])
    moving.SetOrigin([float(x) for x in lps[:3, 3]])
    moving.SetDirection([float(x) for x in axes.flatten()])
    ref = sitk.Image(int(g.shape[2]), int(g.shape[1]), int(g.shape[0]), moving.GetPixelID())
    ref.SetSpacing((float(g.spacing[2]), float(g.spacing[1]), float(g.spacing[0])))
    ref.SetOrigin(tuple(float(x) for x in g.origin))
    ref.SetDirection([float(x) for x in np.column_stack(g.direction).flatten()])
    out = sitk.Resample(moving, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                        moving.GetPixelID())
    return np.asarray(sitk.GetArrayFromImage(out))


# ----------------------------------------------------------------- import

def _mask_labels(schema: Schema) -> list[Label]:
    return [lb for lb in schema.labels if lb.type == "mask"]


def _sidecar(path: Path) -> dict[str, Any] | None:
    side = path.parent / "labels.json"
    if not side.is_file():
        return None
    try:
        body = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) and body.get("format") == LABELS_FORMAT else None


def _values_to_labels(path: Path, values: list[int], schema: Schema, options: ImportOptions,
                      sidecar: dict[str, Any] | None,
                      result: ImportResult) -> dict[int, Label]:
    out: dict[int, Label] = {}
    if options.label_map:
        for v in values:
            name = options.label_map.get(str(v))
            if name is None:
                result.skipped.append(f"label value {v}: not in --label-map; not imported")
                continue
            lb = schema.label(name)
            if lb.type != "mask":
                raise SchemaError(f"--label-map {v}={name}: label {name!r} of {schema.ref} is a "
                                  f"{lb.type} label; a label map fills mask labels")
            out[v] = lb
        unknown = sorted(set(options.label_map) - {str(v) for v in values})
        if unknown:
            result.skipped.append("--label-map names values the file does not hold: "
                                  + ", ".join(unknown))
        return out
    masks = _mask_labels(schema)
    by_sidecar = {}
    if sidecar is not None and sidecar.get("schema") == schema.ref:
        by_sidecar = {int(k): v.get("name") for k, v in (sidecar.get("labels") or {}).items()
                      if str(k).isdigit() and isinstance(v, dict)}
    missing = []
    for v in values:
        if v in by_sidecar:
            out[v] = schema.label(str(by_sidecar[v]))
        elif 1 <= v <= len(masks):
            out[v] = masks[v - 1]
        else:
            missing.append(v)
    if missing:
        raise SchemaError(
            f"{path.name} holds label values {', '.join(map(str, values))}; without --label-map "
            f"value v is the v-th mask label of {schema.ref} ("
            + ", ".join(f"{i}={lb.name}" for i, lb in enumerate(masks, 1))
            + f"), so {', '.join(map(str, missing))} have no label: give --label-map VALUE=LABEL")
    return out


def _schema_row(s: Session, path: Path, options: ImportOptions,
                sidecar: dict[str, Any] | None) -> tuple[LabelSchema, Schema]:
    ref = options.schema or (sidecar or {}).get("schema")
    if not ref:
        raise SchemaError(f"{path.name}: a NIfTI label map does not name its labels: give "
                          "--schema NAME[@VERSION] (and --label-map VALUE=LABEL)")
    return store.get_schema(s, str(ref))


def import_path(node: Any, path: Path, options: ImportOptions) -> ImportResult:
    """Import a NIfTI label map onto ``options.series_uid`` (see the module docstring)."""
    if not options.series_uid:
        raise AnnotationError(f"{path.name}: a NIfTI label map carries no DICOM UIDs: name the "
                              "series it annotates with --series UID (as stored in mida; see "
                              "'mida annotations ls' or the catalog)")
    sha = file_sha256(path)
    result = ImportResult(file_sha256=sha)
    data, affine, coded = _read(path)
    sidecar = _sidecar(path)
    with node.catalog().session() as s:
        row, schema = _schema_row(s, path, options, sidecar)
        result.schema = schema.ref
        done = previous_import(s, sha, options, path.name, schema.ref)
        if done is not None:
            return done
        mapper = store.UidMapper(s, Pseudonymizer(node.key()))
        target = mapper.target(series_uid=options.series_uid)
        assert target.series is not None
        g = geometry_of_series(s, target.series)
        values = [int(v) for v in np.unique(data) if v != 0]
        if not values:
            raise AnnotationError(f"{path.name}: the label map is empty (every voxel is 0)")
        labels = _values_to_labels(path, values, schema, options, sidecar, result)
        arr, resampled, notes = map_to_series(path, data, affine, coded, g)
        result.skipped.extend(notes)
        blob = node.store()
        for v, lb in sorted(labels.items()):
            mask = arr == v
            if not mask.any():
                result.skipped.append(f"label value {v} ({lb.name}): no voxel of it lies on the "
                                      "series grid; not imported")
                continue
            rev = store.create(
                s, blob, target=target, schema=row, label=lb.name, reader=options.reader,
                reader_kind=options.reader_kind, status=options.status, mask=mask, geometry=g,
                author=options.author, model_version=options.model_version,
                provenance={"format": FORMAT, "file_sha256": sha, "tool": f"mida {__version__}",
                            "label_value": v, "resampled": resampled})
            ann = s.get(Annotation, rev.annotation_id)
            assert ann is not None
            result.created.append(ann.uid)
    return result


# ----------------------------------------------------------------- export

def _safe(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.@-]+", "-", name).strip("-.") or "reader"
    return safe[:64]


def export(node: Any, options: ExportOptions) -> ExportResult:
    """Write label maps and ``labels.json`` per schema into ``options.out``."""
    result = ExportResult()
    blob = node.store()
    with node.catalog().session() as s:
        schema_id = None
        if options.schema:
            schema_id = store.get_schema(s, options.schema)[0].id
        rows = store.query(s, collection_ids=options.collection_ids, series_uid=options.series_uid,
                           reader=options.reader, status=options.status, task_id=options.task_id,
                           schema_id=schema_id)
        others = [a for a, _ in rows if a.kind != "mask"]
        if others:
            result.skipped.append(f"{len(others)} annotation(s) that are not masks: a NIfTI "
                                  "label map holds masks only")
        groups: dict[tuple[int, int, str], list[tuple[Annotation, AnnotationRevision]]] = {}
        for ann, rev in rows:
            if ann.kind == "mask" and ann.series_id is not None:
                groups.setdefault((ann.schema_id, ann.series_id, ann.reader), []).append((ann, rev))
        manifests: dict[int, dict[str, Any]] = {}
        for (sid, series_id, reader), members in sorted(groups.items(),
                                                        key=lambda kv: (kv[0][0], kv[0][1],
                                                                        kv[0][2])):
            schema_row = s.get(LabelSchema, sid)
            assert schema_row is not None
            schema = store.schema_of(s, sid)
            series = s.get(Series, series_id)
            assert series is not None
            g = geometry_of_series(s, series)
            values = {lb.name: i for i, lb in enumerate(_mask_labels(schema), 1)}
            dtype = np.uint8 if len(values) < 256 else np.uint16
            arr = np.zeros(g.shape, dtype=dtype)
            exported = []
            for ann, rev in sorted(members, key=lambda m: (values.get(m[0].label, 0), m[0].id)):
                if rev.geometry is None or ann.label not in values:
                    result.skipped.append(f"annotation {ann.uid}: no mask to export")
                    continue
                try:
                    g.check_same_grid(SeriesGeometry.from_json(rev.geometry),
                                      what=f"annotation {ann.uid}")
                except GeometryMismatchError as exc:
                    result.skipped.append(f"{exc}; not exported")
                    continue
                mask = store.load_mask(blob, rev)
                v = values[ann.label]
                taken = mask & (arr != 0) & (arr != v)
                if taken.any():
                    result.skipped.append(
                        f"series {series.SeriesInstanceUID}, reader {reader}: "
                        f"{int(taken.sum())} voxel(s) of other labels overlap {ann.label!r}; "
                        f"the label map keeps {ann.label!r} there")
                arr[mask] = v
                exported.append({"annotation": ann.uid, "label": ann.label, "value": v,
                                 "revision": rev.revision, "status": rev.status})
            if not exported:
                continue
            folder = options.out / _safe(f"{schema_row.name}@{schema_row.version}")
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{series.SeriesInstanceUID}_{_safe(reader)}.nii.gz"
            affine = g.affine_ras()
            img = nib.Nifti1Image(np.ascontiguousarray(np.transpose(arr, (2, 1, 0))), affine)
            img.set_sform(affine, code=1)
            img.set_qform(affine, code=1)
            img.header.set_xyzt_units("mm")
            img.header["descrip"] = b"mida label map"
            nib.save(img, str(folder / name))
            result.files.append(folder / name)
            result.annotations += len(exported)
            man = manifests.setdefault(sid, {
                "format": LABELS_FORMAT, "schema": schema.ref, "tool": f"mida {__version__}",
                "labels": {str(i): {"name": lb.name, "concept": lb.concept.model_dump(),
                                    "colour": lb.colour}
                           for i, lb in enumerate(_mask_labels(schema), 1)},
                "convention": "array [column, row, slice] of the series grid; affine RAS mm; "
                              "0 is background",
                "files": [], "_folder": folder})
            man["files"].append({"file": name, "series": series.SeriesInstanceUID,
                                 "study": g.study_uid, "reader": reader,
                                 "annotations": exported})
        for man in manifests.values():
            folder = man.pop("_folder")
            path = folder / "labels.json"
            path.write_text(json.dumps(man, indent=2, sort_keys=True), encoding="utf-8")
            result.files.append(path)
    return result
