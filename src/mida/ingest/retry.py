"""List, show and retry quarantine entries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from mida.catalog.models import Collection, QuarantineEntry, utcnow
from mida.errors import NotFoundError
from mida.ingest.pipeline import Ingestor
from mida.ingest.processor import Source
from mida.ingest.sources import archive_kind
from mida.ingest.writer import CatalogWriter
from mida.node import Node
from mida.storage.quarantine import QuarantineArea


def entry_dict(e: QuarantineEntry, collection: str | None = None) -> dict[str, Any]:
    return {
        "id": e.id, "reason": e.reason, "message": e.message, "status": e.status,
        "size": e.size, "source_kind": e.source_kind, "original_sha256": e.original_sha256,
        "attempts": e.attempts, "collection": collection, "job_id": e.job_id,
        "created": e.created.isoformat(), "updated": e.updated.isoformat(),
    }


def list_entries(
    node: Node, *, reason: str | None = None, status: str | None = "open", limit: int = 1000
) -> list[dict[str, Any]]:
    with node.catalog().session() as s:
        q = (select(QuarantineEntry, Collection.name)
             .outerjoin(Collection, Collection.id == QuarantineEntry.collection_id)
             .order_by(QuarantineEntry.id).limit(limit))
        if reason:
            q = q.where(QuarantineEntry.reason == reason)
        if status:
            q = q.where(QuarantineEntry.status == status)
        return [entry_dict(e, c) for e, c in s.execute(q).all()]


def show_entry(node: Node, entry_id: int) -> dict[str, Any]:
    """One entry, with the local source paths kept in the protected area."""
    with node.catalog().session() as s:
        row = s.execute(
            select(QuarantineEntry, Collection.name)
            .outerjoin(Collection, Collection.id == QuarantineEntry.collection_id)
            .where(QuarantineEntry.id == entry_id)
        ).first()
        if row is None:
            raise NotFoundError(f"no quarantine entry {entry_id}: see 'mida quarantine list'")
        e, col = row
        out = entry_dict(e, col)
    area = QuarantineArea(node.settings.quarantine_dir)
    out["original_kept"] = area.exists(out["original_sha256"])
    out["original_path"] = str(area.path(out["original_sha256"]))
    out["sources"] = area.sources(out["original_sha256"])
    return out


@dataclass
class RetryResult:
    entry_id: int
    status: str  # resolved | still_quarantined | missing_original
    reason: str | None
    message: str | None


def retry(
    node: Node, entry_ids: list[int] | None = None, *, reason: str | None = None,
    collection: str | None = None,
) -> list[RetryResult]:
    """Run quarantined originals through ingest again (after a fix or a setting change)."""
    catalog = node.catalog()
    area = QuarantineArea(node.settings.quarantine_dir)
    with catalog.session() as s:
        q = select(QuarantineEntry, Collection.name).outerjoin(
            Collection, Collection.id == QuarantineEntry.collection_id
        ).where(QuarantineEntry.status == "open").order_by(QuarantineEntry.id)
        if entry_ids:
            q = q.where(QuarantineEntry.id.in_(entry_ids))
        if reason:
            q = q.where(QuarantineEntry.reason == reason)
        todo = [(e.id, e.original_sha256, c, e.source_kind) for e, c in s.execute(q).all()]
    if entry_ids and len(todo) < len(set(entry_ids)):
        found = {t[0] for t in todo}
        missing = sorted(set(entry_ids) - found)
        raise NotFoundError(f"no open quarantine entries with id(s) {missing}")
    results: list[RetryResult] = []
    ingestors: dict[str, Ingestor] = {}
    for entry_id, sha, col, kind in todo:
        col_name = collection or col or "quarantine-retry"
        ing = ingestors.get(col_name)
        if ing is None:
            ing = ingestors[col_name] = Ingestor(node, col_name, workers=1)
        if not area.exists(sha):
            results.append(RetryResult(entry_id, "missing_original", None,
                                       "the original is no longer in the quarantine area"))
            continue
        path = area.path(sha)
        if archive_kind(str(path)) is not None:
            summary = ing.run([path])
            ok = summary.quarantined == 0
            outcome_reason = None if ok else ",".join(sorted(summary.by_reason))
            _close(node, entry_id, ok, outcome_reason, "archive re-ingested")
            results.append(RetryResult(entry_id, "resolved" if ok else "still_quarantined",
                                       outcome_reason, None))
            continue
        outcome = ing._local.process(area.read(sha), Source(kind, f"quarantine:{entry_id}"))
        if outcome.status in ("stored", "duplicate"):
            writer = CatalogWriter(catalog, institution_id=ing.institution_id,
                                   collection_id=ing.collection_id, job_id=None)
            writer.add(outcome)
            writer.flush()
            _close(node, entry_id, True, None, None)
            results.append(RetryResult(entry_id, "resolved", None, None))
        else:
            _close(node, entry_id, False, outcome.reason, outcome.message)
            results.append(RetryResult(entry_id, "still_quarantined", outcome.reason,
                                       outcome.message))
    return results


def _close(node: Node, entry_id: int, ok: bool, reason: str | None, message: str | None) -> None:
    with node.catalog().session() as s:
        e = s.get(QuarantineEntry, entry_id)
        if e is None:
            return
        e.attempts += 1
        e.updated = utcnow()
        if ok:
            e.status = "resolved"
        else:
            if reason and reason != e.reason:
                clash = s.scalar(select(QuarantineEntry.id).where(
                    QuarantineEntry.original_sha256 == e.original_sha256,
                    QuarantineEntry.reason == reason))
                if clash is None:
                    e.reason = reason
            if message:
                e.message = message


__all__ = ["RetryResult", "entry_dict", "list_entries", "retry", "show_entry"]
