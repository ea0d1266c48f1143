"""Long jobs over HTTP: 202 + Location, progress, counts, cancel; and cancel inside ingest."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mida.api import create_app
from mida.catalog.models import Job
from mida.catalog.service import cancel_job
from mida.errors import JobCancelledError
from mida.events import EventBus, FileProcessed
from mida.ingest import Ingestor
from mida.node import Node
from tests.factories import bearer, make_token, write


def _wait(client: TestClient, location: str) -> dict:
    for _ in range(600):  # a bound on polls, not a timing assertion
        body = client.get(location).json()
        if body["status"] in ("done", "failed", "cancelled", "interrupted"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"job never ended: {body}")


def test_ingest_job_answers_202_with_location_then_reports(node: Node, tmp_path: Path) -> None:
    for i in range(4):
        write(tmp_path / "in" / f"{i}.dcm")
    client = TestClient(create_app(node), headers=bearer(make_token(node)))
    r = client.post("/api/ingest", json={"paths": [str(tmp_path / "in")], "collection": "c1"})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/jobs/{r.json()['id']}"
    body = _wait(client, r.headers["location"])
    assert body["status"] == "done", body
    assert body["counts"]["stored"] == 4 and body["progress"] == {"done": 4, "total": 4}
    listed = client.get("/jobs").json()["data"]
    assert [j["id"] for j in listed] == [body["id"]]


def test_jobs_need_rights_and_stay_private(node: Node, tmp_path: Path) -> None:
    app = create_app(node)
    write(tmp_path / "in" / "0.dcm")
    admin = TestClient(app, headers=bearer(make_token(node)))
    r = admin.post("/api/ingest", json={"paths": [str(tmp_path / "in")], "collection": "c1"})
    _wait(admin, r.headers["location"])
    reader = TestClient(app, headers=bearer(make_token(node, "rae", "researcher", "read",
                                                       "c1", grant="read")))
    denied = reader.post("/api/ingest", json={"paths": ["/etc"], "collection": "c1"})
    assert denied.status_code == 403
    assert reader.get(r.headers["location"]).status_code == 403  # not theirs: not shown
    assert reader.get("/jobs").json()["count"] == 0
    assert TestClient(app).get(r.headers["location"]).status_code == 401


def test_a_queued_job_is_cancelled_at_once(node: Node) -> None:
    from mida.catalog.service import queue_job

    with node.catalog().session() as s:
        job_id = queue_job(s, "ingest", {"paths": [], "collection": "x"}, owner="user:alice").id
    client = TestClient(create_app(node), headers=bearer(make_token(node)))
    r = client.delete(f"/jobs/{job_id}")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"


def test_a_running_ingest_stops_on_cancel_and_keeps_what_it_indexed(node: Node,
                                                                     tmp_path: Path) -> None:
    for i in range(6):
        write(tmp_path / "in" / f"{i}.dcm")
    bus = EventBus()
    ing = Ingestor(node, "c1", workers=1, bus=bus)
    ing.progress_every = 0.0  # check for a cancel after every file
    seen: list[int] = []

    def on_event(ev: object) -> None:
        if isinstance(ev, FileProcessed):
            seen.append(1)
            if len(seen) == 2:
                with node.catalog().session() as s:
                    job = s.query(Job).order_by(Job.id.desc()).first()
                    assert job is not None
                    cancel_job(s, job.id)

    bus.subscribe(on_event)
    with pytest.raises(JobCancelledError):
        ing.run([tmp_path / "in"])
    with node.catalog().session() as s:
        job = s.query(Job).order_by(Job.id.desc()).first()
        assert job is not None and job.status == "cancelled"
        assert 2 <= job.counts["stored"] < 6
    again = Ingestor(node, "c1", workers=1).run([tmp_path / "in"])  # resumes: the rest arrives
    assert again.stored + job.counts["stored"] == 6


def test_a_pull_query_never_reaches_the_catalog_logs_or_audit(node: Node) -> None:
    """A query may name a patient (PatientID=...): only its keys are recorded."""
    client = TestClient(create_app(node), headers=bearer(make_token(node)))
    r = client.post("/api/pull", json={"pacs": "nowhere", "collection": "c1",
                                       "query": "PatientID=A123456789 Modality=CT"})
    assert r.status_code == 202
    body = _wait(client, r.headers["location"])
    assert body["status"] == "failed" and "nowhere" in (body["error"] or "")
    assert body["params"]["query"] is None
    assert body["params"]["query_keys"] == ["Modality", "PatientID"]
    home = node.settings.home
    for path in [*home.rglob("*.log"), *home.rglob("*.jsonl"), *home.glob("catalog.sqlite*")]:
        assert b"A123456789" not in path.read_bytes(), path
