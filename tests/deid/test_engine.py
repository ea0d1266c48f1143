"""The engine on datasets built in code: every action, at every depth, safely."""

from __future__ import annotations

import datetime as dt
import io
import json
import struct
import time
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from mida import __version__
from mida.deid import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    Deidentifier,
    Profile,
    Pseudonymizer,
    get_profile,
    patient_key,
)
from mida.deid.safe_private import load_safe_private
from mida.errors import QuarantineError, QuarantineReason

from .builders import KEY, OTHER_KEY, PLANTED, ct_dataset, deep_sequence, output_bytes, reread, uid


@pytest.fixture(scope="module")
def engine() -> Deidentifier:
    return Deidentifier(KEY, get_profile("default"))


@pytest.fixture(scope="module")
def basic() -> Deidentifier:
    return Deidentifier(KEY, get_profile("basic"))


def _days(a: str, b: str) -> int:
    return (dt.date.fromisoformat(b[:4] + "-" + b[4:6] + "-" + b[6:8])
            - dt.date.fromisoformat(a[:4] + "-" + a[4:6] + "-" + a[6:8])).days  # fmt: skip


# -- the patient ------------------------------------------------------------


def test_patient_name_and_id_become_the_pseudonym(engine: Deidentifier) -> None:
    ds = reread(ct_dataset())
    report = engine.apply(ds)
    expected = Pseudonymizer(KEY).patient_id("PID-000123", "HOSPITAL-A")
    assert ds.PatientID == str(ds.PatientName) == report.patient_pseudonym == expected
    for gone in ("IssuerOfPatientID", "OtherPatientIDsSequence", "PatientAddress",
                 "PatientTelephoneNumbers"):  # fmt: skip
        assert gone not in ds
    assert ds.PatientBirthDate == ""


def test_patient_characteristics_are_kept_and_ages_capped(engine: Deidentifier) -> None:
    ds = reread(ct_dataset(age="095Y"))
    engine.apply(ds)
    assert (ds.PatientSex, ds.PatientAge, ds.PatientSize, ds.PatientWeight, ds.SmokingStatus) == (
        "F", "090Y", 1.62, 58, "NO",
    )  # fmt: skip


@pytest.mark.filterwarnings("ignore:Invalid value for VR AS")
@pytest.mark.parametrize(
    ("age", "kept"),
    [("089Y", "089Y"), ("090Y", "090Y"), ("120Y", "090Y"), ("011M", "011M"), ("003W", "003W"),
     ("075Y", "075Y"), ("75Y", "075Y")],
)  # fmt: skip
def test_ages_over_89_become_090Y(engine: Deidentifier, age: str, kept: str) -> None:
    ds = reread(ct_dataset(age=age))
    engine.apply(ds)
    assert ds.PatientAge == kept


@pytest.mark.filterwarnings("ignore:Invalid value for VR AS")
def test_malformed_age_is_removed(engine: Deidentifier) -> None:
    ds = reread(ct_dataset(age="OLD"))
    engine.apply(ds)
    assert "PatientAge" not in ds


def test_basic_profile_drops_patient_characteristics(basic: Deidentifier) -> None:
    ds = reread(ct_dataset())
    basic.apply(ds)
    assert ds.PatientSex == ""  # Z
    assert "PatientAge" not in ds and "PatientWeight" not in ds  # X


def test_patient_without_id_is_linked_by_name_and_birth_date(engine: Deidentifier) -> None:
    a, b, c = (reread(ct_dataset(patient_id="", instance=s)) for s in ("7", "8", "9"))
    c.PatientName = "ROE^RICHARD"
    pseudonyms = {engine.apply(x).patient_pseudonym for x in (a, b)}
    assert len(pseudonyms) == 1
    assert engine.apply(c).patient_pseudonym not in pseudonyms
    assert a.PatientID in pseudonyms


# -- UIDs -------------------------------------------------------------------


