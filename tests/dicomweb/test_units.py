"""The framework-free pieces: multipart reading, Accept negotiation, windowing, rendering."""

from __future__ import annotations

import doctest
import importlib
import io

import numpy as np
import pytest
from PIL import Image

from mida.dicomweb import render
from mida.dicomweb.multipart import (
    DicomWebError,
    MultipartReader,
    PayloadTooLargeError,
    multipart_body,
    parse_accept,
)
from mida.dicomweb.qido import parse_query
from mida.dicomweb.wado import frame_format
from tests.factories import make_dataset


@pytest.mark.parametrize("name", ["mida.dicomweb.multipart", "mida.dicomweb.wado"])
def test_docstring_examples(name: str) -> None:
    assert doctest.testmod(importlib.import_module(name)).failed == 0


def _read(body: bytes, step: int, boundary: str = "b0und", limit: int = 1 << 20) -> list[bytes]:
    reader = MultipartReader(boundary, limit)
    for i in range(0, len(body), step):
        reader.feed(body[i:i + step])
    parts = reader.close()
    out = [p.read() for p in parts]
    reader.discard()
    return out


def test_reader_gets_the_same_parts_whatever_the_chunking() -> None:
    payloads = [b"first\r\n--b0un", b"", b"\r\n\r\nthird--b0und-ish", bytes(range(256)) * 20]
    body = b"preamble\r\n" + b"".join(multipart_body(
        [("application/dicom", [p]) for p in payloads], "b0und")) + b"epilogue"
    for step in (1, 2, 3, 7, 64, 1000, len(body)):
        assert _read(body, step) == payloads, step


def test_reader_limits_and_malformed_bodies() -> None:
    body = b"".join(multipart_body([("application/dicom", [b"x" * 100])], "b0und"))
    with pytest.raises(PayloadTooLargeError):
        _read(body, 10, limit=50)
    with pytest.raises(DicomWebError, match="truncated"):
        _read(body[:-10], 10)
    with pytest.raises(DicomWebError, match="no multipart"):
        _read(b"nothing to see", 4)
    headerless = b"--b0und\r\n\r\ndata\r\n--b0und--"
    assert _read(headerless, 3) == [b"data"]


def test_accept_ranges_and_frame_formats() -> None:
    ranges = parse_accept('multipart/related; type="image/jp2";q=0.2, '
                          "multipart/related; type=application/octet-stream; transfer-syntax=*")
    assert [r.part_type for r in ranges] == ["application/octet-stream", "image/jp2"]
    j2k = "1.2.840.10008.1.2.4.90"
    f = frame_format(j2k, ranges, 1)
    assert (f.mode, f.media_type, f.transfer_syntax) == ("passthrough", "application/octet-stream",
                                                         j2k)
    f = frame_format(j2k, parse_accept('multipart/related; type="application/octet-stream"'), 1)
    assert f.mode == "decode" and f.transfer_syntax == "1.2.840.10008.1.2.1"
    f = frame_format(j2k, parse_accept(None), 2)
    assert (f.mode, f.media_type) == ("passthrough", "image/jp2")
    f = frame_format("1.2.840.10008.1.2.1", parse_accept("application/octet-stream"), 1)
    assert f.single and f.mode == "native"
    with pytest.raises(DicomWebError) as exc:
        frame_format("1.2.840.10008.1.2.1", parse_accept('multipart/related; type="image/jpeg"'), 1)
    assert exc.value.status == 406
    with pytest.raises(DicomWebError):  # single part for several frames: no
        frame_format("1.2.840.10008.1.2.1", parse_accept("application/octet-stream"), 2)


def test_qido_parameters() -> None:
    q = parse_query([("includefield", "00081030,00080060"), ("includefield", "all"),
                     ("limit", "5000"), ("offset", "3"), ("fuzzymatching", "TRUE"),
                     ("ModalitiesInStudy", "CT,MR"), ("00100020", "A*"), ("PatientName", ""),
                     ("SOPClassUID", "1.2"), ("SOPClassUID", "1.3"), ("charset", "utf-8")])
    assert q.include == ["00081030", "00080060", "all"]
    assert (q.limit, q.offset, q.fuzzy) == (1000, 3, True)
    assert q.match == {"ModalitiesInStudy": "CT\\MR", "PatientID": "A*", "PatientName": "",
                       "SOPClassUID": "1.2\\1.3"}
    assert parse_query([("StudyDescription", "a,b")]).match == {"StudyDescription": "a,b"}


def test_windowing_follows_ps33() -> None:
    x = np.array([-100.0, -50.0, 0.0, 49.0, 50.0, 100.0])
    out = render.window_to_8bit(x, 0.0, 100.0, "linear")
    assert out[0] == 0 and out[-1] == 255 and 120 < out[2] < 135
    exact = render.window_to_8bit(x, 0.0, 100.0, "linear-exact")
    assert list(exact[[0, 1, 4, 5]]) == [0, 0, 255, 255] and exact[2] == 127.5
    sig = render.window_to_8bit(x, 0.0, 100.0, "sigmoid")
    assert sig[2] == 127.5 and np.all(np.diff(sig) > 0)


def _render(ds: object, **query: str) -> np.ndarray:
    params = render.parse_params({**query, "accept": "image/png"}, None)
    data = render.render_frame(ds, 0, params)  # type: ignore[arg-type]
    return np.asarray(Image.open(io.BytesIO(data)))


def test_rendering_uses_rescale_window_and_photometric() -> None:
    ds = make_dataset()  # 16x16, values 0..765 step 3, intercept -1024
    minmax = _render(ds)
    assert minmax.min() == 0 and minmax.max() == 255
    # window in Hounsfield units: the rescale applies first (stored 0 is -1024 HU)
    hu = _render(ds, window="-700,200")
    assert hu.ravel()[0] == 0 and hu.ravel()[-1] == 255
    stored_units = _render(ds, window="400,200")  # as if no rescale: would differ
    assert not np.array_equal(hu, stored_units)
    ds.WindowCenter, ds.WindowWidth = -700, 200
    assert np.array_equal(_render(ds), hu)  # the dataset's own window by default
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert np.array_equal(_render(ds), 255 - hu)
    small = _render(ds, viewport="8,4")
    assert small.shape == (4, 4)
