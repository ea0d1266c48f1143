"""Issue 3 "done when": references resolve, and intervals hold, in de-identified output.

Runs `mida deid run` over `mida sample` output (CT series whose slices
reference each other, a second CT study months later for even patients) and
compares with the originals through the keyed SOP Instance UID pseudonym.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pydicom
import pytest

from mida.deid import Pseudonymizer
from mida.dicom.sample import generate
from mida.ingest.deid_run import run_deid

KEY = b"c" * 32
Pair = tuple[pydicom.Dataset, pydicom.Dataset]
DATE_KEYWORDS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> list[Pair]:
    root = tmp_path_factory.mktemp("consistency")
    generate(root / "in", 4, ct_slices=3, ct_size=32, mr_slices=1, mr_size=32)
    report = run_deid([root / "in"], root / "out", KEY)
    # the ultrasound images (patients 0 and 3) go through OCR or quarantine;
    # every other instance must be written
    assert len(report.written) >= 20
    pseudo = Pseudonymizer(KEY)
    outputs = {p.stem: pydicom.dcmread(p) for p in (root / "out").iterdir()}
    out = []
    for path in sorted((root / "in").rglob("*.dcm")):
        original = pydicom.dcmread(path)
        new = outputs.get(pseudo.uid(str(original.SOPInstanceUID)))
        if new is not None:
            out.append((original, new))
    assert len(out) == len(report.written)
    return out


def _day(value: str) -> dt.date:
    return dt.datetime.strptime(value, "%Y%m%d").date()


def test_every_reference_resolves_within_the_output(
    pairs: list[Pair],
) -> None:
    instances = {str(new.SOPInstanceUID) for _, new in pairs}
    stored = {str(o.SOPInstanceUID) for o, _ in pairs}
    pseudo = Pseudonymizer(KEY)
    checked = 0
    for original, new in pairs:
        refs = {e.value for e in new.iterall() if e.keyword == "ReferencedSOPInstanceUID"}
        assert not refs & stored, "no original UID is left"
        image_refs = [
            item.ReferencedSOPInstanceUID
            for item in original.get("ReferencedImageSequence", [])
        ]
        for old in image_refs:
            assert old in stored
            assert pseudo.uid(old) in refs and pseudo.uid(old) in instances
            checked += 1
    assert checked >= 10
    # series and frames of reference stay shared exactly where they were
    for (o1, n1), (o2, n2) in itertools.combinations(pairs, 2):
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            if kw in o1 and kw in o2:
                assert (o1.get(kw) == o2.get(kw)) == (n1.get(kw) == n2.get(kw)), kw


def test_intervals_within_a_patient_hold_exactly_across_studies(
    pairs: list[Pair],
) -> None:
    by_patient: dict[str, list[Pair]] = {}
    for original, new in pairs:
        by_patient.setdefault(str(original.PatientID), []).append((original, new))
    multi_study = 0
    for items in by_patient.values():
        studies = {str(o.StudyInstanceUID) for o, _ in items}
        multi_study += len(studies) > 1
        dates = [
            (_day(o.get(kw)), _day(n.get(kw)))
            for o, n in items
            for kw in (*DATE_KEYWORDS, "PatientBirthDate")
            if o.get(kw) and n.get(kw)
        ]
        assert len(dates) >= len(items)
        for (o1, n1), (o2, n2) in itertools.combinations(dates, 2):
            assert n2 - n1 == o2 - o1
        shifts = {n - o for o, n in dates}
        assert len(shifts) == 1 and shifts != {dt.timedelta(0)}, "one non-zero shift per patient"
    assert multi_study >= 2, "the sample has patients with studies months apart"
    all_shifts = {n - o for items in by_patient.values() for o, n in
                  [(_day(items[0][0].StudyDate), _day(items[0][1].StudyDate))]}
    assert len(all_shifts) > 1, "patients get different offsets"
