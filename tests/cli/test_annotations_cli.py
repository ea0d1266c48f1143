"""The annotation commands end to end: labels, annotations, tasks, agreement, pre-annotation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from mida.cli.main import app
from tests.annotations.conftest import SCHEMA
from tests.factories import PHI, write_ct_series

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


def _js(*args: str) -> Any:
    return json.loads(_ok(*args, "--json"))


def _fails(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 1, res.output
    return res.output


@pytest.fixture
def archive(home: Path, tmp_path: Path) -> dict[str, Any]:
    """An initialised node with two CT series, the schema and five users."""
    _ok("init", "--institution", "H", "--name", "H")
    infos = [write_ct_series(tmp_path / "in" / f"s{i}", slices=4, size=16) for i in range(2)]
    assert _js("ingest", str(tmp_path / "in"), "--collection", "ct")["stored"] == 8
    for user in ("ann", "bob", "adj"):
        _ok("users", "add", user, "--role", "annotator")
    (tmp_path / "liver.yaml").write_text(yaml.safe_dump(SCHEMA))
    np.save(tmp_path / "sphere.npy", infos[0]["truth"])
    return {"schema": tmp_path / "liver.yaml", "mask": tmp_path / "sphere.npy",
            "truth": infos[0]["truth"]}


def test_labels_add_and_ls(archive: dict[str, Any]) -> None:
    added = _js("labels", "add", str(archive["schema"]))
    assert added == {"schema": "liver@1.0.0", "labels": 7, "sha256": added["sha256"],
                     "created": True}
    assert "already present" in _ok("labels", "add", str(archive["schema"]))
    assert [r["schema"] for r in _js("labels", "ls")] == ["liver@1.0.0"]
    labels = {r["label"]: r for r in _js("labels", "ls", "liver")}
    assert labels["lirads"]["values"] == "LR-1, LR-2, LR-3, LR-4, LR-5"
    assert "no label schema 'spleen'" in _fails("labels", "ls", "spleen")


def test_a_task_from_worklist_to_adjudication_and_agreement(archive: dict[str, Any]) -> None:
    _ok("labels", "add", str(archive["schema"]))
    assert "no user named 'zoe'" in _fails("tasks", "create", "bad", "--collection", "ct",
                                           "--schema", "liver", "--readers", "ann,zoe")
    made = _js("tasks", "create", "liver-read", "--collection", "ct", "--schema", "liver",
               "--readers", "ann,bob", "--per-case", "2", "--seed", "3")
    assert made["cases"] == 2 and made["cases_per_reader"] == {"ann": 2, "bob": 2}
    assert made["blinded"] is True and made["seed"] == 3
    assert [t["task"] for t in _js("tasks", "ls")] == ["liver-read"]
    assert [w["case"] for w in _js("tasks", "worklist", "--reader", "ann")] == [1, 2]
    # case 1: grades differ -> adjudication; case 2: the same sphere -> done
    _ok("tasks", "annotate", "liver-read", "--case", "1", "--reader", "ann", "--label",
        "lirads", "--value", "LR-3")
    _ok("tasks", "annotate", "liver-read", "--case", "1", "--reader", "bob", "--label",
        "lirads", "--value", "LR-4")
    seen = _js("tasks", "case", "liver-read", "--case", "1", "--as", "ann")
    assert [a["reader"] for a in seen["annotations"]] == ["ann"]  # blinded
    for reader in ("ann", "bob"):
        _ok("tasks", "annotate", "liver-read", "--case", "2", "--reader", reader, "--label",
            "lesion", "--mask", str(archive["mask"]))
        for case in ("1", "2"):
            _ok("tasks", "submit", "liver-read", "--case", case, "--reader", reader)
    shown = _js("tasks", "show", "liver-read", "--cases")
    assert shown["by_state"] == {"reading": 0, "review": 0, "adjudication": 1, "done": 1}
    assert shown["adjudication"][0]["reasons"] == ["lirads: ann LR-3, bob LR-4"]
    assert {(p["reader"], p["step"], p["done"]) for p in shown["progress"]} == {
        ("ann", "read", 2), ("bob", "read", 2)}
    assert _js("tasks", "worklist", "--reader", "ann", "--task", "liver-read") == []
    assert "an adjudicator judges" in _fails("tasks", "adjudicate", "liver-read", "--case",
                                             "1", "--by", "ann", "--accept", "bob")
    assert "tie between LR-3 (1), LR-4 (1)" in " ".join(_fails(
        "tasks", "adjudicate", "liver-read", "--case", "1", "--by", "adj",
        "--consensus").split())
    adj = _js("tasks", "adjudicate", "liver-read", "--case", "1", "--by", "adj", "--accept",
              "bob")
    assert adj["method"] == "accept" and len(adj["created"]) == 1
    final = _js("annotations", "show", adj["created"][0])
    assert (final["reader"], final["status"], final["data"]) == (
        "adj", "adjudicated", {"value": "LR-4"})
    rep = _js("annotations", "agreement", "--task", "liver-read")
    assert rep["cases_read"] == 2
    pair = rep["labels"]["lirads"]["pairs"][0]
    assert pair["readers"] == ["ann", "bob"] and pair["cases"] == 1
    lesion = rep["labels"]["lesion"]
    assert lesion["pairs"][0]["dice_mean"] == 1.0 and lesion["pairs"][0]["hd95_mm_mean"] == 0.0
    assert "Cohen's kappa" in _ok("annotations", "agreement", "--task", "liver-read")


def test_preannotate_then_confirm_through_the_commands(archive: dict[str, Any]) -> None:
    _ok("labels", "add", str(archive["schema"]))
    models = {m["name"]: m for m in _js("models", "ls")}
    assert models["threshold"]["version"] == "1"
    out = _fails("annotations", "preannotate", "--model", "nnunet", "--schema", "liver",
                 "--label", "lesion", "--collection", "ct")
    assert "threshold" in out and "no model 'nnunet'" in out
    res = _js("annotations", "preannotate", "--model", "threshold", "--schema", "liver",
              "--label", "lesion", "--collection", "ct", "--param", "threshold=100")
    assert res["created"] == 2 and res["series"] == 2 and res["version"] == "1"
    rows = _js("annotations", "ls", "--reader", "threshold")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"draft"}
    assert rows[0]["reader_kind"] == "model" and rows[0]["model_version"] == "1"
    assert rows[0]["provenance"]["params"]["threshold"] == 100
    assert rows[0]["data"]["voxels"] == int(archive["truth"].sum())
    hist = _js("annotations", "show", rows[0]["uid"], "--history")
    assert [(h["revision"], h["status"], h["author"]) for h in hist] == [
        (1, "draft", "threshold")]
    first, second = rows[0]["uid"], rows[1]["uid"]
    _ok("annotations", "confirm", first, "--by", "ann")
    smaller = archive["truth"].copy()
    smaller[0] = False
    np.save(archive["mask"], smaller)
    _ok("annotations", "confirm", second, "--by", "bob", "--mask", str(archive["mask"]),
        "--comment", "dropped the first slice")
    hist = _js("annotations", "show", first, "--history")
    assert [(h["revision"], h["status"], h["author"]) for h in hist] == [
        (1, "draft", "threshold"), (2, "submitted", "ann")]
    hist = _js("annotations", "show", second, "--history")
    assert [(h["status"], h["author"], h["data"]["voxels"], h["model_version"])
            for h in hist] == [("draft", "threshold", int(archive["truth"].sum()), "1"),
                               ("submitted", "bob", int(smaller.sum()), None)]
    assert "not a draft" in _fails("annotations", "confirm", first, "--by", "ann")
    again = _js("annotations", "preannotate", "--model", "threshold", "--schema", "liver",
                "--label", "lesion", "--collection", "ct")
    assert again["created"] == 0 and len(again["skipped"]) == 2
    assert PHI["name"] not in json.dumps(rows)


def test_measure_a_mask_through_the_command(archive: dict[str, Any]) -> None:
    _ok("labels", "add", str(archive["schema"]))
    _js("annotations", "preannotate", "--model", "threshold", "--schema", "liver",
        "--label", "lesion", "--collection", "ct", "--param", "threshold=100")
    uid = _js("annotations", "ls", "--reader", "threshold")[0]["uid"]
    m = _js("annotations", "measure", uid)
    assert m["voxels"] == int(archive["truth"].sum()) and m["stats"]["min"] >= 200
    assert "measurement" not in m
    out = _fails("annotations", "measure", uid, "--label", "lesion")
    assert "must be a measurement label" in out
