"""DICOM attribute matching over the catalog, shared by QIDO-RS and C-FIND (PS3.4 C.2.2).

One matcher answers both faces, from indexed columns only, so a search never
opens a file. What it supports:

- levels ``PATIENT``, ``STUDY``, ``SERIES`` and ``IMAGE`` (QIDO's instances);
  a level's query may match attributes of the levels above it (Study Root);
- single-value matching, wildcards ``*`` and ``?``, UID lists (``a\\b``),
  value lists for code strings (``ModalitiesInStudy=CT\\MR``), ranges for
  dates and times (``20240101-20241231``, ``-20241231``, ``20240101-``; QIDO's
  ``2024-01-01`` spelling too), and empty values (universal matching: return the
  attribute, do not filter);
- person names match case-insensitively; with ``fuzzy`` a name matches when
  any of its components starts with the value (``fuzzymatching=true``);
- the matchable attributes are :data:`MATCHABLE`; any other key raises
  :class:`~mida.errors.MidaError` naming it (PS3.18 lets an origin server refuse
  unsupported keys);
- return keys: each level's defaults (PS3.18 Table 6.7.1-2), plus ``include``
  (keywords or tags) read from the indexed columns or, for other attributes,
  from the stored DICOM JSON of one instance of the row (the study's or
  series' first instance); ``include="all"`` returns every attribute of that
  instance except bulk data, sequences at the study and series level, and the
  instance-level attributes of another instance.

Examples
--------
>>> parse_range("20240101-20241231")
('20240101', '20241231')
>>> parse_range("-20241231")
(None, '20241231')
>>> like_pattern("CT*")
'CT%'
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR as _dictionary_VR
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from mida.catalog.models import Instance, Patient, Series, Study
from mida.errors import MidaError

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")


@functools.lru_cache(maxsize=4096)
def dictionary_VR(keyword: str) -> str:
    """pydicom's VR lookup, cached (a study page asks for thousands)."""
    return str(_dictionary_VR(keyword))
_LEVEL_ALIASES = {"INSTANCE": "IMAGE", "INSTANCES": "IMAGE", "STUDIES": "STUDY",
                  "PATIENTS": "PATIENT"}

#: keyword -> (column, level it belongs to)
_COLUMNS: dict[str, tuple[InstrumentedAttribute[Any], str]] = {
    "PatientID": (Patient.PatientID, "PATIENT"),
    "PatientName": (Patient.PatientName, "PATIENT"),
    "PatientBirthDate": (Patient.PatientBirthDate, "PATIENT"),
    "PatientSex": (Patient.PatientSex, "PATIENT"),
    "PatientAge": (Patient.PatientAge, "PATIENT"),
    "StudyInstanceUID": (Study.StudyInstanceUID, "STUDY"),
    "StudyDate": (Study.StudyDate, "STUDY"),
    "StudyTime": (Study.StudyTime, "STUDY"),
    "AccessionNumber": (Study.AccessionNumber, "STUDY"),
    "StudyID": (Study.StudyID, "STUDY"),
    "StudyDescription": (Study.StudyDescription, "STUDY"),
    "ReferringPhysicianName": (Study.ReferringPhysicianName, "STUDY"),
    "ModalitiesInStudy": (Study.ModalitiesInStudy, "STUDY"),
    "SeriesInstanceUID": (Series.SeriesInstanceUID, "SERIES"),
    "Modality": (Series.Modality, "SERIES"),
    "SeriesNumber": (Series.SeriesNumber, "SERIES"),
    "SeriesDescription": (Series.SeriesDescription, "SERIES"),
    "BodyPartExamined": (Series.BodyPartExamined, "SERIES"),
    "Manufacturer": (Series.Manufacturer, "SERIES"),
    "SOPInstanceUID": (Instance.SOPInstanceUID, "IMAGE"),
    "SOPClassUID": (Instance.SOPClassUID, "IMAGE"),
    "InstanceNumber": (Instance.InstanceNumber, "IMAGE"),
    "Rows": (Instance.Rows, "IMAGE"),
    "Columns": (Instance.Columns, "IMAGE"),
    "NumberOfFrames": (Instance.NumberOfFrames, "IMAGE"),
}
_COUNTS = {
    "PATIENT": ("NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
                "NumberOfPatientRelatedInstances"),
    "STUDY": ("NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
    "SERIES": ("NumberOfSeriesRelatedInstances",),
    "IMAGE": (),
}
_DEFAULTS = {
    "PATIENT": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"),
    "STUDY": ("StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy",
              "ReferringPhysicianName", "PatientName", "PatientID", "PatientBirthDate",
              "PatientSex", "StudyInstanceUID", "StudyID", "StudyDescription"),
    "SERIES": ("Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber",
               "StudyInstanceUID", "BodyPartExamined"),
    "IMAGE": ("SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns",
              "NumberOfFrames", "StudyInstanceUID", "SeriesInstanceUID"),
}
_RANK = {lv: i for i, lv in enumerate(LEVELS)}
#: attributes a query may match on, per level (its own and the levels above)
MATCHABLE = {lv: tuple(k for k, (_, owner) in _COLUMNS.items() if _RANK[owner] <= _RANK[lv])
             for lv in LEVELS}
_IGNORED_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle",
                 "InstanceAvailability", "TimezoneOffsetFromUTC", "RetrieveURL"}
