"""DICOM: the de-identified files exactly as stored, in a split/patient/study/series tree.

Layout::

    DICOM/<split>/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm

Every file is the stored blob byte for byte (its sha256 is the manifest's).
"""

from __future__ import annotations

from typing import Any

from mida.datasets.export.base import Exporter, Record, safe
from mida.datasets.export.reader import SeriesItem


class DicomExporter(Exporter):
    """The de-identified DICOM files (module docstring)."""

    name = "dicom"
    folder = "DICOM"
    summary = "the de-identified DICOM files as stored, DICOM/<split>/<patient>/<study>/<series>/"

    def series_folder(self, item: SeriesItem) -> tuple[str, ...]:
        m = item.meta
        return (safe(item.split), safe(m["PatientID"]), safe(m["StudyInstanceUID"]),
                safe(item.uid))

    def series(self, item: SeriesItem) -> Record:
        folder = self.series_folder(item)
        for inst, data in item.blobs:
            self.ctx.writer.write(self.path(*folder, safe(inst["SOPInstanceUID"]) + ".dcm"),
                                  data)
        return {"instances": len(item.blobs)}

    def finish(self, records: list[tuple[dict[str, Any], Record]]) -> None:
        return None


__all__ = ["DicomExporter"]