def test_uids_stay_consistent_across_the_files_of_a_study(engine: Deidentifier) -> None:
    first = reread(ct_dataset(instance="1.1.1"))
    second = reread(ct_dataset(instance="1.1.2", references=("1.1.1",)))
    engine.apply(first)
    engine.apply(second)
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert first[kw].value == second[kw].value
        assert first[kw].value.startswith("2.25.")
    assert first.SOPInstanceUID != second.SOPInstanceUID
    # references still resolve to the other file's new UID
    assert second.ReferencedImageSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert second.SourceImageSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID


def test_standard_uids_are_kept(engine: Deidentifier) -> None:
    ds = reread(ct_dataset(references=("1.1.9",)))
    engine.apply(ds)
    assert ds.SOPClassUID == CTImageStorage
    assert ds.ReferencedImageSequence[0].ReferencedSOPClassUID == CTImageStorage
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage


def test_file_meta_is_pseudonymized(engine: Deidentifier) -> None:
    ds = reread(ct_dataset())
    engine.apply(ds)
    meta = ds.file_meta
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == Pseudonymizer(KEY).uid(
        uid("1.1.1")
    )
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME == "MIDA_0_1"
    assert "SourceApplicationEntityTitle" not in meta
    assert IMPLEMENTATION_CLASS_UID.startswith("2.25.") and len(IMPLEMENTATION_CLASS_UID) <= 64


def test_multi_valued_uids_are_each_pseudonymized(engine: Deidentifier) -> None:
    ds = ct_dataset()
    ds.add_new(0x00081195, "UI", [uid("5"), "1.2.840.10008.1.2"])  # Transaction UID (unlisted)
    ds = reread(ds)
    engine.apply(ds)
    values = ds[0x00081195].value
    assert values[0] == Pseudonymizer(KEY).uid(uid("5")) and values[1] == "1.2.840.10008.1.2"


# -- dates ------------------------------------------------------------------


def test_dates_shift_by_one_offset_per_patient_across_studies(engine: Deidentifier) -> None:
    first = reread(ct_dataset(study="1", study_date="20200110"))
    later = reread(ct_dataset(study="2", series="2.1", instance="2.1.1", study_date="20210305"))
    engine.apply(first)
    engine.apply(later)
    offset = Pseudonymizer(KEY).date_offset_days(patient_key("PID-000123", "HOSPITAL-A"))
    assert _days("20200110", first.StudyDate) == offset
    assert _days(first.StudyDate, later.StudyDate) == _days("20200110", "20210305")
    assert first.StudyDate == first.SeriesDate == first.AcquisitionDate == first.ContentDate
    assert first.AcquisitionDateTime == first.StudyDate + "101500.25+0100"
    assert (first.StudyTime, first.ContentTime) == ("101010", "101530.5")  # times are kept
    assert first.LongitudinalTemporalInformationModified == "MODIFIED"
    assert first.StudyInstanceUID != later.StudyInstanceUID


def test_offsets_differ_between_patients(engine: Deidentifier) -> None:
    shifted = set()
    for i in range(8):
        ds = reread(ct_dataset(patient_id=f"PID-{i}", study_date="20240101"))
        engine.apply(ds)
        shifted.add(ds.StudyDate)
        assert _days(ds.StudyDate, "20240101") in range(1, 731)
    assert len(shifted) > 1


def test_dates_deep_in_sequences_are_shifted(engine: Deidentifier) -> None:
    leaf = Dataset()
    leaf.add_new(0x00181012, "DA", "20240101")  # Date of Secondary Capture (listed, C)
    leaf.add_new(0x00189074, "DT", "20240101120000")  # Frame Acquisition DateTime (listed)
    ds = ct_dataset()
    ds.DerivationImageSequence = deep_sequence(3, leaf)
    ds = reread(ds)
    report = engine.apply(ds)
    item = ds.DerivationImageSequence[0].DerivationImageSequence[0].DerivationImageSequence[0]
    assert _days("20240101", item[0x00181012].value) == _days("20240315", ds.StudyDate)
    assert item[0x00189074].value[8:] == "120000"
    assert report.dates_shifted


