"""The voxel grid of a stored series: the frame every mask is tied to.

Geometry is read from the catalog's DICOM JSON (``Instance.dataset``), never
from files. Slices are ordered along the slice normal (the cross product of the
row and column direction cosines), as dcm2niix and highdicom do; single-frame
and enhanced multi-frame series are both handled. Images without a patient
frame of reference (CR, DX, SC, US) get an identity orientation, one slice per
frame, and their pixel spacing (1 mm when none is recorded).

Arrays are indexed ``[slice, row, column]``. ``origin`` is the patient position
(LPS, mm) of the first slice's top-left pixel centre; ``spacing`` is
``(slice, row, column)`` spacing in mm; ``direction`` holds the row cosines
(direction of increasing column index), the column cosines (increasing row
index) and the slice normal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from mida.catalog.models import Instance, Series
from mida.errors import GeometryMismatchError, NotFoundError

#: Two grids match when their positions agree to this many mm (a tenth of a typical voxel).
TOLERANCE_MM = 0.05
IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


@dataclass(frozen=True)
class SliceRef:
    """Where slice ``k`` of the grid comes from: an instance and its frame (1-based)."""

    sop_instance_uid: str
    sop_class_uid: str
    frame: int


@dataclass(frozen=True)
class SeriesGeometry:
    """The grid of a series (see the module docstring for conventions)."""

    series_uid: str
    study_uid: str
    frame_of_reference_uid: str | None
    shape: tuple[int, int, int]
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: tuple[tuple[float, float, float], ...]
    slices: tuple[SliceRef, ...] = field(repr=False)
    positions: tuple[tuple[float, float, float], ...] = field(repr=False)
    has_patient_frame: bool = True

    # --- (de)serialisation for AnnotationRevision.geometry -------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "series_uid": self.series_uid,
            "study_uid": self.study_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "shape": list(self.shape),
            "origin": list(self.origin),
            "spacing": list(self.spacing),
            "direction": [list(r) for r in self.direction],
            "slices": [[s.sop_instance_uid, s.sop_class_uid, s.frame] for s in self.slices],
            "positions": [list(p) for p in self.positions],
            "has_patient_frame": self.has_patient_frame,
        }

    @classmethod
    def from_json(cls, js: dict[str, Any]) -> SeriesGeometry:
        return cls(
            series_uid=js["series_uid"],
            study_uid=js["study_uid"],
            frame_of_reference_uid=js.get("frame_of_reference_uid"),
            shape=tuple(js["shape"]),
            origin=tuple(js["origin"]),
            spacing=tuple(js["spacing"]),
            direction=tuple(tuple(r) for r in js["direction"]),
            slices=tuple(SliceRef(u, c, int(f)) for u, c, f in js["slices"]),
            positions=tuple(tuple(p) for p in js["positions"]),
            has_patient_frame=bool(js.get("has_patient_frame", True)),
        )

    # --- coordinates ---------------------------------------------------------------
    def affine_lps(self) -> np.ndarray:
        """4x4 matrix from (column, row, slice) voxel indices to LPS millimetres."""
        a = np.eye(4)
        row_cos, col_cos, normal = (np.asarray(v, dtype=float) for v in self.direction)
        a[:3, 0] = row_cos * self.spacing[2]
        a[:3, 1] = col_cos * self.spacing[1]
        a[:3, 2] = normal * self.spacing[0]
        a[:3, 3] = self.origin
        return a

    def affine_ras(self) -> np.ndarray:
        """4x4 NIfTI affine for an array stored as ``[column, row, slice]`` (RAS mm)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps()

    def to_voxel(self, points_lps: np.ndarray) -> np.ndarray:
        """LPS points (N, 3) to continuous (column, row, slice) indices (N, 3)."""
        inv = np.linalg.inv(self.affine_lps())
        pts = np.c_[np.asarray(points_lps, dtype=float), np.ones(len(points_lps))]
        return (inv @ pts.T).T[:, :3]

    def slice_of(self, sop_instance_uid: str, frame: int = 1) -> int:
        for k, s in enumerate(self.slices):
            if s.sop_instance_uid == sop_instance_uid and s.frame == frame:
                return k
        raise GeometryMismatchError(
            f"instance {sop_instance_uid} frame {frame} is not a slice of series {self.series_uid}"
        )

    def check_same_grid(self, other: SeriesGeometry, *, what: str = "the mask") -> None:
        """Raise :class:`GeometryMismatchError` naming the first difference."""
        if tuple(other.shape) != tuple(self.shape):
            raise GeometryMismatchError(
                f"{what} has shape {tuple(other.shape)} (slices, rows, columns) but series "
                f"{self.series_uid} has {tuple(self.shape)}"
            )
        if not np.allclose(other.spacing, self.spacing, atol=1e-3, rtol=1e-3):
            raise GeometryMismatchError(
                f"{what} has spacing {_mm(other.spacing)} but the series has {_mm(self.spacing)}"
            )
        if not np.allclose(other.direction, self.direction, atol=1e-3):
            raise GeometryMismatchError(
                f"{what} is oriented {_dir(other.direction)} but the series is "
                f"{_dir(self.direction)}"
            )
        if not np.allclose(other.origin, self.origin, atol=TOLERANCE_MM + 1e-3 * max(self.spacing)):
            raise GeometryMismatchError(
                f"{what} starts at {_mm(other.origin)} (LPS mm) but the series starts at "
                f"{_mm(self.origin)}"
            )


