"""Multi-reader annotation tasks: worklists, reading, review, adjudication.

A task is a worklist over a collection's image series (one *case* per series;
SEG, RTSTRUCT, SR, presentation states and key-object notes are not cases),
read with one label schema. Each case goes to ``per_case`` of the task's
readers, balanced — every reader gets within one case of the same number —
and reproducibly: the reading order and the choice among equally loaded
readers come from a seeded random generator, so the same seed over the same
series gives the same worklist (a task made without a seed draws one and
records it in ``options.seed``). Readers, reviewers and adjudicators must be
existing users (``mida users add``); reviewers and adjudicators may not also
be readers of the task.

A case moves through these states::

    reading --(every reader submitted)--> review        (task has reviewers)
                                     \\--> adjudication (readers disagree)
                                      \\-> done
    review  --(all readers accepted)--> adjudication | done
    review  --(a reader's work returned)--> reading
    adjudication --(adjudicated)--> done

**Reading.** A reader annotates the case's series (or its study, for
study-level labels) with ``task_id`` set (:func:`annotate`, or any tool that
calls :func:`mida.annotations.store.create` with the task), or takes a model's
pre-annotation of the case as their own (:func:`adopt`). A reader has
*submitted* the case when all their annotations in it have status
``submitted`` (or ``reviewed``), or after :func:`submit` (``mida tasks submit
T --case N --reader a``), which submits their drafts and, when they drew
nothing, records an explicit *nothing found* for the case. So annotate as
drafts and submit the case once, when finished: a reader whose only
annotations are already submitted counts as done with the case.

**Blinding** (the default): a reader of a case sees only their own
annotations in it, and the task's model pre-annotations
(:func:`case_annotations`); other readers' are left out, and
:func:`mida.annotations.store.view` with ``blinded_for`` hides their names
wherever they are listed. Reviewers and adjudicators see every reader's work
with names. ``--unblinded`` tasks show everyone everything.

**Disagreement** between readers of a case, label by label: a classification
label where the readers' values differ (a reader who gave none differs from
one who did); a mask label where any pair of readers' masks (a reader's masks
of one label are united; no mask is an empty mask) has a Dice below the
task's ``dice_threshold`` (default 0.7); any other label where the readers
marked different numbers of annotations.

**Review** (tasks with ``--reviewers``): one reviewer per case, the least
loaded. Accepting a reader's work revises each of their annotations in the
case to ``reviewed``; returning it (a comment is required) revises them back
to ``draft`` with the comment and sends the case back to reading.

**Adjudication**: an adjudicator (not a reader of the case) either accepts
one reader's annotations or takes the consensus (majority vote for
classification labels, STAPLE for masks: :mod:`mida.annotations.consensus`).
Either way new annotations are created, with the adjudicator as reader and
status ``adjudicated``; the readers' annotations are never changed.
"""

from __future__ import annotations

import fnmatch
import random
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session

from mida.annotations import agreement as agr
from mida.annotations import store as ann_store
from mida.annotations.consensus import majority_vote, staple
from mida.annotations.geometry import NON_IMAGE_CLASSES, geometry_of_series
from mida.annotations.schema import Schema
from mida.catalog.models import (
    Annotation,
    AnnotationRevision,
    AnnotationTask,
    Collection,
    Instance,
    LabelSchema,
    Series,
    Study,
    TaskAssignment,
    TaskCase,
)
from mida.deid.freetext import FreeTextCleaner
from mida.errors import AnnotationError, ConflictError, NotFoundError
from mida.sharing.identity import get_user
from mida.storage.blobstore import BlobStore

CASE_STATES = ("reading", "review", "adjudication", "done")
STEPS = ("read", "review", "adjudicate")
ASSIGNMENT_STATES = ("assigned", "in_progress", "submitted", "done")
#: Series of these modalities hold annotations or documents, not images to read.
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "SR", "PR", "KO", "REG", "RWV"})
#: ``--series-filter KEY=VALUE`` keys (VALUE may use * and ? wildcards).
FILTER_FIELDS = ("Modality", "BodyPartExamined", "SeriesDescription", "SeriesNumber",
                 "Manufacturer", "StudyDescription")
DEFAULT_DICE_THRESHOLD = 0.7
SUBMITTED = ("submitted", "reviewed")
_cleaner = FreeTextCleaner()


# ----------------------------------------------------------------- creating

