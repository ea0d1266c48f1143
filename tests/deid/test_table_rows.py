"""Every exact-tag row of PS3.15 Table E.1-1, under every shipped profile, in three places.

For each row whose tag pydicom's dictionary knows, a value valid for the
row's VR is planted (a) at the top level of a small CT dataset (file meta
rows such as Media Storage SOP Instance UID go into the file meta), (b) five
levels deep, and (c) inside an item of a private sequence. The test then runs
:meth:`~mida.deid.engine.Deidentifier.apply` and asserts the outcome the
profile's options require for that row (PS3.15 E.3):

* ``X`` absent; ``Z`` present and empty (a sequence with no items; Patient's
  Name and Patient ID at the top level carry the patient pseudonym, the
  dummy that ``Z`` allows); ``D`` present, non-empty, not the original (a UI
  value becomes its pseudonym); ``K`` equal to the original; ``U`` the
  ``2.25.`` pseudonym :meth:`~mida.deid.pseudonyms.Pseudonymizer.uid` of the
  original.
* ``C``: under Retain Longitudinal Modified Dates a DA/DT value is shifted by
  the patient's offset (a whole number of days, the same offset as the
  dataset's Study Date) and a TM value is kept; under Full Dates all three are
  kept; under Clean Descriptors / Clean Structured Content a text value loses
  the patient's name and keeps its clinical words, and a structured content
  sequence keeps its items, filtered. Any other ``C`` (a text row cleaned
  only by a date option, an OB timestamp, the coded sequences of Clean
  Descriptors) gets the Basic Profile action, as :mod:`mida.deid.engine`
  documents: that retains less than cleaning would.
* A combined action (``X/Z``, ``X/D``, ``Z/D``, ``X/Z/D``, ``X/Z/U*``) must
  resolve to one of its letters, the engine's report must record that
  resolution in ``combined_choices``, and the outcome must be the one of the
  recorded letter.
* A sequence that is kept (``K``, ``D``, ``U``, a cleaned one) keeps its item,
  whose UID (Referenced SOP Instance UID, ``U``) is pseudonymized and whose
  person name (Referring Physician's Name, ``Z``) is emptied. Under Clean
  Graphics that includes Graphic Annotation Sequence (``C``: entered with the
  normal rules).
* In the private sequence every profile removes the whole private block,
  creator included: none of the shipped profiles selects Retain Safe Private,
  and under :data:`ALL_OPTIONS` the test creator ``MIDA TEST`` is not in the
  safe-private dictionary.

Besides the shipped profiles, :data:`ALL_OPTIONS` (the default profile plus
Retain Safe Private and Clean Graphics) runs every row too.

The five-level chain is made of Derivation Image Sequence (0008,9124), as in
:func:`tests.deid.builders.deep_sequence`: it is not in Table E.1-1, so the
engine always enters it (safe-by-default rule for sequences) whatever the
profile, and its resolution cannot change when combined actions are
resolved by IOD type. A chain of Referenced Image Sequence (``X/Z/U*``) would
make the placement depend on that resolution, which the row of (0008,1140)
itself tests here.

Skipped rows
------------
Every one of the 617 exact-tag rows of the 2024b table is known to pydicom
and none has an ambiguous VR, so :data:`UNBUILDABLE` is empty; an ambiguous
VR would be decided by its first choice, as the engine does. The four
pattern rows (``(50xx,xxxx)`` Curve Data, ``(60xx,3000)`` Overlay Data,
``(60xx,4000)`` Overlay Comments and the odd-group private row) name no
single tag; they are exercised by ``test_engine.py`` (overlays, curves,
private attributes) and by the private placement here. Both counts are
asserted, so neither list can grow silently.

Datasets are built in memory (no files): all rows under all profiles run in
about 35 s on two cores (7,404 cases).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from mida.deid import Deidentifier, Pseudonymizer, get_profile, list_profiles, patient_key
from mida.deid.profile import Profile
from mida.deid.profile_files import available_profiles
from mida.deid.pseudonyms import shift_da, shift_dt
from mida.deid.report import CombinedActionChoice
from mida.deid.table import Action, Option, Rule, load_table

from .builders import KEY, deep_sequence, uid

TABLE = load_table()
UNBUILDABLE: dict[str, str] = {
    r.pattern: "pydicom's dictionary does not know the tag"
    for r in TABLE
    if r.is_exact and not dictionary_has_tag(r.value)
}
"""Exact-tag rows that cannot be built, with the reason (none in 2024b)."""
ROWS: list[Rule] = [r for r in TABLE if r.is_exact and r.pattern not in UNBUILDABLE]
PATTERN_ROWS = [r.pattern for r in TABLE if not r.is_exact]

PROFILES: dict[str, Profile] = {name: get_profile(name) for name in list_profiles()}
PROFILES.update((n, p) for n, p in available_profiles(None).items() if n not in PROFILES)
SHIPPED = sorted(PROFILES)
ALL_OPTIONS = Profile(
    name="test-all-options",
    version="1",
    options=get_profile("default").options | {Option.RETAIN_SAFE_PRIVATE, Option.CLEAN_GRAPHICS},
    overrides=get_profile("default").overrides,
)
"""The default profile with the two options no shipped profile selects."""
PROFILES[ALL_OPTIONS.name] = ALL_OPTIONS
PLACEMENTS = ("top", "nested", "private")
DEPTH = 5

PATIENT_NAME, PATIENT_ID = 0x00100010, 0x00100020
STUDY_DATE = "20240315"
TEXT = "HEAD CT DOE^JANE"  # clinical words + the patient's name; fits SH (16)
CLEANED = "HEAD CT"
PN = "ROE^RICHARD"
ITEM_UID = uid("8.1")
TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
CLEAN_OPTIONS = frozenset({Option.CLEAN_DESCRIPTORS, Option.CLEAN_STRUCTURED_CONTENT})
_VALUES: dict[str, Any] = {
    "AE": "STATION7", "AS": "045Y", "CS": "VALUE1", "DA": "20240310", "DS": "1.5",
    "DT": "20240310101500", "FL": 1.5, "FD": 1.5, "IS": "7", "PN": PN, "TM": "101500",
    "UR": "http://example.org/x", "US": 7, "SS": 7, "UL": 7, "SL": 7, "SV": 7, "UV": 7,
    "AT": 0x00100010,
}  # fmt: skip

PSEUDO = Pseudonymizer(KEY)


def test_every_exact_row_is_built() -> None:
    assert len(TABLE) == 621
    assert len(UNBUILDABLE) == 0, UNBUILDABLE
    assert len(ROWS) == 617
    assert PATTERN_ROWS == [
        "(50XX,XXXX)", "(60XX,4000)", "(60XX,3000)", "(GGGG,EEEE) WHERE GGGG IS ODD",
    ]  # fmt: skip
    assert SHIPPED == ["basic", "default", "research-full-dates"]
    assert sorted(PROFILES) == [*SHIPPED, "test-all-options"]


@pytest.fixture(scope="module")
def engines() -> dict[str, Deidentifier]:
    return {name: Deidentifier(KEY, p) for name, p in PROFILES.items()}


# -- building ------------------------------------------------------------------


def vr_of(row: Rule) -> str:
    """The dictionary VR of the row's tag; an ambiguous VR takes its first choice."""
    return dictionary_VR(row.value).split(" or ")[0]


