"""Annotations over HTTP, and the browser annotator at ``/annotate``.

Routes (JSON, same tokens and grants as the rest of ``/api``):

======  ===================================  =============================================
GET     /api/labels                          label schemas (every version)
GET     /api/labels/{name}                   one schema, newest or ``?version=``
GET     /api/worklist                        the caller's cases (task assignments; without
                                             any, the readable image series, newest first)
GET     /api/series/{uid}/geometry           the series grid: slices in anatomical order
GET     /api/annotations                     latest revisions, filtered
POST    /api/annotations                     create (201 + Location)
GET     /api/annotations/{uid}               latest revision, or ``?revision=n``
GET     /api/annotations/{uid}/revisions     every revision, oldest first
POST    /api/annotations/{uid}/revisions     edit: a new revision (201)
GET     /api/annotations/{uid}/mask          the mask of a revision (encoding below)
======  ===================================  =============================================

Reading needs read scope on the annotation's collection, creating and editing
write scope; only the annotation's reader (or an admin of its collection) may
revise it. An object in a collection the caller may not read answers 403 with
the same body as a missing one. In a *blinded* task a reader sees only their
own annotations: other readers' are left out entirely (the task's reviewers
and adjudicators, and admins, see them, without the readers' names).

Mask encoding ``rle-slices``::

    {"encoding": "rle-slices", "shape": [slices, rows, columns],
     "slices": {"3": [run, run, ...], ...}}

Keys are 0-based slice indices of the series grid, in the order of
``GET /api/series/{uid}/geometry`` (anatomical order, not InstanceNumber).
Each slice is flattened row by row (``[row, column]``, C order) and written as
run lengths that alternate background, foreground, background, ... starting
with background (so a slice whose first pixel is set starts with a 0 run). The
runs of a slice add up to rows x columns. Slices left out are empty; ``shape``
is optional on input and checked against the grid when given.

Coordinates of boxes and polygons are image pixels ``(x=column, y=row)`` with
the top-left corner of the top-left pixel at (0, 0), as DICOM SCOORD and COCO.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mida import __version__
from mida.annotations import store
from mida.annotations.geometry import NON_IMAGE_CLASSES, geometry_of_series
from mida.annotations.schema import parse_schema
from mida.api.deps import PrincipalDep, SessionDep, require
from mida.catalog.models import (
    Annotation,
    AnnotationRevision,
    AnnotationTask,
    Instance,
    LabelSchema,
    Series,
    Study,
    TaskAssignment,
    TaskCase,
)
from mida.errors import (
    AccessDeniedError,
    AnnotationError,
    AuthError,
    GeometryMismatchError,
    NotFoundError,
)
from mida.sharing.identity import DENIED, Principal
from mida.web import templates

router = APIRouter(tags=["annotations"])

ENCODING = "rle-slices"
#: Statuses a reader sets through the API; ``reviewed`` and ``adjudicated`` belong to
#: the review workflow (``mida tasks``).
API_STATUSES = ("draft", "submitted")
#: The annotator page runs only its own files (no inline script or style).
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
            "form-action 'self'")


# ----------------------------------------------------------------- mask encoding

def encode_rle_slices(mask: np.ndarray) -> dict[str, Any]:
    """A boolean ``[slice, row, column]`` array as ``rle-slices`` (non-empty slices only)."""
    mask = np.asarray(mask, dtype=bool)
    out: dict[str, list[int]] = {}
    for k in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        flat = mask[k].ravel()
        edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        runs = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist()
        out[str(int(k))] = [0, *runs] if flat[0] else runs
    return {"encoding": ENCODING, "shape": [int(n) for n in mask.shape], "slices": out}


def decode_rle_slices(body: dict[str, Any], shape: tuple[int, int, int]) -> np.ndarray:
    """``rle-slices`` onto a grid of ``shape``; :class:`AnnotationError` says what is wrong."""
    if body.get("encoding") != ENCODING:
        raise AnnotationError(f"mask encoding {body.get('encoding')!r} is not supported: "
                              f"use {ENCODING!r}")
    n, rows, cols = shape
    if body.get("shape") is not None and [int(x) for x in body["shape"]] != [n, rows, cols]:
        raise GeometryMismatchError(f"the mask's shape {list(body['shape'])} is not the series "
                                    f"grid {[n, rows, cols]} (slices, rows, columns)")
    slices = body.get("slices")
    if not isinstance(slices, dict):
        raise AnnotationError("mask slices is a mapping of slice index to run lengths")
    mask = np.zeros(shape, dtype=bool)
    for key, runs in slices.items():
        try:
            k = int(key)
        except ValueError:
            raise AnnotationError(f"mask slice key {key!r} is not a slice index") from None
        if not 0 <= k < n:
            raise AnnotationError(f"mask slice {k} is outside the series' slices 0..{n - 1}")
        arr = np.asarray(runs)
        if arr.ndim != 1 or arr.dtype.kind not in "iu" or (arr < 0).any():
            raise AnnotationError(f"mask slice {k}: runs are non-negative whole numbers")
        total = int(arr.sum()) if arr.size else 0
        if total != rows * cols:
            raise AnnotationError(f"mask slice {k}: the runs add up to {total} pixels but a "
                                  f"slice has {rows}x{cols} = {rows * cols}")
        values = (np.arange(arr.size) % 2).astype(bool)
        mask[k] = np.repeat(values, arr).reshape(rows, cols)
    return mask


# ----------------------------------------------------------------- request bodies

class TargetIn(BaseModel):
    """What is annotated: catalog (pseudonymous) UIDs, as the API and DICOMweb show them."""

    model_config = ConfigDict(extra="forbid")
    StudyInstanceUID: str | None = Field(default=None, max_length=64)
    SeriesInstanceUID: str | None = Field(default=None, max_length=64)
    SOPInstanceUID: str | None = Field(default=None, max_length=64)
    frame: int | None = Field(default=None, ge=1, description="1-based, for multi-frame images")


class MaskIn(BaseModel):
    """A mask in the ``rle-slices`` encoding (see the module description)."""

    model_config = ConfigDict(extra="forbid")
    encoding: Literal["rle-slices"]
    shape: list[int] | None = Field(default=None, min_length=3, max_length=3)
    slices: dict[str, list[int]]


class AnnotationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    schema_ref: str = Field(alias="schema", min_length=1, max_length=100,
                            description="name@version (or name: its newest version)")
    label: str = Field(min_length=1, max_length=64)
    target: TargetIn
    data: dict[str, Any] = Field(default_factory=dict)
    mask: MaskIn | None = None
    status: Literal["draft", "submitted"] = "draft"
    task: int | None = None
    comment: str = Field(default="", max_length=4000)


class RevisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: dict[str, Any] | None = None
    mask: MaskIn | None = None
    status: Literal["draft", "submitted"] | None = None
    comment: str = Field(default="", max_length=4000)


# ----------------------------------------------------------------- helpers

@contextlib.contextmanager
def _unprocessable() -> Iterator[None]:
    """Content errors (bad label, mask, geometry) as 422 with their message."""
    try:
        yield
    except AnnotationError as exc:
        raise HTTPException(422, detail=str(exc)) from None


def _node_store(request: Request) -> Any:
    return request.app.state.node.store()


def _is_admin(p: Principal, collection_id: int) -> bool:
    return p.allows("admin", collection_id)


class _Blinding:
    """Which annotations a caller may see, given blinded tasks (cached per request)."""

    def __init__(self, s: Session, p: Principal) -> None:
        self.s, self.p = s, p
        self.tasks: dict[int, bool] = {}  # task id -> the caller is blinded in it

    def _blinded_in(self, task_id: int) -> bool:
        if task_id not in self.tasks:
            task = self.s.get(AnnotationTask, task_id)
            oversees = self.s.scalar(
                select(TaskAssignment.id).join(TaskCase, TaskCase.id == TaskAssignment.case_id)
                .where(TaskCase.task_id == task_id, TaskAssignment.reader == self.p.name,
                       TaskAssignment.step.in_(("review", "adjudicate"))).limit(1))
            self.tasks[task_id] = bool(task is not None and task.blinded and oversees is None)
        return self.tasks[task_id]

    def _in_blinded_task(self, ann: Annotation) -> bool:
        if ann.task_id is None:
            return False
        task = self.s.get(AnnotationTask, ann.task_id)
        return bool(task is not None and task.blinded)

    def hidden(self, ann: Annotation) -> bool:
        """Another reader's annotation in a task where the caller reads blinded."""
        if ann.task_id is None or ann.reader == self.p.name:
            return False
        if _is_admin(self.p, ann.collection_id):
            return False
        return self._blinded_in(ann.task_id)

    def view(self, ann: Annotation, rev: AnnotationRevision) -> dict[str, Any]:
        blind = (self._in_blinded_task(ann) and not _is_admin(self.p, ann.collection_id))
        return store.view(self.s, ann, rev, blinded_for=self.p.name if blind else None)


