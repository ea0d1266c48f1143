"""What every exporter shares: the exporter contract, the file writer, the label set.

An exporter turns one decoded series at a time into files (``series``) and
returns a small JSON record; once every series is done, ``finish`` receives
all records in manifest order and writes the files that describe the whole
dataset (``dataset.json``, a COCO file per split, Parquet tables). Keeping the
per-series state in records is what lets an interrupted export resume: the
records of finished series are kept in the export's journal and replayed
instead of decoding those series again (:mod:`mida.datasets.export.run`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mida.annotations.schema import Label, parse_schema
from mida.errors import DatasetError

if TYPE_CHECKING:
    from mida.datasets.export.reader import SeriesItem

#: Name of the file every export writes at the root of its folder.
REPORT_NAME = "mida-export.json"
#: Hidden folder holding the journal and scratch files while an export runs.
WORK_NAME = ".mida-export"
#: Suffix of a file being written; renamed into place once complete.
TMP_SUFFIX = ".mida-tmp"
#: Annotation statuses from most to least trusted: the training formats keep one
#: annotation per (series, label), the first in this order (then by reader name).
STATUS_RANK = {"adjudicated": 0, "reviewed": 1, "submitted": 2, "draft": 3}


def safe(name: str, fallback: str = "x") -> str:
    """A path component made of ``[A-Za-z0-9._-]`` (other runs become ``-``)."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-.")
    return out[:128] or fallback


def dumps(obj: Any) -> bytes:
    """Deterministic JSON: sorted keys, two-space indent, UTF-8, final newline."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    """A written file: its path relative to the export folder, sha256 and size."""

    path: str
    sha256: str
    size: int

    def as_list(self) -> list[Any]:
        return [self.sha256, self.size]


class FileWriter:
    """Writes files under ``root`` atomically and remembers each one's sha256.

    A file is written to ``<name>.mida-tmp`` next to its place and renamed into
    place when complete, so a file under its final name is always whole; an
    interrupted export leaves at most a ``.mida-tmp`` file, which the next run
    removes. No fsync: a killed process loses nothing the kernel already has,
    and a resumed export checks every journaled file's sha256 anyway.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written: dict[str, FileEntry] = {}

    def _target(self, rel: str) -> Path:
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise DatasetError(f"export path {rel!r} leaves the export folder")
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write(self, rel: str, data: bytes) -> FileEntry:
        """Write ``data`` to ``root/rel`` (atomically) and record it."""
        path = self._target(rel)
        tmp = path.with_name(path.name + TMP_SUFFIX)
        tmp.write_bytes(data)
        os.replace(tmp, path)
        entry = FileEntry(rel, hashlib.sha256(data).hexdigest(), len(data))
        self.written[rel] = entry
        return entry

    def write_json(self, rel: str, obj: Any) -> FileEntry:
        return self.write(rel, dumps(obj))

    def adopt(self, rel: str, produce: Callable[[Path], None]) -> FileEntry:
        """Let ``produce(tmp_path)`` write a large file, then move it into place and record it."""
        path = self._target(rel)
        tmp = path.with_name(path.name + TMP_SUFFIX)
        produce(tmp)
        entry = FileEntry(rel, sha256_file(tmp), tmp.stat().st_size)
        os.replace(tmp, path)
        self.written[rel] = entry
        return entry

    def take(self) -> dict[str, FileEntry]:
        """The files written since the last call (one series' files, for the journal)."""
        out, self.written = self.written, {}
        return out