_INT_VRS = {"IS", "US", "UL", "SS", "SL"}


@dataclass
class SearchResult:
    """Matches as DICOM JSON dicts (keys are 8-hex tags); ``more``: ``limit`` cut them."""

    rows: list[dict[str, Any]]
    more: bool


@dataclass(frozen=True)
class Located:
    """A stored instance found by :func:`locate`."""

    instance_id: int
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    series_uid: str
    study_uid: str
    blob_sha256: str
    size: int
    collection_id: int
    number_of_frames: int | None
    rows: int | None
    columns: int | None


def normalise_level(level: str) -> str:
    lv = _LEVEL_ALIASES.get(level.upper(), level.upper())
    if lv not in LEVELS:
        raise MidaError(f"unknown query level {level!r}: use PATIENT, STUDY, SERIES or IMAGE")
    return lv


def keyword_of(key: str) -> str:
    """A keyword for a keyword or an 8-hex tag (``00100010`` -> ``PatientName``)."""
    k = key.strip()
    if re.fullmatch(r"[0-9A-Fa-f]{8}", k):
        kw = keyword_for_tag(int(k, 16))
        if not kw:
            raise MidaError(f"unknown attribute tag {k}: use a DICOM keyword or 8-hex tag")
        return str(kw)
    if tag_for_keyword(k) is None:
        raise MidaError(f"unknown attribute {k!r}: use a DICOM keyword (e.g. StudyDate) "
                        "or an 8-hex tag (e.g. 00080020)")
    return k


@functools.lru_cache(maxsize=4096)
def tag_of(keyword: str) -> str:
    return f"{int(tag_for_keyword(keyword) or 0):08X}"


def parse_range(value: str) -> tuple[str | None, str | None]:
    """Split a DICOM range ``A-B`` (either side may be empty)."""
    lo, _, hi = value.partition("-")
    return (lo.strip() or None, hi.strip() or None)


def like_pattern(value: str) -> str:
    """A DICOM wildcard pattern as a SQL LIKE pattern (escape character ``!``)."""
    out = []
    for ch in value:
        if ch in "%_!":
            out.append("!" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def _has_wildcard(v: str) -> bool:
    return "*" in v or "?" in v


def _date(text: str, key: str) -> dt.date:
    t = text.replace("-", "").replace(".", "").strip()
    try:
        return dt.date(int(t[0:4]), int(t[4:6]), int(t[6:8]))
    except (ValueError, IndexError):
        raise MidaError(f"bad date {text!r} for {key}: use YYYYMMDD or a range "
                        "YYYYMMDD-YYYYMMDD") from None


def _date_condition(col: Any, value: str, key: str) -> ColumnElement[bool]:
    v = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):  # QIDO's ISO spelling of one date
        return col == _date(v, key)
    if re.fullmatch(r"[\d.]*-[\d.]*", v):
        lo, hi = parse_range(v)
        conds = []
        if lo:
            conds.append(col >= _date(lo, key))
        if hi:
            conds.append(col <= _date(hi, key))
        if not conds:
            raise MidaError(f"empty date range for {key}")
        return and_(*conds)
    return col == _date(v, key)


def _text_condition(col: Any, value: str, vr: str, fuzzy: bool) -> ColumnElement[bool]:
    values = value.split("\\") if "\\" in value else [value]
    conds = []
    for v in values:
        if vr == "PN":
            lowered = func.lower(col)
            v = v.lower()
            if fuzzy:
                stem = like_pattern(v.rstrip("*"))
                conds.append(or_(lowered.like(f"{stem}%", escape="!"),
                                 lowered.like(f"%^{stem}%", escape="!"),
                                 lowered.like(f"% {stem}%", escape="!")))
            elif _has_wildcard(v):
                conds.append(lowered.like(like_pattern(v), escape="!"))
            else:
                conds.append(lowered == v)
        elif _has_wildcard(v):
            conds.append(col.like(like_pattern(v), escape="!"))
        else:
            conds.append(col == v)
    return or_(*conds) if len(conds) > 1 else conds[0]