def _readable(s: Session, p: Principal, uid: str) -> tuple[Annotation, _Blinding]:
    """The annotation ``uid`` if the caller may see it; else the same answer as missing."""
    ann = s.scalars(select(Annotation).where(Annotation.uid == uid)).first()
    if ann is None:
        raise NotFoundError(f"no annotation {uid}")
    require(p, "read", ann.collection_id)
    b = _Blinding(s, p)
    if b.hidden(ann):
        raise NotFoundError(f"no annotation {uid}")
    return ann, b


def _schema_view(row: LabelSchema) -> dict[str, Any]:
    body = parse_schema(row.body, source=f"{row.name}@{row.version}").canonical()
    return {"ref": f"{row.name}@{row.version}", **body, "sha256": row.sha256}


def _image_slices() -> Any:
    """Per series: the number of image frames (slices of its grid)."""
    return (select(Instance.series_id.label("series_id"),
                   func.sum(func.coalesce(Instance.NumberOfFrames, 1)).label("slices"))
            .where(Instance.Rows.is_not(None),
                   Instance.SOPClassUID.not_in(sorted(NON_IMAGE_CLASSES)))
            .group_by(Instance.series_id).subquery())


# ----------------------------------------------------------------- schemas

@router.get("/api/labels", operation_id="list_label_schemas")
def list_label_schemas(s: SessionDep, p: PrincipalDep) -> dict[str, Any]:
    """Every label schema version, by name then version."""
    rows = [_schema_view(r) for r in store.list_schemas(s)]
    return {"count": len(rows), "data": rows}


