"""The ingest pipeline: discover inputs, process them in parallel, index them.

Memory is bounded: at most ``settings.in_flight`` inputs are queued at once,
and each worker holds one file. The parent is the only catalog writer.
Re-running on the same inputs adds nothing (inputs are recognised by a keyed
hash of their content, instances by their pseudonymous SOP Instance UID).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import logging
import multiprocessing
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mida.catalog.db import make_engine
from mida.catalog.service import finish_job, get_or_create_collection, start_job, update_job
from mida.config import Settings
from mida.deid import get_profile
from mida.deid.vault import LinkageVault
from mida.errors import IngestError, JobCancelledError, QuarantineReason
from mida.events import EventBus, FileDiscovered, FileProcessed, IngestFinished, IngestStarted
from mida.ingest.processor import InstanceProcessor, Outcome, Source
from mida.ingest.sources import Item, Refused, count_inputs, discover, read_zip_member
from mida.ingest.writer import CatalogWriter
from mida.node import Node
from mida.storage import open_store

log = logging.getLogger(__name__)


@dataclass
class IngestSummary:
    """What one run did."""

    job_id: int
    collection: str
    inputs: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    bytes_in: int = 0
    seconds: float = 0.0
    by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "collection": self.collection, "inputs": self.inputs,
            "stored": self.stored, "duplicates": self.duplicates,
            "quarantined": self.quarantined, "bytes_in": self.bytes_in,
            "seconds": round(self.seconds, 3), "by_reason": dict(self.by_reason),
        }


# -- worker side -------------------------------------------------------------
_PROCESSOR: InstanceProcessor | None = None


def _make_processor(
    settings: Settings, key: bytes, profile: str, vault_key: bytes | None = None
) -> InstanceProcessor:
    store = open_store(settings.storage_url, fsync=settings.fsync,
                       storage_options=settings.storage_options or None)
    return InstanceProcessor(settings, key, profile, store, make_engine(settings.database_url),
                             vault_key=vault_key)


def _init_worker(
    settings_dump: dict[str, Any], key: bytes, profile: str, vault_key: bytes | None
) -> None:
    global _PROCESSOR
    _PROCESSOR = _make_processor(Settings(**settings_dump), key, profile, vault_key)


def _read(item: Item, settings: Settings) -> bytes:
    if item.data is not None:
        return item.data
    if item.kind == "zip" and item.member is not None:
        return read_zip_member(item.path, item.member, settings.archive_max_member_bytes)
    with open(item.path, "rb") as fh:
        return fh.read()


def _process_item(proc: InstanceProcessor, item: Item) -> Outcome:
    source = Source(item.kind, item.ref)
    try:
        data = _read(item, proc.settings)
    except (OSError, ValueError) as exc:
        ref_hash = proc.pseudo.keyed_hash(item.ref)
        return Outcome("quarantined", size=item.size, original_sha256=ref_hash,
                       source_kind=item.kind, source_ref_hash=ref_hash,
                       reason=QuarantineReason.UNREADABLE.value,
                       message=f"cannot read the input ({type(exc).__name__}); nothing was kept")
    return proc.process(data, source)


def _work(item: Item) -> Outcome:
    assert _PROCESSOR is not None, "worker not initialised"
    return _process_item(_PROCESSOR, item)


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- parent side -------------------------------------------------------------
class Ingestor:
    """Runs ingest into one collection of a node.

    Parameters
    ----------
    node
        The opened node.
    collection
        Collection name; created with `profile` (else the node's default) when new.
    profile
        De-identification profile of a new collection; an existing one must match.
    workers
        Worker processes (default ``settings.workers``); 1 runs in-process.
    bus
        Receives :mod:`mida.events` progress events.
    job_id
        A queued job to run as (``mida jobs run``); otherwise a new job is recorded.
    owner
        Who started the run (recorded on the job).

    The job's progress and counts are written to the catalog about once a
    second; a cancel request (``mida jobs cancel``, ``DELETE /jobs/{id}``) stops
    the run there, after the instances already processed are indexed.
    """

    progress_every = 1.0  # seconds between job progress writes

    def __init__(
        self, node: Node, collection: str, *, workers: int | None = None,
        bus: EventBus | None = None, source_kind: str | None = None,
        profile: str | None = None, job_id: int | None = None, owner: str | None = None,
    ) -> None:
        self.job_id = job_id
        self.owner = owner
        self.node = node
        self.settings = node.settings
        self.collection = collection
        self.workers = workers or self.settings.workers
        self.bus = bus or EventBus()
        self.catalog = node.catalog()
        wanted = profile or self.settings.deid_profile
        get_profile(wanted, self.settings.home)  # an unknown or invalid profile fails here
        with self.catalog.session() as s:
            col = get_or_create_collection(s, collection, node.institution_id(), wanted)
            if profile is not None and col.deid_profile != profile:
                raise IngestError(
                    f"collection {collection!r} is de-identified with profile "
                    f"{col.deid_profile!r}; one collection keeps one profile (ingest into "
                    f"a new collection to use {profile!r})"
                )
            self.collection_id = col.id
            self.profile = col.deid_profile
            # a hub hosts collections of several institutions: patients belong to the
            # institution that owns the collection, not to the node's own
            self.institution_id = col.institution_id
        self._key = node.key()
        self._vault_key = node.vault_key() if self.settings.linkage_vault else None
        self._local = _make_processor(self.settings, self._key, self.profile, self._vault_key)
        self._archive_sha: dict[str, str] = {}

    def _refused(self, r: Refused) -> Outcome:
        sha = self._archive_sha.get(r.path)
        if sha is None:
            sha = self._archive_sha[r.path] = _file_sha256(r.path)
        base = {"size": 0, "original_sha256": sha, "source_kind": r.kind,
                "source_ref_hash": self._local.pseudo.keyed_hash(r.ref)}
        return self._local.to_quarantine(None, Source(r.kind, r.ref), r.reason, r.message, base,
                                         file=r.path)

    def run(self, paths: list[Path]) -> IngestSummary:
        """Ingest every input under ``paths``; returns the run's summary."""
        total = count_inputs(paths)
        with self.catalog.session() as s:
            job = start_job(s, "ingest", {"collection": self.collection, "inputs": total,
                                          "workers": self.workers},
                            job_id=self.job_id, owner=self.owner)
            job_id = job.id
            update_job(s, job_id, done=0, total=total)
        summary = IngestSummary(job_id=job_id, collection=self.collection)
        vault = (LinkageVault(self.settings.vault_file, self._vault_key)
                 if self._vault_key is not None else None)
        writer = CatalogWriter(self.catalog, institution_id=self.institution_id,
                               collection_id=self.collection_id, job_id=job_id,
                               batch_size=self.settings.batch_size, vault=vault)
        self.bus.emit(IngestStarted(job_id=job_id, sources=total))
        self.bus.emit(FileDiscovered(total=total))
        log.info("ingest job %s started: %s inputs into collection %s", job_id, total,
                 self.collection_id)
        t0 = time.perf_counter()
        status, error = "done", None
        last = time.monotonic()
        try:
            for outcome in self._outcomes(paths):
                self._account(summary, outcome)
                writer.add(outcome)
                if time.monotonic() - last >= self.progress_every:
                    last = time.monotonic()
                    # No writer flush here: commits stay one per batch, so which inputs
                    # are seen as already stored does not depend on the clock.
                    with self.catalog.session() as s:
                        cancel = update_job(s, job_id, done=summary.inputs,
                                            counts=summary.as_dict())
                    if cancel:
                        raise JobCancelledError(f"job {job_id} cancelled on request")
            writer.flush()
        except JobCancelledError:
            writer.flush()
            self._finish(job_id, "cancelled", summary, t0, writer, "cancelled on request")
            raise
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            error = type(exc).__name__
            try:
                writer.flush()
            finally:
                self._finish(job_id, status, summary, t0, writer, error)
            raise
        self._finish(job_id, status, summary, t0, writer, error)
        return summary

    def _finish(self, job_id: int, status: str, summary: IngestSummary, t0: float,
                writer: CatalogWriter, error: str | None) -> None:
        summary.seconds = time.perf_counter() - t0
        summary.stored -= writer.late_duplicates
        summary.duplicates += writer.late_duplicates
        with self.catalog.session() as s:
            update_job(s, job_id, done=summary.inputs)
            finish_job(s, job_id, status, summary.as_dict(), error)
        log.info("ingest job %s %s: %s", job_id, status, summary.as_dict())
        self.bus.emit(IngestFinished(job_id=job_id, counts=summary.as_dict()))

    def _account(self, summary: IngestSummary, o: Outcome) -> None:
        summary.inputs += 1
        summary.bytes_in += o.size
        if o.status == "stored":
            summary.stored += 1
        elif o.status == "duplicate":
            summary.duplicates += 1
        else:
            summary.quarantined += 1
            reason = o.reason or "internal"
            summary.by_reason[reason] = summary.by_reason.get(reason, 0) + 1
        self.bus.emit(FileProcessed(outcome=o.status, nbytes=o.size, reason=o.reason))

    def _outcomes(self, paths: list[Path]) -> Any:
        items = discover(paths, self.settings)
        if self.workers <= 1:
            for it in items:
                yield self._refused(it) if isinstance(it, Refused) else _process_item(
                    self._local, it)
            return
        ctx = multiprocessing.get_context("fork")
        limit = self.settings.in_flight
        dump = self.settings.model_dump()
        with cf.ProcessPoolExecutor(
            self.workers, mp_context=ctx, initializer=_init_worker,
            initargs=(dump, self._key, self.profile, self._vault_key),
        ) as pool:
            pending: set[cf.Future[Outcome]] = set()
            try:
                for it in items:
                    if isinstance(it, Refused):
                        yield self._refused(it)
                        continue
                    pending.add(pool.submit(_work, it))
                    if len(pending) >= limit:
                        done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                        for f in done:
                            yield f.result()
                for f in cf.as_completed(pending):
                    yield f.result()
                pending = set()
            finally:
                for f in pending:
                    f.cancel()


def ingest_paths(
    node: Node, paths: list[Path], collection: str, *, workers: int | None = None,
    bus: EventBus | None = None,
) -> IngestSummary:
    """Ingest files, folders and archives into ``collection``."""
    return Ingestor(node, collection, workers=workers, bus=bus).run(paths)


__all__ = ["IngestSummary", "Ingestor", "ingest_paths"]
