"""DICOMweb's access cases: no token, another collection's UIDs, read tokens storing,
hostile paths and query values."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import func, select

from mida.catalog.models import Instance, Study
from tests.dicomweb.conftest import Live


def _uids(live: Live, study: str) -> tuple[str, str]:
    rows = live.client().search_for_instances(study)  # type: ignore[attr-defined]
    return rows[0]["0020000E"]["Value"][0], rows[0]["00080018"]["Value"][0]


def _paths(study: str, series: str, sop: str) -> list[str]:
    inst = f"/studies/{study}/series/{series}/instances/{sop}"
    return [f"/studies/{study}", f"/studies/{study}/series/{series}", inst,
            f"/studies/{study}/metadata", f"/studies/{study}/series/{series}/metadata",
            inst + "/metadata", inst + "/frames/1", inst + "/bulkdata/7FE00010",
            inst + "/rendered", inst + "/frames/1/rendered", f"/studies/{study}/thumbnail",
            f"/studies/{study}/series/{series}/thumbnail", inst + "/thumbnail"]


def test_no_token_is_401_on_every_route_family(live: Live) -> None:
    study = live.studies("sample")[0]
    series, sop = _uids(live, study)
    gets = ["/studies", "/series", "/instances", f"/studies/{study}/series",
            f"/studies/{study}/instances", f"/studies/{study}/series/{series}/instances",
            *_paths(study, series, sop)]
    for path in gets:
        r = requests.get(live.url + path, timeout=60)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"].startswith("Bearer")
    for path in ["/studies", f"/studies/{study}"]:
        r = requests.post(live.url + path, data=b"x", timeout=60, headers={
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
        assert r.status_code == 401, path


def test_another_collections_uids_answer_like_missing_ones(live: Live) -> None:
    other = live.other_study
    series, sop = _uids(live, other)
    for path in _paths(other, series, sop):
        denied = requests.get(live.url + path, headers=live.headers(live.reader), timeout=60)
        missing = requests.get(live.url + path.replace(other, "1.2.3.4"),
                               headers=live.headers(live.reader), timeout=60)
        assert denied.status_code == missing.status_code == 403, path
        assert denied.content == missing.content, path
        # and the admin sees it
        assert requests.get(live.url + path, headers=live.headers(), timeout=60).ok, path
    # a readable study with another collection's series under it
    mine = live.studies("sample")[0]
    r = requests.get(f"{live.url}/studies/{mine}/series/{series}/metadata",
                     headers=live.headers(live.reader), timeout=60)
    assert r.status_code == 403


def test_searches_see_only_readable_collections(live: Live) -> None:
    client = live.client(live.reader)
    uids = {r["0020000D"]["Value"][0]
            for r in client.search_for_studies(get_remaining=True)}  # type: ignore[attr-defined]
    assert live.other_study not in uids and set(live.studies("sample")) <= uids
    for path in [f"/studies/{live.other_study}/series", f"/studies/{live.other_study}/instances",
                 f"/series?StudyInstanceUID={live.other_study}"]:
        r = requests.get(live.url + path, headers=live.headers(live.reader), timeout=60)
        assert r.status_code == 200 and r.json() == [], path


def test_a_read_token_cannot_store(live: Live) -> None:
    r = requests.post(live.url + "/studies", data=b"--b\r\n\r\nx\r\n--b--\r\n", timeout=60,
                      headers=live.headers(live.reader, **{
                          "Content-Type": 'multipart/related; type="application/dicom"; '
                                          "boundary=b"}))
    assert r.status_code == 403


def _raw_get(live: Live, path: str) -> tuple[int, bytes]:
    """GET a path exactly as written (no client-side normalisation of dots)."""
    u = urlsplit(live.url)
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=60)
    try:
        conn.request("GET", u.path + path, headers=live.headers())
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("path", [
    "/studies/../../etc/passwd", "/studies/..%2F..%2Fetc%2Fpasswd",
    "/studies/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/studies/%2e%2e/metadata",
    "/studies/1.2/series/..%2f..%2f/metadata",
    "/studies/1.2/series/1.3/instances/1.4/bulkdata/..%2f..%2fetc",
    "/studies/1.2/series/1.3/instances/1.4/frames/..%2f1",
    "/studies/1.2%00/metadata",
])
def test_path_traversal_in_uids_is_refused(live: Live, path: str) -> None:
    status, content = _raw_get(live, path)
    assert 400 <= status < 500, (path, status)
    assert b"root:" not in content


def test_sql_metacharacters_in_queries_match_nothing_and_change_nothing(live: Live) -> None:
    with live.node.catalog().session() as s:
        before = (s.scalar(select(func.count()).select_from(Study)),
                  s.scalar(select(func.count()).select_from(Instance)))
    h = live.headers()
    for params in [{"PatientID": "' OR 1=1 --"}, {"PatientName": "x'; DROP TABLE study; --"},
                   {"StudyDescription": "%' OR '1'='1"}, {"AccessionNumber": '"; --'}]:
        r = requests.get(live.url + "/studies", params=params, headers=h, timeout=60)
        assert r.status_code == 200 and r.json() == [], params
    for params in [{"StudyInstanceUID": "1' OR '1'='1"}, {"limit": "1; DROP TABLE study"},
                   {"Modality' OR 1=1 --": "CT"}]:
        r = requests.get(live.url + "/studies", params=params, headers=h, timeout=60)
        assert r.status_code == 400, params
    with live.node.catalog().session() as s:
        after = (s.scalar(select(func.count()).select_from(Study)),
                 s.scalar(select(func.count()).select_from(Instance)))
    assert after == before
