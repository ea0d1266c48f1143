"""DICOM JSON (PS3.18 Annex F) of a dataset, fast on raw elements.

pydicom's ``Dataset.to_json_dict`` converts every element to a Python value
first; at ingest rates that costs more than parsing the file. This encoder
reads the common raw encodings (explicit VR little endian numbers and plain
strings) directly and hands everything else — person names, ISO 2022 text,
big endian, implicit VR, elements already converted — to pydicom, so the
result is the same as pydicom's (a test compares them on the shared corpora).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import numpy as np
from pydicom.charset import decode_bytes
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

BulkHandler = Callable[[DataElement], str]

_NUMERIC = {"US": "<u2", "SS": "<i2", "UL": "<u4", "SL": "<i4", "FL": "<f4", "FD": "<f8",
            "SV": "<i8", "UV": "<u8"}
_BINARY = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
_ASCII_MULTI = {"AE", "AS", "CS", "DA", "DT", "TM", "UI"}
_TEXT_MULTI = {"SH", "LO", "UC"}
_TEXT_SINGLE = {"ST", "LT", "UT"}
_DEFAULT_ENCODINGS = {"iso8859", "utf_8", "latin_1", "ascii"}


def _strings(text: str, vr: str) -> list[Any] | None:
    """Split and strip as pydicom does; None when the value is empty."""
    parts = text.rstrip(" \0").split("\\")
    if parts == [""]:
        return None
    if vr == "DS":
        return [float(p) for p in parts]  # ValueError (e.g. empty) -> pydicom decides
    if vr == "IS":
        return [int(p) for p in parts]
    return parts


def _fast(elem: RawDataElement, encodings: list[str], threshold: int,
          bulk: BulkHandler | None) -> dict[str, Any] | None:
    """JSON for a raw element, or None to let pydicom do it."""
    vr = elem.VR
    if vr is None or vr == "UN" or elem.is_implicit_VR or not elem.is_little_endian:
        return None
    value = elem.value
    out: dict[str, Any] = {"vr": vr}
    if not value:
        return out if vr != "SQ" else None
    if vr in _NUMERIC:
        width = int(_NUMERIC[vr][-1])
        if len(value) % width:
            return None
        out["Value"] = np.frombuffer(value, dtype=_NUMERIC[vr]).tolist()
        return out
    if vr in _BINARY:
        if bulk is not None and len(value) > (threshold // 4) * 3:
            return None  # the handler wants a DataElement: let pydicom call it
        out["InlineBinary"] = base64.b64encode(value).decode("ascii")
        return out
    if vr in _ASCII_MULTI or vr in ("DS", "IS"):
        vals = _strings(value.decode("latin-1"), vr)
    elif vr in _TEXT_MULTI or vr in _TEXT_SINGLE:
        if not set(encodings) <= _DEFAULT_ENCODINGS:
            return None
        text = decode_bytes(value, encodings, set())
        if vr in _TEXT_SINGLE:
            text = text.rstrip(" \0")
            vals = [text] if text else None
        else:
            vals = [p.rstrip(" \0") for p in text.split("\\")]
            if vals == [""]:
                vals = None
    else:
        return None
    if vals is None:
        return out
    out["Value"] = vals
    return out


def to_json_dict(ds: Dataset, *, bulk_data_threshold: int = 1024,
                 bulk_data_element_handler: BulkHandler | None = None,
                 encodings: list[str] | None = None) -> dict[str, Any]:
    """The DICOM JSON model of ``ds``, equal to pydicom's ``to_json_dict``.

    Examples
    --------
    >>> ds = Dataset()
    >>> ds.Modality = "CT"
    >>> ds.Rows = 512
    >>> to_json_dict(ds)
    {'00080060': {'vr': 'CS', 'Value': ['CT']}, '00280010': {'vr': 'US', 'Value': [512]}}
    """
    if encodings is None:
        encodings = list(ds._character_set)
    result: dict[str, Any] = {}
    for tag in ds.keys():  # noqa: SIM118 (iterating a Dataset converts every element)
        elem = ds.get_item(tag)
        if elem is None:
            continue
        entry: dict[str, Any] | None = None
        if type(elem) is RawDataElement:
            try:
                entry = _fast(elem, encodings, bulk_data_threshold, bulk_data_element_handler)
            except (ValueError, UnicodeError):
                entry = None
            if entry is None:
                elem = ds[tag]
        if entry is None:
            assert isinstance(elem, DataElement)
            if elem.VR == "SQ" and isinstance(elem.value, Sequence):
                items = [to_json_dict(item, bulk_data_threshold=bulk_data_threshold,
                                      bulk_data_element_handler=bulk_data_element_handler,
                                      encodings=None if "SpecificCharacterSet" in item
                                      else encodings)
                         for item in elem.value]
                entry = {"vr": "SQ", "Value": items}
            else:
                entry = elem.to_json_dict(bulk_data_element_handler, bulk_data_threshold)
        result[f"{int(tag):08X}"] = entry
    return result


__all__ = ["to_json_dict"]
