"""``mida cohort``, ``mida release`` and ``mida restrictions`` through the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mida.cli.main import app
from mida.node import Node
from tests.datasets.conftest import Cohort, build_cohort

runner = CliRunner()


@pytest.fixture
def cli(node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cohort:
    c = build_cohort(node, tmp_path)
    monkeypatch.setenv("MIDA_HOME", str(node.settings.home))
    return c


def _ok(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


def _js(*args: str) -> Any:
    return json.loads(_ok(*args, "--json"))


def test_cohort_count_save_show(cli: Cohort) -> None:
    n = _js("cohort", "count", "--where", "modality = 'CT' and has_label('lesion')")
    assert (n["patients"], n["series"]) == (4, 4)
    assert n["by"]["collection"]["liver-a"]["series"] == 4
    text = _ok("cohort", "count", "--where", "modality = 'CT'")
    assert "7 patients, 9 studies, 9 series, 36 instances" in text and "by age band" in text
    res = runner.invoke(app, ["cohort", "count", "--where", "modality = 'CT' and age >> 3"])
    assert res.exit_code == 1
    assert "column 26" in res.output and "^" in res.output
    saved = _js("cohort", "save", "lesions", "--where", "has_label('lesion')")
    assert saved["series"] == 4
    shown = _js("cohort", "show", "lesions")
    assert shown["expression"] == "has_label('lesion')" and shown["now"]["series"] == 4
    assert [r["cohort"] for r in _js("cohort", "ls")] == ["lesions"]
    res = runner.invoke(app, ["cohort", "show", "nope"])
    assert res.exit_code == 1 and "saved cohorts are lesions" in res.output


def test_release_create_ls_show_diff_and_restrictions(cli: Cohort) -> None:
    _ok("cohort", "save", "ct", "--where", "modality = 'CT'")
    r1 = _js("release", "create", "liver", "--version", "1.0.0", "--cohort", "ct",
             "--split", "70/15/15", "--stratify", "lirads", "--seed", "4")
    assert r1["counts"]["series"] == 9 and r1["split"]["stratify"] == "lirads"
    out = _js("restrictions", "add", "trade_secret", "--series", cli.series["P3"][0],
              "--note", "vendor prototype")
    assert out["level"] == "series" and out["reason"] == "trade_secret"
    text = _ok("release", "create", "liver", "--version", "1.1.0", "--cohort", "ct")
    assert "left out by restrictions (1 series)" in text and "trade_secret" in text
    assert [r["release"] for r in _js("release", "ls")] == ["liver@1.0.0", "liver@1.1.0"]
    m = _js("release", "show", "liver@1.0.0", "--manifest")
    assert m["version"] == "1.0.0" and len(m["series"]) == 9
    d = _js("release", "diff", "liver@1.0.0", "liver@1.1.0")
    assert d["series_removed"] == [cli.series["P3"][0]]
    assert "series removed (1)" in _ok("release", "diff", "liver@1.0.0", "liver@1.1.0")
    res = runner.invoke(app, ["release", "create", "liver", "--version", "1.1.0",
                              "--cohort", "ct"])
    assert res.exit_code == 1 and "immutable" in res.output
    rid = _js("restrictions", "ls")[0]["id"]
    _ok("restrictions", "lift", str(rid))
    assert _js("restrictions", "ls") == [] and len(_js("restrictions", "ls", "--all")) == 1
    res = runner.invoke(app, ["restrictions", "add", "embargo", "--collection", "liver-a"])
    assert res.exit_code == 1 and "--until" in res.output
    res = runner.invoke(app, ["restrictions", "add", "contract", "--collection", "liver-a",
                              "--series", "x"])
    assert res.exit_code == 1 and "exactly one" in res.output
    actions = [json.loads(line)["action"]
               for line in cli.node.settings.audit_file.read_text().splitlines()]
    assert {"cohort.save", "release.create", "restrictions.add", "restrictions.lift"} <= set(
        actions)