def value_for(row: Rule, vr: str) -> Any:
    if vr == "UI":
        return uid(f"7.{row.value}")
    if vr == "SQ":
        item = Dataset()
        item.ReferencedSOPInstanceUID = ITEM_UID
        item.ReferringPhysicianName = PN
        return Sequence([item])
    if vr in TEXT_VRS:
        return TEXT
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        return b"\x01\x02\x03\x04\x05\x06\x07\x08"
    return _VALUES[vr]


def base_dataset() -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = uid("1.1.1")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uid("1.1.1")
    ds.StudyInstanceUID = uid("1")
    ds.SeriesInstanceUID = uid("1.1")
    ds.Modality = "CT"
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "PID-000123"
    ds.StudyDate = STUDY_DATE
    return ds


def place(row: Rule, vr: str, placement: str) -> Dataset:
    """The base dataset with the row's attribute planted at `placement`."""
    ds = base_dataset()
    elem = DataElement(row.value, vr, value_for(row, vr))
    if placement == "top":
        (ds.file_meta if row.value >> 16 == 0x0002 else ds)[row.value] = elem
    elif placement == "nested":
        leaf = Dataset()
        leaf[row.value] = elem
        ds.DerivationImageSequence = deep_sequence(DEPTH, leaf)
    else:
        item = Dataset()
        item[row.value] = elem
        block = ds.private_block(0x0009, "MIDA TEST", create=True)
        block.add_new(0x01, "SQ", Sequence([item]))
    return ds