@router.get("/api/labels/{name}", operation_id="get_label_schema")
def get_label_schema(name: str, s: SessionDep, p: PrincipalDep,
                     version: str | None = None) -> dict[str, Any]:
    """One schema: its newest version, or ``?version=``; ``name@version`` works too."""
    try:
        row, _ = store.get_schema(s, f"{name}@{version}" if version else name)
    except NotFoundError as exc:  # schemas are node-wide, not collection data
        raise HTTPException(404, detail=str(exc)) from None
    return _schema_view(row)


# ----------------------------------------------------------------- worklist, geometry

@router.get("/api/worklist", operation_id="get_worklist")
def get_worklist(s: SessionDep, p: PrincipalDep,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    """The caller's cases in open tasks; without any, the image series they may read.

    ``mode`` says which: ``tasks`` (one item per assignment: task, case, step,
    state, the task's schema) or ``series`` (newest first, paged; no task).
    """
    ids = p.readable()
    counts = _image_slices()
    q = (select(TaskAssignment, TaskCase, AnnotationTask, Series, Study, LabelSchema,
                counts.c.slices)
         .join(TaskCase, TaskCase.id == TaskAssignment.case_id)
         .join(AnnotationTask, AnnotationTask.id == TaskCase.task_id)
         .join(Series, Series.id == TaskCase.series_id)
         .join(Study, Study.id == TaskCase.study_id)
         .join(LabelSchema, LabelSchema.id == AnnotationTask.schema_id)
         .outerjoin(counts, counts.c.series_id == Series.id)
         .where(TaskAssignment.reader == p.name, AnnotationTask.state == "open"))
    if ids is not None:
        q = q.where(AnnotationTask.collection_id.in_(ids))
    q = q.order_by(AnnotationTask.id, TaskCase.position, TaskCase.id, TaskAssignment.id)
    rows = s.execute(q.limit(limit).offset(offset)).all()
    if rows or offset:
        data = [{"task": {"id": t.id, "name": t.name, "blinded": t.blinded},
                 "case": c.id, "step": a.step, "state": a.state, "case_state": c.state,
                 "StudyInstanceUID": st.StudyInstanceUID,
                 "SeriesInstanceUID": se.SeriesInstanceUID, "Modality": se.Modality,
                 "SeriesDescription": se.SeriesDescription, "slices": int(n or 0),
                 "schema": f"{sc.name}@{sc.version}"}
                for a, c, t, se, st, sc, n in rows]
        return {"mode": "tasks", "count": len(data), "data": data}
    q2 = (select(Series, Study, counts.c.slices)
          .join(Study, Study.id == Series.study_id)
          .join(counts, counts.c.series_id == Series.id))
    if ids is not None:
        q2 = q2.where(Study.collection_id.in_(ids))
    q2 = q2.order_by(Series.created.desc(), Series.id.desc()).limit(limit).offset(offset)
    data = [{"task": None, "case": None, "step": None, "state": None, "case_state": None,
             "StudyInstanceUID": st.StudyInstanceUID, "SeriesInstanceUID": se.SeriesInstanceUID,
             "Modality": se.Modality, "SeriesDescription": se.SeriesDescription,
             "slices": int(n or 0), "schema": None}
            for se, st, n in s.execute(q2).all()]
    return {"mode": "series", "count": len(data), "data": data}


@router.get("/api/series/{series_uid}/geometry", operation_id="get_series_geometry")
def get_series_geometry(series_uid: str, s: SessionDep, p: PrincipalDep) -> dict[str, Any]:
    """The series grid: ``slices`` in anatomical order as ``[SOPInstanceUID, SOPClassUID,
    frame]``, ``shape`` (slices, rows, columns), ``spacing`` (mm), origin and direction."""
    series = s.scalars(select(Series).where(Series.SeriesInstanceUID == series_uid)).first()
    if series is None:
        raise NotFoundError(f"no series {series_uid}")
    study = s.get(Study, series.study_id)
    assert study is not None
    require(p, "read", study.collection_id)
    with _unprocessable():
        geo = geometry_of_series(s, series)
    return {**geo.to_json(), "Modality": series.Modality}


# ----------------------------------------------------------------- annotations

@router.get("/api/annotations", operation_id="list_annotations")
def list_annotations(
    s: SessionDep, p: PrincipalDep, series: str | None = None, study: str | None = None,
    status: str | None = None, reader: str | None = None, task: int | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Latest revisions the caller may see, newest first (blinded tasks: see above)."""
    rows = store.query(s, collection_ids=p.readable(), series_uid=series, study_uid=study,
                       status=status, reader=reader, task_id=task, label=label)
    b = _Blinding(s, p)
    data = [b.view(a, r) for a, r in rows if not b.hidden(a)]
    return {"count": len(data), "data": data}


@router.post("/api/annotations", operation_id="create_annotation", status_code=201)
def create_annotation(body: AnnotationIn, request: Request, response: Response, s: SessionDep,
                      p: PrincipalDep) -> dict[str, Any]:
    """Create an annotation by the caller (a person) with its first revision."""
    t = body.target
    target = store.UidMapper(s).target(study_uid=t.StudyInstanceUID,
                                       series_uid=t.SeriesInstanceUID,
                                       sop_instance_uid=t.SOPInstanceUID, frame=t.frame) \
        if (t.StudyInstanceUID or t.SeriesInstanceUID or t.SOPInstanceUID) else None
    if target is None:
        raise HTTPException(422, detail="target needs a StudyInstanceUID, SeriesInstanceUID "
                            "or SOPInstanceUID")
    require(p, "write", target.collection_id)
    try:
        schema_row, _ = store.get_schema(s, body.schema_ref)
    except NotFoundError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    with _unprocessable():
        if body.task is not None:
            _check_task(s, p, body.task, target, schema_row)
        mask = geometry = None
        if body.mask is not None:
            if target.series is None:
                raise AnnotationError("a mask annotates a series: give its SeriesInstanceUID")
            geometry = geometry_of_series(s, target.series)
            mask = decode_rle_slices(body.mask.model_dump(), geometry.shape)
        rev = store.create(s, _node_store(request), target=target, schema=schema_row,
                           label=body.label, reader=p.name, reader_kind="person",
                           status=body.status, data=body.data, mask=mask, geometry=geometry,
                           author=p.name, task_id=body.task, comment=body.comment,
                           provenance={"tool": "mida api"})
    ann = s.get(Annotation, rev.annotation_id)
    assert ann is not None
    response.headers["Location"] = f"/api/annotations/{ann.uid}"
    return _Blinding(s, p).view(ann, rev)


def _check_task(s: Session, p: Principal, task_id: int, target: store.Target,
                schema: LabelSchema) -> None:
    task = s.get(AnnotationTask, task_id)
    if task is None or task.collection_id != target.collection_id:
        raise AnnotationError(f"no task {task_id} over this image's collection")
    if task.schema_id != schema.id:
        used = s.get(LabelSchema, task.schema_id)
        ref = f"{used.name}@{used.version}" if used else "another schema"
        raise AnnotationError(f"task {task.name!r} uses schema {ref}, not "
                              f"{schema.name}@{schema.version}")
    if task.state != "open":
        raise AnnotationError(f"task {task.name!r} is {task.state}; it takes no annotations")
    if target.series is None or _is_admin(p, target.collection_id):
        return
    assigned = s.scalar(select(TaskAssignment.id).join(TaskCase,
                                                       TaskCase.id == TaskAssignment.case_id)
                        .where(TaskCase.task_id == task.id,
                               TaskCase.series_id == target.series.id,
                               TaskAssignment.reader == p.name).limit(1))
    if assigned is None:
        raise AnnotationError(f"you have no assignment for this series in task {task.name!r}")


@router.get("/api/annotations/{uid}", operation_id="get_annotation")
def get_annotation(uid: str, s: SessionDep, p: PrincipalDep,
                   revision: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
    """The latest revision, or revision ``n`` (every revision stays readable)."""
    ann, b = _readable(s, p, uid)
    rev = store.revision(s, ann, revision) if revision else store.latest(s, ann)
    return b.view(ann, rev)


@router.get("/api/annotations/{uid}/revisions", operation_id="list_annotation_revisions")
def list_annotation_revisions(uid: str, s: SessionDep, p: PrincipalDep) -> dict[str, Any]:
    """Every revision of the annotation, oldest first."""
    ann, b = _readable(s, p, uid)
    data = [b.view(ann, r) for r in store.history(s, ann)]
    return {"count": len(data), "data": data}


@router.post("/api/annotations/{uid}/revisions", operation_id="revise_annotation",
             status_code=201)
def revise_annotation(uid: str, body: RevisionIn, request: Request, response: Response,
                      s: SessionDep, p: PrincipalDep) -> dict[str, Any]:
    """Add a revision: new content and/or status; what is not given carries over.

    Only the annotation's reader, or an admin of its collection, may revise it.
    """
    ann, b = _readable(s, p, uid)
    require(p, "write", ann.collection_id)
    if ann.reader != p.name and not _is_admin(p, ann.collection_id):
        raise AccessDeniedError(DENIED)  # only its reader edits an annotation
    with _unprocessable():
        mask = geometry = None
        if body.mask is not None:
            if ann.kind != "mask":
                raise AnnotationError(f"label {ann.label!r} is a {ann.kind} label; "
                                      "it takes no mask")
            series = s.get(Series, ann.series_id) if ann.series_id else None
            assert series is not None
            geometry = geometry_of_series(s, series)
            mask = decode_rle_slices(body.mask.model_dump(), geometry.shape)
        rev = store.revise(s, _node_store(request), ann, author=p.name, status=body.status,
                           data=body.data, mask=mask, geometry=geometry, comment=body.comment)
    response.headers["Location"] = f"/api/annotations/{ann.uid}?revision={rev.revision}"
    return b.view(ann, rev)


@router.get("/api/annotations/{uid}/mask", operation_id="get_annotation_mask")
def get_annotation_mask(uid: str, request: Request, s: SessionDep, p: PrincipalDep,
                        revision: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
    """The mask of the latest revision (or ``?revision=n``), encoded ``rle-slices``."""
    ann, _ = _readable(s, p, uid)
    rev = store.revision(s, ann, revision) if revision else store.latest(s, ann)
    if rev.mask_sha256 is None:
        raise HTTPException(404, detail=f"revision {rev.revision} of annotation {uid} has no "
                            "mask (only mask labels have one)")
    with _unprocessable():
        mask = store.load_mask(_node_store(request), rev)
    geo = rev.geometry or {}
    return {**encode_rle_slices(mask), "revision": rev.revision,
            "series_uid": geo.get("series_uid"),
            "slice_uids": [[u, f] for u, _c, f in geo.get("slices", [])]}


# ----------------------------------------------------------------- the page

@router.get("/annotate", response_class=HTMLResponse, operation_id="annotate_page",
            tags=["pages"])
def annotate_page(request: Request) -> Response:
    """The browser annotator (signs in with the ``/login`` cookie)."""
    from mida.api.deps import get_principal

    try:
        p = get_principal(request)
    except AuthError:
        return RedirectResponse("/login?next=/annotate", status_code=303)
    r = templates.TemplateResponse(request, "annotate.html",
                                   {"user": p.name, "scope": p.scope, "version": __version__})
    r.headers["Content-Security-Policy"] = PAGE_CSP
    r.headers["Cache-Control"] = "no-store"
    return r


__all__ = ["decode_rle_slices", "encode_rle_slices", "router"]

