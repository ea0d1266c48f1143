"""``mida release card`` and ``mida release package`` end to end, with their audit entries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bagit
import pytest
from typer.testing import CliRunner

from mida.cli.main import app
from mida.datasets import card
from tests.datasets.test_card import Released, build_release

runner = CliRunner()


@pytest.fixture
def released(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Released:
    r = build_release(tmp_path)
    monkeypatch.setenv("MIDA_HOME", str(r.node.settings.home))
    return r


def _js(*args: str) -> Any:
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_card_and_package_commands(released: Released, tmp_path: Path) -> None:
    home = Path(released.node.settings.home)
    out = _js("release", "card", "liver@1.0.0")
    folder = home / "cards" / "liver@1.0.0"
    assert out["out"] == str(folder)
    assert sorted(Path(p).name for p in out["files"]) == sorted(card.CARD_FILES)
    assert out["programme_table"]["volume"]["series"] == released.manifest["counts"]["series"]
    res = runner.invoke(app, ["release", "card", "liver", "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert "card written to" in res.stdout
    assert (tmp_path / "c" / "card.md").read_bytes() == (folder / "card.md").read_bytes()

    bag = _js("release", "package", "liver@1.0.0", "--out", str(tmp_path / "bag"),
              "--with-data", "--license", "CC-BY-4.0", "--contact-name", "Data Steward")
    # the card, mida-export.json, every DICOM file and one SEG per reader per masked series
    segs = {(a["SeriesInstanceUID"], a["reader"]) for a in released.manifest["annotations"]
            if a["mask_sha256"]}
    assert segs
    assert bag["payload_files"] == len(card.CARD_FILES) + 1 + released.manifest[
        "counts"]["instances"] + len(segs)
    b = bagit.Bag(bag["out"])
    b.validate()
    assert b.info["Mida-License"] == "CC-BY-4.0" and b.info["Contact-Name"] == "Data Steward"
    assert json.loads((tmp_path / "bag" / "data" / "croissant.json").read_text())[
        "license"] == ["CC-BY-4.0"]

    again = runner.invoke(app, ["release", "package", "liver@1.0.0", "--out",
                                str(tmp_path / "bag")])
    assert again.exit_code == 1 and "not empty" in again.output
    missing = runner.invoke(app, ["release", "card", "liver@9.9.9"])
    assert missing.exit_code == 1 and "has no version 9.9.9" in missing.output

    log = "\n".join(p.read_text() for p in home.rglob("audit*") if p.is_file())
    assert "release.card" in log and "release.package" in log
