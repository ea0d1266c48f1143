"""The catalog snapshot (Parquet) and read-only SQL over it (DuckDB).

One archive is built per module: mida's synthetic sample (planted PHI, CT, MR,
CR) in collection ``sample`` and a CT series from the factories in ``ct``,
with a feature row and an annotation revised once. The tests read its
snapshot; the ``any_node`` test builds a smaller one on each catalog backend.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from mida.annotations import store
from mida.annotations.schema import parse_schema
from mida.catalog.db import open_catalog
from mida.catalog.models import (
    Annotation,
    Collection,
    Feature,
    Instance,
    Patient,
    Series,
    Study,
)
from mida.config import Settings
from mida.datasets import analytics
from mida.datasets.analytics import QueryError, export_parquet, is_read_only, sql
from mida.deid.pseudonyms import Pseudonymizer
from mida.dicom.sample import SampleManifest
from mida.errors import MidaError, NotFoundError
from mida.ingest import ingest_paths
from mida.node import Node, init_node
from tests.annotations.conftest import SCHEMA
from tests.factories import PHI, write_ct_series
from tests.ingest.test_phi_leaks import _clean, _hits


@dataclass
class Archive:
    node: Node
    snap: Path
    ct: dict[str, Any]  # the factory series' catalog UIDs
    annotation_uid: str


def _annotate(node: Node, series_uid: str, sop_uid: str) -> str:
    """A box on one slice, revised once (the snapshot must hold revision 2)."""
    with node.catalog().session() as s:
        schema, _ = store.add_schema(s, parse_schema(SCHEMA))
        target = store.UidMapper(s).target(sop_instance_uid=sop_uid)
        rev = store.create(s, node.store(), target=target, schema=schema, label="nodule-box",
                           reader="alice", data={"box": [3, 4, 10.5, 12]})
        ann = s.get(Annotation, rev.annotation_id)
        assert ann is not None
        store.revise(s, node.store(), ann, author="alice", status="submitted",
                     data={"box": [2, 4, 10.5, 12]})
        series = s.scalars(select(Series).where(Series.SeriesInstanceUID == series_uid)).one()
        s.add(Feature(series_id=series.id, family="qc", region="", name="snr",
                      value_num=12.5, value_text=None, extractor="test"))
        s.add(Feature(series_id=series.id, family="acq", region="", name="kernel",
                      value_num=None, value_text="STANDARD", extractor="test"))
        return ann.uid


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Iterator[Archive]:
    root = tmp_path_factory.mktemp("analytics")
    node = init_node(Settings(home=root / "node", workers=1), "TEST", "Test Hospital",
                     key=b"k" * 32)
    assert ingest_paths(node, [sample_dir], "sample", workers=1).stored > 20
    info = write_ct_series(root / "ct", slices=4, size=16)
    assert ingest_paths(node, [root / "ct"], "ct", workers=1).stored == 4
    p = Pseudonymizer(node.key())
    ct = {"series": p.uid(info["series"]), "sops": [p.uid(u) for u in info["sops"]]}
    uid = _annotate(node, ct["series"], ct["sops"][1])
    with node.catalog().session() as s:
        export_parquet(s, root / "snap")
    yield Archive(node=node, snap=root / "snap", ct=ct, annotation_uid=uid)
    open_catalog.cache_clear()


def _table(snap: Path, name: str) -> pa.Table:
    return pq.read_table(snap / f"{name}.parquet")


def test_row_counts_equal_the_catalog(archive: Archive) -> None:
    manifest = json.loads((archive.snap / "snapshot.json").read_text())
    with archive.node.catalog().session() as s:
        expected = {
            "instances": s.scalar(select(func.count(Instance.id))),
            "series": s.scalar(select(func.count(Series.id))),
            "studies": s.scalar(select(func.count(Study.id))),
            "patients": s.scalar(select(func.count(Patient.id))),
            "collections": s.scalar(select(func.count(Collection.id))),
            "features": s.scalar(select(func.count(Feature.id))),
            "annotations": s.scalar(select(func.count(Annotation.id))),
        }
    got = {t: pq.read_metadata(archive.snap / f"{t}.parquet").num_rows for t in expected}
    assert got == expected
    assert expected["instances"] > 20 and expected["collections"] == 2
    assert {t: v["rows"] for t, v in manifest["tables"].items()} == expected
    assert manifest["format"] == analytics.FORMAT
    assert [c["name"] for c in manifest["tables"]["features"]["columns"]][:4] == [
        "collection", "StudyInstanceUID", "SeriesInstanceUID", "family"]


def test_dicom_attributes_are_columns_with_their_values(archive: Archive) -> None:
    t = _table(archive.snap, "instances")
    assert t.schema.field("SliceThickness").type == pa.float64()
    assert t.schema.field("PixelSpacing").type == pa.list_(pa.float64())
    assert t.schema.field("ImageType").type == pa.list_(pa.string())
    assert t.schema.field("InstanceNumber").type == pa.int64()
    assert t.schema.field("StudyDate").type == pa.date32()
    assert t.schema.field("KVP").metadata == {b"tag": b"00180060", b"vr": b"DS"}
    rows = {r["SOPInstanceUID"]: r for r in t.to_pylist()}
    ct = rows[archive.ct["sops"][0]]
    assert ct["collection"] == "ct" and ct["institution"] == "TEST"
    assert ct["SliceThickness"] == 2.5 and ct["PixelSpacing"] == [0.8, 0.8]
    assert ct["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    # Every public, non-binary attribute of the stored JSON is a column with its value.
    with archive.node.catalog().session() as s:
        stored = s.scalars(select(Instance.dataset).where(
            Instance.SOPInstanceUID == archive.ct["sops"][0])).one()
    assert stored["00180050"]["Value"] == [2.5]
    for tag, entry in stored.items():
        kw = analytics._tag(tag).name
        if kw and "Value" in entry and entry["vr"] not in ("SQ", "PN", "OB", "OW", "DA"):
            value = ct[kw]
            assert (value if isinstance(value, list) else [value]) == entry["Value"], kw
    sample_ct = next(r for r in rows.values() if r["collection"] == "sample"
                     and r["Modality"] == "CT")
    assert sample_ct["KVP"] == 120.0
    ref = json.loads(sample_ct["ReferencedImageSequence"])
    assert ref[0]["ReferencedSOPClassUID"] == "1.2.840.10008.5.1.4.1.1.2"
    other = json.loads(sample_ct["OtherElements"])  # the retained GE private block
    assert other["00190010"]["Value"] == ["GEMS_ACQU_01"]
    binary = {"PixelData", "EncapsulatedDocument", "IconImageSequence"}
    assert not binary & set(t.column_names)


def test_a_feature_and_the_latest_annotation_revision_are_rows(archive: Archive) -> None:
    feats = {r["name"]: r for r in _table(archive.snap, "features").to_pylist()}
    assert feats["snr"]["value_num"] == 12.5 and feats["snr"]["family"] == "qc"
    assert feats["kernel"]["value_text"] == "STANDARD"
    assert feats["snr"]["SeriesInstanceUID"] == archive.ct["series"]
    (ann,) = _table(archive.snap, "annotations").to_pylist()
    assert ann["uid"] == archive.annotation_uid
    assert (ann["revision"], ann["status"], ann["schema"]) == (2, "submitted", "liver@1.0.0")
    assert json.loads(ann["data"]) == {"box": [2, 4, 10.5, 12]}
    assert (ann["level"], ann["kind"], ann["reader"]) == ("instance", "bbox", "alice")
    assert ann["SOPInstanceUID"] == archive.ct["sops"][1]
    assert ann["SeriesInstanceUID"] == archive.ct["series"] and ann["collection"] == "ct"


def test_sql_counts_by_modality_as_the_catalog_does(archive: Archive) -> None:
    cols, rows = sql("SELECT Modality, count(*) AS n FROM instances GROUP BY 1 ORDER BY 1",
                     archive.snap)
    with archive.node.catalog().session() as s:
        want = Counter(dict(s.execute(
            select(Series.Modality, func.count(Instance.id))
            .join(Instance, Instance.series_id == Series.id).group_by(Series.Modality)).all()))
    assert cols == ["Modality", "n"]
    # the sample's US cine is stored where tesseract can clear its burned-in text, and
    # quarantined where it cannot: the snapshot counts whatever the catalog holds
    assert dict(rows) == want and {"CR", "CT", "MR"} <= set(want)
    cols, rows = sql("SELECT s.collection, sum(s.instances) FROM series s "
                     "JOIN features f USING (SeriesInstanceUID) GROUP BY 1", archive.snap)
    assert rows == [("ct", 8)]  # two feature rows on the 4-slice series
    _, rows = sql("SELECT * FROM instances", archive.snap, limit=3)
    assert len(rows) == 3


@pytest.mark.parametrize("query", [
    "COPY instances TO '{out}'",
    "EXPLAIN ANALYZE COPY instances TO '{out}'",
    "ATTACH '{out}' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CREATE TABLE t AS SELECT 1",
    "SET enable_external_access = true",
    "PRAGMA version",
    "SELECT 1; COPY instances TO '{out}'",
])
def test_statements_that_write_are_refused(archive: Archive, tmp_path: Path, query: str) -> None:
    out = tmp_path / "leak.csv"
    q = query.format(out=out)
    assert not is_read_only(q)
    with pytest.raises(QueryError, match="one read-only statement"):
        sql(q, archive.snap)
    assert not out.exists()


@pytest.mark.parametrize("query", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM read_parquet('{other}')",
])
def test_selects_cannot_open_other_files(archive: Archive, tmp_path: Path, query: str) -> None:
    other = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1]}), other)
    with pytest.raises(QueryError, match="disabled by configuration"):
        sql(query.format(other=other), archive.snap)


def test_the_connection_itself_cannot_write(archive: Archive, tmp_path: Path) -> None:
    # The second lock, without the statement check in front of it.
    con = analytics._connect(archive.snap)
    try:
        for q in (f"COPY instances TO '{tmp_path / 'a.csv'}'",
                  f"COPY instances TO '{archive.snap / 'instances.parquet'}'",
                  f"ATTACH '{tmp_path / 'b.db'}'", "SET enable_external_access = true"):
            with pytest.raises(Exception, match=r"disabled by configuration|locked"):
                con.execute(q)
        assert con.execute("SELECT count(*) FROM instances").fetchone()[0] > 20
    finally:
        con.close()
    assert list(tmp_path.iterdir()) == []


def test_a_syntax_error_points_at_its_position(archive: Archive) -> None:
    with pytest.raises(QueryError) as err:
        sql("SELECT Modality FROM instances WHERE", archive.snap)
    # DuckDB's own words, with the query and carets under the offending token.
    first, _, rest = str(err.value).partition("\n\n")
    assert first == 'Parser Error: syntax error at or near "WHERE"'
    line, caret = rest.splitlines()
    assert line == "LINE 1: SELECT Modality FROM instances WHERE"
    assert line[caret.index("^"):caret.rindex("^") + 1] == "WHERE"
    with pytest.raises(QueryError, match="Referenced column \"Nope\" not found"):
        sql("SELECT Nope FROM instances", archive.snap)


def test_no_planted_phi_reaches_the_snapshot(archive: Archive, sample_dir: Path) -> None:
    planted = SampleManifest.read(sample_dir / "phi_manifest.json").phi_strings()
    needles = _clean(set(planted) | set(PHI.values()))
    assert len(needles) > 50
    chunks = [(archive.snap / "snapshot.json").read_text()]
    for f in sorted(archive.snap.glob("*.parquet")):
        t = pq.read_table(f)
        chunks.append(json.dumps(t.to_pylist(), ensure_ascii=False, default=str))
        chunks.append(str(t.schema))
    assert _hits("\n".join(chunks), needles) == []


def test_export_replaces_a_snapshot_whole_or_not_at_all(
        archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snap = tmp_path / "snap"
    with archive.node.catalog().session() as s:
        first = export_parquet(s, snap, collections=["ct"])
        assert first.rows["instances"] == 4 and first.rows["patients"] == 1
        assert first.rows["collections"] == 1 and first.rows["annotations"] == 1

        def boom(*a: Any, **k: Any) -> int:
            raise KeyboardInterrupt

        monkeypatch.setattr(analytics, "_write_simple", boom)
        with pytest.raises(KeyboardInterrupt):
            export_parquet(s, snap)
        monkeypatch.undo()
        assert json.loads((snap / "snapshot.json").read_text())["collections"] == ["ct"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["snap"]  # no temp folder left
        second = export_parquet(s, snap)
        assert second.rows["collections"] == 2
        with pytest.raises(NotFoundError, match="known: ct, sample"):
            export_parquet(s, tmp_path / "other", collections=["nope"])
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "thesis.docx").write_text("keep me")
        with pytest.raises(MidaError, match="not a snapshot"):
            export_parquet(s, tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.docx").read_text() == "keep me"
    assert sorted(pq.read_table(snap / "collections.parquet")["collection"].to_pylist()) == [
        "ct", "sample"]


def test_values_of_different_types_make_a_string_column() -> None:
    plan: dict[str, analytics._Column] = {}
    rows = [{"00200013": {"vr": "IS", "Value": [3]}, "00180050": {"vr": "DS", "Value": [2]},
             "00080023": {"vr": "DA", "Value": ["20240102"]}},
            {"00200013": {"vr": "IS", "Value": ["3a"]}, "00180050": {"vr": "DS", "Value": [2.5]},
             "00080023": {"vr": "DA", "Value": ["2024.01.02"]},
             "00181060": {"vr": "DS"}}]
    for r in rows:
        analytics._observe(plan, r)
    assert plan["InstanceNumber"].arrow == pa.string()
    assert plan["SliceThickness"].arrow == pa.float64()
    assert plan["ContentDate"].arrow == pa.string()
    assert plan["TriggerTime"].arrow == pa.string()  # present, never a value
    cells = [analytics._cell(plan["InstanceNumber"], r["00200013"]) for r in rows]
    assert cells == ["3", "3a"]
    assert analytics._cell(plan["SliceThickness"], rows[0]["00180050"]) == 2.0


def test_export_and_query_on_each_backend(any_node: Node, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analytics, "BATCH", 3)  # several batches per table
    for i in range(2):
        write_ct_series(tmp_path / "in" / f"s{i}", slices=4, size=16)
    assert ingest_paths(any_node, [tmp_path / "in"], "ct", workers=1).stored == 8
    p = Pseudonymizer(any_node.key())
    with any_node.catalog().session() as s:
        sop = s.scalars(select(Instance.SOPInstanceUID).order_by(Instance.id)).first()
        series = s.scalars(select(Series.SeriesInstanceUID).order_by(Series.id)).first()
    assert sop is not None and series is not None and p is not None
    uid = _annotate(any_node, series, sop)
    with any_node.catalog().session() as s:
        res = export_parquet(s, tmp_path / "snap")
    assert res.rows == {"instances": 8, "series": 2, "studies": 2, "patients": 1,
                        "collections": 1, "features": 2, "annotations": 1}
    _, rows = sql("SELECT SliceThickness, count(DISTINCT SOPInstanceUID), "
                  "min(ingested) IS NOT NULL FROM instances GROUP BY 1", tmp_path / "snap")
    assert rows == [(2.5, 8, True)]
    _, rows = sql("SELECT uid, revision, schema FROM annotations", tmp_path / "snap")
    assert rows == [(uid, 2, "liver@1.0.0")]
