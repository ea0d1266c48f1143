"""The deterministic, threaded gzip of NIfTI files: any reader reads it, threads change nothing."""

from __future__ import annotations

import doctest
import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mida.datasets.nifti_convert import writer
from mida.datasets.nifti_convert.writer import gzip_bytes


def test_docstring_examples() -> None:
    assert doctest.testmod(writer).failed == 0


@pytest.mark.parametrize("size", [0, 1, 70_000, 300_001])
def test_every_size_round_trips_and_threads_change_no_byte(size: int) -> None:
    rng = np.random.default_rng(size)
    data = (rng.normal(0, 20, size // 2 + 1).astype(np.int16).tobytes())[:size]
    one = gzip_bytes(data, threads=1, chunk=1 << 16)
    assert gzip.decompress(one) == data
    assert one == gzip_bytes(data[:7], data[7:], threads=3, chunk=1 << 16)
    assert one[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # mtime 0, no name
    # one member: zlib's own gzip decoder stops at its end and finds nothing after it
    d = zlib.decompressobj(31)
    assert d.decompress(one) == data and d.eof and d.unused_data == b""


def test_chunks_cost_almost_nothing_in_size() -> None:
    rng = np.random.default_rng(0)
    data = (rng.normal(0, 12, (40, 256, 256)) + np.linspace(-900, 900, 256)).astype(
        np.int16).tobytes()
    chunked = gzip_bytes(data, chunk=1 << 20)
    plain = gzip.compress(data, compresslevel=6, mtime=0)
    assert len(chunked) <= len(plain) * 1.001


def test_nibabel_and_simpleitk_read_the_written_file(tmp_path: Path) -> None:
    arr = np.arange(64 * 64 * 300, dtype=np.int16).reshape(64, 64, 300) % 1000
    img = nib.Nifti1Image(arr, np.diag([0.5, 0.5, 2.0, 1.0]))
    head_and_data = writer.nifti_bytes(img)
    path = tmp_path / "v.nii.gz"
    path.write_bytes(gzip_bytes(*head_and_data, chunk=1 << 16))  # many chunks
    assert np.array_equal(np.asanyarray(nib.load(path).dataobj), arr)
    back = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert np.array_equal(np.transpose(back, (2, 1, 0)), arr)
