"""COCO: 8-bit PNG images and one COCO JSON per split (pycocotools reads it).

Layout::

    coco/annotations/<split>.json
    coco/images/<split>/<SeriesInstanceUID>/<SOPInstanceUID>_<frame>.png

Which images: every frame of a 2D series (CR, DX, MG, US and other projection
or photographic modalities, or a series of one frame); for a volume (CT, MR,
PET...) the slices that carry a mask, box or polygon. PNGs are rendered as in
:func:`mida.annotations.formats.coco.render_frame`: the modality LUT, then the
file's first Window Center/Width, else its VOI LUT, else the frame's min..max;
MONOCHROME1 inverted; colour kept.

Each JSON follows :mod:`mida.annotations.formats.coco`'s export: ``images``
(``file_name`` relative to ``images/<split>/``, ``width``, ``height``, the
DICOM UIDs and frame), ``categories`` (every mask, bbox and polygon label of
the release, the same ids in every split) and ``annotations``: boxes with a
4-corner polygon, polygons, and masks as one compressed-RLE annotation per
slice (``iscrowd`` 0). Every reader's annotations are kept
(``attributes.reader``, ``status``, ``revision``, ``annotation_uid``). Image
and annotation ids count from 1 in manifest order within each split.
``info.date_created`` is the release's creation time, so an export of one
release is the same bytes every time.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from mida import __version__
from mida.datasets.export.base import Exporter, Record, safe
from mida.datasets.export.reader import SeriesItem

KINDS = ("bbox", "polygon", "mask")


class CocoExporter(Exporter):
    """COCO JSON per split with PNG images (module docstring)."""

    name = "coco"
    folder = "coco"
    modules = ("pycocotools", "PIL")
    summary = "COCO: PNG per 2D image or annotated slice + one COCO JSON per split"

    def series(self, item: SeriesItem) -> Record:
        from mida.annotations.formats.coco import poly_stats, rle_of

        cats = self.ctx.labels
        shapes = [a for a in item.annotations
                  if a["kind"] in KINDS and cats.category(a["label"]) is not None]
        anns: list[dict[str, Any]] = []
        keys: dict[tuple[str, int], None] = {}
        for a in shapes:
            attrs = {"reader": a["reader"], "reader_kind": a.get("reader_kind"),
                     "status": a["status"], "revision": a["revision"],
                     "annotation_uid": a["uid"]}
            cat = cats.category(a["label"])
            if a["kind"] in ("bbox", "polygon"):
                sop, frame = a.get("SOPInstanceUID"), int(a.get("frame") or 1)
                if not sop or sop not in item.datasets:
                    self.ctx.note(f"coco: annotation {a['uid']} is not on an image of series "
                                  f"{item.uid}; left out")
                    continue
                h, w = item.frame_size(sop)
                data = a.get("data") or {}
                if a["kind"] == "bbox":
                    x0, y0, x1, y1 = (float(v) for v in data["box"])
                    flat = [x0, y0, x1, y0, x1, y1, x0, y1]
                    bbox = [x0, y0, round(x1 - x0, 3), round(y1 - y0, 3)]
                    area = round((x1 - x0) * (y1 - y0), 3)
                else:
                    flat = [float(c) for p in data["points"] for c in p]
                    bbox, area = poly_stats(flat, h, w)
                keys[(sop, frame)] = None
                anns.append({"image": f"{sop}/{frame}", "category_id": cat, "bbox": bbox,
                             "area": area, "segmentation": [flat], "iscrowd": 0,
                             "attributes": attrs})
                continue
            from pycocotools import mask as mask_utils

            for (sop, frame), m2 in item.slice_masks(a).items():
                rle = rle_of(m2)
                enc = dict(rle, counts=rle["counts"].encode("ascii"))
                keys[(sop, frame)] = None
                anns.append({"image": f"{sop}/{frame}", "category_id": cat,
                             "bbox": [float(v) for v in mask_utils.toBbox(enc)],
                             "area": float(mask_utils.area(enc)), "segmentation": rle,
                             "iscrowd": 0, "attributes": attrs})
        frames = item.frames if item.is_2d else [f for f in item.frames if f in keys]
        images = []
        for sop, frame in frames:
            rows, cols = item.frame_size(sop)
            name = f"{safe(item.uid)}/{safe(sop)}_{frame}.png"
            png = item.png(sop, frame)
            if png is None:
                self.ctx.note(f"coco: series {item.uid}: frame {frame} of {sop} could not be "
                              "decoded here; its image entry is kept without a PNG")
            else:
                self.ctx.writer.write(self.path("images", safe(item.split), name), png)
            images.append({"key": f"{sop}/{frame}", "file_name": name, "width": cols,
                           "height": rows, "dicom_study_instance_uid": item.meta[
                               "StudyInstanceUID"], "dicom_series_instance_uid": item.uid,
                           "dicom_sop_instance_uid": sop, "frame": frame})
        return {"images": images, "annotations": anns}

    def finish(self, records: list[tuple[dict[str, Any], Record]]) -> None:
        m = self.ctx.manifest
        categories = [{"id": x.value, "name": x.name, "supercategory": x.schema.split("@")[0],
                       "schema": x.schema, "type": x.type,
                       "concept": x.label.concept.model_dump(), "colour": x.label.colour}
                      for x in self.ctx.labels.shapes]
        per_split: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for meta, rec in records:
            if rec:
                per_split[meta["split"]].append(rec)
        for split in self.ctx.split_names:
            images: list[dict[str, Any]] = []
            anns: list[dict[str, Any]] = []
            for rec in per_split.get(split, []):
                ids = {}
                for im in rec["images"]:
                    ids[im["key"]] = len(images) + 1
                    images.append({"id": len(images) + 1,
                                   **{k: v for k, v in im.items() if k != "key"}})
                for a in rec["annotations"]:
                    anns.append({"id": len(anns) + 1, "image_id": ids[a["image"]],
                                 **{k: v for k, v in a.items() if k != "image"}})
            self.ctx.writer.write_json(self.path("annotations", f"{safe(split)}.json"), {
                "info": {"description": f"mida release {self.ctx.release}, split {split}",
                         "version": m["version"], "contributor": f"mida {__version__}",
                         "date_created": m.get("created")},
                "licenses": [], "images": images, "categories": categories,
                "annotations": anns})


__all__ = ["CocoExporter"]
