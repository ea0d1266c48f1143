"""Annotation records: schemas, revisions that never overwrite, readers side by side."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from mida.annotations import store
from mida.annotations.geometry import SeriesGeometry, series_geometry
from mida.annotations.schema import load_schema_file, parse_schema
from mida.deid.pseudonyms import Pseudonymizer
from mida.errors import AnnotationError, GeometryMismatchError, NotFoundError, SchemaError
from tests.annotations.conftest import SCHEMA, CtCase
from tests.factories import PHI


def test_schema_versions_are_immutable(ct_case: CtCase, tmp_path: Path) -> None:
    with ct_case.node.catalog().session() as s:
        _, created = store.add_schema(s, parse_schema(SCHEMA))
        assert not created  # same content again: a no-op
        changed = copy.deepcopy(SCHEMA)
        changed["labels"][0]["colour"] = "#000000"
        with pytest.raises(SchemaError, match="immutable"):
            store.add_schema(s, parse_schema(changed))
        changed["version"] = "1.1.0"
        store.add_schema(s, parse_schema(changed))
        row, schema = store.get_schema(s, "liver")
        assert row.version == "1.1.0" and schema.label("lesion").colour == "#000000"
        assert store.get_schema(s, "liver@1.0.0")[1].label("lesion").colour == "#e6194b"
        with pytest.raises(NotFoundError, match=r"liver@1\.0\.0"):
            store.get_schema(s, "spleen")


def test_schema_files_yaml_and_json_and_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SCHEMA))
    assert load_schema_file(tmp_path / "s.yaml").ref == "liver@1.0.0"
    bad = copy.deepcopy(SCHEMA)
    bad["labels"][0]["concept"].pop("CodeMeaning")
    bad["labels"][4]["type"] = "blob"
    bad["labels"][2]["values"] = ["x"]
    with pytest.raises(SchemaError) as e:
        parse_schema(bad, source="s.yaml")
    msg = str(e.value)
    assert "labels.0.concept.CodeMeaning" in msg and "labels.4.type" in msg
    dup = copy.deepcopy(SCHEMA)
    dup["labels"][1]["name"] = "lesion"
    with pytest.raises(SchemaError, match="label names repeat: lesion"):
        parse_schema(dup)
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(SchemaError, match=r"x\.json: not valid json"):
        load_schema_file(tmp_path / "x.json")


def test_geometry_is_sorted_by_position_not_file_order(ct_case: CtCase) -> None:
    with ct_case.node.catalog().session() as s:
        g = series_geometry(s, ct_case.series_uid)
    info = ct_case.original
    assert g.shape == (info["slices"], info["size"], info["size"])
    assert [sl.sop_instance_uid for sl in g.slices] == ct_case.sop_uids
    assert g.origin == pytest.approx(info["origin"])
    assert g.spacing == pytest.approx(info["spacing"])
    assert np.allclose(g.direction, np.eye(3))
    # voxel (column 2, row 3, slice 1) in LPS mm
    p = g.affine_lps() @ [2, 3, 1, 1]
    assert p[:3] == pytest.approx([-12 + 2 * 0.8, -12 + 3 * 0.8, -30 + 2.5])
    assert SeriesGeometry.from_json(g.to_json()) == g


def test_revisions_never_overwrite_and_two_readers_coexist(ct_case: CtCase) -> None:
    node = ct_case.node
    with node.catalog().session() as s:
        g = series_geometry(s, ct_case.series_uid)
        target = store.UidMapper(s).target(series_uid=ct_case.series_uid)
        a = store.create(s, node.store(), target=target, schema=ct_case.schema, label="lesion",
                         reader="alice", mask=ct_case.truth, geometry=g,
                         provenance={"tool": "test"})
        smaller = ct_case.truth.copy()
        smaller[0] = False
        smaller[-1] = False
        b = store.create(s, node.store(), target=target, schema=ct_case.schema, label="lesion",
                         reader="bob", mask=smaller, geometry=g)
        ann_a = s.get(store.Annotation, a.annotation_id)
        edited = ct_case.truth.copy()
        edited[:, :4] = False
        r2 = store.revise(s, node.store(), ann_a, author="alice", mask=edited, status="submitted",
                          comment="trimmed the top edge")
        uid_a = ann_a.uid
    with node.catalog().session() as s:
        ann = store.get(s, uid_a)
        revs = store.history(s, ann)
        assert [r.revision for r in revs] == [1, 2]
        assert [r.status for r in revs] == ["draft", "submitted"]
        assert np.array_equal(store.load_mask(node.store(), revs[0]), ct_case.truth)
        assert np.array_equal(store.load_mask(node.store(), revs[1]), edited)
        assert revs[0].data["voxels"] == int(ct_case.truth.sum())
        assert r2.data["voxels"] == int(edited.sum())
        both = store.query(s, series_uid=ct_case.series_uid, label="lesion")
        assert sorted(a.reader for a, _ in both) == ["alice", "bob"]
        assert {a.reader: r.revision for a, r in both} == {"alice": 2, "bob": 1}
        bob = next(a for a, _ in both if a.reader == "bob")
        assert np.array_equal(store.load_mask(node.store(), store.latest(s, bob)), smaller)
        assert b.revision == 1
        v = store.view(s, bob, store.latest(s, bob), blinded_for="alice")
        assert v["reader"] == "(blinded)" and v["target"]["SeriesInstanceUID"] == ct_case.series_uid


def test_mask_on_the_wrong_grid_is_refused_with_the_difference(ct_case: CtCase) -> None:
    with ct_case.node.catalog().session() as s:
        g = series_geometry(s, ct_case.series_uid)
        target = store.UidMapper(s).target(series_uid=ct_case.series_uid)
        js = g.to_json()
        js["spacing"] = [2.5, 1.0, 1.0]
        with pytest.raises(GeometryMismatchError, match=r"spacing \(2\.500, 1\.000, 1\.000\)"):
            store.create(s, ct_case.node.store(), target=target, schema=ct_case.schema,
                         label="lesion", reader="alice", mask=ct_case.truth,
                         geometry=SeriesGeometry.from_json(js))
        with pytest.raises(AnnotationError, match="mask label"):
            store.create(s, ct_case.node.store(), target=target, schema=ct_case.schema,
                         label="lesion", reader="alice")


def test_content_is_checked_against_the_label(ct_case: CtCase) -> None:
    node = ct_case.node
    with node.catalog().session() as s:
        m = store.UidMapper(s)
        study = m.target(study_uid=ct_case.study_uid)
        image = m.target(sop_instance_uid=ct_case.sop_uids[2])
        kw = {"schema": ct_case.schema, "reader": "alice"}
        r = store.create(s, node.store(), target=study, label="lirads",
                         data={"value": "LR-4"}, **kw)
        assert r.data == {"value": "LR-4"}
        with pytest.raises(AnnotationError, match="LR-1, LR-2"):
            store.create(s, node.store(), target=study, label="lirads", data={"value": "6"}, **kw)
        with pytest.raises(AnnotationError, match="classifies a study"):
            store.create(s, node.store(), target=image, label="lirads",
                         data={"value": "LR-4"}, **kw)
        box = store.create(s, node.store(), target=image, label="nodule-box",
                           data={"box": [3, 4, 10.5, 12]}, **kw)
        assert box.data == {"box": [3, 4, 10.5, 12]}
        with pytest.raises(AnnotationError, match="outside the 32x32 image"):
            store.create(s, node.store(), target=image, label="nodule-box",
                         data={"box": [3, 4, 100, 12]}, **kw)
        with pytest.raises(AnnotationError, match="instance target"):
            store.create(s, node.store(), target=study, label="outline",
                         data={"points": [[1, 1], [5, 1], [5, 5]]}, **kw)
        with pytest.raises(AnnotationError, match="length in mm, not cm"):
            store.create(s, node.store(), target=image, label="diameter",
                         data={"value": 1.2, "unit": "cm"}, **kw)
        with pytest.raises(AnnotationError, match="unknown status"):
            store.create(s, node.store(), target=study, label="lirads",
                         data={"value": "LR-4"}, status="final", **kw)
        with pytest.raises(AnnotationError, match="needs its version"):
            store.create(s, node.store(), target=study, label="lirads",
                         data={"value": "LR-4"}, schema=ct_case.schema, reader="thresh",
                         reader_kind="model")


def test_free_text_findings_are_deidentified(ct_case: CtCase) -> None:
    with ct_case.node.catalog().session() as s:
        study = store.UidMapper(s).target(study_uid=ct_case.study_uid)
        r = store.create(
            s, ct_case.node.store(), target=study, schema=ct_case.schema, label="finding",
            reader="alice",
            data={"text": f"3 cm lesion segment VII, call {PHI['phone']}, ID {PHI['pid']}"})
    assert PHI["phone"] not in r.data["text"] and PHI["pid"] not in r.data["text"]
    assert "lesion segment VII" in r.data["text"] and r.data["redactions"] >= 2


def test_original_uids_map_through_the_node_pseudonyms(ct_case: CtCase) -> None:
    with ct_case.node.catalog().session() as s:
        m = store.UidMapper(s, Pseudonymizer(ct_case.node.key()))
        t = m.target(sop_instance_uid=ct_case.original["sops"][1])
        assert t.instance is not None and t.instance.SOPInstanceUID == ct_case.sop_uids[1]
        assert t.series is not None and t.series.SeriesInstanceUID == ct_case.series_uid
        with pytest.raises(NotFoundError) as e:
            m.series("1.2.3.4.5")
        assert "1.2.3.4.5" not in str(e.value)  # only the pseudonym is shown
        # without the key, an original UID is not found
        with pytest.raises(NotFoundError):
            store.UidMapper(s).series(ct_case.original["series"])


def test_shipped_example_schema_is_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    schema = load_schema_file(root / "docs" / "examples" / "labels" / "ct-liver.yaml")
    assert schema.ref == "ct-liver@1.0.0"
    assert {lb.type for lb in schema.labels} == {"mask", "bbox", "polygon", "classification",
                                                 "measurement", "text"}
