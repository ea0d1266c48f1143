"""The access matrix on the REST routes: every refusal is a 401 or 403, and is audited.

DICOMweb's and DIMSE's own cases live with them (tests/dicomweb, tests/net);
this file checks the shared rules once: no token, a tampered, expired or
revoked token, a token for collection A reading collection B, a read token
writing, and hostile input in paths and parameters.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from mida.api import create_app
from mida.catalog.models import ApiToken, Study, utcnow
from mida.ingest import ingest_paths
from mida.node import Node
from mida.sharing import AuditLog
from tests.factories import bearer, make_token, write


@pytest.fixture
def world(node: Node, tmp_path: Path) -> dict:
    write(tmp_path / "a" / "0.dcm")
    write(tmp_path / "b" / "0.dcm")
    ingest_paths(node, [tmp_path / "a"], "A", workers=1)
    ingest_paths(node, [tmp_path / "b"], "B", workers=1)
    app = create_app(node)
    reader_a = make_token(node, "rae", "researcher", "read", "A", grant="read")
    with node.catalog().session() as s:
        uids = dict(s.execute(select(Study.collection_id, Study.StudyInstanceUID)).all())
    from mida.catalog.service import get_collection

    with node.catalog().session() as s:
        uid_b = uids[get_collection(s, "B").id]
        uid_a = uids[get_collection(s, "A").id]
    return {"app": app, "reader_a": reader_a, "uid_a": uid_a, "uid_b": uid_b, "node": node}


def _last_audit(node: Node) -> dict:
    return AuditLog(node.settings.audit_file).entries()[-1]


def test_no_token_is_401_with_a_challenge_and_audited(world: dict) -> None:
    r = TestClient(world["app"]).get("/api/studies")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    entry = _last_audit(world["node"])
    assert entry["actor"] == "anonymous" and entry["detail"]["result"] == "denied"
    assert entry["detail"]["status"] == 401


@pytest.mark.parametrize("how", ["tampered", "expired", "revoked", "garbage"])
def test_bad_tokens_are_401(world: dict, how: str) -> None:
    node = world["node"]
    token = make_token(node, "ana", "admin", "admin")
    if how == "tampered":
        token = token[:-2] + ("zz" if token[-2:] != "zz" else "yy")
    elif how == "garbage":
        token = "' OR 1=1 --"
    else:
        with node.catalog().session() as s:
            row = s.scalars(select(ApiToken).order_by(ApiToken.id.desc())).first()
            assert row is not None
            if how == "expired":
                row.expires = utcnow() - dt.timedelta(minutes=1)
            else:
                row.revoked = utcnow()
    r = TestClient(world["app"], headers=bearer(token)).get("/api/collections")
    assert r.status_code == 401
    assert _last_audit(node)["detail"]["result"] == "denied"


def test_a_token_for_a_reads_only_a_and_never_learns_what_b_holds(world: dict) -> None:
    c = TestClient(world["app"], headers=bearer(world["reader_a"]))
    assert [x["name"] for x in c.get("/api/collections").json()["data"]] == ["A"]
    studies = c.get("/api/studies").json()["data"]
    assert [x["StudyInstanceUID"] for x in studies] == [world["uid_a"]]
    assert c.get(f"/api/uids/{world['uid_a']}").status_code == 200
    other = c.get(f"/api/uids/{world['uid_b']}")
    missing = c.get("/api/uids/2.25.12345")
    assert other.status_code == missing.status_code == 403
    assert other.json() == missing.json()  # the same answer: existence never leaks
    assert c.get("/api/stats").status_code == 403  # node-wide counts need a node-wide grant
    entry = _last_audit(world["node"])
    assert entry["actor"] == "user:rae" and entry["detail"]["status"] == 403


def test_a_read_token_cannot_write_or_start_jobs(world: dict) -> None:
    c = TestClient(world["app"], headers=bearer(world["reader_a"]))
    assert c.post("/api/pull", json={"pacs": "x", "collection": "A"}).status_code == 403
    assert c.post("/api/ingest", json={"paths": ["/"], "collection": "A"}).status_code == 403


@pytest.mark.parametrize("path", [
    "/api/uids/..%2F..%2Fetc%2Fpasswd", "/api/uids/%2e%2e%2f%2e%2e%2fcatalog.sqlite",
    "/api/uids/1.2.3;DROP TABLE study", "/api/studies?modality=' OR 1=1 --",
    "/api/studies?collection=A' OR '1'='1", "/api/studies?study_date=2024'--",
])
def test_hostile_paths_and_parameters_leak_nothing(world: dict, path: str) -> None:
    c = TestClient(world["app"], headers=bearer(world["reader_a"]))
    r = c.get(path)
    assert r.status_code in (200, 400, 403, 404)
    if r.status_code == 200:
        assert r.json()["count"] == 0
    assert "root:" not in r.text and "SQLite" not in r.text
    with world["node"].catalog().session() as s:
        assert s.scalar(select(func.count()).select_from(Study)) == 2
    assert _last_audit(world["node"])["detail"]["params"] in ([], ["modality"], ["collection"],
                                                              ["study_date"])


def test_audit_entries_never_carry_query_values(world: dict) -> None:
    c = TestClient(world["app"], headers=bearer(world["reader_a"]))
    c.get("/api/studies", params={"collection": "Lin Wen-Hsiung A123456789"})
    text = world["node"].settings.audit_file.read_text()
    assert "A123456789" not in text and "Lin" not in text
    assert AuditLog(world["node"].settings.audit_file).verify() == []
