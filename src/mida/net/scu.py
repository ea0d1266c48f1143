"""DIMSE service-class-user helpers: associations, C-FIND, C-GET and C-MOVE.

Every socket these helpers open or accept has ``TCP_NODELAY`` set (pynetdicom
3.0 never sets it, and with Nagle's algorithm each DIMSE exchange waits for a
delayed ACK: C-FIND 48.7 ms against 6.5 ms, see ../shared/NOTES.md): the
``EVT_CONN_OPEN`` handler of :data:`mida.net.tcp.NODELAY_HANDLERS` sets it,
and pynetdicom fires that event once a requestor's socket is connected (before
the A-ASSOCIATE-RQ is sent) and once an acceptor's socket is accepted (before
the request is read), so it serves :func:`associate` and :func:`storage_scp`.

Identifiers of queries and answers are never logged: pynetdicom's own
identifier logging is switched off (:func:`mida.net.tcp.quiet_pynetdicom`),
and errors name the PACS, its address and the DIMSE status only.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    StoragePresentationContexts,
    build_role,
    evt,
)
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from mida.errors import MidaError
from mida.net.tcp import NODELAY_HANDLERS, quiet_pynetdicom

log = logging.getLogger(__name__)

#: The most presentation contexts one association may propose (PS3.8 9.3.2.2).
MAX_CONTEXTS = 128
#: DIMSE statuses of a C-STORE handler
STORE_OK, STORE_OUT_OF_RESOURCES, STORE_CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000


@dataclass(frozen=True)
class Remote:
    """A DICOM node mida calls: its configured name, AE title and address."""

    name: str
    ae_title: str
    host: str
    port: int
    calling_aet: str = "MIDA"
    connect_timeout: float = 10.0
    dimse_timeout: float = 120.0


@dataclass
class RetrieveResult:
    """The final answer of a C-GET or C-MOVE (sub-operation counts)."""

    status: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the retrieve ended with success and no failed sub-operation."""
        return self.error is None and self.status == 0x0000 and self.failed == 0


def _reach_error(remote: Remote) -> str | None:
    """Why ``remote`` cannot be reached (one plain TCP connection attempt); None if it can."""
    try:
        with socket.create_connection((remote.host, remote.port), timeout=remote.connect_timeout):
            return None
    except TimeoutError:
        return "no answer (timed out)"
    except socket.gaierror:
        return "unknown host"
    except OSError as exc:
        if exc.errno is not None and exc.errno in errno.errorcode:
            return (exc.strerror or errno.errorcode[exc.errno]).lower()
        return type(exc).__name__


def associate(remote: Remote, contexts: list[Any], *, roles: list[Any] | None = None,
              handlers: list[tuple[Any, Callable[..., Any]]] | None = None) -> Association:
    """Open an association to ``remote`` with ``TCP_NODELAY`` on its socket.

    Parameters
    ----------
    remote
        The node to call.
    contexts
        Presentation contexts to propose (at most :data:`MAX_CONTEXTS`).
    roles
        SCP/SCU role selection items (C-GET's storage sub-operations).
    handlers
        Extra event handlers, e.g. ``(evt.EVT_C_STORE, fn)``.

    Returns
    -------
    pynetdicom.association.Association
        Established; the caller releases it.

    Raises
    ------
    MidaError
        The node cannot be reached, rejected or aborted the association.
    """
    quiet_pynetdicom()
    ae = AE(ae_title=remote.calling_aet)
    ae.connection_timeout = remote.connect_timeout
    ae.acse_timeout = remote.connect_timeout
    ae.dimse_timeout = remote.dimse_timeout
    ae.network_timeout = max(remote.dimse_timeout, 60.0)
    ae.requested_contexts = contexts[:MAX_CONTEXTS]
    assoc = ae.associate(remote.host, remote.port, ae_title=remote.ae_title,
                         ext_neg=roles or None,
                         evt_handlers=[*NODELAY_HANDLERS, *(handlers or [])])
    if assoc.is_established:
        return assoc
    where = f"PACS {remote.name} at {remote.host}:{remote.port}"
    hint = "check mida pacs ls and the PACS's AE configuration"
    if assoc.is_rejected:
        raise MidaError(f"{where} rejected the association (called AE {remote.ae_title}, "
                        f"calling AE {remote.calling_aet}); {hint}")
    unreachable = _reach_error(remote)  # pynetdicom reports a refused connection as aborted
    if unreachable is not None:
        raise MidaError(f"cannot reach {where}: {unreachable}; {hint}")
    raise MidaError(f"{where} aborted the association or did not answer it (called AE "
                    f"{remote.ae_title}); {hint}")


