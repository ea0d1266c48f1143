"""MONAI: NIfTI images and label maps with a Decathlon-style datalist.

Layout::

    monai/datalist.json
    monai/images/<case>.nii.gz
    monai/labels/<case>.nii.gz

``datalist.json`` has the Medical Segmentation Decathlon's keys: ``name``,
``description``, ``labels`` (value -> name, "0" background), ``modality``
(channel -> modality), ``numTraining``, ``numValidation``, ``numTest`` and the
lists ``training``, ``validation``, ``test`` of ``{"image": ..., "label": ...}``
with paths relative to the file, which is what
``monai.data.load_decathlon_datalist(path, data_list_key="training")`` reads.
Cases, label maps and the choice of annotation are nnU-Net's
(:mod:`mida.datasets.export.nnunet`); training and validation cases without a
mask annotation are left out, test cases keep ``label`` only when annotated.
"""

from __future__ import annotations

from typing import Any

from mida.datasets.export.base import Exporter, Record
from mida.datasets.export.nnunet import TRAIN_SPLITS, case_id, channel_name
from mida.datasets.export.reader import SeriesItem

KEYS = {"train": "training", "val": "validation", "test": "test"}


class MonaiExporter(Exporter):
    """MONAI Decathlon datalist (module docstring)."""

    name = "monai"
    folder = "monai"
    modules = ("nibabel",)
    summary = "MONAI: images/, labels/ and a Decathlon datalist.json (training/validation/test)"

    def series(self, item: SeriesItem) -> Record:
        best = item.best_masks()
        cases: list[dict[str, Any]] = []
        if not item.volumes and item.conversion_error:
            self.ctx.note(item.conversion_error)
        for k, vol in enumerate(item.volumes):
            case = case_id(item.meta, vol.suffix)
            lm = item.label_map(k, best)
            for n in lm.notes:
                self.ctx.note(n)
            if item.split in TRAIN_SPLITS and lm.empty:
                cases.append({"left_out": case})
                continue
            entry: dict[str, str] = {"image": f"images/{case}.nii.gz"}
            self.ctx.writer.write(self.path(entry["image"]), item.volume_gz(k))
            if not lm.empty:
                entry["label"] = f"labels/{case}.nii.gz"
                self.ctx.writer.write(self.path(entry["label"]), item.label_map_gz(k, lm))
            cases.append({"entry": entry, "modality": item.modality})
        return {"cases": cases}

    def finish(self, records: list[tuple[dict[str, Any], Record]]) -> None:
        lists: dict[str, list[dict[str, str]]] = {"training": [], "validation": [], "test": []}
        left_out = 0
        modalities = []
        for meta, rec in records:
            for c in (rec or {}).get("cases", []):
                if "left_out" in c:
                    left_out += 1
                    continue
                lists[KEYS.get(meta["split"], "test")].append(c["entry"])
                modalities.append(c["modality"])
        if left_out:
            self.ctx.note(f"monai: {left_out} train/val volume(s) have no mask annotation and "
                          "were left out of training/validation")
        m = self.ctx.manifest
        channel, _ = channel_name(modalities)
        self.ctx.writer.write_json(self.path("datalist.json"), {
            "name": m["name"], "description": m.get("description") or "",
            "release": self.ctx.release, "reference": f"mida release {self.ctx.release}",
            "tensorImageSize": "3D", "modality": {"0": channel},
            "labels": {"0": "background",
                       **{str(x.value): x.name for x in self.ctx.labels.masks}},
            "numTraining": len(lists["training"]), "numValidation": len(lists["validation"]),
            "numTest": len(lists["test"]), **lists})


__all__ = ["MonaiExporter"]
