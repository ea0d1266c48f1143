"""The linkage vault: the one place that maps a pseudonym back to a person.

Optional (``MIDA_LINKAGE_VAULT=true``). Ingest workers encrypt the original
identifiers of each new patient with the vault key (AES-256-GCM, a random
96-bit nonce per record, the pseudonym as associated data, so a record cannot
be moved to another pseudonym) and hand only the ciphertext to the parent,
which stores it in its own SQLite file under ``MIDA_HOME/vault``. The vault
key lives in ``keys/vault.key`` (mode 0600), apart from the de-identification
key: the catalog and blobs can be shared or backed up without it.

Opening a record is for the honest broker, through a two-person resolution
(``mida vault request|decide|resolve``, :mod:`mida.sharing.broker`): a
justification, a second person's approval, one resolution, each step in the
audit trail before anything is shown.

Examples
--------
>>> import os, tempfile
>>> from pathlib import Path
>>> key = os.urandom(32)
>>> sealed = seal(key, "PABC", {"PatientID": "A123456789"})
>>> b"A123456789" in sealed
False
>>> v = LinkageVault(Path(tempfile.mkdtemp()) / "vault.sqlite", key)
>>> v.put("PABC", sealed)
>>> v.lookup("PABC")
{'PatientID': 'A123456789'}
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mida.errors import ConfigError, NotFoundError

IDENTIFYING_KEYWORDS = (
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "OtherPatientIDs",
)


def seal(key: bytes, pseudonym: str, identifiers: dict[str, Any]) -> bytes:
    """Encrypt ``identifiers`` for ``pseudonym``: nonce (12 bytes) + ciphertext."""
    nonce = os.urandom(12)
    body = json.dumps(identifiers, ensure_ascii=False, sort_keys=True).encode()
    return nonce + AESGCM(key).encrypt(nonce, body, pseudonym.encode())


def unseal(key: bytes, pseudonym: str, sealed: bytes) -> dict[str, Any]:
    """Decrypt a record; refuses a record sealed for another pseudonym or key."""
    try:
        body = AESGCM(key).decrypt(sealed[:12], sealed[12:], pseudonym.encode())
    except InvalidTag as exc:
        raise ConfigError(
            "a vault record failed authentication: wrong vault key, or the record was "
            "moved or altered"
        ) from exc
    data: dict[str, Any] = json.loads(body)
    return data


class LinkageVault:
    """Encrypted pseudonym -> identifiers records in a SQLite file (mode 0600)."""

    def __init__(self, path: Path, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError("the vault key must be 32 bytes (AES-256)")
        self.path = path
        self.key = key
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        new = not path.exists()
        self._db = sqlite3.connect(path, timeout=30)
        if new:
            os.chmod(path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS record (pseudonym TEXT PRIMARY KEY, sealed BLOB NOT NULL,"
            " created TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
        self._db.commit()

    def put(self, pseudonym: str, sealed: bytes) -> None:
        """Store a sealed record; the first record of a pseudonym is kept."""
        self._db.execute(
            "INSERT OR IGNORE INTO record (pseudonym, sealed) VALUES (?, ?)", (pseudonym, sealed)
        )
        self._db.commit()

    def put_many(self, records: list[tuple[str, bytes]]) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO record (pseudonym, sealed) VALUES (?, ?)", records
        )
        self._db.commit()

    def lookup(self, pseudonym: str) -> dict[str, Any]:
        row = self._db.execute(
            "SELECT sealed FROM record WHERE pseudonym = ?", (pseudonym,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no vault record for pseudonym {pseudonym!r}")
        return unseal(self.key, pseudonym, bytes(row[0]))

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM record").fetchone()[0])

    def close(self) -> None:
        self._db.close()


__all__ = ["IDENTIFYING_KEYWORDS", "LinkageVault", "seal", "unseal"]