def _mm(v: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.3f}" for x in v) + ")"


def _dir(d: Sequence[Sequence[float]]) -> str:
    return "[" + "; ".join(_mm(r) for r in d) + "]"


def _values(js: dict[str, Any], tag: str) -> list[Any] | None:
    el = js.get(tag)
    if not el:
        return None
    v = el.get("Value")
    return list(v) if v else None


def _first(js: dict[str, Any], tag: str) -> Any:
    v = _values(js, tag)
    return v[0] if v else None


def _item(js: dict[str, Any], seq_tag: str) -> dict[str, Any] | None:
    v = _values(js, seq_tag)
    return v[0] if v and isinstance(v[0], dict) else None


def _floats(v: list[Any] | None, n: int) -> tuple[float, ...] | None:
    if not v or len(v) < n:
        return None
    try:
        return tuple(float(x) for x in v[:n])
    except (TypeError, ValueError):
        return None


IPP, IOP, PIXEL_SPACING, IMAGER_SPACING = "00200032", "00200037", "00280030", "00181164"
FOR, SHARED_FG, PER_FRAME_FG = "00200052", "52009229", "52009230"
PLANE_POSITION, PLANE_ORIENTATION, PIXEL_MEASURES = "00209113", "00209116", "00289110"
SLICE_THICKNESS, SPACING_BETWEEN = "00180050", "00180088"


def _frames(js: dict[str, Any]) -> list[tuple[int, tuple[float, ...] | None,
                                               tuple[float, ...] | None,
                                               tuple[float, ...] | None]]:
    """(frame, position, orientation, pixel spacing) of every frame of an instance."""
    n = int(_first(js, "00280008") or 1)
    top_pos = _floats(_values(js, IPP), 3)
    top_ori = _floats(_values(js, IOP), 6)
    top_sp = _floats(_values(js, PIXEL_SPACING), 2) or _floats(_values(js, IMAGER_SPACING), 2)
    shared = _item(js, SHARED_FG) or {}
    sh_ori = _floats(_values(_item(shared, PLANE_ORIENTATION) or {}, IOP), 6)
    sh_sp = _floats(_values(_item(shared, PIXEL_MEASURES) or {}, PIXEL_SPACING), 2)
    per = _values(js, PER_FRAME_FG) or []
    out = []
    for i in range(n):
        fg = per[i] if i < len(per) and isinstance(per[i], dict) else {}
        pos = _floats(_values(_item(fg, PLANE_POSITION) or {}, IPP), 3) or (
            top_pos if n == 1 else None)
        ori = _floats(_values(_item(fg, PLANE_ORIENTATION) or {}, IOP), 6) or sh_ori or top_ori
        sp = _floats(_values(_item(fg, PIXEL_MEASURES) or {}, PIXEL_SPACING), 2) or sh_sp or top_sp
        out.append((i + 1, pos, ori, sp))
    return out


