"""AI pre-annotation: registered models draft annotations that people confirm or correct."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import numpy as np
import pytest

from mida.annotations import models, store
from mida.annotations.baseline import ThresholdModel
from mida.annotations.geometry import SeriesGeometry
from mida.errors import AnnotationError, NotFoundError
from tests.annotations.conftest import CtCase


class BoomModel:
    """A model that fails on every series."""

    name = "boom"
    version = "0.1"
    labels = ("mask",)

    def predict(self, volume: np.ndarray, geometry: SeriesGeometry) -> list[models.Prediction]:
        raise RuntimeError("CUDA out of memory")


class SliceModel:
    """Marks the brightest slice only (a mask label) and grades the study (classification)."""

    name = "slicer"
    version = "2.0"
    labels = ("mask", "classification")

    def __init__(self, grade: str = "LR-4") -> None:
        self.grade = grade

    def predict(self, volume: np.ndarray, geometry: SeriesGeometry) -> list[models.Prediction]:
        k = int(np.argmax(volume.sum(axis=(1, 2))))
        mask = np.zeros(geometry.shape, dtype=bool)
        mask[k] = volume[k] >= 100
        return [models.Prediction(mask=mask, score=0.9, label="lesion"),
                models.Prediction(value=self.grade, score=0.7, label="lirads")]


@pytest.fixture
def extra_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the test models next to the installed ones."""
    installed = list(importlib.metadata.entry_points(group=models.GROUP))
    extra = [importlib.metadata.EntryPoint(name=n, value=f"{__name__}:{cls}", group=models.GROUP)
             for n, cls in (("boom", "BoomModel"), ("slicer", "SliceModel"))]
    monkeypatch.setattr(models, "entry_points",
                        lambda: sorted(installed + extra, key=lambda e: e.name))


def test_the_baseline_is_registered_as_an_entry_point() -> None:
    eps = {e.name: e for e in importlib.metadata.entry_points(group="mida.models")}
    assert eps["threshold"].value == "mida.annotations.baseline:ThresholdModel"
    assert eps["threshold"].load() is ThresholdModel
    listed = {m["name"]: m for m in models.list_models()}
    assert listed["threshold"]["version"] == "1" and listed["threshold"]["labels"] == ["mask"]


def test_threshold_model_recovers_the_sphere_and_a_person_confirms_it(ct_case: CtCase) -> None:
    node = ct_case.node
    with node.catalog().session() as s:
        result = models.preannotate(s, node.store(), model="threshold", schema="liver",
                                    label="lesion", series=[ct_case.series_uid],
                                    params={"threshold": 100})
    assert result.model == "threshold" and result.version == "1" and len(result.created) == 1
    uid = result.created[0]
    with node.catalog().session() as s:
        ann = store.get(s, uid)
        rev = store.latest(s, ann)
        assert (ann.reader, ann.reader_kind, rev.status) == ("threshold", "model", "draft")
        assert rev.model_version == "1"
        assert rev.provenance["tool"] == "mida preannotate"
        assert rev.provenance["model"] == "threshold" and rev.provenance["version"] == "1"
        assert rev.provenance["params"]["threshold"] == 100
        assert np.array_equal(store.load_mask(node.store(), rev), ct_case.truth)
        # a person confirms the draft: a new revision by them, the model's stays readable
        store.revise(s, node.store(), ann, author="alice", status="submitted")
    with node.catalog().session() as s:
        ann = store.get(s, uid)
        revs = store.history(s, ann)
        assert [(r.status, r.author) for r in revs] == [("draft", "threshold"),
                                                        ("submitted", "alice")]
        assert np.array_equal(store.load_mask(node.store(), revs[1]), ct_case.truth)
        # a rerun of the same model version on the same series adds nothing
        again = models.preannotate(s, node.store(), model="threshold", schema="liver",
                                   label="lesion", series=[ct_case.series_uid])
        assert again.created == [] and "already pre-annotated" in again.skipped[0]


def test_a_person_corrects_the_draft_and_the_model_revision_stays(ct_case: CtCase) -> None:
    node = ct_case.node
    with node.catalog().session() as s:
        uid = models.preannotate(s, node.store(), model="threshold", schema="liver",
                                 label="lesion", series=[ct_case.series_uid]).created[0]
        ann = store.get(s, uid)
        corrected = ct_case.truth.copy()
        corrected[0] = False
        store.revise(s, node.store(), ann, author="bob", mask=corrected, status="submitted",
                     comment="excluded the partial-volume slice")
    with node.catalog().session() as s:
        ann = store.get(s, uid)
        first, second = store.history(s, ann)
        assert np.array_equal(store.load_mask(node.store(), first), ct_case.truth)
        assert np.array_equal(store.load_mask(node.store(), second), corrected)
        assert (second.author, second.status) == ("bob", "submitted")
        assert first.provenance["model"] == "threshold"


def test_parameters_reach_the_model(ct_case: CtCase) -> None:
    node = ct_case.node
    with node.catalog().session() as s:
        # the sphere is 200-202 HU: nothing reaches 250
        high = models.preannotate(s, node.store(), model="threshold", schema="liver",
                                  label="lesion", series=[ct_case.series_uid],
                                  params=models.parse_params(["threshold=250"]))
        assert high.created == [] and high.skipped == [f"series {ct_case.series_uid}: no finding"]
        with pytest.raises(AnnotationError, match="does not take these parameters"):
            models.preannotate(s, node.store(), model="threshold", schema="liver",
                               label="lesion", series=[ct_case.series_uid],
                               params={"colour": "red"})
        with pytest.raises(AnnotationError, match="produces mask labels; label 'lirads' is a "
                                                  "classification label"):
            models.preannotate(s, node.store(), model="threshold", schema="liver",
                               label="lirads", series=[ct_case.series_uid])


def test_unknown_and_failing_models_are_clear_and_store_nothing(ct_case: CtCase,
                                                                extra_models: Any) -> None:
    node = ct_case.node
    with node.catalog().session() as s:
        with pytest.raises(NotFoundError) as e:
            models.preannotate(s, node.store(), model="nnunet", schema="liver", label="lesion",
                               series=[ct_case.series_uid])
        assert "boom, slicer, threshold" in str(e.value)
    with pytest.raises(AnnotationError) as e2, node.catalog().session() as s:
        models.preannotate(s, node.store(), model="boom", schema="liver", label="lesion",
                           collection="ct")
    msg = str(e2.value)
    assert "model 'boom' (version 0.1) failed" in msg and "CUDA out of memory" in msg
    assert "nothing was stored" in msg
    with node.catalog().session() as s:
        assert store.query(s) == []


def test_a_model_with_several_labels_stores_only_the_asked_one(ct_case: CtCase,
                                                              extra_models: Any) -> None:
    node = ct_case.node
    with node.catalog().session() as s:
        with pytest.raises(AnnotationError, match=r"slicer.*unusable prediction.*LR-1, LR-2"):
            models.preannotate(s, node.store(), model="slicer", schema="liver",
                               label="lirads", series=[ct_case.series_uid],
                               params={"grade": "LR-9"})
        r = models.preannotate(s, node.store(), model="slicer", schema="liver",
                               label="lirads", series=[ct_case.series_uid])
        assert len(r.created) == 1 and "other labels (lesion)" in r.skipped[0]
        ann = store.get(s, r.created[0])
        rev = store.latest(s, ann)
        assert (ann.level, rev.data, rev.model_version) == ("study", {"value": "LR-4"}, "2.0")
        assert rev.provenance["score"] == 0.7