def container(ds: Dataset, row: Rule, placement: str) -> Dataset:
    """Where the planted attribute lives after de-identification."""
    if placement == "top":
        return ds.file_meta if row.value >> 16 == 0x0002 else ds
    for _ in range(DEPTH):
        ds = ds.DerivationImageSequence[0]
    return ds


def walk(ds: Dataset) -> Iterator[DataElement]:
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value or []:
                yield from walk(item)


# -- what the standard requires ----------------------------------------------


def required(row: Rule, profile: Profile) -> Action:
    """The row's action under `profile`, read from the table's columns.

    A selected option's action replaces the Basic one; where two selected
    options give different actions, ``C`` is the one that retains less.
    A profile override ``remove`` is ``X``.
    """
    if profile.overrides.get(row.value) == "remove":
        return Action.REMOVE
    chosen = {act for opt, act in row.options.items() if opt in profile.options}
    if not chosen:
        return row.basic
    if Action.CLEAN in chosen:
        return Action.CLEAN
    (action,) = chosen
    return action


def letters(action: Action) -> set[str]:
    return set(action.value.replace("*", "").split("/"))


def text_of(elem: DataElement) -> str:
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, list | tuple | MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value)


def days_between(a: str, b: str) -> int:
    da = dt.datetime.strptime(a[:14].ljust(14, "0"), "%Y%m%d%H%M%S")
    db = dt.datetime.strptime(b[:14].ljust(14, "0"), "%Y%m%d%H%M%S")
    delta = db - da
    assert delta.seconds == 0 and delta.microseconds == 0, "shift is not whole days"
    return delta.days


class Outcome:
    """Assertions on the element left where the row's attribute was planted."""

    def __init__(self, where: Dataset, row: Rule, vr: str, placement: str, pseudonym: str) -> None:
        self.row, self.vr, self.placement = row, vr, placement
        self.elem = where.get(row.value)
        self.original = value_for(row, vr)
        self.pseudonym = pseudonym
        self.label = f"{row.pattern} {keyword_for_tag(row.value)} {vr} ({placement})"

    def present(self) -> DataElement:
        assert self.elem is not None, f"{self.label}: removed"
        return self.elem

    def check(self, letter: str) -> None:
        getattr(self, "check_" + letter)()

    def check_X(self) -> None:
        assert self.elem is None, f"{self.label}: present, X requires removal"

    def check_Z(self) -> None:
        elem = self.present()
        if self.vr == "SQ":
            assert len(elem.value) == 0, f"{self.label}: sequence not emptied"
        elif self.placement == "top" and self.row.value in (PATIENT_NAME, PATIENT_ID):
            assert text_of(elem) == self.pseudonym  # the dummy Z allows
        else:
            assert text_of(elem) == "", f"{self.label}: not empty: {elem.value!r}"

    def check_D(self) -> None:
        elem = self.present()
        if self.vr == "SQ":
            self.check_items()
        elif self.vr == "UI":
            assert text_of(elem) == PSEUDO.uid(self.original), self.label
        else:
            assert text_of(elem) != "", f"{self.label}: empty, D requires a dummy"
            assert elem.value != self.original, f"{self.label}: original kept"
            if isinstance(self.original, str):
                assert "DOE" not in text_of(elem) and "ROE" not in text_of(elem), self.label

    def check_U(self) -> None:
        elem = self.present()
        if self.vr == "SQ":
            self.check_items()
            return
        assert self.vr == "UI", self.label
        assert text_of(elem) == PSEUDO.uid(self.original), self.label
        assert text_of(elem).startswith("2.25."), self.label

    def check_K(self) -> None:
        elem = self.present()
        if self.vr == "SQ":
            self.check_items()
        else:
            assert elem.value == self.original, f"{self.label}: {elem.value!r} not kept"

    def check_items(self) -> None:
        """A kept sequence: its item is there, filtered by the same rules."""
        items = self.present().value
        assert len(items) == 1, f"{self.label}: items lost"
        assert items[0].ReferencedSOPInstanceUID == PSEUDO.uid(ITEM_UID), self.label
        assert items[0].get("ReferringPhysicianName", "") == "", self.label

    def check_shifted(self, offset: int) -> None:
        elem = self.present()
        shift = shift_da if self.vr == "DA" else shift_dt
        assert text_of(elem) == shift(self.original, offset), self.label
        assert days_between(self.original, text_of(elem)) == offset, self.label

    def check_cleaned(self) -> None:
        elem = self.present()
        assert text_of(elem) == CLEANED, f"{self.label}: cleaned to {elem.value!r}"