def test_basic_profile_removes_dates(basic: Deidentifier) -> None:
    ds = reread(ct_dataset())
    report = basic.apply(ds)
    assert ds.StudyDate == "" and ds.ContentDate == ""  # Type 2 and 2C in CT Image
    # X/Z and X/Z/D on attributes of Type 3 in the CT Image IOD: removed
    assert "AcquisitionDate" not in ds and "AcquisitionDateTime" not in ds
    choices = {c.tag: c for c in report.combined_choices}
    assert str(choices[0x00080022]).endswith("X/Z -> X (Type 3 in ct-image)")
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert not report.dates_shifted


# -- each action ------------------------------------------------------------


def _with(tag: int, vr: str, value: object) -> Dataset:
    ds = ct_dataset()
    ds.add_new(tag, vr, value)
    return reread(ds)


@pytest.mark.parametrize(
    ("tag", "vr", "value", "expected"),
    [
        (0x0040A075, "PN", "WATSON^JOHN", "ANONYMOUS"),  # Verifying Observer Name: D
        (0x0040A121, "DA", "20240101", "19000101"),  # Date: D (basic profile)
        (0x0040A122, "TM", "101010", "000000"),  # Time: D
        (0x0040A120, "DT", "20240101101010", "19000101000000"),  # DateTime: D
        (0x00400512, "LO", "CONTAINER-9", "ANONYMIZED"),  # Container Identifier: D
        (0x00200010, "SH", "S-1", ""),  # Study ID: Z
        (0x00080050, "SH", "ACC-1", ""),  # Accession Number: Z
    ],
)
def test_basic_actions_write_vr_valid_values(
    basic: Deidentifier, tag: int, vr: str, value: object, expected: str
) -> None:
    ds = _with(tag, vr, value)
    basic.apply(ds)
    assert vr == ds[tag].VR
    assert ds[tag].value == expected


def test_x_removes_and_u_pseudonymizes(basic: Deidentifier) -> None:
    ds = _with(0x00080014, "UI", uid("77"))  # Instance Creator UID: U
    ds.add_new(0x00101000, "LO", "ALIAS-777")  # Other Patient IDs: X
    basic.apply(ds)
    assert "OtherPatientIDs" not in ds
    assert ds.InstanceCreatorUID == Pseudonymizer(KEY).uid(uid("77"))


def test_d_on_a_uid_writes_its_pseudonym(basic: Deidentifier) -> None:
    ds = _with(0x006A0003, "UI", uid("88"))  # Annotation Group UID: D
    basic.apply(ds)
    assert ds[0x006A0003].value == Pseudonymizer(KEY).uid(uid("88"))


def test_combined_actions_are_resolved_and_reported(
    engine: Deidentifier, basic: Deidentifier
) -> None:
    ds = ct_dataset(references=("1.1.5",))
    ds.AcquisitionContextSequence = [Dataset()]
    ds.ReferencedPerformedProcedureStepSequence = [_ref_item("4")]
    # Protocol Name (X/D) and Acquisition Context Sequence (X/Z) are cleaned
    # under the default profile's clean options: their combined actions show
    # under the Basic Profile.
    plain = reread(ds)
    basic_choices = {c.tag: c for c in basic.apply(plain).combined_choices}
    # In a CT Image, resolved by the attribute's type in the IOD (PS3.15 E.1.1)
    assert str(basic_choices[0x00181030]).endswith("X/D -> X (Type 3 in ct-image)")
    assert str(basic_choices[0x00080023]).endswith("Z/D -> Z (Type 2C in ct-image)")
    assert str(basic_choices[0x00400555]).endswith("X/Z -> X (not in ct-image)")
    assert "ProtocolName" not in plain and "AcquisitionContextSequence" not in plain
    assert plain.ContentDate == ""
    ds = reread(ds)
    report = engine.apply(ds)
    choices = {c.tag: (c.combined, c.resolved) for c in report.combined_choices}
    assert choices[0x00080080] == ("X/Z/D", "X") and "InstitutionName" not in ds
    assert choices[0x00081010] == ("X/Z/D", "X") and "StationName" not in ds
    assert choices[0x00100020] == ("Z/D", "Z") and ds.PatientID == report.patient_pseudonym
    assert choices[0x00081140] == ("X/Z/U*", "U")  # references kept, UIDs replaced
    ref = ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID
    assert ref == Pseudonymizer(KEY).uid(uid("1.1.5"))
    assert choices[0x00081111] == ("X/Z/D", "X")
    assert "ReferencedPerformedProcedureStepSequence" not in ds
    assert str(report.combined_choices[0]).startswith(
        "(0008,0080) Institution Name: X/Z/D -> X (Type 3 in ct-image)"
    )


