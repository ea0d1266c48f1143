"""Keyed pseudonyms for UIDs, patient identifiers and dates.

Every pseudonym is a keyed hash (HMAC-SHA256) of the original value under the
node's secret key: the same input always gives the same output, so UIDs that
reference each other still resolve after de-identification and all studies of
one patient share one pseudonym and one date offset, while nobody without the
key can recompute or invert the mapping.

Partial dates
-------------
A DA value must be a full ``YYYYMMDD`` date; anything else (a partial or
malformed value) is replaced by an empty value rather than guessed at. A DT
value may legally be partial (``YYYY``, ``YYYYMM``): such values are reduced
to the year of the period's midpoint (1 July or the 15th) shifted by the
offset, so no finer date than the original is invented and the year moves
with the patient's other dates. Full DT values keep their time and UTC offset
suffix (the shift is a whole number of days).

Examples
--------
>>> p = Pseudonymizer(b"0123456789abcdef0123456789abcdef")
>>> p.uid("1.2.840.10008.1.2.1")  # standard UIDs are kept
'1.2.840.10008.1.2.1'
>>> p.uid("1.2.3.4") == p.uid("1.2.3.4 ")
True
>>> p.uid("1.2.3.4").startswith("2.25.")
True
>>> shift_da("20240301", -1)
'20240229'
>>> shift_dt("20240301120000.5+0800", -1)
'20240229120000.5+0800'
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re

from mida.errors import DeidError

DICOM_ROOT = "1.2.840.10008."
"""UIDs under this root are defined by the standard and never pseudonymized."""

MAX_DATE_OFFSET_DAYS = 730
"""Date offsets lie in ``[-MAX_DATE_OFFSET_DAYS, -1]``."""

MIN_KEY_BYTES = 16

_UID_CACHE_SIZE = 1 << 16
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{0,6}(?:\.\d{0,6})?)([+-]\d{4})?$")
_DA_LEGACY = re.compile(r"^(\d{4})\.(\d{2})\.(\d{2})$")


def _shift_date(year: int, month: int, day: int, days: int) -> dt.date | None:
    try:
        return dt.date(year, month, day) + dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return None


def _shift_one_da(value: str, days: int) -> str:
    value = value.strip()
    if len(value) == 8 and value.isdigit():
        d = _shift_date(int(value[:4]), int(value[4:6]), int(value[6:]), days)
    elif (m := _DA_LEGACY.match(value)) is not None:  # ACR-NEMA "YYYY.MM.DD"
        d = _shift_date(int(m.group(1)), int(m.group(2)), int(m.group(3)), days)
    else:
        return ""
    return "" if d is None else d.strftime("%Y%m%d").zfill(8)


def _split_range(value: str) -> list[str] | None:
    # DA/DT range matching ("a-b", "-b", "a-") uses one hyphen; a DT UTC
    # offset can contain another "-", so only split outside the offset.
    if value.count("-") == 1 and not re.search(r"\d[+-]\d{4}$", value):
        return value.split("-")
    return None


def shift_da(value: str, days: int) -> str:
    """Shift a DA value by `days` days.

    Handles multiple values (``\\``) and ranges (``A-B``, ``-B``, ``A-``).
    A value that is not a full date becomes empty (see the module notes).

    Parameters
    ----------
    value
        The DA value as stored (may be multi-valued).
    days
        The offset in days, usually negative.

    Returns
    -------
    str
        The shifted value.

    Examples
    --------
    >>> shift_da("20240101\\\\20240110", -10)
    '20231222\\\\20231231'
    >>> shift_da("20240101-20240131", -1)
    '20231231-20240130'
    >>> shift_da("2024", -1)
    ''
    """
    out = []
    for v in value.split("\\"):
        parts = _split_range(v.strip())
        if parts is not None:
            out.append("-".join(_shift_one_da(p, days) if p else "" for p in parts))
        else:
            out.append(_shift_one_da(v, days))
    return "\\".join(out)


def _shift_one_dt(value: str, days: int) -> str:
    value = value.strip()
    if not value:
        return ""
    m = _DT.match(value)
    if m is None:
        return ""
    year, month, day, rest, tz = m.groups()
    tz = tz or ""
    if month and day:
        d = _shift_date(int(year), int(month), int(day), days)
        return "" if d is None else d.strftime("%Y%m%d").zfill(8) + rest + tz
    if rest:  # a time without a full date is not a valid DT
        return ""
    d = _shift_date(int(year), int(month) if month else 7, 15 if month else 1, days)
    return "" if d is None else f"{d.year:04d}{tz}"


def shift_dt(value: str, days: int) -> str:
    """Shift a DT value by `days` days, keeping its time and UTC offset.

    Partial values (``YYYY``, ``YYYYMM``) become the shifted year of their
    midpoint; malformed values become empty (see the module notes).

    Parameters
    ----------
    value
        The DT value as stored (may be multi-valued or a range).
    days
        The offset in days, usually negative.

    Returns
    -------
    str
        The shifted value.

    Examples
    --------
    >>> shift_dt("20240101083000", -1)
    '20231231083000'
    >>> shift_dt("202401", -30), shift_dt("2024-0500", -400)
    ('2023', '2023-0500')
    """
    out = []
    for v in value.split("\\"):
        parts = _split_range(v.strip())
        if parts is not None:
            out.append("-".join(_shift_one_dt(p, days) if p else "" for p in parts))
        else:
            out.append(_shift_one_dt(v, days))
    return "\\".join(out)


def patient_key(patient_id: str, issuer: str = "") -> str:
    """Return the string that identifies one patient for keyed hashing.

    The backslash separator cannot occur inside an LO value, so distinct
    ``(issuer, patient_id)`` pairs never give the same key.
    """
    return f"{issuer.strip()}\\{patient_id.strip()}"


class Pseudonymizer:
    """Keyed, deterministic pseudonyms.

    Parameters
    ----------
    key
        The node's secret key, at least 16 bytes (32 random bytes
        recommended: ``secrets.token_bytes(32)``). Whoever holds it can
        re-identify by recomputing pseudonyms, so it never leaves the node.

    Raises
    ------
    DeidError
        If the key is too short.
    """

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
            raise DeidError(
                f"the de-identification key must be at least {MIN_KEY_BYTES} bytes; "
                "generate one with secrets.token_bytes(32)"
            )
        self._key = bytes(key)
        self._mac = hmac.new(self._key, digestmod=hashlib.sha256)
        self._uid_cache: dict[str, str] = {}
        self._key_id = hashlib.sha256(self._key).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Pseudonymizer(key_id={self._key_id!r})"

    @property
    def key_id(self) -> str:
        """First 16 hex digits of SHA-256 of the key: safe to store and log."""
        return self._key_id

    def _digest(self, data: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(data)
        return mac.digest()

    def uid(self, value: str) -> str:
        """Return the pseudonym UID of `value`.

        ``"2.25."`` followed by the first 128 bits of HMAC-SHA256(key,
        value) as a decimal integer (a UUID-derived UID, PS3.5 B.2). Trailing
        NUL and space padding is ignored; UIDs under the DICOM root
        ``1.2.840.10008.`` and empty values are returned unchanged.

        Examples
        --------
        >>> p = Pseudonymizer(b"k" * 32)
        >>> p.uid("1.2.826.0.1.3680043.2.1125.1")
        '2.25.82315625373706013223498003769995142927'
        """
        value = value.rstrip("\x00 ")
        cached = self._uid_cache.get(value)
        if cached is not None:
            return cached
        if not value or value.startswith(DICOM_ROOT):
            result = value
        else:
            digest = self._digest(value.encode("utf-8", "surrogateescape"))
            result = "2.25." + str(int.from_bytes(digest[:16], "big"))
        if len(self._uid_cache) >= _UID_CACHE_SIZE:
            self._uid_cache.clear()
        self._uid_cache[value] = result
        return result

    def patient_id(self, pid: str, issuer: str = "") -> str:
        """Return the readable pseudonym of a patient.

        ``"P"`` and 15 upper-case base32 characters (75 bits) of a keyed hash
        of the issuer and the ID: 16 characters, valid as LO and as PN.

        Examples
        --------
        >>> p = Pseudonymizer(b"k" * 32)
        >>> p.patient_id("12345", "HOSP")
        'PRSG6KFFYQDWVJM3'
        """
        key = patient_key(pid, issuer)
        digest = self._digest(b"mida-patient-id\x00" + key.encode("utf-8", "surrogateescape"))
        return "P" + base64.b32encode(digest[:10]).decode("ascii")[:15]

    def date_offset_days(self, patient_key: str) -> int:
        """Return the patient's date offset in ``[-730, -1]`` days.

        Derived from the key and :func:`patient_key`, so every study of one
        patient moves by the same number of days and intervals between them
        are preserved. The offset is secret: never store or log it.
        """
        data = patient_key.encode("utf-8", "surrogateescape")
        digest = self._digest(b"mida-date-offset\x00" + data)
        return -(int.from_bytes(digest[:8], "big") % MAX_DATE_OFFSET_DAYS) - 1

    def keyed_hash(self, value: str | bytes) -> str:
        """Return a hex HMAC-SHA256 of `value` for provenance records.

        Lets the node recognise an original (e.g. its SOP Instance UID)
        again without storing it.
        """
        data = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
        return self._digest(b"mida-keyed-hash\x00" + data).hex()

    shift_da = staticmethod(shift_da)
    shift_dt = staticmethod(shift_dt)


__all__ = [
    "DICOM_ROOT",
    "MAX_DATE_OFFSET_DAYS",
    "Pseudonymizer",
    "patient_key",
    "shift_da",
    "shift_dt",
]