def expected_letter(
    row: Rule, action: Action, report_choices: dict[int, CombinedActionChoice], label: str
) -> str:
    """The single letter to check: a combined action must be recorded, and resolved."""
    choice = report_choices.get(row.value)
    if not action.is_combined:
        assert choice is None, f"{label}: {action.value} recorded as a combined choice"
        return action.value
    assert choice is not None, f"{label}: combined action {action.value} not recorded"
    assert choice.combined == action.value, label
    assert choice.resolved in letters(action), f"{label}: {choice} not allowed"
    return str(choice.resolved)


# -- the test ----------------------------------------------------------------


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("profile_name", sorted(PROFILES))
@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.pattern}{keyword_for_tag(r.value)}")
def test_row_action(
    engines: dict[str, Deidentifier], row: Rule, profile_name: str, placement: str
) -> None:
    profile = PROFILES[profile_name]
    vr = vr_of(row)
    ds = place(row, vr, placement)
    pid = str(ds.PatientID)
    issuer = str(ds.get("IssuerOfPatientID", ""))
    study_date = str(ds.StudyDate)
    report = engines[profile_name].apply(ds)
    choices = {c.tag: c for c in report.combined_choices}

    if placement == "private":
        assert not [e.tag for e in walk(ds) if e.tag.group & 1], "private elements left"
        if row.value not in base_dataset():  # nothing of the private item moved out
            assert row.value not in [e.tag for e in walk(ds)]
        return

    out = Outcome(container(ds, row, placement), row, vr, placement, report.patient_pseudonym)
    action = required(row, profile)
    options = profile.options
    if action is Action.CLEAN:
        modified = Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in options
        full = Option.RETAIN_LONGITUDINAL_FULL_DATES in options
        cleaners = {o for o in CLEAN_OPTIONS & options if row.options.get(o) is Action.CLEAN}
        if vr in ("DA", "DT") and modified:
            offset = PSEUDO.date_offset_days(patient_key(pid, issuer))
            assert -730 <= offset <= -1
            assert days_between(study_date, ds.StudyDate) == offset  # one offset per patient
            out.check_shifted(offset)
            assert row.value not in choices
            return
        if vr in ("DA", "DT", "TM") and (modified or full):
            out.check_K()  # whole-day shifts keep the time of day
            return
        if vr in TEXT_VRS and cleaners:
            out.check_cleaned()
            return
        if vr == "SQ" and Option.CLEAN_STRUCTURED_CONTENT in cleaners:
            out.check_items()
            return
        graphics = row.options.get(Option.CLEAN_GRAPHICS) is Action.CLEAN
        if vr == "SQ" and graphics and Option.CLEAN_GRAPHICS in options:
            out.check_items()  # Graphic Annotation Sequence: entered, normal rules
            return
        action = row.basic  # documented fallback: the Basic Profile action
    out.check(expected_letter(row, action, choices, out.label))