def test_combined_actions_of_an_unknown_iod_take_the_safer_choice(
    engine: Deidentifier,
) -> None:
    ds = ct_dataset(references=("1.1.5",))
    ds.SOPClassUID = "1.2.3.999"  # not a standard SOP class: types unknown
    ds.ReferencedPerformedProcedureStepSequence = [_ref_item("4")]
    ds = reread(ds)
    report = engine.apply(ds)
    choices = {c.tag: (c.combined, c.resolved, c.basis) for c in report.combined_choices}
    assert choices[0x00080080] == ("X/Z/D", "Z", "type unknown") and ds.InstitutionName == ""
    assert choices[0x00081010] == ("X/Z/D", "Z", "type unknown") and ds.StationName == ""
    assert choices[0x00100020] == ("Z/D", "D", "type unknown")
    assert choices[0x00081111] == ("X/Z/D", "D", "type unknown")
    ref = ds.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID
    assert ref == Pseudonymizer(KEY).uid(uid("4"))


def test_type_1_attributes_get_a_dummy_where_the_table_allows_it() -> None:
    from mida.deid.plan import resolve_by_type
    from mida.deid.table import Action

    assert resolve_by_type(0x00080080, Action.REMOVE_OR_ZERO_OR_DUMMY, "LO", "1C") is Action.DUMMY
    assert resolve_by_type(0x00080080, Action.REMOVE_OR_ZERO, "LO", "1") is Action.DUMMY
    assert resolve_by_type(0x00080080, Action.REMOVE_OR_DUMMY, "LO", "2") is Action.DUMMY
    assert resolve_by_type(0x00080080, Action.REMOVE_OR_ZERO, "LO", "2C") is Action.ZERO
    assert resolve_by_type(0x00080080, Action.REMOVE_OR_ZERO_OR_DUMMY, "LO", "") is Action.REMOVE


