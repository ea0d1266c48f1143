"""``mida catalog export-parquet`` and ``mida sql`` end to end."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mida.cli.main import app
from tests.factories import write_ct_series

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A node with one 4-slice CT series in collection ``ct``."""
    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "node"))
    monkeypatch.setenv("MIDA_WORKERS", "1")
    assert runner.invoke(app, ["init", "--institution", "H", "--name", "H"]).exit_code == 0
    write_ct_series(tmp_path / "in" / "a", slices=4, size=16)
    res = runner.invoke(app, ["ingest", str(tmp_path / "in"), "--collection", "ct", "--json"])
    assert json.loads(res.stdout)["stored"] == 4, res.output
    return tmp_path / "node"


GROUP = "SELECT Modality, count(*) AS n FROM instances GROUP BY 1"


def test_sql_exports_on_first_use_then_reads_the_snapshot(home: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["sql", GROUP, "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == [{"Modality": "CT", "n": 4}]
    assert "exporting the catalog to" in res.stderr
    assert (home / "snapshots" / "latest" / "snapshot.json").exists()

    write_ct_series(tmp_path / "in2" / "b", slices=3, size=16)
    assert runner.invoke(app, ["ingest", str(tmp_path / "in2"), "--collection", "more"]
                         ).exit_code == 0
    res = runner.invoke(app, ["sql", GROUP, "--json"])
    assert json.loads(res.stdout) == [{"Modality": "CT", "n": 4}]  # the snapshot, not live
    assert "--refresh to export again" in res.stderr
    res = runner.invoke(app, ["sql", GROUP, "--refresh", "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert list(csv.reader(io.StringIO(res.stdout))) == [["Modality", "n"], ["CT", "7"]]
    res = runner.invoke(app, ["sql", "SELECT collection, instances FROM collections ORDER BY 1"])
    assert res.exit_code == 0, res.output
    assert "ct" in res.stdout and "more" in res.stdout and "│ 3" in res.stdout


def test_export_parquet_command(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "snap"
    res = runner.invoke(app, ["catalog", "export-parquet", str(out), "--collection", "ct",
                              "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["rows"]["instances"] == 4 and data["rows"]["series"] == 1
    assert data["columns"]["instances"] > 40
    res = runner.invoke(app, ["sql", "SELECT SliceThickness, PixelSpacing FROM instances "
                              "LIMIT 1", "--snapshot", str(out), "--json"])
    assert json.loads(res.stdout) == [{"SliceThickness": 2.5, "PixelSpacing": [0.8, 0.8]}]
    res = runner.invoke(app, ["sql", "SELECT * FROM instances", "--snapshot", str(out),
                              "--limit", "2", "--format", "csv"])
    assert len(list(csv.reader(io.StringIO(res.stdout)))) == 3
    assert "showing the first 2 rows" in res.stderr
    res = runner.invoke(app, ["catalog", "export-parquet", str(out), "--collection", "nope"])
    assert res.exit_code == 1 and "no collection nope" in res.output


def test_sql_errors_exit_1_with_duckdb_position(home: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["sql", "SELECT Modality FROM instances WHERE"])
    assert res.exit_code == 1
    assert 'syntax error at or near "WHERE"' in res.stderr
    assert "LINE 1: SELECT Modality FROM instances WHERE" in res.stderr and "^" in res.stderr
    # A refused or broken query exports nothing.
    assert not (home / "snapshots").exists()
    leak = tmp_path / "leak.csv"
    res = runner.invoke(app, ["sql", f"COPY instances TO '{leak}'"])
    assert res.exit_code == 1 and "one read-only statement" in res.stderr
    res = runner.invoke(app, ["sql", "SELECT * FROM read_csv('/etc/passwd')"])
    assert res.exit_code == 1 and "disabled by configuration" in res.stderr
    assert "root:" not in res.output
    assert not leak.exists()
    res = runner.invoke(app, ["sql", "SELECT [Modality, 'x'] AS pair FROM instances LIMIT 1"])
    assert res.exit_code == 0 and "CT" in res.stdout  # brackets survive the output
