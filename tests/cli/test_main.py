"""The CLI: exit codes, --json on read commands, clear errors."""

from __future__ import annotations

import json
import os
import stat
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
    return tmp_path / "node"


def _ok(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


def test_commands_before_init_explain_what_to_do(home: Path) -> None:
    res = runner.invoke(app, ["stats"])
    assert res.exit_code == 1
    assert "mida init" in res.output


def test_init_creates_private_key_and_refuses_twice(home: Path) -> None:
    out = _ok("init", "--institution", "NTUH", "--name", "Test Hospital")
    key = home / "keys" / "deid.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().strip() not in out, "the key itself is never printed"
    assert runner.invoke(app, ["init", "--institution", "NTUH", "--name", "x"]).exit_code == 1
    _ok("init", "--institution", "NTUH", "--name", "x", "--exist-ok")


def test_ingest_ls_show_stats_json(home: Path, tmp_path: Path) -> None:
    _ok("init", "--institution", "H", "--name", "H")
    for i in range(2):
        write(tmp_path / "in" / f"{i}.dcm", StudyDate="20240105")
    (tmp_path / "in" / "x.txt").write_text("hello")
    summary = json.loads(_ok("ingest", str(tmp_path / "in"), "--collection", "c", "--json"))
    assert summary["stored"] == 2 and summary["quarantined"] == 1
    studies = json.loads(_ok("ls", "studies", "--json"))
    assert len(studies) == 2
    assert json.loads(_ok("ls", "studies", "--json", "--modality", "MR")) == []
    insts = json.loads(_ok("ls", "instances", "--json", "--collection", "c"))
    assert len(insts) == 2
    shown = json.loads(_ok("show", insts[0]["SOPInstanceUID"], "--json"))
    assert shown["level"] == "instance" and "dataset" in shown
    stats = json.loads(_ok("stats", "--json"))
    assert stats["instances"] == 2 and stats["quarantine_by_reason"] == {"not_dicom": 1}
    q = json.loads(_ok("quarantine", "list", "--json"))
    assert [e["reason"] for e in q] == ["not_dicom"]
    detail = json.loads(_ok("quarantine", "show", str(q[0]["id"]), "--json"))
    assert detail["sources"][0]["ref"].endswith("x.txt")
    retried = json.loads(_ok("quarantine", "retry", "--json"))
    assert retried[0]["status"] == "still_quarantined"
    assert json.loads(_ok("fsck", "--json"))["clean"] is True
    human = _ok("stats")
    assert "instances" in human


def test_unknown_uid_and_bad_date_fail_with_status_1(home: Path) -> None:
    _ok("init", "--institution", "H", "--name", "H")
    res = runner.invoke(app, ["show", "1.2.3"])
    assert res.exit_code == 1 and "pseudonyms" in res.output
    res = runner.invoke(app, ["ls", "studies", "--study-date", "yesterday"])
    assert res.exit_code == 1 and "YYYY-MM-DD" in res.output
    res = runner.invoke(app, ["ingest", "/no/such/place", "--collection", "c"])
    assert res.exit_code == 1 and "no such file" in res.output


def test_sample_command_writes_files(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "sample"
    _ok("sample", str(out), "--patients", "1", "--ct-slices", "2", "--ct-size", "64")
    assert (out / "phi_manifest.json").exists()
    assert len(list(out.rglob("*.dcm"))) >= 4


def test_config_hides_secrets(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIDA_STORAGE_OPTIONS", '{"secret": "hunter2"}')
    out = _ok("config", "--json")
    assert "hunter2" not in out
    assert json.loads(out)["home"] == str(home)
    assert os.environ["MIDA_HOME"] == str(home)


def test_serve_prints_a_sign_in_link_that_works(home: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`make run` ends in `mida serve`: the operator gets a link with a working token."""
    import re

    import uvicorn
    from fastapi.testclient import TestClient

    _ok("init", "--institution", "NTUH", "--name", "Test Hospital")
    apps: list = []
    monkeypatch.setattr(uvicorn, "run", lambda app_, **kw: apps.append(app_))
    out = _ok("users", "ls", "--json")
    assert json.loads(out) == []
    res = runner.invoke(app, ["serve", "--port", "8123"])
    assert res.exit_code == 0, res.output
    m = re.search(r"http://127\.0\.0\.1:8123/login\?token=(mida_[A-Za-z0-9_-]{43})",
                  res.output.replace("\n", ""))
    assert m, res.output
    page = TestClient(apps[0]).get(f"/login?token={m.group(1)}")
    assert page.status_code == 200 and 'id="user">operator<' in page.text
    assert "operator" in _ok("users", "ls")
    res = runner.invoke(app, ["serve", "--no-login"])
    assert "login?token" not in res.output


def test_ingest_no_wait_queues_a_job_that_jobs_wait_follows(home: Path, tmp_path: Path) -> None:
    _ok("init", "--institution", "NTUH", "--name", "Test Hospital")
    for i in range(3):
        write(tmp_path / "in" / f"{i}.dcm")
    queued = json.loads(_ok("ingest", str(tmp_path / "in"), "--collection", "c", "--no-wait",
                            "--json"))
    done = json.loads(_ok("jobs", "wait", str(queued["job_id"]), "--json"))
    assert done["status"] == "done" and done["counts"]["stored"] == 3
    assert done["progress"] == {"done": 3, "total": 3}
    listed = json.loads(_ok("jobs", "ls", "--json"))
    assert listed[0]["id"] == queued["job_id"]
