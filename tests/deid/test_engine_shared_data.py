"""The engine on real files from ../shared/data (skipped where that folder is absent).

``phi/`` holds public test files with realistic (fictitious) identifiers:
every identifying value is collected from the original and must not occur in
the de-identified output. ``dicom/`` is the pydicom/highdicom/pynetdicom test
corpus: every file must either de-identify to a readable file or be
quarantined, never fail otherwise, and no person name may remain in the
text values of the output (the other categories there hold too many vendor
strings that double as technical values).

What counts as identifying (collected from the original, at every depth): every
PN value and each of its component groups (alphabetic, ideographic, phonetic)
and name parts; Patient ID, Other Patient IDs, Patient's Birth Date, Patient's
Address, every telephone number, Institution Name and Address; every UID that is
neither under the DICOM root nor class-like
(:data:`~mida.deid.allowlist.CLASS_UID_TAGS`: SOP Class, Transfer Syntax...,
which name a type, not an instance); and every private string value of six
characters or more, except the values (and the creators) of private attributes
that the safe-private dictionary lists: the default profile applies Retain Safe
Private, which keeps them as non-identifying by that dictionary's word; names,
IDs and dates planted in them are still searched for. Values are ignored when
shorter than four characters or obviously generic: :data:`GENERIC` lists words
that also occur as defined terms in kept technical attributes (``ORIGINAL``,
``PRIMARY`` in Image Type, ``normalized`` in Rescale Type, ``Patient`` in the
CID 7050 code meanings the engine writes) and placeholders such as
``ANONYMOUS``.
A value counts as found when it occurs in the output bytes as a whole token
(not inside a longer word: ``MARY`` is not found in ``PRIMARY``).
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.charset import convert_encodings, encode_string
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from mida.deid import Deidentifier, get_profile
from mida.deid.allowlist import CLASS_UID_TAGS
from mida.deid.safe_private import load_safe_private
from mida.deid.verify import safe_listed_elements
from mida.errors import QuarantineError

from .builders import KEY

SHARED = Path(__file__).parents[2] / ".." / "shared" / "data"
PHI = SHARED / "phi"
CORPUS = SHARED / "dicom"

GENERIC = frozenset(
    {
        "ANONYMOUS", "ANONYMIZED", "UNKNOWN", "NONE", "NULL", "TEST", "ORIGINAL",
        "PRIMARY", "SECONDARY", "DERIVED", "NORMALIZED", "PATIENT",
    }
)  # fmt: skip
IDENTIFYING_KEYWORDS = frozenset(
    {
        "PatientID", "OtherPatientIDs", "PatientBirthDate", "PatientAddress",
        "InstitutionName", "InstitutionAddress",
    }
)  # fmt: skip

SAFE_CREATORS = load_safe_private().creators
"""Private creators of blocks that the safe-private dictionary lists attributes of."""

pytestmark = pytest.mark.shared_data


def _dicom_files(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        pytest.skip(f"{root} is absent: the shared corpora exist only on CI and dev machines")
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() not in {".zip", ".gz", ".csv", ".json", ".md",
                                                           ".txt", ".dump", ".icc"}:  # fmt: skip
            yield path


def _read(path: Path) -> Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError, NotImplementedError, KeyError):
        return None


def _values(value: object) -> list[object]:
    if isinstance(value, MultiValue | list):
        return list(value)
    return [value]


def _add(found: set[str], value: object) -> None:
    text = str(value).strip("\x00 ") if value is not None else ""
    if len(text) >= 4 and text.upper() not in GENERIC:
        found.add(text)


TEXT_VRS = frozenset({"AE", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
                      "UR", "UT"})  # fmt: skip


def identifying_values(ds: Dataset, *, names_only: bool = False) -> set[str]:
    """Every identifying value of `ds` (see the module notes)."""
    found: set[str] = set()
    private: set[str] = set()
    public_text: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for elem, listed in safe_listed_elements(ds):
            if elem.VR not in TEXT_VRS or (names_only and elem.VR != "PN"):
                continue
            if listed or (elem.tag.is_private_creator and str(elem.value) in SAFE_CREATORS):
                continue  # Retain Safe Private keeps it: the dictionary says it is safe
            kw = elem.keyword
            for value in _values(elem.value):
                if value is None:
                    continue
                if elem.VR == "PN":
                    pn = value if isinstance(value, PersonName) else PersonName(str(value))
                    _add(found, pn)
                    for group in (pn.alphabetic, pn.ideographic, pn.phonetic):
                        _add(found, group)
                        for part in group.split("^"):
                            _add(found, part)
                elif kw in IDENTIFYING_KEYWORDS or "Telephone" in kw:
                    _add(found, value)
                elif elem.VR == "UI":
                    if elem.tag not in CLASS_UID_TAGS and not str(value).startswith(
                        "1.2.840.10008."
                    ):
                        _add(found, value)
                elif elem.tag.is_private and isinstance(value, str) and len(value.strip()) >= 6:
                    _add(private, value)
                elif isinstance(value, str) and not elem.tag.is_private:
                    public_text.add(value.strip("\x00 "))
    # A private copy of a public description ("CT BRAIN WO IVCON") is no more
    # identifying than the description, which Clean Descriptors keeps once its
    # names, IDs and dates (collected above) are removed.
    return found | {v for v in private if v not in public_text}


def _occurs(value: str, data: bytes, encodings: list[str]) -> bool:
    for encoded in {value.encode("utf-8"), encode_string(value, encodings)}:
        if encoded not in data:  # fast path; the token check below is slow on MBs
            continue
        pattern = rb"(?<![A-Za-z0-9])" + re.escape(encoded) + rb"(?![A-Za-z0-9])"
        if re.search(pattern, data):
            return True
    return False


def _deidentify_to_bytes(engine: Deidentifier, ds: Dataset) -> bytes:
    engine.apply(ds)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def test_no_identifying_value_survives_in_the_phi_corpus() -> None:
    engine = Deidentifier(KEY, get_profile("default"))
    checked = 0
    leaks: dict[str, list[str]] = {}
    for path in _dicom_files(PHI):
        original = _read(path)
        if original is None:
            continue
        values = identifying_values(original)
        encodings = convert_encodings(original.get("SpecificCharacterSet"))
        data = _deidentify_to_bytes(engine, _read(path) or Dataset())
        found = sorted(v for v in values if _occurs(v, data, encodings))
        if found:
            leaks[str(path.relative_to(PHI))] = found
        checked += 1
    assert checked >= 10, "expected the phi corpus to hold DICOM files"
    assert not leaks


def test_every_corpus_file_is_deidentified_or_quarantined() -> None:
    engine = Deidentifier(KEY, get_profile("default"))
    outcomes = {"deidentified": 0, "quarantined": 0}
    names_left: dict[str, list[str]] = {}
    for path in _dicom_files(CORPUS):
        original = _read(path)
        if original is None:
            continue
        names = identifying_values(original, names_only=True)
        ds = _read(path)
        assert ds is not None
        try:
            engine.apply(ds)
        except QuarantineError as exc:
            assert exc.reason.value in {"bad_vr", "deid_failed"}
            outcomes["quarantined"] += 1
            continue
        outcomes["deidentified"] += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            text = "\n".join(
                str(e.value) for e in ds.iterall() if e.VR in TEXT_VRS
            )
        left = sorted(n for n in names if re.search(rf"(?<!\w){re.escape(n)}(?!\w)", text))
        if left:
            names_left[str(path.relative_to(CORPUS))] = left
    assert outcomes["deidentified"] > 100
    assert outcomes["quarantined"] <= 5
    assert not names_left
