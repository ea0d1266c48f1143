"""A tamper-evident, append-only audit trail (JSON lines, HMAC-chained, anchored).

Every access and every decision is one line of ``MIDA_HOME/audit/audit.jsonl``::

    {"action": "vault.request", "actor": "alice", "detail": {...}, "mac": "9f1c...",
     "prev": "52ab...", "seq": 41, "time": "2025-03-04T10:15:00.123456+00:00"}

Three mechanisms make tampering visible:

``seq``
    Entries are numbered 1, 2, 3, ... with no gaps, so a deleted entry leaves
    a gap and a moved one comes out of order.
``mac`` and ``prev``
    ``mac`` is HMAC-SHA256, keyed with the node's **audit key**
    (``keys/audit.key``, mode 0600), over the entry's other fields in
    canonical JSON; ``prev`` is the previous entry's ``mac`` (the first entry's
    is 64 zeros). Editing an entry breaks its MAC; rewriting the entry and
    every later one, as one could with a plain hash chain, needs the key.
``audit.head`` (the anchor)
    After each append the sequence number and MAC of the last entry are
    written, HMAC-signed, to ``audit/audit.head``, outside the log, under the
    same lock. A log cut short (its last entries deleted) no longer reaches
    the anchor. If an append finds the log and the anchor disagree, it first
    appends an ``audit.anchor_mismatch`` entry that records both, so the next
    append cannot paper over a truncation.

The anchor lives next to the log, so someone able to write both could put
back an older log together with its older anchor. :meth:`AuditLog.anchor`
returns the signed anchor for safekeeping elsewhere (``mida audit anchor``,
a ticket, a regulator's inbox); ``mida audit verify --anchor FILE`` checks
that the log still contains it. The audit key is the node's own, apart from
the de-identification key, which may be a project key shared by several
sites and which is rotated: see :func:`mida.node.service.ensure_audit_key`.

Logs written before sequence numbers existed (lines with ``prev`` = sha256
of the previous line, no ``seq``/``mac``) stay valid as a **legacy prefix**:
:meth:`AuditLog.verify` checks their sha256 chain, and the first keyed entry
takes ``prev`` = sha256 of the last legacy line and ``seq`` = the number of
legacy lines + 1, which seals the prefix under the key. Nothing is rewritten.

Writers in several processes (the server, the DICOM node, the CLI) append
under an exclusive ``flock``. An append reads only the log's last line and
the small anchor file, so it costs the same at the millionth entry as at the
first; only the first append after a legacy prefix counts its lines, once.
Entries name actors, actions and pseudonyms, never identified data.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> log = AuditLog(Path(tempfile.mkdtemp()) / "audit.jsonl", key=b"k" * 32, fsync=False)
>>> log.append("demo.read", {"collection": "ct"}, actor="alice")["seq"]
1
>>> log.append("demo.read", {"collection": "ct"}, actor="bob")["seq"]
2
>>> log.verify()
[]
>>> text = log.path.read_text().replace('"bob"', '"eve"')
>>> _ = log.path.write_text(text)
>>> [(p.line, p.seq, p.kind) for p in log.verify()]
[(2, 2, 'edited')]
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import getpass
import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mida.errors import ConfigError, MidaError
from mida.node.service import ensure_audit_key, read_audit_key

GENESIS = "0" * 64
ENTRY_FORMAT = 1
EXPORT_FORMAT = 1
_ENTRY_LABEL = b"mida-audit-entry-v1\n"
_HEAD_LABEL = b"mida-audit-head-v1\n"
_TAIL = 64 * 1024
HEAD_SIZE = 512  # the anchor record: one disk sector, written in place
ANCHOR_ACTION = "audit.anchor_mismatch"

#: What :meth:`AuditLog.verify` can find, and what each means.
PROBLEM_KINDS: dict[str, str] = {
    "unreadable": "the line is not a JSON object (damaged, or text inserted)",
    "edited": "the entry's content no longer matches its MAC (its MAC is still the one "
              "the chain holds): the entry was changed after it was written",
    "forged": "the entry's MAC is not one the audit key made: an inserted entry, or one "
              "whose hashes were recomputed after an edit",
    "deleted": "sequence numbers are missing: entries were removed from the middle",
    "reordered": "the entry comes after a later one: entries were moved",
    "duplicated": "the sequence number appears twice: an entry was copied",
    "chain_break": "the entry does not link to the one before it (its prev is not that "
                   "entry's MAC, or for legacy lines its sha256)",
    "truncated": "the anchor records more entries than the log holds: its last entries "
                 "were removed",
    "anchor_mismatch": "the anchored entry differs from the one in the log: the log was "
                       "rewritten",
    "anchor_missing": "the log has keyed entries but its anchor file is gone",
    "anchor_forged": "the anchor's signature is not one the audit key made",
    "wrong_key": "the anchor was signed by another audit key than the one in keys/",
    "key_missing": "the audit key is missing, so MACs cannot be checked",
}


@dataclass(frozen=True)
class AuditProblem:
    """One finding of :meth:`AuditLog.verify`.

    ``line`` is the 1-based line of the log (None for findings about the
    anchor or the log as a whole), ``seq`` the sequence number concerned
    (None when unknown), ``kind`` one of :data:`PROBLEM_KINDS`.
    """

    line: int | None
    seq: int | None
    kind: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "seq": self.seq, "kind": self.kind, "message": self.message}


@dataclass
class AuditReport:
    """A verification: what the log holds and every problem found."""

    path: str
    entries: int = 0
    legacy_entries: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    key_id: str | None = None
    anchor: dict[str, Any] | None = None
    macs_checked: bool = True
    problems: list[AuditProblem] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"log": self.path, "entries": self.entries,
                "legacy_entries": self.legacy_entries, "first_seq": self.first_seq,
                "last_seq": self.last_seq, "key_id": self.key_id,
                "anchor": ({k: self.anchor.get(k) for k in ("seq", "mac", "key_id", "time")}
                           if self.anchor else None),
                "macs_checked": self.macs_checked, "intact": self.intact,
                "problems": [p.as_dict() for p in self.problems]}


# -------------------------------------------------------------------- primitives

def canonical(obj: Any) -> bytes:
    """The bytes a MAC covers: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(key: bytes) -> str:
    """The public id of an audit key: 16 hex characters of its sha256."""
    return hashlib.sha256(key).hexdigest()[:16]


