"""PACS pull: mida is the SCU. C-FIND the studies that match a query, then fetch them.

A pull runs study by study:

1. a STUDY-level C-FIND (Study Root) on the PACS with the query's keys
   (``Modality=CT`` asks for ModalitiesInStudy, which the PACS matches against
   every modality of the study);
2. for each study, a C-GET (the PACS sends the instances back on the same
   association) or a C-MOVE to a temporary storage SCP that mida runs for the
   pull's length, titled with the move destination's AE title;
3. each instance received goes through :class:`~mida.ingest.processor.InstanceProcessor`
   (parse, validate, de-identify, quarantine, de-duplicate, store) and the
   :class:`~mida.ingest.writer.CatalogWriter`, flushed once per study;
4. a :class:`~mida.catalog.models.PullItem` per (PACS, query, study) records
   the study's state. Its keys are keyed hashes (the PACS's Study Instance UID
   is an identifier and is never stored); a study is marked ``done`` only once
   its instances are in the catalog.

So a pull is resumable and idempotent: re-running it skips the studies done
(``refresh=True`` fetches them again, and de-duplication keeps that a no-op),
and an interrupted run (killed, failed, cancelled) starts again at the first
study not done. A study the PACS fails to send is marked ``failed`` and
counted, and the pull goes on.

Throttling, per PACS (``mida pacs add``): ``max_mbps`` caps the received bytes
(a token bucket; the consumer sleeps, which holds back the PACS through a
bounded queue) and ``hours`` (``"20-06"``, local time) are when studies may be
started: outside them the pull sleeps until the window opens, checking for a
cancel. A cancel request (``mida jobs cancel``) is honoured between studies.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import re
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pynetdicom.events import Event
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mida.catalog.db import make_engine
from mida.catalog.models import DicomPeer, PullItem
from mida.catalog.service import finish_job, get_or_create_collection, start_job, update_job
from mida.deid import get_profile
from mida.deid.vault import LinkageVault
from mida.errors import MidaError
from mida.ingest.processor import InstanceProcessor, Outcome, Source
from mida.ingest.writer import CatalogWriter
from mida.net.scu import (
    STORE_CANNOT_UNDERSTAND,
    STORE_OK,
    STORE_OUT_OF_RESOURCES,
    Remote,
    Retrieval,
    RetrieveResult,
    find,
    storage_scp,
)
from mida.node import Node
from mida.sharing.identity import add_peer, get_peer, list_peers, remove_peer
from mida.storage import open_store

log = logging.getLogger(__name__)

METHODS = ("get", "move")

#: Keys a STUDY-level C-FIND may match (Study Root, PS3.4 C.6.2.1.2), plus Modality.
STUDY_KEYS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyInstanceUID",
    "StudyDescription", "ReferringPhysicianName", "ModalitiesInStudy", "SOPClassesInStudy",
)
#: ``Modality=CT`` asks for studies with a CT series.
KEY_ALIASES = {"Modality": "ModalitiesInStudy"}
_DATE_KEYS = {"StudyDate", "PatientBirthDate"}
_DATE_RE = re.compile(r"^(\d{8})?(-(\d{8})?)?$")
_HOURS_RE = re.compile(r"^(\d{1,2})(?::(\d{2}))?-(\d{1,2})(?::(\d{2}))?$")


# -- query, options ----------------------------------------------------------
def parse_query(text: str) -> dict[str, str]:
    """Parse ``KEY=VALUE`` pairs (DICOM keywords; values are DICOM matching strings).

    Values may be quoted (``StudyDescription="CT chest*"``); ``Modality`` means
    ModalitiesInStudy. An empty text matches every study.

    Raises
    ------
    MidaError
        A pair without ``=``, a key that is not a study-level keyword, a key
        given twice, or a malformed date range; the message names the key.

    Examples
    --------
    >>> parse_query("Modality=CT StudyDate=20240101-20241231")
    {'ModalitiesInStudy': 'CT', 'StudyDate': '20240101-20241231'}
    """
    try:
        tokens = shlex.split(text or "")
    except ValueError as exc:
        raise MidaError(f"cannot parse the query ({exc}); write KEY=VALUE pairs") from None
    out: dict[str, str] = {}
    for tok in tokens:
        key, sep, value = tok.partition("=")
        key = key.strip()
        if not sep or not key:
            raise MidaError(f"bad query term {key or tok!r}: write KEY=VALUE, e.g. Modality=CT")
        keyword = KEY_ALIASES.get(key, key)
        if keyword not in STUDY_KEYS:
            known = tag_for_keyword(keyword) is not None
            why = "is not a study-level query key" if known else "is not a DICOM keyword"
            raise MidaError(f"query key {key!r} {why}; use one of Modality, "
                            f"{', '.join(STUDY_KEYS)}")
        if keyword in out:
            raise MidaError(f"query key {key!r} is given twice")
        if keyword in _DATE_KEYS and value and not _DATE_RE.match(value):
            raise MidaError(f"query key {key!r}: a date is YYYYMMDD or a range "
                            "YYYYMMDD-YYYYMMDD (either end may be left open)")
        out[keyword] = value
    return out


def parse_hours(text: str) -> tuple[int, int]:
    """Parse allowed hours ``"20-06"`` or ``"20:00-06:30"`` into minutes of the day.

    The window may wrap past midnight; its end is excluded.

    Examples
    --------
    >>> parse_hours("20-06")
    (1200, 360)
    """
    m = _HOURS_RE.match((text or "").strip())
    if m:
        h1, m1, h2, m2 = (int(g or 0) for g in m.groups())
        if h1 < 24 and h2 < 24 and m1 < 60 and m2 < 60 and (h1, m1) != (h2, m2):
            return h1 * 60 + m1, h2 * 60 + m2
    raise MidaError(f"bad hours {text!r}: write START-END in local time, e.g. 20-06 or "
                    "19:30-06:00 (START and END differ)")


def seconds_until_allowed(now: dt.datetime, hours: tuple[int, int]) -> float:
    """Seconds from ``now`` until the ``hours`` window opens (0 inside it)."""
    start, end = hours
    minute = now.hour * 60 + now.minute + (now.second + now.microsecond / 1e6) / 60
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if inside:
        return 0.0
    return ((start - minute) % 1440) * 60


class TokenBucket:
    """A bytes-per-second cap: :meth:`consume` sleeps as long as the rate requires.

    Parameters
    ----------
    rate
        Bytes per second.
    burst
        Bytes that may pass at once after an idle while (default: one second's).
    """

    def __init__(self, rate: float, burst: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise MidaError("a bandwidth cap must be above 0")
        self.rate = rate
        self.burst = burst if burst is not None else rate
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._last = clock()

    def consume(self, nbytes: int) -> float:
        """Take ``nbytes``; sleeps until the rate allows them. Returns the seconds slept."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= nbytes
        if self._tokens >= 0:
            return 0.0
        wait = -self._tokens / self.rate
        self._sleep(wait)
        return wait


def pacs_options(*, method: str | None = None, move_dest_aet: str | None = None,
                 move_host: str | None = None, move_port: int | None = None,
                 max_mbps: float | None = None, hours: str | None = None) -> dict[str, Any]:
    """Validated options of a PACS (stored as the peer's options JSON)."""
    from mida.sharing.identity import check_ae_title

    out: dict[str, Any] = {}
    if method is not None:
        if method not in METHODS:
            raise MidaError(f"unknown method {method!r}: choose get or move")
        out["method"] = method
    if move_dest_aet is not None:
        out["move_dest_aet"] = check_ae_title(move_dest_aet)
    if move_host is not None:
        out["move_host"] = move_host
    if move_port is not None:
        if not 0 <= move_port <= 65535:
            raise MidaError(f"bad move port {move_port}: 0-65535 (0: any free port)")
        out["move_port"] = move_port
    if max_mbps is not None:
        if not max_mbps > 0:
            raise MidaError("--max-mbps must be above 0 (megabits per second)")
        out["max_mbps"] = float(max_mbps)
    if hours is not None:
        parse_hours(hours)
        out["hours"] = hours.strip()
    return out


def add_pacs(s: Session, name: str, ae_title: str, host: str, port: int,
             **options: Any) -> DicomPeer:
    """Add a PACS to pull from; ``options`` are :func:`pacs_options`' arguments."""
    return add_peer(s, name, ae_title, host, port, role="pacs", options=pacs_options(**options))


def list_pacs(s: Session) -> list[dict[str, Any]]:
    """The PACS this node pulls from, with their options."""
    rows = []
    for p in list_peers(s, role="pacs"):
        o = p.get("options") or {}
        rows.append({"name": p["name"], "ae_title": p["ae_title"], "host": p["host"],
                     "port": p["port"], "method": o.get("method", "get"),
                     "move_dest_aet": o.get("move_dest_aet"), "move_port": o.get("move_port"),
                     "max_mbps": o.get("max_mbps"), "hours": o.get("hours")})
    return rows


def remove_pacs(s: Session, name: str) -> None:
    """Remove a PACS and its pull records (what was pulled stays in the catalog)."""
    peer = get_peer(s, name, role="pacs")
    s.execute(delete(PullItem).where(PullItem.peer_id == peer.id))
    remove_peer(s, name, role="pacs")


# -- the pull ----------------------------------------------------------------
@dataclass
class PullSummary:
    """What one pull run did (and, while it runs, how far it got)."""

    job_id: int
    pacs: str
    collection: str
    method: str
    status: str = "running"
    studies: int = 0  # matched by the query
    studies_done: int = 0  # pulled, skipped or failed so far
    pulled: int = 0
    skipped: int = 0  # done by an earlier run
    failed_studies: int = 0
    instances_expected: int = 0  # of the studies to pull, as the PACS counts them
    instances: int = 0  # received this run
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    bytes_in: int = 0
    seconds: float = 0.0
    by_reason: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        """The job record's counts."""
        return {
            "studies": self.studies, "studies_done": self.studies_done, "pulled": self.pulled,
            "skipped": self.skipped, "failed_studies": self.failed_studies,
            "instances": self.instances, "stored": self.stored, "duplicates": self.duplicates,
            "quarantined": self.quarantined, "bytes_in": self.bytes_in,
            "by_reason": dict(self.by_reason),
        }

    def as_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "pacs": self.pacs, "collection": self.collection,
                "method": self.method, "status": self.status, **self.counts(),
                "instances_expected": self.instances_expected,
                "seconds": round(self.seconds, 3)}