def _ref_item(suffix: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
    item.ReferencedSOPInstanceUID = uid(suffix)
    return item


# -- safe by default --------------------------------------------------------


def test_private_attributes_are_all_removed(engine: Deidentifier) -> None:
    ds = reread(ct_dataset())
    report = engine.apply(ds)
    assert not [e for e in ds.iterall() if e.tag.is_private]
    assert report.private_removed == 3  # creator, value, private sequence (with its items)


def test_unlisted_text_is_removed_and_technical_values_kept(basic: Deidentifier) -> None:
    ds = ct_dataset()
    ds.add_new(0x00182400, "LO", "free text")  # not in the dictionary
    ds.add_new(0x00189004, "CS", "PRODUCT")  # Content Qualification: unlisted CS
    ds.add_new(0x00180088, "DS", "1.25")  # Spacing Between Slices
    ds.add_new(0x00189306, "FD", 0.625)  # Single Collimation Width
    ds.add_new(0x00080000, "UL", 100)  # group length
    ds.add_new(0x00321033, "LO", "SURGERY")  # Requesting Service: listed X
    ds.add_new(0x0040A160, "UT", "Patient fell at home")  # Text Value: unlisted UT
    ds.add_new(0x00081080, "LO", "Fracture")  # Admitting Diagnoses Description: X
    ds = reread(ds)
    report = basic.apply(ds)
    for tag in (0x00182400, 0x00080000, 0x00321033, 0x0040A160, 0x00081080):
        assert tag not in ds
    assert ds[0x00189004].value == "PRODUCT" and ds.SpacingBetweenSlices == 1.25
    assert ds[0x00189306].value == 0.625
    assert (ds.Manufacturer, ds.ConvolutionKernel, ds.RescaleType) == ("ACME", "STANDARD", "HU")
    assert report.unlisted_removed >= 2


def test_codes_of_local_schemes_are_removed(engine: Deidentifier) -> None:
    ds = reread(ct_dataset())
    engine.apply(ds)
    standard, local = ds.ProcedureCodeSequence
    assert (standard.CodeValue, standard.CodingSchemeDesignator, standard.CodeMeaning) == (
        "77477000", "SCT", "CT of head",
    )  # fmt: skip
    # a local code is kept under Clean Descriptors, its meaning cleaned of the name
    assert (local.CodeValue, local.CodingSchemeDesignator, local.CodeMeaning) == (
        "ER-77", "99LOCAL", "head CT",
    )  # fmt: skip


def test_local_codes_go_whole_without_a_clean_option(basic: Deidentifier) -> None:
    ds = reread(ct_dataset())
    basic.apply(ds)
    (standard,) = ds.ProcedureCodeSequence  # the local item is dropped, not left invalid
    assert standard.CodingSchemeDesignator == "SCT"


def test_local_codes_with_identifying_values_go_whole(engine: Deidentifier) -> None:
    ds = ct_dataset()
    item = Dataset()
    item.CodeValue = "A123456789"  # a Taiwan national ID used as a code value
    item.CodingSchemeDesignator = "99LOCAL"
    item.CodeMeaning = "patient code"
    ds.ProcedureCodeSequence = [item]
    ds = reread(ds)
    engine.apply(ds)
    assert "ProcedureCodeSequence" not in ds  # Type 3: removed once empty


def test_nested_sequences_are_filtered_at_every_depth(basic: Deidentifier) -> None:
    leaf = Dataset()
    leaf.PersonName = "WATSON^JOHN"  # (0040,A123): D
    leaf.ReferencedSOPInstanceUID = uid("1.1.1")
    leaf.ImageComments = "Deeply nested comment"
    leaf.add_new(0x00091001, "LO", "PrivateSecretValue")
    leaf.add_new(0x00181050, "DS", "0.7")  # Spatial Resolution: kept
    ds = ct_dataset()
    ds.DerivationImageSequence = deep_sequence(4, leaf)
    ds = reread(ds)
    basic.apply(ds)
    item = ds
    for _ in range(4):
        item = item.DerivationImageSequence[0]
    assert item.PersonName == "ANONYMOUS"
    assert item.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert "ImageComments" not in item and 0x00091001 not in item
    assert item.SpatialResolution == 0.7


def test_dummy_sequences_keep_structure_but_no_text(basic: Deidentifier) -> None:
    # the Basic Profile's D; under Clean Structured Content the text is cleaned
    # instead (tests/deid/test_freetext.py)
    ds = ct_dataset()
    content = Dataset()
    content.RelationshipType = "CONTAINS"
    content.ValueType = "TEXT"
    concept = Dataset()
    concept.CodeValue = "121106"
    concept.CodingSchemeDesignator = "DCM"
    concept.CodeMeaning = "Comment"
    content.ConceptNameCodeSequence = [concept]
    content.TextValue = "Seen by WATSON^JOHN after the fall"
    content.PersonName = "WATSON^JOHN"
    content.UID = uid("3")
    ds.ContentSequence = [content]
    ds = reread(ds)
    basic.apply(ds)
    (item,) = ds.ContentSequence
    assert item.RelationshipType == "CONTAINS" and item.PersonName == "ANONYMOUS"
    assert "TextValue" not in item
    assert Pseudonymizer(KEY).uid(uid("3")) == item.UID
    # strict: no code text, and a code item without its text is dropped whole
    # (with its sequence) rather than left invalid
    assert "ConceptNameCodeSequence" not in item


def test_overlays_and_curves_are_removed_whole(engine: Deidentifier) -> None:
    ds = ct_dataset()
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60000011, "US", 16)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60003000, "OW", b"\x00" * 32)
    ds.add_new(0x50000005, "US", 1)
    ds = reread(ds)
    engine.apply(ds)
    assert not [e for e in ds if e.tag.group in (0x6000, 0x5000)]


