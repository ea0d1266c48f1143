"""Query/Retrieve on the catalog: C-FIND identifiers in and out, C-MOVE/C-GET targets.

A C-FIND identifier becomes a :func:`mida.catalog.dicomquery.search` call: every
top-level attribute of the identifier is a key; its value, written as a DICOM
matching string (``\\`` between values, ranges and wildcards unchanged), is the
match, an empty value a return key. Keys the catalog cannot match at the query
level are treated as return keys (PS3.4 C.2.2.1: an SCP may ignore an optional
matching key) and reported with the warning status 0xFF01. Each matching row,
de-identified DICOM JSON from the catalog, is answered with exactly the
requested keys plus Query/Retrieve Level and Specific Character Set.

C-MOVE and C-GET name what to send by unique keys (Patient ID, Study, Series or
SOP Instance UIDs, lists allowed); :func:`retrieve_instances` turns them into
stored instances the caller may read.

Nothing here logs or reports a value of an identifier: a peer's identifier may
hold identified data.

Examples
--------
>>> from pydicom import Dataset
>>> ds = Dataset()
>>> ds.QueryRetrieveLevel = "STUDY"
>>> ds.StudyDate = "20240101-20241231"
>>> ds.PatientName = ""
>>> req = find_request(ds)
>>> req.level, req.match
('STUDY', {'StudyDate': '20240101-20241231', 'PatientName': ''})
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from sqlalchemy.orm import Session

from mida.catalog import dicomquery
from mida.catalog.dicomquery import Located
from mida.errors import MidaError

#: Elements of an identifier that are never keys.
_NOT_KEYS = {0x00080005, 0x00080052}  # SpecificCharacterSet, QueryRetrieveLevel
_COUNT_KEYS = {"NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
               "NumberOfPatientRelatedInstances", "NumberOfStudyRelatedSeries",
               "NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances"}
#: Unique key of each level, read by C-MOVE and C-GET.
UNIQUE_KEYS = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID",
               "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}


@dataclass
class FindRequest:
    """A C-FIND identifier as a catalog search."""

    level: str
    match: dict[str, str]
    ignored: list[str] = field(default_factory=list)  # keywords matched as return keys only

    @property
    def keys(self) -> list[str]:
        """The keywords of the identifier (never their values)."""
        return list(self.match)


def query_level(identifier: Dataset) -> str:
    """The identifier's Query/Retrieve Level, normalised (PATIENT, STUDY, SERIES, IMAGE)."""
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip()
    if not level:
        raise MidaError("the identifier has no QueryRetrieveLevel: set it to PATIENT, STUDY, "
                        "SERIES or IMAGE")
    return dicomquery.normalise_level(level)


def match_string(elem: DataElement) -> str:
    """An element's value as a DICOM matching string ('' for universal matching)."""
    value = elem.value
    if value is None or elem.VR == "SQ" or isinstance(value, bytes | bytearray):
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


def find_request(identifier: Dataset) -> FindRequest:
    """The search for a C-FIND identifier; raises :class:`MidaError` on a bad level."""
    level = query_level(identifier)
    matchable = set(dicomquery.MATCHABLE[level])
    req = FindRequest(level=level, match={})
    for elem in identifier:
        tag = int(elem.tag)
        if tag in _NOT_KEYS or elem.tag.is_private or elem.tag.element == 0:
            continue
        kw = elem.keyword
        if not kw:
            continue
        value = match_string(elem)
        if value and kw not in matchable and kw not in _COUNT_KEYS:
            req.ignored.append(kw)
            value = ""
        req.match[kw] = value
    return req


def _usable_json(row: dict[str, Any]) -> dict[str, Any]:
    """A result row without bulk data references (never part of a C-FIND answer)."""
    return {t: e for t, e in row.items() if "BulkDataURI" not in e and "InlineBinary" not in e}


def find_response(row: dict[str, Any], identifier: Dataset, level: str, *,
                  ae_title: str) -> Dataset:
    """The C-FIND answer for one search row: the requested keys and nothing else."""
    found = Dataset.from_json(_usable_json(row))
    out = Dataset()
    for elem in identifier:
        tag = int(elem.tag)
        if tag in _NOT_KEYS or elem.tag.is_private or elem.tag.element == 0:
            continue
        if elem.tag in found:
            out.add(found[elem.tag])
        elif elem.keyword == "RetrieveAETitle":
            out.RetrieveAETitle = ae_title
        elif elem.keyword == "InstanceAvailability":
            out.InstanceAvailability = "ONLINE"
        elif elem.VR == "SQ":
            out.add_new(elem.tag, "SQ", Sequence())
        else:
            out.add_new(elem.tag, elem.VR, None)
    out.SpecificCharacterSet = "ISO_IR 192"
    out.QueryRetrieveLevel = level
    return out


