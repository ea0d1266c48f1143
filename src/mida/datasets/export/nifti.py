"""NIfTI: every series as dcm2niix would convert it, with sidecars and label maps.

Layout::

    nifti/labels.json
    nifti/<split>/<PatientID>/<SeriesInstanceUID><suffix>.nii.gz
    nifti/<split>/<PatientID>/<SeriesInstanceUID><suffix>.json
    nifti/<split>/<PatientID>/<SeriesInstanceUID><suffix>_label-<reader>.nii.gz

``<suffix>`` is dcm2niix's (``""``, ``_e2``, ``_ph``...) when a series gives
several volumes (:mod:`mida.datasets.convert`). Each reader's mask
annotations on a series make one label map on exactly the image's grid (same
shape, same affine, same qform/sform codes); the values are the release's
mask labels (``labels.json``: value -> name, concept, colour, and for each
label map file the annotations, revisions and statuses it holds).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from mida.datasets.export.base import Exporter, Record, safe
from mida.datasets.export.reader import SeriesItem

LABELS_FORMAT = "mida-export-labels/1"


def sidecar_bytes(volume: Any) -> bytes:
    """The JSON sidecar as the converter writes it (sorted keys, dcm2niix's field names)."""
    from mida.datasets.convert import sidecar_text

    return sidecar_text(volume).encode()


class NiftiExporter(Exporter):
    """NIfTI images, JSON sidecars, label maps per reader (module docstring)."""

    name = "nifti"
    folder = "nifti"
    modules = ("nibabel",)
    summary = "NIfTI (dcm2niix geometry) + JSON sidecars + label maps per reader, nifti/<split>/"

    def series(self, item: SeriesItem) -> Record:
        folder = (safe(item.split), safe(item.meta["PatientID"]))
        by_reader: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for a in item.masks():
            by_reader[a["reader"] or "unknown"].append(a)
        volumes = []
        if not item.volumes and item.conversion_error:
            self.ctx.note(item.conversion_error)
        for k, vol in enumerate(item.volumes):
            stem = safe(item.uid) + vol.suffix
            image = self.path(*folder, stem + ".nii.gz")
            side = self.path(*folder, stem + ".json")
            self.ctx.writer.write(image, item.volume_gz(k))
            self.ctx.writer.write(side, sidecar_bytes(vol))
            maps = []
            for reader in sorted(by_reader):
                lm = item.label_map(k, by_reader[reader])
                for n in lm.notes:
                    self.ctx.note(n)
                if lm.empty:
                    continue
                rel = self.path(*folder, f"{stem}_label-{safe(reader)}.nii.gz")
                self.ctx.writer.write(rel, item.label_map_gz(k, lm))
                maps.append({"file": rel.removeprefix(self.folder + "/"), "reader": reader,
                             "annotations": [{"annotation": a["uid"], "label": a["label"],
                                              "revision": a["revision"], "status": a["status"]}
                                             for a in lm.annotations]})
            volumes.append({"image": image.removeprefix(self.folder + "/"),
                            "sidecar": side.removeprefix(self.folder + "/"), "label_maps": maps})
        return {"volumes": volumes}

    def finish(self, records: list[tuple[dict[str, Any], Record]]) -> None:
        files = []
        for meta, rec in records:
            for v in (rec or {}).get("volumes", []):
                files.append({"series": meta["SeriesInstanceUID"], "split": meta["split"],
                              "patient": meta["PatientID"], **v})
        self.ctx.writer.write_json(self.path("labels.json"), {
            "format": LABELS_FORMAT, "release": self.ctx.release,
            "labels": {"0": {"name": "background"},
                       **{str(x.value): x.describe() for x in self.ctx.labels.masks}},
            "convention": "label maps share their image's shape and affine (RAS mm); "
                          "0 is background; where labels overlap the later value keeps "
                          "the voxel",
            "files": files})


__all__ = ["LABELS_FORMAT", "NiftiExporter"]
