"""The fast DICOM JSON encoder gives exactly pydicom's answer."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from mida.dicom.json import to_json_dict
from tests.conftest import SHARED_DATA
from tests.factories import make_dataset


def _bulk(elem: object) -> str:
    return f"bulk/{int(elem.tag):08X}"  # type: ignore[attr-defined]


def _both(data: bytes) -> tuple[dict[str, object], dict[str, object]]:
    a = pydicom.dcmread(io.BytesIO(data))
    b = pydicom.dcmread(io.BytesIO(data))
    ref = a.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=_bulk)
    got = to_json_dict(b, bulk_data_threshold=1024, bulk_data_element_handler=_bulk)
    return ref, got


def test_small_dataset_matches_pydicom(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.ImageComments = "line one\\still one value"
    ds.PixelSpacing = [0.5, 0.75]
    ds.WindowCenter = ["40", "400"]
    p = tmp_path / "x.dcm"
    ds.save_as(p, enforce_file_format=True)
    ref, got = _both(p.read_bytes())
    assert got == ref
    assert got["7FE00010"] == {"vr": "OW", "InlineBinary": ref["7FE00010"]["InlineBinary"]}


def test_empty_and_nested() -> None:
    ds = Dataset()
    ds.AccessionNumber = ""
    item = Dataset()
    item.CodeValue = "T-62000"
    ds.AnatomicRegionSequence = [item]
    assert to_json_dict(ds) == ds.to_json_dict()


@pytest.mark.shared_data
def test_shared_corpora_match_pydicom() -> None:
    root = SHARED_DATA
    if not root.exists():
        pytest.skip(f"{root} is absent: the shared corpora exist only in CI and dev machines")
    n = 0
    mismatched = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in sorted((root / "dicom").rglob("*")) + sorted((root / "phi").rglob("*.dcm")):
            if not p.is_file():
                continue
            try:
                ref, got = _both(p.read_bytes())
            except Exception:
                continue  # not DICOM, or pydicom itself cannot encode it
            n += 1
            if got != ref:
                mismatched.append(p.name)
    assert n > 250
    assert mismatched == []