def test_group_lengths_go_and_the_meta_one_is_recomputed(engine: Deidentifier) -> None:
    ds = reread(ct_dataset())
    engine.apply(ds)
    back = dcmread(io.BytesIO(output_bytes(ds)))
    assert back.file_meta.FileMetaInformationGroupLength > 0
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_preamble_is_zeroed(engine: Deidentifier) -> None:
    ds = reread(ct_dataset())
    ds.preamble = b"JOHN DOE".ljust(128, b"\x00")
    engine.apply(ds)
    assert ds.preamble == b"\x00" * 128


def test_profile_overrides(engine: Deidentifier) -> None:
    profile = Profile(
        "custom",
        "1",
        options=get_profile("default").options,
        overrides={0x00081030: "keep", 0x00080060: "remove", 0x00180015: "replace:CHEST",
                   0x00280010: "replace:8"},
    )  # fmt: skip
    ds = reread(ct_dataset())
    Deidentifier(KEY, profile).apply(ds)
    assert ds.StudyDescription == "Scanned after the fall at home"
    assert "Modality" not in ds
    assert ds.BodyPartExamined == "CHEST" and ds.Rows == 8
    assert ds.DeidentificationMethod[0].startswith(f"mida {__version__} profile custom 1")


# -- the record and the report ----------------------------------------------


def test_deidentification_is_recorded(engine: Deidentifier) -> None:
    ds = reread(ct_dataset())
    engine.apply(ds)
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod == [
        f"mida {__version__} profile default 3 (PS3.15 2024b)",
        f"safe-private {load_safe_private().version}",
    ]
    codes = [(c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning)
             for c in ds.DeidentificationMethodCodeSequence]  # fmt: skip
    assert codes == [
        ("113100", "DCM", "Basic Application Confidentiality Profile"),
        ("113103", "DCM", "Clean Graphics Option"),
        ("113104", "DCM", "Clean Structured Content Option"),
        ("113105", "DCM", "Clean Descriptors Option"),
        ("113107", "DCM", "Retain Longitudinal Temporal Information Modified Dates Option"),
        ("113108", "DCM", "Retain Patient Characteristics Option"),
        ("113111", "DCM", "Retain Safe Private Option"),
    ]


def test_report_holds_no_original_value_and_no_offset(engine: Deidentifier) -> None:
    ds = reread(ct_dataset())
    report = engine.apply(ds)
    text = json.dumps(report.to_dict())
    for value in (*PLANTED, uid("1"), uid("1.1.1"), "20240315"):
        assert value not in text
    assert "offset" not in text
    assert report.key_id == Pseudonymizer(KEY).key_id
    assert (report.profile_name, report.profile_version, report.table_edition) == (
        "default", "3", "2024b",
    )  # fmt: skip
    assert report.safe_private_version == load_safe_private().version
    assert report.source_uid_hash == Pseudonymizer(KEY).keyed_hash(uid("1.1.1"))
    assert sum(report.action_counts.values()) > 50


def test_no_planted_value_survives(engine: Deidentifier) -> None:
    ds = ct_dataset(references=("1.1.5",))
    ds.DerivationImageSequence = deep_sequence(3, _planted_leaf())
    ds = reread(ds)
    engine.apply(ds)
    data = output_bytes(ds)
    identifying = [v for v in PLANTED if v not in CLINICAL_TEXT]
    for value in (*identifying, uid("1"), uid("1.1"), uid("1.1.1"), uid("1.1.5"), uid("1.0")):
        assert value.encode() not in data, value


CLINICAL_TEXT = {"Scanned after the fall at home", "Deeply nested comment"}
"""Planted descriptions without identifying content: Clean Descriptors keeps them."""


def _planted_leaf() -> Dataset:
    leaf = Dataset()
    leaf.PersonName = "WATSON^JOHN"
    leaf.ImageComments = "Deeply nested comment"
    return leaf