def _check_status(remote: Remote, what: str, status: Dataset | None) -> int:
    if status is None or "Status" not in status:
        raise MidaError(f"PACS {remote.name} did not answer the {what} (timeout or abort)")
    code = int(status.Status)
    if code not in (0x0000, 0xFF00, 0xFF01):
        raise MidaError(f"PACS {remote.name} refused the {what}: status 0x{code:04X}")
    return code


def find(remote: Remote, identifier: Dataset) -> list[Dataset]:
    """C-FIND (Study Root) ``identifier`` on ``remote``; returns the matches.

    Raises
    ------
    MidaError
        The node cannot be reached or answered with a failure status.
    """
    model = StudyRootQueryRetrieveInformationModelFind
    assoc = associate(remote, [build_context(model)])
    matches: list[Dataset] = []
    try:
        for status, answer in assoc.send_c_find(identifier, model):
            code = _check_status(remote, "query (C-FIND)", status)
            if code in (0xFF00, 0xFF01) and answer is not None:
                matches.append(answer)
    finally:
        assoc.release()
    return matches


#: Uncompressed transfer syntaxes, offered together in one context per SOP class.
UNCOMPRESSED = [
    "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
]
#: Compressed image transfer syntaxes mida reads, most common first; with a study's SOP
#: classes known, each gets a context of its own per class (room allowing), so that a
#: C-GET SCP sends the instances as stored instead of transcoding them (or failing to).
COMPRESSED = [
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",
]


def storage_contexts(sop_classes: list[str] | None = None, *,
                     limit: int = MAX_CONTEXTS - 1) -> list[Any]:
    """Storage presentation contexts for receiving C-STORE sub-operations (at most ``limit``).

    With ``sop_classes`` (e.g. a study's SOPClassesInStudy): per class, a context
    offering the uncompressed syntaxes, then one context per compressed syntax of
    :data:`COMPRESSED` (most common first, across classes, while room is left).
    Without: pynetdicom's common storage classes, each offering every transfer
    syntax pynetdicom knows in one context (the SCP then picks one per class).
    """
    if not sop_classes:
        uids = [str(cx.abstract_syntax) for cx in StoragePresentationContexts]
        return [build_context(u, ALL_TRANSFER_SYNTAXES) for u in uids[:limit]]
    classes = list(dict.fromkeys(u for u in sop_classes if u))[:limit]
    out = [build_context(u, UNCOMPRESSED) for u in classes]
    for ts in COMPRESSED:
        for u in classes:
            if len(out) >= limit:
                return out
            out.append(build_context(u, [ts]))
    return out


def _final(result: RetrieveResult, remote: Remote, what: str,
           responses: Iterator[tuple[Dataset, Dataset | None]]) -> RetrieveResult:
    last: Dataset | None = None
    for status, _ in responses:
        last = status
        if status is None or "Status" not in status:
            result.error = f"PACS {remote.name} did not answer the {what} (timeout or abort)"
            return result
    if last is None:
        result.error = f"PACS {remote.name} sent no answer to the {what}"
        return result
    result.status = int(last.Status)
    result.completed = int(last.get("NumberOfCompletedSuboperations", 0) or 0)
    result.failed = int(last.get("NumberOfFailedSuboperations", 0) or 0)
    result.warning = int(last.get("NumberOfWarningSuboperations", 0) or 0)
    if result.status not in (0x0000, 0xB000):
        result.error = f"PACS {remote.name} ended the {what} with status 0x{result.status:04X}"
        if result.status == 0xA801:
            result.error += (" (move destination unknown: configure mida's move destination "
                             "AE title, host and port on the PACS)")
    return result


