"""``mida jobs``: long work (ingest, pull) recorded in the catalog: list, show, wait, cancel.

``mida jobs run ID`` is what a queued job's process runs (the API and
``--no-wait`` queue jobs); it dispatches on the job's kind.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mida.cli.common import JsonOpt, audit, handle_errors, node
from mida.cli.output import console, emit_json, kv, table
from mida.compute.jobs import QUERY_ENV, private_query
from mida.errors import MidaError, NotFoundError

jobs_app = typer.Typer(no_args_is_help=True, help="Long jobs: list, show, wait, cancel.")

FINAL = ("done", "failed", "cancelled", "interrupted")


def _job(job_id: int) -> dict[str, Any]:
    from mida.catalog.models import Job
    from mida.catalog.service import job_view, reap_jobs

    with node().catalog().session() as s:
        reap_jobs(s)
        job = s.get(Job, job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id}")
        return job_view(job)


@jobs_app.command("ls")
@handle_errors
def jobs_ls(limit: Annotated[int, typer.Option(help="Most recent N.")] = 20,
            json_out: JsonOpt = False) -> None:
    """List recent jobs."""
    from sqlalchemy import select

    from mida.catalog.models import Job
    from mida.catalog.service import job_view, reap_jobs

    with node().catalog().session() as s:
        reap_jobs(s)
        rows = [job_view(j) for j in s.scalars(select(Job).order_by(Job.id.desc()).limit(limit))]
    if json_out:
        emit_json(rows)
    else:
        table([{"id": r["id"], "kind": r["kind"], "status": r["status"],
                "progress": f"{r['progress']['done']}/{r['progress']['total'] or '?'}",
                "owner": r["owner"], "started": r["started"]} for r in rows], title="jobs")


@jobs_app.command("show")
@handle_errors
def jobs_show(job_id: int, json_out: JsonOpt = False) -> None:
    """Show one job: state, progress, counts and error."""
    data = _job(job_id)
    emit_json(data) if json_out else kv(data, title=f"job {job_id}")


def wait_for(job_id: int, *, quiet: bool = False, poll: float = 0.5) -> dict[str, Any]:
    """Follow a job with a progress bar until it ends; returns its final view."""
    data = _job(job_id)
    with Progress(TextColumn(f"job {job_id} ({data['kind']})"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  disable=quiet, transient=True) as bar:
        task = bar.add_task("job", total=None)
        while data["status"] not in FINAL:
            bar.update(task, completed=data["progress"]["done"], total=data["progress"]["total"])
            time.sleep(poll)
            data = _job(job_id)
    return data


@jobs_app.command("wait")
@handle_errors
def jobs_wait(job_id: int, json_out: JsonOpt = False) -> None:
    """Wait for a job to end, with a progress bar; exit 1 unless it is done."""
    data = wait_for(job_id, quiet=json_out)
    emit_json(data) if json_out else kv(data, title=f"job {job_id}")
    if data["status"] != "done":
        raise typer.Exit(1)


@jobs_app.command("cancel")
@handle_errors
def jobs_cancel(job_id: int) -> None:
    """Ask a job to stop (it stops after the instances in hand are indexed)."""
    from mida.catalog.service import cancel_job

    with node().catalog().session() as s:
        status = cancel_job(s, job_id).status
    audit("jobs.cancel", {"job": job_id})
    console.print(f"job {job_id}: cancel requested ({status})")


def _run_ingest(n: Any, job_id: int, params: dict[str, Any]) -> None:
    from mida.ingest import Ingestor

    paths = [Path(p) for p in params.get("paths", [])]
    for p in paths:
        if not p.exists():
            raise MidaError(f"no such file or folder: {p}")
    Ingestor(n, params["collection"], job_id=job_id, owner=params.get("owner"),
             profile=params.get("profile")).run(paths)


def _run_pull(n: Any, job_id: int, params: dict[str, Any]) -> None:
    import os

    from mida.net.pull import run_pull_job

    run_pull_job(n, job_id, {**params, "query": os.environ.get(QUERY_ENV, "")})


RUNNERS = {"ingest": _run_ingest, "pull": _run_pull}


@jobs_app.command("run", hidden=True)
@handle_errors
def jobs_run(job_id: int) -> None:
    """Run a queued job in this process (started by the API or --no-wait)."""
    from mida.catalog.models import Job
    from mida.catalog.service import finish_job
    from mida.errors import JobCancelledError

    n = node()
    with n.catalog().session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id}")
        if job.status != "queued":
            raise MidaError(f"job {job_id} is {job.status}, not queued")
        kind, params = job.kind, dict(job.params or {})
    runner = RUNNERS.get(kind)
    if runner is None:
        with n.catalog().session() as s:
            finish_job(s, job_id, "failed", {}, f"unknown job kind {kind!r}")
        raise MidaError(f"unknown job kind {kind!r}")
    try:
        runner(n, job_id, params)
    except JobCancelledError:
        return
    except MidaError as exc:
        with n.catalog().session() as s:
            job = s.get(Job, job_id)
            if job is not None and job.status in ("queued", "running"):
                finish_job(s, job_id, "failed", job.counts or {}, str(exc))
        raise


def queue_and_spawn(kind: str, params: dict[str, Any]) -> int:
    """Queue a job and start its process; returns the job id."""
    from mida.catalog.service import queue_job
    from mida.compute import spawn_job

    n = node()
    private: dict[str, str] = {}
    if kind == "pull":
        params, private = private_query(params)
    with n.catalog().session() as s:
        job_id = queue_job(s, kind, params, owner=params.get("owner")).id
    spawn_job(n.settings, job_id, private)
    return job_id


__all__ = [
    "FINAL",
    "QUERY_ENV",
    "RUNNERS",
    "jobs_app",
    "private_query",
    "queue_and_spawn",
    "wait_for",
]
