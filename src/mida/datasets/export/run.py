"""One export of a release: the streaming pass, the journal, resume and the report.

The pass reads the release's manifest (never the live catalog's latest
revisions), leaves out the series that a restriction added since the release
was created now flags (:func:`mida.sharing.restrictions.reasons_by_series`),
then walks the series in manifest order: each is read and decoded once
(:class:`~mida.datasets.export.reader.SeriesItem`) and handed to every
requested format, and only one series is held in memory at a time.

Interrupted exports resume. Files are written atomically (a ``.mida-tmp``
file renamed into place), and after each series a line is appended to
``DIR/.mida-export/journal.jsonl`` naming the files that series produced,
their sha256, and each format's record. A rerun into the same folder with the
same release, formats and options checks every journaled file's sha256,
replays the records of the series whose files are intact, and redoes the rest;
``mida-export.json`` is written last and the journal folder removed, so a
folder holding ``mida-export.json`` and no ``.mida-export/`` is complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import mida
from mida.catalog.models import DatasetRelease, ReleaseSeries, Series
from mida.datasets.export.base import (
    REPORT_NAME,
    TMP_SUFFIX,
    WORK_NAME,
    ExportContext,
    Exporter,
    ExportOptions,
    FileEntry,
    FileWriter,
    LabelSet,
    Record,
    dumps,
    sha256_file,
)
from mida.datasets.export.reader import SeriesItem
from mida.datasets.release import load_manifest
from mida.errors import ConflictError, DatasetError
from mida.sharing import restrictions
from mida.storage.blobstore import BlobStore

REPORT_FORMAT = 1
JOURNAL = "journal.jsonl"


@dataclass(frozen=True)
class ExportProgress:
    """Where an export stands, sent to the ``progress`` callback after each series."""

    series_done: int
    series_total: int
    bytes_done: int
    bytes_total: int
    resumed: bool = False  # this series was taken from the journal, not decoded again
    phase: str = "series"  # "series", then "finish" once the dataset files are written


@dataclass
class ExportResult:
    """What an export wrote; ``report`` is the body of ``mida-export.json``."""

    out: Path
    report: dict[str, Any]
    resumed: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        r = self.report
        return {"out": str(self.out), "release": r["release"], "formats": r["formats"],
                "manifest_sha256": r["manifest_sha256"], "series": r["series"],
                "excluded": r["excluded"], "files": len(r["files"]),
                "bytes": sum(f["size"] for f in r["files"]), "resumed_series": self.resumed,
                "notes": r["notes"]}


def _registry() -> dict[str, type[Exporter]]:
    from mida.datasets.export import exporters

    return {e.name: e for e in exporters()}


def parse_formats(formats: Sequence[str]) -> list[str]:
    """``["nifti,nnunet", "coco"]`` -> ``["nifti", "nnunet", "coco"]`` (checked, deduplicated)."""
    reg = _registry()
    out: list[str] = []
    for part in formats:
        for name in (p.strip().lower() for p in part.split(",")):
            if not name:
                continue
            if name not in reg:
                raise DatasetError(f"unknown export format {name!r}: choose from "
                                   + ", ".join(reg))
            missing = reg[name].missing_dependencies()
            if missing:
                raise DatasetError(f"format {name} needs the Python package(s) "
                                   f"{', '.join(missing)}: install them (pip install "
                                   f"{' '.join(missing)}) or choose another format")
            if name not in out:
                out.append(name)
    if not out:
        raise DatasetError("give at least one --format, e.g. --format nifti,nnunet")
    return out


def _header(manifest_sha: str, release: str, formats: list[str],
            options: ExportOptions) -> dict[str, Any]:
    return {"release": release, "manifest_sha256": manifest_sha, "formats": formats,
            "options": options.as_dict()}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("release", "manifest_sha256", "formats", "options")
    return all(a.get(k) == b.get(k) for k in keys)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _journal(work: Path) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """The journal's header and its entries by series UID (a torn last line is ignored)."""
    path = work / JOURNAL
    if not path.is_file():
        return None, {}
    lines = path.read_text(encoding="utf-8").splitlines()
    header: dict[str, Any] | None = None
    entries: dict[str, dict[str, Any]] = {}
    for i, line in enumerate(lines):
        try:
            body = json.loads(line)
        except ValueError:
            continue  # written up to the kill: that series is redone
        if i == 0:
            header = body
        elif isinstance(body, dict) and "series" in body:
            entries[body["series"]] = body
    return header, entries