def geometry_of_instances(series_uid: str, study_uid: str,
                          datasets: Sequence[dict[str, Any]]) -> SeriesGeometry:
    """Build the grid of a series from its instances' DICOM JSON."""
    entries = []  # (sop, class, frame, pos, ori, spacing, rows, cols, instance number)
    for js in datasets:
        sop = str(_first(js, "00080018"))
        cls = str(_first(js, "00080016"))
        rows, cols = int(_first(js, "00280010") or 0), int(_first(js, "00280011") or 0)
        inum = _first(js, "00200013")
        for frame, pos, ori, sp in _frames(js):
            entries.append((sop, cls, frame, pos, ori, sp, rows, cols,
                            int(inum) if inum is not None else 0))
    if not entries:
        raise NotFoundError(f"series {series_uid} has no image instances")
    sizes = {(e[6], e[7]) for e in entries}
    if len(sizes) != 1:
        raise GeometryMismatchError(
            f"series {series_uid} mixes image sizes {sorted(sizes)}; it has no single grid")
    rows, cols = sizes.pop()
    if rows == 0 or cols == 0:
        raise GeometryMismatchError(f"series {series_uid} has no image pixels (Rows/Columns)")
    fors = {str(_first(js, FOR)) for js in datasets if _first(js, FOR)}
    spacing2 = next((e[5] for e in entries if e[5]), None) or (1.0, 1.0)
    patient = all(e[3] is not None and e[4] is not None for e in entries)
    if patient:
        ori = entries[0][4]
        assert ori is not None
        row_cos, col_cos = np.array(ori[:3]), np.array(ori[3:])
        normal = np.cross(row_cos, col_cos)
        for e in entries:
            if e[4] is None or not np.allclose(e[4], ori, atol=1e-3):
                raise GeometryMismatchError(
                    f"series {series_uid} mixes slice orientations; it has no single grid")
        entries.sort(key=lambda e: (float(np.dot(normal, e[3])), e[8], e[2]))  # type: ignore[arg-type]
        positions = [tuple(float(x) for x in e[3]) for e in entries]  # type: ignore[union-attr]
        if len(entries) > 1:
            gaps = np.diff([float(np.dot(normal, p)) for p in positions])
            slice_spacing = float(np.median(gaps)) if len(gaps) else 1.0
            if slice_spacing <= 0:
                slice_spacing = 1.0
        else:
            js0 = datasets[0]
            slice_spacing = float(_first(js0, SPACING_BETWEEN) or _first(js0, SLICE_THICKNESS)
                                  or 1.0)
        direction = (tuple(float(x) for x in row_cos), tuple(float(x) for x in col_cos),
                     tuple(float(x) for x in normal))
        origin = positions[0]
    else:
        entries.sort(key=lambda e: (e[8], e[0], e[2]))
        slice_spacing = 1.0
        direction = IDENTITY
        positions = [(0.0, 0.0, float(k)) for k in range(len(entries))]
        origin = (0.0, 0.0, 0.0)
    return SeriesGeometry(
        series_uid=series_uid,
        study_uid=study_uid,
        frame_of_reference_uid=fors.pop() if len(fors) == 1 else None,
        shape=(len(entries), rows, cols),
        origin=tuple(float(x) for x in origin),  # type: ignore[arg-type]
        spacing=(slice_spacing, float(spacing2[0]), float(spacing2[1])),
        direction=direction,  # type: ignore[arg-type]
        slices=tuple(SliceRef(e[0], e[1], e[2]) for e in entries),
        positions=tuple(positions),  # type: ignore[arg-type]
        has_patient_frame=patient,
    )


#: SOP classes that are not images on a grid: they never join a series' geometry.
NON_IMAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
}


def series_geometry(s: Session, series_uid: str) -> SeriesGeometry:
    """The grid of a catalogued series (pseudonymised UID)."""
    series = s.scalars(select(Series).where(Series.SeriesInstanceUID == series_uid)).first()
    if series is None:
        raise NotFoundError(f"no series {series_uid} in the catalog")
    return geometry_of_series(s, series)


def geometry_of_series(s: Session, series: Series) -> SeriesGeometry:
    from mida.catalog.models import Study

    rows = s.execute(
        select(Instance.dataset, Instance.SOPClassUID).where(Instance.series_id == series.id)
    ).all()
    datasets = [js for js, cls in rows if cls not in NON_IMAGE_CLASSES and "00280010" in js]
    study = s.get(Study, series.study_id)
    assert study is not None
    return geometry_of_instances(series.SeriesInstanceUID, study.StudyInstanceUID, datasets)
