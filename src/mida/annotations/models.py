"""AI pre-annotation: models registered as entry points draft annotations for people.

A model is an entry point in the ``mida.models`` group (``pyproject.toml``)::

    [project.entry-points."mida.models"]
    threshold = "mida.annotations.baseline:ThresholdModel"

It resolves to a class or factory called with the run's parameters
(``--param threshold=100`` -> ``factory(threshold=100)``); the object has

* ``name`` — the reader name its annotations carry;
* ``version`` — recorded on every annotation (``model_version``);
* ``labels`` — the schema label types it produces (``mask``, ``bbox``,
  ``classification``, ``measurement``);
* ``predict(volume, geometry) -> list[Prediction]`` — ``volume`` is the
  series' modality values (HU on CT) as float32 ``[slice, row, column]``
  (:func:`mida.annotations.volume.load_volume`), ``geometry`` its
  :class:`~mida.annotations.geometry.SeriesGeometry`;
* optionally ``params()`` — the effective parameters, defaults included,
  recorded in the provenance.

:func:`preannotate` runs a model over series and stores each prediction as a
**draft** annotation with ``reader`` = the model's name, ``reader_kind`` =
``model``, ``model_version`` and provenance ``{"tool": "mida preannotate",
"model", "version", "params", "entry_point", "score"}``. A person then confirms
it (:func:`mida.annotations.store.revise` with ``status="submitted"``, author =
the person) or corrects it (a revision with new content); the model's
revision 1 stays readable. A series the same model version already
pre-annotated with the same label is skipped, so a rerun adds nothing.

All predictions of a run are made before anything is written: when the model
raises on any series, the error names the model and nothing is stored.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from mida.annotations import store as ann_store
from mida.annotations.geometry import SeriesGeometry, geometry_of_series
from mida.catalog.models import Annotation, AnnotationRevision, Collection, Series, Study
from mida.errors import AnnotationError, NotFoundError
from mida.storage.blobstore import BlobStore

GROUP = "mida.models"
PREDICTABLE = ("mask", "bbox", "classification", "measurement")


@dataclass
class Prediction:
    """One finding of a model.

    ``label`` None means the label the run was asked for. Give ``mask`` (a
    boolean array on the series grid), or ``box`` ``[x0, y0, x1, y1]`` on
    ``slice`` (index into the grid's slices), or ``value`` (a classification
    value, or a number for a measurement; ``slice`` for image-level labels).
    ``score`` is the model's confidence, recorded in the provenance.
    """

    mask: np.ndarray | None = None
    box: Sequence[float] | None = None
    value: str | float | None = None
    score: float | None = None
    label: str | None = None
    slice: int | None = None
    unit: str | None = None


class Model(Protocol):
    name: str
    version: str
    labels: Sequence[str]

    def predict(self, volume: np.ndarray, geometry: SeriesGeometry) -> list[Prediction]: ...


def entry_points() -> list[importlib.metadata.EntryPoint]:
    """The installed ``mida.models`` entry points, by name."""
    return sorted(importlib.metadata.entry_points(group=GROUP), key=lambda e: e.name)


def list_models() -> list[dict[str, Any]]:
    """Each registered model: name, version, label types, entry point (or why it won't load)."""
    out = []
    for ep in entry_points():
        row: dict[str, Any] = {"name": ep.name, "entry_point": ep.value}
        try:
            factory = ep.load()
            row.update({"model": str(getattr(factory, "name", ep.name)),
                        "version": str(getattr(factory, "version", "")),
                        "labels": list(getattr(factory, "labels", ()))})
        except Exception as exc:  # a broken plugin must not hide the others
            row["error"] = f"cannot load: {type(exc).__name__}: {exc}"
        out.append(row)
    return out


def load_model(name: str, params: dict[str, Any] | None = None) -> tuple[Any, str]:
    """Instantiate the registered model ``name`` with ``params``; ``(model, entry point)``."""
    eps = {ep.name: ep for ep in entry_points()}
    ep = eps.get(name)
    if ep is None:
        raise NotFoundError(f"no model {name!r} is registered; registered models: "
                            f"{', '.join(sorted(eps)) or 'none'} (a model is an entry point "
                            f"in the {GROUP!r} group)")
    try:
        factory: Callable[..., Any] = ep.load()
    except Exception as exc:
        raise AnnotationError(f"model {name!r} ({ep.value}) cannot be loaded: "
                              f"{type(exc).__name__}: {exc}") from None
    try:
        model = factory(**(params or {}))
    except TypeError as exc:
        raise AnnotationError(f"model {name!r} does not take these parameters "
                              f"({', '.join(sorted(params or {})) or 'none'}): {exc}") from None
    except ValueError as exc:
        raise AnnotationError(f"model {name!r}: bad parameter: {exc}") from None
    for attr in ("name", "version", "labels", "predict"):
        if not hasattr(model, attr):
            raise AnnotationError(f"model {name!r} ({ep.value}) has no {attr!r}: a model "
                                  "needs name, version, labels and predict(volume, geometry)")
    return model, ep.value


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings; values read as JSON (numbers, true/false, null), else text."""
    out: dict[str, Any] = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not k.strip():
            raise AnnotationError(f"a model parameter is KEY=VALUE, not {p!r}")
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


@dataclass
class PreannotateResult:
    model: str
    version: str
    created: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    series: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "series": self.series,
                "created": len(self.created), "annotations": self.created,
                "skipped": self.skipped}


def _series_of(s: Session, *, series: Sequence[str] | None, task: str | None,
               collection: str | None) -> tuple[list[Series], int | None]:
    given = sum(x is not None and x != [] for x in (series, task, collection))
    if given != 1:
        raise AnnotationError("choose the images: --series UID, --task NAME or --collection NAME "
                              "(exactly one)")
    if series:
        rows = []
        for uid in series:
            row = s.scalars(select(Series).where(Series.SeriesInstanceUID == uid)).first()
            if row is None:
                raise NotFoundError(f"no series {uid} in the catalog")
            rows.append(row)
        return rows, None
    if task is not None:
        from mida.annotations.tasks import get_task, task_cases

        t = get_task(s, task)
        return [s.get(Series, c.series_id) for c in task_cases(s, t)], t.id  # type: ignore[misc]
    from mida.annotations.tasks import image_series

    cid = s.scalars(select(Collection.id).where(Collection.name == collection)).first()
    if cid is None:
        raise NotFoundError(f"no collection {collection!r}")
    return image_series(s, cid), None


def _already(s: Session, series_id: int, reader: str, version: str, label: str) -> bool:
    q = (select(Annotation.id).join(AnnotationRevision,
                                    AnnotationRevision.annotation_id == Annotation.id)
         .where(Annotation.series_id == series_id, Annotation.reader == reader,
                Annotation.reader_kind == "model", Annotation.label == label,
                AnnotationRevision.revision == 1, AnnotationRevision.model_version == version))
    return s.scalars(q.limit(1)).first() is not None


def preannotate(s: Session, store: BlobStore, *, model: str, schema: str, label: str,
                series: Sequence[str] | None = None, task: str | None = None,
                collection: str | None = None, params: dict[str, Any] | None = None,
                collection_ids: frozenset[int] | None = None) -> PreannotateResult:
    """Run a registered model and store its predictions as drafts (see the module docstring).

    Rows are flushed, not committed: the caller's session commits them, or
    rolls them back with the error. ``collection_ids`` limits which
    collections' series may be read (None: all).
    """
    from mida.annotations.volume import load_volume

    schema_row, parsed = ann_store.get_schema(s, schema)
    lb = parsed.label(label)
    m, ep_value = load_model(model, params)
    mname, mversion = str(m.name), str(m.version)
    types = list(m.labels)
    if lb.type not in types:
        raise AnnotationError(f"model {mname!r} produces {', '.join(types) or 'no'} labels; "
                              f"label {lb.name!r} is a {lb.type} label")
    effective = m.params() if hasattr(m, "params") else dict(params or {})
    rows, task_id = _series_of(s, series=series, task=task, collection=collection)
    result = PreannotateResult(model=mname, version=mversion)
    planned: list[tuple[Series, SeriesGeometry, Prediction, bytes | None]] = []
    for row in rows:
        study = s.get(Study, row.study_id)
        assert study is not None
        if collection_ids is not None and study.collection_id not in collection_ids:
            raise NotFoundError(f"no series {row.SeriesInstanceUID} in the catalog")
        result.series += 1
        if _already(s, row.id, mname, mversion, lb.name):
            result.skipped.append(f"series {row.SeriesInstanceUID}: already pre-annotated by "
                                  f"{mname} {mversion} with {lb.name}")
            continue
        geometry = geometry_of_series(s, row)
        volume = load_volume(s, store, geometry)
        try:
            predictions = list(m.predict(volume, geometry))
        except Exception as exc:
            raise AnnotationError(
                f"model {mname!r} (version {mversion}) failed on series "
                f"{row.SeriesInstanceUID}: {type(exc).__name__}: {exc}; nothing was stored"
            ) from None
        mine = [p for p in predictions if p.label in (None, lb.name)]
        if len(mine) < len(predictions):
            others = sorted({str(p.label) for p in predictions if p.label not in (None, lb.name)})
            result.skipped.append(f"series {row.SeriesInstanceUID}: predictions for other "
                                  f"labels ({', '.join(others)}) not stored")
        if not mine:
            result.skipped.append(f"series {row.SeriesInstanceUID}: no finding")
        for p in mine:
            packed = None
            if p.mask is not None:
                mask = np.asarray(p.mask, dtype=bool)
                if mask.shape != geometry.shape:
                    raise AnnotationError(
                        f"model {mname!r} returned a mask of shape {mask.shape} for series "
                        f"{row.SeriesInstanceUID}, whose grid is {geometry.shape}; nothing "
                        "was stored")
                packed = ann_store.encode_mask(mask)
            planned.append((row, geometry, p, packed))
    for row, geometry, p, packed in planned:
        rev = _store_prediction(s, store, schema_row, lb.name, lb.type, lb.level, row, geometry,
                                p, packed, mname, mversion, ep_value, effective, task_id)
        ann = s.get(Annotation, rev.annotation_id)
        assert ann is not None
        result.created.append(ann.uid)
    return result


def _store_prediction(s: Session, store: BlobStore, schema_row: Any, label: str, kind: str,
                      level: str | None, row: Series, geometry: SeriesGeometry, p: Prediction,
                      packed: bytes | None, mname: str, mversion: str, ep_value: str,
                      params: dict[str, Any], task_id: int | None) -> AnnotationRevision:
    mapper = ann_store.UidMapper(s)
    where = f"series {row.SeriesInstanceUID}"

    def image_target() -> ann_store.Target:
        if p.slice is None or not 0 <= p.slice < geometry.shape[0]:
            raise AnnotationError(f"model {mname!r}: a {kind} prediction on {where} needs a "
                                  f"slice index in 0..{geometry.shape[0] - 1}")
        ref = geometry.slices[p.slice]
        t = mapper.target(sop_instance_uid=ref.sop_instance_uid)
        n = (t.instance.NumberOfFrames or 1) if t.instance is not None else 1
        if n > 1:
            t.frame = ref.frame
        return t

    data: dict[str, Any] = {}
    mask = None
    if kind == "mask":
        if packed is None:
            raise AnnotationError(f"model {mname!r} gave no mask for {where}")
        mask = ann_store.decode_mask(packed, geometry.shape)
        target = mapper.target(series_uid=row.SeriesInstanceUID)
    elif kind == "bbox":
        target = image_target()
        data = {"box": list(p.box) if p.box is not None else None}
    elif kind == "classification":
        target = image_target() if level == "image" else (
            mapper.target(series_uid=row.SeriesInstanceUID) if level == "series"
            else mapper.target(study_uid=geometry.study_uid))
        data = {"value": p.value}
    else:  # measurement
        target = image_target() if p.slice is not None else mapper.target(
            series_uid=row.SeriesInstanceUID)
        data = {"value": p.value, **({"unit": p.unit} if p.unit else {})}
    provenance = {"tool": "mida preannotate", "model": mname, "version": mversion,
                  "params": params, "entry_point": ep_value,
                  "score": None if p.score is None else round(float(p.score), 6)}
    try:
        return ann_store.create(
            s, store, target=target, schema=schema_row, label=label, reader=mname,
            reader_kind="model", status="draft", data=data, mask=mask,
            geometry=geometry if mask is not None else None, model_version=mversion,
            provenance=provenance, task_id=task_id)
    except AnnotationError as exc:
        raise AnnotationError(f"model {mname!r} gave an unusable prediction for {where}: "
                              f"{exc}") from None