class Retrieval:
    """One study retrieve (C-GET or C-MOVE) that can be aborted from another thread."""

    def __init__(self) -> None:
        self._assoc: Association | None = None
        self._lock = threading.Lock()
        self.aborted = False

    def _bind(self, assoc: Association) -> None:
        with self._lock:
            self._assoc = assoc
            if self.aborted:
                assoc.abort()

    def abort(self) -> None:
        """Abort the association in flight (if any); the retrieve then ends."""
        with self._lock:
            self.aborted = True
            if self._assoc is not None and self._assoc.is_established:
                self._assoc.abort()

    def get(self, remote: Remote, identifier: Dataset, on_store: Callable[[Event], int],
            sop_classes: list[str] | None = None) -> RetrieveResult:
        """C-GET (Study Root) ``identifier``: instances arrive on this association.

        ``on_store`` handles each C-STORE sub-operation (pynetdicom's thread)
        and returns its DIMSE status.
        """
        model = StudyRootQueryRetrieveInformationModelGet
        stores = storage_contexts(sop_classes)
        roles = [build_role(cx.abstract_syntax, scp_role=True) for cx in stores]
        assoc = associate(remote, [build_context(model), *stores], roles=roles,
                          handlers=[(evt.EVT_C_STORE, on_store)])
        self._bind(assoc)
        try:
            return _final(RetrieveResult(), remote, "retrieve (C-GET)",
                          assoc.send_c_get(identifier, model))
        finally:
            if assoc.is_established:
                assoc.release()

    def move(self, remote: Remote, identifier: Dataset, destination: str) -> RetrieveResult:
        """C-MOVE (Study Root) ``identifier`` to the AE titled ``destination``."""
        model = StudyRootQueryRetrieveInformationModelMove
        assoc = associate(remote, [build_context(model)])
        self._bind(assoc)
        try:
            return _final(RetrieveResult(), remote, "retrieve (C-MOVE)",
                          assoc.send_c_move(identifier, destination, model))
        finally:
            if assoc.is_established:
                assoc.release()


@dataclass
class StorageSCP:
    """A temporary storage SCP (a C-MOVE destination); see :func:`storage_scp`."""

    ae_title: str
    host: str
    port: int
    handler: Callable[[Event], int] = field(repr=False)
    server: Any = field(repr=False, default=None)


@contextmanager
def storage_scp(ae_title: str, on_store: Callable[[Event], int], *, host: str = "127.0.0.1",
                port: int = 0, calling_aets: list[str] | None = None) -> Iterator[StorageSCP]:
    """Run a storage SCP titled ``ae_title`` on ``host:port`` (0: an ephemeral port).

    Accepted sockets get ``TCP_NODELAY``; every storage SOP class and every
    transfer syntax pynetdicom knows is accepted; ``calling_aets`` (when
    given) are the only callers accepted. ``on_store`` runs in the
    association's thread and returns the C-STORE status.

    Raises
    ------
    MidaError
        The address cannot be bound (e.g. the port is in use).
    """
    quiet_pynetdicom()
    ae = AE(ae_title=ae_title)
    ae.network_timeout = 120
    ae.dimse_timeout = 120
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
    if calling_aets:
        ae.require_calling_aet = calling_aets
    try:
        server = ae.start_server((host, port), block=False,
                                 evt_handlers=[*NODELAY_HANDLERS, (evt.EVT_C_STORE, on_store)])
    except OSError as exc:
        raise MidaError(f"cannot listen on {host}:{port} for C-MOVE "
                        f"({(exc.strerror or type(exc).__name__).lower()}); "
                        "choose another --move-port") from None
    assert server is not None  # block=False returns the server
    try:
        bound_host, bound_port = server.server_address[:2]
        yield StorageSCP(ae_title=ae_title, host=str(bound_host), port=int(bound_port),
                         handler=on_store, server=server)
    finally:
        server.shutdown()


__all__ = [
    "COMPRESSED",
    "MAX_CONTEXTS",
    "STORE_CANNOT_UNDERSTAND",
    "STORE_OK",
    "STORE_OUT_OF_RESOURCES",
    "UNCOMPRESSED",
    "Remote",
    "Retrieval",
    "RetrieveResult",
    "StorageSCP",
    "associate",
    "find",
    "storage_contexts",
    "storage_scp",
]