def entry_mac(key: bytes, entry: dict[str, Any]) -> str:
    """HMAC-SHA256 of every field of ``entry`` except ``mac``."""
    body = {k: v for k, v in entry.items() if k != "mac"}
    return hmac.new(key, _ENTRY_LABEL + canonical(body), hashlib.sha256).hexdigest()


def _head_sig(key: bytes, head: dict[str, Any]) -> str:
    body = {k: head.get(k) for k in ("seq", "mac", "key_id", "time")}
    return hmac.new(key, _HEAD_LABEL + canonical(body), hashlib.sha256).hexdigest()


def _line_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _last_line(fd: int) -> bytes:
    """The last non-empty line of the open file ``fd`` (b'' when empty)."""
    end = os.lseek(fd, 0, os.SEEK_END)
    buf = b""
    pos = end
    while pos > 0:
        step = min(_TAIL, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        stripped = buf.rstrip(b"\n")
        cut = stripped.rfind(b"\n")
        if cut >= 0:
            return stripped[cut + 1:]
        if pos == 0:
            return stripped
    return b""


def _last_entry(fd: int, lines: int = 8) -> tuple[bytes, dict[str, Any] | None]:
    """(the last line, the last readable entry among the last ``lines`` lines).

    The entry is None when the log is empty or none of those lines parses.
    """
    end = os.lseek(fd, 0, os.SEEK_END)
    last = _last_line(fd)
    if not last:
        return b"", None
    entry = _parse(last)
    if entry is not None:
        return last, entry
    window = os.pread(fd, min(end, _TAIL), max(0, end - _TAIL))
    for raw in reversed(window.rstrip(b"\n").split(b"\n")[-lines:-1]):
        found = _parse(raw)
        if found is not None:
            return last, found
    return last, None


def _count_lines(fd: int) -> int:
    """Non-empty lines of the open file ``fd`` (read once, when sealing a legacy prefix)."""
    n = 0
    pos = 0
    carry = b""
    while True:
        chunk = os.pread(fd, 1 << 20, pos)
        if not chunk:
            break
        pos += len(chunk)
        parts = (carry + chunk).split(b"\n")
        carry = parts.pop()
        n += sum(1 for p in parts if p.strip())
    return n + (1 if carry.strip() else 0)


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _is_keyed(entry: dict[str, Any]) -> bool:
    return "seq" in entry or "mac" in entry


def _seq_of(entry: dict[str, Any]) -> int | None:
    seq = entry.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 else None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def parse_when(text: str | None, *, end: bool = False) -> dt.datetime | None:
    """``YYYY-MM-DD`` or an ISO time as an aware UTC datetime (None stays None).

    A bare date is the start of that day, or with ``end`` the start of the
    next one, so that ``--until 2025-03-31`` includes the whole 31st.
    """
    if text is None or text == "":
        return None
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            return start + dt.timedelta(days=1) if end else start
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise MidaError(f"bad date {text!r}: use YYYY-MM-DD or an ISO 8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def entry_time(entry: dict[str, Any]) -> dt.datetime | None:
    """When an entry was written (None when its time is missing or unreadable)."""
    try:
        t = dt.datetime.fromisoformat(str(entry.get("time")))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


# -------------------------------------------------------------------- the log

class Auditor(Protocol):
    """What services need of an audit trail: :meth:`AuditLog.append`.

    Services that must record what they do (the honest broker, consent
    withdrawal) take one, so the API and the CLI pass the node's log and
    tests may pass a list-backed fake.
    """

    def append(self, action: str, detail: dict[str, Any],
               actor: str | None = None) -> dict[str, Any]: ...


class AuditLog:
    """The node's audit trail.

    Parameters
    ----------
    path
        The log, ``MIDA_HOME/audit/audit.jsonl``.
    fsync
        fsync each entry (power-loss safety; ``MIDA_AUDIT_FSYNC``).
    key
        The audit key. By default it is the node's ``keys/audit.key``, the
        node being the folder above the log's (``MIDA_HOME``); it is created
        on the first append if the node has none yet.
    home
        The node folder whose ``keys/audit.key`` to use, when the log is
        elsewhere.
    """

    def __init__(self, path: Path, *, fsync: bool = True, key: bytes | None = None,
                 home: Path | None = None) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._key = key
        self.home = Path(home) if home is not None else self.path.parent.parent

    @property
    def head_path(self) -> Path:
        """The anchor file: ``audit.head`` next to the log."""
        return self.path.with_suffix(".head")

    # -- keys --------------------------------------------------------------------
    def _read_key(self) -> bytes | None:
        if self._key is None:
            self._key = read_audit_key(self.home)  # kept: one read per process
        return self._key

    def _make_key(self) -> bytes:
        if self._key is None:
            self._key = ensure_audit_key(self.home)
        return self._key

    # -- anchor ------------------------------------------------------------------
    def _read_head(self, fd: int | None = None) -> dict[str, Any] | None:
        """The anchor (None when there is none; ``{"corrupt": True}`` when unreadable)."""
        if fd is None:
            try:
                raw = self.head_path.read_bytes()
            except FileNotFoundError:
                return None
        else:
            raw = os.pread(fd, 2 * HEAD_SIZE, 0)
        if not raw.strip():
            return None
        head = _parse(raw.strip())
        return head if head is not None else {"corrupt": True}

    def _write_head(self, fd: int, key: bytes, seq: int, mac: str) -> None:
        """Overwrite the anchor in place: one write of one 512-byte sector.

        A write of one aligned sector is atomic on disks and file systems
        (the assumption databases make for their headers), so a crash leaves
        the old anchor or the new one, never a mix; an old one is simply one
        entry behind the log, which :meth:`report` accepts. Writing in place
        avoids creating and renaming a file on every append. The anchor is not
        fsynced: the log line is durable before the anchor is written, so after
        a power loss the anchor can only lag behind the log, never run ahead.
        """
        head: dict[str, Any] = {"seq": seq, "mac": mac, "key_id": key_id(key),
                                "time": dt.datetime.now(dt.UTC).isoformat()}
        head["sig"] = _head_sig(key, head)
        body = canonical(head)
        os.pwrite(fd, body + b" " * (HEAD_SIZE - 1 - len(body)) + b"\n", 0)

    def anchor(self) -> dict[str, Any] | None:
        """The signed anchor (last sequence number and MAC) to keep somewhere else.

        ``mida audit verify --anchor FILE`` later checks that the log still
        holds that entry unchanged: the check that catches a log rolled back
        together with its local anchor.
        """
        fd = self._open_shared()
        if fd is None:
            return None
        try:
            head = self._read_head()
        finally:
            os.close(fd)
        return head if head and not head.get("corrupt") else None

    # -- append ------------------------------------------------------------------
    def append(
        self, action: str, detail: dict[str, Any], actor: str | None = None
    ) -> dict[str, Any]:
        """Append one entry (flushed, and fsynced unless disabled) and return it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            end = os.lseek(fd, 0, os.SEEK_END)
            if end and os.pread(fd, 1, end - 1) != b"\n":
                os.write(fd, b"\n")  # a torn last line stays a line of its own
            last, prev_entry = _last_entry(fd)
            keyed = prev_entry is not None and _is_keyed(prev_entry)
            if keyed and self._key is None and self._read_key() is None:
                raise ConfigError(
                    f"the audit key {self.home / 'keys' / 'audit.key'} is missing but the audit "
                    f"trail {self.path} was keyed with it: restore the key from a backup "
                    "(a new key could not verify the entries already written)")
            key = self._make_key()
            seq_last = _seq_of(prev_entry) if keyed and prev_entry else None
            if not last:
                seq, prev = 1, GENESIS
            elif keyed and seq_last is not None and isinstance(prev_entry, dict) \
                    and isinstance(prev_entry.get("mac"), str):
                # after a torn line (a crash mid-write) this continues from the entry
                # before it: verify then reports the torn line alone, as unreadable
                seq, prev = seq_last + 1, str(prev_entry["mac"])
            else:  # a legacy last line (or nothing readable near the end): link to its bytes
                seq, prev = _count_lines(fd) + 1, _line_hash(last)
            hfd = os.open(self.head_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                mismatch = self._head_problem(self._read_head(hfd), key, seq - 1,
                                              prev if keyed else None)
                if mismatch is not None:
                    evidence = self._entry(key, seq, prev, ANCHOR_ACTION, mismatch, "mida")
                    os.write(fd, (json.dumps(evidence, ensure_ascii=False, sort_keys=True)
                                  + "\n").encode("utf-8"))
                    seq, prev = seq + 1, str(evidence["mac"])
                entry = self._entry(key, seq, prev, action, detail, actor or _user())
                line = json.dumps(entry, ensure_ascii=False, sort_keys=True)
                os.write(fd, (line + "\n").encode("utf-8"))
                if self.fsync:
                    os.fsync(fd)
                self._write_head(hfd, key, seq, str(entry["mac"]))
            finally:
                os.close(hfd)
        finally:
            os.close(fd)  # closing releases the lock
        return entry

    @staticmethod
    def _entry(key: bytes, seq: int, prev: str, action: str, detail: dict[str, Any],
               actor: str) -> dict[str, Any]:
        body = {"seq": seq, "time": dt.datetime.now(dt.UTC).isoformat(), "actor": actor,
                "action": action, "detail": detail, "prev": prev}
        # one JSON round trip: what is MACed is exactly what a reader will parse back
        # (tuples become lists, numeric keys strings, dates and paths their text)
        entry: dict[str, Any] = json.loads(json.dumps(body, ensure_ascii=False, default=str))
        entry["mac"] = entry_mac(key, entry)
        return entry

    @staticmethod
    def _head_problem(head: dict[str, Any] | None, key: bytes, last_seq: int,
                      last_mac: str | None) -> dict[str, Any] | None:
        """What an append finds wrong between the log's last entry and the anchor."""
        if head is None:
            if last_mac is None:
                return None  # an empty or legacy-only log: nothing was anchored yet
            return {"problem": "anchor_missing", "log_seq": last_seq,
                    "message": f"the anchor file was missing when entry {last_seq + 1} "
                               "was appended"}
        if head.get("corrupt") or not hmac.compare_digest(
                str(head.get("sig", "")), _head_sig(key, head)):
            return {"problem": "anchor_forged", "log_seq": last_seq,
                    "message": "the anchor's signature did not verify when entry "
                               f"{last_seq + 1} was appended"}
        hseq = head.get("seq")
        if not isinstance(hseq, int):
            return {"problem": "anchor_forged", "log_seq": last_seq,
                    "message": "the anchor had no sequence number"}
        if hseq > last_seq:
            return {"problem": "truncated", "head_seq": hseq, "head_mac": head.get("mac"),
                    "log_seq": last_seq,
                    "message": f"the anchor recorded {hseq} entries but the log ended at "
                               f"{last_seq}: entries {last_seq + 1}-{hseq} were removed"}
        if hseq == last_seq and head.get("mac") != last_mac:
            return {"problem": "anchor_mismatch", "head_seq": hseq, "head_mac": head.get("mac"),
                    "log_seq": last_seq,
                    "message": f"entry {hseq} differed from the anchored one"}
        return None

    # -- read ----------------------------------------------------------------------
    def _open_shared(self) -> int | None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd

    def _snapshot(self) -> tuple[int, dict[str, Any] | None]:
        """(log size, anchor) read together under a shared lock: a consistent pair."""
        fd = self._open_shared()
        if fd is None:
            return 0, self._read_head()
        try:
            size = os.fstat(fd).st_size
            head = self._read_head()
        finally:
            os.close(fd)
        return size, head

    def _lines(self, size: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(1-based line number, raw bytes) of each non-empty line in the first ``size`` bytes.

        ``size`` (taken under the lock) keeps out a line being appended meanwhile.
        """
        try:
            fh = self.path.open("rb")
        except FileNotFoundError:
            return
        with fh:
            offset = 0
            for n, raw in enumerate(fh, 1):
                if size is not None:
                    if offset >= size:
                        break
                    raw = raw[:size - offset]
                offset += len(raw)
                raw = raw.rstrip(b"\n")
                if raw.strip():
                    yield n, raw

    def iter_entries(self, since: dt.datetime | None = None,
                     until: dt.datetime | None = None) -> Iterator[dict[str, Any]]:
        """Each readable entry in order, optionally only those in ``[since, until)``."""
        for _n, raw in self._lines():
            entry = _parse(raw)
            if entry is None:
                continue
            if since is not None or until is not None:
                t = entry_time(entry)
                if t is None or (since and t < since) or (until and t >= until):
                    continue
            yield entry

    def entries(self) -> list[dict[str, Any]]:
        """Every readable entry, in order (damaged lines are left out: see :meth:`verify`)."""
        return list(self.iter_entries())

    # -- verify ----------------------------------------------------------------------
    def verify(self, anchors: Sequence[dict[str, Any]] = ()) -> list[AuditProblem]:
        """Every problem in the log; empty when it is intact.

        ``anchors`` are anchors kept elsewhere (:meth:`anchor`); each must
        still be in the log.
        """
        return self.report(anchors).problems

    def report(self, anchors: Sequence[dict[str, Any]] = (), *,
               fragment: bool = False) -> AuditReport:
        """Verify the log and describe it (counts, sequence range, anchor, problems).

        With ``fragment`` the file is a contiguous excerpt (an export): its
        first entry may start anywhere and there is no anchor to compare with.
        """
        size, head = self._snapshot()
        try:
            key = self._read_key()
        except MidaError:
            key = None
        rep = AuditReport(path=str(self.path), key_id=key_id(key) if key else None,
                          anchor=None if fragment else head, macs_checked=key is not None)
        checker = _Checker(key, fragment=fragment)
        wanted = set()
        if head is not None and not fragment and isinstance(head.get("seq"), int):
            wanted.add(int(head["seq"]))
        wanted |= {int(a["seq"]) for a in anchors if isinstance(a.get("seq"), int)}
        checker.wanted = wanted
        for n, raw in self._lines(size):
            checker.feed(n, raw)
        checker.finish(head if not fragment else None)
        for a in anchors:
            checker.check_anchor(a, external=True)
        rep.entries = checker.count
        rep.legacy_entries = checker.legacy
        rep.first_seq = checker.first_seq
        rep.last_seq = checker.max_seq if checker.keyed else None
        rep.problems = sorted(checker.problems, key=lambda p: (
            p.line if p.line is not None else 1 << 62, p.seq or 0, p.kind))
        return rep


class _Checker:
    """One streaming pass over a log: the rules behind :meth:`AuditLog.report`.

    Each keyed entry is checked for its MAC, its sequence number (one more
    than the highest so far) and its link (``prev`` = the stored MAC of the
    line before). A MAC failure is classified once the next line is known:
    if an authentic next entry (or the anchor) holds the failing entry's
    stored MAC, that MAC is the original and only the content changed
    (``edited``); otherwise the MAC itself is not the key's (``forged``).
    Gaps are reported at the end, less any numbers that turned up later
    (those entries were moved, not deleted); a broken link is reported only
    where nothing else on or just before that line explains it.
    """

    def __init__(self, key: bytes | None, *, fragment: bool) -> None:
        self.key = key
        self.fragment = fragment
        self.problems: list[AuditProblem] = []
        self.count = 0
        self.legacy = 0
        self.keyed = 0
        self.first_seq: int | None = None
        self.max_seq = 0
        self.seen = bytearray()
        self.wanted: set[int] = set()
        self.macs_at: dict[int, str] = {}
        self.prev_raw: bytes | None = None  # the previous line's bytes
        self.prev_mac: str | None = None  # the previous keyed entry's stored MAC
        self.prev_line: int | None = None
        self.bad_lines: set[int] = set()
        self.gaps: list[tuple[int, int, int]] = []  # (line, first missing, last missing)
        self.breaks: list[tuple[int, int | None, int | None]] = []  # (line, seq, line before)
        self.pending: tuple[int, int | None, str] | None = None  # a MAC failure to classify

    def _flag(self, line: int | None, seq: int | None, kind: str, message: str) -> None:
        self.problems.append(AuditProblem(line, seq, kind, message))
        if line is not None:
            self.bad_lines.add(line)

    def _mark(self, seq: int) -> bool:
        """Record ``seq`` as seen; False when it was seen before."""
        if seq >= len(self.seen):
            self.seen.extend(bytes(max(seq + 1 - len(self.seen), len(self.seen))))
        if self.seen[seq]:
            return False
        self.seen[seq] = 1
        return True

    def _was_seen(self, seq: int) -> bool:
        return seq < len(self.seen) and bool(self.seen[seq])

    def _settle(self, authentic_mac: bool) -> None:
        if self.pending is None:
            return
        line, seq, what = self.pending
        self.pending = None
        if authentic_mac:
            self._flag(line, seq, "edited", f"{what} was changed after it was written "
                       "(its MAC, still the one the chain holds, no longer matches it)")
        else:
            self._flag(line, seq, "forged", f"{what} carries a MAC the audit key did not "
                       "make (inserted, or its hashes recomputed after an edit)")

    def _moved_on(self, n: int, raw: bytes, mac: str | None) -> None:
        self.prev_raw, self.prev_mac, self.prev_line = raw, mac, n

    def feed(self, n: int, raw: bytes) -> None:
        self.count += 1
        entry = _parse(raw)
        if entry is None:
            self._settle(False)
            self._flag(n, None, "unreadable", f"line {n} is not a JSON object")
            self._moved_on(n, raw, None)
            return
        if not _is_keyed(entry):
            self._legacy(n, raw, entry)
            return
        self.keyed += 1
        seq = _seq_of(entry)
        stored = entry.get("mac")
        mac = stored if isinstance(stored, str) else None
        what = f"entry {seq}" if seq is not None else f"the entry on line {n}"
        mac_ok: bool | None = None
        if self.key is not None:
            mac_ok = mac is not None and hmac.compare_digest(mac, entry_mac(self.key, entry))
        # an authentic entry that links to the previous line vouches for that line's MAC
        self._settle(bool(mac_ok) and self.prev_mac is not None
                     and entry.get("prev") == self.prev_mac)
        self._sequence(n, seq, what)
        if seq is not None and seq in self.wanted and mac is not None:
            self.macs_at.setdefault(seq, mac)
        if mac_ok is False:
            if mac is None:
                self._flag(n, seq, "forged", f"{what} has no MAC")
            else:
                self.pending = (n, seq, what)
        elif mac_ok and entry.get("action") == ANCHOR_ACTION:
            self._evidence(n, seq, entry)
        if self.prev_line is None:
            expected: str | None = None if self.fragment else GENESIS
        elif self.prev_mac is not None:
            expected = self.prev_mac
        elif self.prev_raw is not None:
            expected = _line_hash(self.prev_raw)
        else:
            expected = None
        if expected is not None and entry.get("prev") != expected:
            self.breaks.append((n, seq, self.prev_line))
        self._moved_on(n, raw, mac)

    def _sequence(self, n: int, seq: int | None, what: str) -> None:
        if seq is None:
            self._flag(n, None, "forged", f"line {n} has no valid sequence number")
            return
        if self.first_seq is None:
            self.first_seq = seq
            if self.fragment:  # an excerpt starts wherever it starts
                self.max_seq = seq - 1
        if not self._mark(seq):
            self._flag(n, seq, "duplicated", f"{what} appears more than once")
        elif seq <= self.max_seq:
            self._flag(n, seq, "reordered", f"{what} comes after entry {self.max_seq}")
        else:
            if seq > self.max_seq + 1:
                self.gaps.append((n, self.max_seq + 1, seq - 1))
            self.max_seq = seq

    def _evidence(self, n: int, seq: int | None, entry: dict[str, Any]) -> None:
        """An entry that an append wrote on finding the anchor and the log disagreeing."""
        detail = entry.get("detail") if isinstance(entry.get("detail"), dict) else {}
        assert isinstance(detail, dict)
        kind = str(detail.get("problem"))
        kind = kind if kind in PROBLEM_KINDS else "anchor_mismatch"
        self._flag(n, _int(detail.get("head_seq")) or seq, kind,
                   f"recorded at line {n} by the writer: {detail.get('message', kind)}")

    def _legacy(self, n: int, raw: bytes, entry: dict[str, Any]) -> None:
        self._settle(False)
        if self.keyed:
            self._flag(n, None, "forged", f"line {n} is an unkeyed (legacy-format) entry "
                       "after keyed ones: legacy entries can only come before the first keyed "
                       "one")
            self._moved_on(n, raw, None)
            return
        self.legacy += 1
        self.max_seq += 1
        self._mark(self.max_seq)
        if self.prev_line is None:
            expected = None if self.fragment else GENESIS
        else:
            expected = _line_hash(self.prev_raw or b"")
        if expected is not None and entry.get("prev") != expected:
            self._flag(n, None, "chain_break", f"legacy line {n} does not carry the sha256 of "
                       "the line before it: that line was edited, removed or moved")
        self._moved_on(n, raw, None)

    def finish(self, head: dict[str, Any] | None) -> None:
        head_ok = (head is not None and self.key is not None and not head.get("corrupt")
                   and hmac.compare_digest(str(head.get("sig", "")), _head_sig(self.key, head)))
        if self.pending is not None:  # the last entry: is its stored MAC the anchored one?
            seq = self.pending[1]
            self._settle(bool(head_ok and head is not None and seq is not None
                              and head.get("seq") == seq and head.get("mac") == self.prev_mac))
        moved: set[int] = set()
        for line, lo, hi in self.gaps:
            missing = [s for s in range(lo, hi + 1) if not self._was_seen(s)]
            if len(missing) < hi - lo + 1:
                moved.add(line)  # part of the "gap" turned up later: reordering
            for a, b in _ranges(missing):
                what = f"entry {a} is" if a == b else f"entries {a}-{b} are"
                self._flag(line, a, "deleted", f"{what} missing before line {line}")
        noisy = self.bad_lines | moved
        for line, seq, pred in self.breaks:
            if line in noisy or (pred is not None and pred in noisy):
                continue
            self._flag(line, seq, "chain_break",
                       f"the entry on line {line} does not link to the one on line {pred}"
                       if pred else f"the first entry (line {line}) does not start the chain: "
                       "entries before it were removed")
        if not self.fragment:
            self._anchor(head, head_ok)

    def _anchor(self, head: dict[str, Any] | None, head_ok: bool) -> None:
        if self.keyed and self.key is None:
            self._flag(None, None, "key_missing", "the audit key (keys/audit.key) is missing or "
                       "unreadable: MACs and the anchor's signature cannot be checked; restore "
                       "the key (mode 0600)")
        if head is None:
            if self.keyed:
                self._flag(None, None, "anchor_missing", "the log has keyed entries but no "
                           "anchor file (audit.head): it was deleted")
            return
        if self.key is None:
            return
        if not head_ok:
            kid = head.get("key_id")
            if kid and kid != key_id(self.key):
                self._flag(None, None, "wrong_key", f"the anchor was signed by audit key {kid},"
                           f" not by this node's key {key_id(self.key)}: restore the right key")
            else:
                self._flag(None, _int(head.get("seq")), "anchor_forged",
                           "the anchor's signature does not verify with this node's audit key")
            return
        self.check_anchor(head, external=False)

    def check_anchor(self, a: dict[str, Any], *, external: bool) -> None:
        """Whether the log still holds the entry anchor ``a`` recorded."""
        where = "an external anchor" if external else "the anchor"
        seq = _int(a.get("seq"))
        if external and self.key is not None and not hmac.compare_digest(
                str(a.get("sig", "")), _head_sig(self.key, a)):
            self._flag(None, seq, "anchor_forged",
                       f"{where} (entry {seq}) is not signed by this node's audit key")
            return
        if seq is None:
            self._flag(None, None, "anchor_forged", f"{where} has no sequence number")
            return
        top = self.max_seq if self.keyed else 0
        if seq > top:
            lost = f"entry {seq} was" if seq == top + 1 else f"entries {top + 1}-{seq} were"
            self._flag(None, seq, "truncated",
                       f"{where} records {seq} entries but the log ends at {top}: {lost} removed")
        elif self.macs_at.get(seq) != a.get("mac"):
            self._flag(None, seq, "anchor_mismatch", f"entry {seq} is not the one {where} "
                       "recorded: the log was rewritten from there")


# -------------------------------------------------------------------- export

EXPORT_COLUMNS = ("line", "seq", "time", "actor", "action", "detail", "prev", "mac")


def export(log: AuditLog, out: Path, *, since: dt.datetime | None = None,
           until: dt.datetime | None = None, fmt: str = "jsonl",
           anchors: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Write the entries of ``[since, until)`` to ``out`` and a verification report beside it.

    ``jsonl`` copies each entry's line byte for byte, so whoever holds the
    audit key can check every MAC of the excerpt, and anyone can check its
    sequence and links (``mida audit verify --log FILE``); ``csv`` has one
    row per entry (``detail`` as JSON) for spreadsheets. The report,
    ``<out>.verification.json``, is the verification of the **whole** log at
    export time (:class:`AuditReport`), the excerpt's range, its sha256 and
    the anchor. Returns the report.
    """
    if fmt not in ("jsonl", "csv"):
        raise MidaError(f"unknown export format {fmt!r}: choose jsonl or csv")
    if since and until and since >= until:
        raise MidaError("--since must be before --until")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    size, _head = log._snapshot()
    verification = log.report(anchors)
    tmp = out.with_name(f".{out.name}.tmp")
    digest = hashlib.sha256()
    n = 0
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh) if fmt == "csv" else None
        if writer is not None:
            writer.writerow(EXPORT_COLUMNS)
        for line_no, raw in log._lines(size):
            entry = _parse(raw)
            if entry is None:
                continue
            t = entry_time(entry)
            if (since or until) and (t is None or (since and t < since)
                                     or (until and t >= until)):
                continue
            if writer is not None:
                writer.writerow([line_no, entry.get("seq", ""), entry.get("time", ""),
                                 entry.get("actor", ""), entry.get("action", ""),
                                 json.dumps(entry.get("detail"), ensure_ascii=False,
                                            sort_keys=True),
                                 entry.get("prev", ""), entry.get("mac", "")])
            else:
                fh.write(raw.decode("utf-8", errors="replace") + "\n")
            n += 1
            first = first or entry
            last = entry
    with tmp.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    os.replace(tmp, out)
    import mida

    report = {
        "mida_audit_export": EXPORT_FORMAT,
        "generated": dt.datetime.now(dt.UTC).isoformat(),
        "generated_by": _user(),
        "mida_version": mida.__version__,
        "file": out.name, "format": fmt, "sha256": digest.hexdigest(),
        "period": {"since": since.isoformat() if since else None,
                   "until": until.isoformat() if until else None,
                   "note": "entries with since <= time < until (UTC)"},
        "entries": n,
        "first": ({"seq": first.get("seq"), "time": first.get("time"),
                   "prev": first.get("prev")} if first else None),
        "last": ({"seq": last.get("seq"), "time": last.get("time"), "mac": last.get("mac")}
                 if last else None),
        "verification": verification.as_dict(),
        "problem_kinds": PROBLEM_KINDS,
        "how_to_verify": (
            "Each entry's mac is HMAC-SHA256 (the node's audit key) over the entry without "
            "'mac' as canonical JSON (sorted keys, no spaces, UTF-8), prefixed with "
            "'mida-audit-entry-v1\\n'; prev is the previous entry's mac (64 zeros for the "
            "first) and seq counts 1, 2, 3... Without the key, sequence and links can still "
            "be checked: `mida audit verify --log FILE` (jsonl exports)."),
    }
    Path(str(out) + ".verification.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _ranges(nums: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for x in nums:
        if out and x == out[-1][1] + 1:
            out[-1] = (out[-1][0], x)
        else:
            out.append((x, x))
    return out


__all__ = ["ANCHOR_ACTION", "EXPORT_COLUMNS", "GENESIS", "PROBLEM_KINDS", "AuditLog",
           "AuditProblem", "AuditReport", "Auditor", "canonical", "entry_mac", "entry_time",
           "export", "key_id", "parse_when"]
