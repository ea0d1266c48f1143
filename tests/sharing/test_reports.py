"""Usage reports: uses read from the audit trail, credited to the grant that allowed them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mida.catalog.models import (
    AccessRequest,
    Collection,
    DatasetRelease,
    Grant,
    Instance,
    Patient,
    ReleaseSeries,
    Series,
    Study,
    User,
)
from mida.errors import NotFoundError
from mida.node import Node
from mida.sharing import AuditLog
from mida.sharing.reports import NO_GRANT, NODE_WIDE, usage

NOW = dt.datetime.now(dt.UTC)


def _catalog(node: Node) -> dict[str, int]:
    """Two collections (one study each), a release over both, users, requests and grants."""
    inst = node.institution_id()
    ids: dict[str, int] = {}
    with node.catalog().session() as s:
        for n, (coll, study, series) in enumerate((("ct-a", "1.2.1", "1.2.1.1"),
                                                   ("ct-b", "1.2.2", "1.2.2.1"))):
            c = Collection(name=coll, institution_id=inst, deid_profile="default")
            p = Patient(institution_id=inst, PatientID=f"P{n}")
            s.add_all([c, p])
            s.flush()
            st = Study(StudyInstanceUID=study, patient_id=p.id, collection_id=c.id)
            s.add(st)
            s.flush()
            se = Series(SeriesInstanceUID=series, study_id=st.id, Modality="CT")
            s.add(se)
            s.flush()
            s.add(Instance(SOPInstanceUID=f"{series}.1", series_id=se.id, SOPClassUID="1.2",
                           TransferSyntaxUID="1.2.840.10008.1.2.1", blob_sha256="0" * 64,
                           size=1, dataset={}))
            ids[coll], ids[f"series:{coll}"], ids[f"patient:{coll}"] = c.id, se.id, p.id
        rel = DatasetRelease(name="rel", version="1.0.0", expression="modality = 'CT'",
                             status="ready", code_version="test")
        s.add(rel)
        s.flush()
        for coll in ("ct-a", "ct-b"):
            s.add(ReleaseSeries(release_id=rel.id, series_id=ids[f"series:{coll}"],
                                patient_id=ids[f"patient:{coll}"], split="train"))
        users = {name: User(name=name, role=role) for name, role in
                 (("alice", "researcher"), ("bob", "researcher"), ("root", "admin"))}
        s.add_all(users.values())
        s.flush()
        reqs = [AccessRequest(researcher_id=users["alice"].id, title=t, purpose=t,
                              target="cohort", irb_number="IRB-1", irb_body="NTUH REC",
                              irb_expiry=dt.date(2099, 1, 1)) for t in ("liver AI", "multi-site")]
        s.add_all(reqs)
        s.flush()
        hour = dt.timedelta(hours=1)
        s.add_all([
            Grant(user_id=users["alice"].id, collection_id=ids["ct-a"], scope="read",
                  purpose="liver AI", request_id=reqs[0].id, created=NOW - hour),
            Grant(user_id=users["alice"].id, release_id=rel.id, scope="read",
                  purpose="multi-site", request_id=reqs[1].id, created=NOW - hour),
            Grant(user_id=users["bob"].id, collection_id=ids["ct-b"], scope="read",
                  purpose="expired study", created=NOW - 2 * hour, expires=NOW - hour),
        ])
        ids["req_liver"], ids["req_multi"] = reqs[0].id, reqs[1].id
    return ids


def _http(log: AuditLog, actor: str, path: str, status: int = 200,
          method: str = "GET") -> None:
    result = "allowed" if status < 400 else "denied" if status in (401, 403) else "failed"
    log.append("http", {"method": method, "object": path, "params": [], "status": status,
                        "result": result}, actor)


@pytest.fixture
def world(any_node: Node) -> dict[str, Any]:
    ids = _catalog(any_node)
    log = AuditLog(any_node.settings.audit_file, fsync=False)
    _http(log, "user:alice", "/dicomweb/studies/1.2.1/series/1.2.1.1")  # download
    _http(log, "user:alice", "/dicomweb/studies/1.2.1/metadata")  # read
    _http(log, "user:alice", "/dicomweb/studies/1.2.1/series/1.2.1.1/instances/1.2.1.1.1"
                             "/frames/1")  # download
    _http(log, "user:alice", "/dicomweb/studies/1.2.1/series/1.2.1.1/instances/1.2.1.1.1"
                             "/rendered")  # read
    _http(log, "user:alice", "/api/uids/1.2.1.1.1")  # read, found by its instance UID
    _http(log, "user:alice", "/api/releases/rel/1.0.0/download")  # both collections
    _http(log, "user:alice", "/dicomweb/studies")  # a search over every collection
    _http(log, "user:bob", "/dicomweb/studies/1.2.2", status=403)  # expired grant
    _http(log, "user:alice", "/dicomweb/studies/1.2.1", status=500)  # failed: not a use
    log.append("dimse", {"op": "C-MOVE", "result": "allowed", "object": ["1.2.2"],
                         "instances": 1, "studies": 1}, "peer:PACS1")
    log.append("dimse", {"op": "C-ECHO", "result": "allowed"}, "peer:PACS1")
    log.append("release.export", {"release": "rel@1.0.0", "formats": ["nifti"]}, "steward")
    log.append("users.add", {"user": "carol", "role": "researcher"}, "steward")
    return {"node": any_node, "log": log, "ids": ids}


def _rows(rep: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(r["collection"], r["user"], r["purpose"], r["request_id"], r["action"], r["count"])
            for r in rep["rows"]]


def test_usage_counts_each_use_under_the_grant_that_allowed_it(world: dict[str, Any]) -> None:
    ids = world["ids"]
    with world["node"].catalog().session() as s:
        rep = usage(s, world["log"])
    liver, multi = ids["req_liver"], ids["req_multi"]
    assert _rows(rep) == [
        (NODE_WIDE, "alice", NO_GRANT, None, "read", 1),
        ("ct-a", "alice", "liver AI", liver, "read", 3),
        ("ct-a", "alice", "liver AI", liver, "download", 2),
        ("ct-a", "alice", "multi-site", multi, "download", 1),
        ("ct-a", "steward", NO_GRANT, None, "export", 1),
        ("ct-b", "PACS1", NO_GRANT, None, "download", 1),
        ("ct-b", "alice", "multi-site", multi, "download", 1),
        ("ct-b", "bob", NO_GRANT, None, "denied", 1),
        ("ct-b", "steward", NO_GRANT, None, "export", 1),
    ]
    assert rep["totals"]["ct-a"] == {"read": 3, "download": 3, "export": 1, "write": 0,
                                     "denied": 0}
    kinds = {r["user"]: r["user_kind"] for r in rep["rows"]}
    assert kinds == {"alice": "user", "bob": "user", "PACS1": "peer", "steward": "console"}
    row = rep["rows"][1]
    assert row["first"] <= row["last"]


def test_usage_filters_by_collection_and_period(world: dict[str, Any]) -> None:
    with world["node"].catalog().session() as s:
        only_b = usage(s, world["log"], collection="ct-b")
        later = usage(s, world["log"], since=NOW + dt.timedelta(days=1))
        earlier = usage(s, world["log"], until=NOW - dt.timedelta(days=1))
        with pytest.raises(NotFoundError):
            usage(s, world["log"], collection="nope")
    assert {r["collection"] for r in only_b["rows"]} == {"ct-b"} and len(only_b["rows"]) == 4
    assert later["rows"] == [] and earlier["rows"] == []


def test_an_entry_naming_its_grant_or_request_is_credited_to_it(world: dict[str, Any]) -> None:
    log, ids = world["log"], world["ids"]
    log.append("release.export", {"release": "rel@1.0.0", "request_id": ids["req_multi"],
                                  "collection": "ct-a"}, "user:alice")
    with world["node"].catalog().session() as s:
        rep = usage(s, log, collection="ct-a")
    assert ("ct-a", "alice", "multi-site", ids["req_multi"], "export", 1) in _rows(rep)
