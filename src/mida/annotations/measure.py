"""Measurements computed from a mask: volume, largest slice area, modality-value statistics.

:func:`measure_mask` reads a mask annotation's revision and its series' pixels
(modality values: HU on CT) and returns what a radiologist reports of a
segmented region. :func:`record_measurement` stores one of those numbers as a
``measurement`` annotation of the same series, with the mask's UID and
revision in its provenance, so the number can always be traced to the pixels
it came from.

=========  ===================================================================
volume     voxels x slice spacing x row spacing x column spacing (mm3)
area       the largest in-plane cross-section: voxels of the fullest slice x
           row spacing x column spacing (mm2)
hu_stats   mean, standard deviation (population), minimum and maximum of the
           modality values inside the mask; the value stored is the mean
=========  ===================================================================
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from mida.annotations import store
from mida.annotations.geometry import SeriesGeometry
from mida.annotations.volume import load_volume
from mida.catalog.models import Annotation, AnnotationRevision, LabelSchema, Series, Study
from mida.errors import AnnotationError
from mida.storage.blobstore import BlobStore

MEASURES = ("volume", "area", "hu_stats")


def measure_mask(s: Session, blobs: BlobStore, ann: Annotation,
                 rev: AnnotationRevision) -> dict[str, Any]:
    """Volume, largest slice area and value statistics of a mask revision."""
    if ann.kind != "mask":
        raise AnnotationError(f"annotation {ann.uid} is a {ann.kind}, not a mask")
    mask = store.load_mask(blobs, rev)
    assert rev.geometry is not None
    geometry = SeriesGeometry.from_json(rev.geometry)
    voxels = int(mask.sum())
    dz, dy, dx = geometry.spacing
    per_slice = mask.reshape(mask.shape[0], -1).sum(axis=1)
    out: dict[str, Any] = {
        "voxels": voxels,
        "volume_mm3": round(voxels * dz * dy * dx, 3),
        "area_mm2": round(float(per_slice.max(initial=0)) * dy * dx, 3),
        "largest_slice": int(per_slice.argmax()) if voxels else None,
        "stats": None,
    }
    if voxels:
        values = load_volume(s, blobs, geometry)[mask]
        out["stats"] = {"mean": round(float(values.mean()), 3),
                        "std": round(float(values.std()), 3),
                        "min": round(float(values.min()), 3),
                        "max": round(float(values.max()), 3)}
    return out


def record_measurement(s: Session, blobs: BlobStore, mask_uid: str, *, label: str,
                       author: str, schema: str | None = None,
                       status: str = "submitted") -> AnnotationRevision:
    """Store the mask's ``volume``/``area``/``hu_stats`` as a measurement annotation.

    ``label`` is a ``measurement`` label of the mask's schema (or of ``schema``)
    whose ``measure`` says which number is stored.
    """
    ann = store.get(s, mask_uid)
    rev = store.latest(s, ann)
    if schema is not None:
        schema_row, parsed = store.get_schema(s, schema)
    else:
        row = s.get(LabelSchema, ann.schema_id)
        assert row is not None
        schema_row, parsed = row, store.schema_of(s, ann.schema_id)
    lb = parsed.label(label)
    if lb.type != "measurement" or lb.measure not in MEASURES:
        raise AnnotationError(f"label {label!r} must be a measurement label measuring "
                              f"{', '.join(MEASURES)}; it is a {lb.type}"
                              + (f" of {lb.measure}" if lb.measure else ""))
    m = measure_mask(s, blobs, ann, rev)
    data: dict[str, Any]
    if lb.measure == "volume":
        data = {"value": m["volume_mm3"], "unit": "mm3"}
    elif lb.measure == "area":
        data = {"value": m["area_mm2"], "unit": "mm2"}
    else:
        if m["stats"] is None:
            raise AnnotationError(f"mask {mask_uid} is empty: it has no values to summarise")
        data = {"value": m["stats"]["mean"], "unit": lb.unit, "stats": m["stats"]}
    study = s.get(Study, ann.study_id)
    series = s.get(Series, ann.series_id) if ann.series_id else None
    assert study is not None
    return store.create(
        s, blobs, target=store.Target(study=study, series=series), schema=schema_row,
        label=label, reader=author, status=status, data=data,
        provenance={"tool": "mida annotations measure", "mask": ann.uid,
                    "mask_revision": rev.revision, "voxels": m["voxels"]},
        task_id=ann.task_id)
