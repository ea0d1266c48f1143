"""The request routes: a request from submission to grants, and refusals that reveal nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mida.api import create_app
from mida.node import Node
from mida.sharing import AuditLog, governance
from mida.sharing.identity import DENIED
from tests.factories import bearer, make_token
from tests.sharing import governance_world as gw

NEW = {"title": "Liver CT segmentation", "purpose": "Train a liver segmentation model",
       "cohort": "liver-ct", "handlers": ["hank", "hana"], "irb_number": "IRB-2026-001",
       "irb_body": "TEST Hospital IRB", "irb_expiry": "2099-12-31", "download": True,
       "dua": "hwdc-standard@1.0"}


class Api:
    """A client per user of the governance world."""

    def __init__(self, node: Node) -> None:
        self.client = TestClient(create_app(node))
        roles = {name: role for name, role, _ in gw.USERS}
        self.tokens = {name: make_token(node, name, role, "admin" if role == "admin" else "read")
                       for name, role in roles.items()}

    def get(self, who: str, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers=bearer(self.tokens[who]), **kw)

    def post(self, who: str, path: str, **kw: Any) -> Any:
        return self.client.post(path, headers=bearer(self.tokens[who]), **kw)

    def submit(self, who: str = "rita", doc: bytes = gw.IRB_PDF, **over: Any) -> Any:
        return self.post(who, "/api/requests", data={"request": json.dumps({**NEW, **over})},
                         files={"irb_document": ("approval.pdf", doc, "application/pdf")})


@pytest.fixture
def api(node: Node) -> Api:
    gw.build(node)
    return Api(node)


def test_a_request_from_submission_to_grants_over_http(api: Api, node: Node) -> None:
    r = api.submit()
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert r.headers["location"] == f"/api/requests/{rid}"
    assert r.json()["institutions"] == ["CGMH", "TEST"]
    assert r.json()["irb"]["document_name"] == "approval.pdf"
    queue = api.get("dave", "/api/requests", params={"queue": "dac"}).json()
    assert (queue["count"], queue["data"][0]["id"]) == (1, rid)
    irb = api.get("dave", f"/api/requests/{rid}/irb")
    assert irb.content == gw.IRB_PDF and irb.headers["content-type"] == "application/pdf"

    assert api.post("dana", f"/api/requests/{rid}/decisions",
                    json={"decision": "approve"}).status_code == 201
    r = api.post("dave", f"/api/requests/{rid}/decisions",
                 json={"decision": "changes", "reason": "Name fewer handlers"})
    assert r.json()["status"] == "changes_requested"
    r = api.post("rita", f"/api/requests/{rid}/resubmit", json={"handlers": ["hank"]})
    assert r.status_code == 200, r.text
    assert (r.json()["revision"], r.json()["decisions"]) == (2, {"CGMH": None, "TEST": None})
    for who in ("dave", "dana"):
        r = api.post(who, f"/api/requests/{rid}/decisions", json={"decision": "approve"})
    assert r.json()["status"] == "approved"

    text = api.get("hank", "/api/dua/hwdc-standard/1.0").json()
    assert text["body"] == gw.DUA_BODY
    wrong = api.post("hank", f"/api/requests/{rid}/dua", json={"sha256": "0" * 64})
    assert wrong.status_code == 409 and "is not hwdc-standard@1.0" in wrong.json()["detail"]
    assert api.post("rita", f"/api/requests/{rid}/dua",
                    json={"sha256": text["sha256"]}).json()["status"] == "approved"
    done = api.post("hank", f"/api/requests/{rid}/dua", json={"sha256": text["sha256"]}).json()
    assert done["status"] == "granted" and done["granted_release"] == f"request-{rid}@1.0.0"
    assert sorted((g["user"], g["download"]) for g in done["grants"]) == [
        ("hank", True), ("rita", True)]
    assert [h["decided_by"] for h in done["history"]] == [None] * 4  # hidden from researchers
    # the grants open that release, and no collection
    assert api.get("hank", f"/api/releases/request-{rid}/1.0.0").status_code == 200
    assert api.get("hank", "/api/whoami").json()["collections"] == []
    assert api.get("ross", f"/api/releases/request-{rid}/1.0.0").status_code == 403
    assert api.get("ada", f"/api/requests/{rid}").json()["history"][0]["decided_by"] == "dana"
    assert [x["id"] for x in api.get("rita", "/api/requests",
                                     params={"status": "granted"}).json()["data"]] == [rid]

    steps = [(e["actor"], e["action"]) for e in AuditLog(node.settings.audit_file).entries()
             if e["action"].startswith("requests.")]
    assert steps == [
        ("user:rita", "requests.submit"), ("user:dana", "requests.decide"),
        ("user:dave", "requests.decide"), ("user:rita", "requests.resubmit"),
        ("user:dave", "requests.decide"), ("user:dana", "requests.decide"),
        ("user:rita", "requests.dua_accept"), ("user:hank", "requests.dua_accept"),
        ("user:hank", "requests.grant"), ("user:hank", "requests.grant")]


def test_what_the_caller_may_not_touch_answers_as_if_missing(api: Api) -> None:
    rid = api.submit().json()["id"]
    missing = 9999
    for path in ("/api/requests/{}", "/api/requests/{}/irb"):
        seen = api.get("ross", path.format(rid))
        absent = api.get("ross", path.format(missing))
        assert (seen.status_code, seen.json()) == (absent.status_code, absent.json()) == (
            403, {"detail": DENIED})
    for who in ("kurt", "ross", "anne"):  # not a DAC member of an owner
        for target in (rid, missing):
            r = api.post(who, f"/api/requests/{target}/decisions", json={"decision": "approve"})
            assert (r.status_code, r.json()) == (403, {"detail": DENIED})
    assert api.get("ross", "/api/requests").json() == {"count": 0, "data": []}
    assert api.get("ada", f"/api/requests/{missing}").status_code == 404  # admins may know
    assert api.get("ada", f"/api/requests/{rid}").status_code == 200

    for who in ("dana", "dave"):
        api.post(who, f"/api/requests/{rid}/decisions", json={"decision": "approve"})
    sha = api.get("dana", "/api/dua/hwdc-standard/1.0").json()["sha256"]
    for who, target in (("dana", rid), ("ross", rid), ("dana", missing)):  # not handlers
        r = api.post(who, f"/api/requests/{target}/dua", json={"sha256": sha})
        assert (r.status_code, r.json()) == (403, {"detail": DENIED})


def test_refusals_say_why(api: Api, node: Node) -> None:
    r = api.submit(irb_expiry="2001-01-01")
    assert r.status_code == 400 and "expired on 2001-01-01" in r.json()["detail"]
    r = api.submit(doc=b"")
    assert r.status_code == 400 and "document is empty" in r.json()["detail"]
    r = api.submit(handlers=["ghost"])  # a mistake, not a hidden resource
    assert r.status_code == 400 and "'ghost' is not a user" in r.json()["detail"]
    r = api.post("rita", "/api/requests", json=NEW)
    assert r.status_code == 400 and "multipart/form-data" in r.json()["detail"]
    r = api.post("rita", "/api/requests", data={"request": json.dumps(NEW)},
                 files={"other": ("x.pdf", b"x", "application/pdf")})
    assert r.status_code == 400 and "IRB approval document is missing" in r.json()["detail"]
    r = api.post("rita", "/api/requests", data={"request": json.dumps({**NEW, "x": 1})},
                 files={"irb_document": ("a.pdf", b"x", "application/pdf")})
    assert r.status_code == 400 and "x: Extra inputs are not permitted" in r.json()["detail"]
    r = api.submit(who="dana")
    assert r.status_code == 403
    with node.catalog().session() as s:
        governance.set_terms(s, "liver-b", handler_cap=2)
    r = api.submit()
    assert r.status_code == 400
    assert "collection 'liver-b' (CGMH) allows at most 2" in r.json()["detail"]

    rid = api.submit(handlers=["hank"]).json()["id"]
    r = api.post("dana", f"/api/requests/{rid}/decisions", json={"decision": "reject"})
    assert r.status_code == 400 and "needs a reason" in r.json()["detail"]
    api.post("dana", f"/api/requests/{rid}/decisions", json={"decision": "approve"})
    r = api.post("dina", f"/api/requests/{rid}/decisions", json={"decision": "approve"})
    assert r.status_code == 409 and "TEST already decided" in r.json()["detail"]
    api.post("dave", f"/api/requests/{rid}/decisions", json={"decision": "approve"})
    r = api.post("rita", f"/api/requests/{rid}/resubmit", json={"purpose": "x"})
    assert r.status_code == 409 and "is approved" in r.json()["detail"]


def test_a_resubmission_may_carry_a_new_irb_document(api: Api) -> None:
    rid = api.submit().json()["id"]
    api.post("dave", f"/api/requests/{rid}/decisions",
             json={"decision": "changes", "reason": "The approval letter is unsigned"})
    r = api.post("rita", f"/api/requests/{rid}/resubmit",
                 data={"changes": json.dumps({"irb_number": "IRB-2026-001-A"})},
                 files={"irb_document": ("signed.pdf", b"%PDF signed", "application/pdf")})
    assert r.status_code == 200, r.text
    assert (r.json()["irb"]["number"], r.json()["irb"]["document_name"]) == (
        "IRB-2026-001-A", "signed.pdf")
    assert api.get("dana", f"/api/requests/{rid}/irb").content == b"%PDF signed"


def test_duas_and_collection_terms(api: Api) -> None:
    listed = api.get("ross", "/api/dua").json()
    assert [(d["ref"], d["body"]) for d in listed["data"]] == [("hwdc-standard@1.0", None)]
    terms = api.get("ross", "/api/collections/liver-b/terms").json()
    assert terms["institution"] == {"code": "CGMH", "name": "Chang Gung Memorial Hospital"}
    assert api.get("ross", "/api/collections/nope/terms").status_code == 403
    assert api.get("ada", "/api/collections/nope/terms").status_code == 404
    assert api.get("ross", "/api/dua/hwdc-standard/9").status_code == 403
