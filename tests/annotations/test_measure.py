"""Measurements from a mask: volume, largest slice area and HU statistics."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from mida.annotations import store
from mida.annotations.geometry import series_geometry
from mida.annotations.measure import measure_mask, record_measurement
from mida.annotations.schema import parse_schema
from mida.errors import AnnotationError
from tests.annotations.conftest import SCHEMA, CtCase


def _with_measures(case: CtCase) -> None:
    body = copy.deepcopy(SCHEMA)
    body["version"] = "1.1.0"
    concept = {"CodeValue": "118565006", "CodingSchemeDesignator": "SCT",
               "CodeMeaning": "Volume"}
    body["labels"] += [
        {"name": "lesion-volume", "type": "measurement", "measure": "volume", "concept": concept},
        {"name": "lesion-area", "type": "measurement", "measure": "area", "concept": concept},
        {"name": "lesion-hu", "type": "measurement", "measure": "hu_stats", "concept": concept},
    ]
    with case.node.catalog().session() as s:
        store.add_schema(s, parse_schema(body))


def test_volume_area_and_hu_statistics_of_a_mask(ct_case: CtCase) -> None:
    _with_measures(ct_case)
    node, truth = ct_case.node, ct_case.truth
    with node.catalog().session() as s:
        g = series_geometry(s, ct_case.series_uid)
        target = store.UidMapper(s).target(series_uid=ct_case.series_uid)
        rev = store.create(s, node.store(), target=target, schema=ct_case.schema, label="lesion",
                           reader="alice", mask=truth, geometry=g)
        ann = s.get(store.Annotation, rev.annotation_id)
        m = measure_mask(s, node.store(), ann, rev)
        uid = ann.uid
    # the factory's pixels: 200 HU + (column % 3) inside the sphere
    columns = np.nonzero(truth)[2]
    inside = 200 + columns % 3
    dz, dy, dx = ct_case.original["spacing"]
    assert m["voxels"] == int(truth.sum())
    assert m["volume_mm3"] == pytest.approx(truth.sum() * dz * dy * dx, abs=1e-3)
    fullest = truth.reshape(truth.shape[0], -1).sum(axis=1)
    assert m["area_mm2"] == pytest.approx(fullest.max() * dy * dx, abs=1e-3)
    assert m["stats"] == pytest.approx({"mean": inside.mean(), "std": inside.std(),
                                        "min": 200, "max": 202}, abs=1e-3)
    with node.catalog().session() as s:
        vol = record_measurement(s, node.store(), uid, label="lesion-volume", author="bob",
                                 schema="liver@1.1.0")
        hu = record_measurement(s, node.store(), uid, label="lesion-hu", author="bob",
                                schema="liver@1.1.0")
        assert vol.data == {"value": m["volume_mm3"], "unit": "mm3"}
        assert hu.data["value"] == m["stats"]["mean"] and hu.data["stats"] == m["stats"]
        assert vol.provenance["mask"] == uid and vol.provenance["mask_revision"] == 1
        with pytest.raises(AnnotationError, match="must be a measurement label"):
            record_measurement(s, node.store(), uid, label="lesion", author="bob")
        with pytest.raises(AnnotationError, match="not a mask"):
            measure_mask(s, node.store(), s.get(store.Annotation, vol.annotation_id), vol)
