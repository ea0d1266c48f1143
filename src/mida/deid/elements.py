"""Low-level element access for the engine: fast, and silent about values.

Two constraints shape this module:

* **Speed.** pydicom's public accessors re-parse the tag and re-sort the
  keys on every call (``Dataset.elements()`` costs about 4 µs per element,
  ``DataElement()`` about 10 µs), which alone would exceed the engine's
  budget of about 1 ms per CT instance. The engine therefore reads and
  writes the element store that pydicom's own reader and writer use
  (``Dataset._dict``) and writes generated values as ``RawDataElement``
  encoded like the element they replace, which pydicom writes verbatim.
  Only :func:`snapshot`, :func:`drop`, :func:`put` and :func:`put_items`
  touch that store.
* **No values in logs.** pydicom's validators quote invalid values in
  warnings that also go to its logger. Values the engine must read (UIDs,
  dates, ages, patient IDs) are decoded here from the raw bytes instead.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

from pydicom.charset import decode_bytes
from pydicom.config import IGNORE
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

Element: TypeAlias = DataElement | RawDataElement
Encoding: TypeAlias = tuple[bool, bool]
"""``(is_implicit_VR, is_little_endian)`` of a dataset read from a file."""

_NOT_TEXT = frozenset({"AT", "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UN"})
_PACK: dict[str, str] = {
    "US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q", "UV": "Q",
}  # fmt: skip


def snapshot(ds: Dataset) -> list[tuple[BaseTag, Element]]:
    """Return ``(tag, element)`` pairs of `ds` without converting raw values."""
    return list(ds._dict.items())


def drop(ds: Dataset, tag: BaseTag) -> None:
    """Remove the element `tag` from `ds`.

    Through ``Dataset.__delitem__`` where pydicom keeps caches that depend
    on the element (private creators, pixel data), directly otherwise.
    """
    group = tag >> 16
    if (group & 1 and tag & 0xFFFF < 0x100) or group == 0x7FE0:
        del ds[tag]
    else:
        del ds._dict[tag]


def encoding_of(ds: Dataset) -> Encoding | None:
    """Return how `ds` was encoded when read, or None for a dataset built in code."""
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return None
    return implicit, little


def _as_text(value: Any) -> str:
    original = getattr(value, "original_string", None)
    if isinstance(original, str):
        return original
    if isinstance(value, dt.datetime):
        return value.strftime("%Y%m%d%H%M%S.%f")
    if isinstance(value, dt.date):
        return value.strftime("%Y%m%d")
    if isinstance(value, dt.time):
        return value.strftime("%H%M%S.%f")
    if isinstance(value, bytes):
        return value.decode("ascii")
    return str(value)


def read_values(elem: Element) -> list[str]:
    """Return the values of an ASCII element (UI, DA, DT, TM, AS).

    Raises
    ------
    UnicodeDecodeError
        If a raw value is not ASCII.
    """
    value = elem.value
    if value is None:
        return []
    if isinstance(elem, RawDataElement):
        text = value.decode("ascii").rstrip("\x00 ") if isinstance(value, bytes) else ""
        return text.split("\\") if text else []
    if isinstance(value, MultiValue | list | tuple):
        return [_as_text(v).rstrip("\x00 ") for v in value]
    text = _as_text(value).rstrip("\x00 ")
    return text.split("\\") if text else []


def read_string(elem: Element | None, encodings: list[str]) -> str:
    """Return an LO or PN value as one string, decoded with `encodings`.

    Used only as input to a keyed hash, so undecodable bytes fall back to
    Latin-1 rather than failing.
    """
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    if isinstance(elem, RawDataElement) and isinstance(value, bytes):
        try:
            text = decode_bytes(value, encodings, set())
        except (UnicodeError, LookupError):
            text = value.decode("latin-1")
        return text.strip("\x00 ")
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip("\x00 ")


def _encode(vr: str, value: Any, little: bool) -> bytes | None:
    """Encode a generated value; None when only pydicom can (non-ASCII text)."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value + b"\x00" if len(value) % 2 else value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if vr == "AT":
            return struct.pack("<HH" if little else ">HH", int(value) >> 16, int(value) & 0xFFFF)
        fmt = _PACK.get(vr)
        return None if fmt is None else struct.pack(("<" if little else ">") + fmt, value)
    text = "\\".join(value) if isinstance(value, list) else str(value)
    if not text.isascii():
        return None
    data = text.encode("ascii")
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    return data


def put(
    ds: Dataset,
    tag: int,
    vr: str,
    value: str | list[str] | bytes | int | float | None,
    like: Element | None = None,
    encoding: Encoding | None = None,
) -> None:
    """Store a generated value in `ds`, replacing any element with `tag`.

    Parameters
    ----------
    ds
        The dataset.
    tag
        The element tag.
    vr
        The VR to write.
    value
        Text (a list for several values), bytes, a number, or None (empty).
    like
        The element being replaced: the new one is encoded like it.
    encoding
        Encoding for a new element when `like` is not raw.
    """
    if isinstance(like, RawDataElement):
        encoding = (like.is_implicit_VR, like.is_little_endian)
    data = None if encoding is None else _encode(vr, value, encoding[1])
    if encoding is None or data is None or vr == "SQ":
        if value is None and vr not in _PACK and vr not in _NOT_TEXT:
            value = ""  # pydicom's empty text value
        ds[tag] = DataElement(tag, vr, value, validation_mode=IGNORE)
        return
    key = like.tag if like is not None else BaseTag(tag)
    ds._dict[key] = RawDataElement(key, vr, len(data), data, 0, encoding[0], encoding[1])


def encode_items(
    items: Iterable[Sequence[tuple[int, str, str]]], encoding: Encoding
) -> bytes:
    """Encode sequence items of short ASCII text elements (``SH``, ``LO``, ``CS``).

    Parameters
    ----------
    items
        Per item, ``(tag, VR, value)`` in tag order.
    encoding
        ``(is_implicit_VR, is_little_endian)`` of the enclosing dataset.
    """
    implicit, little = encoding
    end = "<" if little else ">"
    out = bytearray()
    for item in items:
        body = bytearray()
        for tag, vr, text in item:
            data = _encode(vr, text, little) or b""
            body += struct.pack(end + "HH", tag >> 16, tag & 0xFFFF)
            if implicit:
                body += struct.pack(end + "I", len(data))
            else:
                body += vr.encode("ascii") + struct.pack(end + "H", len(data))
            body += data
        out += struct.pack(end + "HHI", 0xFFFE, 0xE000, len(body)) + body
    return bytes(out)


def put_items(
    ds: Dataset,
    tag: int,
    items: Sequence[Sequence[tuple[int, str, str]]],
    encoding: Encoding | None,
) -> None:
    """Store a sequence of short text items (see :func:`encode_items`)."""
    if encoding is None:
        from pydicom.sequence import Sequence as PydicomSequence

        datasets = []
        for item in items:
            item_ds = Dataset()
            for t, vr, text in item:
                item_ds[t] = DataElement(t, vr, text, validation_mode=IGNORE)
            datasets.append(item_ds)
        ds[tag] = DataElement(tag, "SQ", PydicomSequence(datasets))
        return
    data = encode_items(items, encoding)
    key = BaseTag(tag)
    ds._dict[key] = RawDataElement(key, "SQ", len(data), data, 0, encoding[0], encoding[1])


__all__ = [
    "Element",
    "Encoding",
    "drop",
    "encode_items",
    "encoding_of",
    "put",
    "put_items",
    "read_string",
    "read_values",
    "snapshot",
]
