"""Annotation records: schemas in the catalog, annotations with immutable revisions.

An :class:`~mida.catalog.models.Annotation` row is the identity of one
annotation (target, reader, label); its content lives in
:class:`~mida.catalog.models.AnnotationRevision` rows. :func:`revise` adds a
revision and never overwrites one, so every earlier revision stays readable.
Two readers' annotations of the same image are two annotations.

Content by label type (``data`` of a revision):

==============  ==============================================================
classification  ``{"value": "LR-4"}`` (one of the label's values, or
                ``present``/``absent`` when the label lists none)
bbox            ``{"box": [x0, y0, x1, y1]}`` pixel coordinates (column, row)
                on the target image; needs an instance target
polygon         ``{"points": [[x, y], ...]}`` (3 or more), same coordinates
mask            a boolean array on the series grid (``mask=``, ``geometry=``);
                ``data`` gets ``voxels`` and ``volume_mm3``
measurement     ``{"value": 12.5, "unit": "mm"}`` plus optional ``points`` and
                ``stats`` (``mean``, ``std``, ``min``, ``max``)
text            ``{"text": "..."}``, de-identified before it is stored
==============  ==============================================================

Imported objects name the images by their original UIDs; :class:`UidMapper`
finds the catalog rows through the node's keyed pseudonyms, the same mapping
the images went through.
"""

from __future__ import annotations

import datetime as dt
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.uid import generate_uid
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from mida.annotations.geometry import SeriesGeometry, geometry_of_series
from mida.annotations.schema import Label, Schema, parse_schema, version_key
from mida.catalog.models import (
    Annotation,
    AnnotationRevision,
    Instance,
    LabelSchema,
    Series,
    Study,
)
from mida.deid.freetext import FreeTextCleaner
from mida.deid.pseudonyms import Pseudonymizer
from mida.errors import AnnotationError, NotFoundError, SchemaError
from mida.storage.blobstore import BlobStore

STATUSES = ("draft", "submitted", "reviewed", "adjudicated")
READER_KINDS = ("person", "model")
LEVELS = ("study", "series", "instance", "frame")
MASK_MAGIC = b"MIDAMASK1\n"


# ----------------------------------------------------------------- schemas

def add_schema(s: Session, schema: Schema) -> tuple[LabelSchema, bool]:
    """Store a schema version; ``(row, created)``. Same content again is a no-op."""
    sha = schema.sha256()
    row = s.scalars(select(LabelSchema).where(LabelSchema.name == schema.name,
                                              LabelSchema.version == schema.version)).first()
    if row is not None:
        if row.sha256 != sha:
            raise SchemaError(
                f"schema {schema.ref} already exists with different content; a schema version "
                "is immutable: raise the version number to change it")
        return row, False
    row = LabelSchema(name=schema.name, version=schema.version, body=schema.canonical(),
                      sha256=sha)
    s.add(row)
    s.flush()
    return row, True


def get_schema(s: Session, ref: str) -> tuple[LabelSchema, Schema]:
    """``name`` (its newest version) or ``name@version``."""
    name, _, version = ref.partition("@")
    rows = list(s.scalars(select(LabelSchema).where(LabelSchema.name == name)))
    if version:
        rows = [r for r in rows if r.version == version]
    if not rows:
        known = sorted({f"{r.name}@{r.version}" for r in s.scalars(select(LabelSchema))})
        raise NotFoundError(f"no label schema {ref!r}; known: {', '.join(known) or 'none'} "
                            "(add one with 'mida labels add FILE')")
    row = max(rows, key=lambda r: version_key(r.version))
    return row, parse_schema(row.body, source=f"{row.name}@{row.version}")


def schema_of(s: Session, schema_id: int) -> Schema:
    row = s.get(LabelSchema, schema_id)
    if row is None:
        raise NotFoundError(f"no label schema with id {schema_id}")
    return parse_schema(row.body, source=f"{row.name}@{row.version}")


def list_schemas(s: Session) -> list[LabelSchema]:
    rows = list(s.scalars(select(LabelSchema)))
    return sorted(rows, key=lambda r: (r.name, version_key(r.version)))


# ----------------------------------------------------------------- targets

@dataclass
class Target:
    """What an annotation is about; ``level`` is study, series, instance or frame."""

    study: Study
    series: Series | None = None
    instance: Instance | None = None
    frame: int | None = None

    @property
    def level(self) -> str:
        if self.frame is not None:
            return "frame"
        if self.instance is not None:
            return "instance"
        return "series" if self.series is not None else "study"

    @property
    def collection_id(self) -> int:
        return self.study.collection_id


