"""Import and export of annotations in the field's formats.

Each format is a module here with ``import_path(node, path, options)`` and/or
``export(node, options)``:

========  ======  ======  =====================================================
format    import  export  module
========  ======  ======  =====================================================
seg       yes     yes     :mod:`.seg` (DICOM Segmentation, highdicom)
rtstruct  yes             :mod:`.rtstruct` (contours rasterised on the series)
sr        yes     yes     :mod:`.sr` (TID 1500 measurement reports, highdicom)
nifti     yes     yes     :mod:`.nifti` (label maps on the series grid)
coco      yes     yes     :mod:`.coco` (COCO JSON: boxes, polygons, RLE masks)
csv       yes             :mod:`.csv_labels` (labels by UID or accession)
========  ======  ======  =====================================================

Rules every importer keeps:

* the imported file is read, never modified, and never stored: the record keeps
  its sha256 (``provenance.file_sha256``), the format and the tool;
* UIDs in the file are mapped through the node's keyed pseudonyms
  (:class:`~mida.annotations.store.UidMapper`);
* free text taken from a file (segment labels, ROI names, text values) is
  de-identified before it is stored;
* importing the same file again for the same reader creates nothing;
* everything of one file is stored in one transaction, or nothing is.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mida.catalog.models import Annotation, AnnotationRevision
from mida.errors import AnnotationError

IMPORT_FORMATS = {"seg": "seg", "rtstruct": "rtstruct", "sr": "sr", "nifti": "nifti",
                  "coco": "coco", "csv": "csv_labels"}
EXPORT_FORMATS = {"seg": "seg", "sr": "sr", "nifti": "nifti", "coco": "coco"}


@dataclass
class ImportOptions:
    """What ``mida annotations import`` was asked to do."""

    reader: str = "import"
    reader_kind: str = "person"
    model_version: str | None = None
    schema: str | None = None  # "name" or "name@version"; None: derive one from the file
    status: str = "submitted"
    series_uid: str | None = None  # the series a NIfTI/COCO file annotates (catalog UID)
    label_map: dict[str, str] = field(default_factory=dict)  # file's label value/name -> label
    author: str | None = None  # who ran the import (defaults to reader)


@dataclass
class ImportResult:
    created: list[str] = field(default_factory=list)  # annotation UIDs
    skipped: list[str] = field(default_factory=list)  # one line per thing not imported, why
    file_sha256: str = ""
    schema: str = ""  # name@version used

    def as_dict(self) -> dict[str, Any]:
        return {"created": len(self.created), "annotations": self.created,
                "skipped": self.skipped, "file_sha256": self.file_sha256,
                "schema": self.schema}


@dataclass
class ExportOptions:
    """What ``mida annotations export`` was asked to do."""

    out: Path
    collection_ids: frozenset[int] | None = None
    status: str | None = None
    schema: str | None = None
    reader: str | None = None
    series_uid: str | None = None
    task_id: int | None = None


@dataclass
class ExportResult:
    files: list[Path] = field(default_factory=list)
    annotations: int = 0
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"files": [str(p) for p in self.files], "annotations": self.annotations,
                "skipped": self.skipped}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def already_imported(s: Session, sha256: str, reader: str) -> list[str]:
    """UIDs of annotations that ``reader`` already imported from a file with this digest."""
    rows = s.execute(
        select(Annotation.uid, AnnotationRevision.provenance)
        .join(AnnotationRevision, AnnotationRevision.annotation_id == Annotation.id)
        .where(Annotation.reader == reader, AnnotationRevision.revision == 1)
    ).all()
    return [uid for uid, prov in rows if (prov or {}).get("file_sha256") == sha256]


def previous_import(s: Session, sha: str, options: ImportOptions, name: str,
                    schema: str = "") -> ImportResult | None:
    """The result to return when this reader already imported this file (nothing created)."""
    done = already_imported(s, sha, options.reader)
    if not done:
        return None
    return ImportResult(created=[], skipped=[
        f"{name} was already imported by reader {options.reader!r} ({len(done)} annotation(s)); "
        "nothing was created"], file_sha256=sha, schema=schema)


def _module(table: dict[str, str], fmt: str, what: str) -> Any:
    if fmt not in table:
        raise AnnotationError(f"cannot {what} format {fmt!r}: choose one of "
                              + ", ".join(sorted(table)))
    return importlib.import_module(f"mida.annotations.formats.{table[fmt]}")


def import_path(node: Any, path: Path, fmt: str, options: ImportOptions) -> ImportResult:
    """Import one annotation file (see the module docstring for the rules)."""
    if not path.is_file():
        raise AnnotationError(f"{path}: no such file")
    return _module(IMPORT_FORMATS, fmt, "import").import_path(node, path, options)


def export(node: Any, fmt: str, options: ExportOptions) -> ExportResult:
    """Export the selected annotations' latest revisions into ``options.out``."""
    options.out.mkdir(parents=True, exist_ok=True)
    return _module(EXPORT_FORMATS, fmt, "export").export(node, options)
