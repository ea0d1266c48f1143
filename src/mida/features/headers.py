"""Reading attributes and slice positions out of the catalog's DICOM JSON.

The catalog stores every instance's retained header as DICOM JSON (PS3.18
F.2: ``{"00180060": {"vr": "DS", "Value": [120.0]}}``) in
:attr:`mida.catalog.models.Instance.dataset`. Classic single-frame IODs keep
acquisition attributes at the top level; enhanced multi-frame IODs (Enhanced
CT/MR, PS3.3 C.7.6.16) move them into functional group macros, one sequence
deeper, either in the Shared Functional Groups Sequence (same for every frame)
or in the Per-Frame Functional Groups Sequence. :func:`lookup` looks in that
order and returns one value per frame where the value is per frame, so a
caller can aggregate a series made of either kind the same way.

Attributes are named by their DICOM keywords (``KVP``, ``EchoTime``), never
by hexadecimal tags in calling code.

Examples
--------
>>> js = {"00180060": {"vr": "DS", "Value": [120.0]}}
>>> lookup(js, "KVP")
[[120.0]]
>>> lookup(js, "EchoTime")
[]
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from pydicom.datadict import tag_for_keyword

from mida.annotations.geometry import NON_IMAGE_CLASSES, geometry_of_instances
from mida.errors import MidaError

#: Two frames closer than this along the slice normal (mm) are at the same position.
DUPLICATE_TOLERANCE_MM = 0.01


@functools.cache
def tag(keyword: str) -> str:
    """The DICOM JSON key (8 upper-case hex digits) of a keyword."""
    t = tag_for_keyword(keyword)
    if t is None:  # pragma: no cover - guards against typos in this package
        raise KeyError(f"unknown DICOM keyword {keyword!r}")
    return f"{t:08X}"


def values(js: dict[str, Any], keyword: str) -> list[Any] | None:
    """Every value of an attribute at this level, or ``None`` when absent or empty.

    Person names come back as their alphabetic component; other VRs as stored
    in the JSON (numbers for ``DS``/``IS``/binary VRs, strings, dicts for
    sequence items).
    """
    el = js.get(tag(keyword))
    if not el:
        return None
    v = el.get("Value")
    if not v:
        return None
    return [x.get("Alphabetic") if isinstance(x, dict) and el.get("vr") == "PN" else x
            for x in v]


def first(js: dict[str, Any], keyword: str) -> Any:
    """The first value of an attribute at this level, or ``None``."""
    v = values(js, keyword)
    return v[0] if v else None


def items(js: dict[str, Any], keyword: str) -> list[dict[str, Any]]:
    """The items of a sequence attribute at this level (empty when absent)."""
    return [x for x in values(js, keyword) or [] if isinstance(x, dict)]


def _nested(item: dict[str, Any], key: str, depth: int) -> list[Any] | None:
    """The attribute's values in ``item`` or in the sequences below it (``depth`` levels)."""
    el = item.get(key)
    if el and el.get("Value"):
        return list(el["Value"])
    if depth == 0:
        return None
    for sub in item.values():
        if isinstance(sub, dict) and sub.get("vr") == "SQ":
            for it in sub.get("Value") or []:
                if isinstance(it, dict):
                    found = _nested(it, key, depth - 1)
                    if found is not None:
                        return found
    return None


def lookup(js: dict[str, Any], keyword: str) -> list[list[Any]]:
    """Every occurrence of an attribute that applies to the instance's frames.

    Returns ``[values]`` when the attribute is at the top level or in the
    Shared Functional Groups (one value set for all frames), one ``values``
    per frame that has it in the Per-Frame Functional Groups, or ``[]``.
    Inside a functional group the attribute is looked for up to two sequences
    deep (e.g. MR Echo Sequence > Effective Echo Time).
    """
    key = tag(keyword)
    top = values(js, keyword)
    if top is not None:
        return [top]
    for shared in items(js, "SharedFunctionalGroupsSequence"):
        found = _nested(shared, key, 2)
        if found is not None:
            return [found]
    out = []
    for frame in items(js, "PerFrameFunctionalGroupsSequence"):
        found = _nested(frame, key, 2)
        if found is not None:
            out.append(found)
    return out


def floats(v: list[Any] | None) -> list[float] | None:
    """Numbers of a value list, or ``None`` when any is not a number."""
    if not v:
        return None
    try:
        return [float(x) for x in v]
    except (TypeError, ValueError):
        return None


def frames(js: dict[str, Any]) -> int:
    """Number of frames of an instance (1 for single-frame images)."""
    try:
        return max(int(first(js, "NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def is_image(js: dict[str, Any], sop_class_uid: str) -> bool:
    """Whether an instance is an image on a pixel grid (not SR, SEG, RTSTRUCT, PR...)."""
    return sop_class_uid not in NON_IMAGE_CLASSES and bool(first(js, "Rows"))


def slice_coordinates(datasets: list[dict[str, Any]],
                      series_uid: str = "") -> tuple[np.ndarray, str | None]:
    """Positions of every frame along the slice normal (mm, sorted), or why there are none.

    The normal is the cross product of the row and column direction cosines
    (PS3.3 C.7.6.2.1.1), as :mod:`mida.annotations.geometry` orders slices.
    Duplicates are kept: callers count them.
    """
    try:
        g = geometry_of_instances(series_uid, "", datasets)
    except MidaError as exc:
        return np.zeros(0), str(exc)
    if not g.has_patient_frame:
        return np.zeros(0), "the images have no patient position (no ImagePositionPatient)"
    normal = np.asarray(g.direction[2], dtype=float)
    return np.sort(np.asarray(g.positions, dtype=float) @ normal), None


def unique_positions(z: np.ndarray, tol_mm: float = DUPLICATE_TOLERANCE_MM) -> np.ndarray:
    """Sorted positions with those within ``tol_mm`` of the previous one dropped."""
    if len(z) == 0:
        return z
    keep = np.r_[True, np.diff(z) > tol_mm]
    return z[keep]


__all__ = ["DUPLICATE_TOLERANCE_MM", "first", "floats", "frames", "is_image", "items", "lookup",
           "slice_coordinates", "tag", "unique_positions", "values"]
