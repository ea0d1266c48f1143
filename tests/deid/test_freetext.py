"""Free-text cleaning: per-detector cases and a labelled precision/recall set.

``data/freetext_labelled.jsonl`` holds synthetic radiology descriptions,
comments and requests (English, Traditional Chinese, mixed), each with its
identifying spans ``[start, end, kind]``. No real person is named; national
IDs are generated with valid check digits.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from mida.deid import Deidentifier, Profile, get_profile
from mida.deid.freetext import CleanResult, FreeTextCleaner, Span
from tests.deid.builders import KEY, ct_dataset, output_bytes, reread

LABELLED = Path(__file__).parent / "data" / "freetext_labelled.jsonl"
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[.'/-][A-Za-z0-9]+)*|[\u3400-\u9fff]")

# Thresholds. A missed identifier is a privacy failure, so recall is held
# high on every kind; a false positive only loses a clinical word, so
# precision and retention may be a little lower. The measured figures are in
# the report of the change that added this test.
MIN_RECALL = 0.95
MIN_PRECISION = 0.9
MIN_RETENTION = 0.95


@pytest.fixture(scope="module")
def cleaner() -> FreeTextCleaner:
    return FreeTextCleaner()


def _load() -> list[tuple[str, list[tuple[int, int, str]]]]:
    rows = []
    for line in LABELLED.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows.append((row["text"], [(int(s), int(e), str(k)) for s, e, k in row["phi"]]))
    return rows


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def measure(cleaner: FreeTextCleaner) -> tuple[dict[str, tuple[int, int]], int, int, float]:
    """Return per-kind ``(found, n)``, detected spans, true detections, retention."""
    per_kind: dict[str, list[int]] = {}
    detected = correct = kept = clinical = 0
    for text, phi in _load():
        spans = cleaner.find(text)
        got = [(s.start, s.end) for s in spans]
        for start, end, kind in phi:
            hit = any(_overlaps((start, end), g) for g in got)
            per_kind.setdefault(kind, [0, 0])
            per_kind[kind][0] += hit
            per_kind[kind][1] += 1
        detected += len(got)
        correct += sum(any(_overlaps(g, (s, e)) for s, e, _ in phi) for g in got)
        for tok in _TOKEN.finditer(text):
            t = (tok.start(), tok.end())
            if any(_overlaps(t, (s, e)) for s, e, _ in phi):
                continue
            clinical += 1
            kept += not any(_overlaps(t, g) for g in got)
    kinds = {k: (v[0], v[1]) for k, v in per_kind.items()}
    return kinds, detected, correct, kept / clinical


def test_labelled_set_size() -> None:
    rows = _load()
    assert len(rows) >= 150
    kinds = Counter(k for _, phi in rows for _, _, k in phi)
    assert set(kinds) >= {"NAME", "TWID", "MRN", "NUM", "DATE", "PHONE", "EMAIL", "URL", "ADDR"}
    for text, phi in rows:
        for start, end, _ in phi:
            assert 0 <= start < end <= len(text)


def test_precision_recall_retention(cleaner: FreeTextCleaner) -> None:
    kinds, detected, correct, retention = measure(cleaner)
    lines = [f"{'kind':6} {'R':>5} {'n':>4}"]
    for kind, (found, n) in sorted(kinds.items()):
        lines.append(f"{kind:6} {found / n:5.3f} {n:4d}")
    precision = correct / detected
    lines.append(f"precision {precision:.3f} ({correct}/{detected}), retention {retention:.3f}")
    print("\n" + "\n".join(lines))  # noqa: T201 - the table is the test's report
    for kind, (found, n) in kinds.items():
        assert found / n >= MIN_RECALL, f"recall of {kind} is {found}/{n}"
    assert precision >= MIN_PRECISION
    assert retention >= MIN_RETENTION


# ---------------------------------------------------------------- detectors


def _kinds(result: CleanResult) -> list[str]:
    return [s.kind for s in result.removed]


@pytest.mark.parametrize(
    ("text", "expected", "kinds"),
    [
        ("CT chest w/ contrast for Chen Mei-Ling", "CT chest w/ contrast", ["NAME"]),
        ("Lin, Wen-Hsiung MRI brain", "MRI brain", ["NAME"]),
        ("CHEN^MEI LING", "", ["NAME"]),
        ("Mei-Ling Chen breast US", "breast US", ["NAME"]),
        ("Requested by Dr. Tsai, cardiology", "Requested by, cardiology", ["NAME"]),
        ("病人陳美玲主訴頭痛", "病人主訴頭痛", ["NAME"]),
        ("王醫師判讀", "判讀", ["NAME"]),
        ("主治醫師：黃建國", "主治醫師", ["NAME"]),
        ("歐陽志明，術後追蹤", "術後追蹤", ["NAME"]),
    ],
)
def test_names(cleaner: FreeTextCleaner, text: str, expected: str, kinds: list[str]) -> None:
    result = cleaner.clean(text)
    assert result.text == expected
    assert _kinds(result) == kinds


@pytest.mark.parametrize(
    "text",
    [
        "高血壓及糖尿病病史", "黃疸，懷疑膽道阻塞", "方向性：左側為主", "白血球上升",
        "左側乳房石灰化", "有金屬植入物", "陳舊性骨折", "毛玻璃狀病灶，周圍浸潤",
        "嚴重的退化性關節炎", "游離氣體", "尤其左下肺葉", "許多小淋巴結", "簡單腎囊腫",
        "Lung nodule 12 x 8 mm RUL", "CT ABD/PEL W CON", "AX T2 FS", "Contrast 100 mL",
        "Slice thickness 1.25 mm", "Matrix 512 x 512", "Lee Sign",
    ],
)  # fmt: skip
def test_clinical_text_survives(cleaner: FreeTextCleaner, text: str) -> None:
    assert cleaner.clean(text) == CleanResult(text, [])


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("A123456789", "TWID"),
        ("a123456789", "TWID"),
        ("ID F231456787", "TWID"),  # any check digit after an ID label
        ("病歷號 1234567", "MRN"),
        ("MRN: 00123456", "MRN"),
        ("chart no. 12345678", "MRN"),
        ("88123456", "NUM"),
        ("民國112年3月4日", "DATE"),
        ("112/03/04", "DATE"),
        ("112.03.04", "DATE"),
        ("檢查日期：1120304", "DATE"),
        ("2023-03-04", "DATE"),
        ("20230304", "DATE"),
        ("2023/3/4", "DATE"),
        ("04-Mar-2023", "DATE"),
        ("March 4, 2023", "DATE"),
        ("0912-345-678", "PHONE"),
        ("0912345678", "PHONE"),
        ("(02) 2345-6789", "PHONE"),
        ("02-2345-6789 ext. 12", "PHONE"),
        ("+886 912 345 678", "PHONE"),
        ("a.b@example.org", "EMAIL"),
        ("https://example.tw/x", "URL"),
        ("106臺北市大安區復興南路一段100號5樓", "ADDR"),
        ("No. 7, Lane 12, Heping E. Rd., Taipei", "ADDR"),
    ],
)
def test_detectors(cleaner: FreeTextCleaner, text: str, kind: str) -> None:
    result = cleaner.clean(f"CT chest {text} stable")
    assert result.text == "CT chest stable"
    assert _kinds(result) == [kind]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Seen on 2024-03-05: mass", "Seen on: mass"),
        ("Date:2024-03-05 mass", "Date: mass"),
        ("2024/03/05: nodule", "nodule"),
        ("112.03.04: 肝腫瘤", "肝腫瘤"),
        ("05/03/2024: cyst", "cyst"),
        ("ratio 1:2024 stable", "ratio 1:2024 stable"),  # a colon between digits is no date
    ],
)
def test_a_colon_next_to_a_date_is_punctuation(cleaner: FreeTextCleaner, text: str,
                                                expected: str) -> None:
    assert cleaner.clean(text).text == expected


def test_check_digit_and_units(cleaner: FreeTextCleaner) -> None:
    # an invalid check digit without an ID label is still a long number
    assert [s.kind for s in cleaner.find("A123456788")] == ["NUM"]
    assert cleaner.find("1234567 mm") == []  # a measurement, not an ID
    assert cleaner.find("DLP 1234567 mGy*cm") == []


def test_known_values(cleaner: FreeTextCleaner) -> None:
    known = ["SMITH^JOHN=史^密斯", "PX-991", "Meiling"]
    result = cleaner.clean("smith john, 史密斯 followup px-991 MEILING nodule", known=known)
    assert result.text == "followup nodule"
    assert {s.kind for s in result.removed} == {"KNOWN"}
    # Latin values only match whole words
    assert cleaner.find("Johnson fracture", known=["John"]) == []


def test_spans_only(cleaner: FreeTextCleaner) -> None:
    result = cleaner.clean("for Chen Mei-Ling 0912345678")
    assert all(isinstance(s, Span) for s in result.removed)
    assert all(isinstance(v, str | int) and v != "Chen" for s in result.removed for v in s)


def test_tidying(cleaner: FreeTextCleaner) -> None:
    assert cleaner.clean("CT (A123456789) chest").text == "CT chest"
    assert cleaner.clean("CT chest of Chen Mei-Ling").text == "CT chest"
    assert cleaner.clean("Chen Mei-Ling, A123456789, CT").text == "CT"


# ---------------------------------------------------------------- the engine


def _engine(*options: str) -> Deidentifier:
    base = get_profile("default").options - {"cleanDescOpt", "cleanStructContOpt"}
    return Deidentifier(KEY, Profile("t", "1", options=base | set(options)))


def _utf8_ct() -> Dataset:
    ds = ct_dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "CHEN^MEI LING=陳^美玲"
    ds.PatientID = "PX-991"
    ds.StudyDescription = "CT chest w/ contrast for Chen Mei Ling"
    ds.SeriesDescription = "AX T2 FS"
    ds.ImageComments = "胸部CT 陳美玲 PX-991 民國112年3月4日"
    ds.PatientComments = "Mei Ling, 0912-345-678"
    return ds


def test_clean_descriptors_keep_clinical_words() -> None:
    ds = reread(_utf8_ct())
    report = _engine("cleanDescOpt").apply(ds)
    out = reread(ds)
    assert out.StudyDescription == "CT chest w/ contrast"
    assert out.SeriesDescription == "AX T2 FS"
    assert out.ImageComments == "胸部CT"
    assert "PatientComments" not in out  # nothing clinical left: the basic action (X)
    assert report.action_counts["C"] >= 4
    text = output_bytes(ds)
    for value in ("CHEN", "Mei Ling", "陳美玲".encode(), "PX-991", "0912"):
        raw = value if isinstance(value, bytes) else value.encode()
        assert raw not in text


def test_without_clean_descriptors_descriptions_are_removed() -> None:
    ds = reread(_utf8_ct())
    _engine().apply(ds)
    assert "StudyDescription" not in ds and "ImageComments" not in ds


def test_unchanged_raw_value_is_kept_byte_identical() -> None:
    ds = reread(_utf8_ct())
    before = ds.get_item(0x0008103E).value
    _engine("cleanDescOpt").apply(ds)
    assert ds.get_item(0x0008103E).value == before


def _sr_item(text: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.TextValue = text
    return item


def test_clean_structured_content_cleans_text_values_at_any_depth() -> None:
    ds = _utf8_ct()
    inner = _sr_item("Nodule 8 mm, discussed with Dr. Wang, PX-991")
    outer = _sr_item("Findings for 陳美玲: stable")
    outer.ContentSequence = Sequence([inner])
    ds.ContentSequence = Sequence([outer, _sr_item("Chen Mei Ling A123456789")])
    ds = reread(ds)
    _engine("cleanStructContOpt").apply(ds)
    out = reread(ds)
    first, second = out.ContentSequence
    assert first.TextValue == "Findings for: stable"
    assert first.ContentSequence[0].TextValue == "Nodule 8 mm, discussed"
    assert "TextValue" not in second
    assert "StudyDescription" not in out  # Clean Descriptors not selected


def test_text_value_is_removed_without_clean_structured_content() -> None:
    ds = _utf8_ct()
    ds.ContentSequence = Sequence([_sr_item("stable")])
    ds = reread(ds)
    _engine("cleanDescOpt").apply(ds)
    assert all("TextValue" not in item for item in ds.ContentSequence)


def test_default_profile_cleans() -> None:
    ds = reread(_utf8_ct())
    Deidentifier(KEY, get_profile("default")).apply(ds)
    assert reread(ds).StudyDescription == "CT chest w/ contrast"


def test_protocol_name_is_cleaned_of_the_patients_name() -> None:
    ds = reread(ct_dataset())  # ProtocolName "HEAD ROUTINE for JANE", patient DOE^JANE
    report = Deidentifier(KEY, get_profile("default")).apply(ds)
    assert ds.ProtocolName == "HEAD ROUTINE"
    assert 0x00181030 not in {c.tag for c in report.combined_choices}


def test_person_names_of_the_sr_tree_are_known() -> None:
    ds = _utf8_ct()
    item = _sr_item("Seen by WATSON^JOHN after the fall")
    item.PersonName = "WATSON^JOHN"
    ds.ContentSequence = Sequence([item])
    ds = reread(ds)
    Deidentifier(KEY, get_profile("default")).apply(ds)
    (out,) = ds.ContentSequence
    assert out.TextValue == "Seen by after the fall" and out.PersonName == "ANONYMOUS"


def test_text_that_does_not_decode_gets_the_basic_action() -> None:
    ds = _utf8_ct()
    ds = reread(ds)
    raw = ds.get_item(0x00081030)
    ds._dict[raw.tag] = raw._replace(value=b"CT \xff\xfe chest", length=10)
    Deidentifier(KEY, get_profile("default")).apply(ds)
    assert "StudyDescription" not in ds
