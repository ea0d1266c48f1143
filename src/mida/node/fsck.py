"""Check and repair the agreement between the catalog and the blob store.

A crash can leave a blob without a row (harmless: the next ingest of the same
input re-registers it) or, after outside damage, a row without a blob.
``mida fsck`` reports both, plus partial writes and quarantine originals
without an entry; ``--repair`` removes orphan blobs and partial writes, and
deletes rows whose blob is gone so that re-ingesting the source restores
them. Quarantined originals are never deleted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select

from mida.catalog.models import (
    AnnotationRevision,
    DatasetRelease,
    Instance,
    Patient,
    Provenance,
    QuarantineEntry,
    Series,
    Study,
)
from mida.node.service import Node
from mida.storage.quarantine import QuarantineArea


@dataclass
class FsckReport:
    instances: int = 0
    blobs: int = 0
    orphan_blobs: list[str] = field(default_factory=list)
    missing_blobs: list[str] = field(default_factory=list)
    corrupt_blobs: list[str] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)
    orphan_quarantine: list[str] = field(default_factory=list)
    repaired: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not (self.orphan_blobs or self.missing_blobs or self.corrupt_blobs
                    or self.temp_files or self.orphan_quarantine)

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean, "instances": self.instances, "blobs": self.blobs,
            "orphan_blobs": len(self.orphan_blobs), "missing_blobs": len(self.missing_blobs),
            "corrupt_blobs": len(self.corrupt_blobs), "temp_files": len(self.temp_files),
            "orphan_quarantine": len(self.orphan_quarantine), "repaired": self.repaired,
        }


def fsck(node: Node, *, repair: bool = False, verify: bool = False,
         grace_seconds: float = 3600.0) -> FsckReport:
    """Compare catalog and store; with ``repair`` fix what can be fixed safely.

    Parameters
    ----------
    repair
        Delete orphan blobs and stale partial writes, and drop rows whose
        blob is missing (so a re-ingest restores them).
    verify
        Re-hash every blob and report those whose content changed.
    grace_seconds
        Orphan blobs and partial writes younger than this are left alone, as
        a running ingest may be about to register them.
    """
    store = node.store()
    catalog = node.catalog()
    rep = FsckReport()
    with catalog.session() as s:
        referenced = set(s.scalars(select(Instance.blob_sha256)))
        # masks and release manifests live in the same store: not orphans
        kept = set(s.scalars(select(AnnotationRevision.mask_sha256).where(
            AnnotationRevision.mask_sha256.is_not(None))))
        kept |= set(s.scalars(select(DatasetRelease.manifest_sha256).where(
            DatasetRelease.manifest_sha256.is_not(None))))
        rep.instances = s.scalar(select(func.count()).select_from(Instance)) or 0
        quarantined = set(s.scalars(select(QuarantineEntry.original_sha256)))
    stored = set(store.iter_digests())
    rep.blobs = len(stored)
    rep.orphan_blobs = sorted(stored - referenced - kept)
    rep.missing_blobs = sorted(referenced - stored)
    if verify:
        for d in sorted(stored & referenced):
            import hashlib

            if hashlib.sha256(store.get(d)).hexdigest() != d:
                rep.corrupt_blobs.append(d)
    rep.temp_files = store.stale_temp_files(grace_seconds)
    area = QuarantineArea(node.settings.quarantine_dir)
    rep.orphan_quarantine = [d for d in area.digests() if d not in quarantined]
    if repair:
        _repair(node, rep, grace_seconds)
    return rep


def _repair(node: Node, rep: FsckReport, grace_seconds: float) -> None:
    store = node.store()
    cutoff = time.time() - grace_seconds
    removed = 0
    for d in rep.orphan_blobs:
        try:
            mtime = store.fs.modified(store.path(d)).timestamp()
        except (FileNotFoundError, NotImplementedError, AttributeError):
            mtime = 0.0
        if grace_seconds <= 0 or mtime <= cutoff:
            store.delete(d)
            removed += 1
    for p in rep.temp_files:
        store.remove_temp_file(p)
    dropped = 0
    bad = set(rep.missing_blobs) | set(rep.corrupt_blobs)
    if bad:
        with node.catalog().session() as s:
            ids = list(s.scalars(select(Instance.id).where(Instance.blob_sha256.in_(bad))))
            if ids:
                s.execute(delete(Provenance).where(Provenance.instance_id.in_(ids)))
                s.execute(delete(Instance).where(Instance.id.in_(ids)))
                dropped = len(ids)
            s.execute(delete(Series).where(~Series.id.in_(select(Instance.series_id))))
            s.execute(delete(Study).where(~Study.id.in_(select(Series.study_id))))
            s.execute(delete(Patient).where(~Patient.id.in_(select(Study.patient_id))))
        for d in rep.corrupt_blobs:
            store.delete(d)
    rep.repaired = {"orphan_blobs_removed": removed, "temp_files_removed": len(rep.temp_files),
                    "rows_dropped": dropped}


__all__ = ["FsckReport", "fsck"]
