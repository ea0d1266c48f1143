"""Multi-reader tasks: balanced worklists, blinding, review, disagreement, adjudication."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.uid import ComprehensiveSRStorage, generate_uid
from sqlalchemy.orm import Session

from mida.annotations import models, store, tasks
from mida.annotations.geometry import series_geometry
from mida.annotations.schema import parse_schema
from mida.catalog.models import Series
from mida.deid.pseudonyms import Pseudonymizer
from mida.errors import AnnotationError, ConflictError, NotFoundError
from mida.ingest import ingest_paths
from mida.node import Node
from mida.sharing import identity
from tests.annotations.conftest import SCHEMA
from tests.factories import make_dataset, write, write_ct_series

PEOPLE = {"ann": "annotator", "bob": "annotator", "cat": "annotator", "dan": "annotator",
          "rev": "steward", "adj": "steward", "off": "annotator"}


@dataclass
class Room:
    node: Node
    series: list[str]  # catalog UIDs of the CT series
    truth: np.ndarray  # the sphere, the same in every series
    sr_series: str


@pytest.fixture
def room(node: Node, tmp_path: Path) -> Room:
    return _make_room(node, tmp_path)


@pytest.fixture
def any_room(any_node: Node, tmp_path: Path) -> Room:
    """The room on each catalog backend (SQLite and PostgreSQL)."""
    return _make_room(any_node, tmp_path)


def _make_room(node: Node, tmp_path: Path) -> Room:
    """Four CT series (two studies) and an SR series in collection ct; users; the schema."""
    infos = []
    study = generate_uid()
    for i in range(4):
        infos.append(write_ct_series(tmp_path / "in" / f"ct{i}", slices=4, size=16,
                                     study_uid=study if i < 2 else None, SeriesNumber=i + 1))
    sr = make_dataset(Modality="SR", SOPClassUID=ComprehensiveSRStorage, PixelData=None,
                      Rows=None, Columns=None, BitsAllocated=None, BitsStored=None,
                      HighBit=None, PixelRepresentation=None, SamplesPerPixel=None,
                      PhotometricInterpretation=None, RescaleIntercept=None,
                      RescaleSlope=None, StudyInstanceUID=study, SeriesNumber=9)
    write(tmp_path / "in" / "sr.dcm", sr)
    summary = ingest_paths(node, [tmp_path / "in"], "ct", workers=1)
    assert summary.stored == 17, summary
    p = Pseudonymizer(node.key())
    with node.catalog().session() as s:
        store.add_schema(s, parse_schema(SCHEMA))
        for name, role in PEOPLE.items():
            identity.add_user(s, name, role)
        identity.set_disabled(s, "off", True)
    return Room(node, [p.uid(i["series"]) for i in infos], infos[0]["truth"],
                p.uid(sr.SeriesInstanceUID))


def _create(s: Session, name: str = "t", **kw: Any) -> tasks.AnnotationTask:
    args: dict[str, Any] = {"name": name, "collection": "ct", "schema": "liver",
                            "readers": ["ann", "bob", "cat"], "per_case": 2, "seed": 7}
    args.update(kw)
    return tasks.create_task(s, **args)


def _plan(s: Session, task: tasks.AnnotationTask) -> list[tuple[str, list[str]]]:
    out = []
    for c in tasks.task_cases(s, task):
        series = s.get(Series, c.series_id)
        assert series is not None
        out.append((series.SeriesInstanceUID, tasks.case_readers(s, c)))
    return out


def test_balanced_assignment_for_many_shapes() -> None:
    for seed in range(20):
        rng = random.Random(seed)
        n_readers = rng.randint(1, 7)
        readers = [f"r{i}" for i in range(n_readers)]
        per_case = rng.randint(1, n_readers)
        n_cases = rng.randint(0, 40)
        plan = tasks.balanced_assignment(n_cases, readers, per_case, random.Random(seed))
        assert len(plan) == n_cases
        assert all(len(set(who)) == per_case for who in plan)
        load = Counter(r for who in plan for r in who)
        counts = [load.get(r, 0) for r in readers]
        assert max(counts) - min(counts) <= 1, (seed, counts)
        assert plan == tasks.balanced_assignment(n_cases, readers, per_case,
                                                 random.Random(seed))


def test_worklist_of_image_series_balanced_and_reproducible(room: Room) -> None:
    with room.node.catalog().session() as s:
        t = _create(s)
        plan = _plan(s, t)
        assert sorted(uid for uid, _ in plan) == sorted(room.series)  # the SR is no case
        assert room.sr_series not in {uid for uid, _ in plan}
        load = Counter(r for _, who in plan for r in who)
        assert sorted(load.values()) == [2, 3, 3]  # 4 cases x 2 readers over 3 readers
        assert all(len(set(who)) == 2 for _, who in plan)
        same = _create(s, "t-again")
        assert _plan(s, same) == plan  # same seed, same worklist
        assert tasks.summary(s, t)["seed"] == 7
        drawn = _create(s, "t-drawn", seed=None)
        assert isinstance(tasks.summary(s, drawn)["seed"], int)
        # a filter narrows the cases; one that matches nothing is refused
        first = _create(s, "t-first", series_filter=tasks.parse_filter(["SeriesNumber=1"]),
                        per_case=1)
        assert len(tasks.task_cases(s, first)) == 1
        with pytest.raises(AnnotationError, match="no image series matching"):
            _create(s, "t-mr", series_filter={"Modality": "MR"})
        with pytest.raises(AnnotationError, match="cannot filter series by 'PatientName'"):
            tasks.parse_filter(["PatientName=x"])


def test_task_creation_errors_are_clear(room: Room) -> None:
    with room.node.catalog().session() as s:
        with pytest.raises(NotFoundError, match=r"no user named 'zed'.*mida users add"):
            _create(s, readers=["ann", "zed"])
        with pytest.raises(AnnotationError, match="'off' is disabled"):
            _create(s, readers=["ann", "off"], per_case=1)
        with pytest.raises(AnnotationError, match="between 1 and the number of readers"):
            _create(s, per_case=4)
        with pytest.raises(AnnotationError, match="ann cannot be both reader and reviewer"):
            _create(s, reviewers=["ann"])
        with pytest.raises(NotFoundError, match="no collection 'mr'"):
            _create(s, collection="mr")
        _create(s)
        with pytest.raises(ConflictError, match="already exists"):
            _create(s)


def _case_of(s: Session, task: tasks.AnnotationTask, reader: str,
             exclude: tuple[int, ...] = ()) -> tasks.TaskCase:
    return next(c for c in tasks.task_cases(s, task)
                if reader in tasks.case_readers(s, c)
                and c.position not in exclude)


def test_blinded_readers_see_only_their_own_annotations(room: Room) -> None:
    node = room.node
    with node.catalog().session() as s:
        blind = _create(s, readers=["ann", "bob"], per_case=2)
        open_ = _create(s, "open", readers=["ann", "bob"], per_case=2, blinded=False)
        for t in (blind, open_):
            c = tasks.get_case(s, t, 1)
            tasks.annotate(s, node.store(), t, c, reader="ann", label="lirads",
                           data={"value": "LR-3"})
            tasks.annotate(s, node.store(), t, c, reader="bob", label="lirads",
                           data={"value": "LR-4"})
        c = tasks.get_case(s, blind, 1)
        seen = tasks.case_annotations(s, blind, c, "ann")
        assert [(v["reader"], v["data"]["value"]) for v in seen] == [("ann", "LR-3")]
        everyone = tasks.case_annotations(s, blind, c, None)
        assert sorted(v["reader"] for v in everyone) == ["ann", "bob"]
        c2 = tasks.get_case(s, open_, 1)
        assert sorted(v["reader"] for v in tasks.case_annotations(s, open_, c2, "ann")) == [
            "ann", "bob"]
        # the store's own view hides the other reader's name
        a, r = next((a, r) for a, r in tasks.case_annotations_raw(s, blind, c)
                    if a.reader == "bob")
        assert store.view(s, a, r, blinded_for="ann")["reader"] == "(blinded)"


def _mask(room: Room, cut: int = 0) -> np.ndarray:
    m = room.truth.copy()
    if cut:
        m[:, :, : room.truth.shape[2] // 2 + cut] = False
    return m


def _read(s: Session, room: Room, t: tasks.AnnotationTask, c: tasks.TaskCase, reader: str,
          grade: str | None = None, mask: np.ndarray | None = None) -> dict[str, object]:
    """A reader's drafts, then their submission of the case."""
    if grade is not None:
        tasks.annotate(s, room.node.store(), t, c, reader=reader,
                       label="lirads", data={"value": grade})
    if mask is not None:
        tasks.annotate(s, room.node.store(), t, c, reader=reader,
                       label="lesion", mask=mask)
    return tasks.submit(s, room.node.store(), t, c, reader)