def _prepare(out: Path, header: dict[str, Any]) -> tuple[dict[str, dict[str, Any]],
                                                          set[str]]:
    """Check that ``out`` may receive this export; return journal entries and old files.

    ``out`` may be absent or empty, hold an interrupted export of the same
    release, formats and options (resumed), or a complete one (redone, and
    files it listed that this export does not write are removed).
    """
    work = out / WORK_NAME
    old_files: set[str] = set()
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out}: is a file; give a folder")
    jheader, entries = _journal(work)
    report = _read_json(out / REPORT_NAME)
    if jheader is not None and not _same(jheader, header):
        raise ConflictError(f"--out {out} holds an unfinished export of {jheader.get('release')}"
                            f" ({', '.join(jheader.get('formats') or [])}): finish it with the "
                            "same release, formats and options, or give an empty folder")
    if report is not None:
        if not _same(report, header):
            raise ConflictError(
                f"--out {out} holds an export of {report.get('release')} "
                f"({', '.join(report.get('formats') or [])}, manifest "
                f"{str(report.get('manifest_sha256'))[:12]}): give an empty folder")
        old_files = {f["path"] for f in report.get("files", [])}
    elif jheader is None and out.is_dir() and any(out.iterdir()):
        raise ConflictError(f"--out {out} is not empty and holds no earlier export of "
                            f"{header['release']}: give an empty or new folder")
    for e in entries.values():
        old_files |= set(e.get("files", {}))
    out.mkdir(parents=True, exist_ok=True)
    for tmp in out.rglob("*" + TMP_SUFFIX):  # left by a kill mid-write
        tmp.unlink(missing_ok=True)
    work.mkdir(exist_ok=True)
    if jheader is None:  # written whole or not at all: a torn header would block the folder
        tmp = work / (JOURNAL + TMP_SUFFIX)
        tmp.write_bytes(json.dumps(header, sort_keys=True).encode() + b"\n")
        os.replace(tmp, work / JOURNAL)
    return entries, old_files


def _intact(out: Path, entry: dict[str, Any]) -> bool:
    for group in ("files", "scratch"):
        for rel, (sha, size) in entry.get(group, {}).items():
            p = out / rel
            if not p.is_file() or p.stat().st_size != size or sha256_file(p) != sha:
                return False
    return True


def _remove(out: Path, rel: str) -> None:
    """Delete a file an earlier run wrote, and the folders it leaves empty."""
    path = out / rel
    path.unlink(missing_ok=True)
    for parent in path.parents:
        if parent == out or not parent.is_relative_to(out):
            break
        try:
            parent.rmdir()
        except OSError:  # not empty
            break


def excluded_now(s: Session, row: DatasetRelease,
                 manifest: dict[str, Any]) -> dict[str, list[str]]:
    """Series UID -> reasons, for the release's series that a restriction now keeps out."""
    q = (select(ReleaseSeries.series_id, Series.SeriesInstanceUID)
         .join(Series, Series.id == ReleaseSeries.series_id)
         .where(ReleaseSeries.release_id == row.id))
    ids: dict[int, str] = {int(a): str(b) for a, b in s.execute(q)}
    reasons = restrictions.reasons_by_series(s, list(ids))
    in_manifest = {x["SeriesInstanceUID"] for x in manifest["series"]}
    return {ids[i]: r for i, r in reasons.items() if ids[i] in in_manifest}


