"""Keyed pseudonyms: deterministic, keyed, valid for their VR; dates shift safely."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re

import pytest

from mida.deid.pseudonyms import Pseudonymizer, patient_key, shift_da, shift_dt
from mida.errors import DeidError

from .builders import KEY, OTHER_KEY

UID_RE = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")


@pytest.fixture
def pseudo() -> Pseudonymizer:
    return Pseudonymizer(KEY)


def test_key_id_is_a_safe_prefix_of_the_key_hash(pseudo: Pseudonymizer) -> None:
    assert pseudo.key_id == hashlib.sha256(KEY).hexdigest()[:16]
    assert KEY.hex()[:8] not in repr(pseudo)


def test_short_keys_are_refused() -> None:
    with pytest.raises(DeidError, match="at least 16 bytes"):
        Pseudonymizer(b"short")


def test_uid_follows_the_documented_formula(pseudo: Pseudonymizer) -> None:
    original = "1.2.826.0.1.3680043.8.498.1"
    digest = hmac.new(KEY, original.encode(), hashlib.sha256).digest()
    expected = "2.25." + str(int.from_bytes(digest[:16], "big"))
    assert pseudo.uid(original) == expected
    assert UID_RE.match(expected) and len(expected) <= 64


def test_uid_ignores_padding_and_is_deterministic(pseudo: Pseudonymizer) -> None:
    original = "1.2.3.4.5"
    assert pseudo.uid(original) == pseudo.uid(original + "\x00") == pseudo.uid(original + " ")
    assert Pseudonymizer(KEY).uid(original) == pseudo.uid(original)
    assert pseudo.uid("1.2.3.4.6") != pseudo.uid(original)


def test_uid_depends_on_the_key(pseudo: Pseudonymizer) -> None:
    assert Pseudonymizer(OTHER_KEY).uid("1.2.3.4.5") != pseudo.uid("1.2.3.4.5")


@pytest.mark.parametrize(
    "standard",
    ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.2.16.4", ""],
)
def test_standard_and_empty_uids_are_unchanged(pseudo: Pseudonymizer, standard: str) -> None:
    assert pseudo.uid(standard) == standard


def test_invalid_uids_still_get_a_valid_pseudonym(pseudo: Pseudonymizer) -> None:
    assert UID_RE.match(pseudo.uid("fd996e46-6fa0-4593-9a23-e588aa5933a3"))


def test_patient_id_is_readable_and_fits_lo(pseudo: Pseudonymizer) -> None:
    pid = pseudo.patient_id("PID-000123", "HOSPITAL-A")
    assert re.fullmatch(r"P[A-Z2-7]{15}", pid)
    assert pid == pseudo.patient_id(" PID-000123 ", "HOSPITAL-A")
    assert pid != pseudo.patient_id("PID-000123", "HOSPITAL-B")
    assert pid != pseudo.patient_id("PID-000124", "HOSPITAL-A")
    assert pid != Pseudonymizer(OTHER_KEY).patient_id("PID-000123", "HOSPITAL-A")


def test_issuer_and_id_cannot_be_confused() -> None:
    assert patient_key("B", "A") != patient_key("", "AB")


def test_date_offset_is_in_range_and_stable(pseudo: Pseudonymizer) -> None:
    offsets = [pseudo.date_offset_days(patient_key(f"P{i}", "H")) for i in range(200)]
    assert all(-730 <= o <= -1 for o in offsets)
    assert len(set(offsets)) > 100
    assert pseudo.date_offset_days(patient_key("P1", "H")) == offsets[1]


def test_keyed_hash_is_hex_hmac(pseudo: Pseudonymizer) -> None:
    h = pseudo.keyed_hash("1.2.3")
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    assert h == pseudo.keyed_hash(b"1.2.3")
    assert h != Pseudonymizer(OTHER_KEY).keyed_hash("1.2.3")


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("20240301", -1, "20240229"),  # leap day
        ("20240101", -366, "20221231"),
        ("20240101\\20240201", -1, "20231231\\20240131"),
        ("20240101-20240131", -10, "20231222-20240121"),
        ("-20240131", -1, "-20240130"),
        ("20240101-", -1, "20231231-"),
        ("2024.03.01", -1, "20240229"),  # ACR-NEMA form
        ("", -5, ""),
        ("2024", -5, ""),  # partial DA: not a date, emptied
        ("202402", -5, ""),
        ("20240230", -5, ""),  # invalid day
        ("JOHN", -5, ""),
    ],
)
def test_shift_da(value: str, days: int, expected: str) -> None:
    assert shift_da(value, days) == expected


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("20240301120000", -1, "20240229120000"),
        ("20240301120000.123456+0800", -1, "20240229120000.123456+0800"),
        ("20240301-0500", -1, "20240229-0500"),
        ("2024", -200, "2023"),  # partial: the shifted year of its midpoint
        ("202403", -20, "2024"),
        ("202401", -20, "2023"),
        ("20240301\\20240302", -1, "20240229\\20240301"),
        ("20240301-20240302", -1, "20240229-20240301"),
        ("garbage", -1, ""),
    ],
)
def test_shift_dt(value: str, days: int, expected: str) -> None:
    assert shift_dt(value, days) == expected


def test_shift_preserves_intervals() -> None:
    def day(value: str) -> dt.date:
        return dt.datetime.strptime(value, "%Y%m%d").date()

    a, b = shift_da("20200101", -123), Pseudonymizer.shift_da("20221231", -123)
    assert day(b) - day(a) == day("20221231") - day("20200101")
    assert day(a) == day("20200101") - dt.timedelta(days=123)
