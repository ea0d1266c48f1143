"""The fast Part 10 encoder writes exactly what pydicom's save_as writes."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian

from mida.deid import Deidentifier, get_profile
from mida.dicom.write import _fast_ok, encode
from tests.conftest import SHARED_DATA
from tests.factories import make_dataset

KEY = b"w" * 32


def _pair(data: bytes) -> tuple[bytes, bytes, bool]:
    engine = Deidentifier(KEY, get_profile("default"))
    a = pydicom.dcmread(io.BytesIO(data))
    b = pydicom.dcmread(io.BytesIO(data))
    engine.apply(a)
    engine.apply(b)
    ref = io.BytesIO()
    a.save_as(ref, enforce_file_format=True)
    return ref.getvalue(), encode(b), _fast_ok(b)


def _bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_same_bytes_as_pydicom_fast_path() -> None:
    ref, got, fast = _pair(_bytes(make_dataset()))
    assert fast and got == ref


def test_other_encodings_use_pydicom() -> None:
    ds = make_dataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ref, got, fast = _pair(_bytes(ds))
    assert not fast and got == ref


@pytest.mark.shared_data
def test_same_bytes_as_pydicom_on_shared_corpora() -> None:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} is absent: shared corpora exist only in CI and dev machines")
    n = fast_n = 0
    different: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = [*sorted((SHARED_DATA / "dicom").rglob("*")),
                 *sorted((SHARED_DATA / "phi").rglob("*"))]
        for p in paths:
            if not p.is_file():
                continue
            try:
                ref, got, fast = _pair(Path(p).read_bytes())
            except Exception:
                continue  # not DICOM or not writable by pydicom either
            n += 1
            fast_n += fast
            if got != ref:
                different.append(p.name)
    assert n > 250 and fast_n > 200
    assert different == []
