"""Attribute types by IOD, read from the standard's tables that highdicom ships."""

from __future__ import annotations

import pytest
from pydicom.uid import (
    CTImageStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
)

from mida.deid.iod import iod_name, iod_types, type_of


@pytest.mark.parametrize(
    ("sop_class", "keyword", "expected"),
    [
        (CTImageStorage, "StudyInstanceUID", "1"),
        (CTImageStorage, "PatientID", "2"),
        (CTImageStorage, "AccessionNumber", "2"),
        (CTImageStorage, "ContentDate", "2C"),
        (CTImageStorage, "InstitutionName", "3"),
        (CTImageStorage, "KVP", "2"),
        (MRImageStorage, "EchoTime", "2"),
        (UltrasoundImageStorage, "Modality", "1"),
    ],
)
def test_known_types(sop_class: str, keyword: str, expected: str) -> None:
    assert type_of(sop_class, keyword) == expected


def test_unknown_sop_class_and_attribute() -> None:
    assert iod_types("1.2.3.4") is None
    assert type_of("1.2.3.4", "PatientID") is None
    assert type_of(CTImageStorage, "NotAnAttribute") is None


def test_strictest_type_wins_across_modules() -> None:
    # Modality is Type 1 in General Series; other modules of the CT IOD may list it too.
    assert type_of(CTImageStorage, "Modality") == "1"
    types = iod_types(SecondaryCaptureImageStorage)
    assert types is not None and types["SOPInstanceUID"] == "1"


def test_iod_names() -> None:
    assert iod_name(CTImageStorage) == "ct-image"
    assert iod_name("1.2.3") is None
