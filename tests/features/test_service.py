"""Extraction runs: selection, idempotent replacement, one transaction per series, queries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mida.catalog.models import Feature
from mida.errors import NotFoundError
from mida.features import extract, features_of, list_features
from mida.features import service as feature_service
from mida.features.models import FamilyResult, num
from mida.node import Node
from tests.features.conftest import catalog_uid, ingest_series, phantom, write_series


def _two_series(node: Node, tmp_path: Path) -> list[str]:
    uids = []
    for i, kvp in enumerate(("100", "120")):
        hu = phantom(3, 16, sigma=5.0, seed=i)["hu"]
        info = write_series(tmp_path / "in" / f"s{i}", hu, KVP=kvp, BodyPartExamined="CHEST")
        uids.append(catalog_uid(node, info["series"]))
    ingest_series(node, tmp_path / "in")
    return uids


def _rows(node: Node) -> list[tuple[Any, ...]]:
    with node.catalog().session() as s:
        return [tuple(r) for r in s.execute(
            select(Feature.series_id, Feature.family, Feature.region, Feature.name,
                   Feature.value_num, Feature.value_text, Feature.extractor)
            .order_by(Feature.series_id, Feature.family, Feature.name)).all()]


def test_extract_stores_queryable_values_on_both_backends(any_node: Node, tmp_path: Path) -> None:
    uids = _two_series(any_node, tmp_path)
    seen: list[tuple[int, int]] = []
    with any_node.catalog().session() as s:
        res = extract(s, any_node.store(), collection="ct",
                      progress=lambda done, total, _uid: seen.append((done, total)))
        assert (res.series, res.done, res.skipped) == (2, 2, [])
        assert res.rows == sum(res.by_family.values()) == s.scalar(
            select(func.count()).select_from(Feature))
        first = features_of(s, uids[0])
        summary = {f.name: f for f in list_features(s, "acq")}
    assert seen == [(1, 2), (2, 2)]
    assert first["acq"][""]["kvp"] == 100.0 and first["acq"][""]["body_part"] == "CHEST"
    assert first["qc"][""]["missing_slices"] == 0.0
    kvp = summary["kvp"]
    assert (kvp.type, kvp.series, kvp.min, kvp.max) == ("num", 2, 100.0, 120.0)
    assert (summary["modality"].type, summary["modality"].values) == ("text", {"CT": 2})


def test_extracting_again_replaces_rows_and_changes_nothing(node: Node, tmp_path: Path) -> None:
    _two_series(node, tmp_path)
    with node.catalog().session() as s:
        first = extract(s, node.store(), collection="ct")
    before = _rows(node)
    with node.catalog().session() as s:
        again = extract(s, node.store(), collection="ct")
    assert _rows(node) == before and again.rows == first.rows
    with node.catalog().session() as s:  # a family that is not run is left as it was
        extract(s, node.store(), collection="ct", qc=False)
    assert _rows(node) == before


def test_a_crash_leaves_each_series_with_its_old_or_its_new_values(
        node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uids = _two_series(node, tmp_path)
    with node.catalog().session() as s:
        extract(s, node.store(), collection="ct")
    before = {u: features_of_node(node, u) for u in uids}
    calls = {"n": 0}

    def new_then_crash(store: Any, instances: Any, series_uid: str = "") -> FamilyResult:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("power cut")
        return FamilyResult(values=[num("noise", 99.0)])

    monkeypatch.setattr(feature_service, "qc_features", new_then_crash)
    with pytest.raises(RuntimeError), node.catalog().session() as s:
        extract(s, node.store(), collection="ct")
    after = {u: features_of_node(node, u) for u in uids}
    assert after[uids[0]]["qc"] == {"": {"noise": 99.0}}  # committed: the new set
    assert after[uids[1]] == before[uids[1]]  # rolled back: the old set, acq included


def features_of_node(node: Node, uid: str) -> dict[str, Any]:
    with node.catalog().session() as s:
        return features_of(s, uid)


def test_selection_errors_say_how_to_fix_them(node: Node, tmp_path: Path) -> None:
    uids = _two_series(node, tmp_path)
    with node.catalog().session() as s:
        with pytest.raises(NotFoundError, match="no collection 'mr'; known: ct"):
            extract(s, node.store(), collection="mr")
        with pytest.raises(NotFoundError, match="not in the catalog in collection 'ct'"):
            extract(s, node.store(), collection="ct", series_uids=[uids[0], "1.2.3"])
        with pytest.raises(NotFoundError, match=r"no series 1\.2\.3"):
            features_of(s, "1.2.3")
        only = extract(s, node.store(), series_uids=[uids[1]])
    assert only.series == 1
