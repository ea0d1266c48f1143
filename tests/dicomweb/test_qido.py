"""QIDO-RS over HTTP with the real dicomweb-client: paging, OHIF's requests, parameters."""

from __future__ import annotations

import requests
from pydicom.dataset import Dataset

from tests.dicomweb.conftest import Live
from tests.factories import PHI


def _values(rows: list[dict], tag: str) -> list[object]:
    return [(r.get(tag, {}).get("Value") or [None])[0] for r in rows]


def test_studies_series_instances_with_paging(live: Live) -> None:
    client = live.client()
    studies = client.search_for_studies(limit=2, get_remaining=True)  # type: ignore[attr-defined]
    uids = _values(studies, "0020000D")
    assert sorted(uids) == sorted(live.studies(None))
    assert len(set(uids)) == len(uids)  # pages do not overlap
    for row in studies:
        ds = Dataset.from_json(row)
        assert ds.StudyInstanceUID.startswith("2.25.")
        assert ds.QueryRetrieveLevel == "STUDY"
    text = repr(studies)
    for value in PHI.values():
        assert value not in text

    study = live.studies("sample")[0]
    series = client.search_for_series(study, limit=1, get_remaining=True)  # type: ignore[attr-defined]
    assert sorted(_values(series, "0020000E")) == sorted(u for u, _ in live.series_of(study))
    all_series = client.search_for_series(limit=3, get_remaining=True)  # type: ignore[attr-defined]
    assert len(all_series) >= len(series) + 1

    se = live.series_of(study)[0][0]
    instances = client.search_for_instances(  # type: ignore[attr-defined]
        study, se, limit=1, get_remaining=True, fields=["ImageType"])
    assert len(instances) >= 1
    assert all(r["0020000E"]["Value"] == [se] for r in instances)
    assert all("00080008" in r for r in instances)  # includefield read from the stored JSON
    in_study = client.search_for_instances(study, get_remaining=True)  # type: ignore[attr-defined]
    assert len(in_study) >= len(instances)
    everywhere = client.search_for_instances(  # type: ignore[attr-defined]
        search_filters={"SeriesInstanceUID": se})
    assert len(everywhere) == len(instances)


def test_ohif_study_list_request_verbatim(live: Live) -> None:
    r = requests.get(
        live.url + "/studies?limit=101&offset=0&fuzzymatching=false"
        "&includefield=00081030,00080060",
        headers=live.headers(Accept="application/dicom+json"), timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/dicom+json"
    rows = r.json()
    assert len(rows) == min(101, len(live.studies(None)))
    for row in rows:
        ds = Dataset.from_json(row)
        assert "StudyDescription" in ds and "Modality" in ds
        assert ds.NumberOfStudyRelatedInstances >= 1
    assert "warning" not in {k.lower() for k in r.headers}


def test_limit_cut_gives_the_warning_header_and_offset_past_the_end_is_empty(live: Live) -> None:
    r = requests.get(live.url + "/studies", params={"limit": 1}, headers=live.headers(),
                     timeout=30)
    assert r.status_code == 200 and len(r.json()) == 1
    assert r.headers["warning"].startswith("299 ")
    assert "exceeded the maximum supported" in r.headers["warning"]
    r = requests.get(live.url + "/studies", params={"offset": 1000}, headers=live.headers(),
                     timeout=30)
    assert r.status_code == 200 and r.json() == []


def test_matching_by_keyword_tag_lists_and_includefield_all(live: Live) -> None:
    h = live.headers()
    ct = requests.get(live.url + "/studies", params={"ModalitiesInStudy": "CT"}, headers=h,
                      timeout=30).json()
    by_tag = requests.get(live.url + "/studies", params={"00080061": "CT"}, headers=h,
                          timeout=30).json()
    assert ct and ct == by_tag
    both = requests.get(live.url + "/studies", params={"ModalitiesInStudy": "CT,MR"}, headers=h,
                        timeout=30).json()
    assert len(both) >= len(ct)
    uid = _values(ct, "0020000D")[0]
    one = requests.get(live.url + "/studies",
                       params=[("StudyInstanceUID", uid), ("includefield", "all"),
                               ("includefield", "PatientSex")], headers=h, timeout=30).json()
    assert len(one) == 1 and "00080016" in one[0]  # all: attributes of a stored instance
    assert "7FE00010" not in one[0]
    fuzzy = requests.get(live.url + "/series", params={"Modality": "CT", "fuzzymatching": "true"},
                         headers=h, timeout=30)
    assert fuzzy.status_code == 200 and all(r["00080060"]["Value"] == ["CT"]
                                            for r in fuzzy.json())


def test_bad_parameters_are_400_with_a_clear_message(live: Live) -> None:
    h = live.headers()
    for params, words in [
        ({"limit": "ten"}, "limit"), ({"offset": "-1"}, "offset"),
        ({"fuzzymatching": "maybe"}, "fuzzymatching"), ({"Nonsense": "1"}, "unknown query"),
        ({"includefield": "NotAnAttribute"}, "includefield"),
        ({"StudyDate": "yesterday"}, "date"), ({"00081032.00080100": "X"}, "sequence"),
        ({"ImageType": "ORIGINAL"}, "not supported"),
    ]:
        r = requests.get(live.url + "/studies", params=params, headers=h, timeout=30)
        assert r.status_code == 400, params
        assert words in r.json()["detail"], (params, r.json())
    r = requests.get(live.url + "/studies/1.2.3/series", headers=h, timeout=30)
    assert r.status_code == 200 and r.json() == []  # an unknown study has no series
    r = requests.get(live.url + "/studies/x.y/series", headers=h, timeout=30)
    assert r.status_code == 400
