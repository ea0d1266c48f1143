"""Long jobs over HTTP: start an ingest or a pull (202 + Location), follow, cancel.

A job runs in its own process (:func:`mida.compute.spawn_job`); ``GET
/jobs/{id}`` shows its state, progress, counts and error; ``DELETE`` asks it
to stop. Callers see their own jobs; admins see every job.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from mida.api.deps import PrincipalDep, SessionDep, require
from mida.catalog.models import Job
from mida.catalog.service import cancel_job, get_collection, job_view, queue_job, reap_jobs
from mida.compute.jobs import private_query, spawn_job
from mida.errors import NotFoundError
from mida.sharing.identity import Principal

router = APIRouter(tags=["jobs"])


class IngestRequest(BaseModel):
    paths: list[str] = Field(min_length=1, description="Files, folders or archives on the "
                             "server's file system.")
    collection: str = Field(min_length=1, max_length=128)
    profile: str | None = None


class PullRequest(BaseModel):
    pacs: str = Field(min_length=1, description="A PACS added with 'mida pacs add'.")
    query: str = Field(default="", description="e.g. 'Modality=CT StudyDate=20240101-20241231'")
    collection: str = Field(min_length=1, max_length=128)
    method: str | None = Field(default=None, pattern="^(get|move)$",
                               description="Default: the PACS's configured method.")
    refresh: bool = Field(default=False, description="Pull studies already pulled again.")


def _visible(p: Principal, job: Job | None) -> Job:
    if job is None or not (p.allows("admin") or job.owner == p.actor):
        raise NotFoundError("no such job")
    return job


def _accepted(request: Request, response: Response, job: Job,
              private: dict[str, str] | None = None) -> dict[str, Any]:
    spawn_job(request.app.state.node.settings, job.id, private)
    response.status_code = 202
    response.headers["Location"] = f"/jobs/{job.id}"
    return job_view(job)


@router.post("/api/ingest", operation_id="start_ingest", status_code=202)
def start_ingest(body: IngestRequest, request: Request, response: Response, s: SessionDep,
                 p: PrincipalDep) -> dict[str, Any]:
    """Ingest server-side paths into a collection (admin: it reads the server's files)."""
    require(p, "admin")
    job = queue_job(s, "ingest", {**body.model_dump(), "owner": p.actor}, owner=p.actor)
    s.commit()
    return _accepted(request, response, job)


@router.post("/api/pull", operation_id="start_pull", status_code=202)
def start_pull(body: PullRequest, request: Request, response: Response, s: SessionDep,
               p: PrincipalDep) -> dict[str, Any]:
    """Pull studies from a configured PACS into a collection."""
    try:
        cid: int | None = get_collection(s, body.collection).id
    except NotFoundError:
        cid = None  # a new collection: node-wide write is needed to create it
    require(p, "write", cid)
    params, private = private_query({**body.model_dump(), "owner": p.actor})
    job = queue_job(s, "pull", params, owner=p.actor)
    s.commit()
    return _accepted(request, response, job, private)


@router.get("/jobs", operation_id="list_jobs")
def list_jobs(s: SessionDep, p: PrincipalDep, limit: int = 50) -> dict[str, Any]:
    reap_jobs(s)
    q = select(Job).order_by(Job.id.desc()).limit(max(1, min(limit, 1000)))
    if not p.allows("admin"):
        q = q.where(Job.owner == p.actor)
    rows = [job_view(j) for j in s.scalars(q)]
    return {"count": len(rows), "data": rows}


@router.get("/jobs/{job_id}", operation_id="get_job")
def get_job(job_id: int, s: SessionDep, p: PrincipalDep) -> dict[str, Any]:
    reap_jobs(s)
    return job_view(_visible(p, s.get(Job, job_id)))


@router.delete("/jobs/{job_id}", operation_id="cancel_job", status_code=202)
def delete_job(job_id: int, s: SessionDep, p: PrincipalDep) -> dict[str, Any]:
    _visible(p, s.get(Job, job_id))
    return job_view(cancel_job(s, job_id))


__all__ = ["router"]
