"""The verifier finds identifiers anywhere in an output, and only real ones."""

from __future__ import annotations

import doctest
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, UltrasoundImageStorage

from mida.deid import Profile, get_profile
from mida.deid import verify as verify_mod
from mida.deid.verify import (
    Identifiers,
    Leak,
    collect_identifiers,
    find_leaks,
    verify_pair,
)
from mida.errors import DeidError
from mida.ingest.deid_run import run_deid
from tests.factories import PHI, make_dataset, write

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
KEY = b"k" * 32


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _output(**kw: Any) -> Dataset:
    """A clean 'de-identified' dataset to plant values in."""
    ds = make_dataset(PatientName="ANONYMOUS", PatientID="X", PatientBirthDate=None,
                      PatientAddress=None, PatientTelephoneNumbers=None, AccessionNumber=None,
                      StudyDate="19000101", **kw)
    ds.SOPInstanceUID = ds.StudyInstanceUID = ds.SeriesInstanceUID = "2.25.1"
    ds.FrameOfReferenceUID = "2.25.2"
    ds.file_meta.MediaStorageSOPInstanceUID = UID("2.25.1")
    return ds


@pytest.fixture
def original() -> Dataset:
    return make_dataset(PatientName="Lin^Wen-Hsiung=林^文雄")


@pytest.fixture
def ids(original: Dataset) -> Identifiers:
    return collect_identifiers(original)


def test_collects_every_kind(original: Dataset, ids: Identifiers) -> None:
    v = ids.values
    assert v[PHI["pid"]] == "id" and v[PHI["birth"]] == "date"
    assert v[PHI["address"]] == "address" and v[PHI["phone"]] == "telephone"
    assert v["Wen-Hsiung"] == "name" and v["文雄"] == "name" and "Lin" not in v  # too short
    assert v["林文雄"] == "name"  # CJK names are also written without separators
    assert v[str(original.SOPInstanceUID)] == "uid"
    assert "1.2.840.10008.5.1.4.1.1.2" not in v  # SOP class: names a kind of object
    assert "ACC20240305" in v and "20240305" in v


def test_clean_output_has_no_leak(ids: Identifiers) -> None:
    assert find_leaks(_bytes(_output()), ids) == []


def test_planted_in_nested_private_sequence(ids: Identifiers) -> None:
    out = _output()
    inner = Dataset()
    inner.add_new(0x00110010, "LO", "OTHER VENDOR")
    inner.add_new(0x00111001, "LO", f"ref {PHI['pid']}")
    middle = Dataset()
    middle.add_new(0x00110010, "LO", "OTHER VENDOR")
    middle.add_new(0x00111002, "SQ", Sequence([inner]))
    out.add_new(0x00090010, "LO", "ACME")
    out.add_new(0x00091001, "SQ", Sequence([middle]))
    leaks = find_leaks(_bytes(out), ids)
    assert [(lk.kind, lk.path) for lk in leaks] == [
        ("id", "(0009,1001)[0]>(0011,1002)[0]>(0011,1001)")]


def test_planted_in_file_meta(original: Dataset, ids: Identifiers) -> None:
    out = _output()
    out.file_meta.MediaStorageSOPInstanceUID = original.SOPInstanceUID
    leaks = find_leaks(out, ids)
    assert [(lk.kind, lk.path) for lk in leaks] == [("uid", "(0002,0003)")]


def test_cjk_name_in_gb18030_output(ids: Identifiers) -> None:
    out = _output(SpecificCharacterSet="GB18030", StudyDescription="林文雄 胸部CT")
    data = _bytes(out)
    assert "林文雄".encode("gb18030") in data
    leaks = find_leaks(data, ids)
    assert {(lk.path, lk.charset) for lk in leaks} == {("(0008,1030)", "decoded")}
    assert {lk.value for lk in leaks} == {"林文雄"}


def test_big5_bytes_found_raw_only(ids: Identifiers) -> None:
    out = _output()
    out.preamble = "林文雄".encode("big5").ljust(128, b"\x00")
    leaks = find_leaks(_bytes(out), ids)
    assert [(lk.path, lk.charset, lk.value) for lk in leaks] == [
        ("raw bytes @ 0", "big5", "林文雄")]


def test_undecodable_element_found_raw(ids: Identifiers) -> None:
    """A value pydicom cannot decode is still seen in the raw bytes."""
    out = _output()
    data = _bytes(out)
    assert find_leaks(data, ids) == []
    planted = data.replace(b"ANONYMOUS ", PHI["pid"].encode(), 1)  # same length, 10 bytes
    leaks = find_leaks(planted, ids)
    assert leaks and all(lk.kind == "id" for lk in leaks)


