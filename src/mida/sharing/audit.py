"""An append-only, hash-chained audit trail (JSON lines).

Each entry carries the sha256 of the previous entry's line, so an edited,
deleted or reordered entry breaks the chain, which :meth:`AuditLog.verify`
reports. Entries name actors, actions and pseudonyms, never identified data.
Writers in several processes (the server, the DICOM node, the CLI) append
under an exclusive ``flock``; the previous line is read from the end of the
file, so an append costs the same at the millionth entry as at the first.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import getpass
import hashlib
import json
import os
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
_TAIL = 64 * 1024


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


class AuditLog:
    """The node's audit trail."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync

    def append(
        self, action: str, detail: dict[str, Any], actor: str | None = None
    ) -> dict[str, Any]:
        """Append one entry (flushed, and fsynced unless disabled) and return it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            last = _last_line(fd)
            entry = {
                "time": dt.datetime.now(dt.UTC).isoformat(),
                "actor": actor or getpass.getuser(),
                "action": action,
                "detail": detail,
                "prev": hashlib.sha256(last).hexdigest() if last else GENESIS,
            }
            line = json.dumps(entry, ensure_ascii=False, sort_keys=True)
            os.write(fd, (line + "\n").encode("utf-8"))
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock
        return entry

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(x) for x in self.path.read_text(encoding="utf-8").splitlines() if x]

    def verify(self) -> list[int]:
        """Line numbers (1-based) whose chain link is broken; empty when intact."""
        broken = []
        prev = GENESIS
        if not self.path.exists():
            return []
        for i, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line:
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                broken.append(i)
                prev = hashlib.sha256(line.encode()).hexdigest()
                continue
            if entry.get("prev") != prev:
                broken.append(i)
            prev = hashlib.sha256(line.encode()).hexdigest()
        return broken


__all__ = ["GENESIS", "AuditLog"]
