"""``mida grants``: collection and release grants, view-only, revocation, all audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mida.cli.main import app
from tests.factories import write

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "node"))
    monkeypatch.setenv("MIDA_WORKERS", "1")
    monkeypatch.setenv("MIDA_AUDIT_FSYNC", "false")
    return tmp_path / "node"


def _ok(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


def test_release_and_view_only_grants_listed_and_revoked(home: Path, tmp_path: Path) -> None:
    _ok("init", "--institution", "H", "--name", "H")
    write(tmp_path / "in" / "0.dcm")
    _ok("ingest", str(tmp_path / "in"), "--collection", "c")
    _ok("release", "create", "r", "--version", "1.0.0", "--where", "collection = 'c'")
    _ok("users", "add", "rae", "--role", "researcher")
    out = _ok("grants", "add", "--user", "rae", "--release", "r@1.0.0", "--view-only")
    assert "release r@1.0.0 (view only)" in out
    _ok("grants", "add", "--user", "rae", "--collection", "c")
    rows = json.loads(_ok("grants", "ls", "--user", "rae", "--json"))
    assert [(g["release"], g["collection"], g["download"], g["active"]) for g in rows] == [
        ("r@1.0.0", None, False, True), (None, "c", True, True)]
    res = runner.invoke(app, ["grants", "add", "--user", "rae", "--release", "r"])
    assert res.exit_code == 1 and "exact version" in res.output
    _ok("grants", "revoke", str(rows[0]["id"]))
    rows = json.loads(_ok("grants", "ls", "--user", "rae", "--json"))
    assert not rows[0]["active"] and rows[0]["revoked"] and rows[1]["active"]
    audit = [json.loads(x) for x in (home / "audit" / "audit.jsonl").read_text().splitlines()]
    added = [e["detail"] for e in audit if e["action"] == "grants.add"]
    assert added[0]["release"] == "r@1.0.0" and added[0]["download"] is False
    revoked = [e["detail"] for e in audit if e["action"] == "grants.revoke"]
    assert revoked == [{"id": rows[0]["id"], "user_id": revoked[0]["user_id"],
                        "collection_id": None, "release_id": revoked[0]["release_id"],
                        "request": None}]