def test_whole_tokens_only() -> None:
    orig = Dataset()
    orig.PatientName = "MARY^SMITH"
    orig.StudyInstanceUID = "1.2.3.4444"
    ids = collect_identifiers(orig)
    out = Dataset()
    out.ImageType = ["ORIGINAL", "PRIMARY"]
    out.SeriesDescription = "BLACKSMITHS"
    out.SeriesInstanceUID = "1.2.3.44445"
    out.ReferencedSOPInstanceUID = "1.2.3.4444.5"
    assert find_leaks(out, ids) == []
    out.StudyDescription = "for mary."
    assert [lk.value for lk in find_leaks(out, ids)] == ["MARY"]


def test_leak_is_shown_masked(ids: Identifiers) -> None:
    out = _output(StudyComments=f"seen by {PHI['pid']}")
    (leak,) = find_leaks(out, ids)
    assert PHI["pid"] not in str(leak) and PHI["pid"] not in repr(leak)
    assert PHI["pid"] not in str(leak.to_dict())
    assert leak.masked == "A… (10 chars)"
    assert "(0032,4000)" in str(leak)


def test_pixels_of_risk_images_are_never_silently_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    orig = tmp_path / "orig"
    write(orig / "a.dcm", make_dataset())
    us = _output(Modality="US", SOPClassUID=UltrasoundImageStorage, BitsAllocated=8,
                 BitsStored=8, HighBit=7, PixelRepresentation=0,
                 PixelData=np.zeros(256, np.uint8).tobytes())
    us.file_meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    write(tmp_path / "out" / "us.dcm", us)
    monkeypatch.setattr(verify_mod, "ocr_engine", lambda: None)
    report = verify_pair([orig], [tmp_path / "out"])
    assert report.ok, [(str(lk), lk.value) for lk in report.leaks]
    assert report.pixels_unchecked == [str(tmp_path / "out" / "us.dcm")]
    assert report.to_dict()["ocr"] == "unavailable"

    class FakeOCR:
        def words(self, frame: np.ndarray) -> list[str]:
            return ["Name:", "Lin", "Wen-Hsiung"]

    monkeypatch.setattr(verify_mod, "ocr_engine", FakeOCR)
    report = verify_pair([orig], [tmp_path / "out"])
    assert {(lk.path, lk.charset) for lk in report.leaks} == {("PixelData frame 0", "ocr")}
    assert report.pixels_checked and not report.pixels_unchecked


# The engine always replaces Patient's Name and ID by the patient pseudonym, so the
# sabotage keeps the other names and the institution instead.
SABOTAGED_TAGS = {0x00080090: "(0008,0090)", 0x00081070: "(0008,1070)",
                  0x00081050: "(0008,1050)", 0x00080080: "(0008,0080)"}


def _sabotaged() -> Profile:
    base = get_profile("default")
    return Profile(name="sabotage", version="1", options=base.options,
                   overrides=dict.fromkeys(SABOTAGED_TAGS, "keep"))


def _assert_caught(leaks: list[Leak]) -> None:
    assert leaks, "a profile that keeps names must produce leaks"
    assert {lk.kind for lk in leaks} <= {"name", "institution"}
    decoded = [lk.path for lk in leaks if lk.charset == "decoded"]
    assert decoded and all(p[-11:] in SABOTAGED_TAGS.values() for p in decoded)


def test_mida_sample_output_has_no_leak_and_sabotage_is_caught(tmp_path: Path) -> None:
    from mida.dicom.sample import generate

    src = tmp_path / "sample"
    generate(src, 2, ct_slices=2, ct_size=64, mr_slices=1, mr_size=32)
    run = run_deid([src], tmp_path / "out", KEY)
    assert len(run.written) >= 6
    report = verify_pair([src], [tmp_path / "out"])
    assert sum(report.identifiers.values()) > 50, "a real list of identifiers is searched"
    assert report.outputs == len(run.written)
    assert report.leaks == [], [str(lk) for lk in report.leaks]

    run_deid([src], tmp_path / "bad", KEY, _sabotaged())
    _assert_caught(verify_pair([src], [tmp_path / "bad"]).leaks)


