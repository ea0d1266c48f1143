"""Catalog operations shared by services: collections, jobs, counts."""

from __future__ import annotations

import os
import socket
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mida.catalog.models import (
    Collection,
    Instance,
    Job,
    Patient,
    QuarantineEntry,
    Series,
    Study,
    utcnow,
)
from mida.errors import NotFoundError


def get_or_create_collection(
    s: Session, name: str, institution_id: int, profile: str
) -> Collection:
    """The collection called ``name``, created with ``profile`` when new."""
    if not name or len(name) > 128 or any(c in name for c in "/\\\x00"):
        raise ValueError(f"collection name {name!r} must be 1-128 characters without / or \\")
    row = s.scalar(select(Collection).where(Collection.name == name))
    if row is None:
        row = Collection(name=name, institution_id=institution_id, deid_profile=profile)
        s.add(row)
        s.flush()
    return row


def get_collection(s: Session, name: str) -> Collection:
    row = s.scalar(select(Collection).where(Collection.name == name))
    if row is None:
        known = ", ".join(s.scalars(select(Collection.name).order_by(Collection.name))) or "none"
        raise NotFoundError(f"no collection named {name!r} (known: {known})")
    return row


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_jobs(s: Session) -> None:
    """Mark this host's running jobs whose process is gone as interrupted."""
    host = socket.gethostname()
    for job in s.scalars(select(Job).where(Job.status == "running", Job.hostname == host)):
        if job.pid is None or not _alive(job.pid):
            job.status = "interrupted"
            job.finished = utcnow()


def start_job(s: Session, kind: str, params: dict[str, Any], *, job_id: int | None = None,
              owner: str | None = None) -> Job:
    """Record a job as running (a queued ``job_id`` is taken over by this process)."""
    reap_jobs(s)
    if job_id is not None:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id}")
        job.status, job.pid, job.hostname = "running", os.getpid(), socket.gethostname()
        job.started = utcnow()
        if params:
            job.params = {**(job.params or {}), **params}
        s.flush()
        return job
    job = Job(kind=kind, status="running", params=params, counts={}, pid=os.getpid(),
              hostname=socket.gethostname(), owner=owner, progress_done=0,
              cancel_requested=False)
    s.add(job)
    s.flush()
    return job


def queue_job(s: Session, kind: str, params: dict[str, Any], owner: str | None = None) -> Job:
    """Record a job to be run by another process (``mida jobs run ID``)."""
    job = Job(kind=kind, status="queued", params=params, counts={}, owner=owner,
              progress_done=0, cancel_requested=False)
    s.add(job)
    s.flush()
    return job


def update_job(s: Session, job_id: int, *, done: int | None = None, total: int | None = None,
               counts: dict[str, Any] | None = None) -> bool:
    """Record progress; returns whether a cancel was requested."""
    job = s.get(Job, job_id)
    if job is None:
        return False
    if done is not None:
        job.progress_done = done
    if total is not None:
        job.progress_total = total
    if counts is not None:
        job.counts = counts
    return bool(job.cancel_requested)


def cancel_job(s: Session, job_id: int) -> Job:
    """Ask a queued or running job to stop (a queued one stops at once)."""
    job = s.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    if job.status == "queued":
        job.status, job.finished = "cancelled", utcnow()
    elif job.status == "running":
        job.cancel_requested = True
    return job


def job_view(job: Job) -> dict[str, Any]:
    """A job as the API and CLI show it."""
    return {
        "id": job.id, "kind": job.kind, "status": job.status, "owner": job.owner,
        "params": job.params, "counts": job.counts,
        "progress": {"done": job.progress_done, "total": job.progress_total},
        "cancel_requested": bool(job.cancel_requested),
        "started": job.started.isoformat() if job.started else None,
        "finished": job.finished.isoformat() if job.finished else None,
        "error": job.error,
    }


def finish_job(
    s: Session, job_id: int, status: str, counts: dict[str, Any], error: str | None = None
) -> None:
    job = s.get(Job, job_id)
    if job is not None:
        job.status = status
        job.counts = counts
        job.finished = utcnow()
        job.error = error


def stats(s: Session) -> dict[str, Any]:
    """Counts across the catalog, for ``mida stats`` and the home page."""
    reasons = dict(
        s.execute(
            select(QuarantineEntry.reason, func.count())
            .where(QuarantineEntry.status == "open")
            .group_by(QuarantineEntry.reason)
        ).all()
    )
    per_collection = [
        {"collection": name, "studies": n_st, "instances": n_in or 0}
        for name, n_st, n_in in s.execute(
            select(
                Collection.name,
                func.count(func.distinct(Study.id)),
                func.count(Instance.id),
            )
            .select_from(Collection)
            .outerjoin(Study, Study.collection_id == Collection.id)
            .outerjoin(Series, Series.study_id == Study.id)
            .outerjoin(Instance, Instance.series_id == Series.id)
            .group_by(Collection.name)
            .order_by(Collection.name)
        ).all()
    ]
    modalities = dict(
        s.execute(
            select(Series.Modality, func.count(Instance.id))
            .join(Instance, Instance.series_id == Series.id)
            .group_by(Series.Modality)
        ).all()
    )
    last = s.scalar(select(Job).order_by(Job.id.desc()).limit(1))
    return {
        "collections": s.scalar(select(func.count()).select_from(Collection)) or 0,
        "patients": s.scalar(select(func.count()).select_from(Patient)) or 0,
        "studies": s.scalar(select(func.count()).select_from(Study)) or 0,
        "series": s.scalar(select(func.count()).select_from(Series)) or 0,
        "instances": s.scalar(select(func.count()).select_from(Instance)) or 0,
        "bytes": int(s.scalar(select(func.coalesce(func.sum(Instance.size), 0))) or 0),
        "quarantined": sum(reasons.values()),
        "quarantine_by_reason": {str(k): int(v) for k, v in reasons.items()},
        "modalities": {str(k or "?"): int(v) for k, v in modalities.items()},
        "by_collection": per_collection,
        "last_job": None if last is None else {
            "id": last.id, "kind": last.kind, "status": last.status,
            "started": last.started.isoformat(), "counts": last.counts,
        },
    }


__all__ = [
    "cancel_job",
    "finish_job",
    "get_collection",
    "get_or_create_collection",
    "job_view",
    "queue_job",
    "reap_jobs",
    "start_job",
    "stats",
    "update_job",
]