def _values(identifier: Dataset, keyword: str) -> list[str]:
    elem = identifier.get(keyword)
    if elem is None:
        return []
    text = match_string(identifier[keyword])
    return [v.strip() for v in text.split("\\") if v.strip()]


def retrieve_instances(
    s: Session, identifier: Dataset, *, collection_ids: frozenset[int] | None,
) -> list[Located]:
    """Stored instances a C-MOVE or C-GET identifier names, within ``collection_ids``.

    The unique key of the identifier's level selects (a list of values allowed);
    wildcards are not allowed in unique keys and match nothing. Study and Series
    UIDs given with a lower level must agree with what is found.
    """
    level = query_level(identifier)
    wanted = _values(identifier, UNIQUE_KEYS[level])
    if not wanted or any(re.search(r"[*?]", v) for v in wanted):
        return []
    found: dict[int, Located] = {}

    def add(items: list[Located]) -> None:
        for it in items:
            found.setdefault(it.instance_id, it)

    studies = _values(identifier, "StudyInstanceUID")
    series = _values(identifier, "SeriesInstanceUID")
    study = studies[0] if len(studies) == 1 and level in ("SERIES", "IMAGE") else None
    one_series = series[0] if len(series) == 1 and level == "IMAGE" else None
    if level == "PATIENT":
        for pid in wanted:
            rows = dicomquery.search(s, "STUDY", {"PatientID": pid, "StudyInstanceUID": ""},
                                     collection_ids=collection_ids).rows
            for row in rows:
                uid = (row.get(dicomquery.tag_of("StudyInstanceUID"), {}).get("Value") or [""])[0]
                if uid:
                    add(dicomquery.locate(s, study_uid=uid, collection_ids=collection_ids))
    elif level == "STUDY":
        for uid in wanted:
            add(dicomquery.locate(s, study_uid=uid, collection_ids=collection_ids))
    elif level == "SERIES":
        for uid in wanted:
            add(dicomquery.locate(s, series_uid=uid, study_uid=study,
                                  collection_ids=collection_ids))
    else:
        for uid in wanted:
            add(dicomquery.locate(s, sop_uid=uid, series_uid=one_series, study_uid=study,
                                  collection_ids=collection_ids))
    return list(found.values())


_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def transfer_syntaxes_for(stored: list[str]) -> list[list[str]]:
    """Transfer syntax lists to propose for one SOP class whose instances are ``stored`` in.

    One context offers the compressed syntaxes stored (sent as they are), another
    the uncompressed ones (compressed instances are decompressed for a peer that
    accepts only those).
    """
    compressed = sorted({t for t in stored if UID(t).is_compressed})
    out = [compressed] if compressed else []
    out.append(list(_UNCOMPRESSED))
    return out


def fit_to_contexts(ds: Dataset, contexts: list[Any]) -> Dataset:
    """``ds`` in a transfer syntax one of the accepted ``contexts`` can carry.

    Sent as stored when a context has its syntax (pynetdicom converts among the
    uncompressed ones itself); a compressed instance is decompressed when the peer
    accepted only uncompressed syntaxes for its SOP class. Otherwise ``ds`` is
    returned unchanged and the sub-operation fails in pynetdicom, counted as such.
    """
    ts = UID(str(ds.file_meta.TransferSyntaxUID))
    sop_class = str(ds.SOPClassUID)
    offered = [UID(str(cx.transfer_syntax[0])) for cx in contexts
               if str(cx.abstract_syntax) == sop_class and cx.transfer_syntax]
    if not ts.is_compressed or ts in offered:
        return ds
    if any(not t.is_compressed for t in offered):
        ds.decompress()
    return ds


__all__ = [
    "UNIQUE_KEYS",
    "FindRequest",
    "find_request",
    "find_response",
    "fit_to_contexts",
    "match_string",
    "query_level",
    "retrieve_instances",
    "transfer_syntaxes_for",
]
