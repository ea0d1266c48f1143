"""Consent withdrawal: out of the next release and of re-run exports; past releases listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mida.datasets import release
from mida.datasets.export import export
from mida.errors import ConflictError, NotFoundError
from mida.node import Node
from mida.sharing import AuditLog, consent
from tests.datasets.conftest import Cohort, build_cohort


@pytest.fixture
def cohort(node: Node, tmp_path: Path) -> Cohort:
    """The eight-patient, two-collection node of tests/datasets (P1 has two CT studies)."""
    return build_cohort(node, tmp_path)


def _release(c: Cohort, name: str, version: str, where: str) -> None:
    with c.node.catalog().session() as s:
        release.create(s, c.node.store(), name, version, expression=where)


def test_withdrawal_lists_past_releases_and_keeps_the_patient_out(
        cohort: Cohort, tmp_path: Path) -> None:
    c = cohort
    _release(c, "liver", "1.0.0", "modality = 'CT'")
    _release(c, "liver", "1.1.0", "modality = 'CT' and age >= 18")
    _release(c, "mr", "1.0.0", "modality = 'MR'")  # P8 only: must not be listed
    p1 = c.patient["P1"]
    log = AuditLog(c.node.settings.audit_file, fsync=False)
    with c.node.catalog().session() as s:
        w = consent.withdraw(s, p1, by="steward", note="letter filed as C-17", audit=log)
    assert w.patient == p1
    assert [(r["release"], r["series"]) for r in w.releases] == [("liver@1.0.0", 2),
                                                                 ("liver@1.1.0", 2)]
    with c.node.catalog().session() as s:
        assert consent.releases_with(s, p1) == w.releases
        assert consent.releases_with(s, c.patient["P8"])[0]["release"] == "mr@1.0.0"
        assert consent.releases_with(s, "PNOBODY") == []

    # the next release leaves the patient out and counts them
    _release(c, "liver", "2.0.0", "modality = 'CT'")
    with c.node.catalog().session() as s:
        m = release.load_manifest(c.node.store(), release.get(s, "liver@2.0.0"))
    assert p1 not in {x["PatientID"] for x in m["series"]}
    assert m["counts"]["patients"] == 6
    assert m["counts"]["excluded"]["by_reason"]["consent_withdrawn"]["series"] == 2

    # an export of the older release, run now, leaves the patient's series out too
    with c.node.catalog().session() as s:
        res = export(s, c.node.store(), release.get(s, "liver@1.0.0"), ["dicom"],
                     tmp_path / "old-export")
    gone = set(c.series["P1"])
    assert res.report["series"] == 7
    assert res.report["excluded"]["by_reason"] == {"consent_withdrawn": 2}
    paths = [f["path"] for f in res.report["files"]]
    assert paths and not [p for p in paths if any(uid in p for uid in gone)]
    kept = set(c.series["P2"])
    assert [p for p in paths if any(uid in p for uid in kept)]

    entry = next(e for e in log.entries() if e["action"] == "consent.withdraw")
    assert entry["actor"] == "steward"
    assert entry["detail"] == {"patient": p1, "restriction": w.restriction_id,
                               "releases": [{"release": "liver@1.0.0", "series": 2},
                                            {"release": "liver@1.1.0", "series": 2}]}
    assert log.verify() == []
    assert "A123456789" not in json.dumps(log.entries())


def test_withdrawing_twice_or_an_unknown_patient_is_refused(cohort: Cohort) -> None:
    c = cohort
    log = AuditLog(c.node.settings.audit_file, fsync=False)
    with c.node.catalog().session() as s:
        w = consent.withdraw(s, c.patient["P2"], by="steward", audit=log)
    assert w.releases == []
    with c.node.catalog().session() as s, pytest.raises(ConflictError, match="already"):
        consent.withdraw(s, c.patient["P2"], by="steward", audit=log)
    with c.node.catalog().session() as s, pytest.raises(NotFoundError):
        consent.withdraw(s, "PNOBODY", by="steward", audit=log)
    assert [e["action"] for e in log.entries()] == ["consent.withdraw"]