@pytest.mark.shared_data
def test_shared_phi_output_has_no_leak_and_sabotage_is_caught(tmp_path: Path) -> None:
    phi = SHARED / "phi"
    if not phi.exists():
        pytest.skip(f"{phi} is absent: the shared PHI corpora exist only in CI and dev machines")
    srcs = [phi / "deid_data", phi / "deid_examples"]
    run = run_deid(srcs, tmp_path / "out", KEY)
    assert run.written
    report = verify_pair(srcs, [tmp_path / "out"])
    assert sum(report.identifiers.values()) > 50
    assert report.leaks == [], [str(lk) for lk in report.leaks]

    # The sabotage is in header names. The ultrasound folder is left out of this
    # second run: its cine is OCRed on every frame (two minutes here), which the
    # run above and tests/deid/test_pixels.py already check, and it adds nothing
    # to whether kept names are caught. Names are in every other folder.
    sabotage_srcs = [p for p in (phi / "deid_data").iterdir() if p.name != "ultrasounds"]
    sabotage_srcs.append(phi / "deid_examples")
    run_deid(sabotage_srcs, tmp_path / "bad", KEY, _sabotaged())
    _assert_caught(verify_pair(sabotage_srcs, [tmp_path / "bad"]).leaks)


def test_full_dates_profile_is_reported(tmp_path: Path) -> None:
    """Dates are identifiers: a profile that keeps them shows up as date leaks."""
    from mida.deid.profile_files import available_profiles

    src = tmp_path / "src"
    write(src / "a.dcm", make_dataset())
    run_deid([src], tmp_path / "out", KEY, available_profiles(None)["research-full-dates"])
    kinds = {lk.kind for lk in verify_pair([src], [tmp_path / "out"]).leaks}
    assert kinds == {"date"}


def test_no_originals_is_an_error_not_a_pass(tmp_path: Path) -> None:
    (tmp_path / "orig").mkdir()
    (tmp_path / "orig" / "notes.txt").write_text("Lin Wen-Hsiung")
    write(tmp_path / "out" / "a.dcm", _output())
    with pytest.raises(DeidError, match="no DICOM file found among the originals"):
        verify_pair([tmp_path / "orig"], [tmp_path / "out"])


def test_docstring_examples() -> None:
    assert doctest.testmod(verify_mod, optionflags=doctest.ELLIPSIS).failed == 0


def test_leak_dataclass_has_no_value_in_repr() -> None:
    leak = Leak("f.dcm", "name", "(0010,0010)", "decoded", "SECRETNAME")
    assert "SECRETNAME" not in repr(leak) and leak.masked == "S… (10 chars)"


@pytest.mark.shared_data
def test_text_left_in_pixels_is_reported_by_a_locating_ocr(tmp_path: Path) -> None:
    """With the real OCR (pixels module + tesseract), burned-in text in an output is a leak."""
    engine = verify_mod.ocr_engine()
    if engine is None:
        pytest.skip("no OCR engine: mida.deid.pixels or tesseract (eng, chi_tra) is missing")
    phi = SHARED / "phi" / "deid_data" / "ultrasounds"
    if not phi.exists():
        pytest.skip(f"{phi} is absent: the shared PHI corpora exist only in CI and dev machines")
    # The original ultrasound itself, posing as an output: its burned-in text must be found.
    report = verify_pair([phi / "GREYSCALE_IMAGE.dcm"], [phi / "GREYSCALE_IMAGE.dcm"])
    assert report.pixels_checked and not report.pixels_unchecked
    assert any(lk.kind == "pixel_text" for lk in report.leaks)


def test_a_name_word_that_is_a_clinical_word_elsewhere_is_not_a_leak() -> None:
    # "Dr. soft haze" refers in one file; another file's study is "SOFT TISSUE"
    a, b = Dataset(), Dataset()
    a.ReferringPhysicianName = "Dr. soft haze"
    b.StudyDescription = "US CHEST WALL/SOFT TISSUE"
    b.PatientName = "Chen^Mei"
    ids = collect_identifiers(a)
    ids.update(collect_identifiers(b))
    search = ids.searchable()
    assert "soft" not in search and "haze" in search and "Dr. soft haze" in search
    # a name written into its own file's description stays searched
    c = Dataset()
    c.PatientName = "Tissue^Anna"
    c.StudyDescription = "CT for TISSUE"
    assert "Tissue" in collect_identifiers(c).searchable()
    # a name in another file's description is not an ordinary word
    d = Dataset()
    d.StudyDescription = "seen by Dr. Haze"
    ids.update(collect_identifiers(d))
    assert "haze" in ids.searchable()
