"""Create and open a mida node.

A node is one ``MIDA_HOME``: a descriptor (``node.json``), a secret
de-identification key (``keys/deid.key``, mode 0600), the audit key
(``keys/audit.key``, mode 0600; it keys the audit trail's chain), the catalog
and the blob store. A key never leaves its key file: only its id (a hash
prefix) is stored, logged or shown.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from mida.catalog import Catalog, Institution, open_catalog
from mida.config import Settings
from mida.errors import AlreadyInitializedError, ConfigError, NotInitializedError
from mida.storage import BlobStore, open_store


def key_id_of(key: bytes) -> str:
    """The public id of a key: 16 hex characters of its sha256."""
    return hashlib.sha256(key).hexdigest()[:16]


@dataclass
class Node:
    """An opened node."""

    settings: Settings
    institution_code: str
    institution_name: str
    key_id: str

    def key(self) -> bytes:
        """Read the secret key (callers must never log or store it)."""
        return _read_key(self.settings.key_file)

    def catalog(self) -> Catalog:
        return open_catalog(self.settings.database_url)

    def audit_key(self) -> bytes:
        """The audit trail's HMAC key, created on first use (mode 0600)."""
        return ensure_audit_key(self.settings.home)

    def vault_key(self) -> bytes:
        """The linkage vault key, created on first use (mode 0600)."""
        path = self.settings.vault_key_file
        if not path.exists():
            _write_key(path, secrets.token_bytes(32))
        return _read_key(path)

    def store(self) -> BlobStore:
        return open_store(
            self.settings.storage_url,
            fsync=self.settings.fsync,
            storage_options=self.settings.storage_options or None,
        )

    def institution_id(self) -> int:
        with self.catalog().session() as s:
            inst = s.scalar(select(Institution).where(Institution.code == self.institution_code))
            if inst is None:
                raise NotInitializedError(str(self.settings.home))
            return inst.id


def _read_key(path: Path, what: str = "de-identification key") -> bytes:
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(
                f"the {what} {path} is readable by others (mode {mode:o}): "
                f"run 'chmod 600 {path}'"
            )
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError as exc:
        raise NotInitializedError(str(path.parent.parent)) from exc
    except ValueError as exc:
        raise ConfigError(f"the {what} {path} is corrupt") from exc


def audit_key_file(home: Path) -> Path:
    """Where the audit key of the node at ``home`` lives (``keys/audit.key``)."""
    return home / "keys" / "audit.key"


def read_audit_key(home: Path) -> bytes | None:
    """The audit key of the node at ``home``, or None when it has none yet."""
    path = audit_key_file(home)
    if not path.exists():
        return None
    return _checked_audit_key(path)


def _checked_audit_key(path: Path) -> bytes:
    key = _read_key(path, "audit key")
    if len(key) < 32:
        raise ConfigError(f"the audit key {path} is {len(key)} bytes, not 32: restore it from "
                          "a backup (a new key cannot verify the entries made with the old)")
    return key


def ensure_audit_key(home: Path) -> bytes:
    """The audit key of the node at ``home``, made first (random, 256 bits) if absent.

    The audit key is the node's own, apart from the de-identification key:
    that one may be a project key shared by several sites (so that pseudonyms
    match) and is rotated, while the audit chain must stay verifiable across
    rotations and no other site may be able to forge this node's entries.
    Several processes may create it at once (the server, the DICOM node, the
    CLI): the key is written to a private temporary file and linked into
    place, so exactly one key wins and nobody reads a half-written one.
    """
    path = audit_key_file(home)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_bytes(32).hex() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: use theirs
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return _checked_audit_key(path)


def _write_key(path: Path, key: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")


def init_node(
    settings: Settings, code: str, name: str, *, key: bytes | None = None
) -> Node:
    """Create the node: folders, key, catalog schema and institution row.

    Parameters
    ----------
    settings
        Where the node lives.
    code, name
        The institution's short code (e.g. ``NTUH``) and full name.
    key
        A project key to share pseudonyms with other sites; a fresh random
        256-bit key is generated when omitted.
    """
    if settings.node_file.exists():
        raise AlreadyInitializedError(
            f"a node already exists at {settings.home}; use another MIDA_HOME to create a new one"
        )
    if not code.replace("-", "").replace("_", "").isalnum() or len(code) > 32:
        raise ConfigError(f"institution code {code!r} must be 1-32 letters, digits, - or _")
    settings.home.mkdir(parents=True, exist_ok=True)
    for sub in (settings.quarantine_dir, settings.log_dir):
        sub.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.quarantine_dir, 0o700)
    if not settings.key_file.exists():
        _write_key(settings.key_file, key or secrets.token_bytes(32))
    kid = key_id_of(_read_key(settings.key_file))
    ensure_audit_key(settings.home)
    catalog = open_catalog(settings.database_url)
    catalog.migrate()
    with catalog.session() as s:
        inst = s.scalar(select(Institution).where(Institution.code == code))
        if inst is None:
            s.add(Institution(code=code, name=name, key_id=kid))
    open_store(settings.storage_url, storage_options=settings.storage_options or None)
    tmp = settings.node_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"institution": code, "name": name, "key_id": kid}, indent=2))
    os.replace(tmp, settings.node_file)
    return Node(settings, code, name, kid)


def rotate_key(settings: Settings, *, key: bytes | None = None) -> tuple[str, str]:
    """Replace the de-identification key; return ``(old key id, new key id)``.

    The old key is kept, read-only, under ``keys/retired/`` so that data made
    with it can still be verified and re-linked; provenance rows record which
    key made each instance. Instances ingested after a rotation get new
    pseudonyms: a patient seen before and after is two pseudonyms unless the
    vault links them.
    """
    node = load_node(settings)
    old = node.key()
    old_id = key_id_of(old)
    retired = settings.key_file.parent / "retired" / f"deid-{old_id}.key"
    retired.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(retired.parent, 0o700)
    if not retired.exists():
        _write_key(retired, old)
    new = key or secrets.token_bytes(32)
    if new == old:
        raise ConfigError("the new key is the current key")
    tmp = settings.key_file.with_suffix(".new")
    tmp.unlink(missing_ok=True)
    _write_key(tmp, new)
    new_id = key_id_of(new)
    info = json.loads(settings.node_file.read_text())
    info["key_id"] = new_id
    info.setdefault("retired_key_ids", []).append(old_id)
    node_tmp = settings.node_file.with_suffix(".tmp")
    node_tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, settings.key_file)
    os.replace(node_tmp, settings.node_file)
    with node.catalog().session() as s:
        inst = s.scalar(select(Institution).where(Institution.code == node.institution_code))
        if inst is not None:
            inst.key_id = new_id
    return old_id, new_id


def load_node(settings: Settings) -> Node:
    """Open an initialised node, or explain how to create one."""
    try:
        info = json.loads(settings.node_file.read_text())
    except FileNotFoundError as exc:
        raise NotInitializedError(str(settings.home)) from exc
    node = Node(settings, info["institution"], info["name"], info["key_id"])
    if key_id_of(node.key()) != node.key_id:
        raise ConfigError(
            f"the key in {settings.key_file} does not match this node (key id {node.key_id}); "
            "restore the original key file"
        )
    return node


__all__ = ["Node", "audit_key_file", "ensure_audit_key", "init_node", "key_id_of", "load_node",
           "read_audit_key", "rotate_key"]
