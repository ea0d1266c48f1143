"""The governance commands end to end: institutions, terms, DUAs, and a request to its grants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mida.catalog.service import get_collection
from mida.cli.main import app
from mida.config import get_settings
from mida.node import load_node
from mida.sharing import AuditLog
from tests.sharing import governance_world as gw

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


def _js(*args: str) -> Any:
    return json.loads(_ok(*args, "--json"))


def _fails(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 1, res.output
    return " ".join(res.output.split())  # rich wraps long messages


@pytest.fixture
def hub(home: Path, tmp_path: Path) -> Path:
    """Two institutions each owning a collection, users, a DUA and a cohort, set up by CLI."""
    _ok("init", "--institution", "TEST", "--name", "Test Hospital")
    _ok("institutions", "add", "CGMH", "--name", "Chang Gung Memorial Hospital")
    _ok("institutions", "add", "KMUH", "--name", "Kaohsiung Medical University Hospital")
    _ok("collections", "create", "liver-a", "--institution", "TEST")
    _ok("collections", "create", "liver-b", "--institution", "CGMH")
    n = load_node(get_settings())
    with n.catalog().session() as s:
        for col, pid in (("liver-a", "PA"), ("liver-b", "PB")):
            row = get_collection(s, col)
            for i in range(2):
                gw._patient(s, row.institution_id, row.id, f"{pid}{i}", ("CT",))
    for name, role, inst in gw.USERS:
        _ok("users", "add", name, "--role", role)
        if inst:
            _ok("users", "institution", name, inst)
    (tmp_path / "dua.md").write_text(gw.DUA_BODY)
    _ok("dua", "add", str(tmp_path / "dua.md"), "--name", "hwdc-standard", "--version", "1.0",
        "--title", "HWDC standard DUA")
    _ok("cohort", "save", "liver-ct", "--where", "modality = 'CT'")
    (tmp_path / "irb.pdf").write_bytes(gw.IRB_PDF)
    return tmp_path


def _submit(hub: Path, *extra: str) -> Any:
    return _js("requests", "submit", "--as", "rita", "--title", "Liver CT",
               "--purpose", "Liver segmentation", "--cohort", "liver-ct",
               "--irb-number", "IRB-1", "--irb-body", "TEST IRB", "--irb-expiry", "2099-12-31",
               "--irb-document", str(hub / "irb.pdf"), "--dua", "hwdc-standard@1.0",
               "--handler", "hank", *extra)


def test_institutions_collections_terms_and_duas(hub: Path) -> None:
    rows = {r["code"]: r for r in _js("institutions", "ls")}
    assert (rows["CGMH"]["collections"], rows["CGMH"]["users"]) == (1, 2)
    assert "already exists" in _fails("institutions", "add", "CGMH", "--name", "x")
    assert "belongs to CGMH" in _fails("collections", "create", "liver-b", "--institution",
                                       "TEST")
    (hub / "terms.txt").write_text("No re-identification.\n")
    t = _js("collections", "terms", "liver-b", "--license", "CC-BY-NC-4.0", "--citation",
            "CGMH liver CT, 2026", "--terms-file", str(hub / "terms.txt"), "--contributor",
            "CGMH Radiology", "--contributor", "W. Lin", "--handler-cap", "2")
    assert t["institution"]["code"] == "CGMH" and t["handler_cap"] == 2
    assert _js("collections", "terms", "liver-b") == t
    assert "give an institution code, or --clear" in _fails("users", "institution", "ada")
    _ok("users", "institution", "ada", "--clear")

    again = _js("dua", "add", str(hub / "dua.md"), "--name", "hwdc-standard", "--version", "1.0",
                "--title", "HWDC standard DUA")
    assert again["created"] is False
    (hub / "other.md").write_text("Different text")
    assert "immutable" in _fails("dua", "add", str(hub / "other.md"), "--name",
                                 "hwdc-standard", "--version", "1.0", "--title", "HWDC")
    assert [r["ref"] for r in _js("dua", "ls")] == ["hwdc-standard@1.0"]
    assert "re-identify" in _ok("dua", "show", "hwdc-standard")


def test_a_request_from_submission_to_grants(hub: Path) -> None:
    req = _submit(hub, "--download")
    rid = str(req["id"])
    assert req["institutions"] == ["CGMH", "TEST"] and req["status"] == "submitted"
    assert [r["id"] for r in _js("requests", "ls", "--as", "dave", "--queue")] == [req["id"]]
    assert "--queue shows a DAC member's queue" in _fails("requests", "ls", "--queue")
    _ok("requests", "irb", rid, "--out", str(hub / "got.pdf"), "--as", "dave")
    assert (hub / "got.pdf").read_bytes() == gw.IRB_PDF

    assert "not a DAC member" in _fails("requests", "review", rid, "approve", "--as", "kurt")
    _ok("requests", "review", rid, "approve", "--as", "dana")
    assert "already decided" in _fails("requests", "review", rid, "approve", "--as", "dina")
    assert "needs a reason" in _fails("requests", "review", rid, "changes", "--as", "dave")
    out = _js("requests", "review", rid, "changes", "--as", "dave", "--reason", "One handler")
    assert out["status"] == "changes_requested"
    out = _js("requests", "resubmit", rid, "--as", "rita", "--handler", "hank",
              "--purpose", "Liver segmentation (nnU-Net)")
    assert (out["revision"], out["status"]) == (2, "submitted")
    for who in ("dave", "dana"):
        _ok("requests", "review", rid, "approve", "--as", who)
    assert "then run again with --yes" in _fails("requests", "accept-dua", rid, "--as", "rita")
    assert "not a named handler" in _fails("requests", "accept-dua", rid, "--as", "dana",
                                           "--yes")
    _ok("requests", "accept-dua", rid, "--as", "rita", "--yes")
    done = _js("requests", "accept-dua", rid, "--as", "hank", "--yes")
    assert done["status"] == "granted" and done["release"] == f"request-{rid}@1.0.0"
    assert sorted(g["user"] for g in done["grants"]) == ["hank", "rita"]
    assert all(g["download"] for g in done["grants"])

    shown = _js("requests", "show", rid, "--as", "rita")
    assert shown["decisions"] == {"CGMH": "approve", "TEST": "approve"}
    assert "no access request" in _fails("requests", "show", rid, "--as", "ross")
    assert [r["id"] for r in _js("requests", "ls", "--as", "ross")] == []
    assert [r["status"] for r in _js("requests", "ls")] == ["granted"]
    assert "revoke its grants instead" in _fails("requests", "withdraw", rid, "--as", "rita")

    trail = [e for e in AuditLog(get_settings().audit_file).entries()
             if e["action"].startswith("requests.")]
    assert [e["action"] for e in trail] == [
        "requests.submit", "requests.denied", "requests.decide", "requests.decide",
        "requests.resubmit", "requests.decide", "requests.decide", "requests.denied",
        "requests.dua_accept", "requests.dua_accept", "requests.grant", "requests.grant"]
    assert trail[1]["detail"] == {"request": int(rid), "user": "kurt", "operation": "decide"}


def test_submission_refusals(hub: Path) -> None:
    _ok("collections", "terms", "liver-b", "--handler-cap", "2")
    msg = _fails("requests", "submit", "--as", "rita", "--title", "T", "--purpose", "P",
                 "--cohort", "liver-ct", "--irb-number", "I", "--irb-body", "B",
                 "--irb-expiry", "2099-01-01", "--irb-document", str(hub / "irb.pdf"),
                 "--dua", "hwdc-standard", "--handler", "hank", "--handler", "hana")
    assert "3 handlers named (you included) but collection 'liver-b' (CGMH) allows at most 2" \
        in msg
    msg = _fails("requests", "submit", "--as", "rita", "--title", "T", "--purpose", "P",
                 "--cohort", "liver-ct", "--irb-number", "I", "--irb-body", "B",
                 "--irb-expiry", "2001-01-01", "--irb-document", str(hub / "irb.pdf"),
                 "--dua", "hwdc-standard")
    assert "the IRB approval expired on 2001-01-01" in msg
    assert "bad date" in _fails("requests", "submit", "--as", "rita", "--title", "T",
                                "--purpose", "P", "--cohort", "liver-ct", "--irb-number", "I",
                                "--irb-body", "B", "--irb-expiry", "31/12/2099",
                                "--irb-document", str(hub / "irb.pdf"), "--dua", "x")
    assert not [e for e in AuditLog(get_settings().audit_file).entries()
                if e["action"] == "requests.submit"]