def test_agreeing_readers_finish_the_case_and_disagreeing_ones_go_to_adjudication(
        any_room: Room) -> None:
    room = any_room
    node = room.node
    with node.catalog().session() as s:
        t = _create(s, readers=["ann", "bob"], per_case=2)
        c1, c2, c3 = (tasks.get_case(s, t, n) for n in (1, 2, 3))
        # case 1: the same grade and the same mask -> done
        for r in ("ann", "bob"):
            tasks.annotate(s, node.store(), t, c1, reader=r, label="lesion", mask=_mask(room))
            tasks.annotate(s, node.store(), t, c1, reader=r, label="lirads",
                           data={"value": "LR-4"}, status="submitted")
        assert c1.state == "reading"  # the masks are still drafts
        assert tasks.submit(s, node.store(), t, c1, "ann")["case_state"] == "reading"
        assert tasks.submit(s, node.store(), t, c1, "bob")["case_state"] == "done"
        # case 2: both find nothing -> done
        assert tasks.submit(s, node.store(), t, c2, "ann")["nothing_found"] is True
        tasks.submit(s, node.store(), t, c2, "bob")
        assert c2.state == "done"
        # case 3: the grades differ and the masks overlap little -> adjudication
        half = _mask(room, cut=1)
        _read(s, room, t, c3, "ann", "LR-3", _mask(room))
        _read(s, room, t, c3, "bob", "LR-5", half)
        assert c3.state == "adjudication"
        reasons = tasks.disagreements(s, node.store(), t, c3)
        assert "lirads: ann LR-3, bob LR-5" in reasons
        assert any(x.startswith("lesion: Dice ann-bob") and x.endswith("< 0.70")
                   for x in reasons)
        prog = tasks.progress(s, node.store(), t)
        assert prog["by_state"] == {"reading": 1, "review": 0, "adjudication": 1, "done": 2}
        assert [c["case"] for c in prog["adjudication"]] == [3]
        ann_row = next(p for p in prog["progress"] if p["reader"] == "ann")
        assert ann_row["step"] == "read" and ann_row["done"] == 3 and ann_row["assigned"] == 1
        # adjudication: not by a reader of the case; a tie has no consensus
        with pytest.raises(AnnotationError, match="'ann' read case 3"):
            tasks.adjudicate(s, node.store(), t, c3, by="ann", accept="bob")
        with pytest.raises(AnnotationError, match="no consensus for label 'lirads': a tie "
                                                  "between LR-3 \\(1\\), LR-5 \\(1\\)"):
            tasks.adjudicate(s, node.store(), t, c3, by="adj", consensus=True)
        before = {a.uid: len(store.history(s, a))
                  for a, _ in tasks.case_annotations_raw(s, t, c3)}
        out = tasks.adjudicate(s, node.store(), t, c3, by="adj", accept="bob",
                               comment="bob's margin matches the arterial phase")
        assert c3.state == "done" and len(out["created"]) == 2
        made = [(store.get(s, u), store.latest(s, store.get(s, u))) for u in out["created"]]
        assert all(a.reader == "adj" and r.status == "adjudicated" for a, r in made)
        grade = next(r for a, r in made if a.label == "lirads")
        lesion = next(r for a, r in made if a.label == "lesion")
        assert grade.data == {"value": "LR-5"}
        assert np.array_equal(store.load_mask(node.store(), lesion), half)
        assert lesion.provenance["method"] == "accept" and lesion.provenance["reader"] == "bob"
        # the readers' annotations were not touched
        for a, _ in tasks.case_annotations_raw(s, t, c3):
            if a.uid in before:
                assert len(store.history(s, a)) == before[a.uid]
        with pytest.raises(AnnotationError, match="case 3 is in done"):
            tasks.adjudicate(s, node.store(), t, c3, by="adj", consensus=True)