# -- determinism and keys ---------------------------------------------------


def test_output_is_byte_identical_for_the_same_key() -> None:
    outputs = set()
    for _ in range(2):
        ds = reread(ct_dataset(references=("1.1.5",)))
        Deidentifier(KEY, get_profile("default")).apply(ds)
        outputs.add(output_bytes(ds))
    assert len(outputs) == 1


def test_another_key_gives_other_pseudonyms() -> None:
    a, b = reread(ct_dataset()), reread(ct_dataset())
    Deidentifier(KEY, get_profile("default")).apply(a)
    Deidentifier(OTHER_KEY, get_profile("default")).apply(b)
    for kw in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert a[kw].value != b[kw].value


# -- encodings and validity -------------------------------------------------


@pytest.mark.parametrize("implicit", [False, True])
def test_output_is_valid_and_rereads_without_warnings(engine: Deidentifier,
                                                      implicit: bool) -> None:  # fmt: skip
    ds = reread(ct_dataset(references=("1.1.5",)), implicit=implicit)
    engine.apply(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = dcmread(io.BytesIO(output_bytes(ds)))
        values = [e.value for e in back.iterall()]
    assert values
    assert back.PatientID == ds.PatientID and back.StudyDate == ds.StudyDate
    assert len(back.DeidentificationMethodCodeSequence) == 7


def test_datasets_built_in_code_work_too(engine: Deidentifier) -> None:
    ds = ct_dataset(references=("1.1.5",))
    engine.apply(ds)
    assert ds.PatientName == ds.PatientID and "InstitutionName" not in ds  # Type 3 in CT
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = dcmread(io.BytesIO(output_bytes(ds)))
        [e.value for e in back.iterall()]
    assert back.DeidentificationMethodCodeSequence[0].CodeValue == "113100"


# -- bad values: quarantine without leaking them ----------------------------


def _raw(ds: Dataset, tag: int, vr: str, value: bytes) -> Dataset:
    key = BaseTag(tag)
    ds._dict[key] = RawDataElement(key, vr, len(value), value, 0, False, True)
    return ds


@pytest.mark.parametrize(
    ("tag", "vr", "value", "shown"),
    [
        (0x00280010, "US", b"\x01\x02\x03", "US"),  # odd length for US
        (0x00180050, "DS", b"SMITH^JOHN", "DS"),  # not a number
        (0x00200013, "IS", b"JOHN", "IS"),
        (0x0020000D, "UI", "1.2.\u00e9SMITH".encode("latin-1"), "UI"),  # not ASCII
        (0x00180050, "XX", b"SMITH^JOHN", "??"),  # not a VR
        (0x00101010, "AS", b"\xffSMITH", "AS"),
    ],
)
def test_undecodable_values_quarantine_with_a_phi_free_message(
    engine: Deidentifier, tag: int, vr: str, value: bytes, shown: str
) -> None:
    ds = _raw(reread(ct_dataset()), tag, vr, value)
    with pytest.raises(QuarantineError) as info:
        engine.apply(ds)
    err = info.value
    assert err.reason is QuarantineReason.BAD_VR
    assert err.message == (
        f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) with VR {shown} could not be decoded"
    )
    assert "SMITH" not in str(err)
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_bad_values_in_removed_elements_do_not_matter(engine: Deidentifier) -> None:
    ds = reread(ct_dataset())
    _raw(ds, 0x00291010, "XX", b"SMITH")  # private
    _raw(ds, 0x00321033, "LO", b"\xff\xfe")  # Requesting Service: X
    engine.apply(ds)
    assert 0x00291010 not in ds and 0x00321033 not in ds


def test_unexpected_failures_become_deid_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Deidentifier(KEY, get_profile("default"))

    def broken(value: str) -> str:
        raise ValueError(f"cannot hash {value} of DOE^JANE")

    monkeypatch.setattr(engine.pseudonymizer, "uid", broken)
    with pytest.raises(QuarantineError) as info:
        engine.apply(reread(ct_dataset()))
    assert info.value.reason is QuarantineReason.DEID_FAILED
    assert "DOE" not in str(info.value) and "ValueError" in str(info.value)


