"""Key rotation and the linkage vault, end to end through ingest and the CLI."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mida.cli.main import app
from tests.factories import PHI, write

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "node"))
    monkeypatch.setenv("MIDA_WORKERS", "2")
    monkeypatch.setenv("MIDA_LINKAGE_VAULT", "true")
    res = runner.invoke(app, ["init", "--institution", "H", "--name", "H"])
    assert res.exit_code == 0, res.output
    return tmp_path / "node"


def _ok(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


def test_vault_links_pseudonym_to_identity_with_audit(home: Path, tmp_path: Path) -> None:
    for i in range(3):
        write(tmp_path / "in" / f"{i}.dcm")
    _ok("ingest", str(tmp_path / "in"), "--collection", "c")
    [patient] = json.loads(_ok("ls", "patients", "--json"))
    pseudonym = patient["PatientID"]
    assert stat.S_IMODE((home / "keys" / "vault.key").stat().st_mode) == 0o600
    raw = (home / "vault" / "vault.sqlite").read_bytes()
    assert PHI["pid"].encode() not in raw and b"Lin" not in raw
    # two people: one honest broker asks, another approves, the first resolves (once)
    _ok("users", "add", "hb1", "--role", "honest-broker")
    _ok("users", "add", "hb2", "--role", "honest-broker")
    rid = str(json.loads(_ok("vault", "request", pseudonym, "--justification",
                             "incidental finding to return to the treating team",
                             "--as", "hb1", "--json"))["id"])
    _ok("vault", "decide", rid, "--approve", "--reason", "finding confirmed", "--as", "hb2")
    found = json.loads(_ok("vault", "resolve", rid, "--as", "hb1", "--json"))
    assert found["PatientID"] == PHI["pid"]
    entries = [json.loads(x) for x in (home / "audit" / "audit.jsonl").read_text().splitlines()]
    assert [e["action"] for e in entries if e["action"].startswith("vault.")] == [
        "vault.request", "vault.approve", "vault.resolve"]
    assert PHI["pid"] not in (home / "audit" / "audit.jsonl").read_text()
    assert json.loads(_ok("audit", "verify", "--json"))["intact"] is True


def test_rotation_keeps_old_key_and_changes_pseudonyms(home: Path, tmp_path: Path) -> None:
    write(tmp_path / "a" / "0.dcm")
    _ok("ingest", str(tmp_path / "a"), "--collection", "c")
    before = json.loads(_ok("keys", "show", "--json"))
    assert runner.invoke(app, ["keys", "rotate"]).exit_code == 1  # needs --yes
    _ok("keys", "rotate", "--yes")
    after = json.loads(_ok("keys", "show", "--json"))
    assert after["key_id"] != before["key_id"]
    assert after["retired_key_ids"] == [before["key_id"]]
    retired = home / "keys" / "retired" / f"deid-{before['key_id']}.key"
    assert stat.S_IMODE(retired.stat().st_mode) == 0o600
    write(tmp_path / "b" / "0.dcm")  # the same patient, after the rotation
    _ok("ingest", str(tmp_path / "b"), "--collection", "c")
    patients = json.loads(_ok("ls", "patients", "--json"))
    assert len(patients) == 2, "a new key gives the same patient a new pseudonym"
    assert json.loads(_ok("audit", "verify", "--json"))["entries"] == 1