@dataclass
class _Study:
    uid: str  # the PACS's: kept in memory only
    study_hash: str
    sop_classes: list[str]
    instances: int | None


_DONE = object()


class _Receiver:
    """Hands received instances from pynetdicom's thread to the pull's (bounded)."""

    def __init__(self, maxsize: int = 8) -> None:
        self._q: queue.Queue[object] = queue.Queue(maxsize)
        self._stop = threading.Event()

    def handle(self, event: Event) -> int:
        """``EVT_C_STORE`` handler; returns the C-STORE status."""
        if self._stop.is_set():
            return STORE_OUT_OF_RESOURCES
        try:
            data = event.encoded_dataset()
        except Exception:  # a malformed request: say so, never its content
            return STORE_CANNOT_UNDERSTAND
        return STORE_OK if self._put(data) else STORE_OUT_OF_RESOURCES

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def finish(self) -> None:
        self._put(_DONE)

    def stop(self) -> None:
        self._stop.set()

    def items(self) -> Iterator[bytes]:
        while True:
            try:
                item = self._q.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is _DONE:
                return
            assert isinstance(item, bytes)
            yield item


class _Dispatch:
    """The C-MOVE destination's C-STORE handler: feeds the current study's receiver."""

    def __init__(self) -> None:
        self.receiver: _Receiver | None = None

    def handle(self, event: Event) -> int:
        r = self.receiver
        return r.handle(event) if r is not None else STORE_OUT_OF_RESOURCES