def _modalities_condition(value: str) -> ColumnElement[bool]:
    col = Study.ModalitiesInStudy
    conds: list[ColumnElement[bool]] = []
    for v in filter(None, value.split("\\")):
        if _has_wildcard(v):
            conds.append(col.like(like_pattern(v), escape="!"))
            continue
        e = like_pattern(v)
        conds.append(or_(col == v, col.like(f"{e}\\%", escape="!"),
                         col.like(f"%\\{e}", escape="!"), col.like(f"%\\{e}\\%", escape="!")))
    return or_(*conds)


def condition(keyword: str, value: str, *, fuzzy: bool = False) -> ColumnElement[bool]:
    """The SQL condition for one matching key (keyword and DICOM matching string)."""
    col = _COLUMNS[keyword][0]
    vr = dictionary_VR(keyword)
    if keyword == "ModalitiesInStudy":
        return _modalities_condition(value)
    if keyword == "StudyDate":
        return _date_condition(col, value, keyword)
    if vr in ("DA", "TM", "DT") and re.fullmatch(r"[\d.:]*-[\d.:]*", value.strip()):
        lo, hi = parse_range(value.strip())
        conds = ([col >= lo] if lo else []) + ([col <= hi + "\uffff"] if hi else [])
        return and_(*conds)
    if vr in _INT_VRS:
        try:
            ints = [int(v) for v in value.split("\\")]
        except ValueError:
            raise MidaError(f"bad value {value!r} for {keyword}: a whole number") from None
        return col.in_(ints)
    if vr == "UI":
        uids = [u.strip() for u in value.split("\\") if u.strip()]
        if any(not re.fullmatch(r"[0-9.*?]{1,64}", u) for u in uids):
            raise MidaError(f"bad UID in {keyword}: digits and dots only")
        if any(_has_wildcard(u) for u in uids):
            return or_(*(col.like(like_pattern(u), escape="!") for u in uids))
        return col.in_(uids)
    return _text_condition(col, value, vr, fuzzy)


def _base(level: str, cols: list[Any]) -> Select[Any]:
    q = select(*cols)
    if level == "PATIENT":
        return q.select_from(Patient)
    q = q.select_from(Study).join(Patient, Patient.id == Study.patient_id)
    if level in ("SERIES", "IMAGE"):
        q = q.join(Series, Series.study_id == Study.id)
    if level == "IMAGE":
        q = q.join(Instance, Instance.series_id == Series.id)
    return q


def _level_id(level: str) -> Any:
    return {"PATIENT": Patient.id, "STUDY": Study.id, "SERIES": Series.id,
            "IMAGE": Instance.id}[level]


def _value_json(keyword: str, value: Any) -> dict[str, Any]:
    vr = dictionary_VR(keyword)
    out: dict[str, Any] = {"vr": vr}
    if value is None or value == "":
        return out
    if isinstance(value, dt.date):
        value = value.strftime("%Y%m%d")
    if vr == "PN":
        out["Value"] = [{"Alphabetic": str(value)}]
    elif vr in _INT_VRS:
        out["Value"] = [int(value)]
    elif vr == "CS" and isinstance(value, str) and "\\" in value:
        out["Value"] = value.split("\\")
    else:
        out["Value"] = [str(value)]
    return out


def _parse_include(level: str, include: Iterable[str] | str | None) -> tuple[list[str], bool]:
    if include is None:
        return [], False
    items = [include] if isinstance(include, str) else list(include)
    keys: list[str] = []
    everything = False
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            if part.lower() == "all":
                everything = True
            else:
                keys.append(keyword_of(part))
    return keys, everything


