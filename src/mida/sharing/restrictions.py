"""Release restrictions: flags that keep data out of every release and export.

A restriction sits on a collection, a patient, a study or a series and gives
one reason:

``personal_data``
    The data carries a re-identification risk that de-identification cannot
    remove (a rare disease in a small town, a face in a head CT).
``trade_secret``
    The provider's or a vendor's trade secret (a prototype sequence, a
    proprietary reconstruction).
``contract``
    A contract limits sharing (a sponsor's trial data, a vendor agreement).
``consent_withdrawn``
    The patient withdrew consent.
``embargo``
    Not releasable until ``until`` (a date); releasable from that day on.

Restrictions are never deleted: lifting one records who lifted it and when,
so the reason a past release left data out stays explainable. Issue 7 adds
who may set them; releases (:mod:`mida.datasets.release`) honour them.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mida.catalog.models import Collection, Patient, Restriction, Series, Study, utcnow
from mida.errors import ConflictError, DatasetError, NotFoundError

LEVELS = ("collection", "patient", "study", "series")
REASONS = ("personal_data", "trade_secret", "contract", "consent_withdrawn", "embargo")


def _target_id(s: Session, level: str, target: str) -> int:
    if level == "collection":
        row = s.scalar(select(Collection.id).where(Collection.name == target))
    elif level == "patient":
        ids = list(s.scalars(select(Patient.id).where(Patient.PatientID == target)))
        if len(ids) > 1:
            raise DatasetError(f"patient {target!r} exists at {len(ids)} institutions: "
                               "restrict its studies instead")
        row = ids[0] if ids else None
    elif level == "study":
        row = s.scalar(select(Study.id).where(Study.StudyInstanceUID == target))
    elif level == "series":
        row = s.scalar(select(Series.id).where(Series.SeriesInstanceUID == target))
    else:
        raise DatasetError(f"unknown level {level!r}: choose one of {', '.join(LEVELS)}")
    if row is None:
        what = "name" if level == "collection" else (
            "pseudonymous PatientID" if level == "patient" else "UID")
        raise NotFoundError(f"no {level} with {what} {target!r} in the catalog")
    return int(row)


def add(s: Session, level: str, target: str, reason: str, *, until: dt.date | None = None,
        note: str = "", by: str | None = None) -> Restriction:
    """Flag ``target`` (a collection name, pseudonymous PatientID, study or series UID)."""
    if reason not in REASONS:
        raise DatasetError(f"unknown reason {reason!r}: choose one of {', '.join(REASONS)}")
    if (reason == "embargo") != (until is not None):
        raise DatasetError("an embargo needs --until DATE, and only an embargo takes one")
    tid = _target_id(s, level, target)
    same = s.scalar(select(Restriction).where(
        Restriction.level == level, Restriction.target_id == tid,
        Restriction.reason == reason, Restriction.lifted.is_(None)))
    if same is not None:
        raise ConflictError(f"{level} {target} is already restricted ({reason}, "
                            f"restriction {same.id})")
    row = Restriction(level=level, target_id=tid, reason=reason, until=until, note=note,
                      created_by=by)
    s.add(row)
    s.flush()
    return row


def lift(s: Session, restriction_id: int, *, by: str | None = None) -> Restriction:
    """Lift a restriction; its row stays, with who lifted it and when."""
    row = s.get(Restriction, restriction_id)
    if row is None:
        raise NotFoundError(f"no restriction {restriction_id}")
    if row.lifted is not None:
        raise ConflictError(f"restriction {restriction_id} was already lifted")
    row.lifted = utcnow()
    row.lifted_by = by
    s.flush()
    return row


def is_active(r: Restriction, today: dt.date) -> bool:
    """In force on ``today``: not lifted, and for an embargo, ``today`` is before ``until``."""
    if r.lifted is not None:
        return False
    return not (r.reason == "embargo" and r.until is not None and today >= r.until)


def active(s: Session, today: dt.date | None = None) -> list[Restriction]:
    """Every restriction in force on ``today`` (default: today, UTC)."""
    today = today or dt.datetime.now(dt.UTC).date()
    rows = s.scalars(select(Restriction).where(Restriction.lifted.is_(None))
                     .order_by(Restriction.id))
    return [r for r in rows if is_active(r, today)]


def reasons_by_series(s: Session, series_ids: Iterable[int],
                      today: dt.date | None = None) -> dict[int, list[str]]:
    """The reasons that keep each of ``series_ids`` out (series without any are absent)."""
    rules = active(s, today)
    if not rules:
        return {}
    by_level: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in rules:
        by_level[r.level][r.target_id].add(r.reason)
    ids = list(series_ids)
    out: dict[int, list[str]] = {}
    for i in range(0, len(ids), 500):
        rows = s.execute(
            select(Series.id, Study.id, Study.patient_id, Study.collection_id)
            .join(Study, Study.id == Series.study_id).where(Series.id.in_(ids[i:i + 500])))
        for sid, study_id, patient_id, coll_id in rows:
            found = (by_level["series"].get(sid, set()) | by_level["study"].get(study_id, set())
                     | by_level["patient"].get(patient_id, set())
                     | by_level["collection"].get(coll_id, set()))
            if found:
                out[sid] = sorted(found)
    return out


def describe(s: Session, r: Restriction) -> dict[str, Any]:
    """A restriction as a plain dict, its target named (collection name, pseudonym, UID)."""
    target: str | None
    if r.level == "collection":
        target = s.scalar(select(Collection.name).where(Collection.id == r.target_id))
    elif r.level == "patient":
        target = s.scalar(select(Patient.PatientID).where(Patient.id == r.target_id))
    elif r.level == "study":
        target = s.scalar(select(Study.StudyInstanceUID).where(Study.id == r.target_id))
    else:
        target = s.scalar(select(Series.SeriesInstanceUID).where(Series.id == r.target_id))
    return {"id": r.id, "level": r.level, "target": target, "reason": r.reason,
            "until": r.until.isoformat() if r.until else None, "note": r.note,
            "created_by": r.created_by, "created": r.created.isoformat(),
            "lifted": r.lifted.isoformat() if r.lifted else None, "lifted_by": r.lifted_by}


def list_all(s: Session, *, include_lifted: bool = False) -> list[dict[str, Any]]:
    q = select(Restriction).order_by(Restriction.id)
    if not include_lifted:
        q = q.where(Restriction.lifted.is_(None))
    return [describe(s, r) for r in s.scalars(q)]


__all__ = ["LEVELS", "REASONS", "active", "add", "describe", "is_active", "lift", "list_all",
           "reasons_by_series"]
