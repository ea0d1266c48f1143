"""Taiwan national identification numbers (中華民國國民身分證統一編號).

A national ID is one letter and nine digits, e.g. ``A123456789``:

* the letter is the household-registration area where the number was issued
  (``A`` Taipei City, ``F`` New Taipei City, ...);
* the first digit is ``1`` for male, ``2`` for female; ``8`` and ``9`` are used
  by the new-format Resident Certificates (居留證, since 2021) for male and
  female foreign residents;
* the last digit is a check digit.

The letter is replaced by its two-digit area code (table below; note that
``I``, ``O``, ``W`` ... are out of alphabetical order), giving eleven digits.
Their sum weighted by ``1, 9, 8, 7, 6, 5, 4, 3, 2, 1, 1`` must be a multiple
of ten.

mida plants these numbers in synthetic studies (:mod:`mida.dicom.sample`) and
the de-identifier looks for them in free text, so both sides use this module.
"""

from __future__ import annotations

import re
from types import MappingProxyType

import numpy as np

LETTER_CODES: MappingProxyType[str, int] = MappingProxyType(
    {
        "A": 10, "B": 11, "C": 12, "D": 13, "E": 14, "F": 15, "G": 16, "H": 17,
        "I": 34, "J": 18, "K": 19, "L": 20, "M": 21, "N": 22, "O": 35, "P": 23,
        "Q": 24, "R": 25, "S": 26, "T": 27, "U": 28, "V": 29, "W": 32, "X": 30,
        "Y": 31, "Z": 33,
    }
)  # fmt: skip
"""Official area-letter to two-digit code table (內政部)."""

WEIGHTS: tuple[int, ...] = (1, 9, 8, 7, 6, 5, 4, 3, 2, 1, 1)
"""Weights over the eleven digits (two for the letter, nine for the number)."""

CITIZEN_SEX_DIGITS: MappingProxyType[str, str] = MappingProxyType({"M": "1", "F": "2"})
"""First digit by DICOM ``PatientSex`` for citizens."""

RESIDENT_SEX_DIGITS: MappingProxyType[str, str] = MappingProxyType({"M": "8", "F": "9"})
"""First digit by DICOM ``PatientSex`` for new-format Resident Certificates."""

PATTERN = re.compile(r"[A-Z][1289]\d{8}")
"""Shape of a national ID or new-format Resident Certificate number.

Matches the shape only; use :func:`is_valid` to check the check digit too.
"""


def _weighted_sum(digits: str) -> int:
    return sum(w * int(d) for w, d in zip(WEIGHTS, digits, strict=False))


def check_digit(prefix: str) -> str:
    """Return the check digit that completes a nine-character prefix.

    Parameters
    ----------
    prefix
        The area letter and the first eight digits, e.g. ``"A12345678"``.

    Returns
    -------
    str
        The tenth character, one digit.

    Raises
    ------
    ValueError
        If `prefix` is not an upper-case letter followed by eight digits.

    Examples
    --------
    >>> check_digit("A12345678")
    '9'
    """
    if not re.fullmatch(r"[A-Z]\d{8}", prefix):
        raise ValueError(
            "a national ID prefix is one upper-case letter and eight digits, e.g. 'A12345678'"
        )
    digits = f"{LETTER_CODES[prefix[0]]:02d}{prefix[1:]}"
    return str(-_weighted_sum(digits) % 10)


def is_valid(national_id: str, *, allow_resident: bool = True) -> bool:
    """Tell whether a string is a valid Taiwan national ID.

    Parameters
    ----------
    national_id
        The candidate, e.g. ``"A123456789"``. Upper case, no spaces.
    allow_resident
        Also accept new-format Resident Certificate numbers (first digit 8 or 9).

    Returns
    -------
    bool
        True when the letter, the sex digit and the check digit are all valid.

    Examples
    --------
    >>> is_valid("A123456789")
    True
    >>> is_valid("A123456788")  # wrong check digit
    False
    >>> is_valid("A323456789")  # 3 is not a sex digit
    False
    """
    if not isinstance(national_id, str) or not PATTERN.fullmatch(national_id):
        return False
    if not allow_resident and national_id[1] not in CITIZEN_SEX_DIGITS.values():
        return False
    return check_digit(national_id[:9]) == national_id[9]


def sex_of(national_id: str) -> str | None:
    """Return the DICOM ``PatientSex`` (``"M"`` or ``"F"``) a valid ID encodes.

    Parameters
    ----------
    national_id
        A national ID or new-format Resident Certificate number.

    Returns
    -------
    str or None
        ``"M"`` or ``"F"``, or None when `national_id` is not valid.

    Examples
    --------
    >>> sex_of("A223456781")
    'F'
    """
    if not is_valid(national_id):
        return None
    return "M" if national_id[1] in ("1", "8") else "F"


def generate(
    rng: np.random.Generator,
    sex: str,
    *,
    letter: str | None = None,
    resident: bool = False,
) -> str:
    """Draw a random, valid national ID.

    Parameters
    ----------
    rng
        Source of randomness; the same generator state gives the same ID.
    sex
        DICOM ``PatientSex``: ``"M"`` or ``"F"``.
    letter
        Area letter; drawn at random when omitted.
    resident
        Draw a new-format Resident Certificate number (first digit 8/9).

    Returns
    -------
    str
        A ten-character ID for which :func:`is_valid` is True.

    Raises
    ------
    ValueError
        If `sex` is not ``"M"`` or ``"F"`` or `letter` is not ``A``-``Z``.

    Examples
    --------
    >>> nid = generate(np.random.default_rng(0), "F", letter="A")
    >>> nid[:2], is_valid(nid)
    ('A2', True)
    """
    table = RESIDENT_SEX_DIGITS if resident else CITIZEN_SEX_DIGITS
    if sex not in table:
        raise ValueError("sex must be the DICOM PatientSex 'M' or 'F' to encode a national ID")
    if letter is None:
        letter = str(rng.choice(sorted(LETTER_CODES)))
    elif letter not in LETTER_CODES:
        raise ValueError("the area letter of a national ID is one upper-case letter A-Z")
    body = "".join(str(d) for d in rng.integers(0, 10, size=7))
    prefix = f"{letter}{table[sex]}{body}"
    return prefix + check_digit(prefix)


__all__ = [
    "CITIZEN_SEX_DIGITS",
    "LETTER_CODES",
    "PATTERN",
    "RESIDENT_SEX_DIGITS",
    "WEIGHTS",
    "check_digit",
    "generate",
    "is_valid",
    "sex_of",
]
