"""The protected quarantine area.

Originals that could not be ingested safely are kept here, unmodified, named
by their sha256, with mode 0600 in a 0700 folder. This area may hold
identified data: it is never exported, never served, and its sidecar files
(which record where each original came from) stay on this node. The catalog
holds only the reason, a PHI-free message and keyed hashes.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from mida.errors import MidaError


class QuarantineArea:
    """Content-addressed store of quarantined originals under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def _sidecar(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.json"

    def _atomic_write(self, dest: Path, write: Any) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{uuid.uuid4().hex}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, dest)

    def keep(
        self, sha256: str, *, data: bytes | None = None, file: str | None = None,
        source_ref: str, source_kind: str,
    ) -> None:
        """Keep an original (bytes or a file copied as is) and note its source."""
        dest = self.path(sha256)
        if not dest.exists():
            if data is not None:
                self._atomic_write(dest, lambda fh: fh.write(data))
            elif file is not None:
                def _copy(fh: Any) -> None:
                    with open(file, "rb") as src:
                        shutil.copyfileobj(src, fh, 1024 * 1024)
                self._atomic_write(dest, _copy)
            else:
                raise MidaError("quarantine needs the original bytes or file")
        side = self._sidecar(sha256)
        info = self.sources(sha256)
        entry = {"kind": source_kind, "ref": source_ref}
        if entry not in info:
            info.append(entry)
            body = json.dumps(info, ensure_ascii=False).encode()
            self._atomic_write(side, lambda fh: fh.write(body))

    def sources(self, sha256: str) -> list[dict[str, str]]:
        """Where an original was seen (local paths; shown only to the operator)."""
        try:
            data: list[dict[str, str]] = json.loads(self._sidecar(sha256).read_text())
            return data
        except FileNotFoundError:
            return []

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def digests(self) -> list[str]:
        return sorted(
            p.name for p in self.root.glob("??/*") if len(p.name) == 64 and "." not in p.name
        )


__all__ = ["QuarantineArea"]
