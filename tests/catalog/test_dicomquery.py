"""The one DICOM matcher behind QIDO-RS and C-FIND, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from mida.catalog.dicomquery import locate, search
from mida.catalog.models import Collection, Instance, Study
from mida.errors import MidaError
from mida.ingest import ingest_paths
from mida.node import Node
from tests.factories import PHI, write


@pytest.fixture
def loaded(any_node: Node, tmp_path: Path) -> Node:
    """Three patients: CT (2 series, 3 instances), MR+SR, and a CT in another collection."""
    a, b, c = generate_uid(), generate_uid(), generate_uid()
    se1, se2 = generate_uid(), generate_uid()
    for i, (se, n) in enumerate([(se1, 1), (se1, 2), (se2, 1)]):
        write(tmp_path / "a" / f"{i}.dcm", StudyInstanceUID=a, SeriesInstanceUID=se,
              InstanceNumber=n, SeriesNumber=1 if se == se1 else 2, StudyDate="20230110",
              StudyDescription="CT abdomen liver", PatientID="P1")
    write(tmp_path / "a" / "mr.dcm", StudyInstanceUID=b, Modality="MR", StudyDate="20240620",
          PatientID="P2", PatientName="Chen^Mei", StudyDescription="MR brain")
    write(tmp_path / "a" / "mr2.dcm", StudyInstanceUID=b, Modality="SR", StudyDate="20240620",
          PatientID="P2", PatientName="Chen^Mei", StudyDescription="MR brain")
    write(tmp_path / "b" / "0.dcm", StudyInstanceUID=c, StudyDate="20240101", PatientID="P3")
    ingest_paths(any_node, [tmp_path / "a"], "liver", workers=1)
    ingest_paths(any_node, [tmp_path / "b"], "other", workers=1)
    return any_node


def _ids(node: Node) -> dict[str, int]:
    with node.catalog().session() as s:
        return dict(s.execute(select(Collection.name, Collection.id)).all())


def _v(row: dict, tag: str) -> object:
    vals = row.get(tag, {}).get("Value")
    return vals[0] if vals else None


def test_studies_with_counts_defaults_and_deidentified_values(loaded: Node) -> None:
    with loaded.catalog().session() as s:
        res = search(s, "STUDY", {}, collection_ids=None)
    assert len(res.rows) == 3 and not res.more
    by_count = sorted(_v(r, "00201208") for r in res.rows)  # NumberOfStudyRelatedInstances
    assert by_count == [1, 2, 3]
    text = repr(res.rows)
    for value in PHI.values():
        assert value not in text
    for r in res.rows:
        assert str(_v(r, "0020000D")).startswith("2.25.")
        Dataset.from_json(r)  # valid DICOM JSON


def test_modalities_dates_wildcards_and_uid_lists(loaded: Node) -> None:
    with loaded.catalog().session() as s:
        mods = search(s, "STUDY", {"ModalitiesInStudy": "SR"}, collection_ids=None).rows
        assert len(mods) == 1 and set(mods[0]["00080061"]["Value"]) == {"MR", "SR"}
        assert len(search(s, "STUDY", {"ModalitiesInStudy": "CT\\MR"},
                          collection_ids=None).rows) == 3
        dates = sorted(d.strftime("%Y%m%d") for d in s.scalars(select(Study.StudyDate)))
        lo, hi = dates[0], dates[1]
        assert len(search(s, "STUDY", {"StudyDate": f"{lo}-{hi}"}, collection_ids=None).rows) == 2
        assert len(search(s, "STUDY", {"StudyDate": f"-{lo}"}, collection_ids=None).rows) == 1
        iso = f"{lo[:4]}-{lo[4:6]}-{lo[6:]}"
        assert len(search(s, "STUDY", {"00080020": iso}, collection_ids=None).rows) == 1
        assert len(search(s, "STUDY", {"StudyDescription": "*liver*"},
                          collection_ids=None).rows) == 1
        uids = list(s.scalars(select(Study.StudyInstanceUID)))
        got = search(s, "STUDY", {"StudyInstanceUID": "\\".join(uids[:2])}, collection_ids=None)
        assert {_v(r, "0020000D") for r in got.rows} == set(uids[:2])


def test_collections_limit_what_is_seen(loaded: Node) -> None:
    ids = _ids(loaded)
    with loaded.catalog().session() as s:
        assert len(search(s, "STUDY", {}, collection_ids=frozenset({ids["other"]})).rows) == 1
        assert search(s, "STUDY", {}, collection_ids=frozenset()).rows == []
        pats = search(s, "PATIENT", {}, collection_ids=frozenset({ids["other"]})).rows
        assert len(pats) == 1
        assert _v(pats[0], "00201200") == 1  # NumberOfPatientRelatedStudies


def test_series_and_instances_levels_scoped_and_paged(loaded: Node) -> None:
    with loaded.catalog().session() as s:
        study = s.scalar(select(Study.StudyInstanceUID).where(
            Study.StudyDescription.like("%liver%")))
        series = search(s, "SERIES", {}, collection_ids=None, study_uid=study).rows
        assert sorted(_v(r, "00201209") for r in series) == [1, 2]  # instances per series
        page1 = search(s, "IMAGE", {}, collection_ids=None, study_uid=study, limit=2)
        page2 = search(s, "IMAGE", {}, collection_ids=None, study_uid=study, limit=2, offset=2)
        assert page1.more and not page2.more
        got = [_v(r, "00080018") for r in page1.rows + page2.rows]
        assert len(set(got)) == 3
        assert len(search(s, "IMAGE", {"InstanceNumber": "2"}, collection_ids=None).rows) == 1


def test_includefield_from_stored_json_and_all(loaded: Node) -> None:
    with loaded.catalog().session() as s:
        rows = search(s, "STUDY", {}, collection_ids=None, include=["00180050", "ImageType"]).rows
        assert all("00180050" in r for r in rows)
        everything = search(s, "IMAGE", {}, collection_ids=None, include="all", limit=1).rows[0]
        assert "00280030" not in everything or everything["00280030"]["vr"] == "DS"
        assert "00281053" in everything  # RescaleSlope, from the stored JSON
        assert "7FE00010" not in everything


def test_fuzzy_person_name_and_case(loaded: Node) -> None:
    with loaded.catalog().session() as s:
        name = s.scalar(select(func.min(Instance.id)))
        assert name is not None
        pn = [r for r in search(s, "PATIENT", {}, collection_ids=None).rows if "00100010" in r
              and r["00100010"].get("Value")]
        if not pn:
            pytest.skip("the default profile leaves no patient name to match")
        value = pn[0]["00100010"]["Value"][0]["Alphabetic"]
        assert search(s, "PATIENT", {"PatientName": value.upper()}, collection_ids=None).rows
        assert search(s, "PATIENT", {"PatientName": value[:3].lower()}, collection_ids=None,
                      fuzzy=True).rows


@pytest.mark.parametrize("match", [
    {"PatientID": "' OR 1=1 --"}, {"StudyDescription": "%"}, {"AccessionNumber": "_"},
])
def test_sql_metacharacters_match_nothing(loaded: Node, match: dict[str, str]) -> None:
    with loaded.catalog().session() as s:
        assert search(s, "STUDY", match, collection_ids=None).rows == []
        assert s.scalar(select(func.count()).select_from(Study)) == 3


@pytest.mark.parametrize(("level", "match", "words"), [
    ("STUDY", {"ImageType": "ORIGINAL"}, "not supported at the STUDY level"),
    ("STUDY", {"NoSuchKeyword": "x"}, "unknown attribute"),
    ("STUDY", {"StudyDate": "2024-13-45x"}, "bad date"),
    ("STUDY", {"StudyInstanceUID": "1.2.3'; DROP"}, "bad UID"),
    ("SERIES", {"SeriesNumber": "one"}, "whole number"),
    ("FRAME", {}, "unknown query level"),
])
def test_bad_queries_say_what_is_wrong(loaded: Node, level: str, match: dict[str, str],
                                       words: str) -> None:
    with loaded.catalog().session() as s, pytest.raises(MidaError, match=words):
        search(s, level, match, collection_ids=None)


def test_locate_finds_blobs_within_allowed_collections(loaded: Node) -> None:
    ids = _ids(loaded)
    with loaded.catalog().session() as s:
        study = s.scalar(select(Study.StudyInstanceUID).where(
            Study.StudyDescription.like("%liver%")))
        found = locate(s, study_uid=study, collection_ids=None)
        assert len(found) == 3 and all(len(x.blob_sha256) == 64 for x in found)
        assert locate(s, study_uid=study, collection_ids=frozenset({ids["other"]})) == []
        one = locate(s, sop_uid=found[0].sop_instance_uid, collection_ids=None)
        assert [x.instance_id for x in one] == [found[0].instance_id]