class UidMapper:
    """Find catalog rows by UID, as given or through the node's keyed pseudonyms.

    A UID already in the catalog (e.g. from a file exported by mida) is used
    as is; an original UID (from a hospital's SEG or RTSTRUCT) is mapped with
    the key that de-identified the images. Errors show only the pseudonym.
    """

    def __init__(self, s: Session, pseudonymizer: Pseudonymizer | None = None) -> None:
        self.s = s
        self.p = pseudonymizer

    def _find(self, model: Any, column: Any, uid: str, what: str) -> Any:
        uid = str(uid).rstrip("\x00 ")
        row = self.s.scalars(select(model).where(column == uid)).first()
        if row is None and self.p is not None:
            row = self.s.scalars(select(model).where(column == self.p.uid(uid))).first()
        if row is None:
            shown = self.p.uid(uid) if self.p is not None else "(given UID)"
            raise NotFoundError(
                f"the referenced {what} is not in the catalog (looked for it as given and as "
                f"its pseudonym {shown}); ingest its images first")
        return row

    def pseudonym(self, uid: str) -> str:
        """The catalog's UID for ``uid`` (itself when already in the catalog)."""
        return self.p.uid(uid) if self.p is not None else uid

    def study(self, uid: str) -> Study:
        return self._find(Study, Study.StudyInstanceUID, uid, "study")

    def series(self, uid: str) -> Series:
        return self._find(Series, Series.SeriesInstanceUID, uid, "series")

    def instance(self, uid: str) -> Instance:
        return self._find(Instance, Instance.SOPInstanceUID, uid, "instance")

    def target(self, *, study_uid: str | None = None, series_uid: str | None = None,
               sop_instance_uid: str | None = None, frame: int | None = None) -> Target:
        instance = series = study = None
        if sop_instance_uid:
            instance = self.instance(sop_instance_uid)
            series = self.s.get(Series, instance.series_id)
        elif series_uid:
            series = self.series(series_uid)
        if series is not None:
            study = self.s.get(Study, series.study_id)
        elif study_uid:
            study = self.study(study_uid)
        if study is None:
            raise AnnotationError("an annotation needs a target: a study, series or instance UID")
        if series_uid and series is not None and sop_instance_uid:
            given = self.series(series_uid)
            if given.id != series.id:
                raise AnnotationError("the instance is not in the given series")
        if frame is not None:
            if instance is None:
                raise AnnotationError("a frame target needs an instance")
            n = instance.NumberOfFrames or 1
            if not 1 <= frame <= n:
                raise AnnotationError(f"frame {frame} is outside the instance's 1..{n} frames")
        return Target(study=study, series=series, instance=instance, frame=frame)


# ----------------------------------------------------------------- masks

def encode_mask(mask: np.ndarray) -> bytes:
    """A boolean array as a small blob: magic + zlib(packbits) (shape is in the geometry)."""
    return MASK_MAGIC + zlib.compress(np.packbits(np.asarray(mask, dtype=bool)).tobytes(), 6)


