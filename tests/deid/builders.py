"""Small DICOM datasets with planted identifiers, built in code for the deid tests.

Every identifying value planted here is listed in :data:`PLANTED`, so a test
can assert that none survives. Datasets go through bytes (:func:`reread`)
before de-identification, as in ingest, so the engine sees raw elements.
"""

from __future__ import annotations

import io

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

from mida.deid import Profile, get_profile

KEY = b"mida-test-key-0123456789abcdef!!"


def default_without(option: str, name: str) -> Profile:
    """The default research profile less `option`: the "without the option" baseline."""
    base = get_profile("default")
    return Profile(name, "1", options=base.options - {option}, overrides=base.overrides)
OTHER_KEY = b"another-test-key-0123456789abcd!"

ROOT = "1.2.826.0.1.3680043.8.498."  # a registered root of test UIDs

PLANTED = (
    "DOE^JANE^Q",
    "DOE",
    "JANE",
    "PID-000123",
    "HOSPITAL-A",
    "ALIAS-777",
    "19470214",
    "221B Baker Street",
    "+44-20-7946-0000",
    "St Elsewhere General",
    "1 Hospital Road",
    "HOUSE^GREGORY",
    "ACC-42-9999",
    "Scanned after the fall at home",
    "CT-ROOM-7",
    "SN-0042-XYZ",
    "PrivateSecretValue",
    "Nested private note",
    "WATSON^JOHN",
    "Deeply nested comment",
)


def uid(suffix: str) -> UID:
    """A UID of the test root."""
    return UID(ROOT + suffix)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def ct_dataset(
    *,
    patient_id: str = "PID-000123",
    issuer: str = "HOSPITAL-A",
    name: str = "DOE^JANE^Q",
    study: str = "1",
    series: str = "1.1",
    instance: str = "1.1.1",
    study_date: str = "20240315",
    references: tuple[str, ...] = (),
    age: str = "076Y",
    rows: int = 16,
) -> FileDataset:
    """A small CT instance with PHI planted where hospital systems put it.

    Parameters
    ----------
    patient_id, issuer, name
        The patient.
    study, series, instance
        Suffixes of the Study, Series and SOP Instance UIDs under :data:`ROOT`.
    study_date
        Study date; acquisition and content dates follow it.
    references
        Suffixes of SOP Instance UIDs referenced in Referenced Image Sequence
        and Source Image Sequence.
    age
        Patient's Age (AS).
    rows
        Rows and Columns of the (zero) pixel data.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = uid(instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = uid("999")
    meta.ImplementationVersionName = "SCANNER_1"
    meta.SourceApplicationEntityTitle = "CT-ROOM-7"
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\x00" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uid(instance)
    ds.StudyDate = study_date
    ds.SeriesDate = study_date
    ds.AcquisitionDate = study_date
    ds.ContentDate = study_date
    ds.AcquisitionDateTime = study_date + "101500.25+0100"
    ds.StudyTime = "101010"
    ds.ContentTime = "101530.5"
    ds.AccessionNumber = "ACC-42-9999"
    ds.Modality = "CT"
    ds.Manufacturer = "ACME"
    ds.InstitutionName = "St Elsewhere General"
    ds.InstitutionAddress = "1 Hospital Road"
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.StationName = "CT-ROOM-7"
    ds.StudyDescription = "Scanned after the fall at home"
    ds.ProcedureCodeSequence = [
        _code("77477000", "SCT", "CT of head"),
        _code("ER-77", "99LOCAL", "WATSON^JOHN head CT"),
    ]
    ds.ReferencedImageSequence = [
        _ref(r) for r in references
    ]
    ds.SourceImageSequence = [_ref(r) for r in references]
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = issuer
    ds.PatientBirthDate = "19470214"
    ds.PatientSex = "F"
    ds.PatientAge = age
    ds.PatientSize = "1.62"
    ds.PatientWeight = "58"
    ds.OtherPatientIDsSequence = [_other_id()]
    ds.PatientAddress = "221B Baker Street"
    ds.PatientTelephoneNumbers = "+44-20-7946-0000"
    ds.SmokingStatus = "NO"
    ds.DeviceSerialNumber = "SN-0042-XYZ"
    ds.BodyPartExamined = "HEAD"
    ds.SliceThickness = "1.25"
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    ds.ProtocolName = "HEAD ROUTINE for JANE"
    ds.StudyInstanceUID = uid(study)
    ds.SeriesInstanceUID = uid(series)
    ds.StudyID = "S-1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = ["0", "0", "0"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = uid(study + ".0")
    ds.SliceLocation = "0"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = rows
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 1
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    block = ds.private_block(0x0009, "ACME 1.0", create=True)
    block.add_new(0x01, "LO", "PrivateSecretValue")
    block.add_new(0x02, "SQ", Sequence([_private_item()]))
    ds.PixelData = np.zeros((rows, rows), np.int16).tobytes()
    return ds


def _ref(suffix: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = uid(suffix)
    return item


def _other_id() -> Dataset:
    item = Dataset()
    item.PatientID = "ALIAS-777"
    item.IssuerOfPatientID = "HOSPITAL-B"
    item.TypeOfPatientID = "TEXT"
    return item


def _private_item() -> Dataset:
    item = Dataset()
    item.PatientName = "WATSON^JOHN"
    block = item.private_block(0x0011, "ACME 1.0", create=True)
    block.add_new(0x01, "LT", "Nested private note")
    return item


def deep_sequence(depth: int, leaf: Dataset) -> Sequence:
    """Nest `leaf` `depth` levels deep in Derivation Image Sequences.

    Derivation Image Sequence (0008,9124) is not in Table E.1-1, so the
    engine enters it and filters its items like any other dataset.
    """
    seq = Sequence([leaf])
    for _ in range(depth - 1):
        item = Dataset()
        item.DerivationImageSequence = seq  # (0008,9124): not in Table E.1-1
        seq = Sequence([item])
    return seq


def to_bytes(ds: Dataset, *, implicit: bool = False) -> bytes:
    """Encode `ds` as a Part 10 file."""
    buf = io.BytesIO()
    if implicit:
        ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2")
        ds.save_as(buf, implicit_vr=True, little_endian=True, enforce_file_format=True)
    else:
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def reread(ds: Dataset, *, implicit: bool = False) -> FileDataset:
    """Write `ds` to bytes and read it back: elements are raw, as in ingest."""
    return dcmread(io.BytesIO(to_bytes(ds, implicit=implicit)))


def output_bytes(ds: Dataset) -> bytes:
    """The de-identified dataset as it would be stored."""
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()