def test_consensus_adjudication_votes_labels_and_staples_masks(room: Room) -> None:
    node = room.node
    with node.catalog().session() as s:
        t = _create(s, readers=["ann", "bob", "cat"], per_case=3, dice_threshold=0.9,
                    adjudicators=["adj", "rev"])
        c = tasks.get_case(s, t, 1)
        partial = _mask(room, cut=1)
        for r, grade, m in (("ann", "LR-4", _mask(room)), ("bob", "LR-4", _mask(room)),
                            ("cat", "LR-3", partial)):
            _read(s, room, t, c, r, grade, m)
        assert c.state == "adjudication"
        queue = tasks.worklist(s, node.store(), "adj", t)
        assert [(w["case"], w["step"]) for w in queue] == [(1, "adjudicate")]
        with pytest.raises(AnnotationError, match="'dan' is not an adjudicator"):
            tasks.adjudicate(s, node.store(), t, c, by="dan", consensus=True)
        out = tasks.adjudicate(s, node.store(), t, c, by="adj", consensus=True)
        assert tasks.worklist(s, node.store(), "adj", t) == []
        made = {store.get(s, u).label: store.latest(s, store.get(s, u)) for u in out["created"]}
        assert made["lirads"].data == {"value": "LR-4"}
        assert made["lirads"].provenance["votes"]["counts"] == {"LR-4": 2, "LR-3": 1}
        assert np.array_equal(store.load_mask(node.store(), made["lesion"]), room.truth)
        perf = made["lesion"].provenance["readers"]
        covered = partial.sum() / room.truth.sum()
        assert perf["cat"]["sensitivity"] == pytest.approx(covered, abs=1e-3)
        assert perf["ann"]["sensitivity"] == pytest.approx(1.0, abs=1e-3)
        assert c.state == "done"


