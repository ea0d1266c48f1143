"""``mida release export`` end to end: progress, the summary, JSON, the audit entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mida.cli.main import app
from mida.datasets import release
from mida.sharing import restrictions
from tests.datasets.export_fixtures import build

runner = CliRunner()


def test_release_export_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = build(tmp_path)
    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "node"))
    with b.node.catalog().session() as s:
        manifest = release.load_manifest(b.node.store(), release.get(s, b.ref))
        pid = next(x["PatientID"] for x in manifest["series"]
                   if x["SeriesInstanceUID"] == b.series["P4"])
        restrictions.add(s, "patient", pid, "consent_withdrawn")
        s.commit()
    out = tmp_path / "out"
    res = runner.invoke(app, ["release", "export", "demo@1.0.0", "--format", "nifti",
                              "-f", "nnunet", "--out", str(out), "--dataset-id", "12"])
    assert res.exit_code == 0, res.output
    assert "4 series" in res.stdout and "1 series left out" in res.stdout
    assert "consent_withdrawn" in res.stdout
    assert (out / "nnUNet_raw" / "Dataset012_demo" / "dataset.json").is_file()
    again = runner.invoke(app, ["release", "export", "demo", "--format", "nifti,nnunet",
                                "--out", str(out), "--dataset-id", "12", "--json"])
    assert again.exit_code == 0, again.output
    body = json.loads(again.stdout)
    assert body["release"] == "demo@1.0.0" and body["formats"] == ["nifti", "nnunet"]
    assert body["excluded"]["by_reason"] == {"consent_withdrawn": 1}
    assert body["files"] == len(json.loads((out / "mida-export.json").read_text())["files"])
    audit = (tmp_path / "node").rglob("audit*.jsonl")
    lines = [json.loads(x) for p in audit if p.is_file()
             for x in p.read_text().splitlines() if x.strip()]
    assert [x for x in lines if x.get("action") == "release.export"]
    bad = runner.invoke(app, ["release", "export", "demo@1.0.0", "--format", "coco",
                              "--out", str(out)])
    assert bad.exit_code == 1 and "holds an export of demo@1.0.0" in bad.output