def _identifier(query: dict[str, str]) -> Dataset:
    ds = Dataset()
    if any(not v.isascii() for v in query.values()):
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    ds.SOPClassesInStudy = ""
    ds.NumberOfStudyRelatedInstances = ""
    for k, v in query.items():
        setattr(ds, k, v)
    return ds


def _as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v for v in value.split("\\") if v]
    return [str(v) for v in value if v]


class _Pull:
    progress_every = 1.0  # seconds between job progress writes

    def __init__(self, node: Node, pacs_name: str, query: str, collection: str, *,
                 method: str | None, refresh: bool, job_id: int | None, owner: str | None,
                 on_progress: Callable[[PullSummary], None] | None) -> None:
        self.node, self.settings = node, node.settings
        self.catalog = node.catalog()
        self.query = parse_query(query)
        self.refresh = refresh
        self.on_progress = on_progress
        with self.catalog.session() as s:
            peer = get_peer(s, pacs_name, role="pacs")
            self.peer_id = peer.id
            self.options = dict(peer.options or {})
            self.remote = Remote(name=peer.name, ae_title=peer.ae_title, host=peer.host,
                                 port=peer.port, calling_aet=self.settings.dicom_ae_title)
        self.method = method or self.options.get("method") or "get"
        if self.method not in METHODS:
            raise MidaError(f"unknown method {self.method!r}: choose get or move")
        self.hours = parse_hours(self.options["hours"]) if self.options.get("hours") else None
        mbps = self.options.get("max_mbps")
        self.bucket = TokenBucket(float(mbps) * 1e6 / 8) if mbps else None
        profile = self.settings.deid_profile
        get_profile(profile, self.settings.home)
        with self.catalog.session() as s:
            col = get_or_create_collection(s, collection, node.institution_id(), profile)
            self.collection_id, self.profile = col.id, col.deid_profile
            self.institution_id = col.institution_id  # the collection's owner (a hub hosts many)
        self.collection = collection
        self._vault_key = node.vault_key() if self.settings.linkage_vault else None
        store = open_store(self.settings.storage_url, fsync=self.settings.fsync,
                           storage_options=self.settings.storage_options or None)
        self.proc = InstanceProcessor(self.settings, node.key(), self.profile, store,
                                      make_engine(self.settings.database_url),
                                      vault_key=self._vault_key)
        canonical = json.dumps(sorted(self.query.items()), separators=(",", ":"))
        self.query_hash = self.proc.pseudo.keyed_hash("mida-pull-query\x00" + canonical)
        self.source = Source("pacs", self.remote.name)
        self.job_id, self.owner = job_id, owner
        self.cancel = False
        self._last = 0.0

    # -- bookkeeping --------------------------------------------------------
    def _progress(self, summary: PullSummary, *, force: bool = False) -> None:
        if force or time.monotonic() - self._last >= self.progress_every:
            self._last = time.monotonic()
            with self.catalog.session() as s:
                self.cancel = update_job(s, summary.job_id, done=summary.studies_done,
                                         total=summary.studies,
                                         counts=summary.counts()) or self.cancel
        if self.on_progress is not None:
            self.on_progress(summary)

    def _item(self, s: Session, study_hash: str) -> PullItem:
        q = select(PullItem).where(PullItem.peer_id == self.peer_id,
                                   PullItem.query_hash == self.query_hash,
                                   PullItem.study_hash == study_hash)
        item = s.scalar(q)
        if item is None:
            try:
                with s.begin_nested():
                    item = PullItem(peer_id=self.peer_id, query_hash=self.query_hash,
                                    study_hash=study_hash, status="pending", instances=0)
                    s.add(item)
            except IntegrityError:  # another run added it meanwhile
                item = s.scalar(q)
                assert item is not None
        return item

    def _set_item(self, study_hash: str, status: str, job_id: int,
                  instances: int | None = None) -> str:
        """Set a study's state; returns its state before."""
        with self.catalog.session() as s:
            item = self._item(s, study_hash)
            before = item.status
            item.status, item.job_id = status, job_id
            if instances is not None:
                item.instances = instances
        return before

    def _is_done(self, study_hash: str) -> bool:
        with self.catalog.session() as s:
            status = s.scalar(select(PullItem.status).where(
                PullItem.peer_id == self.peer_id, PullItem.query_hash == self.query_hash,
                PullItem.study_hash == study_hash))
        return status == "done"

    def _account(self, summary: PullSummary, o: Outcome) -> None:
        summary.instances += 1
        summary.bytes_in += o.size
        if o.status == "stored":
            summary.stored += 1
        elif o.status == "duplicate":
            summary.duplicates += 1
        else:
            summary.quarantined += 1
            reason = o.reason or "internal"
            summary.by_reason[reason] = summary.by_reason.get(reason, 0) + 1

    # -- work ---------------------------------------------------------------
    def _find(self) -> list[_Study]:
        studies: dict[str, _Study] = {}
        for answer in find(self.remote, _identifier(self.query)):
            uid = str(answer.get("StudyInstanceUID", "") or "").strip("\x00 ")
            if not uid or uid in studies:
                continue
            n = answer.get("NumberOfStudyRelatedInstances")
            try:
                count = int(n) if n not in (None, "") else None
            except (TypeError, ValueError):
                count = None
            studies[uid] = _Study(uid, self.proc.pseudo.keyed_hash(uid),
                                  _as_list(answer.get("SOPClassesInStudy")), count)
        return sorted(studies.values(), key=lambda st: st.study_hash)

    def _wait_for_hours(self, summary: PullSummary) -> None:
        if self.hours is None:
            return
        while (wait := seconds_until_allowed(dt.datetime.now(), self.hours)) > 0:
            self._progress(summary, force=True)
            if self.cancel:
                return
            log.info("pull job %s: outside the allowed hours %s, waiting %.0f s",
                     summary.job_id, self.options.get("hours"), wait)
            time.sleep(min(wait, 30.0))

    def _retrieve(self, study: _Study, summary: PullSummary, writer: CatalogWriter,
                  dispatch: _Dispatch | None) -> tuple[RetrieveResult, int]:
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.StudyInstanceUID = study.uid
        receiver = _Receiver()
        retrieval = Retrieval()
        box: dict[str, RetrieveResult] = {}

        def work() -> None:
            try:
                if dispatch is None:
                    box["r"] = retrieval.get(self.remote, ident, receiver.handle,
                                             study.sop_classes or None)
                else:
                    box["r"] = retrieval.move(self.remote, ident, self._dest_aet)
            except MidaError as exc:
                box["r"] = RetrieveResult(error=str(exc))
            except Exception as exc:  # recorded as the study's failure
                box["r"] = RetrieveResult(error=f"unexpected {type(exc).__name__}")
            finally:
                receiver.finish()

        if dispatch is not None:
            dispatch.receiver = receiver
        thread = threading.Thread(target=work, name="mida-pull-retrieve", daemon=True)
        thread.start()
        n = 0
        try:
            for data in receiver.items():
                if self.bucket is not None:
                    self.bucket.consume(len(data))
                outcome = self.proc.process(data, self.source)
                writer.add(outcome)
                self._account(summary, outcome)
                n += 1
                self._progress(summary)
        except BaseException:
            receiver.stop()
            retrieval.abort()
            thread.join(10)
            raise
        finally:
            if dispatch is not None:
                dispatch.receiver = None
        thread.join()
        return box.get("r") or RetrieveResult(error="the retrieve ended without an answer"), n

    def _study(self, study: _Study, summary: PullSummary, writer: CatalogWriter,
               dispatch: _Dispatch | None) -> None:
        job_id = summary.job_id
        self._set_item(study.study_hash, "running", job_id)
        result, n = self._retrieve(study, summary, writer, dispatch)
        writer.flush()  # the study's instances are in the catalog before it is marked done
        if result.ok:
            self._set_item(study.study_hash, "done", job_id, n)
            summary.pulled += 1
        else:
            self._set_item(study.study_hash, "failed", job_id, n)
            summary.failed_studies += 1
            reason = result.error or (f"{result.failed} of {result.failed + result.completed} "
                                      "instances failed")
            log.warning("pull job %s: study %s failed: %s", job_id, study.study_hash[:12],
                        reason)
        summary.studies_done += 1
        self._progress(summary, force=True)

    @property
    def _dest_aet(self) -> str:
        return str(self.options.get("move_dest_aet") or self.settings.dicom_ae_title)

    def run(self) -> PullSummary:
        params = {"pacs": self.remote.name, "collection": self.collection,
                  "method": self.method, "refresh": self.refresh,
                  "query_hash": self.query_hash[:16]}
        with self.catalog.session() as s:
            job_id = start_job(s, "pull", params, job_id=self.job_id, owner=self.owner).id
        summary = PullSummary(job_id=job_id, pacs=self.remote.name,
                              collection=self.collection, method=self.method)
        vault = (LinkageVault(self.settings.vault_file, self._vault_key)
                 if self._vault_key is not None else None)
        writer = CatalogWriter(self.catalog, institution_id=self.institution_id,
                               collection_id=self.collection_id, job_id=job_id,
                               batch_size=self.settings.batch_size, vault=vault)
        t0 = time.perf_counter()
        try:
            studies = self._find()
            summary.studies = len(studies)
            todo = []
            for st in studies:
                if not self.refresh and self._is_done(st.study_hash):
                    summary.skipped += 1
                    summary.studies_done += 1
                else:
                    todo.append(st)
            summary.instances_expected = sum(st.instances or 0 for st in todo)
            log.info("pull job %s: %d studies match on PACS %s, %d done before, %d to pull "
                     "by C-%s", job_id, summary.studies, self.remote.name, summary.skipped,
                     len(todo), self.method.upper())
            self._progress(summary, force=True)
            if todo and self.method == "move":
                dispatch = _Dispatch()
                with storage_scp(self._dest_aet, dispatch.handle,
                                 host=str(self.options.get("move_host") or "127.0.0.1"),
                                 port=int(self.options.get("move_port") or 0),
                                 calling_aets=[self.remote.ae_title]):
                    self._studies(todo, summary, writer, dispatch)
            else:
                self._studies(todo, summary, writer, None)
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            error = str(exc) if isinstance(exc, MidaError) else type(exc).__name__
            try:
                writer.flush()
            finally:
                self._finish(summary, status, t0, writer, error)
            raise
        if self.cancel and summary.studies_done < summary.studies:
            self._finish(summary, "cancelled", t0, writer, "cancelled on request")
        else:
            failed = (f"{summary.failed_studies} of {summary.studies} studies failed"
                      if summary.failed_studies else None)
            self._finish(summary, "done", t0, writer, failed)
        return summary

    def _studies(self, todo: list[_Study], summary: PullSummary, writer: CatalogWriter,
                 dispatch: _Dispatch | None) -> None:
        for st in todo:
            self._progress(summary, force=True)  # also reads a cancel request
            if self.cancel:
                return
            self._wait_for_hours(summary)
            if self.cancel:
                return
            self._study(st, summary, writer, dispatch)

    def _finish(self, summary: PullSummary, status: str, t0: float, writer: CatalogWriter,
                error: str | None) -> None:
        summary.seconds = time.perf_counter() - t0
        summary.stored -= writer.late_duplicates
        summary.duplicates += writer.late_duplicates
        writer.late_duplicates = 0
        summary.status = status
        with self.catalog.session() as s:
            update_job(s, summary.job_id, done=summary.studies_done, total=summary.studies)
            finish_job(s, summary.job_id, status, summary.counts(), error)
        log.info("pull job %s %s: %s", summary.job_id, status, summary.counts())


