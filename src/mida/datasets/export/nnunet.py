"""nnU-Net v2: a raw dataset folder and the release's split as ``splits_final.json``.

Layout (``N`` = ``--dataset-id``, three digits; ``Name`` = the release name)::

    nnUNet_raw/DatasetNNN_Name/dataset.json
    nnUNet_raw/DatasetNNN_Name/imagesTr/<case>_0000.nii.gz     train and val cases
    nnUNet_raw/DatasetNNN_Name/labelsTr/<case>.nii.gz
    nnUNet_raw/DatasetNNN_Name/imagesTs/<case>_0000.nii.gz     test cases
    nnUNet_raw/DatasetNNN_Name/labelsTs/<case>.nii.gz          (when annotated)
    nnUNet_raw/DatasetNNN_Name/mida_cases.json                 case -> series, split, labels
    nnUNet_preprocessed/DatasetNNN_Name/splits_final.json

Point ``nnUNet_raw`` and ``nnUNet_preprocessed`` at the two folders:
``nnUNetv2_plan_and_preprocess -d NNN`` keeps ``splits_final.json``, so fold 0
of training is the release's own train/val split (patients never cross it).

A case is one NIfTI volume of a series (:mod:`mida.datasets.convert`), named
``<PatientID>_<first 8 hex of sha256(SeriesInstanceUID)>`` plus dcm2niix's
suffix when a series gives several volumes, so a case keeps its name from
one release version to the next. Its label map holds, per mask label, the
best pinned annotation (adjudicated, then reviewed, then submitted; a person
before a model; then by reader name) on exactly the image's grid. Train and
val cases without any mask annotation are left out (nnU-Net needs a label map
for every training case, and an empty one would claim "no finding"), and the
export report says how many.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import Any

from mida.datasets.export.base import Exporter, Record, safe
from mida.datasets.export.reader import SeriesItem

TRAIN_SPLITS = ("train", "val")


def case_id(meta: dict[str, Any], suffix: str = "") -> str:
    """A case name stable across release versions: patient and a hash of the series UID."""
    h = hashlib.sha256(str(meta["SeriesInstanceUID"]).encode()).hexdigest()[:8]
    return f"{safe(meta['PatientID'])}_{h}{safe(suffix, '') if suffix else ''}"


def channel_name(modalities: list[str]) -> tuple[str, str | None]:
    """The channel name for ``dataset.json`` (nnU-Net normalises "CT" its own way)."""
    if not modalities:
        return "CT", None
    c = Counter(modalities)
    top = sorted(c, key=lambda m: (-c[m], m))[0]
    note = None
    if len(c) > 1:
        note = (f"the cases mix modalities ({', '.join(f'{m}: {n}' for m, n in sorted(c.items()))}"
                f"); channel 0 is named {top}")
    return top, note


def dataset_name(release_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", release_name).strip("-") or "mida"


class NnunetExporter(Exporter):
    """nnU-Net v2 raw dataset (module docstring)."""

    name = "nnunet"
    folder = "nnUNet_raw"
    modules = ("nibabel",)
    summary = ("nnU-Net v2 raw dataset (imagesTr/labelsTr/imagesTs, dataset.json) and "
               "splits_final.json")

    @property
    def dataset(self) -> str:
        return f"Dataset{self.ctx.options.dataset_id:03d}_{dataset_name(self.ctx.manifest['name'])}"

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
            training = item.split in TRAIN_SPLITS
            if training and lm.empty:
                cases.append({"case": case, "left_out": "no mask annotation on this volume"})
                continue
            images, labels = ("imagesTr", "labelsTr") if training else ("imagesTs", "labelsTs")
            self.ctx.writer.write(self.path(self.dataset, images, f"{case}_0000.nii.gz"),
                                  item.volume_gz(k))
            if not lm.empty:
                self.ctx.writer.write(self.path(self.dataset, labels, f"{case}.nii.gz"),
                                      item.label_map_gz(k, lm))
            cases.append({"case": case, "modality": item.modality, "labelled": not lm.empty,
                          "annotations": [{"annotation": a["uid"], "label": a["label"],
                                           "revision": a["revision"], "reader": a["reader"],
                                           "status": a["status"]} for a in lm.annotations]})
        return {"cases": cases}

    def finish(self, records: list[tuple[dict[str, Any], Record]]) -> None:
        mapping: dict[str, Any] = {}
        by_split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        left_out = 0
        modalities = []
        for meta, rec in records:
            for c in (rec or {}).get("cases", []):
                if "left_out" in c:
                    left_out += 1
                    continue
                by_split.setdefault(meta["split"], []).append(c["case"])
                modalities.append(c["modality"])
                mapping[c["case"]] = {"series": meta["SeriesInstanceUID"],
                                      "study": meta["StudyInstanceUID"],
                                      "patient": meta["PatientID"], "split": meta["split"],
                                      "labelled": c["labelled"],
                                      "annotations": c["annotations"]}
        if left_out:
            self.ctx.note(f"nnunet: {left_out} train/val volume(s) have no mask annotation and "
                          "were left out (nnU-Net needs a label map for every training case)")
        training = by_split["train"] + by_split["val"]
        channel, note = channel_name(modalities)
        if note:
            self.ctx.note(f"nnunet: {note}")
        m = self.ctx.manifest
        self.ctx.writer.write_json(self.path(self.dataset, "dataset.json"), {
            "channel_names": {"0": channel},
            "labels": {"background": 0, **{x.name: x.value for x in self.ctx.labels.masks}},
            "numTraining": len(training), "file_ending": ".nii.gz",
            "name": m["name"], "description": m.get("description") or "",
            "reference": f"mida release {self.ctx.release}",
            "release": self.ctx.release, "numTest": len(by_split["test"])})
        self.ctx.writer.write_json(self.path(self.dataset, "mida_cases.json"),
                                   {"release": self.ctx.release, "cases": mapping})
        if by_split["train"] and by_split["val"]:
            self.ctx.writer.write_json(
                f"nnUNet_preprocessed/{self.dataset}/splits_final.json",
                [{"train": sorted(by_split["train"]), "val": sorted(by_split["val"])}])
        else:
            self.ctx.note("nnunet: the release has no labelled train or no labelled val case, "
                          "so no splits_final.json was written (nnU-Net makes its own 5 folds)")


__all__ = ["NnunetExporter", "case_id", "channel_name", "dataset_name"]