def search(
    s: Session, level: str, match: dict[str, str], *,
    collection_ids: frozenset[int] | None,
    study_uid: str | None = None, series_uid: str | None = None, fuzzy: bool = False,
    include: Iterable[str] | str | None = None, limit: int | None = None, offset: int = 0,
) -> SearchResult:
    """Find rows at ``level`` matching ``match``; see the module docstring."""
    lv = normalise_level(level)
    if collection_ids is not None and not collection_ids:
        return SearchResult([], False)
    if offset < 0 or (limit is not None and limit < 0):
        raise MidaError("limit and offset must be zero or more")
    conds: list[ColumnElement[bool]] = []
    return_keys: list[str] = list(_DEFAULTS[lv]) + list(_COUNTS[lv])
    for raw_key, raw_value in match.items():
        kw = keyword_of(raw_key)
        if kw in _IGNORED_KEYS:
            continue
        if kw in _COUNTS["PATIENT"] + _COUNTS["STUDY"] + _COUNTS["SERIES"]:
            if kw not in return_keys:
                return_keys.append(kw)
            continue
        if kw not in _COLUMNS or _RANK[_COLUMNS[kw][1]] > _RANK[lv]:
            if raw_value not in (None, ""):
                raise MidaError(
                    f"matching on {kw} is not supported at the {lv} level; supported: "
                    f"{', '.join(MATCHABLE[lv])} (other attributes can be returned "
                    "with includefield)")
            if kw not in return_keys:
                return_keys.append(kw)
            continue
        if kw not in return_keys:
            return_keys.append(kw)
        value = "" if raw_value is None else str(raw_value)
        if value.strip() in ("", "*"):
            continue
        conds.append(condition(kw, value, fuzzy=fuzzy))
    if study_uid:
        if lv == "PATIENT":
            raise MidaError("a study UID cannot scope a PATIENT-level query")
        conds.append(Study.StudyInstanceUID == study_uid)
    if series_uid:
        if lv != "IMAGE":
            raise MidaError("a series UID scopes only an instance-level query")
        conds.append(Series.SeriesInstanceUID == series_uid)
    extra, everything = _parse_include(lv, include)
    for kw in extra:
        if kw not in return_keys:
            return_keys.append(kw)

    id_col = _level_id(lv)
    q = _base(lv, [id_col]).where(*conds)
    if lv == "PATIENT":
        if collection_ids is not None:
            q = q.where(Patient.id.in_(
                select(Study.patient_id).where(Study.collection_id.in_(sorted(collection_ids)))))
    elif collection_ids is not None:
        q = q.where(Study.collection_id.in_(sorted(collection_ids)))
    if lv == "IMAGE":
        q = q.order_by(Series.id, Instance.InstanceNumber, Instance.id)
    else:
        q = q.order_by(id_col)
    if offset:
        q = q.offset(offset)
    if limit is not None:
        q = q.limit(limit + 1)
    ids = list(dict.fromkeys(s.scalars(q)))
    more = limit is not None and len(ids) > limit
    if more:
        ids = ids[:limit]
    if not ids:
        return SearchResult([], False)
    rows = _materialise(s, lv, ids, return_keys, everything)
    return SearchResult(rows, more)