def pull(node: Node, pacs_name: str, query: str, collection: str, *,
         method: str | None = None, refresh: bool = False, job_id: int | None = None,
         owner: str | None = None,
         on_progress: Callable[[PullSummary], None] | None = None) -> PullSummary:
    """Pull the studies that match ``query`` from a PACS into ``collection``.

    Parameters
    ----------
    node
        The opened node.
    pacs_name
        A PACS added with ``mida pacs add`` (:func:`add_pacs`).
    query
        ``KEY=VALUE`` pairs (:func:`parse_query`), e.g.
        ``"Modality=CT StudyDate=20240101-20241231"``.
    collection
        Collection to ingest into (created with the node's default profile when new).
    method
        ``get`` or ``move``; the PACS's configured method (else ``get``) when None.
    refresh
        Fetch again the studies an earlier run of this query finished.
    job_id
        A queued job to run as (``mida jobs run``); otherwise a new job is recorded.
    owner
        Who started the pull (recorded on a new job).
    on_progress
        Called with the running summary after each instance and each study; an
        exception it raises stops the pull (the job is marked interrupted or failed).

    Returns
    -------
    PullSummary
        ``status`` is ``done`` (failed studies are counted) or ``cancelled``.

    Raises
    ------
    MidaError
        Unknown PACS, bad query, PACS unreachable or refusing the query.
    """
    return _Pull(node, pacs_name, query, collection, method=method, refresh=refresh,
                 job_id=job_id, owner=owner, on_progress=on_progress).run()


def run_pull_job(node: Node, job_id: int, params: dict[str, Any]) -> PullSummary:
    """Run a queued pull job; ``params`` are ``{pacs, query, collection, method, owner}``
    (and ``refresh``)."""
    try:
        p = _Pull(node, str(params["pacs"]), str(params.get("query") or ""),
                  str(params["collection"]), method=params.get("method") or None,
                  refresh=bool(params.get("refresh")), job_id=job_id,
                  owner=params.get("owner"), on_progress=None)
    except (MidaError, KeyError) as exc:
        # the job never started: record why (a bad query or an unknown PACS)
        msg = str(exc) if isinstance(exc, MidaError) else f"missing job parameter {exc}"
        with node.catalog().session() as s:
            finish_job(s, job_id, "failed", {}, msg)
        raise MidaError(msg) from None
    return p.run()


__all__ = [
    "KEY_ALIASES",
    "METHODS",
    "STUDY_KEYS",
    "PullSummary",
    "TokenBucket",
    "add_pacs",
    "list_pacs",
    "pacs_options",
    "parse_hours",
    "parse_query",
    "pull",
    "remove_pacs",
    "run_pull_job",
    "seconds_until_allowed",
]