def test_review_accepts_or_returns_work_with_a_comment(room: Room) -> None:
    node = room.node
    with node.catalog().session() as s:
        t = _create(s, readers=["ann", "bob"], per_case=2, reviewers=["rev"])
        c = tasks.get_case(s, t, 1)
        for r in ("ann", "bob"):
            tasks.annotate(s, node.store(), t, c, reader=r, label="lirads",
                           data={"value": "LR-2"}, status="submitted")
        assert c.state == "review"
        queue = tasks.worklist(s, node.store(), "rev", t)
        assert [(w["case"], w["step"]) for w in queue] == [(1, "review")]
        with pytest.raises(AnnotationError, match="needs a comment"):
            tasks.review(s, node.store(), t, c, reviewer="rev", accept=False, reader="ann")
        with pytest.raises(AnnotationError, match="'adj' is not a reviewer"):
            tasks.review(s, node.store(), t, c, reviewer="adj", accept=True)
        tasks.review(s, node.store(), t, c, reviewer="rev", accept=False, reader="ann",
                     comment="grade the arterial phase, not the delayed one")
        assert c.state == "reading"
        mine = [w for w in tasks.worklist(s, node.store(), "ann", t) if w["case"] == 1]
        assert mine[0]["returned"] == "grade the arterial phase, not the delayed one"
        a, latest = next((a, r) for a, r in tasks.case_annotations_raw(s, t, c)
                         if a.reader == "ann")
        assert latest.status == "draft" and latest.author == "rev"
        assert "arterial" in latest.comment
        assert [x.status for x in store.history(s, a)] == ["submitted", "draft"]
        store.revise(s, node.store(), a, author="ann", data={"value": "LR-3"})
        tasks.submit(s, node.store(), t, c, "ann")
        assert c.state == "review"
        assert not [w for w in tasks.worklist(s, node.store(), "ann", t) if w["case"] == 1]
        tasks.review(s, node.store(), t, c, reviewer="rev", accept=True)
        statuses = {a.reader: r.status for a, r in tasks.case_annotations_raw(s, t, c)}
        assert statuses == {"ann": "reviewed", "bob": "reviewed"}
        # reviewed, but LR-3 against LR-2: adjudication
        assert c.state == "adjudication"
        assert tasks.worklist(s, node.store(), "rev", t) == []


