"""COCO JSON: boxes, polygons and per-slice masks of 2D images (pycocotools).

Export
------
``export(node, options)`` writes ``annotations.json`` and, by default, an 8-bit
PNG of every image it names under ``images/`` (``images=False`` leaves them out):

``images``
    one per (instance, frame) that carries an annotation: ``id``,
    ``file_name`` = ``<SeriesInstanceUID>/<SOPInstanceUID>_<frame>.png`` (catalog
    UIDs, frame from 1; the PNG lies at ``images/<file_name>``), ``width``,
    ``height``, and ``dicom_study_instance_uid``, ``dicom_series_instance_uid``,
    ``dicom_sop_instance_uid``, ``frame``. The PNG is the stored de-identified
    frame with the modality LUT (rescale) and the file's first VOI window
    (Window Center/Width, linear, PS3.3 C.11.2.1.2), else its VOI LUT, else the
    frame's min..max, mapped to 0..255; MONOCHROME1 is inverted; colour stays RGB.
``categories``
    one per (schema, label) of the kinds below: ``id``, ``name`` = label name,
    ``supercategory`` = schema name, and ``schema`` (name@version), ``type``,
    ``concept`` (the coded concept), ``colour``.
``annotations``
    ``id``, ``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]``, ``area``,
    ``segmentation``, ``iscrowd`` and ``attributes`` (``reader``,
    ``reader_kind``, ``status``, ``revision``, ``annotation_uid``):

    * **bbox** labels: ``bbox`` from the box, ``segmentation`` the box as a
      4-corner polygon (so ``COCO.annToMask`` works), ``iscrowd`` 0;
    * **polygon** labels: ``segmentation`` ``[[x1, y1, x2, y2, ...]]``, ``bbox``
      and ``area`` of the rasterised polygon, ``iscrowd`` 0;
    * **mask** labels: one COCO annotation per slice the mask touches, with a
      compressed **RLE** ``segmentation`` (``pycocotools.mask.encode``, counts
      as ASCII) and ``iscrowd`` **0**: the RLE is exact where polygons would lose
      pixels, and ``iscrowd`` 1 would make COCO evaluation ignore the region as
      a crowd. ``attributes.slice`` gives the slice index on the series grid.

Coordinates are pixels from the image's top-left corner, x to the right and y
down (pixel (c, r) covers ``[c, c+1) x [r, r+1)``), as in mida.
Classification, measurement and text annotations have no place in COCO and are
counted in ``skipped``.

Import
------
``import_path(node, path, options)``:

* each image is matched to a stored instance by its ``dicom_sop_instance_uid``
  field or else its ``file_name``, whose last part (before ``.png``/``.jpg``,
  with an optional ``_<frame>`` suffix) is the SOP Instance UID; the UID may be
  the hospital's (mapped through the node's pseudonyms) or the catalog's. An
  image whose instance is not in the catalog is skipped and said so; its
  width/height must be the instance's Columns/Rows. ``options.series_uid``
  limits the import to that series;
* categories map to schema labels by ``options.label_map`` (category name or id
  -> label), else by name; without ``options.schema`` the categories'
  ``schema`` field (written by :func:`export`) names the schema;
* boxes become bbox annotations, polygon segmentations polygon annotations
  (one per polygon ring), and the RLE or polygon segmentations of mask labels
  are rasterised (pycocotools) and combined into **one mask annotation per
  (label, series)**, slices placed by the image's instance and frame; where the
  file's ``attributes.annotation_uid`` tells annotations apart (a mida export
  with several annotations of one label), each keeps its own mask;
* ``iscrowd`` is not used. The records keep the file's sha256, never the file;
  importing the same file again for the same reader creates nothing.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pycocotools import mask as mask_utils
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from sqlalchemy import select
from sqlalchemy.orm import Session

from mida import __version__
from mida.annotations import store
from mida.annotations.formats import (
    ExportOptions,
    ExportResult,
    ImportOptions,
    ImportResult,
    file_sha256,
    previous_import,
)
from mida.annotations.geometry import SeriesGeometry, geometry_of_series
from mida.annotations.schema import Label, Schema
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
from mida.errors import AnnotationError, GeometryMismatchError, NotFoundError, SchemaError

FORMAT = "coco"
KINDS = ("bbox", "polygon", "mask")
_UID_STEM = re.compile(r"^([0-9]+(?:\.[0-9]+)+?)(?:_([0-9]+))?$")
_cleaner = FreeTextCleaner()


# ----------------------------------------------------------------- rendering

def _window(ds: Dataset, frame: int) -> tuple[float, float] | None:
    def first(v: Any) -> float | None:
        if v is None or v == "":
            return None
        return float(v[0]) if isinstance(v, pydicom.multival.MultiValue | list) else float(v)

    c, w = first(ds.get("WindowCenter")), first(ds.get("WindowWidth"))
    if c is None or w is None:
        for seq in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
            items = ds.get(seq) or []
            fg = items[frame - 1] if seq.startswith("PerFrame") and len(items) >= frame \
                else (items[0] if items and not seq.startswith("PerFrame") else None)
            voi = (fg.get("FrameVOILUTSequence") or [None])[0] if fg is not None else None
            if voi is not None and voi.get("WindowCenter") is not None:
                c, w = first(voi.get("WindowCenter")), first(voi.get("WindowWidth"))
                break
    if c is None or w is None or w < 1:
        return None
    return c, w


def render_frame(ds: Dataset, frame: int = 1) -> np.ndarray:
    """An 8-bit rendering of one frame (see the module docstring): ``[row, column(, rgb)]``."""
    px = ds.pixel_array
    nframes = int(ds.get("NumberOfFrames") or 1)
    if nframes > 1:
        px = px[frame - 1]
    if int(ds.get("SamplesPerPixel") or 1) > 1:
        rgb = px.astype(np.float64)
        top = float(2 ** int(ds.get("BitsStored") or 8) - 1)
        return np.asarray(np.clip(np.round(rgb / top * 255), 0, 255), dtype=np.uint8)
    values = np.asarray(apply_modality_lut(px, ds), dtype=np.float64)
    win = _window(ds, frame)
    if win is not None:
        c, w = win
        scaled = ((values - (c - 0.5)) / (w - 1) + 0.5) * 255 if w > 1 else \
            np.where(values > c - 0.5, 255.0, 0.0)
    else:
        if "VOILUTSequence" in ds:
            values = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        scaled = (values - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(values)
    out = np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        out = 255 - out
    return out


# ----------------------------------------------------------------- export

def rle_of(mask2d: np.ndarray) -> dict[str, Any]:
    """A 2D mask as COCO compressed RLE (counts as text, as COCO JSON stores it)."""
    rle = mask_utils.encode(np.asfortranarray(mask2d.astype(np.uint8)))
    return {"size": [int(x) for x in rle["size"]], "counts": rle["counts"].decode("ascii")}


def poly_stats(flat: list[float], h: int, w: int) -> tuple[list[float], float]:
    """A polygon's COCO ``bbox`` and pixel ``area`` on an ``h`` x ``w`` image."""
    rle = mask_utils.merge(mask_utils.frPyObjects([flat], h, w))
    xs, ys = flat[0::2], flat[1::2]
    bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    return [round(float(v), 3) for v in bbox], float(mask_utils.area(rle))


