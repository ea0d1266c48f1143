"""A content-addressed (sha256) blob store over fsspec.

Blobs are immutable and named by the sha256 of their bytes, so writing the
same content twice is a no-op and a crash can leave at most an orphan blob
(found and removed by ``mida fsck``), never a torn one:

* on a local folder a blob is written to ``tmp/`` and moved into place with
  an atomic ``os.replace``;
* on an object store (S3 and compatible) a single PUT is atomic by the
  store's own contract: an object is visible whole or not at all.

Layout: ``<root>/sha256/ab/abcd...``: one level of 256 fan-out folders, as
git does. A second level would cost a new folder (two mkdirs) for most of
the first 65,536 blobs; one level keeps folders under ~40,000 entries up to
ten million blobs, which ext4 and XFS index well.

Examples
--------
>>> import tempfile
>>> store = open_store(tempfile.mkdtemp())
>>> ref = store.put(b"hello")
>>> ref.digest[:12], ref.size, ref.created
('2cf24dba5fb0', 5, True)
>>> store.put(b"hello").created
False
>>> store.get(ref.digest)
b'hello'
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec

from mida.errors import BlobNotFoundError, ConfigError, IntegrityError, StorageError

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class BlobRef:
    """Where a blob landed: its digest, size, and whether this call wrote it."""

    digest: str
    size: int
    created: bool


@dataclass(frozen=True)
class Backend:
    """A storage backend: the fsspec protocols it serves and what it needs."""

    name: str
    protocols: tuple[str, ...]
    modules: tuple[str, ...]

    @property
    def missing_dependencies(self) -> list[str]:
        return [m for m in self.modules if importlib.util.find_spec(m) is None]

    @property
    def is_available(self) -> bool:
        return not self.missing_dependencies


_BACKENDS = (
    Backend("local", ("file", "local"), ()),
    Backend("s3", ("s3", "s3a"), ("s3fs",)),
    Backend("memory", ("memory",), ()),
)


def backends() -> list[Backend]:
    """The registered storage backends and whether each is available."""
    return list(_BACKENDS)


def _backend_for(protocol: str) -> Backend:
    for b in _BACKENDS:
        if protocol in b.protocols:
            return b
    raise ConfigError(
        f"storage protocol {protocol!r} is not supported; use a local folder or one of "
        + ", ".join(f"{p}://" for b in _BACKENDS for p in b.protocols[:1] if p != "file")
    )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    """Content-addressed blob store on any fsspec file system.

    Parameters
    ----------
    url
        A local folder or an fsspec URL such as ``s3://bucket/prefix``.
    fsync
        Flush each local blob to disk before it becomes visible (power-loss
        safety at a cost in throughput; a ``kill -9`` is safe without it).
    storage_options
        Passed to fsspec (e.g. ``endpoint_url`` and credentials for S3).
        Credentials are never logged.
    """

    def __init__(
        self, url: str, *, fsync: bool = False, storage_options: dict[str, Any] | None = None
    ) -> None:
        protocol = fsspec.utils.get_protocol(url)
        backend = _backend_for(protocol)
        if not backend.is_available:
            raise ConfigError(
                f"storage backend {backend.name!r} needs {', '.join(backend.missing_dependencies)}"
                f": pip install 'mida[{backend.name}]'"
            )
        self.url = url
        self.backend = backend
        self.fsync = fsync
        self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = root.rstrip("/")
        self.local = backend.name == "local"
        self._dirs: set[str] = set()  # fan-out folders known to exist (saves a syscall)
        if self.local:
            os.makedirs(os.path.join(self.root, "sha256"), exist_ok=True)
            os.makedirs(os.path.join(self.root, "tmp"), exist_ok=True)

    # -- naming -------------------------------------------------------------
    def path(self, digest: str) -> str:
        """The storage path of a digest."""
        if not _DIGEST.match(digest):
            raise StorageError(f"not a sha256 hex digest: {digest[:80]!r}")
        return f"{self.root}/sha256/{digest[:2]}/{digest}"

    # -- writing ------------------------------------------------------------
    def put(self, data: bytes, digest: str | None = None) -> BlobRef:
        """Store ``data`` under its sha256; a no-op when it is already there."""
        digest = digest or sha256_hex(data)
        path = self.path(digest)
        try:
            if self.exists(digest):
                return BlobRef(digest, len(data), False)
            if self.local:
                self._put_local(path, data)
            else:
                with self.fs.open(path, "wb") as fh:
                    fh.write(data)
        except OSError as exc:
            raise StorageError(f"could not write blob {digest[:12]} to {self.url}: {exc}") from exc
        return BlobRef(digest, len(data), True)

    def _put_local(self, path: str, data: bytes) -> None:
        tmp = os.path.join(self.root, "tmp", f"{uuid.uuid4().hex}.part")
        with open(tmp, "wb") as fh:
            fh.write(data)
            if self.fsync:
                fh.flush()
                os.fsync(fh.fileno())
        parent = os.path.dirname(path)
        if parent not in self._dirs:
            os.makedirs(parent, exist_ok=True)
            self._dirs.add(parent)
        os.replace(tmp, path)

    # -- reading ------------------------------------------------------------
    def exists(self, digest: str) -> bool:
        path = self.path(digest)
        if self.local:
            return os.path.exists(path)
        return bool(self.fs.exists(path))

    def get(self, digest: str, *, verify: bool = False) -> bytes:
        """Return a blob's bytes; with ``verify`` check them against the digest."""
        try:
            with self.fs.open(self.path(digest), "rb") as fh:
                data: bytes = fh.read()
        except FileNotFoundError as exc:
            raise BlobNotFoundError(f"blob {digest[:12]} is not in {self.url}") from exc
        if verify and sha256_hex(data) != digest:
            raise IntegrityError(f"blob {digest[:12]} is corrupt: its content does not match")
        return data

    def size(self, digest: str) -> int:
        try:
            return int(self.fs.size(self.path(digest)))
        except FileNotFoundError as exc:
            raise BlobNotFoundError(f"blob {digest[:12]} is not in {self.url}") from exc

    def delete(self, digest: str) -> None:
        """Remove a blob (used only by ``fsck --repair`` on orphans)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(digest))

    def iter_digests(self) -> Iterator[str]:
        """Every digest in the store (order unspecified)."""
        base = f"{self.root}/sha256"
        if self.local:
            for _dirpath, _dirs, files in os.walk(base):
                for name in files:
                    if _DIGEST.match(name):
                        yield name
            return
        if not self.fs.exists(base):
            return
        for path in self.fs.find(base):
            name = path.rsplit("/", 1)[-1]
            if _DIGEST.match(name):
                yield name

    def stale_temp_files(self, older_than: float = 3600.0) -> list[str]:
        """Partial writes left by a killed process (local stores only)."""
        if not self.local:
            return []
        tmpdir = os.path.join(self.root, "tmp")
        cutoff = time.time() - older_than
        out = []
        for name in os.listdir(tmpdir):
            p = os.path.join(tmpdir, name)
            if os.path.getmtime(p) <= cutoff:
                out.append(p)
        return out

    def remove_temp_file(self, path: str) -> None:
        os.unlink(path)


def open_store(
    url: str, *, fsync: bool = False, storage_options: dict[str, Any] | None = None
) -> BlobStore:
    """Open the blob store at ``url`` (a folder or fsspec URL)."""
    return BlobStore(url, fsync=fsync, storage_options=storage_options)


__all__ = ["Backend", "BlobRef", "BlobStore", "backends", "open_store", "sha256_hex"]