@dataclass(frozen=True)
class LabelInfo:
    """One label of the export: its value (or category id), name and where it comes from."""

    value: int
    name: str
    type: str
    schema: str
    label: Label

    def describe(self) -> dict[str, Any]:
        """Name, type, schema, concept, colour; the value of a mask label, the values
        a classification takes."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "schema": self.schema,
                               "concept": self.label.concept.model_dump(),
                               "colour": self.label.colour}
        if self.type == "classification":
            out["values"] = list(self.label.values)
        else:
            out["value"] = self.value
        return out


@dataclass
class LabelSet:
    """The labels of a release, numbered once for every format.

    ``masks``: the mask labels that at least one pinned annotation uses, in the
    order the schemas list them (schemas sorted by ``name@version``), valued
    1, 2, ... (0 is background). A name used by two schemas (two versions of
    one schema) is one label. ``shapes``: the mask, bbox and polygon labels in
    use, the COCO categories. ``classes``: the classification labels in use.
    """

    masks: list[LabelInfo] = field(default_factory=list)
    shapes: list[LabelInfo] = field(default_factory=list)
    classes: list[LabelInfo] = field(default_factory=list)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> LabelSet:
        used: set[tuple[str, str]] = {(a["schema"], a["label"])
                                      for a in manifest.get("annotations", [])}
        used_names = {(a["label"], a["kind"]) for a in manifest.get("annotations", [])}
        out = cls()
        seen: dict[str, set[str]] = {"m": set(), "s": set(), "c": set()}
        for ref in sorted(manifest.get("schemas", {})):
            schema = parse_schema(manifest["schemas"][ref], source=ref)
            for lb in schema.labels:
                if (ref, lb.name) not in used and (lb.name, lb.type) not in used_names:
                    continue
                if lb.type == "mask" and lb.name not in seen["m"]:
                    seen["m"].add(lb.name)
                    out.masks.append(LabelInfo(len(out.masks) + 1, lb.name, lb.type, ref, lb))
                if lb.type in ("mask", "bbox", "polygon") and lb.name not in seen["s"]:
                    seen["s"].add(lb.name)
                    out.shapes.append(LabelInfo(len(out.shapes) + 1, lb.name, lb.type, ref, lb))
                if lb.type == "classification" and lb.name not in seen["c"]:
                    seen["c"].add(lb.name)
                    out.classes.append(LabelInfo(len(out.classes) + 1, lb.name, lb.type, ref,
                                                 lb))
        return out

    def mask_value(self, name: str) -> int | None:
        return next((x.value for x in self.masks if x.name == name), None)

    def category(self, name: str) -> int | None:
        return next((x.value for x in self.shapes if x.name == name), None)


@dataclass(frozen=True)
class ExportOptions:
    """Options of one export (part of what makes two exports the same export)."""

    dataset_id: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {"dataset_id": self.dataset_id}


@dataclass
class ExportContext:
    """What an exporter sees: the manifest, the labels, the writer, where notes go."""

    manifest: dict[str, Any]
    labels: LabelSet
    writer: FileWriter
    options: ExportOptions
    work: str  # scratch folder, relative to the export folder (removed when it completes)
    notes: list[str] = field(default_factory=list)

    @property
    def release(self) -> str:
        return f"{self.manifest['name']}@{self.manifest['version']}"

    @property
    def split_names(self) -> list[str]:
        return [str(n) for n, _ in self.manifest["split"]["shares"]]

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


#: A record an exporter returns for one series (JSON-able; kept in the journal).
Record = dict[str, Any] | None


class Exporter:
    """Base of every format: the registry in :mod:`mida.datasets.export` lists subclasses.

    Like pydicom's pixel data handlers, each format says whether it can run
    here (``is_available``) and what it lacks (``missing_dependencies``).
    """

    #: The name given to ``--format``.
    name: ClassVar[str] = ""
    #: The folder under the export directory holding this format's files.
    folder: ClassVar[str] = ""
    #: Python modules this format needs.
    modules: ClassVar[tuple[str, ...]] = ()
    #: One line for ``mida release export --help`` and the docs.
    summary: ClassVar[str] = ""

    def __init__(self, ctx: ExportContext) -> None:
        self.ctx = ctx

    @classmethod
    def missing_dependencies(cls) -> list[str]:
        return [m for m in cls.modules if importlib.util.find_spec(m) is None]

    @classmethod
    def is_available(cls) -> bool:
        return not cls.missing_dependencies()

    def path(self, *parts: str) -> str:
        """A path relative to the export directory, inside this format's folder."""
        return "/".join((self.folder, *parts))

    def series(self, item: SeriesItem) -> Record:
        """Write this series' files; return what ``finish`` needs to know about it."""
        raise NotImplementedError

    def finish(self, records: list[tuple[dict[str, Any], Record]]) -> None:
        """Write the dataset-level files from every series' (manifest entry, record)."""


__all__ = ["REPORT_NAME", "STATUS_RANK", "TMP_SUFFIX", "WORK_NAME", "ExportContext",
           "ExportOptions", "Exporter", "FileEntry", "FileWriter", "LabelInfo", "LabelSet",
           "Record", "dumps", "safe", "sha256_file"]
