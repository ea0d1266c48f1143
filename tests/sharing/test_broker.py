"""Honest-broker re-identification: two people, once, audited without the identity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mida.catalog.models import VaultResolution
from mida.deid.vault import LinkageVault, seal
from mida.errors import AccessDeniedError, ConflictError, MidaError, NotFoundError
from mida.node import Node
from mida.sharing import AuditLog, broker, identity

IDENTITY = {"PatientID": "A123456789", "PatientName": "Lin^Wen-Hsiung",
            "PatientBirthDate": "19610214"}
WHY = "incidental finding: return the lung nodule report to the treating team"


@pytest.fixture
def world(any_node: Node, tmp_path: Path) -> dict[str, Any]:
    with any_node.catalog().session() as s:
        for name, role in (("hb1", "honest-broker"), ("hb2", "honest-broker"),
                           ("boss", "admin"), ("res", "researcher"), ("dac", "dac-member")):
            identity.add_user(s, name, role)
        identity.add_user(s, "gone", "honest-broker")
        identity.set_disabled(s, "gone", True)
    key = any_node.vault_key()
    vault = LinkageVault(tmp_path / "vault" / "vault.sqlite", key)
    vault.put("PSEUDO1", seal(key, "PSEUDO1", IDENTITY))
    log = AuditLog(any_node.settings.audit_file, fsync=False)
    return {"node": any_node, "vault": vault, "log": log}


def _request(w: dict[str, Any], by: str = "hb1", why: str = WHY) -> int:
    with w["node"].catalog().session() as s:
        return broker.request_resolution(s, "PSEUDO1", why, by, audit=w["log"]).id


def _decide(w: dict[str, Any], rid: int, by: str, approve: bool = True,
            reason: str = "finding confirmed with the radiologist") -> str:
    with w["node"].catalog().session() as s:
        return broker.decide(s, rid, by, approve, reason, audit=w["log"]).status


def _resolve(w: dict[str, Any], rid: int, by: str = "hb1") -> dict[str, Any]:
    with w["node"].catalog().session() as s:
        return broker.resolve(s, w["vault"], rid, by, audit=w["log"])


def test_two_people_resolve_once_and_the_audit_holds_no_identity(world: dict[str, Any]) -> None:
    rid = _request(world)
    assert _decide(world, rid, "hb2") == "approved"
    assert _resolve(world, rid) == IDENTITY
    with world["node"].catalog().session() as s:
        row = s.get(VaultResolution, rid)
        assert row is not None and row.status == "resolved" and row.decided_by == "hb2"
        assert row.resolved is not None
    with pytest.raises(ConflictError, match="resolved"):
        _resolve(world, rid)
    entries = [e for e in world["log"].entries() if e["action"].startswith("vault.")]
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("vault.request", "hb1"), ("vault.approve", "hb2"), ("vault.resolve", "hb1")]
    for e in entries:
        assert e["detail"]["pseudonym"] == "PSEUDO1" and e["detail"]["justification"] == WHY
        assert e["detail"]["resolution"] == rid
    text = world["log"].path.read_text()
    for value in IDENTITY.values():
        assert value not in text
    assert "Lin" not in text and world["log"].verify() == []


def test_the_requester_cannot_approve_their_own_request(world: dict[str, Any]) -> None:
    rid = _request(world)
    with pytest.raises(AccessDeniedError, match="second person"):
        _decide(world, rid, "hb1")
    assert _decide(world, rid, "boss") == "approved"  # an admin may be the second person


def test_resolve_needs_an_approval_by_someone_else(world: dict[str, Any]) -> None:
    rid = _request(world)
    with pytest.raises(ConflictError, match="not approved yet"):
        _resolve(world, rid)
    assert _decide(world, rid, "hb2", approve=False, reason="no clinical need shown") == "denied"
    with pytest.raises(ConflictError, match="denied"):
        _resolve(world, rid)
    with pytest.raises(ConflictError, match="decided already"):
        _decide(world, rid, "boss")
    assert [e["action"] for e in world["log"].entries()] == ["vault.request", "vault.deny"]


def test_only_the_requester_resolves(world: dict[str, Any]) -> None:
    rid = _request(world)
    _decide(world, rid, "hb2")
    for other in ("hb2", "boss"):
        with pytest.raises(AccessDeniedError, match="only hb1"):
            _resolve(world, rid, by=other)
    assert _resolve(world, rid)["PatientID"] == IDENTITY["PatientID"]


def test_roles_and_justification_are_checked(world: dict[str, Any]) -> None:
    for who in ("res", "boss", "dac", "gone", "nobody"):  # only honest brokers ask
        with pytest.raises(AccessDeniedError):
            _request(world, by=who)
    with pytest.raises(MidaError, match="20 or more characters"):
        _request(world, why="  check   patient  ")
    rid = _request(world)
    with pytest.raises(ConflictError, match="already has resolution"):
        _request(world)
    for who in ("res", "dac"):  # approvers are honest brokers or admins
        with pytest.raises(AccessDeniedError):
            _decide(world, rid, who)
    with pytest.raises(MidaError, match="reason"):
        _decide(world, rid, "hb2", reason="  ")
    with pytest.raises(NotFoundError):
        _decide(world, 999, "hb2")
    assert world["log"].entries() == [e for e in world["log"].entries()
                                      if e["action"] == "vault.request"]


def test_a_missing_vault_record_uses_up_nothing(world: dict[str, Any]) -> None:
    with world["node"].catalog().session() as s:
        rid = broker.request_resolution(s, "UNKNOWN", WHY, "hb1", audit=world["log"]).id
    _decide(world, rid, "hb2")
    with pytest.raises(NotFoundError):
        _resolve(world, rid)
    with world["node"].catalog().session() as s:
        assert broker.get(s, rid).status == "approved"
        listed = broker.list_all(s, "approved")
    assert [r["id"] for r in listed] == [rid] and "PatientName" not in json.dumps(listed)
