"""Attribution: each institution's share of a release, from its manifest."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mida.catalog.models import Collection, Institution
from mida.datasets import release
from mida.datasets.attribution import attribution, from_manifest
from mida.errors import NotFoundError
from tests.datasets.conftest import Cohort


def test_each_institution_gets_its_share(cohort_node: Cohort) -> None:
    """liver-a (P1-P4, P1 and P2 with two studies) stays at TEST; liver-b moves to NTUH."""
    c = cohort_node
    with c.node.catalog().session() as s:
        other = Institution(code="NTUH", name="National Taiwan University Hospital",
                            key_id="x" * 16)
        s.add(other)
        s.flush()
        for coll in s.scalars(select(Collection)):
            if coll.name == "liver-b":
                coll.institution_id = other.id
                coll.license = "CC-BY-4.0"
                coll.citation = "NTUH liver CT, 2025."
                coll.contributors = ["Dr. Chen"]
        release.create(s, c.node.store(), "liver", "1.0.0", expression="modality = 'CT'")
    with c.node.catalog().session() as s:
        rep = attribution(s, c.node.store(), "liver@1.0.0")
        latest = attribution(s, c.node.store(), "liver")
        with pytest.raises(NotFoundError):
            attribution(s, c.node.store(), "nope@1.0.0")
    assert latest == rep
    assert rep["release"] == "liver@1.0.0"
    assert {k: rep["totals"][k] for k in ("patients", "studies", "series", "instances",
                                          "annotations")} == {
        "patients": 7, "studies": 9, "series": 9, "instances": 36, "annotations": 15}
    by = {i["code"]: i for i in rep["institutions"]}
    assert list(by) == ["NTUH", "TEST"]
    test, ntuh = by["TEST"], by["NTUH"]
    # TEST: 4 patients, 6 CT studies; 2 lesion masks + 1 LI-RADS on each patient
    assert (test["patients"], test["studies"], test["series"], test["instances"],
            test["annotations"]) == (4, 6, 6, 24, 12)
    assert (ntuh["patients"], ntuh["studies"], ntuh["series"], ntuh["instances"],
            ntuh["annotations"]) == (3, 3, 3, 12, 3)
    assert test["share"]["patients"] == round(4 / 7, 4)
    assert ntuh["share"]["annotations"] == round(3 / 15, 4)
    for k in ("patients", "studies", "series", "annotations", "bytes"):
        assert abs(test["share"][k] + ntuh["share"][k] - 1) < 1e-3
    assert test["readers"] == ["alice", "bob"] and ntuh["readers"] == ["alice"]
    assert ntuh["name"] == "National Taiwan University Hospital"
    assert ntuh["collections"] == [{"name": "liver-b", "license": "CC-BY-4.0",
                                    "citation": "NTUH liver CT, 2025.",
                                    "contributors": ["Dr. Chen"]}]


def test_counts_come_from_the_manifest_alone() -> None:
    manifest = {
        "series": [
            {"institution": "A", "patient": "A/p1", "StudyInstanceUID": "s1",
             "SeriesInstanceUID": "x1", "collection": "c1",
             "instances": [{"size": 10}, {"size": 5}]},
            {"institution": "A", "patient": "A/p1", "StudyInstanceUID": "s1",
             "SeriesInstanceUID": "x2", "collection": "c1", "instances": [{"size": 1}]},
            {"institution": "B", "patient": "B/p1", "StudyInstanceUID": "s2",
             "SeriesInstanceUID": "x3", "collection": "c2", "instances": [{"size": 2}]},
        ],
        "annotations": [{"StudyInstanceUID": "s1", "SeriesInstanceUID": None, "reader": "r1"},
                        {"StudyInstanceUID": "s2", "SeriesInstanceUID": "x3", "reader": "r2"}],
    }
    got = from_manifest(manifest)
    assert got["A"] == {"patients": 1, "studies": 1, "series": 2, "instances": 3, "bytes": 16,
                        "annotations": 1, "collections": ["c1"], "readers": ["r1"]}
    assert got["B"]["patients"] == 1 and got["B"]["annotations"] == 1
