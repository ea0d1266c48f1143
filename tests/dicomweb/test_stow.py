"""STOW-RS over HTTP: the real dicomweb-client stores synthetic instances with planted PHI
through the one ingest path; the status cases 200, 202, 409, 413, 415."""

from __future__ import annotations

import io
import json

import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from mida.catalog.models import Collection, Instance, Job, Provenance, QuarantineEntry, Study
from tests.dicomweb.conftest import Live
from tests.factories import PHI, make_dataset, make_token

BOUNDARY = "stow-test-boundary"
CT = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def encoded(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def body(*parts: bytes, part_type: str = "application/dicom") -> bytes:
    out = b""
    for p in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + p + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def post(live: Live, data: bytes, content_type: str = CT, token: str | None = None,
         path: str = "/studies", **params: str) -> requests.Response:
    return requests.post(live.url + path, data=data, params=params, timeout=120,
                         headers=live.headers(token, **{"Content-Type": content_type}))


def test_store_instances_with_the_client_deidentifies_and_records_a_job(live: Live) -> None:
    from dicomweb_client.api import DICOMwebClient

    study = generate_uid()
    datasets = [make_dataset(StudyInstanceUID=study, InstanceNumber=i) for i in (1, 2, 3)]
    for ds in datasets[1:]:
        ds.SeriesInstanceUID = datasets[0].SeriesInstanceUID
    client = DICOMwebClient(url=live.url, headers=live.headers())
    result = client.store_instances(datasets, additional_params={"collection": "stow-ok"})
    refs = result.ReferencedSOPSequence
    assert len(refs) == 3 and "FailedSOPSequence" not in result
    stored_study = result.RetrieveURL.rsplit("/", 1)[-1]
    assert stored_study.startswith("2.25.") and stored_study != study
    for ref in refs:
        assert ref.ReferencedSOPInstanceUID.startswith("2.25.")
        assert ref.ReferencedSOPInstanceUID not in {d.SOPInstanceUID for d in datasets}
        assert ref.RetrieveURL.startswith(f"{live.url}/studies/{stored_study}/series/")
    back = list(client.retrieve_study(stored_study))
    assert len(back) == 3
    for ds in back:
        assert str(ds.PatientName) != PHI["name"] and ds.PatientID != PHI["pid"]
        assert "PatientAddress" not in ds and "PatientTelephoneNumbers" not in ds
    meta = client.retrieve_study_metadata(stored_study)
    for value in PHI.values():
        assert value not in json.dumps(meta)
    with live.node.catalog().session() as s:
        job = s.scalars(select(Job).where(Job.kind == "stow").order_by(Job.id.desc())).first()
        assert job is not None and job.status == "done" and job.counts["stored"] == 3
        assert job.params["collection"] == "stow-ok"
        prov = s.scalars(select(Provenance.job_id).join(Instance)
                         .where(Instance.SOPInstanceUID == refs[0].ReferencedSOPInstanceUID))
        assert list(prov) == [job.id]
    # the same instances again: duplicates count as stored (200), same pseudonymous UIDs
    again = client.store_instances(datasets, additional_params={"collection": "stow-ok"})
    assert ([r.ReferencedSOPInstanceUID for r in again.ReferencedSOPSequence]
            == [r.ReferencedSOPInstanceUID for r in refs])


def test_partial_failure_is_202_with_a_failed_sop_sequence(live: Live) -> None:
    good = encoded(make_dataset())
    garbage = b"this is not DICOM at all, just bytes with Lin^Wen-Hsiung in them"
    r = post(live, body(good, garbage), collection="stow-partial")
    assert r.status_code == 202 and r.headers["content-type"] == "application/dicom+json"
    ds = Dataset.from_json(r.json())
    assert len(ds.ReferencedSOPSequence) == 1
    (failed,) = ds.FailedSOPSequence
    assert failed.FailureReason == 0xC000
    assert failed.ErrorComment == "not_dicom"
    assert "Lin" not in r.text
    with live.node.catalog().session() as s:
        reasons = set(s.scalars(select(QuarantineEntry.reason)))
    assert "not_dicom" in reasons


def test_nothing_stored_is_409(live: Live) -> None:
    r = post(live, body(b"junk one", b"junk two"), collection="stow-none")
    assert r.status_code == 409
    ds = Dataset.from_json(r.json())
    assert len(ds.FailedSOPSequence) == 2 and "ReferencedSOPSequence" not in ds


def test_study_path_refuses_instances_of_another_study(live: Live) -> None:
    study = generate_uid()
    mine = make_dataset(StudyInstanceUID=study)
    theirs = make_dataset()
    r = post(live, body(encoded(mine), encoded(theirs)), path=f"/studies/{study}",
             collection="stow-study")
    assert r.status_code == 202
    ds = Dataset.from_json(r.json())
    assert len(ds.ReferencedSOPSequence) == 1
    assert ds.FailedSOPSequence[0].FailureReason == 0xA900
    assert ds.FailedSOPSequence[0].ReferencedSOPInstanceUID == theirs.SOPInstanceUID


@pytest.mark.parametrize("content_type", [
    "application/dicom",
    f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}',
    f"multipart/form-data; boundary={BOUNDARY}",
    "",
])
def test_wrong_media_type_is_415(live: Live, content_type: str) -> None:
    r = post(live, body(encoded(make_dataset())), content_type, collection="stow-415")
    assert r.status_code == 415, r.text


