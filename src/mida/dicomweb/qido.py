"""QIDO-RS (PS3.18 10.6): parse a search's query parameters and run it on the catalog.

Matching itself is :func:`mida.catalog.dicomquery.search`, shared with C-FIND;
this module turns the query string into its arguments:

- ``{attribute}={value}``: a keyword (``PatientID``) or 8-hex tag
  (``00100020``); a repeated key, or commas in a UID or code string value,
  make a value list (``ModalitiesInStudy=CT,MR``); an empty value only asks
  for the attribute to be returned;
- ``includefield``: repeatable, comma-separated keywords or tags, or ``all``;
- ``fuzzymatching``: ``true`` or ``false``;
- ``limit`` (1 to :data:`MAX_LIMIT`; :data:`MAX_LIMIT` when absent) and ``offset``;
- ``accept`` and ``charset`` are accepted and ignored (the answer is always
  ``application/dicom+json`` in UTF-8).

Anything else answers 400 naming the parameter. When the limit cut the
results, the route adds the PS3.18 6.7.1.2 ``Warning`` header.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR
from sqlalchemy.orm import Session

from mida.catalog.dicomquery import SearchResult, keyword_of, search
from mida.dicomweb.multipart import DicomWebError
from mida.dicomweb.wado import check_uid
from mida.errors import MidaError
from mida.sharing.identity import Principal

MAX_LIMIT = 1000
_IGNORED = {"accept", "charset"}
_LIST_VRS = {"UI", "CS"}
_TAG = re.compile(r"[0-9A-Fa-f]{8}")


@dataclass
class QidoQuery:
    """A parsed QIDO-RS query string."""

    match: dict[str, str] = field(default_factory=dict)
    include: list[str] = field(default_factory=list)
    fuzzy: bool = False
    limit: int = MAX_LIMIT
    offset: int = 0


def _int(name: str, value: str, lo: int, hi: int | None) -> int:
    v = value.strip()
    if not v.isdigit() or int(v) < lo or (hi is not None and int(v) > hi):
        bound = f" to {hi}" if hi is not None else " or more"
        raise DicomWebError(f"bad {name} {value[:20]!r}: a whole number from {lo}{bound}")
    return int(v)


def parse_query(params: Iterable[tuple[str, str]]) -> QidoQuery:
    """A :class:`QidoQuery` from the (repeatable) query parameters; 400 for a bad one."""
    q = QidoQuery()
    values: dict[str, list[str]] = {}
    for key, value in params:
        k = key.strip()
        low = k.lower()
        if low == "includefield":
            q.include += [p.strip() for p in value.split(",") if p.strip()]
        elif low == "fuzzymatching":
            if value.strip().lower() not in ("true", "false"):
                raise DicomWebError("fuzzymatching is true or false")
            q.fuzzy = value.strip().lower() == "true"
        elif low == "limit":
            q.limit = min(_int("limit", value, 1, None), MAX_LIMIT)
        elif low == "offset":
            q.offset = _int("offset", value, 0, None)
        elif low in _IGNORED:
            continue
        else:
            if "." in k and all(_TAG.fullmatch(p) or p.isidentifier() for p in k.split(".")):
                raise DicomWebError(f"matching on a sequence attribute ({k}) is not supported")
            try:
                kw = keyword_of(k)
            except MidaError:
                raise DicomWebError(
                    f"unknown query parameter {k[:64]!r}: use a DICOM keyword or 8-hex tag, "
                    "includefield, fuzzymatching, limit or offset") from None
            values.setdefault(kw, []).append(value)
    for kw, vals in values.items():
        vr = dictionary_VR(kw)
        items: list[str] = []
        for v in vals:
            items += [p for p in v.split(",")] if vr in _LIST_VRS and "," in v else [v]
        non_empty = [v for v in items if v != ""]
        q.match[kw] = "\\".join(non_empty)
    for item in q.include:
        if item.lower() != "all":
            try:
                keyword_of(item)
            except MidaError:
                raise DicomWebError(f"unknown includefield {item[:64]!r}: use a DICOM keyword, "
                                    "an 8-hex tag or all") from None
    return q


def run(s: Session, principal: Principal, level: str, q: QidoQuery, *,
        study_uid: str | None = None, series_uid: str | None = None) -> SearchResult:
    """Run a parsed search over the collections the caller may read."""
    if study_uid is not None:
        check_uid(study_uid, "study")
    if series_uid is not None:
        check_uid(series_uid, "series")
    return search(s, level, q.match, collection_ids=principal.readable(), study_uid=study_uid,
                  series_uid=series_uid, fuzzy=q.fuzzy, include=q.include or None,
                  limit=q.limit, offset=q.offset)


def encode(rows: list[dict[str, object]]) -> bytes:
    """The DICOM JSON array of a search's rows."""
    return json.dumps(rows, separators=(",", ":")).encode("utf-8")


def warning(host: str) -> str:
    """The Warning header of a search its limit cut (PS3.18 6.7.1.2)."""
    return (f'299 {host}: "The number of results exceeded the maximum supported by the server. '
            'Additional results can be requested."')


__all__ = ["MAX_LIMIT", "QidoQuery", "encode", "parse_query", "run", "warning"]
