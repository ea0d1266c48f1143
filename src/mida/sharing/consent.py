"""Consent withdrawal: keep a patient out of every future release and export.

:func:`withdraw` flags the patient with a ``consent_withdrawn`` restriction
(:mod:`mida.sharing.restrictions`), which every later release leaves out and
which every export re-checks, including exports of releases made before the
withdrawal (their manifests are immutable, so the export leaves the
patient's series out and says so in its report). It also lists the releases
already made that contained the patient, so that the data steward can tell
their recipients (a DUA usually obliges recipients to delete a withdrawn
patient's data on notice).

Examples
--------
``mida consent withdraw P7F3... --note "letter of 2025-03-04"`` prints the
restriction id and, e.g., ``liver@1.0.0: 2 series``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mida.catalog.models import DatasetRelease, Patient, ReleaseSeries
from mida.sharing import restrictions
from mida.sharing.audit import Auditor


@dataclass
class Withdrawal:
    """What :func:`withdraw` did: the restriction and the past releases affected."""

    patient: str
    restriction_id: int
    releases: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"patient": self.patient, "restriction": self.restriction_id,
                "releases": self.releases}


def releases_with(s: Session, patient_pseudonym: str) -> list[dict[str, Any]]:
    """The releases that contain the patient, oldest first, with their series counts.

    Each item: ``release`` (``NAME@X.Y.Z``), ``name``, ``version``,
    ``created`` (ISO time) and ``series`` (how many of the patient's series
    it holds).
    """
    pids = list(s.scalars(select(Patient.id).where(Patient.PatientID == patient_pseudonym)))
    if not pids:
        return []
    rows = s.execute(
        select(DatasetRelease.name, DatasetRelease.version, DatasetRelease.created,
               func.count(ReleaseSeries.id))
        .join(ReleaseSeries, ReleaseSeries.release_id == DatasetRelease.id)
        .where(ReleaseSeries.patient_id.in_(pids))
        .group_by(DatasetRelease.id, DatasetRelease.name, DatasetRelease.version,
                  DatasetRelease.created))
    out = [{"release": f"{n}@{v}", "name": n, "version": v, "created": c.isoformat(),
            "series": int(k)} for n, v, c, k in rows]
    return sorted(out, key=lambda r: (r["created"], r["name"], _version_key(r["version"])))


def _version_key(version: str) -> tuple[int, ...]:
    """``1.10.0`` after ``1.9.0`` (releases made in the same second sort by version)."""
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))


def withdraw(s: Session, patient_pseudonym: str, *, by: str | None, note: str = "",
             audit: Auditor) -> Withdrawal:
    """Record that the patient withdrew consent; return the past releases that held them.

    Parameters
    ----------
    s
        Catalog session; the caller commits.
    patient_pseudonym
        The pseudonymous PatientID (as in the catalog and release manifests).
    by, note
        Who records it and a note (e.g. where the withdrawal letter is filed;
        never the patient's name).
    audit
        The audit trail (``consent.withdraw`` entry: pseudonym, restriction
        id, the releases affected).

    Raises
    ------
    NotFoundError
        No patient with that pseudonym.
    ConflictError
        The patient's consent is already recorded as withdrawn.
    """
    row = restrictions.add(s, "patient", patient_pseudonym, "consent_withdrawn", note=note,
                           by=by)
    past = releases_with(s, patient_pseudonym)
    audit.append("consent.withdraw", {
        "patient": patient_pseudonym, "restriction": row.id,
        "releases": [{"release": r["release"], "series": r["series"]} for r in past]},
        actor=by)
    return Withdrawal(patient_pseudonym, row.id, past)


__all__ = ["Withdrawal", "releases_with", "withdraw"]
