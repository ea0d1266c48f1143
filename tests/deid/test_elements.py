"""Element writes are encoded exactly as pydicom would read them back."""

from __future__ import annotations

import io
from typing import BinaryIO, cast

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_sequence

from mida.deid.elements import encode_items, put, read_string, read_values

from .builders import ct_dataset, output_bytes, reread


@pytest.mark.parametrize("encoding", [(False, True), (True, True), (False, False)])
def test_encoded_items_parse_back(encoding: tuple[bool, bool]) -> None:
    items = [[(0x00080100, "SH", "113100"), (0x00080102, "SH", "DCM"),
              (0x00080104, "LO", "Basic Application Confidentiality Profile")]]  # fmt: skip
    data = encode_items(items, encoding)
    fp = cast(BinaryIO, DicomBytesIO(data))
    seq = read_sequence(fp, encoding[0], encoding[1], len(data), "iso8859")
    assert [(e.CodeValue, e.CodingSchemeDesignator) for e in seq] == [("113100", "DCM")]
    assert seq[0].CodeMeaning == "Basic Application Confidentiality Profile"


@pytest.mark.parametrize(
    ("tag", "vr", "value", "expected"),
    [
        (0x0020000D, "UI", "2.25.1", "2.25.1"),  # odd length: NUL padded
        (0x00080020, "DA", ["20240101", "20240102"], ["20240101", "20240102"]),
        (0x00280010, "US", 0, 0),
        (0x00189306, "FD", 0.0, 0.0),
        (0x00080050, "SH", None, ""),
        (0x00100010, "PN", "ANONYMOUS", "ANONYMOUS"),
    ],
)
def test_put_writes_raw_values_that_read_back(
    tag: int, vr: str, value: object, expected: object
) -> None:
    ds = reread(ct_dataset())
    put(ds, tag, vr, value, ds.get_item(tag), (False, True))  # type: ignore[arg-type]
    back = dcmread(io.BytesIO(output_bytes(ds)))
    assert back[tag].value == expected


def test_put_falls_back_to_pydicom_for_non_ascii_and_new_datasets() -> None:
    ds = Dataset()
    put(ds, 0x00081030, "LO", "Étude", None, None)
    put(ds, 0x00080050, "SH", None, None, None)
    assert ds.StudyDescription == "Étude" and ds.AccessionNumber == ""


def test_read_values_and_strings() -> None:
    ds = reread(ct_dataset())
    assert read_values(ds.get_item(0x00080008)) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert read_string(ds.get_item(0x00100020), ["iso8859"]) == "PID-000123"
    assert read_string(None, ["iso8859"]) == ""
    code_built = ct_dataset()
    assert read_values(code_built["StudyDate"]) == ["20240315"]