def decode_mask(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    if not data.startswith(MASK_MAGIC):
        raise AnnotationError("the stored mask blob is not a mida mask")
    bits = np.frombuffer(zlib.decompress(data[len(MASK_MAGIC):]), dtype=np.uint8)
    n = int(np.prod(shape))
    return np.unpackbits(bits, count=n).astype(bool).reshape(shape)


def load_mask(store: BlobStore, rev: AnnotationRevision) -> np.ndarray:
    """The revision's mask as a boolean ``[slice, row, column]`` array."""
    if rev.mask_sha256 is None or rev.geometry is None:
        raise AnnotationError(f"revision {rev.revision} of this annotation has no mask")
    return decode_mask(store.get(rev.mask_sha256, verify=True), tuple(rev.geometry["shape"]))


# ----------------------------------------------------------------- validation

_cleaner = FreeTextCleaner()


def _num(v: Any, what: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise AnnotationError(f"{what} must be a number") from None
    if not math.isfinite(f):
        raise AnnotationError(f"{what} must be finite")
    return f


def _image_size(target: Target) -> tuple[int, int]:
    inst = target.instance
    if inst is None:
        raise AnnotationError("boxes and polygons are drawn on an image: give an instance target")
    return int(inst.Columns or 0), int(inst.Rows or 0)


def _check_points(points: Any, target: Target, what: str) -> list[list[float]]:
    if not isinstance(points, list) or not all(isinstance(p, list | tuple) and len(p) == 2
                                               for p in points):
        raise AnnotationError(f"{what} must be a list of [x, y] pixel coordinates")
    cols, rows = _image_size(target)
    out = []
    for p in points:
        x, y = _num(p[0], f"{what} x"), _num(p[1], f"{what} y")
        if not (-0.5 <= x <= cols + 0.5 and -0.5 <= y <= rows + 0.5):
            raise AnnotationError(f"{what} point ({x:g}, {y:g}) lies outside the "
                                  f"{cols}x{rows} image")
        out.append([round(x, 3), round(y, 3)])
    return out


def check_content(label: Label, target: Target, data: dict[str, Any],
                  mask: np.ndarray | None, geometry: SeriesGeometry | None,
                  series_geometry: SeriesGeometry | None) -> dict[str, Any]:
    """Validate content against the label; return the data to store."""
    data = dict(data or {})
    t = label.type
    if t != "mask" and mask is not None:
        raise AnnotationError(f"label {label.name!r} is a {t} label; it takes no mask")
    if t == "classification":
        want = {"study": "study", "series": "series", "image": ("instance", "frame")}[
            label.level or "study"]
        if target.level not in (want if isinstance(want, tuple) else (want,)):
            raise AnnotationError(f"label {label.name!r} classifies a {label.level}; "
                                  f"the target is a {target.level}")
        value = data.get("value")
        allowed = label.values or ["present", "absent"]
        if not isinstance(value, str) or value not in allowed:
            raise AnnotationError(f"label {label.name!r} takes one of: {', '.join(allowed)}")
        return {"value": value}
    if t == "bbox":
        box = data.get("box")
        if not isinstance(box, list) or len(box) != 4:
            raise AnnotationError("a box is [x0, y0, x1, y1] in pixel coordinates")
        (x0, y0), (x1, y1) = _check_points([box[:2], box[2:]], target, "the box")
        if x1 <= x0 or y1 <= y0:
            raise AnnotationError("a box needs x0 < x1 and y0 < y1")
        return {"box": [x0, y0, x1, y1]}
    if t == "polygon":
        pts = _check_points(data.get("points"), target, "the polygon")
        if len(pts) < 3:
            raise AnnotationError("a polygon needs at least 3 points")
        return {"points": pts}
    if t == "mask":
        if mask is None or geometry is None:
            raise AnnotationError(f"label {label.name!r} is a mask label: give a mask on the "
                                  "series grid")
        if target.series is None or target.instance is not None:
            raise AnnotationError("a mask annotates a series: give a series target")
        assert series_geometry is not None
        series_geometry.check_same_grid(geometry)
        if tuple(mask.shape) != tuple(series_geometry.shape):
            raise AnnotationError(f"the mask's array has shape {tuple(mask.shape)}; the series "
                                  f"grid is {series_geometry.shape}")
        voxels = int(np.count_nonzero(mask))
        vol = voxels * float(np.prod(series_geometry.spacing))
        if label.dims == 2 and voxels and len(np.flatnonzero(mask.any(axis=(1, 2)))) > 1:
            raise AnnotationError(f"label {label.name!r} is a 2D mask but the mask covers "
                                  "several slices")
        out = {"voxels": voxels, "volume_mm3": round(vol, 3)}
        if "source_segment" in data:
            out["source_segment"] = data["source_segment"]
        return out
    if t == "measurement":
        value = _num(data.get("value"), "the measurement value")
        unit = str(data.get("unit") or label.unit or "")
        if label.unit and unit != label.unit:
            raise AnnotationError(f"label {label.name!r} measures {label.measure} in "
                                  f"{label.unit}, not {unit}")
        out2: dict[str, Any] = {"value": value, "unit": unit}
        if data.get("points") is not None:
            out2["points"] = _check_points(data["points"], target, "the measurement")
        if data.get("stats") is not None:
            stats = data["stats"]
            if not isinstance(stats, dict):
                raise AnnotationError("stats is a mapping of mean/std/min/max")
            out2["stats"] = {k: _num(stats[k], f"stats.{k}") for k in
                             ("mean", "std", "min", "max") if k in stats}
        return out2
    # text
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise AnnotationError(f"label {label.name!r} is a free-text finding: give its text")
    cleaned = _cleaner.clean(text)
    return {"text": cleaned.text, "redactions": len(cleaned.removed)}


# ----------------------------------------------------------------- records

def _put_mask(store: BlobStore, mask: np.ndarray | None) -> str | None:
    if mask is None:
        return None
    return store.put(encode_mask(mask)).digest


def create(s: Session, store: BlobStore, *, target: Target, schema: LabelSchema, label: str,
           reader: str, reader_kind: str = "person", status: str = "draft",
           data: dict[str, Any] | None = None, mask: np.ndarray | None = None,
           geometry: SeriesGeometry | None = None, author: str | None = None,
           model_version: str | None = None, provenance: dict[str, Any] | None = None,
           task_id: int | None = None, comment: str = "") -> AnnotationRevision:
    """A new annotation with its first revision (flushed, not committed)."""
    parsed = parse_schema(schema.body, source=f"{schema.name}@{schema.version}")
    lb = parsed.label(label)
    if status not in STATUSES:
        raise AnnotationError(f"unknown status {status!r}: choose one of {', '.join(STATUSES)}")
    if reader_kind not in READER_KINDS:
        raise AnnotationError(f"reader kind is person or model, not {reader_kind!r}")
    if reader_kind == "model" and not model_version:
        raise AnnotationError("a model reader needs its version (model provenance)")
    if not reader or len(reader) > 64:
        raise AnnotationError("a reader name of 1 to 64 characters is needed")
    sg = geometry_of_series(s, target.series) if lb.type == "mask" and target.series else None
    clean = check_content(lb, target, data or {}, mask, geometry, sg)
    ann = Annotation(
        uid=generate_uid(), collection_id=target.collection_id, study_id=target.study.id,
        series_id=target.series.id if target.series else None,
        instance_id=target.instance.id if target.instance else None, frame=target.frame,
        level=target.level, schema_id=schema.id, label=lb.name, kind=lb.type, reader=reader,
        reader_kind=reader_kind, task_id=task_id)
    s.add(ann)
    s.flush()
    rev = AnnotationRevision(
        annotation_id=ann.id, revision=1, status=status, data=clean,
        mask_sha256=_put_mask(store, mask), geometry=sg.to_json() if sg else None,
        author=author or reader, model_version=model_version, provenance=provenance or {},
        comment=_cleaner.clean(comment).text if comment else "")
    s.add(rev)
    s.flush()
    return rev


def get(s: Session, uid: str) -> Annotation:
    ann = s.scalars(select(Annotation).where(Annotation.uid == uid)).first()
    if ann is None:
        raise NotFoundError(f"no annotation {uid}")
    return ann


def history(s: Session, ann: Annotation) -> list[AnnotationRevision]:
    return list(s.scalars(select(AnnotationRevision)
                          .where(AnnotationRevision.annotation_id == ann.id)
                          .order_by(AnnotationRevision.revision)))


def latest(s: Session, ann: Annotation) -> AnnotationRevision:
    rev = s.scalars(select(AnnotationRevision).where(AnnotationRevision.annotation_id == ann.id)
                    .order_by(AnnotationRevision.revision.desc()).limit(1)).first()
    assert rev is not None
    return rev


def revision(s: Session, ann: Annotation, n: int) -> AnnotationRevision:
    rev = s.scalars(select(AnnotationRevision).where(AnnotationRevision.annotation_id == ann.id,
                                                     AnnotationRevision.revision == n)).first()
    if rev is None:
        raise NotFoundError(f"annotation {ann.uid} has no revision {n}")
    return rev


_UNSET: Any = object()


def revise(s: Session, store: BlobStore, ann: Annotation, *, author: str,
           status: str | None = None, data: dict[str, Any] | None = None,
           mask: np.ndarray | None = None, geometry: SeriesGeometry | None = None,
           comment: str = "", provenance: dict[str, Any] | None = None,
           model_version: str | None = _UNSET) -> AnnotationRevision:
    """Add revision n+1; what is not given is carried over from revision n."""
    prev = latest(s, ann)
    status = status or prev.status
    if status not in STATUSES:
        raise AnnotationError(f"unknown status {status!r}: choose one of {', '.join(STATUSES)}")
    if data is None and mask is None and status == prev.status and not comment:
        raise AnnotationError("nothing to change: give new content, a status or a comment")
    mask_sha, geo = prev.mask_sha256, prev.geometry
    new_data = prev.data
    if data is not None or mask is not None:
        schema = schema_of(s, ann.schema_id)
        lb = schema.label(ann.label)
        target = Target(study=s.get(Study, ann.study_id),  # type: ignore[arg-type]
                        series=s.get(Series, ann.series_id) if ann.series_id else None,
                        instance=s.get(Instance, ann.instance_id) if ann.instance_id else None,
                        frame=ann.frame)
        sg = geometry_of_series(s, target.series) if lb.type == "mask" and target.series else None
        if lb.type == "mask":
            if mask is None:
                mask = load_mask(store, prev)
            geometry = geometry or sg
        new_data = check_content(lb, target, data if data is not None else dict(prev.data),
                                 mask, geometry, sg)
        if mask is not None:
            mask_sha, geo = _put_mask(store, mask), sg.to_json() if sg else None
    rev = AnnotationRevision(
        annotation_id=ann.id, revision=prev.revision + 1, status=status, data=new_data,
        mask_sha256=mask_sha, geometry=geo, author=author,
        model_version=prev.model_version if model_version is _UNSET else model_version,
        provenance=provenance if provenance is not None else prev.provenance,
        comment=_cleaner.clean(comment).text if comment else "")
    s.add(rev)
    s.flush()
    return rev


def latest_revisions() -> Select[Annotation, AnnotationRevision]:
    """``SELECT`` of every annotation with its latest revision, to filter further."""
    last = (select(AnnotationRevision.annotation_id,
                   func.max(AnnotationRevision.revision).label("rev"))
            .group_by(AnnotationRevision.annotation_id).subquery())
    return (select(Annotation, AnnotationRevision)
            .join(last, last.c.annotation_id == Annotation.id)
            .join(AnnotationRevision, (AnnotationRevision.annotation_id == Annotation.id)
                  & (AnnotationRevision.revision == last.c.rev)))


def query(s: Session, *, collection_ids: frozenset[int] | None = None,
          study_uid: str | None = None, series_uid: str | None = None,
          reader: str | None = None, status: str | None = None, label: str | None = None,
          task_id: int | None = None, schema_id: int | None = None,
          kind: str | None = None) -> list[tuple[Annotation, AnnotationRevision]]:
    """Annotations with their latest revision, filtered; newest first."""
    q = latest_revisions()
    if collection_ids is not None:
        q = q.where(Annotation.collection_id.in_(collection_ids))
    if study_uid:
        q = q.join(Study, Study.id == Annotation.study_id).where(
            Study.StudyInstanceUID == study_uid)
    if series_uid:
        q = q.join(Series, Series.id == Annotation.series_id).where(
            Series.SeriesInstanceUID == series_uid)
    if reader:
        q = q.where(Annotation.reader == reader)
    if status:
        q = q.where(AnnotationRevision.status == status)
    if label:
        q = q.where(Annotation.label == label)
    if task_id is not None:
        q = q.where(Annotation.task_id == task_id)
    if schema_id is not None:
        q = q.where(Annotation.schema_id == schema_id)
    if kind:
        q = q.where(Annotation.kind == kind)
    q = q.order_by(Annotation.id.desc())
    return [(a, r) for a, r in s.execute(q).all()]


def _iso(t: dt.datetime | None) -> str | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.isoformat()


def view(s: Session, ann: Annotation, rev: AnnotationRevision, *,
         blinded_for: str | None = None) -> dict[str, Any]:
    """A JSON-able description; ``blinded_for`` hides other readers' names."""
    study = s.get(Study, ann.study_id)
    series = s.get(Series, ann.series_id) if ann.series_id else None
    inst = s.get(Instance, ann.instance_id) if ann.instance_id else None
    schema = s.get(LabelSchema, ann.schema_id)
    hide = blinded_for is not None and ann.reader != blinded_for
    return {
        "uid": ann.uid,
        "label": ann.label,
        "kind": ann.kind,
        "schema": f"{schema.name}@{schema.version}" if schema else None,
        "target": {
            "level": ann.level,
            "StudyInstanceUID": study.StudyInstanceUID if study else None,
            "SeriesInstanceUID": series.SeriesInstanceUID if series else None,
            "SOPInstanceUID": inst.SOPInstanceUID if inst else None,
            "frame": ann.frame,
        },
        "reader": "(blinded)" if hide else ann.reader,
        "reader_kind": ann.reader_kind,
        "task_id": ann.task_id,
        "revision": rev.revision,
        "status": rev.status,
        "data": rev.data,
        "has_mask": rev.mask_sha256 is not None,
        "author": "(blinded)" if hide else rev.author,
        "model_version": rev.model_version,
        "provenance": rev.provenance,
        "comment": rev.comment,
        "created": _iso(rev.created),
    }
