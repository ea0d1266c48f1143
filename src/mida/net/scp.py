"""The DICOM network node: a DIMSE SCP in front of the de-identified archive.

:class:`DicomNode` answers C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET on one
port (``MIDA_DICOM_PORT``, bound to ``MIDA_HOST``):

- **Who may call.** Every association is checked when it is requested: the
  calling AE title (and, for a peer configured by IP address, the address it
  comes from) must be a peer added with ``mida aes add``; an unknown caller is
  rejected (``calling AE title not recognised``) and the rejection audited.
  Each operation then needs its scope on the collection it touches.
- **C-STORE** feeds the one ingest pipeline
  (:class:`~mida.ingest.processor.InstanceProcessor`: validation, quarantine,
  de-identification, de-duplication) with the bytes received, and the catalog
  writer, which commits in batches: when a batch is full, about once a second,
  when the association ends, and before any query or retrieve. The called AE
  title picks the collection (``MIDA_DICOM_AE_COLLECTIONS``; any other title
  stores into ``MIDA_DICOM_DEFAULT_COLLECTION``). Success (0x0000) means
  stored or already present; an input that is quarantined (its original kept
  in the quarantine area) is answered 0xC000 with the reason code as Error
  Comment; a peer without ``write`` on the collection gets 0x0124. Each
  association that stores records a ``dimse`` job, so provenance names it.
- **C-FIND** (Patient Root and Study Root; PATIENT, STUDY, SERIES, IMAGE)
  answers from the catalog, which holds de-identified values only, within the
  collections the peer may read (see :mod:`mida.net.qr`).
- **C-MOVE** sends to a move destination configured as a peer (its AE title,
  host and port); **C-GET** sends over the requesting association (the peer
  must propose the storage classes with the SCP role). Both send the stored
  de-identified instances of collections the peer may read. A request that
  finds nothing the peer may read fails the same way whether or not the data
  exist: C-MOVE with 0xA801, C-GET with 0xC000.

Every operation, and every rejected association, is written to the audit trail
as a ``dimse`` entry naming the operation, the AE titles, the query level or
pseudonymous UIDs and the result; never a value a peer sent, which may be
identified data.

pynetdicom runs each association in its own thread; each storing association
takes an instance processor of its own from a pool. TCP_NODELAY is set on every
accepted socket and on the sockets of C-MOVE sub-associations.

Examples
--------
>>> dicom = start_dicom_node(node, port=0)      # doctest: +SKIP
>>> dicom.port                                   # doctest: +SKIP
40123
>>> dicom.stop()                                 # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, cast

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from sqlalchemy import select

from mida.catalog import dicomquery
from mida.catalog.db import make_engine
from mida.catalog.dicomquery import Located
from mida.catalog.models import Collection, DicomPeer
from mida.catalog.service import finish_job, get_or_create_collection, start_job
from mida.deid import Pseudonymizer, get_profile
from mida.deid.vault import LinkageVault
from mida.errors import AuthError, MidaError
from mida.ingest.processor import InstanceProcessor, Outcome, Source
from mida.ingest.writer import CatalogWriter
from mida.net import qr
from mida.net.tcp import NODELAY_HANDLERS, NoDelayServer, quiet_pynetdicom
from mida.node import Node
from mida.sharing import AuditLog
from mida.sharing.identity import Principal, check_ae_title, peer_principal
from mida.storage import BlobStore

log = logging.getLogger(__name__)

#: Seconds between commits of a storing association's pending catalog rows. 0 (the
#: default) commits each instance before its C-STORE succeeds: a peer told "stored" may
#: delete its copy, so a crash must not leave the blob unindexed (``mida fsck --repair``
#: removes unindexed blobs). A positive value batches commits, about 10 % faster.
FLUSH_INTERVAL = 0.0
#: Most C-FIND matches returned (the rest are dropped and the audit entry says so).
FIND_LIMIT = 10_000
#: Most presentation contexts proposed to a C-MOVE destination (PS3.8 allows 128).
MAX_CONTEXTS = 128

_FIND_MODELS = (PatientRootQueryRetrieveInformationModelFind,
                StudyRootQueryRetrieveInformationModelFind)
_MOVE_MODELS = (PatientRootQueryRetrieveInformationModelMove,
                StudyRootQueryRetrieveInformationModelMove)
_GET_MODELS = (PatientRootQueryRetrieveInformationModelGet,
               StudyRootQueryRetrieveInformationModelGet)
_STUDY_ROOT = {str(StudyRootQueryRetrieveInformationModelFind),
               str(StudyRootQueryRetrieveInformationModelMove),
               str(StudyRootQueryRetrieveInformationModelGet)}

_LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81",
          "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.203"}

# Status codes (PS3.4 Annex B and C, PS3.7 Annex C)
SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_WARNING = 0xFF01  # matches continue; optional keys not supported for matching
CANCEL = 0xFE00
NOT_AUTHORISED = 0x0124
MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_MISMATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000


def status(code: int, comment: str | None = None) -> Dataset:
    """A status dataset with an Error Comment (at most 64 characters, never a peer's value)."""
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


def is_lossy(transfer_syntax: str) -> bool:
    """Whether a transfer syntax compresses with loss (JPEG baseline, lossy JPEG 2000, video)."""
    return transfer_syntax in _LOSSY or transfer_syntax.startswith("1.2.840.10008.1.2.4.10")


def transfer_syntaxes() -> list[str]:
    """Every transfer syntax this node accepts (pydicom's and pynetdicom's, compressed too)."""
    return list(dict.fromkeys([*ALL_TRANSFER_SYNTAXES, *map(str, AllTransferSyntaxes)]))


@dataclass(frozen=True)
class _Target:
    """Where C-STOREs of an association go."""

    id: int
    name: str
    profile: str
    institution_id: int  # the collection's owner: its patients are that institution's


@dataclass
class _Peer:
    """An accepted association: who called, as whom, from where."""

    principal: Principal
    calling_ae: str
    called_ae: str
    address: str
    session: _StoreSession | None = None


class _ProcessorPool:
    """Instance processors, one lent to each storing association at a time."""

    def __init__(self, node: Node) -> None:
        self.settings = node.settings
        self._key = node.key()
        self._vault_key = node.vault_key() if self.settings.linkage_vault else None
        self._store = node.store()
        self._engine = make_engine(self.settings.database_url)
        self._idle: dict[str, list[InstanceProcessor]] = {}
        self._lock = threading.Lock()

    def take(self, profile: str) -> InstanceProcessor:
        with self._lock:
            idle = self._idle.get(profile)
            if idle:
                return idle.pop()
        return InstanceProcessor(self.settings, self._key, profile, self._store, self._engine,
                                 vault_key=self._vault_key)

    def give(self, profile: str, proc: InstanceProcessor) -> None:
        with self._lock:
            self._idle.setdefault(profile, []).append(proc)

    def close(self) -> None:
        with self._lock:
            procs = [p for idle in self._idle.values() for p in idle]
            self._idle.clear()
        for p in procs:
            conn = getattr(p, "_conn", None)
            if conn is not None:
                conn.close()
        self._engine.dispose()


@dataclass
class _StoreSession:
    """The C-STOREs of one association: a processor, a catalog writer and a job."""

    dicom: DicomNode
    target: _Target
    processor: InstanceProcessor
    writer: CatalogWriter
    job_id: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: dict[str, Any] = field(default_factory=dict)
    last_flush: float = field(default_factory=time.monotonic)
    closed: bool = False

    def store(self, data: bytes, ref: str) -> Outcome:
        with self.lock:
            if self.closed:
                raise MidaError("the association has ended")
            outcome = self.processor.process(data, Source("dimse", ref))
            self._count(outcome)
            due = time.monotonic() - self.last_flush >= self.dicom.flush_interval
            self._write(outcome, flush=due)
            return outcome

    def _count(self, outcome: Outcome) -> None:
        c = self.counts
        c["inputs"] = c.get("inputs", 0) + 1
        c["bytes_in"] = c.get("bytes_in", 0) + outcome.size
        key = {"stored": "stored", "duplicate": "duplicates"}.get(outcome.status, "quarantined")
        c[key] = c.get(key, 0) + 1
        if outcome.reason:
            by = c.setdefault("by_reason", {})
            by[outcome.reason] = by.get(outcome.reason, 0) + 1

    def _write(self, outcome: Outcome | None, *, flush: bool) -> None:
        """Add an outcome and/or commit, with a vault connection of this thread's own.

        The caller holds the lock. The writer batches (a full batch commits in
        ``add``); the linkage vault is opened for the call because its SQLite
        connection may not cross threads, and commits run in several threads.
        """
        with self.dicom._vault() as vault:
            self.writer.vault = vault
            try:
                if outcome is not None:
                    self.writer.add(outcome)
                if flush and self.writer.pending:
                    self.writer.flush()
                    self.last_flush = time.monotonic()
            finally:
                self.writer.vault = None

    def flush(self, *, wait: bool = True) -> None:
        """Commit pending rows (``wait=False``: skip when the session is busy)."""
        if not self.lock.acquire(blocking=wait):
            return
        try:
            self._write(None, flush=True)
        finally:
            self.lock.release()

    def close(self, job_status: str, error: str | None = None) -> None:
        """Commit what is pending, finish the job and give the processor back."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            try:
                self._write(None, flush=True)
            finally:
                counts = dict(self.counts, collection=self.target.name)
                late = self.writer.late_duplicates
                counts["stored"] = counts.get("stored", 0) - late
                counts["duplicates"] = counts.get("duplicates", 0) + late
                with self.dicom.catalog.session() as s:
                    finish_job(s, self.job_id, job_status, counts, error)
                self.dicom._pool.give(self.target.profile, self.processor)


class DicomNode:
    """The node's DIMSE service class provider (see the module docstring).

    Parameters
    ----------
    node
        The opened node.
    port
        TCP port (default ``MIDA_DICOM_PORT``); 0 picks a free one (see :attr:`port`).
    ae_title
        This node's AE title (default ``MIDA_DICOM_AE_TITLE``).
    host
        Address to listen on (default ``MIDA_HOST``, 127.0.0.1).
    flush_interval
        Most seconds a stored instance waits for its catalog row to be committed
        (0: commit each one before answering its C-STORE, about 10% slower).
    """

    def __init__(self, node: Node, *, port: int | None = None, ae_title: str | None = None,
                 host: str | None = None, flush_interval: float = FLUSH_INTERVAL) -> None:
        s = node.settings
        self.node = node
        self.settings = s
        self.host = host or s.host
        self._port = s.dicom_port if port is None else port
        if not 0 <= self._port <= 65535:
            raise MidaError(f"bad DICOM port {self._port}: 1-65535 (0 picks a free port)")
        self.ae_title = check_ae_title(ae_title or s.dicom_ae_title)
        self.flush_interval = flush_interval
        get_profile(s.deid_profile, s.home)  # an unknown or invalid profile fails here
        self.catalog = node.catalog()
        self.audit_log = AuditLog(s.audit_file, fsync=s.audit_fsync)
        self._institution_id = node.institution_id()
        self._pseudo = Pseudonymizer(node.key())
        self._vault_key = node.vault_key() if s.linkage_vault else None
        self._pool = _ProcessorPool(node)
        self._peers: dict[Any, _Peer] = {}
        self._targets: dict[str, _Target] = {}
        self._lock = threading.Lock()
        self._server: NoDelayServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()
        self._blobs: BlobStore | None = None

    # -- life cycle ------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port listened on (the one picked when started with port 0)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        ae.maximum_pdu_size = self.settings.dicom_max_pdu
        syntaxes = transfer_syntaxes()
        ae.add_supported_context(Verification)
        for cx in AllStoragePresentationContexts:
            # SCP for C-STORE, and SCU on request (role selection) for C-GET
            ae.add_supported_context(str(cx.abstract_syntax), syntaxes, scu_role=True,
                                     scp_role=True)
        for uid in (*_FIND_MODELS, *_MOVE_MODELS, *_GET_MODELS):
            ae.add_supported_context(uid)
        return ae

    def _handlers(self) -> list[Any]:
        return [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_CONN_CLOSE, self._on_closed),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_C_MOVE, self._on_move),
            (evt.EVT_C_GET, self._on_get),
        ]

    def start(self) -> DicomNode:
        """Start listening (non-blocking); returns self."""
        if self._server is not None:
            return self
        quiet_pynetdicom()
        ae = self._make_ae()
        try:
            server = cast(NoDelayServer, ae.make_server(
                (self.host, self._port), evt_handlers=self._handlers(), server_class=NoDelayServer))
        except OSError as exc:
            raise MidaError(
                f"cannot listen for DICOM on {self.host}:{self._port} ({exc.strerror or exc}): "
                "choose another port (--port, MIDA_DICOM_PORT) or stop what uses it"
            ) from None
        self._server = server
        self._stopped.clear()
        serve = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                 name=f"mida-dicom-{self.port}", daemon=True)
        flusher = threading.Thread(target=self._flush_loop, name="mida-dicom-flush",
                                   daemon=True)
        self._threads = [serve, flusher]
        for t in self._threads:
            t.start()
        log.info("DICOM node %s listening on %s:%s", self.ae_title, self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop listening, abort open associations and commit what they stored."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopped.set()
        server.shutdown()
        for assoc in server.active_associations:
            assoc.abort()
        for assoc in server.active_associations:
            assoc.join(timeout=10)
        for t in self._threads:
            t.join(timeout=10)
        with self._lock:
            peers = list(self._peers.items())
            self._peers.clear()
        for _, peer in peers:
            if peer.session is not None:
                peer.session.close("interrupted", "the DICOM node stopped")
        self._pool.close()
        log.info("DICOM node %s stopped", self.ae_title)

    def wait_idle(self, timeout: float | None = 60.0) -> bool:
        """Wait until no association is open and what they stored is committed.

        Returns whether the node is idle (False when ``timeout`` seconds passed first).
        """
        server = self._server
        if server is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        for assoc in server.active_associations:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            assoc.join(left)
        self.sync()
        return not server.active_associations

    def serve_forever(self) -> None:
        """Run until :meth:`stop` is called from another thread or Ctrl-C (blocking)."""
        self.start()
        try:
            while not self._stopped.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> DicomNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- storing ---------------------------------------------------------------
    @contextlib.contextmanager
    def _vault(self) -> Iterator[LinkageVault | None]:
        """A linkage vault connection for one commit (None without a vault)."""
        if self._vault_key is None:
            yield None
            return
        vault = LinkageVault(self.settings.vault_file, self._vault_key)
        try:
            yield vault
        finally:
            vault.close()

    def _flush_loop(self) -> None:
        while not self._stopped.wait(max(self.flush_interval, 0.2)):
            for session in self._sessions():
                try:
                    session.flush(wait=False)
                except Exception as exc:  # keep flushing the others; rows are retried later
                    log.error("committing received instances failed (%s)", type(exc).__name__)

    def _sessions(self) -> list[_StoreSession]:
        with self._lock:
            return [p.session for p in self._peers.values() if p.session is not None]

    def sync(self) -> None:
        """Commit every instance received so far (queries and retrieves see them)."""
        for session in self._sessions():
            session.flush()

    def _target(self, called_ae: str, principal: Principal) -> _Target | None:
        """The collection C-STOREs to ``called_ae`` go to; None if it is new and may not be made."""
        s = self.settings
        name = s.dicom_ae_collections.get(called_ae.strip(), s.dicom_default_collection)
        with self._lock:
            known = self._targets.get(name)
        if known is not None:
            return known
        with self.catalog.session() as db:
            row = db.scalar(select(Collection).where(Collection.name == name))
            if row is None:
                if not principal.allows("write"):  # creating one is node-wide
                    return None
                row = get_or_create_collection(db, name, self._institution_id, s.deid_profile)
            target = _Target(row.id, row.name, row.deid_profile, row.institution_id)
        with self._lock:
            self._targets[name] = target
        return target

    def _session(self, peer: _Peer, target: _Target) -> _StoreSession:
        if peer.session is not None:
            return peer.session
        with self.catalog.session() as s:
            job = start_job(s, "dimse", {"collection": target.name, "calling_ae": peer.calling_ae,
                                         "called_ae": peer.called_ae},
                            owner=peer.principal.actor[:64])
            job_id = job.id
        writer = CatalogWriter(self.catalog, institution_id=target.institution_id,
                               collection_id=target.id, job_id=job_id,
                               batch_size=self.settings.batch_size)
        session = _StoreSession(self, target, self._pool.take(target.profile), writer, job_id)
        with self._lock:
            peer.session = session
        return session

    # -- association -----------------------------------------------------------
    def _audit(self, op: str, result: str, peer: _Peer | None = None, *,
               actor: str | None = None, **detail: Any) -> None:
        entry: dict[str, Any] = {"op": op, "result": result}
        if peer is not None:
            entry.update(calling_ae=peer.calling_ae, called_ae=peer.called_ae,
                         address=peer.address)
        entry.update(detail)
        try:
            self.audit_log.append("dimse", entry,
                                  actor=actor or (peer.principal.actor if peer else None))
        except OSError as exc:
            log.error("cannot write the audit trail (%s): check %s", type(exc).__name__,
                      self.settings.audit_file)

    def _peer(self, assoc: Any) -> _Peer | None:
        with self._lock:
            return self._peers.get(assoc)

    @staticmethod
    def _reject(assoc: Any, result: int, diagnostic: int) -> None:
        """Send A-ASSOCIATE-RJ (source: service user) and end once it is sent.

        As pynetdicom does for its own rejections: ``kill`` waits for the DUL to
        send the PDU before the reactor closes the socket.
        """
        assoc.acse.send_reject(result, 0x01, diagnostic)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        rq = assoc.requestor.primitive
        calling = str(rq.calling_ae_title or "").strip()
        called = str(rq.called_ae_title or "").strip()
        address = str(assoc.requestor.address)
        try:
            with self.catalog.session() as s:
                principal = peer_principal(s, calling, address)
        except AuthError:
            # rejected-permanent, service-user, calling AE title not recognised
            self._audit("A-ASSOCIATE", "denied", actor=f"unknown-ae:{calling}",
                        calling_ae=calling, called_ae=called, address=address,
                        reason="unknown calling AE title or address")
            self._reject(assoc, 0x01, 0x03)
            return
        except Exception as exc:
            log.error("checking a calling AE failed (%s)", type(exc).__name__)
            # rejected-transient, service-user, no reason given
            self._audit("A-ASSOCIATE", "failed", actor=f"unknown-ae:{calling}",
                        calling_ae=calling, called_ae=called, address=address,
                        reason=type(exc).__name__)
            self._reject(assoc, 0x02, 0x01)
            return
        self._follow_proposals(assoc)
        with self._lock:
            self._peers[assoc] = _Peer(principal, calling, called, address)

    @staticmethod
    def _follow_proposals(assoc: Any) -> None:
        """Accept, of each abstract syntax, the transfer syntax the caller proposed first.

        pynetdicom picks the first of the acceptor's syntaxes that was proposed; this
        node has no preference of its own, so the caller's order decides (a viewer
        asking C-GET for JPEG 2000 gets the stored JPEG 2000 as it is), except that
        a lossy syntax is taken only when nothing lossless was proposed.
        """
        order: dict[str, list[str]] = {}
        for cx in assoc.requestor.primitive.presentation_context_definition_list:
            seen = order.setdefault(str(cx.abstract_syntax), [])
            seen.extend(str(ts) for ts in cx.transfer_syntax if str(ts) not in seen)
        contexts = []
        for cx in assoc.acceptor.supported_contexts:
            ours = [str(ts) for ts in cx.transfer_syntax]
            wanted = [ts for ts in order.get(str(cx.abstract_syntax), []) if ts in ours]
            if wanted:
                wanted.sort(key=is_lossy)  # stable: the caller's order within each kind
                new = build_context(cx.abstract_syntax,
                                    wanted + [ts for ts in ours if ts not in wanted])
                new.scu_role, new.scp_role = cx.scu_role, cx.scp_role
                cx = new
            contexts.append(cx)
        assoc.acceptor.supported_contexts = contexts

    def _end(self, assoc: Any, job_status: str, error: str | None = None) -> None:
        with self._lock:
            peer = self._peers.get(assoc)
        if peer is not None and peer.session is not None:
            try:
                peer.session.close(job_status, error)
            except Exception as exc:
                log.error("finishing an association's job failed (%s)", type(exc).__name__)
        with self._lock:
            self._peers.pop(assoc, None)

    def _on_released(self, event: Any) -> None:
        self._end(event.assoc, "done")

    def _on_aborted(self, event: Any) -> None:
        self._end(event.assoc, "interrupted", "association aborted")

    def _on_closed(self, event: Any) -> None:
        if event.assoc.is_aborted:
            self._end(event.assoc, "interrupted", "association aborted")
        else:  # normally after EVT_RELEASED, which ended it already
            self._end(event.assoc, "done")

    # -- C-ECHO ----------------------------------------------------------------
    def _on_echo(self, event: Any) -> int:
        peer = self._peer(event.assoc)
        if peer is None:
            return UNABLE_TO_PROCESS
        self._audit("C-ECHO", "allowed", peer)
        return SUCCESS

    # -- C-STORE ---------------------------------------------------------------
    def _pseudo_uid(self, uid: Any) -> str | None:
        text = str(uid or "").strip("\x00 ")
        return self._pseudo.uid(text) if text else None

    def _on_store(self, event: Any) -> int | Dataset:
        peer = self._peer(event.assoc)
        if peer is None:
            return UNABLE_TO_PROCESS
        affected = event.request.AffectedSOPInstanceUID
        try:
            target = self._target(peer.called_ae, peer.principal)
            if target is None or not peer.principal.allows("write", target.id):
                self._audit("C-STORE", "denied", peer, object=self._pseudo_uid(affected),
                            collection=target.name if target else None)
                return status(NOT_AUTHORISED, "not authorised to store to this AE title")
            session = self._session(peer, target)
            data = event.encoded_dataset()
            ref = f"dimse:{peer.calling_ae}>{peer.called_ae}:{affected}"
            outcome = session.store(data, ref)
        except Exception as exc:  # a bug or the catalog down: say so, keep nothing secret
            log.error("C-STORE failed (%s)", type(exc).__name__)
            self._audit("C-STORE", "failed", peer, object=self._pseudo_uid(affected),
                        error=type(exc).__name__)
            return status(UNABLE_TO_PROCESS, f"internal error ({type(exc).__name__})")
        uid = (outcome.record.get("instance", {}).get("SOPInstanceUID")
               if outcome.record else None) or self._pseudo_uid(affected)
        if outcome.status in ("stored", "duplicate"):
            self._audit("C-STORE", "allowed", peer, object=uid, collection=target.name,
                        outcome=outcome.status, job_id=session.job_id)
            return SUCCESS
        self._audit("C-STORE", "failed", peer, object=uid, collection=target.name,
                    outcome="quarantined", reason=outcome.reason, job_id=session.job_id)
        return status(UNABLE_TO_PROCESS, f"quarantined: {outcome.reason}")

    # -- C-FIND ----------------------------------------------------------------
    def _on_find(self, event: Any) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        peer = self._peer(event.assoc)
        if peer is None:
            yield status(UNABLE_TO_PROCESS), None
            return
        model = str(event.request.AffectedSOPClassUID)
        try:
            identifier = event.identifier
            req = qr.find_request(identifier)
            if req.level == "PATIENT" and model in _STUDY_ROOT:
                raise MidaError("the Study Root model has no PATIENT level: use STUDY or below")
        except MidaError as exc:
            self._audit("C-FIND", "failed", peer, error="bad identifier")
            yield status(IDENTIFIER_MISMATCH, str(exc)), None
            return
        except Exception as exc:
            self._audit("C-FIND", "failed", peer, error=type(exc).__name__)
            yield status(UNABLE_TO_PROCESS, "cannot decode the identifier"), None
            return
        readable = peer.principal.readable("read")
        try:
            self.sync()
            with self.catalog.session() as s:
                result = dicomquery.search(s, req.level, req.match, collection_ids=readable,
                                           limit=FIND_LIMIT)
        except MidaError as exc:  # a bad matching value: the message names the key
            self._audit("C-FIND", "failed", peer, object=req.level, keys=req.keys,
                        error="bad matching value")
            yield status(IDENTIFIER_MISMATCH, str(exc)), None
            return
        except Exception as exc:
            log.error("C-FIND failed (%s)", type(exc).__name__)
            self._audit("C-FIND", "failed", peer, object=req.level, error=type(exc).__name__)
            yield status(UNABLE_TO_PROCESS, f"internal error ({type(exc).__name__})"), None
            return
        self._audit("C-FIND", "denied" if readable == frozenset() else "allowed", peer,
                    object=req.level, keys=req.keys, ignored_keys=req.ignored,
                    matches=len(result.rows), truncated=result.more)
        pending = PENDING_WARNING if req.ignored else PENDING
        for row in result.rows:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield pending, qr.find_response(row, identifier, req.level, ae_title=self.ae_title)

    # -- C-MOVE and C-GET --------------------------------------------------------
    def _retrieve(self, peer: _Peer, event: Any, op: str) -> tuple[list[Located], str]:
        """What a retrieve may send, and its audit result; never says why it is empty."""
        try:
            identifier = event.identifier
            level = qr.query_level(identifier)
        except Exception as exc:
            return [], f"bad identifier ({type(exc).__name__})"
        readable = peer.principal.readable("read")
        self.sync()
        with self.catalog.session() as s:
            found = qr.retrieve_instances(s, identifier, collection_ids=readable)
            if found:
                return found, "allowed"
            # for the audit trail only: the peer is answered alike either way
            anywhere = readable is not None and qr.retrieve_instances(
                s, identifier, collection_ids=None)
        return [], "denied" if anywhere else f"no match at {level} level"

    def _audit_retrieve(self, op: str, peer: _Peer, found: list[Located], result: str,
                        **detail: Any) -> None:
        studies = sorted({x.study_uid for x in found})
        outcome = "allowed" if result == "allowed" else (
            "denied" if result == "denied" else "failed")
        extra = {} if outcome != "failed" else {"error": result}
        self._audit(op, outcome, peer, object=studies[:20], instances=len(found),
                    studies=len(studies), **extra, **detail)

    def _read(self, loc: Located) -> Dataset | None:
        if self._blobs is None:
            self._blobs = self.node.store()
        try:
            return dcmread(BytesIO(self._blobs.get(loc.blob_sha256)))
        except Exception as exc:
            log.error("cannot read a stored instance (%s): run 'mida fsck'", type(exc).__name__)
            return None

    def _send_plan(self, found: list[Located]) -> list[PresentationContext]:
        by_class: dict[str, list[str]] = {}
        for x in found:
            by_class.setdefault(x.sop_class_uid, []).append(x.transfer_syntax_uid)
        contexts: list[PresentationContext] = []
        for sop_class, stored in sorted(by_class.items()):
            for syntaxes in qr.transfer_syntaxes_for(stored):
                if len(contexts) < MAX_CONTEXTS:
                    contexts.append(build_context(sop_class, syntaxes))
        return contexts

    def _destination(self, ae_title: str) -> tuple[str, int] | None:
        with self.catalog.session() as s:
            row = s.scalar(select(DicomPeer).where(DicomPeer.ae_title == ae_title.strip(),
                                                   DicomPeer.role == "peer"))
            return (row.host, row.port) if row is not None else None

    def _on_move(self, event: Any) -> Iterator[Any]:
        peer = self._peer(event.assoc)
        if peer is None:
            yield None, None
            return
        dest_ae = str(event.move_destination or "").strip()
        try:
            dest = self._destination(dest_ae)
            found, result = self._retrieve(peer, event, "C-MOVE")
        except Exception as exc:
            log.error("C-MOVE failed (%s)", type(exc).__name__)
            dest, found, result = None, [], type(exc).__name__
        if dest is None and result == "allowed":
            found, result = [], "move destination unknown"
        self._audit_retrieve("C-MOVE", peer, found, result, destination=dest_ae)
        if not found or dest is None:
            yield None, None  # 0xA801: unknown destination, nothing found, or not allowed
            return
        accepted: dict[str, Any] = {}

        def on_accepted(ev: Any) -> None:
            accepted["assoc"] = ev.assoc

        yield dest[0], dest[1], {
            "contexts": self._send_plan(found),
            "evt_handlers": [*NODELAY_HANDLERS, (evt.EVT_ACCEPTED, on_accepted)],
        }
        yield len(found)
        yield from self._sub_operations(event, found, lambda: (
            accepted["assoc"].accepted_contexts if "assoc" in accepted else []))

    def _on_get(self, event: Any) -> Iterator[Any]:
        peer = self._peer(event.assoc)
        if peer is None:
            yield 1
            yield status(UNABLE_TO_PROCESS), None
            return
        try:
            found, result = self._retrieve(peer, event, "C-GET")
        except Exception as exc:
            log.error("C-GET failed (%s)", type(exc).__name__)
            found, result = [], type(exc).__name__
        self._audit_retrieve("C-GET", peer, found, result)
        if not found:
            yield 1
            yield status(UNABLE_TO_PROCESS, "nothing to retrieve that you may read"), None
            return
        yield len(found)
        yield from self._sub_operations(event, found, lambda: [
            cx for cx in event.assoc.accepted_contexts if cx.as_scu])

    def _sub_operations(self, event: Any, found: list[Located], contexts: Any) -> Iterator[Any]:
        for loc in found:
            if event.is_cancelled:
                yield CANCEL, None
                return
            ds = self._read(loc)
            if ds is None:
                yield PENDING, "unreadable"  # pynetdicom counts a non-dataset as failed
                continue
            try:
                ds = qr.fit_to_contexts(ds, contexts())
            except Exception as exc:  # no decoder for this compression: sent as is, may fail
                log.warning("cannot decompress a stored instance (%s)", type(exc).__name__)
            yield PENDING, ds


def start_dicom_node(node: Node, port: int | None = None, ae_title: str | None = None,
                     host: str | None = None) -> DicomNode:
    """Start the node's DICOM service (non-blocking); call ``.stop()`` when done."""
    return DicomNode(node, port=port, ae_title=ae_title, host=host).start()


__all__ = [
    "FIND_LIMIT",
    "FLUSH_INTERVAL",
    "DicomNode",
    "is_lossy",
    "start_dicom_node",
    "status",
    "transfer_syntaxes",
]
