"""Taiwan national ID helpers (mida.dicom.twid)."""

from __future__ import annotations

import numpy as np
import pytest

from mida.dicom import twid

OFFICIAL_TABLE = (
    "A=10 B=11 C=12 D=13 E=14 F=15 G=16 H=17 I=34 J=18 K=19 L=20 M=21 N=22 O=35 "
    "P=23 Q=24 R=25 S=26 T=27 U=28 V=29 W=32 X=30 Y=31 Z=33"
)


def with_check_digit(prefix: str) -> str:
    return prefix + twid.check_digit(prefix)


def test_letter_table_is_the_official_one() -> None:
    expected = {pair[0]: int(pair[2:]) for pair in OFFICIAL_TABLE.split()}
    assert dict(twid.LETTER_CODES) == expected


@pytest.mark.parametrize("nid", ["A123456789", "A223456781", "F131104093", "Z100000002"])
def test_known_valid_ids(nid: str) -> None:
    assert twid.is_valid(nid)


def test_check_digit_of_textbook_example() -> None:
    assert twid.check_digit("A12345678") == "9"


@pytest.mark.parametrize("last", "012345678")
def test_wrong_check_digit_is_rejected(last: str) -> None:
    assert not twid.is_valid("A12345678" + last)


@pytest.mark.parametrize(
    "nid",
    [
        "a123456789",  # lower-case letter
        "1123456789",  # no letter
        "AB23456789",  # two letters (old resident format)
        "A12345678",  # too short
        "A1234567890",  # too long
        " A123456789",
        "",
    ],
)
def test_malformed_ids_are_rejected(nid: str) -> None:
    assert not twid.is_valid(nid)


@pytest.mark.parametrize("sex_digit", "034567")
def test_bad_sex_digit_is_rejected_even_with_a_valid_checksum(sex_digit: str) -> None:
    nid = with_check_digit(f"A{sex_digit}2345678")
    assert not twid.is_valid(nid)


def test_resident_certificates_are_valid_unless_excluded() -> None:
    nid = with_check_digit("A82345678")
    assert twid.is_valid(nid)
    assert not twid.is_valid(nid, allow_resident=False)
    assert twid.sex_of(nid) == "M"


def test_non_string_is_rejected() -> None:
    assert not twid.is_valid(123456789)  # type: ignore[arg-type]


@pytest.mark.parametrize("sex", ["M", "F"])
def test_generate_draws_valid_ids_of_the_right_sex(sex: str) -> None:
    rng = np.random.default_rng(7)
    ids = [twid.generate(rng, sex) for _ in range(300)]
    assert all(twid.is_valid(nid, allow_resident=False) for nid in ids)
    assert {twid.sex_of(nid) for nid in ids} == {sex}
    assert len({nid[0] for nid in ids}) > 10  # letters are drawn, not fixed
    assert len(set(ids)) == len(ids)


def test_generate_is_deterministic_and_honours_letter_and_resident() -> None:
    a = twid.generate(np.random.default_rng(1), "F", letter="E")
    b = twid.generate(np.random.default_rng(1), "F", letter="E")
    assert a == b
    assert a.startswith("E2")
    resident = twid.generate(np.random.default_rng(1), "F", resident=True)
    assert resident[1] == "9"
    assert twid.is_valid(resident)


@pytest.mark.parametrize(("sex", "letter"), [("O", None), ("", None), ("M", "a"), ("M", "AB")])
def test_generate_rejects_bad_arguments(sex: str, letter: str | None) -> None:
    with pytest.raises(ValueError):
        twid.generate(np.random.default_rng(0), sex, letter=letter)


def test_check_digit_rejects_bad_prefix() -> None:
    with pytest.raises(ValueError, match="one upper-case letter and eight digits"):
        twid.check_digit("A1234")


def test_sex_of_invalid_is_none() -> None:
    assert twid.sex_of("A123456788") is None