def test_a_part_that_is_not_application_dicom_is_415_and_nothing_is_stored(live: Live) -> None:
    ds = make_dataset()
    data = body(encoded(ds)).replace(f"--{BOUNDARY}--".encode(), b"") + (
        f"--{BOUNDARY}\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n--{BOUNDARY}--\r\n"
        .encode())
    r = post(live, data, collection="stow-415-part")
    assert r.status_code == 415 and "part 2" in r.json()["detail"]
    with live.node.catalog().session() as s:
        assert s.scalar(select(Collection.id).where(Collection.name == "stow-415-part")) is None


def test_malformed_bodies_are_400(live: Live) -> None:
    good = encoded(make_dataset())
    truncated = body(good)[:-30]
    assert post(live, truncated, collection="stow-400").status_code == 400
    assert post(live, b"no boundary here", collection="stow-400").status_code == 400
    assert post(live, b"", collection="stow-400").status_code == 400
    no_boundary = 'multipart/related; type="application/dicom"'
    assert post(live, body(good), no_boundary, collection="stow-400").status_code == 400


def test_oversized_body_is_413_by_length_and_while_reading(live: Live,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live.node.settings, "stow_max_bytes", 2000)
    data = body(encoded(make_dataset()), encoded(make_dataset()))
    assert len(data) > 2000
    r = post(live, data, collection="stow-413")
    assert r.status_code == 413 and "MIDA_STOW_MAX_BYTES" in r.json()["detail"]

    def chunks():  # no Content-Length: the count while reading stops it
        for i in range(0, len(data), 500):
            yield data[i:i + 500]

    r = requests.post(live.url + "/studies", data=chunks(), params={"collection": "stow-413"},
                      headers=live.headers(**{"Content-Type": CT}), timeout=120)
    assert r.status_code == 413
    with live.node.catalog().session() as s:
        assert s.scalar(select(Collection.id).where(Collection.name == "stow-413")) is None


def test_write_rights(live: Live) -> None:
    data = body(encoded(make_dataset()))
    r = post(live, data, token=live.reader, collection="sample")
    assert r.status_code == 403
    writer = make_token(live.node, "wes", "service", "write", "sample", grant="write")
    assert post(live, data, token=writer, collection="new-place").status_code == 403
    r = post(live, data, token=writer, collection="sample")
    assert r.status_code == 200
    with live.node.catalog().session() as s:
        assert s.scalar(select(Collection.id).where(Collection.name == "new-place")) is None
        uid = r.json()["00081190"]["Value"][0].rsplit("/", 1)[-1]
        assert s.scalar(select(Collection.name).join(Study)
                        .where(Study.StudyInstanceUID == uid)) == "sample"