def parse_filter(pairs: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs of a series filter; keys are :data:`FILTER_FIELDS`."""
    out: dict[str, str] = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise AnnotationError(f"a series filter is KEY=VALUE, not {p!r}")
        if k not in FILTER_FIELDS:
            raise AnnotationError(f"cannot filter series by {k!r}: use one of "
                                  + ", ".join(FILTER_FIELDS))
        out[k] = v
    return out


def image_series(s: Session, collection_id: int,
                 series_filter: dict[str, str] | None = None) -> list[Series]:
    """The collection's image series, in (study UID, series number, series UID) order."""
    has_image = exists().where(Instance.series_id == Series.id,
                               Instance.SOPClassUID.not_in(sorted(NON_IMAGE_CLASSES)))
    rows = s.execute(
        select(Series, Study).join(Study, Study.id == Series.study_id)
        .where(Study.collection_id == collection_id, has_image)
    ).all()
    out = []
    for series, study in rows:
        if (series.Modality or "").upper() in NON_IMAGE_MODALITIES:
            continue
        ok = True
        for key, pattern in (series_filter or {}).items():
            obj = study if key == "StudyDescription" else series
            value = getattr(obj, key)
            if value is None or not fnmatch.fnmatchcase(str(value), pattern):
                ok = False
                break
        if ok:
            out.append((study.StudyInstanceUID, series.SeriesNumber or 0,
                        series.SeriesInstanceUID, series))
    return [t[3] for t in sorted(out, key=lambda t: t[:3])]


def _users(s: Session, names: Sequence[str], role: str) -> list[str]:
    out: list[str] = []
    for n in names:
        n = n.strip()
        if not n:
            continue
        user = get_user(s, n)
        if user.disabled:
            raise AnnotationError(f"user {n!r} is disabled and cannot be a {role}")
        if n not in out:
            out.append(n)
    return out


def balanced_assignment(n_cases: int, readers: Sequence[str], per_case: int,
                        rng: random.Random) -> list[list[str]]:
    """``per_case`` distinct readers for each case; loads differ by at most one.

    Each case goes to the least-loaded readers; among equally loaded ones the
    generator decides.
    """
    load = dict.fromkeys(readers, 0)
    out = []
    for _ in range(n_cases):
        ties = {r: rng.random() for r in readers}
        chosen = sorted(readers, key=lambda r: (load[r], ties[r]))[:per_case]
        for r in chosen:
            load[r] += 1
        out.append(sorted(chosen, key=readers.index))
    return out


def create_task(s: Session, *, name: str, collection: str, schema: str,
                readers: Sequence[str], per_case: int = 1, reviewers: Sequence[str] = (),
                adjudicators: Sequence[str] = (), blinded: bool = True,
                series_filter: dict[str, str] | None = None, seed: int | None = None,
                dice_threshold: float = DEFAULT_DICE_THRESHOLD,
                created_by: str | None = None) -> AnnotationTask:
    """Build a task's worklist and assign its cases (see the module docstring)."""
    if not name or len(name) > 128:
        raise AnnotationError("a task name of 1 to 128 characters is needed")
    if s.scalars(select(AnnotationTask.id).where(AnnotationTask.name == name)).first():
        raise ConflictError(f"a task named {name!r} already exists")
    cid = s.scalars(select(Collection.id).where(Collection.name == collection)).first()
    if cid is None:
        raise NotFoundError(f"no collection {collection!r}")
    schema_row, _ = ann_store.get_schema(s, schema)
    names = _users(s, readers, "reader")
    if not names:
        raise AnnotationError("a task needs at least one reader (--readers a,b,c)")
    if not 1 <= per_case <= len(names):
        raise AnnotationError(f"--per-case must be between 1 and the number of readers "
                              f"({len(names)}), not {per_case}")
    revs = _users(s, reviewers, "reviewer")
    adjs = _users(s, adjudicators, "adjudicator")
    for role, people in (("reviewer", revs), ("adjudicator", adjs)):
        both = sorted(set(people) & set(names))
        if both:
            raise AnnotationError(f"{', '.join(both)} cannot be both reader and {role}: "
                                  f"a {role} judges other people's reads")
    if not 0.0 <= dice_threshold <= 1.0:
        raise AnnotationError(f"the Dice threshold is between 0 and 1, not {dice_threshold}")
    series = image_series(s, cid, series_filter)
    if not series:
        what = f" matching {series_filter}" if series_filter else ""
        raise AnnotationError(f"collection {collection!r} has no image series{what} to read")
    if seed is None:
        seed = secrets.randbelow(2**31)
    rng = random.Random(seed)
    order = list(series)
    rng.shuffle(order)
    chosen = balanced_assignment(len(order), names, per_case, rng)
    task = AnnotationTask(
        name=name, collection_id=cid, schema_id=schema_row.id, readers=names,
        per_case=per_case, blinded=blinded, state="open", created_by=created_by,
        options={"seed": seed, "reviewers": revs, "adjudicators": adjs,
                 "dice_threshold": dice_threshold, "series_filter": series_filter or {},
                 "returned": {}})
    s.add(task)
    s.flush()
    for pos, (row, who) in enumerate(zip(order, chosen, strict=True), start=1):
        case = TaskCase(task_id=task.id, study_id=row.study_id, series_id=row.id,
                        position=pos, state="reading")
        s.add(case)
        s.flush()
        for r in who:
            s.add(TaskAssignment(case_id=case.id, reader=r, step="read", state="assigned"))
    s.flush()
    return task


# ----------------------------------------------------------------- finding

def get_task(s: Session, ref: str | int) -> AnnotationTask:
    """A task by name (or numeric id)."""
    task = s.scalars(select(AnnotationTask).where(AnnotationTask.name == str(ref))).first()
    if task is None and str(ref).isdigit():
        task = s.get(AnnotationTask, int(ref))
    if task is None:
        known = list(s.scalars(select(AnnotationTask.name).order_by(AnnotationTask.name)))
        raise NotFoundError(f"no annotation task {str(ref)!r}; tasks: "
                            f"{', '.join(known) or 'none'} (create one with 'mida tasks create')")
    return task


def task_cases(s: Session, task: AnnotationTask) -> list[TaskCase]:
    return list(s.scalars(select(TaskCase).where(TaskCase.task_id == task.id)
                          .order_by(TaskCase.position)))


def get_case(s: Session, task: AnnotationTask, number: int) -> TaskCase:
    """Case ``number`` (its 1-based position in the task's worklist)."""
    case = s.scalars(select(TaskCase).where(TaskCase.task_id == task.id,
                                            TaskCase.position == number)).first()
    if case is None:
        n = s.scalar(select(func.count()).select_from(TaskCase)
                     .where(TaskCase.task_id == task.id))
        raise NotFoundError(f"task {task.name!r} has no case {number}; its cases are 1..{n}")
    return case


def assignments(s: Session, case: TaskCase, step: str | None = None) -> list[TaskAssignment]:
    q = select(TaskAssignment).where(TaskAssignment.case_id == case.id)
    if step:
        q = q.where(TaskAssignment.step == step)
    return list(s.scalars(q.order_by(TaskAssignment.id)))


def case_readers(s: Session, case: TaskCase) -> list[str]:
    return [a.reader for a in assignments(s, case, "read")]


def _options(task: AnnotationTask) -> dict[str, Any]:
    return dict(task.options or {})


def _set_option(task: AnnotationTask, key: str, value: Any) -> None:
    opts = _options(task)
    opts[key] = value
    task.options = opts  # a new dict, so the JSON column is written


def task_schema(s: Session, task: AnnotationTask) -> Schema:
    return ann_store.schema_of(s, task.schema_id)


def case_annotations_raw(s: Session, task: AnnotationTask,
                         case: TaskCase) -> list[tuple[Annotation, AnnotationRevision]]:
    """Every annotation of the task on the case's series (or its study), latest revisions.

    A study-level annotation belongs to the case its provenance names
    (``case``, as :func:`annotate` records it); one without a case belongs to
    every case of its study.
    """
    q = (ann_store.latest_revisions()
         .where(Annotation.task_id == task.id,
                or_(Annotation.series_id == case.series_id,
                    and_(Annotation.series_id.is_(None), Annotation.study_id == case.study_id)))
         .order_by(Annotation.id))
    return [(a, r) for a, r in s.execute(q).all()
            if a.series_id is not None or (r.provenance or {}).get("case") in (None,
                                                                                case.position)]


def readings(s: Session, task: AnnotationTask, case: TaskCase
             ) -> dict[str, list[tuple[Annotation, AnnotationRevision]]]:
    """Each reader of the case -> their annotations in it (adjudications left out)."""
    readers = case_readers(s, case)
    out: dict[str, list[tuple[Annotation, AnnotationRevision]]] = {r: [] for r in readers}
    for a, r in case_annotations_raw(s, task, case):
        if a.reader in out and a.reader_kind == "person" and r.status != "adjudicated":
            out[a.reader].append((a, r))
    return out


# ----------------------------------------------------------------- state machine

def _least_loaded(s: Session, task: AnnotationTask, people: Sequence[str], step: str) -> str:
    load = dict.fromkeys(people, 0)
    rows = s.execute(
        select(TaskAssignment.reader, func.count())
        .join(TaskCase, TaskCase.id == TaskAssignment.case_id)
        .where(TaskCase.task_id == task.id, TaskAssignment.step == step)
        .group_by(TaskAssignment.reader)).all()
    for who, n in rows:
        if who in load:
            load[who] = int(n)
    return min(people, key=lambda p: (load[p], people.index(p)))


def _open_step(s: Session, task: AnnotationTask, case: TaskCase, step: str,
               people: Sequence[str]) -> None:
    existing = assignments(s, case, step)
    if existing:
        for a in existing:
            a.state = "assigned"
        return
    if people:
        s.add(TaskAssignment(case_id=case.id, reader=_least_loaded(s, task, people, step),
                             step=step, state="assigned"))


def _close_if_done(s: Session, case: TaskCase) -> None:
    """A task whose every case is done is ``done``."""
    s.flush()
    task = s.get(AnnotationTask, case.task_id)
    if task is None:
        return
    left = s.scalar(select(func.count()).select_from(TaskCase).where(
        TaskCase.task_id == task.id, TaskCase.state != "done"))
    task.state = "done" if not left else "open"


def _finish(s: Session, case: TaskCase, state: str) -> None:
    case.state = state
    for a in assignments(s, case):
        if a.step in ("read", "review"):
            a.state = "done"
    _close_if_done(s, case)
    s.flush()


def _after_reading(s: Session, store: BlobStore, task: AnnotationTask, case: TaskCase) -> None:
    """Every reader is done (and reviewed): adjudication if they disagree, else done."""
    if disagreements(s, store, task, case):
        _finish(s, case, "adjudication")
        _open_step(s, task, case, "adjudicate", _options(task).get("adjudicators") or [])
    else:
        _finish(s, case, "done")


def sync_case(s: Session, store: BlobStore, task: AnnotationTask, case: TaskCase) -> None:
    """Bring a reading case's assignments up to date with the annotations; advance it."""
    if case.state != "reading":
        return
    mine = readings(s, task, case)
    reads = assignments(s, case, "read")
    for a in reads:
        if a.state == "done":
            continue
        anns = mine.get(a.reader, [])
        if anns:
            a.state = "submitted" if all(r.status in SUBMITTED for _, r in anns) else (
                "in_progress")
    if reads and all(a.state in ("submitted", "done") for a in reads):
        reviewers = _options(task).get("reviewers") or []
        if reviewers:
            case.state = "review"
            _open_step(s, task, case, "review", reviewers)
            s.flush()
        else:
            _after_reading(s, store, task, case)
    s.flush()


def sync(s: Session, store: BlobStore, task: AnnotationTask) -> None:
    """:func:`sync_case` for every case still in reading."""
    for case in s.scalars(select(TaskCase).where(TaskCase.task_id == task.id,
                                                 TaskCase.state == "reading")):
        sync_case(s, store, task, case)


def _read_assignment(s: Session, case: TaskCase, reader: str, task: AnnotationTask
                     ) -> TaskAssignment:
    for a in assignments(s, case, "read"):
        if a.reader == reader:
            return a
    raise AnnotationError(f"{reader!r} is not a reader of case {case.position} of task "
                          f"{task.name!r}; its readers: {', '.join(case_readers(s, case))}")


def annotate(s: Session, store: BlobStore, task: AnnotationTask, case: TaskCase, *,
             reader: str, label: str, data: dict[str, Any] | None = None,
             mask: np.ndarray | None = None, sop_instance_uid: str | None = None,
             frame: int | None = None, status: str = "draft") -> AnnotationRevision:
    """A reader's annotation in a case (study-level labels go on the case's study)."""
    if case.state != "reading":
        raise AnnotationError(f"case {case.position} is in {case.state}, not reading: "
                              "readers annotate while the case is being read")
    assignment = _read_assignment(s, case, reader, task)
    if assignment.state == "done":
        raise AnnotationError(f"{reader!r} has finished case {case.position}")
    if status not in ("draft", "submitted"):
        raise AnnotationError("a reader's annotation is a draft or submitted")
    schema_row = s.get(LabelSchema, task.schema_id)
    assert schema_row is not None
    lb = task_schema(s, task).label(label)
    series = s.get(Series, case.series_id)
    study = s.get(Study, case.study_id)
    assert series is not None and study is not None
    mapper = ann_store.UidMapper(s)
    if sop_instance_uid:
        target = mapper.target(series_uid=series.SeriesInstanceUID,
                               sop_instance_uid=sop_instance_uid, frame=frame)
    elif lb.type in ("classification", "text") and (lb.level or "study") == "study":
        target = ann_store.Target(study=study)
    else:
        target = ann_store.Target(study=study, series=series)
    geometry = geometry_of_series(s, series) if mask is not None else None
    rev = ann_store.create(s, store, target=target, schema=schema_row, label=lb.name,
                           reader=reader, data=data, mask=mask, geometry=geometry,
                           status=status, task_id=task.id,
                           provenance={"tool": "mida tasks annotate", "task": task.name,
                                       "case": case.position})
    sync_case(s, store, task, case)
    return rev


def adopt(s: Session, store: BlobStore, task: AnnotationTask, case: TaskCase, *,
          reader: str, uid: str, status: str = "draft") -> AnnotationRevision:
    """A reader takes a model's pre-annotation of the case as their own annotation.

    The model's draft is copied (label, target, content of its latest
    revision) into a new annotation by the reader, whose provenance names the
    source annotation, revision and model version; the draft itself is left
    as it is. The reader may then revise their copy like any annotation.
    """
    if case.state != "reading":
        raise AnnotationError(f"case {case.position} is in {case.state}, not reading: "
                              "readers annotate while the case is being read")
    if _read_assignment(s, case, reader, task).state == "done":
        raise AnnotationError(f"{reader!r} has finished case {case.position}")
    if status not in ("draft", "submitted"):
        raise AnnotationError("a reader's annotation is a draft or submitted")
    found = [(a, r) for a, r in case_annotations_raw(s, task, case) if a.uid == uid]
    if not found or found[0][0].reader_kind != "model":
        raise AnnotationError(f"annotation {uid} is not a model pre-annotation of case "
                              f"{case.position} of task {task.name!r}")
    src, rev = found[0]
    schema_row = s.get(LabelSchema, src.schema_id)
    assert schema_row is not None
    mask = ann_store.load_mask(store, rev) if rev.mask_sha256 else None
    series = s.get(Series, case.series_id)
    assert series is not None
    made = ann_store.create(
        s, store, target=_target_of(s, src), schema=schema_row, label=src.label,
        reader=reader, data=dict(rev.data), mask=mask,
        geometry=geometry_of_series(s, series) if mask is not None else None, status=status,
        task_id=task.id,
        provenance={"tool": "mida tasks annotate", "task": task.name, "case": case.position,
                    "from": {"annotation": src.uid, "revision": rev.revision,
                             "model": src.reader, "version": rev.model_version}})
    sync_case(s, store, task, case)
    return made


def submit(s: Session, store: BlobStore, task: AnnotationTask, case: TaskCase, reader: str,
           comment: str = "") -> dict[str, Any]:
    """A reader submits a case: their drafts become ``submitted``; with none, *nothing found*."""
    if case.state != "reading":
        raise AnnotationError(f"case {case.position} is in {case.state}; only a case in "
                              "reading can be submitted")
    a = _read_assignment(s, case, reader, task)
    if a.state == "done":
        raise AnnotationError(f"{reader!r} has finished case {case.position}")
    mine = readings(s, task, case)[reader]
    submitted = 0
    for ann, rev in mine:
        if rev.status == "draft":
            ann_store.revise(s, store, ann, author=reader, status="submitted", comment=comment)
            submitted += 1
    a.state = "submitted"
    returned = dict(_options(task).get("returned") or {})
    if returned.pop(f"{case.position}:{reader}", None) is not None:
        _set_option(task, "returned", returned)
    s.flush()
    sync_case(s, store, task, case)
    return {"case": case.position, "reader": reader, "annotations": len(mine),
            "submitted": submitted, "nothing_found": not mine, "case_state": case.state}


def review(s: Session, store: BlobStore, task: AnnotationTask, case: TaskCase, *,
           reviewer: str, accept: bool, reader: str | None = None,
           comment: str = "") -> dict[str, Any]:
    """Accept (``reviewed``) or return (back to ``draft``, with a comment) readers' work."""
    if case.state != "review":
        raise AnnotationError(f"case {case.position} is in {case.state}, not review")
    reviewers = _options(task).get("reviewers") or []
    if reviewer not in reviewers:
        raise AnnotationError(f"{reviewer!r} is not a reviewer of task {task.name!r}; its "
                              f"reviewers: {', '.join(reviewers) or 'none'}")
    if not accept and not comment.strip():
        raise AnnotationError("returning work to a reader needs a comment saying what to fix")
    reads = assignments(s, case, "read")
    pending = [a for a in reads if a.state == "submitted"]
    if reader is not None:
        pending = [a for a in pending if a.reader == reader]
        if not pending:
            _read_assignment(s, case, reader, task)
            raise AnnotationError(f"{reader!r} has no submitted work awaiting review in case "
                                  f"{case.position}")
    if not pending:
        raise AnnotationError(f"case {case.position} has no submitted work awaiting review")
    mine = readings(s, task, case)
    clean = _cleaner.clean(comment).text if comment else ""
    changed = 0
    for a in pending:
        for ann, rev in mine.get(a.reader, []):
            if accept and rev.status == "submitted":
                ann_store.revise(s, store, ann, author=reviewer, status="reviewed",
                                 comment=comment)
                changed += 1
            elif not accept:
                ann_store.revise(s, store, ann, author=reviewer, status="draft",
                                 comment=comment)
                changed += 1
        if accept:
            a.state = "done"
        else:
            a.state = "in_progress"
            returned = dict(_options(task).get("returned") or {})
            returned[f"{case.position}:{a.reader}"] = clean
            _set_option(task, "returned", returned)
    for ra in assignments(s, case, "review"):
        if ra.reader == reviewer:
            ra.state = "in_progress"
    if not accept:
        case.state = "reading"
    elif all(a.state == "done" for a in reads):
        for ra in assignments(s, case, "review"):
            ra.state = "done"
        _after_reading(s, store, task, case)
    s.flush()
    return {"case": case.position, "accepted" if accept else "returned":
            [a.reader for a in pending], "annotations": changed, "case_state": case.state}


# ----------------------------------------------------------------- disagreement

def _mask_union(store: BlobStore, anns: Sequence[tuple[Annotation, AnnotationRevision]],
                label: str, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for a, r in anns:
        if a.label == label and r.mask_sha256:
            out |= ann_store.load_mask(store, r)
    return out


def _values(anns: Sequence[tuple[Annotation, AnnotationRevision]], label: str) -> Any:
    vals = [r.data.get("value") for a, r in anns if a.label == label]
    return vals[-1] if vals else None


def disagreements(s: Session, store: BlobStore, task: AnnotationTask,
                  case: TaskCase) -> list[str]:
    """Why the case's readers disagree (empty: they agree); see the module docstring."""
    mine = readings(s, task, case)
    readers = sorted(mine)
    if len(readers) < 2:
        return []
    schema = task_schema(s, task)
    threshold = float(_options(task).get("dice_threshold", DEFAULT_DICE_THRESHOLD))
    used = sorted({a.label for anns in mine.values() for a, _ in anns})
    reasons = []
    shape = None
    for name in used:
        lb = schema.label(name)
        if lb.type == "classification":
            vals = {r: _values(mine[r], name) for r in readers}
            if len(set(vals.values())) > 1:
                reasons.append(f"{name}: " + ", ".join(f"{r} {vals[r] or '(none)'}"
                                                       for r in readers))
        elif lb.type == "mask":
            if shape is None:
                series = s.get(Series, case.series_id)
                assert series is not None
                shape = geometry_of_series(s, series).shape
            masks = {r: _mask_union(store, mine[r], name, shape) for r in readers}
            for i, ra in enumerate(readers):
                for rb in readers[i + 1:]:
                    d = agr.dice(masks[ra], masks[rb])
                    if d < threshold:
                        reasons.append(f"{name}: Dice {ra}-{rb} {d:.2f} < {threshold:.2f}")
        else:
            counts = {r: sum(a.label == name for a, _ in mine[r]) for r in readers}
            if len(set(counts.values())) > 1:
                reasons.append(f"{name}: " + ", ".join(f"{r} marked {counts[r]}"
                                                       for r in readers))
    return reasons


# ----------------------------------------------------------------- adjudication

def _target_of(s: Session, ann: Annotation) -> ann_store.Target:
    study = s.get(Study, ann.study_id)
    assert study is not None
    return ann_store.Target(study=study,
                            series=s.get(Series, ann.series_id) if ann.series_id else None,
                            instance=s.get(Instance, ann.instance_id) if ann.instance_id
                            else None, frame=ann.frame)


def adjudicate(s: Session, store: BlobStore, task: AnnotationTask, case: TaskCase, *,
               by: str, accept: str | None = None, consensus: bool = False,
               comment: str = "") -> dict[str, Any]:
    """Create the adjudicated annotations of a case (readers' annotations stay as they are).

    ``accept=READER`` copies that reader's annotations; ``consensus=True``
    takes the majority value of each classification label (a tie is refused,
    naming the tied values) and the STAPLE mask of each mask label (readers
    without a mask count as empty; an empty consensus creates nothing). Other
    label types have no consensus method: accept a reader instead.
    """
    if case.state != "adjudication":
        raise AnnotationError(f"case {case.position} is in {case.state}; adjudication follows "
                              "reading (and review) when the readers disagree")
    if (accept is None) == (not consensus):
        raise AnnotationError("adjudicate by accepting one reader (--accept READER) or by "
                              "the readers' consensus (--consensus): choose one")
    _users(s, [by], "adjudicator")
    readers = case_readers(s, case)
    if by in readers:
        raise AnnotationError(f"{by!r} read case {case.position}; an adjudicator judges "
                              "other people's reads")
    allowed = _options(task).get("adjudicators") or []
    if allowed and by not in allowed:
        raise AnnotationError(f"{by!r} is not an adjudicator of task {task.name!r}; its "
                              f"adjudicators: {', '.join(allowed)}")
    mine = readings(s, task, case)
    schema_row = s.get(LabelSchema, task.schema_id)
    assert schema_row is not None
    schema = task_schema(s, task)
    series = s.get(Series, case.series_id)
    assert series is not None
    base = {"tool": "mida tasks adjudicate", "task": task.name, "case": case.position}
    planned: list[dict[str, Any]] = []
    notes: list[str] = []
    if accept is not None:
        if accept not in mine:
            raise AnnotationError(f"{accept!r} is not a reader of case {case.position}; its "
                                  f"readers: {', '.join(readers)}")
        for ann, rev in mine[accept]:
            mask = ann_store.load_mask(store, rev) if rev.mask_sha256 else None
            planned.append({"target": _target_of(s, ann), "label": ann.label,
                            "data": dict(rev.data), "mask": mask,
                            "provenance": {**base, "method": "accept", "reader": accept,
                                           "sources": [{"annotation": ann.uid,
                                                        "revision": rev.revision}]}})
        if not mine[accept]:
            notes.append(f"{accept} found nothing: the adjudicated case has no annotation")
    else:
        used = sorted({a.label for anns in mine.values() for a, _ in anns})
        geometry = None
        for name in used:
            lb = schema.label(name)
            having = {r: [(a, v) for a, v in anns if a.label == name]
                      for r, anns in mine.items()}
            sources = [{"annotation": a.uid, "revision": v.revision}
                       for r in readers for a, v in having[r]]
            if lb.type == "classification":
                votes = {r: having[r][-1][1].data["value"] for r in readers if having[r]}
                vote = majority_vote(votes)
                if not vote.agreed:
                    raise AnnotationError(
                        f"no consensus for label {name!r}: a tie between "
                        + ", ".join(f"{v} ({vote.counts[v]})" for v in vote.tie)
                        + "; adjudicate with --accept READER")
                src = next(a for r in readers for a, v in having[r]
                           if v.data["value"] == vote.value)
                planned.append({"target": _target_of(s, src), "label": name,
                                "data": {"value": vote.value}, "mask": None,
                                "provenance": {**base, "method": "majority vote",
                                               "votes": vote.as_dict(), "sources": sources}})
            elif lb.type == "mask":
                if geometry is None:
                    geometry = geometry_of_series(s, series)
                masks = {r: _mask_union(store, mine[r], name, geometry.shape) for r in readers}
                st = staple(masks)
                if not st.mask.any():
                    notes.append(f"{name}: the STAPLE consensus is empty; nothing created")
                    continue
                study = s.get(Study, case.study_id)
                assert study is not None
                planned.append({"target": ann_store.Target(study=study, series=series),
                                "label": name, "data": {}, "mask": st.mask,
                                "provenance": {**base, "method": st.method,
                                               "threshold": 0.5,
                                               "readers": st.performance(),
                                               "sources": sources}})
            else:
                raise AnnotationError(f"label {name!r} is a {lb.type} label, which has no "
                                      "consensus method; adjudicate with --accept READER")
    created = []
    grid = None
    for p in planned:
        if p["mask"] is not None and grid is None:
            grid = geometry_of_series(s, series)
        rev = ann_store.create(
            s, store, target=p["target"], schema=schema_row, label=p["label"], reader=by,
            status="adjudicated", data=p["data"], mask=p["mask"],
            geometry=grid if p["mask"] is not None else None, author=by,
            provenance=p["provenance"], task_id=task.id, comment=comment)
        made = s.get(Annotation, rev.annotation_id)
        assert made is not None
        created.append(made.uid)
    case.state = "done"
    mine_adj = assignments(s, case, "adjudicate")
    for a in mine_adj:
        a.state = "done"
    if not any(a.reader == by for a in mine_adj):
        s.add(TaskAssignment(case_id=case.id, reader=by, step="adjudicate", state="done"))
    _close_if_done(s, case)
    s.flush()
    return {"case": case.position, "method": "accept" if accept else "consensus",
            "accepted": accept, "created": created, "notes": notes}


# ----------------------------------------------------------------- views

def case_annotations(s: Session, task: AnnotationTask, case: TaskCase,
                     viewer: str | None = None) -> list[dict[str, Any]]:
    """What ``viewer`` may see of a case (None: everything, e.g. for an administrator).

    In a blinded task a reader of the case sees their own annotations and
    model pre-annotations only; reviewers, adjudicators and viewers outside
    the case see all, with names.
    """
    rows = case_annotations_raw(s, task, case)
    blind = task.blinded and viewer is not None and viewer in case_readers(s, case)
    out = []
    for a, r in rows:
        if blind and a.reader != viewer and a.reader_kind == "person":
            continue
        out.append(ann_store.view(s, a, r, blinded_for=viewer if blind and
                                  a.reader_kind == "person" else None))
    return out


def case_row(s: Session, case: TaskCase) -> dict[str, Any]:
    series = s.get(Series, case.series_id)
    study = s.get(Study, case.study_id)
    return {"case": case.position, "state": case.state,
            "StudyInstanceUID": study.StudyInstanceUID if study else None,
            "SeriesInstanceUID": series.SeriesInstanceUID if series else None,
            "Modality": series.Modality if series else None}


def summary(s: Session, task: AnnotationTask) -> dict[str, Any]:
    """A task's settings and case counts by state."""
    schema = s.get(LabelSchema, task.schema_id)
    coll = s.get(Collection, task.collection_id)
    counts = dict.fromkeys(CASE_STATES, 0)
    for st, n in s.execute(select(TaskCase.state, func.count()).where(
            TaskCase.task_id == task.id).group_by(TaskCase.state)).all():
        counts[st] = int(n)
    opts = _options(task)
    return {"task": task.name, "id": task.id, "collection": coll.name if coll else None,
            "schema": f"{schema.name}@{schema.version}" if schema else None,
            "readers": list(task.readers), "per_case": task.per_case,
            "reviewers": opts.get("reviewers") or [],
            "adjudicators": opts.get("adjudicators") or [], "blinded": task.blinded,
            "seed": opts.get("seed"), "dice_threshold": opts.get("dice_threshold"),
            "series_filter": opts.get("series_filter") or {}, "state": task.state,
            "cases": sum(counts.values()), "by_state": counts,
            "created_by": task.created_by}


def progress(s: Session, store: BlobStore, task: AnnotationTask) -> dict[str, Any]:
    """Summary plus, per reader and step, assignments by state; cases needing adjudication."""
    sync(s, store, task)
    out = summary(s, task)
    per: dict[str, dict[str, dict[str, int]]] = {}
    rows = s.execute(
        select(TaskAssignment.reader, TaskAssignment.step, TaskAssignment.state, func.count())
        .join(TaskCase, TaskCase.id == TaskAssignment.case_id)
        .where(TaskCase.task_id == task.id)
        .group_by(TaskAssignment.reader, TaskAssignment.step, TaskAssignment.state)).all()
    for who, step, state, n in rows:
        per.setdefault(who, {}).setdefault(step, dict.fromkeys(ASSIGNMENT_STATES, 0))[state] = (
            int(n))
    out["progress"] = [{"reader": who, "step": step, **states,
                        "total": sum(states.values())}
                       for who in sorted(per) for step in STEPS if step in per[who]
                       for states in [per[who][step]]]
    out["adjudication"] = [
        {**case_row(s, c), "reasons": disagreements(s, store, task, c)}
        for c in s.scalars(select(TaskCase).where(TaskCase.task_id == task.id,
                                                  TaskCase.state == "adjudication")
                           .order_by(TaskCase.position))]
    return out


def list_tasks(s: Session) -> list[dict[str, Any]]:
    return [summary(s, t) for t in s.scalars(select(AnnotationTask).order_by(AnnotationTask.id))]


def worklist(s: Session, store: BlobStore, reader: str,
             task: AnnotationTask | None = None) -> list[dict[str, Any]]:
    """A person's open cases: reads not yet submitted, reviews and adjudications waiting."""
    tasks = [task] if task is not None else list(
        s.scalars(select(AnnotationTask).order_by(AnnotationTask.id)))
    out = []
    for t in tasks:
        sync(s, store, t)
        returned = _options(t).get("returned") or {}
        q = (select(TaskAssignment, TaskCase)
             .join(TaskCase, TaskCase.id == TaskAssignment.case_id)
             .where(TaskCase.task_id == t.id, TaskAssignment.reader == reader,
                    TaskAssignment.state.in_(("assigned", "in_progress")))
             .order_by(TaskCase.position))
        for a, c in s.execute(q).all():
            wanted = {"read": "reading", "review": "review", "adjudicate": "adjudication"}
            if c.state != wanted[a.step]:
                continue
            row = {"task": t.name, **case_row(s, c), "step": a.step, "assignment": a.state}
            note = returned.get(f"{c.position}:{reader}") if a.step == "read" else None
            if note is not None:
                row["returned"] = note
            out.append(row)
    return out


# ----------------------------------------------------------------- agreement

def agreement_report(s: Session, store: BlobStore, task: AnnotationTask,
                     label: str | None = None) -> dict[str, Any]:
    """Agreement of the task's readers (:mod:`mida.annotations.agreement`), label by label.

    Counted: readers whose read of a case is submitted (or finished), their
    latest revisions. A reader who read a case and drew no mask of a label
    gives an empty mask; one who gave no value of a classification label
    gives no rating for that case.
    """
    sync(s, store, task)
    schema = task_schema(s, task)
    labels = [schema.label(label)] if label else schema.labels
    cases = task_cases(s, task)
    per_case: list[tuple[TaskCase, dict[str, list[tuple[Annotation, AnnotationRevision]]]]] = []
    for c in cases:
        done = {a.reader for a in assignments(s, c, "read") if a.state in ("submitted", "done")}
        mine = {r: v for r, v in readings(s, task, c).items() if r in done}
        if mine:
            per_case.append((c, mine))
    out: dict[str, Any] = {"task": task.name, "readers": list(task.readers),
                           "cases_read": len(per_case), "labels": {}}
    for lb in labels:
        if lb.type == "classification":
            ratings: dict[str, dict[int, Any]] = {}
            for c, mine in per_case:
                for r, anns in mine.items():
                    v = _values(anns, lb.name)
                    if v is not None:
                        ratings.setdefault(r, {})[c.position] = v
            if not ratings:
                continue
            out["labels"][lb.name] = {"type": "classification",
                                      **agr.label_agreement(ratings, lb.values or None)}
        elif lb.type == "mask":
            masks: dict[int, dict[str, np.ndarray]] = {}
            spacing: dict[int, tuple[float, float, float]] = {}
            for c, mine in per_case:
                if len(mine) < 2 or not any(a.label == lb.name for anns in mine.values()
                                            for a, _ in anns):
                    continue
                series = s.get(Series, c.series_id)
                assert series is not None
                g = geometry_of_series(s, series)
                masks[c.position] = {r: _mask_union(store, anns, lb.name, g.shape)
                                     for r, anns in mine.items()}
                spacing[c.position] = g.spacing
            if not masks:
                continue
            out["labels"][lb.name] = {"type": "mask", **agr.mask_agreement(masks, spacing)}
    return out
