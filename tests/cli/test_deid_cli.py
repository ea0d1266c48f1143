"""``mida deid``: run, verify and profiles, on the sub-app directly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mida.cli.deid import app
from mida.deid import get_profile
from tests.factories import PHI, make_dataset, write

runner = CliRunner()


@pytest.fixture
def src(tmp_path: Path) -> Path:
    for i in range(2):
        write(tmp_path / "in" / f"{i}.dcm", make_dataset(
            InstanceNumber=i + 1, ReferringPhysicianName="Chen^Mei-Ling"))
    (tmp_path / "in" / "junk.txt").write_text("hello")
    return tmp_path / "in"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    p = tmp_path / "project.key"
    p.write_text("ab" * 32 + "\n")
    return p


def test_run_then_verify_clean(src: Path, key_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(src), "--out", str(out), "--key-file", str(key_file),
                              "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["written"] == 2 and report["by_reason"] == {"not_dicom": 1}
    assert sorted(p.name for p in out.iterdir()) == report["files"]
    res = runner.invoke(app, ["verify", str(src), str(out)])
    assert res.exit_code == 0, res.output
    assert "0 leak(s)" in res.stdout


def test_verify_reports_leaks_masked_and_exits_1(
    src: Path, key_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "home"
    (home / "profiles").mkdir(parents=True)
    (home / "profiles" / "leaky.yaml").write_text(
        "name: leaky\nversion: '1'\noverrides: {ReferringPhysicianName: keep}\n")
    monkeypatch.setenv("MIDA_HOME", str(home))
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(src), "--out", str(out), "--key-file", str(key_file),
                              "--profile", "leaky"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["verify", str(src), str(out)])
    assert res.exit_code == 1
    assert "LEAK" in res.stdout and "(0008,0090)" in res.stdout
    assert "name C… (13 chars) [decoded]" in res.stdout
    assert "Chen" not in res.stdout and "Mei-Ling" not in res.stdout
    res = runner.invoke(app, ["verify", str(src), str(out), "--json"])
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert not data["ok"] and data["leaks"] and "Chen" not in res.stdout
    assert PHI["pid"] not in res.stdout


def test_run_with_extra_option_records_a_new_version(
    src: Path, key_file: Path, tmp_path: Path,
) -> None:
    res = runner.invoke(app, ["run", str(src), "--out", str(tmp_path / "o"), "--key-file",
                              str(key_file), "--option", "retain-device-identity", "--json"])
    assert res.exit_code == 0, res.output
    version = json.loads(res.stdout)["profile_version"]
    assert version.startswith(get_profile("default").version + "-o")
    res = runner.invoke(app, ["run", str(src), "--out", str(tmp_path / "o"), "--key-file",
                              str(key_file), "--option", "shred-all"])
    assert res.exit_code == 1 and "unknown de-identification option" in res.output


def test_run_without_a_key_explains(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "no-node"))
    res = runner.invoke(app, ["run", str(src), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1
    assert "--key-file" in res.output and "mida init" in res.output
    bad = tmp_path / "bad.key"
    bad.write_text("xyz")
    res = runner.invoke(app, ["run", str(src), "--out", str(tmp_path / "o"), "--key-file",
                              str(bad)])
    assert res.exit_code == 1 and "hexadecimal" in res.output
    assert not (tmp_path / "o").exists()


def test_run_uses_the_node_key(src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mida.config import Settings
    from mida.node import init_node

    home = tmp_path / "node"
    init_node(Settings(home=home), "TEST", "Test Hospital", key=bytes.fromhex("ab" * 32))
    monkeypatch.setenv("MIDA_HOME", str(home))
    res = runner.invoke(app, ["run", str(src), "--out", str(tmp_path / "o"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["written"] == 2


def test_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "profiles").mkdir(parents=True)
    (tmp_path / "home" / "profiles" / "site.yaml").write_text(
        "name: site\nversion: '3'\noptions: [rtnUIDsOpt]\n")
    res = runner.invoke(app, ["profiles", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert {"basic", "default", "research-full-dates", "site"} <= set(rows)
    assert rows["site"]["version"] == "3" and rows["site"]["options"] == ["rtnUIDsOpt"]
    assert rows["site"]["source"].endswith("site.yaml")
    assert rows["default"]["source"].endswith("default.yaml")
    res = runner.invoke(app, ["profiles"])
    assert res.exit_code == 0 and "basic" in res.stdout and "site" in res.stdout
    (tmp_path / "home" / "profiles" / "site.yaml").write_text("name: site\n")
    res = runner.invoke(app, ["profiles"])
    assert res.exit_code == 1 and "site.yaml: version: missing" in res.output
