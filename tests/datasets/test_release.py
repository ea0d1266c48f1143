"""Releases: immutable manifests, patient splits, restrictions honoured, diffs between versions."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from mida.annotations import store
from mida.catalog.models import DatasetRelease, ReleaseAnnotation, ReleaseSeries
from mida.datasets import cohort, release
from mida.errors import ConflictError, DatasetError, NotFoundError
from mida.node.fsck import fsck
from mida.sharing import restrictions
from tests.datasets.conftest import Cohort


def _create(c: Cohort, version: str = "1.0.0", name: str = "liver", **kw: Any) -> dict[str, Any]:
    kw.setdefault("expression", "modality = 'CT'")
    with c.node.catalog().session() as s:
        row = release.create(s, c.node.store(), name, version, **kw)
        s.commit()
        return release.load_manifest(c.node.store(), row)


def _splits(m: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for x in m["series"]:
        assert out.setdefault(x["patient"], x["split"]) == x["split"], "patient in two splits"
    return out


def test_manifest_lists_every_file_with_its_sha256(cohort_node: Cohort) -> None:
    c = cohort_node
    with c.node.catalog().session() as s:
        cohort.save(s, "ct", "modality = 'CT'")
        s.commit()
    m = _create(c, cohort=None, expression="modality = 'CT'", description="Liver CT")
    with c.node.catalog().session() as s:
        row = release.get(s, "liver@1.0.0")
        raw = c.node.store().get(row.manifest_sha256 or "")
        assert hashlib.sha256(raw).hexdigest() == row.manifest_sha256
        assert row.status == "ready" and row.counts == m["counts"]
        assert len(list(s.scalars(select(ReleaseSeries).where(
            ReleaseSeries.release_id == row.id)))) == 9
    assert (m["counts"]["patients"], m["counts"]["studies"], m["counts"]["series"],
            m["counts"]["instances"]) == (7, 9, 9, 36)
    files = [i for x in m["series"] for i in x["instances"]]
    assert len(files) == 36 and sum(f["size"] for f in files) == m["counts"]["bytes"]
    for f in files:
        assert hashlib.sha256(c.node.store().get(f["sha256"])).hexdigest() == f["sha256"]
    assert m["deid"] == [{"profile": "default", "profile_version": m["deid"][0]["profile_version"],
                          "key_id": m["deid"][0]["key_id"]}]
    import mida

    assert m["code_version"] == mida.__version__ and m["expression"] == "modality = 'CT'"
    # pinned: the 8 lesion masks and 7 LI-RADS classifications, all submitted revisions 1
    assert len(m["annotations"]) == 15 and {a["revision"] for a in m["annotations"]} == {1}
    assert {a["schema"] for a in m["annotations"]} == {"liver@1.0.0"}
    assert "liver@1.0.0" in m["schemas"]
    # no original identifier is in the manifest
    text = json.dumps(m)
    from tests.factories import PHI

    for v in PHI.values():
        assert str(v) not in text
    for pid in ("P1", "P2", "P3"):
        assert f'"{pid}"' not in text


def test_a_release_freezes_a_saved_cohort(cohort_node: Cohort) -> None:
    c = cohort_node
    with c.node.catalog().session() as s:
        cohort.save(s, "lesions", "has_label('lesion')")
        s.commit()
    m = _create(c, cohort="lesions", expression=None)
    assert m["cohort"] == "lesions" and m["counts"]["series"] == 4
    with pytest.raises(DatasetError, match="--cohort NAME"):
        _create(c, "2.0.0", cohort="lesions", expression="modality = 'CT'")
    with pytest.raises(DatasetError, match="selects no series"):
        _create(c, "2.0.0", expression="modality = 'US'")


def test_splits_are_by_patient_reproducible_and_seeded(cohort_node: Cohort) -> None:
    c = cohort_node
    a = _splits(_create(c, "1.0.0", split=release.parse_split("50/25/25", seed=7)))
    b = _splits(_create(c, "1.0.1", split=release.parse_split("50/25/25", seed=7)))
    other = _splits(_create(c, "1.0.2", split=release.parse_split("50/25/25", seed=8)))
    assert a == b  # same seed, same split (P1 and P2 have two studies each: one split)
    assert a != other
    assert set(a.values()) == {"train", "val", "test"}
    # the order key is a patient's own: adding patients does not move the others
    smaller = _splits(_create(c, "1.1.0", expression="modality = 'CT' and age >= 18",
                              split=release.parse_split("50/25/25", seed=7)))
    assert len(smaller) == 6


def test_assignment_follows_the_shares_within_each_stratum() -> None:
    spec = release.parse_split("70/15/15", stratify="grade", seed=1)
    strata = {f"S/{i}": ("hi" if i < 20 else "lo") for i in range(100)}
    got = release.assign_splits(strata, spec)
    for stratum, n in (("hi", 20), ("lo", 80)):
        keys = [k for k, v in strata.items() if v == stratum]
        counts = {sp: sum(got[k] == sp for k in keys) for sp in ("train", "val", "test")}
        assert counts == {"train": round(n * 0.7), "val": round(n * 0.15),
                          "test": n - round(n * 0.7) - round(n * 0.15)}, counts
    assert release.assign_splits(strata, spec) == got
    for bad in ("70/20", "50/50/10", "a/b", "60/30/5/5", "-10/110"):
        with pytest.raises(DatasetError, match="--split"):
            release.parse_split(bad)


def test_stratified_split_puts_each_grade_in_training_and_testing(cohort_node: Cohort) -> None:
    m = _create(cohort_node, split=release.parse_split("50/25/25", stratify="lirads", seed=3))
    strata: dict[str, set[str]] = {}
    for x in m["series"]:
        strata.setdefault(x["stratum"], set()).add(x["split"])
    assert set(strata) == {"LR-5", "LR-3"}
    for splits in strata.values():
        assert "train" in splits and len(splits) >= 2
    with pytest.raises(DatasetError, match="no pinned annotation has that label"):
        _create(cohort_node, "2.0.0", split=release.parse_split("70/15/15", stratify="nodule"))


def test_restricted_data_is_left_out_and_counted(cohort_node: Cohort) -> None:
    c = cohort_node
    with c.node.catalog().session() as s:
        restrictions.add(s, "series", c.series["P3"][0], "trade_secret", by="steward")
        restrictions.add(s, "patient", c.patient["P1"], "consent_withdrawn", by="steward")
        restrictions.add(s, "collection", "liver-b", "embargo", until=dt.date(2030, 1, 1))
        s.commit()
    m = _create(c, today=dt.date(2026, 12, 1))
    kept = {x["SeriesInstanceUID"] for x in m["series"]}
    assert kept == {c.series["P2"][0], c.series["P2"][1], c.series["P4"][0]}
    ex = m["counts"]["excluded"]
    assert ex["total"] == {"patients": 5, "studies": 6, "series": 6, "instances": 24}
    assert ex["by_reason"] == {
        "consent_withdrawn": {"patients": 1, "studies": 2, "series": 2, "instances": 8},
        "embargo": {"patients": 3, "studies": 3, "series": 3, "instances": 12},
        "trade_secret": {"patients": 1, "studies": 1, "series": 1, "instances": 4}}
    # the restricted series' annotations are not pinned either
    assert {a["SeriesInstanceUID"] for a in m["annotations"] if a["SeriesInstanceUID"]} <= kept
    # after the embargo, liver-b is releasable again; a lifted restriction no longer counts
    with c.node.catalog().session() as s:
        rid = next(r["id"] for r in restrictions.list_all(s) if r["reason"] == "trade_secret")
        restrictions.lift(s, rid, by="steward")
        s.commit()
        assert len(restrictions.list_all(s, include_lifted=True)) == 3
    m2 = _create(c, "1.1.0", today=dt.date(2030, 1, 1))
    assert m2["counts"]["series"] == 7 and list(m2["counts"]["excluded"]["by_reason"]) == [
        "consent_withdrawn"]


def test_restriction_input_errors(cohort_node: Cohort) -> None:
    with cohort_node.node.catalog().session() as s:
        with pytest.raises(DatasetError, match="unknown reason"):
            restrictions.add(s, "series", cohort_node.series["P3"][0], "secret")
        with pytest.raises(DatasetError, match="needs --until"):
            restrictions.add(s, "series", cohort_node.series["P3"][0], "embargo")
        with pytest.raises(NotFoundError, match="no study with UID"):
            restrictions.add(s, "study", "1.2.3", "contract")
        restrictions.add(s, "collection", "liver-a", "contract")
        with pytest.raises(ConflictError, match="already restricted"):
            restrictions.add(s, "collection", "liver-a", "contract")


def test_releases_are_immutable_and_diffable(cohort_node: Cohort) -> None:
    c = cohort_node
    m1 = _create(c, "1.0.0")
    with pytest.raises(ConflictError, match="immutable"):
        _create(c, "1.0.0")
    with c.node.catalog().session() as s:
        digest1 = release.get(s, "liver@1.0.0").manifest_sha256
        # an edit after the release is a new revision; the release keeps revision 1
        ann = next(a for a, _ in store.query(s, series_uid=c.series["P1"][0], reader="bob"))
        mask = store.load_mask(c.node.store(), store.latest(s, ann))
        store.revise(s, c.node.store(), ann, author="bob", mask=np.roll(mask, 1, axis=1),
                     status="reviewed")
        s.commit()
    m2 = _create(c, "1.1.0", expression="modality = 'CT' and age >= 18")
    with pytest.raises(ConflictError, match="must be higher"):
        _create(c, "1.0.5")
    with c.node.catalog().session() as s:
        old = release.get(s, "liver@1.0.0")
        assert old.manifest_sha256 == digest1
        assert release.load_manifest(c.node.store(), old) == m1
        assert release.get(s, "liver").version == "1.1.0"  # no version: the latest
        with pytest.raises(NotFoundError, match=r"has 1\.0\.0, 1\.1\.0"):
            release.get(s, "liver@9.9.9")
        pinned = s.scalars(select(ReleaseAnnotation.revision_id).where(
            ReleaseAnnotation.release_id == old.id))
        assert len(list(pinned)) == 15
    d = release.diff(m1, m2)
    assert d["series_removed"] == [c.series["P5"][0]] and d["series_added"] == []
    assert d["patients_removed"] == 1 and d["expression_changed"]
    assert [u for u, a, b in d["annotations_revised"]] == [ann.uid]
    assert d["annotations_revised"][0][1:] == [1, 2]
    assert d["counts"]["series"] == [9, 8]


def test_drafts_are_not_pinned_unless_asked(cohort_node: Cohort) -> None:
    c = cohort_node
    with c.node.catalog().session() as s:
        a = next(a for a, _ in store.query(s, series_uid=c.series["P2"][0], reader="alice",
                                           label="lesion"))
        store.revise(s, c.node.store(), a, author="alice", status="draft", comment="redo")
        s.commit()
    m = _create(c)
    assert a.uid not in {x["uid"] for x in m["annotations"]}
    m2 = _create(c, "1.0.1", statuses=("draft", *release.DEFAULT_STATUSES))
    assert a.uid in {x["uid"] for x in m2["annotations"]}


def test_fsck_keeps_manifests_and_masks(cohort_node: Cohort) -> None:
    _create(cohort_node)
    rep = fsck(cohort_node.node, repair=True, grace_seconds=0)
    assert rep.orphan_blobs == []
    with cohort_node.node.catalog().session() as s:
        row = s.scalar(select(DatasetRelease))
        assert row is not None
        release.load_manifest(cohort_node.node.store(), row)  # still there, sha256 checked


def test_names_and_versions_are_checked(cohort_node: Cohort) -> None:
    for name, version, words in (("liver ct", "1.0.0", "release name"),
                                 ("liver", "1.0", "semantic versioning"),
                                 ("liver", "v1.0.0", "semantic versioning")):
        with pytest.raises(DatasetError, match=words):
            _create(cohort_node, version, name=name)


def test_release_on_both_catalog_backends(cohort_any: Cohort) -> None:
    m = _create(cohort_any, split=release.parse_split("70/15/15", stratify="lirads", seed=1))
    assert m["counts"]["series"] == 9 and len(_splits(m)) == 7
    with cohort_any.node.catalog().session() as s:
        restrictions.add(s, "patient", cohort_any.patient["P2"], "personal_data")
        s.commit()
    m2 = _create(cohort_any, "2.0.0")
    assert m2["counts"]["excluded"]["by_reason"]["personal_data"]["series"] == 2
    assert release.diff(m, m2)["patients_removed"] == 1