def _materialise(s: Session, lv: str, ids: list[int], keys: list[str],
                 everything: bool) -> list[dict[str, Any]]:
    col_keys = [k for k in keys if k in _COLUMNS and _RANK[_COLUMNS[k][1]] <= _RANK[lv]]
    count_keys = [k for k in keys if k in _COUNTS[lv]]
    other_keys = [k for k in keys if k not in col_keys and k not in count_keys
                  and k not in _COUNTS["PATIENT"] + _COUNTS["STUDY"] + _COUNTS["SERIES"]]
    id_col = _level_id(lv)
    cols = [id_col] + [_COLUMNS[k][0].label(k) for k in col_keys]
    by_id: dict[int, dict[str, Any]] = {}
    for row in s.execute(_base(lv, cols).where(id_col.in_(ids))).mappings():
        by_id[row[id_col.key]] = {tag_of(k): _value_json(k, row[k]) for k in col_keys}
    if count_keys:
        for rid, counts in _counts(s, lv, ids).items():
            for k in count_keys:
                by_id[rid][tag_of(k)] = {"vr": "IS", "Value": [counts[k]]}
    if lv == "STUDY":  # series attributes of a study (OHIF asks Modality): its first series
        series_keys = [k for k in other_keys if k in _COLUMNS and _COLUMNS[k][1] == "SERIES"]
        if series_keys:
            other_keys = [k for k in other_keys if k not in series_keys]
            first = (select(Series.study_id, func.min(Series.id).label("sid"))
                     .where(Series.study_id.in_(ids)).group_by(Series.study_id).subquery())
            q = (select(first.c.study_id, *[_COLUMNS[k][0].label(k) for k in series_keys])
                 .join(Series, Series.id == first.c.sid))
            for row in s.execute(q).mappings():
                for k in series_keys:
                    by_id[row["study_id"]][tag_of(k)] = _value_json(k, row[k])
            for rid in ids:
                for k in series_keys:
                    by_id[rid].setdefault(tag_of(k), {"vr": dictionary_VR(k)})
    if other_keys or everything:
        datasets = _representatives(s, lv, ids)
        for rid, js in datasets.items():
            target = by_id[rid]
            for k in other_keys:
                t = tag_of(k)
                target.setdefault(t, js.get(t) or {"vr": dictionary_VR(k)})
            if everything:
                for t, elem in js.items():
                    if t in target or "BulkDataURI" in elem or t.startswith("7FE0"):
                        continue
                    if lv != "IMAGE" and elem.get("vr") == "SQ":
                        continue
                    target[t] = elem
        for rid in ids:
            for k in other_keys:
                by_id[rid].setdefault(tag_of(k), {"vr": dictionary_VR(k)})
    out = []
    for rid in ids:
        found = by_id[rid]
        found["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
        found["00080052"] = {"vr": "CS", "Value": [lv]}
        if lv != "PATIENT":
            found["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}
        out.append(dict(sorted(found.items())))
    return out


def _counts(s: Session, lv: str, ids: list[int]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    q: Any
    if lv == "PATIENT":
        q = (select(Study.patient_id, func.count(func.distinct(Study.id)),
                    func.count(func.distinct(Series.id)), func.count(Instance.id))
             .select_from(Study).join(Series, Series.study_id == Study.id)
             .join(Instance, Instance.series_id == Series.id)
             .where(Study.patient_id.in_(ids)).group_by(Study.patient_id))
        names = _COUNTS["PATIENT"]
    elif lv == "STUDY":
        q = (select(Series.study_id, func.count(func.distinct(Series.id)),
                    func.count(Instance.id))
             .select_from(Series).join(Instance, Instance.series_id == Series.id)
             .where(Series.study_id.in_(ids)).group_by(Series.study_id))
        names = _COUNTS["STUDY"]
    else:
        q = (select(Instance.series_id, func.count(Instance.id))
             .where(Instance.series_id.in_(ids)).group_by(Instance.series_id))
        names = _COUNTS["SERIES"]
    for rid in ids:
        out[rid] = dict.fromkeys(names, 0)
    for row in s.execute(q).all():
        out[row[0]] = {n: int(v) for n, v in zip(names, row[1:], strict=True)}
    return out


def _representatives(s: Session, lv: str, ids: list[int]) -> dict[int, dict[str, Any]]:
    """The stored DICOM JSON of one instance per row (the row itself at IMAGE level)."""
    if lv == "IMAGE":
        first = {i: i for i in ids}
    else:
        parent = {"PATIENT": Study.patient_id, "STUDY": Study.id, "SERIES": Series.id}[lv]
        q = (select(parent, func.min(Instance.id)).select_from(Study)
             .join(Series, Series.study_id == Study.id)
             .join(Instance, Instance.series_id == Series.id)
             .where(parent.in_(ids)).group_by(parent))
        first = {int(r): int(i) for r, i in s.execute(q).all()}
    if not first:
        return {}
    datasets: dict[int, dict[str, Any]] = dict(s.execute(select(Instance.id, Instance.dataset)
                              .where(Instance.id.in_(list(first.values())))).all())
    return {rid: datasets.get(iid) or {} for rid, iid in first.items()}


def locate(
    s: Session, *, study_uid: str | None = None, series_uid: str | None = None,
    sop_uid: str | None = None, collection_ids: frozenset[int] | None,
) -> list[Located]:
    """Every stored instance under the given UIDs (all given UIDs must agree)."""
    if not (study_uid or series_uid or sop_uid):
        raise MidaError("locate needs a study, series or instance UID")
    if collection_ids is not None and not collection_ids:
        return []
    q = (select(Instance.id, Instance.SOPInstanceUID, Instance.SOPClassUID,
                Instance.TransferSyntaxUID, Series.SeriesInstanceUID, Study.StudyInstanceUID,
                Instance.blob_sha256, Instance.size, Study.collection_id,
                Instance.NumberOfFrames, Instance.Rows, Instance.Columns)
         .select_from(Instance).join(Series, Series.id == Instance.series_id)
         .join(Study, Study.id == Series.study_id))
    if study_uid:
        q = q.where(Study.StudyInstanceUID == study_uid)
    if series_uid:
        q = q.where(Series.SeriesInstanceUID == series_uid)
    if sop_uid:
        q = q.where(Instance.SOPInstanceUID == sop_uid)
    if collection_ids is not None:
        q = q.where(Study.collection_id.in_(sorted(collection_ids)))
    q = q.order_by(Series.id, Instance.InstanceNumber, Instance.id)
    return [Located(*row) for row in s.execute(q).all()]  # type: ignore[call-arg]


__all__ = [
    "LEVELS",
    "MATCHABLE",
    "Located",
    "SearchResult",
    "condition",
    "keyword_of",
    "like_pattern",
    "locate",
    "normalise_level",
    "parse_range",
    "search",
    "tag_of",
]
