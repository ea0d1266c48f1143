"""``mida features extract | show | ls`` end to end through the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from mida.annotations import store as ann_store
from mida.annotations.geometry import series_geometry
from mida.cli.main import app
from mida.config import get_settings
from mida.node import load_node
from tests.annotations.conftest import SCHEMA
from tests.features.conftest import phantom, write_series

runner = CliRunner()


def _ok(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


def _js(*args: str) -> Any:
    return json.loads(_ok(*args, "--json"))


@pytest.fixture
def archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A node with one CT phantom series and a lesion mask on it."""
    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "node"))
    monkeypatch.setenv("MIDA_WORKERS", "1")
    _ok("init", "--institution", "H", "--name", "H")
    ph = phantom(4, 24, sigma=10.0)
    write_series(tmp_path / "in", ph["hu"], KVP="120", ConvolutionKernel="B30f")
    assert _js("ingest", str(tmp_path / "in"), "--collection", "ct")["stored"] == 4
    uid = _js("ls", "series")[0]["SeriesInstanceUID"]
    (tmp_path / "liver.yaml").write_text(yaml.safe_dump(SCHEMA))
    np.save(tmp_path / "lesion.npy", ph["lesion"])
    _ok("labels", "add", str(tmp_path / "liver.yaml"))
    return {"uid": uid, "home": tmp_path / "node", "mask": tmp_path / "lesion.npy"}


def test_extract_show_and_ls(archive: dict[str, Any]) -> None:
    uid = archive["uid"]
    said = _ok("features", "extract", "--collection", "ct", "--radiomics")
    assert "1 series: 1 with values" in said and "radiomics 0" in said and "skipped" in said
    out = _js("features", "extract", "--collection", "ct")
    assert (out["series"], out["done"], out["skipped"]) == (1, 1, [])
    assert set(out["by_family"]) == {"acq", "qc"}
    shown = _js("features", "show", uid)
    assert shown["acq"][""]["kvp"] == 120.0 and shown["acq"][""]["reconstruction_kernel"] == "B30f"
    assert shown["qc"][""]["noise"] > 0
    assert set(_js("features", "show", uid, "--family", "qc")) == {"qc"}
    names = {(r["family"], r["name"]): r for r in _js("features", "ls")}
    assert names[("acq", "kvp")]["min"] == 120.0 and names[("acq", "kvp")]["series"] == 1
    assert names[("acq", "modality")]["values"] == {"CT": 1}
    table = _ok("features", "ls", "--family", "acq")
    assert "acq.kvp" in table and "120 .. 120" in table and "CT (1)" in table
    shown_table = _ok("features", "show", uid)
    assert "slice_thickness_mm" in shown_table and "original_" not in shown_table
    audit = [json.loads(line) for line in
             (archive["home"] / "audit" / "audit.jsonl").read_text().splitlines()]
    assert [a for a in audit if a.get("action") == "features.extract"]


def test_extract_radiomics_from_the_command_line(archive: dict[str, Any]) -> None:
    uid = archive["uid"]
    node = load_node(get_settings())
    with node.catalog().session() as s:  # a reader's mask, as the annotator would save it
        schema, _ = ann_store.get_schema(s, "liver")
        ann_store.create(s, node.store(), target=ann_store.UidMapper(s).target(series_uid=uid),
                         schema=schema, label="lesion", reader="ann",
                         mask=np.load(archive["mask"]), geometry=series_geometry(s, uid))
    out = _js("features", "extract", "--series", uid, "--radiomics", "--no-qc")
    assert out["by_family"]["radiomics"] == 107 and "qc" not in out["by_family"]
    rad = _js("features", "show", uid, "--family", "radiomics")["radiomics"]
    (region,) = rad
    assert region.startswith("lesion:") and region.endswith("@1")
    assert rad[region]["original_shape_VoxelVolume"] > 0
    text = _ok("features", "show", uid, "--family", "radiomics")
    assert "original_shape_MeshVolume" in text


def test_errors_exit_1_with_a_way_out(archive: dict[str, Any]) -> None:
    res = runner.invoke(app, ["features", "extract"])
    assert res.exit_code == 1 and "--collection NAME and/or --series UID" in res.output
    res = runner.invoke(app, ["features", "extract", "--collection", "nope"])
    assert res.exit_code == 1 and "no collection 'nope'" in res.output
    res = runner.invoke(app, ["features", "ls", "--family", "texture"])
    assert res.exit_code == 1 and "choose one of acq, qc, radiomics" in res.output
    res = runner.invoke(app, ["features", "show", "1.2.3"])
    assert res.exit_code == 1 and "no series 1.2.3" in res.output
