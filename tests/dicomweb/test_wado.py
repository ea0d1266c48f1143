"""WADO-RS over HTTP with the real dicomweb-client: instances, metadata, frames, bulk data,
rendered images and thumbnails; OHIF's requests replayed and every answer parsed."""

from __future__ import annotations

import io
import json

import pydicom
import pytest
import requests
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.dicomweb.conftest import OHIF_FRAMES, Live, split_multipart
from tests.factories import PHI


def _ct(live: Live) -> tuple[str, str]:
    """A study and its CT series."""
    for study in live.studies("sample"):
        for se, modality in live.series_of(study):
            if modality == "CT":
                return study, se
    raise AssertionError("the sample has no CT series")


def _sop(live: Live, study: str, se: str) -> list[str]:
    client = live.client()
    rows = client.search_for_instances(study, se)  # type: ignore[attr-defined]
    return [r["00080018"]["Value"][0] for r in rows]


def _no_phi(data: bytes | str) -> None:
    blob = data.encode() if isinstance(data, str) else data
    for value in PHI.values():
        assert value.encode() not in blob
    assert b"Lin^Wen" not in blob


def test_retrieve_study_series_instance(live: Live) -> None:
    study, se = _ct(live)
    client = live.client()
    datasets = list(client.retrieve_study(study))  # type: ignore[attr-defined]
    n_study = sum(1 for _ in client.search_for_instances(study))  # type: ignore[attr-defined]
    assert len(datasets) == n_study
    for ds in datasets:
        assert ds.StudyInstanceUID == study
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert str(ds.PatientName) != PHI["name"] and ds.PatientID != PHI["pid"]
        _ = ds.pixel_array
    series = list(client.retrieve_series(study, se))  # type: ignore[attr-defined]
    assert {d.SeriesInstanceUID for d in series} == {se}
    sop = series[0].SOPInstanceUID
    one = client.retrieve_instance(study, se, sop)  # type: ignore[attr-defined]
    assert one.SOPInstanceUID == sop
    r = requests.get(f"{live.url}/studies/{study}", headers=live.headers(
        Accept='multipart/related; type="application/dicom"; transfer-syntax=*'), timeout=60)
    parts = split_multipart(r)
    assert len(parts) == n_study
    for headers, data in parts:
        assert headers["content-type"].startswith("application/dicom; transfer-syntax=1.2.840")
        _no_phi(data)
        pydicom.dcmread(io.BytesIO(data))


def test_retrieve_transfer_syntax_negotiation(live: Live) -> None:
    study, se = _ct(live)
    sop = _sop(live, study, se)[0]
    url = f"{live.url}/studies/{study}/series/{se}/instances/{sop}"
    r = requests.get(url, headers=live.headers(
        Accept=f'multipart/related; type="application/dicom"; '
               f'transfer-syntax={ImplicitVRLittleEndian}'), timeout=60)
    assert r.status_code == 200
    (_, data), = split_multipart(r)
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert ds.SOPInstanceUID == sop and ds.pixel_array.shape == (128, 128)
    r = requests.get(url, headers=live.headers(
        Accept='multipart/related; type="application/dicom"; '
               'transfer-syntax=1.2.840.10008.1.2.4.50'), timeout=60)
    assert r.status_code == 406 and "transfer-syntax=*" in r.json()["detail"]
    r = requests.get(url, headers=live.headers(Accept="image/png"), timeout=60)
    assert r.status_code == 406


