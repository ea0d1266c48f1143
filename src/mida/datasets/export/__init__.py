"""Release exports: one streaming pass from an immutable release to training formats.

``mida release export NAME@X.Y.Z --format F[,F...] --out DIR`` reads the
release's manifest and the stored blobs, decodes each series once and feeds
every requested format. Each format is an :class:`~.base.Exporter` subclass in
its own module and registers here; like pydicom's pixel data handlers, each
says whether it can run in this install (``is_available()``) and what it
lacks (``missing_dependencies()``):

============  ===========================  ===========================================
format        folder under DIR             module
============  ===========================  ===========================================
dicom         ``DICOM/``                   :mod:`.dicom` (the de-identified files as
                                           stored, plus DICOM SEG of the masks)
nifti         ``nifti/``                   :mod:`.nifti` (dcm2niix geometry, sidecars,
                                           label maps per reader)
nnunet        ``nnUNet_raw/``,             :mod:`.nnunet` (nnU-Net v2 raw dataset,
              ``nnUNet_preprocessed/``     ``splits_final.json``)
monai         ``monai/``                   :mod:`.monai` (Decathlon datalist)
coco          ``coco/``                    :mod:`.coco` (PNG + one COCO JSON per split)
hf            ``hf/``                      :mod:`.hf` (Hugging Face imagefolder)
hf-parquet    ``hf-parquet/``              :mod:`.hf` (Hugging Face Parquet)
============  ===========================  ===========================================

The pass itself, resume and ``mida-export.json`` are in :mod:`.run`; the
shared reader in :mod:`.reader`. docs/exports.md describes every layout.
"""

from __future__ import annotations

from mida.datasets.export.base import (
    REPORT_NAME,
    ExportContext,
    Exporter,
    ExportOptions,
    LabelSet,
)
from mida.datasets.export.coco import CocoExporter
from mida.datasets.export.dicom import DicomExporter
from mida.datasets.export.hf import HfExporter, HfParquetExporter
from mida.datasets.export.monai import MonaiExporter
from mida.datasets.export.nifti import NiftiExporter
from mida.datasets.export.nnunet import NnunetExporter
from mida.datasets.export.run import ExportProgress, ExportResult, export, parse_formats

_EXPORTERS: tuple[type[Exporter], ...] = (DicomExporter, NiftiExporter, NnunetExporter,
                                          MonaiExporter, CocoExporter, HfExporter,
                                          HfParquetExporter)


def exporters() -> list[type[Exporter]]:
    """Every registered format, available here or not (see ``is_available``)."""
    return list(_EXPORTERS)


def available() -> dict[str, list[str]]:
    """Format name -> the Python modules it misses here (empty: it can run)."""
    return {e.name: e.missing_dependencies() for e in _EXPORTERS}


__all__ = ["REPORT_NAME", "ExportContext", "ExportOptions", "ExportProgress", "ExportResult",
           "Exporter", "LabelSet", "available", "export", "exporters", "parse_formats"]