def export(node: Any, options: ExportOptions, *, images: bool = True) -> ExportResult:
    """Write ``annotations.json`` (and ``images/``) into ``options.out``."""
    result = ExportResult()
    blob = node.store()
    coco_images: dict[tuple[str, int], dict[str, Any]] = {}
    categories: dict[tuple[int, str], dict[str, Any]] = {}
    anns: list[dict[str, Any]] = []
    with node.catalog().session() as s:
        schema_id = store.get_schema(s, options.schema)[0].id if options.schema else None
        rows = store.query(s, collection_ids=options.collection_ids, series_uid=options.series_uid,
                           reader=options.reader, status=options.status, task_id=options.task_id,
                           schema_id=schema_id)
        other = [a for a, _ in rows if a.kind not in KINDS]
        if other:
            result.skipped.append(f"{len(other)} classification/measurement/text annotation(s): "
                                  "COCO holds boxes, polygons and masks only")
        schemas: dict[int, tuple[LabelSchema, Schema]] = {}
        inst_cache: dict[str, Instance] = {}

        def instance(uid: str) -> Instance:
            if uid not in inst_cache:
                row = s.scalars(select(Instance).where(Instance.SOPInstanceUID == uid)).first()
                if row is None:
                    raise NotFoundError(f"instance {uid} is no longer in the catalog")
                inst_cache[uid] = row
            return inst_cache[uid]

        def image_id(inst: Instance, frame: int) -> int:
            key = (inst.SOPInstanceUID, frame)
            if key not in coco_images:
                series = s.get(Series, inst.series_id)
                assert series is not None
                study = s.get(Study, series.study_id)
                assert study is not None
                coco_images[key] = {
                    "id": len(coco_images) + 1,
                    "file_name": f"{series.SeriesInstanceUID}/{inst.SOPInstanceUID}_{frame}.png",
                    "width": int(inst.Columns or 0), "height": int(inst.Rows or 0),
                    "dicom_study_instance_uid": study.StudyInstanceUID,
                    "dicom_series_instance_uid": series.SeriesInstanceUID,
                    "dicom_sop_instance_uid": inst.SOPInstanceUID, "frame": frame,
                    "_blob": inst.blob_sha256,
                }
            return int(coco_images[key]["id"])

        def category_id(ann: Annotation) -> int:
            key = (ann.schema_id, ann.label)
            if key not in categories:
                if ann.schema_id not in schemas:
                    row = s.get(LabelSchema, ann.schema_id)
                    assert row is not None
                    schemas[ann.schema_id] = (row, store.schema_of(s, ann.schema_id))
                row, schema = schemas[ann.schema_id]
                lb = schema.label(ann.label)
                categories[key] = {"id": len(categories) + 1, "name": lb.name,
                                   "supercategory": schema.name, "schema": schema.ref,
                                   "type": lb.type, "concept": lb.concept.model_dump(),
                                   "colour": lb.colour}
            return int(categories[key]["id"])

        for ann, rev in sorted((r for r in rows if r[0].kind in KINDS), key=lambda r: r[0].id):
            attrs = {"reader": ann.reader, "reader_kind": ann.reader_kind, "status": rev.status,
                     "revision": rev.revision, "annotation_uid": ann.uid}
            if ann.kind in ("bbox", "polygon"):
                inst = s.get(Instance, ann.instance_id) if ann.instance_id else None
                if inst is None:
                    result.skipped.append(f"annotation {ann.uid}: not on an image")
                    continue
                h, w = int(inst.Rows or 0), int(inst.Columns or 0)
                if ann.kind == "bbox":
                    x0, y0, x1, y1 = (float(v) for v in rev.data["box"])
                    flat = [x0, y0, x1, y0, x1, y1, x0, y1]
                    bbox = [x0, y0, round(x1 - x0, 3), round(y1 - y0, 3)]
                    area = round((x1 - x0) * (y1 - y0), 3)
                else:
                    flat = [float(c) for p in rev.data["points"] for c in p]
                    bbox, area = poly_stats(flat, h, w)
                anns.append({"id": len(anns) + 1, "image_id": image_id(inst, ann.frame or 1),
                             "category_id": category_id(ann), "bbox": bbox, "area": area,
                             "segmentation": [flat], "iscrowd": 0, "attributes": attrs})
                result.annotations += 1
                continue
            if rev.geometry is None:
                result.skipped.append(f"annotation {ann.uid}: no mask")
                continue
            g = SeriesGeometry.from_json(rev.geometry)
            mask = store.load_mask(blob, rev)
            for k in np.flatnonzero(mask.any(axis=(1, 2))):
                sl = g.slices[int(k)]
                rle = rle_of(mask[k])
                enc = dict(rle, counts=rle["counts"].encode("ascii"))
                anns.append({
                    "id": len(anns) + 1,
                    "image_id": image_id(instance(sl.sop_instance_uid), sl.frame),
                    "category_id": category_id(ann),
                    "bbox": [float(v) for v in mask_utils.toBbox(enc)],
                    "area": float(mask_utils.area(enc)), "segmentation": rle, "iscrowd": 0,
                    "attributes": dict(attrs, slice=int(k))})
            result.annotations += 1
        if images:
            _write_pngs(s, blob, coco_images, options.out / "images", result)
    body = {
        "info": {"description": "mida annotation export", "version": "1.0",
                 "contributor": f"mida {__version__}",
                 "date_created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
        "licenses": [],
        "images": [{k: v for k, v in im.items() if not k.startswith("_")}
                   for im in coco_images.values()],
        "categories": list(categories.values()),
        "annotations": anns,
    }
    out = options.out / "annotations.json"
    out.write_text(json.dumps(body), encoding="utf-8")
    result.files.insert(0, out)
    return result


def _write_pngs(s: Session, blob: Any, coco_images: dict[tuple[str, int], dict[str, Any]],
                folder: Path, result: ExportResult) -> None:
    datasets: dict[str, Dataset | None] = {}
    for (sop, frame), im in coco_images.items():
        if sop not in datasets:
            datasets = {sop: pydicom.dcmread(io.BytesIO(blob.get(im["_blob"])))}
        ds = datasets[sop]
        assert ds is not None
        try:
            pixels = render_frame(ds, frame)
        except Exception as exc:  # a transfer syntax this install cannot decode
            result.skipped.append(f"image {im['file_name']}: not rendered "
                                  f"({type(exc).__name__}); its annotations are exported")
            continue
        path = folder / im["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        result.files.append(path)


# ----------------------------------------------------------------- import

def _load(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AnnotationError(f"{path.name}: not a readable COCO JSON file "
                              f"({type(exc).__name__})") from None
    if not isinstance(body, dict) or not all(isinstance(body.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise AnnotationError(f"{path.name}: a COCO file is a JSON object with lists 'images', "
                              "'annotations' and 'categories'")
    return body


def _shown(text: Any) -> str:
    """A file's name for a category, de-identified and short, for messages."""
    return _cleaner.clean(str(text)[:64]).text


def _schema(s: Session, path: Path, body: dict[str, Any],
            options: ImportOptions) -> tuple[LabelSchema, Schema]:
    if options.schema:
        return store.get_schema(s, options.schema)
    refs = {c.get("schema") for c in body["categories"] if isinstance(c, dict)}
    if len(refs) == 1 and isinstance(next(iter(refs)), str):
        return store.get_schema(s, str(next(iter(refs))))
    raise SchemaError(f"{path.name}: give --schema NAME[@VERSION]: the file's categories do not "
                      "name one mida schema")


def _categories(path: Path, body: dict[str, Any], schema: Schema, options: ImportOptions,
                used: set[Any]) -> dict[Any, Label]:
    out: dict[Any, Label] = {}
    bad = []
    for c in body["categories"]:
        if not isinstance(c, dict) or c.get("id") not in used:
            continue
        name = str(c.get("name", ""))
        target = options.label_map.get(name) or options.label_map.get(str(c["id"])) or name
        lb = next((x for x in schema.labels if x.name == target), None)
        if lb is None or lb.type not in KINDS:
            bad.append(f"{_shown(name)!r} (id {c['id']})"
                       + (f" -> {lb.name}, a {lb.type} label" if lb else ""))
            continue
        out[c["id"]] = lb
    missing = sorted({str(u) for u in used} - {str(k) for k in out} - {
        str(c.get("id")) for c in body["categories"] if isinstance(c, dict)})
    if missing:
        bad.append("category ids without a category entry: " + ", ".join(missing))
    if bad:
        raise SchemaError(
            f"{path.name}: categories without a box, polygon or mask label in {schema.ref}: "
            + "; ".join(bad) + "; its labels: "
            + ", ".join(f"{x.name} ({x.type})" for x in schema.labels if x.type in KINDS)
            + " (map them with --label-map CATEGORY=LABEL)")
    return out


def _image_ref(im: dict[str, Any]) -> tuple[str | None, int]:
    uid = im.get("dicom_sop_instance_uid")
    frame = im.get("frame")
    if not uid:
        stem = re.sub(r"\.(png|jpe?g|tiff?|bmp|dcm)$", "", str(im.get("file_name", "")),
                      flags=re.IGNORECASE).replace("\\", "/").rsplit("/", 1)[-1]
        m = _UID_STEM.match(stem)
        if m:
            uid = m.group(1)
            frame = frame or (int(m.group(2)) if m.group(2) else None)
    try:
        f = int(frame) if frame is not None else 1
    except (TypeError, ValueError):
        f = 1
    return (str(uid) if uid else None), f


def _decode(segm: Any, h: int, w: int) -> np.ndarray:
    if isinstance(segm, list):
        polys = [p for p in segm if isinstance(p, list) and len(p) >= 6]
        if not polys:
            raise AnnotationError("no polygon with 3 or more points")
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    elif isinstance(segm, dict) and "counts" in segm:
        if [int(x) for x in segm.get("size", [])] != [h, w]:
            raise GeometryMismatchError(f"the RLE is {segm.get('size')} (height, width) but the "
                                        f"image is [{h}, {w}]")
        rle = mask_utils.frPyObjects(segm, h, w) if isinstance(segm["counts"], list) else segm
    else:
        raise AnnotationError("no segmentation (polygons or RLE)")
    return np.asarray(mask_utils.decode(rle), dtype=bool)


def import_path(node: Any, path: Path, options: ImportOptions) -> ImportResult:
    """Import a COCO JSON file (see the module docstring)."""
    sha = file_sha256(path)
    body = _load(path)
    result = ImportResult(file_sha256=sha)
    with node.catalog().session() as s:
        row, schema = _schema(s, path, body, options)
        result.schema = schema.ref
        done = previous_import(s, sha, options, path.name, schema.ref)
        if done is not None:
            return done
        anns = [a for a in body["annotations"] if isinstance(a, dict)]
        labels = _categories(path, body, schema, options, {a.get("category_id") for a in anns})
        mapper = store.UidMapper(s, Pseudonymizer(node.key()))
        only = mapper.series(options.series_uid) if options.series_uid else None
        images: dict[Any, tuple[Instance, int]] = {}
        used_images = {a.get("image_id") for a in anns}
        for im in body["images"]:
            if not isinstance(im, dict) or im.get("id") not in used_images:
                continue
            uid, frame = _image_ref(im)
            if uid is None:
                result.skipped.append(f"image {im.get('id')}: neither dicom_sop_instance_uid nor "
                                      "a file_name of the form <SOPInstanceUID>[_<frame>].png; "
                                      "its annotations are not imported")
                continue
            try:
                inst = mapper.instance(uid)
            except NotFoundError as exc:
                result.skipped.append(f"image {im.get('id')}: {exc}")
                continue
            if only is not None and inst.series_id != only.id:
                result.skipped.append(f"image {im.get('id')}: not in series "
                                      f"{only.SeriesInstanceUID}; not imported")
                continue
            size = (int(im.get("height") or inst.Rows or 0), int(im.get("width") or inst.Columns
                                                                  or 0))
            if size != (int(inst.Rows or 0), int(inst.Columns or 0)):
                raise GeometryMismatchError(
                    f"{path.name}: image {im.get('id')} is {size[1]}x{size[0]} (width x height) "
                    f"but instance {inst.SOPInstanceUID} is {inst.Columns}x{inst.Rows}: "
                    "coordinates of a resized image do not fit the DICOM pixels")
            if not 1 <= frame <= int(inst.NumberOfFrames or 1):
                raise AnnotationError(f"{path.name}: image {im.get('id')} names frame {frame} of "
                                      f"instance {inst.SOPInstanceUID}, which has "
                                      f"{int(inst.NumberOfFrames or 1)}")
            images[im.get("id")] = (inst, frame)
        if not images and anns:
            raise NotFoundError(f"{path.name}: none of its images is a stored instance "
                                + (f"({result.skipped[0]})" if result.skipped else ""))
        prov = {"format": FORMAT, "file_sha256": sha, "tool": f"mida {__version__}"}
        blob = node.store()
        common: dict[str, Any] = {
            "schema": row, "reader": options.reader, "reader_kind": options.reader_kind,
            "status": options.status, "author": options.author,
            "model_version": options.model_version}
        masks: dict[tuple[str, int, str | None, int | None], dict[str, Any]] = {}
        geometries: dict[int, SeriesGeometry] = {}
        for a in anns:
            lb = labels[a.get("category_id")]
            if a.get("image_id") not in images:
                continue
            inst, frame = images[a.get("image_id")]
            multi = int(inst.NumberOfFrames or 1) > 1
            where = f"annotation {a.get('id')}"
            try:
                if lb.type in ("bbox", "polygon"):
                    target = mapper.target(sop_instance_uid=inst.SOPInstanceUID,
                                           frame=frame if multi else None)
                    shapes = _shapes(lb, a)
                    for data in shapes:
                        rev = store.create(s, blob, target=target, label=lb.name, data=data,
                                           provenance=dict(prov, coco_ids=[a.get("id")]),
                                           **common)
                        _created(s, rev, result)
                    continue
                m2d = _decode(a.get("segmentation"), int(inst.Rows or 0),
                              int(inst.Columns or 0))
            except (AnnotationError, GeometryMismatchError) as exc:
                raise type(exc)(f"{path.name}: {where}: {exc}") from None
            series = s.get(Series, inst.series_id)
            assert series is not None
            if series.id not in geometries:
                geometries[series.id] = geometry_of_series(s, series)
            g = geometries[series.id]
            k = g.slice_of(inst.SOPInstanceUID, frame)
            source = (a.get("attributes") or {}).get("annotation_uid") \
                if isinstance(a.get("attributes"), dict) else None
            # a 2D mask label keeps one annotation per slice
            key = (lb.name, series.id, str(source) if source else None,
                   int(k) if lb.dims == 2 else None)
            entry = masks.setdefault(key, {"mask": np.zeros(g.shape, dtype=bool), "ids": []})
            entry["mask"][k] |= m2d
            entry["ids"].append(a.get("id"))
        for (label, series_id, source, _), entry in masks.items():
            if not entry["mask"].any():
                result.skipped.append(f"label {label}: the segmentation is empty")
                continue
            series = s.get(Series, series_id)
            assert series is not None
            target = mapper.target(series_uid=series.SeriesInstanceUID)
            extra = {"coco_ids": entry["ids"]} | ({"source_annotation": source} if source else {})
            rev = store.create(s, blob, target=target, label=label, mask=entry["mask"],
                               geometry=geometries[series_id], provenance=dict(prov, **extra),
                               **common)
            _created(s, rev, result)
    return result


def _shapes(lb: Label, a: dict[str, Any]) -> list[dict[str, Any]]:
    if lb.type == "bbox":
        box = a.get("bbox")
        if not isinstance(box, list) or len(box) != 4:
            raise AnnotationError("a box label needs bbox [x, y, width, height]")
        x, y, w, h = (float(v) for v in box)
        return [{"box": [x, y, x + w, y + h]}]
    segm = a.get("segmentation")
    if not isinstance(segm, list) or not segm:
        raise AnnotationError(f"label {lb.name!r} is a polygon label: give polygon "
                              "segmentation [[x1, y1, x2, y2, ...]], not an RLE")
    out = []
    for poly in segm:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            raise AnnotationError("a polygon is a flat list of 3 or more x, y pairs")
        out.append({"points": [[float(poly[i]), float(poly[i + 1])]
                               for i in range(0, len(poly), 2)]})
    return out


def _created(s: Session, rev: AnnotationRevision, result: ImportResult) -> None:
    ann = s.get(Annotation, rev.annotation_id)
    assert ann is not None
    result.created.append(ann.uid)