def test_series_metadata_from_the_catalog_with_absolute_bulkdata_uris(live: Live) -> None:
    study, se = _ct(live)
    client = live.client()
    meta = client.retrieve_series_metadata(study, se)  # type: ignore[attr-defined]
    sops = _sop(live, study, se)
    assert [m["00080018"]["Value"][0] for m in meta] == sops  # instance number order
    _no_phi(json.dumps(meta))
    for m in meta:
        sop = m["00080018"]["Value"][0]
        uri = m["7FE00010"]["BulkDataURI"]
        assert uri == (f"{live.url}/studies/{study}/series/{se}/instances/{sop}"
                       "/bulkdata/7FE00010")
        ds = Dataset.from_json(m, bulk_data_uri_handler=lambda *_: b"")
        assert ds.StudyInstanceUID == study and ds.PatientID != PHI["pid"]
        assert str(ds.PatientName) != PHI["name"]
        assert "PatientAddress" not in ds and "PatientTelephoneNumbers" not in ds
    first = meta[0]
    pixels = client.retrieve_bulkdata(first["7FE00010"]["BulkDataURI"])  # type: ignore[attr-defined]
    inst = client.retrieve_instance(study, se, first["00080018"]["Value"][0])  # type: ignore[attr-defined]
    assert pixels == [inst.PixelData]
    single = requests.get(first["7FE00010"]["BulkDataURI"],
                          headers=live.headers(Accept="application/octet-stream"), timeout=60)
    assert single.status_code == 200 and single.content == inst.PixelData

    r = requests.get(f"{live.url}/studies/{study}/metadata", headers=live.headers(), timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom+json"
    whole = r.json()
    assert len(whole) == sum(1 for _ in client.search_for_instances(study))  # type: ignore[attr-defined]
    assert {m["0020000E"]["Value"][0] for m in whole} == {u for u, _ in live.series_of(study)}
    r = requests.get(f"{live.url}/studies/{study}/series/{se}/instances/{sops[0]}/metadata",
                     headers=live.headers(), timeout=60)
    assert r.status_code == 200 and len(r.json()) == 1 and r.json()[0] == meta[0]


def test_frames_native_and_in_ohifs_accept(live: Live) -> None:
    study, se = _ct(live)
    sop = _sop(live, study, se)[0]
    client = live.client()
    inst = client.retrieve_instance(study, se, sop)  # type: ignore[attr-defined]
    frames = client.retrieve_instance_frames(study, se, sop, [1])  # type: ignore[attr-defined]
    assert frames == [inst.PixelData]
    octet = client.retrieve_instance_frames(  # type: ignore[attr-defined]
        study, se, sop, [1], media_types=("application/octet-stream",))
    assert octet == [inst.PixelData]
    url = f"{live.url}/studies/{study}/series/{se}/instances/{sop}/frames/1"
    r = requests.get(url, headers=live.headers(Accept=OHIF_FRAMES), timeout=60)
    (headers, data), = split_multipart(r)
    assert headers["content-type"] == (
        f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}")
    assert data == inst.PixelData
    assert requests.get(url[:-1] + "2", headers=live.headers(), timeout=60).status_code == 404
    assert requests.get(url[:-1] + "0", headers=live.headers(), timeout=60).status_code == 400
    r = requests.get(url, headers=live.headers(Accept='multipart/related; type="image/jpeg"'),
                     timeout=60)
    assert r.status_code == 406


def test_rendered_and_windowing(live: Live) -> None:
    study, se = _ct(live)
    sop = _sop(live, study, se)[0]
    client = live.client()
    jpeg = client.retrieve_instance_rendered(study, se, sop)  # type: ignore[attr-defined]
    img = Image.open(io.BytesIO(jpeg))
    assert img.format == "JPEG" and img.size == (128, 128)
    png = client.retrieve_instance_rendered(  # type: ignore[attr-defined]
        study, se, sop, media_types=("image/png",), params={"viewport": "64,64"})
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (64, 64) and img.mode == "L"
    base = f"{live.url}/studies/{study}/series/{se}/instances/{sop}"
    narrow = requests.get(base + "/rendered", params={"window": "0,10", "accept": "image/png"},
                          headers=live.headers(), timeout=60)
    wide = requests.get(base + "/rendered",
                        params={"window": "0,4000,sigmoid", "accept": "image/png"},
                        headers=live.headers(), timeout=60)
    assert narrow.status_code == wide.status_code == 200
    assert narrow.content != wide.content
    frame = requests.get(base + "/frames/1/rendered", headers=live.headers(), timeout=60)
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"
    for params in ({"window": "1"}, {"window": "0,-5"}, {"viewport": "0,10"},
                   {"quality": "500"}, {"viewport": "a,b"}):
        assert requests.get(base + "/rendered", params=params, headers=live.headers(),
                            timeout=60).status_code == 400, params
    assert requests.get(base + "/rendered", params={"accept": "image/gif"},
                        headers=live.headers(), timeout=60).status_code == 406
    multi = requests.get(base + "/thumbnail", timeout=60, headers=live.headers(
        Accept='multipart/related; type="image/jpeg"'))  # dicomweb-client's multipart form
    ((headers, data),) = split_multipart(multi)
    assert headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(data)).format == "JPEG"


@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_thumbnails_as_ohif_asks(live: Live, level: str) -> None:
    study, se = _ct(live)
    sop = _sop(live, study, se)[0]
    path = {"study": f"/studies/{study}", "series": f"/studies/{study}/series/{se}",
            "instance": f"/studies/{study}/series/{se}/instances/{sop}"}[level]
    for params, headers, size in [({"accept": "image/jpeg"}, {}, 128),  # thumbnailDirect
                                  ({"viewport": "256,256"}, {"Accept": "image/jpeg"}, 256)]:
        r = requests.get(live.url + path + "/thumbnail", params=params,
                         headers=live.headers(**headers), timeout=60)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        img = Image.open(io.BytesIO(r.content))
        assert img.format == "JPEG" and max(img.size) == size


def test_ohif_series_metadata_request(live: Live) -> None:
    study, _ = _ct(live)
    r = requests.get(f"{live.url}/studies/{study}/series", headers=live.headers(
        Accept="application/dicom+json"), timeout=60)
    assert r.status_code == 200
    for row in r.json():
        uid = row["0020000E"]["Value"][0]
        m = requests.get(f"{live.url}/studies/{study}/series/{uid}/metadata",
                         headers=live.headers(Accept="application/dicom+json"), timeout=60)
        assert m.status_code == 200
        for item in m.json():
            ds = Dataset.from_json(item, bulk_data_uri_handler=lambda *_: b"")
            assert ds.SeriesInstanceUID == uid


def test_unknown_uids_are_404_for_a_node_wide_caller(live: Live) -> None:
    study, se = _ct(live)
    h = live.headers()
    for path in ["/studies/1.2.3", f"/studies/{study}/series/1.2.3/metadata",
                 f"/studies/{study}/series/{se}/instances/1.2.3/frames/1",
                 "/studies/1.2.3/metadata", "/studies/1.2.3/thumbnail"]:
        r = requests.get(live.url + path, headers=h, timeout=60)
        assert r.status_code == 404, path
