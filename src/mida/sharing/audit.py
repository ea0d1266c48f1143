"""An append-only, hash-chained audit trail (JSON lines).

Each entry carries the sha256 of the previous entry's line, so an edited,
deleted or reordered entry breaks the chain, which :meth:`AuditLog.verify`
reports. Entries name actors, actions and pseudonyms, never identified data.
This first version keeps the trail in ``MIDA_HOME/audit/audit.jsonl``; the
sharing issue moves it next to grants and requests.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


class AuditLog:
    """The node's audit trail."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _last_hash(self) -> str:
        if not self.path.exists():
            return GENESIS
        last = ""
        with self.path.open("rb") as fh:
            for line in fh:
                if line.strip():
                    last = line.decode().rstrip("\n")
        return hashlib.sha256(last.encode()).hexdigest() if last else GENESIS

    def append(
        self, action: str, detail: dict[str, Any], actor: str | None = None
    ) -> dict[str, Any]:
        """Append one entry (flushed and fsynced before returning) and return it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "time": dt.datetime.now(dt.UTC).isoformat(),
            "actor": actor or getpass.getuser(),
            "action": action,
            "detail": detail,
            "prev": self._last_hash(),
        }
        line = json.dumps(entry, ensure_ascii=False, sort_keys=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
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