# -- speed --------------------------------------------------------------------


def test_apply_is_fast_on_a_512_ct(capsys: pytest.CaptureFixture[str]) -> None:
    """About 1 ms per 512x512 CT on the reference machine; the bound here is loose."""
    engine = Deidentifier(KEY, get_profile("default"))
    data = io.BytesIO()
    ct_dataset(rows=512).save_as(data, enforce_file_format=True)
    datasets = [dcmread(io.BytesIO(data.getvalue())) for _ in range(60)]
    engine.apply(datasets.pop())
    start = time.perf_counter()
    for ds in datasets:
        engine.apply(ds)
    per_instance = (time.perf_counter() - start) / len(datasets)
    with capsys.disabled():
        print(f"\napply() on a 512x512 CT: {per_instance * 1e3:.2f} ms")  # noqa: T201
    assert per_instance < 0.02


def test_raw_encoding_is_preserved_for_big_endian_values(engine: Deidentifier) -> None:
    ds = reread(ct_dataset())
    key = BaseTag(0x00280011)
    ds._dict[key] = RawDataElement(key, "US", 2, struct.pack(">H", 16), 0, False, False)
    engine.apply(ds)
    assert ds.get_item(0x00280011).value == struct.pack(">H", 16)  # kept verbatim


def test_sequences_of_items_that_become_empty_stay_valid(engine: Deidentifier) -> None:
    ds = ct_dataset()
    item = Dataset()
    item.add_new(0x00091001, "LO", "PrivateSecretValue")
    ds.DerivationImageSequence = Sequence([item])
    ds = reread(ds)
    engine.apply(ds)
    assert len(ds.DerivationImageSequence) == 1 and len(ds.DerivationImageSequence[0]) == 0


def test_apply_never_warns_or_logs_values(
    engine: Deidentifier, caplog: pytest.LogCaptureFixture
) -> None:
    ds = ct_dataset()
    ds = reread(ds)
    _raw(ds, 0x0020000E, "UI", b"fd996e46-6fa0-4593-9a23-e588aa5933a3")  # UUID, not a UID
    _raw(ds, 0x00081080, "LO", b"SMITH^JOHN" * 10)  # too long for LO: removed unread
    _raw(ds, 0x00101010, "AS", b"76 Y")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine.apply(ds)
    assert not caught
    assert not [r for r in caplog.records if "SMITH" in r.getMessage() or "fd99" in r.getMessage()]
    assert ds.SeriesInstanceUID.startswith("2.25.") and ds.PatientAge == "076Y"


def test_synthetic_archive_leaks_nothing(tmp_path: Path) -> None:
    """The archive of mida.dicom.sample plants PHI everywhere hospitals do."""
    sample = pytest.importorskip("mida.dicom.sample")
    out = tmp_path / "sample"
    manifest = sample.generate(out, 2, seed=3, ct_slices=2, ct_size=32, mr_slices=1, mr_size=32)
    engine = Deidentifier(KEY, get_profile("default"))
    planted = manifest.phi_strings()
    assert planted
    for rel in manifest.files:
        ds = dcmread(out / rel)
        engine.apply(ds)
        back = dcmread(io.BytesIO(output_bytes(ds)))
        text = "\n".join(str(e.value) for e in back.iterall()
                         if e.VR not in ("SQ", "OB", "OW", "OF", "OD", "UN"))  # fmt: skip
        left = [s for s in planted if s in text]
        assert not left, (rel, left)


def test_implicit_vr_bad_values_name_the_dictionary_vr(engine: Deidentifier) -> None:
    ds = reread(ct_dataset(), implicit=True)
    key = BaseTag(0x00280010)
    ds._dict[key] = RawDataElement(key, None, 3, b"\x01\x02\x03", 0, True, True)
    with pytest.raises(QuarantineError, match=r"element \(0028,0010\) with VR US could not"):
        engine.apply(ds)
