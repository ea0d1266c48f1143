"""The linkage vault: sealed records, bound to their pseudonym and key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mida.deid.vault import LinkageVault, seal, unseal
from mida.errors import ConfigError, NotFoundError


def test_seal_is_encrypted_and_bound_to_the_pseudonym() -> None:
    key = os.urandom(32)
    sealed = seal(key, "P1", {"PatientName": "Chen^Mei-Ling=陳^美玲"})
    assert b"Chen" not in sealed and "陳".encode() not in sealed
    assert unseal(key, "P1", sealed) == {"PatientName": "Chen^Mei-Ling=陳^美玲"}
    with pytest.raises(ConfigError, match="failed authentication"):
        unseal(key, "P2", sealed)  # moved to another pseudonym
    with pytest.raises(ConfigError, match="failed authentication"):
        unseal(os.urandom(32), "P1", sealed)  # another key


def test_vault_file_is_private_and_first_record_wins(tmp_path: Path) -> None:
    key = os.urandom(32)
    v = LinkageVault(tmp_path / "vault" / "v.sqlite", key)
    v.put("P1", seal(key, "P1", {"PatientID": "A1"}))
    v.put_many([("P1", seal(key, "P1", {"PatientID": "B2"})), ("P2", seal(key, "P2", {}))])
    assert v.lookup("P1") == {"PatientID": "A1"}
    assert len(v) == 2
    assert stat.S_IMODE((tmp_path / "vault" / "v.sqlite").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "vault").stat().st_mode) == 0o700
    with pytest.raises(NotFoundError):
        v.lookup("P3")
    with pytest.raises(ConfigError):
        LinkageVault(tmp_path / "x.sqlite", b"short")
