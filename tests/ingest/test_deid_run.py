"""Standalone de-identification: named by new UIDs, refusals never written, sources intact."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pydicom
import pytest

from mida.config import Settings
from mida.deid import IMPLEMENTATION_CLASS_UID
from mida.errors import IngestError
from mida.events import EventBus, FileProcessed
from mida.ingest.deid_run import run_deid
from tests.factories import make_dataset, make_pdf, write

KEY = b"k" * 32


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    for i in range(3):
        write(src / "ct" / f"{i}.dcm", make_dataset(InstanceNumber=i + 1))
    write(src / "nouid.dcm", make_dataset(StudyInstanceUID=None))  # cannot be made safe
    (src / "notes.txt").write_text("not DICOM")
    make_pdf(src / "doc.dcm")
    with zipfile.ZipFile(src / "more.zip", "w") as zf:
        zf.write(src / "ct" / "0.dcm", "copy.dcm")  # same instance again: a duplicate
    return src


def _tree(root: Path) -> dict[str, tuple[str, float]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                       p.stat().st_mtime)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "unused")


def test_writes_files_named_by_new_sop_uid(inputs: Path, tmp_path: Path) -> None:
    events: list[FileProcessed] = []
    bus = EventBus()
    bus.subscribe(lambda e: events.append(e) if isinstance(e, FileProcessed) else None)
    before = _tree(inputs)
    report = run_deid([inputs], tmp_path / "out", KEY, settings=_settings(tmp_path), bus=bus)
    assert _tree(inputs) == before, "inputs are never modified"
    files = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in files] == report.written and len(files) == 3
    originals = {str(pydicom.dcmread(p).SOPInstanceUID) for p in (inputs / "ct").iterdir()}
    for p in files:
        ds = pydicom.dcmread(p)
        assert p.name == f"{ds.SOPInstanceUID}.dcm"
        assert str(ds.SOPInstanceUID).startswith("2.25.")
        assert str(ds.SOPInstanceUID) not in originals
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert report.duplicates == 1
    assert report.by_reason == {"missing_uid": 1, "encapsulated_document": 1,
                                "not_dicom": 1}
    assert report.inputs == 7
    assert sorted(e.outcome for e in events).count("written") == 3
    assert not list((tmp_path / "out").glob(".tmp-*"))


def test_same_key_same_bytes_other_key_no_shared_uids(inputs: Path, tmp_path: Path) -> None:
    s = _settings(tmp_path)
    run_deid([inputs], tmp_path / "a", KEY, settings=s)
    run_deid([inputs], tmp_path / "b", KEY, settings=s, workers=2)
    run_deid([inputs], tmp_path / "c", b"z" * 32, settings=s)
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert {k: v[0] for k, v in a.items()} == {k: v[0] for k, v in b.items()}

    def uids(folder: Path) -> set[str]:
        out = set()
        for p in folder.iterdir():
            ds = pydicom.dcmread(p)
            out |= {str(e.value) for e in ds.iterall() if e.VR == "UI"}
            out |= {str(e.value) for e in ds.file_meta if e.VR == "UI"}
        return {u for u in out if not u.startswith("1.2.840.10008.")}

    a_uids = uids(tmp_path / "a")
    assert len(a_uids) > 6
    # mida's own Implementation Class UID names the software, the same in every output.
    assert a_uids & uids(tmp_path / "c") == {IMPLEMENTATION_CLASS_UID}


def test_output_inside_input_is_refused(inputs: Path) -> None:
    with pytest.raises(IngestError, match="inside the input folder"):
        run_deid([inputs], inputs / "out", KEY)


def test_missing_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        run_deid([tmp_path / "nope"], tmp_path / "out", KEY)


def test_burned_in_text_is_cleaned_in_standalone_runs(tmp_path: Path) -> None:
    from mida.deid.pixels import PixelCleaner, TesseractOCR, load_pixel_rules, to_grey8
    from tests.ingest.test_pixel_cleaning import us_with_text

    ocr = TesseractOCR()
    if not ocr.is_available():
        if os.environ.get("MIDA_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail("CI requires tesseract")
        pytest.skip("tesseract is not installed")
    src = us_with_text(tmp_path / "in" / "us.dcm")
    report = run_deid([src], tmp_path / "out", KEY, settings=_settings(tmp_path))
    (name,) = report.written
    ds = pydicom.dcmread(tmp_path / "out" / name)
    cleaner = PixelCleaner(load_pixel_rules(), ocr)
    assert not cleaner.text_words(ocr.detect(to_grey8(ds.pixel_array)))
    assert ds.BurnedInAnnotation == "NO"