def export(s: Session, store: BlobStore, row: DatasetRelease, formats: Sequence[str],
           out: Path, *, progress: Callable[[ExportProgress], None] | None = None,
           dataset_id: int = 1) -> ExportResult:
    """Export release ``row`` into ``out`` in every format of ``formats``, in one pass.

    Parameters
    ----------
    s, store
        The catalog session (read for restrictions only) and the node's blob store.
    row
        The release (:func:`mida.datasets.release.get`).
    formats
        Format names (``--format`` values, comma-separated lists allowed); see
        :func:`mida.datasets.export.exporters`.
    out
        The export folder: absent, empty, or an earlier (complete or
        interrupted) export of the same release, formats and options.
    progress
        Called after each series (and once at the end) with an :class:`ExportProgress`.
    dataset_id
        nnU-Net's dataset number (``DatasetNNN_<name>``), 1 to 999.

    Examples
    --------
    ``mida release export liver-ct@1.0.0 --format nifti,nnunet --out /data/liver``
    runs ``export(s, store, release.get(s, "liver-ct@1.0.0"), ["nifti,nnunet"],
    Path("/data/liver"))``.
    """
    names = parse_formats(formats)
    if not 1 <= dataset_id <= 999:
        raise DatasetError(f"--dataset-id {dataset_id}: nnU-Net dataset ids are 1 to 999")
    options = ExportOptions(dataset_id=dataset_id)
    manifest = load_manifest(store, row)
    release = f"{row.name}@{row.version}"
    assert row.manifest_sha256 is not None
    header = _header(row.manifest_sha256, release, names, options)
    out = Path(out)
    entries, old_files = _prepare(out, header)
    work = out / WORK_NAME

    excluded = excluded_now(s, row, manifest)
    labels = LabelSet.from_manifest(manifest)
    writer = FileWriter(out)
    ctx = ExportContext(manifest=manifest, labels=labels, writer=writer, options=options,
                        work=f"{WORK_NAME}/scratch")
    reg = _registry()
    exps = [reg[n](ctx) for n in names]

    by_series: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    by_study: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in manifest["annotations"]:
        if a.get("SeriesInstanceUID"):
            by_series[a["SeriesInstanceUID"]].append(a)
        elif a.get("StudyInstanceUID"):
            by_study[a["StudyInstanceUID"]].append(a)

    members = [x for x in manifest["series"] if x["SeriesInstanceUID"] not in excluded]
    total_bytes = sum(i["size"] for x in members for i in x["instances"])
    records: dict[str, dict[str, Record]] = {}
    files: dict[str, FileEntry] = {}
    done_bytes = resumed = 0
    series_notes: list[str] = []
    journal = (work / JOURNAL).open("a", encoding="utf-8")
    try:
        for n, meta in enumerate(members, 1):
            uid = meta["SeriesInstanceUID"]
            nbytes = sum(i["size"] for i in meta["instances"])
            entry = entries.get(uid)
            replay = entry is not None and _intact(out, entry)
            if entry is not None and replay:
                records[uid] = entry["records"]
                files.update({k: FileEntry(k, v[0], v[1]) for k, v in entry["files"].items()})
                series_notes += entry.get("notes", [])
                resumed += 1
            else:
                item = SeriesItem(meta, by_series.get(uid, []),
                                  by_study.get(meta["StudyInstanceUID"], []), store, labels)
                ctx.notes = []
                recs = {e.name: e.series(item) for e in exps}
                written = writer.take()
                outputs = {k: v for k, v in written.items() if not k.startswith(WORK_NAME + "/")}
                files.update(outputs)
                records[uid] = recs
                series_notes += ctx.notes
                line = {"series": uid, "records": recs, "notes": ctx.notes,
                        "files": {k: v.as_list() for k, v in sorted(outputs.items())},
                        "scratch": {k: v.as_list() for k, v in sorted(written.items())
                                    if k.startswith(WORK_NAME + "/")}}
                journal.write(json.dumps(line, sort_keys=True) + "\n")
                journal.flush()
                del item
            done_bytes += nbytes
            if progress is not None:
                progress(ExportProgress(n, len(members), done_bytes, total_bytes,
                                        resumed=replay))
    finally:
        journal.close()

    ctx.notes = series_notes
    ordered = [(meta, records[meta["SeriesInstanceUID"]]) for meta in members]
    for e in exps:
        e.finish([(meta, recs.get(e.name)) for meta, recs in ordered])
    files.update(writer.take())
    files = {k: v for k, v in files.items() if not k.startswith(WORK_NAME + "/")}

    for stale in sorted(old_files - set(files)):  # e.g. series withdrawn since the last run
        _remove(out, stale)
    reasons = Counter(r for rs in excluded.values() for r in rs)
    report = {
        "mida_export": REPORT_FORMAT, **header, "mida_version": mida.__version__,
        "manifest_sha256": row.manifest_sha256,
        "series": len(members),
        "excluded": {"series": len(excluded), "by_reason": dict(sorted(reasons.items())),
                     "note": "left out because a release restriction in force at export "
                             "time flags them (the release manifest itself is unchanged)"},
        "labels": {"masks": [x.describe() for x in labels.masks],
                   "classifications": [x.describe() for x in labels.classes]},
        "notes": ctx.notes,
        "files": [{"path": f.path, "sha256": f.sha256, "size": f.size}
                  for f in sorted(files.values(), key=lambda f: f.path)],
    }
    writer.write(REPORT_NAME, dumps(report))
    shutil.rmtree(work, ignore_errors=True)
    if progress is not None:
        progress(ExportProgress(len(members), len(members), total_bytes, total_bytes,
                                phase="finish"))
    return ExportResult(out=out, report=report, resumed=resumed, notes=ctx.notes)


__all__ = ["ExportProgress", "ExportResult", "excluded_now", "export", "parse_formats"]