def test_worklists_show_each_readers_open_cases(room: Room) -> None:
    node = room.node
    with node.catalog().session() as s:
        t = _create(s, readers=["ann", "bob"], per_case=1)
        ann_cases = [w["case"] for w in tasks.worklist(s, node.store(), "ann")]
        bob_cases = [w["case"] for w in tasks.worklist(s, node.store(), "bob", t)]
        assert sorted(ann_cases + bob_cases) == [1, 2, 3, 4] and len(ann_cases) == 2
        first = tasks.get_case(s, t, ann_cases[0])
        with pytest.raises(AnnotationError, match="'bob' is not a reader of case"):
            tasks.submit(s, node.store(), t, first, "bob")
        tasks.submit(s, node.store(), t, first, "ann")
        assert [w["case"] for w in tasks.worklist(s, node.store(), "ann", t)] == ann_cases[1:]
        assert first.state == "done"  # a single reader cannot disagree
        for n in ann_cases[1:]:
            tasks.submit(s, node.store(), t, tasks.get_case(s, t, n), "ann")
        assert t.state == "open"
        for n in bob_cases:
            tasks.submit(s, node.store(), t, tasks.get_case(s, t, n), "bob")
        assert t.state == "done"  # every case is done
        with pytest.raises(NotFoundError, match=r"has no case 9; its cases are 1\.\.4"):
            tasks.get_case(s, t, 9)
        with pytest.raises(NotFoundError, match="no annotation task 'nope'"):
            tasks.get_task(s, "nope")


def test_agreement_report_over_a_task(room: Room) -> None:
    node = room.node
    with node.catalog().session() as s:
        t = _create(s, readers=["ann", "bob"], per_case=2)
        grades = {1: ("LR-3", "LR-3"), 2: ("LR-4", "LR-4"), 3: ("LR-5", "LR-4"),
                  4: ("LR-2", "LR-2")}
        half = _mask(room, cut=1)
        for n, (ga, gb) in grades.items():
            c = tasks.get_case(s, t, n)
            _read(s, room, t, c, "ann", ga, _mask(room) if n == 1 else None)
            _read(s, room, t, c, "bob", gb, half if n == 1 else None)
        rep = tasks.agreement_report(s, node.store(), t)
        g = series_geometry(s, room.series[0])
    pair = rep["labels"]["lirads"]["pairs"][0]
    # 3 of 4 agree; ann: LR-2, LR-3, LR-4, LR-5 once each; bob: LR-2, LR-3 once, LR-4 twice
    po, pe = 3 / 4, (1 * 1 + 1 * 1 + 1 * 2 + 1 * 0) / 16
    assert pair["cases"] == 4 and pair["kappa"] == pytest.approx((po - pe) / (1 - pe))
    lesion = rep["labels"]["lesion"]
    assert lesion["pairs"][0]["cases"] == 1
    expected = 2 * half.sum() / (room.truth.sum() + half.sum())
    assert lesion["pairs"][0]["dice_mean"] == pytest.approx(expected, abs=1e-6)
    assert lesion["cases"][0]["pairs"][0]["hd95_mm"] is not None
    assert g.spacing[0] == pytest.approx(2.5)
    assert set(lesion["vs_consensus"]) == {"ann", "bob"}


def test_readers_adopt_model_preannotations_and_the_drafts_stay(room: Room) -> None:
    node = room.node
    with node.catalog().session() as s:
        t = _create(s, readers=["ann", "bob"], per_case=2)
        made = models.preannotate(s, node.store(), model="threshold", schema="liver",
                                  label="lesion", task="t")
        assert len(made.created) == 4
        c = tasks.get_case(s, t, 1)
        seen = tasks.case_annotations(s, t, c, "ann")
        assert [v["reader_kind"] for v in seen] == ["model"]
        draft = seen[0]
        assert draft["reader"] == "threshold" and draft["status"] == "draft"
        for reader in ("ann", "bob"):
            mine = tasks.adopt(s, node.store(), t, c, reader=reader, uid=draft["uid"])
            assert mine.provenance["from"] == {"annotation": draft["uid"], "revision": 1,
                                               "model": "threshold", "version": "1"}
            assert np.array_equal(store.load_mask(node.store(), mine), room.truth)
            tasks.submit(s, node.store(), t, c, reader)
        assert c.state == "done"  # both readers took the same mask
        model_ann = store.get(s, draft["uid"])
        assert [r.status for r in store.history(s, model_ann)] == ["draft"]
        with pytest.raises(AnnotationError, match="not a model pre-annotation of case 2"):
            tasks.adopt(s, node.store(), t, tasks.get_case(s, t, 2), reader="ann",
                        uid=draft["uid"])
