"""Compressed and big endian instances from ../shared/data through frames, retrieve and
rendered: frames as stored match the original's fragments, decoded ones its pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import func, select

from mida.catalog.models import Instance, Series, Study
from mida.ingest import ingest_paths
from tests.conftest import shared
from tests.dicomweb.conftest import OHIF_FRAMES, Live, split_multipart

pytestmark = pytest.mark.shared_data

FILES = ["emri_small_jpeg_2k_lossless.dcm",  # MR, 10 frames, JPEG 2000 lossless
         "MR2_J2KI.dcm",  # MR, JPEG 2000 lossy
         "693_J2KR.dcm",  # CT, JPEG 2000 lossless
         "SC_rgb_expb_2frame.dcm"]  # RGB, 2 frames, explicit VR big endian


@pytest.fixture(scope="module")
def stored(live: Live) -> dict[str, tuple[Path, str]]:
    """Original file -> (path, instance URL) for each file ingested."""
    out = {}
    for name in FILES:
        path = shared("dicom", "pydicom_data", name)
        with live.node.catalog().session() as s:
            before = s.scalar(select(func.max(Instance.id)))
        ingest_paths(live.node, [path], "compressed", workers=1)
        with live.node.catalog().session() as s:
            row = s.execute(select(Instance.SOPInstanceUID, Series.SeriesInstanceUID,
                                   Study.StudyInstanceUID).select_from(Instance)
                            .join(Series, Series.id == Instance.series_id)
                            .join(Study, Study.id == Series.study_id)
                            .where(Instance.id > (before or 0))).first()
        assert row is not None, f"{name} was not stored"
        sop, se, st = row
        out[name] = (path, f"{live.url}/studies/{st}/series/{se}/instances/{sop}")
    return out


def _original(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path)


@pytest.mark.parametrize("name", FILES[:3])
def test_compressed_frames_as_stored_and_decoded(live: Live, stored: dict, name: str) -> None:
    path, url = stored[name]
    orig = _original(path)
    ts = str(orig.file_meta.TransferSyntaxUID)
    n = int(orig.get("NumberOfFrames") or 1)
    wanted = [1, n] if n > 1 else [1]
    frames = ",".join(map(str, wanted))
    r = requests.get(f"{url}/frames/{frames}", headers=live.headers(Accept=OHIF_FRAMES),
                     timeout=120)
    assert r.status_code == 200
    parts = split_multipart(r)
    assert len(parts) == len(wanted)
    for (headers, data), number in zip(parts, wanted, strict=True):
        assert headers["content-type"] == f"application/octet-stream; transfer-syntax={ts}"
        assert data == get_frame(orig.PixelData, number - 1, number_of_frames=n)
    # the client's default (*/*): the frame's own media type
    client = live.client()
    st, se, sop = url.split("/studies/")[1].replace("/series/", " ").replace(
        "/instances/", " ").split()
    native = client.retrieve_instance_frames(st, se, sop, wanted)  # type: ignore[attr-defined]
    assert native[0] == parts[0][1]
    # octet-stream without a transfer syntax: decoded to native little endian
    decoded = client.retrieve_instance_frames(  # type: ignore[attr-defined]
        st, se, sop, wanted, media_types=("application/octet-stream",))
    for data, number in zip(decoded, wanted, strict=True):
        expected = pixel_array(orig, index=number - 1)
        assert data == expected.astype(expected.dtype.newbyteorder("<")).tobytes()
    # the whole instance: as stored (the client's default, transfer-syntax=*), or decompressed
    assert client.retrieve_instance(  # type: ignore[attr-defined]
        st, se, sop).file_meta.TransferSyntaxUID == ts
    ds = client.retrieve_instance(  # type: ignore[attr-defined]
        st, se, sop, media_types=(("application/dicom", str(ExplicitVRLittleEndian)),))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPInstanceUID == sop
    assert np.array_equal(ds.pixel_array, orig.pixel_array)
    # rendered, last frame
    img = requests.get(f"{url}/frames/{n}/rendered", params={"viewport": "64,64"},
                       headers=live.headers(), timeout=120)
    assert img.status_code == 200
    pic = Image.open(io.BytesIO(img.content))
    assert pic.format == "JPEG" and max(pic.size) == 64


def test_big_endian_rgb_frames_and_rendering(live: Live, stored: dict) -> None:
    path, url = stored["SC_rgb_expb_2frame.dcm"]
    orig = _original(path)
    r = requests.get(f"{url}/frames/2", headers=live.headers(Accept=OHIF_FRAMES), timeout=120)
    (headers, data), = split_multipart(r)
    assert headers["content-type"].endswith(f"transfer-syntax={ExplicitVRLittleEndian}")
    expected = pixel_array(orig, index=1)
    assert data == expected.astype(expected.dtype.newbyteorder("<")).tobytes()
    png = requests.get(f"{url}/rendered", params={"accept": "image/png"},
                       headers=live.headers(), timeout=120)
    pic = Image.open(io.BytesIO(png.content))
    assert pic.mode == "RGB" and pic.size == (int(orig.Columns), int(orig.Rows))
    assert np.array_equal(np.asarray(pic), pixel_array(orig, index=0))
    part = requests.get(url, headers=live.headers(
        Accept='multipart/related; type="application/dicom"'), timeout=120)
    ((_, blob),) = split_multipart(part)
    ds = pydicom.dcmread(io.BytesIO(blob))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(ds.pixel_array, orig.pixel_array)
