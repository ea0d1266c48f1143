"""Read queries over the catalog for listings, ``mida show`` and the web page."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from mida.catalog.models import Collection, Instance, Patient, Series, Study
from mida.errors import MidaError, NotFoundError

LEVELS = ("patients", "studies", "series", "instances")


def parse_date_range(text: str) -> tuple[dt.date | None, dt.date | None]:
    """Parse ``2024-01-01..2024-12-31`` (either side may be empty) or one date.

    Examples
    --------
    >>> parse_date_range("2024-01-01..2024-12-31")
    (datetime.date(2024, 1, 1), datetime.date(2024, 12, 31))
    >>> parse_date_range("20240301")
    (datetime.date(2024, 3, 1), datetime.date(2024, 3, 1))
    """

    def one(s: str) -> dt.date | None:
        s = s.strip().replace("-", "")
        if not s:
            return None
        try:
            return dt.date(int(s[0:4]), int(s[4:6]), int(s[6:8]))
        except (ValueError, IndexError) as exc:
            raise MidaError(
                f"bad date {s!r}: use YYYY-MM-DD or YYYYMMDD, and FROM..TO for a range"
            ) from exc

    if ".." in text:
        a, b = text.split("..", 1)
        return one(a), one(b)
    d = one(text)
    return d, d


def _filters(
    q: Select[Any], *, collection: str | None, modality: str | None,
    study_date: str | None, patient_id: str | None, study_uid: str | None,
    series_uid: str | None, collection_ids: frozenset[int] | None = None,
) -> Select[Any]:
    if collection_ids is not None:
        q = q.where(Study.collection_id.in_(sorted(collection_ids)))
    if collection:
        q = q.where(Collection.name == collection)
    if modality:
        q = q.where(Series.Modality == modality.upper())
    if study_date:
        lo, hi = parse_date_range(study_date)
        if lo:
            q = q.where(Study.StudyDate >= lo)
        if hi:
            q = q.where(Study.StudyDate <= hi)
    if patient_id:
        q = q.where(Patient.PatientID == patient_id)
    if study_uid:
        q = q.where(Study.StudyInstanceUID == study_uid)
    if series_uid:
        q = q.where(Series.SeriesInstanceUID == series_uid)
    return q


def _joined(cols: list[Any]) -> Select[Any]:
    return (
        select(*cols)
        .select_from(Study)
        .join(Patient, Patient.id == Study.patient_id)
        .join(Collection, Collection.id == Study.collection_id)
        .outerjoin(Series, Series.study_id == Study.id)
        .outerjoin(Instance, Instance.series_id == Series.id)
    )


def list_level(
    s: Session, level: str, *, collection: str | None = None, modality: str | None = None,
    study_date: str | None = None, patient_id: str | None = None, study_uid: str | None = None,
    series_uid: str | None = None, limit: int = 1000, offset: int = 0,
    collection_ids: frozenset[int] | None = None,
) -> list[dict[str, Any]]:
    """Rows at one level (patients, studies, series, instances) with filters.

    ``collection_ids`` limits rows to those collections (None: every one).
    """
    if level not in LEVELS:
        raise MidaError(f"unknown level {level!r}: choose one of {', '.join(LEVELS)}")
    n_inst = func.count(func.distinct(Instance.id)).label("instances")
    if level == "patients":
        cols: list[Any] = [Patient.PatientID, Patient.PatientSex, Patient.PatientAge,
                           func.count(func.distinct(Study.id)).label("studies"), n_inst]
        group: list[Any] = [Patient.id]
        order: list[Any] = [Patient.PatientID]
    elif level == "studies":
        cols = [Study.StudyInstanceUID, Study.StudyDate, Patient.PatientID,
                Study.ModalitiesInStudy, Collection.name.label("collection"),
                func.count(func.distinct(Series.id)).label("series"), n_inst]
        group = [Study.id, Patient.PatientID, Collection.name]
        order = [Study.StudyDate, Study.StudyInstanceUID]
    elif level == "series":
        cols = [Series.SeriesInstanceUID, Series.Modality, Series.SeriesNumber,
                Series.BodyPartExamined, Study.StudyInstanceUID, n_inst]
        group = [Series.id, Study.StudyInstanceUID]
        order = [Study.StudyInstanceUID, Series.SeriesNumber]
    else:
        cols = [Instance.SOPInstanceUID, Instance.SOPClassUID, Instance.InstanceNumber,
                Instance.Rows, Instance.Columns, Instance.size, Series.SeriesInstanceUID,
                Series.Modality]
        group = []
        order = [Series.SeriesInstanceUID, Instance.InstanceNumber, Instance.SOPInstanceUID]
    q = _joined(cols)
    if level == "instances":
        q = q.where(Instance.id.is_not(None))
    q = _filters(q, collection=collection, modality=modality, study_date=study_date,
                 patient_id=patient_id, study_uid=study_uid, series_uid=series_uid,
                 collection_ids=collection_ids)
    if group:
        q = q.group_by(*group)
    q = q.order_by(*order).limit(limit).offset(offset)
    out = []
    for row in s.execute(q).mappings():
        d = dict(row)
        for k, v in d.items():
            if isinstance(v, dt.date):
                d[k] = v.isoformat()
        out.append(d)
    return out


def collection_of_uid(s: Session, uid: str) -> int | None:
    """The collection id holding the study, series or instance ``uid`` (None: no such UID)."""
    for q in (
        select(Study.collection_id).where(Study.StudyInstanceUID == uid),
        select(Study.collection_id).join(Series, Series.study_id == Study.id)
        .where(Series.SeriesInstanceUID == uid),
        select(Study.collection_id).join(Series, Series.study_id == Study.id)
        .join(Instance, Instance.series_id == Series.id).where(Instance.SOPInstanceUID == uid),
    ):
        cid = s.scalar(q)
        if cid is not None:
            return int(cid)
    return None


def show_uid(s: Session, uid: str) -> dict[str, Any]:
    """Describe the study, series or instance with this (pseudonymous) UID."""
    st = s.scalar(select(Study).where(Study.StudyInstanceUID == uid))
    if st is not None:
        series = list_level(s, "series", study_uid=uid)
        return {"level": "study", "StudyInstanceUID": uid, "PatientID": st.patient.PatientID,
                "StudyDate": st.StudyDate.isoformat() if st.StudyDate else None,
                "ModalitiesInStudy": st.ModalitiesInStudy, "collection": st.collection.name,
                "series": series}
    se = s.scalar(select(Series).where(Series.SeriesInstanceUID == uid))
    if se is not None:
        return {"level": "series", "SeriesInstanceUID": uid, "Modality": se.Modality,
                "StudyInstanceUID": se.study.StudyInstanceUID,
                "instances": list_level(s, "instances", series_uid=uid)}
    inst = s.scalar(select(Instance).where(Instance.SOPInstanceUID == uid))
    if inst is not None:
        return {"level": "instance", "SOPInstanceUID": uid, "SOPClassUID": inst.SOPClassUID,
                "TransferSyntaxUID": inst.TransferSyntaxUID,
                "SeriesInstanceUID": inst.series.SeriesInstanceUID,
                "blob_sha256": inst.blob_sha256, "size": inst.size, "dataset": inst.dataset}
    raise NotFoundError(
        f"no study, series or instance with UID {uid!r}; UIDs in mida are pseudonyms "
        "(2.25.…): find them with 'mida ls studies'"
    )


def collections_overview(
    s: Session, collection_ids: frozenset[int] | None = None
) -> list[dict[str, Any]]:
    """Each collection with its counts (home page); only ``collection_ids`` when given."""
    q = (
        select(
            Collection.name, Collection.deid_profile,
            func.count(func.distinct(Study.patient_id)).label("patients"),
            func.count(func.distinct(Study.id)).label("studies"),
            func.count(func.distinct(Series.id)).label("series"),
            func.count(func.distinct(Instance.id)).label("instances"),
        )
        .select_from(Collection)
        .outerjoin(Study, Study.collection_id == Collection.id)
        .outerjoin(Series, Series.study_id == Study.id)
        .outerjoin(Instance, Instance.series_id == Series.id)
        .group_by(Collection.id)
        .order_by(Collection.name)
    )
    if collection_ids is not None:
        q = q.where(Collection.id.in_(sorted(collection_ids)))
    return [dict(r) for r in s.execute(q).mappings()]


__all__ = [
    "LEVELS",
    "collection_of_uid",
    "collections_overview",
    "list_level",
    "parse_date_range",
    "show_uid",
]
