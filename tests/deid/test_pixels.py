"""Burned-in pixel PHI: region rules, OCR blanking, decode and re-encode.

OCR tests run the real Debian ``tesseract`` (eng + chi_tra) on the
ultrasound files of ../shared/data/phi/deid_data, which carry real burned-in
text; they skip when either is absent. Codec tests use a fake OCR engine so
they exercise decode, blanking and re-encoding without tesseract.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from mida.deid import pixels as px
from mida.deid.pixels import (
    Box,
    PixelCleaner,
    PixelRule,
    PixelRuleSet,
    TesseractOCR,
    WordBox,
    header_facts,
    load_pixel_rules,
    requires_ocr,
    to_grey8,
)
from mida.dicom.sample import generate
from mida.errors import ConfigError, QuarantineError, QuarantineReason

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ULTRASOUNDS = SHARED / "phi" / "deid_data" / "ultrasounds"
PYDICOM_DATA = SHARED / "dicom" / "pydicom_data"
PYDICOM_TEST_FILES = SHARED / "dicom" / "pydicom_test_files" / "test_files"
NO_RULES = PixelRuleSet(0, "none", ())


def _shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared corpora exist only in CI and dev machines")
    return path


@pytest.fixture(scope="module")
def tesseract() -> TesseractOCR:
    ocr = TesseractOCR()
    if not ocr.is_available():
        why = (
            "tesseract is not installed (apt-get install tesseract-ocr tesseract-ocr-eng "
            "tesseract-ocr-chi-tra): " + "; ".join(ocr.missing_dependencies())
        )
        if os.environ.get("MIDA_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(f"CI requires OCR: {why}")
        pytest.skip(why)
    return ocr


@pytest.fixture
def blanked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[tuple[int, ...], Box]]]:
    """Record every rectangle the cleaner blanks, as (frames, box)."""
    calls: list[tuple[tuple[int, ...], Box]] = []
    real = PixelCleaner._blank

    def spy(pixels: px._Pixels, frames: Sequence[int], box: Box) -> int:
        calls.append((tuple(frames), box))
        return real(pixels, frames, box)

    monkeypatch.setattr(PixelCleaner, "_blank", staticmethod(spy))
    yield calls


def _frames(ds: Dataset) -> np.ndarray:
    """Decoded pixels as (frames, rows, cols, samples)."""
    arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) == 1:
        arr = arr[None]
    if int(ds.get("SamplesPerPixel", 1)) == 1:
        arr = arr[..., None]
    return arr


def _mask(shape: tuple[int, ...], calls: list[tuple[tuple[int, ...], Box]]) -> np.ndarray:
    """Pixels (frames, rows, cols) inside any blanked rectangle."""
    mask = np.zeros(shape[:3], dtype=bool)
    for frames, (r0, c0, r1, c1) in calls:
        for f in frames:
            mask[f, max(r0, 0) : r1, max(c0, 0) : c1] = True
    return mask


def _assert_only_blanked_changed(
    before: np.ndarray, after: np.ndarray, calls: list[tuple[tuple[int, ...], Box]]
) -> None:
    mask = _mask(before.shape, calls)
    assert mask.any()
    # Bit-identical outside the blanked rectangles ...
    assert np.array_equal(before[~mask], after[~mask])
    # ... and one constant value per sample inside them.
    inside = after[mask].reshape(-1, after.shape[-1])
    assert (inside == inside[0]).all()


# --------------------------------------------------------------------------- rules


def test_shipped_rules_load_and_match_on_original_header() -> None:
    rules = load_pixel_rules()
    assert rules.version >= 1
    facts = {
        "Modality": "US",
        "Manufacturer": "MIDA Synthetic",
        "ManufacturerModelName": "Sample US",
        "Rows": 480,
        "Columns": 640,
    }
    assert [r.name for r in rules.matching(facts)] == ["mida-sample-us"]
    assert rules.matching({**facts, "Rows": 481}) == ()
    assert rules.matching({**facts, "Manufacturer": ""}) == ()


def test_rule_image_type_must_all_be_present() -> None:
    rule = PixelRule("r", ((0, 0, 1, 1),), ImageType=("PRIMARY", "SMALL PARTS"))
    assert rule.matches({"ImageType": ["ORIGINAL", "PRIMARY", "SMALL PARTS"]})
    assert not rule.matches({"ImageType": ["ORIGINAL", "PRIMARY"]})


@pytest.mark.parametrize(
    "body",
    [
        "rules: []\n",  # no version
        "version: 1\nrules:\n  - name: a\n    blank: [[0, 0, 0, 5]]\n",  # empty box
        "version: 1\nrules:\n  - name: a\n    match: {Colour: red}\n    blank: [[0, 0, 1, 5]]\n",
        "version: 1\nrules:\n  - name: a\n    match: {Manufacturer: '('}\n    blank: [[0,0,1,1]]\n",
        "version: [\n",
    ],
)
def test_bad_rule_files_raise_config_error(tmp_path: Path, body: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"rules\.yaml"):
        load_pixel_rules(path)


def test_requires_ocr() -> None:
    assert requires_ocr({"Modality": "US"})
    assert requires_ocr({"Modality": "CT", "BurnedInAnnotation": "YES"})
    assert not requires_ocr({"Modality": "CT"})


def test_rules_only_on_sample_ultrasound(
    tmp_path: Path, blanked: list[tuple[tuple[int, ...], Box]]
) -> None:
    """Works without tesseract: the shipped rule blanks every burned-in line."""
    manifest = generate(tmp_path / "s", 1, ct_slices=1, ct_size=32, mr_slices=1, mr_size=32)
    (rel, boxes) = next(iter(manifest.burned_in.items()))
    ds = pydicom.dcmread(tmp_path / "s" / rel)
    before = _frames(ds).copy()
    facts = header_facts(ds)
    # The header is de-identified before pixels are cleaned: rules still match.
    del ds.Manufacturer, ds.ManufacturerModelName
    report = PixelCleaner(load_pixel_rules(), ocr=None).clean(ds, facts)
    assert report.rules_applied == ("mida-sample-us",)
    assert (report.frames, report.ocr_boxes, report.ocr_passes) == (1, 0, 0)
    assert not report.ocr_verified
    assert ds.BurnedInAnnotation == "YES"  # no OCR ran, so nothing is claimed
    after = _frames(ds)
    for b in boxes:
        assert not after[0, b.row : b.row + b.rows, b.column : b.column + b.columns].any()
    _assert_only_blanked_changed(before, after, blanked)


def test_rules_need_the_original_header(tmp_path: Path) -> None:
    manifest = generate(tmp_path / "s", 1, ct_slices=1, ct_size=32, mr_slices=1, mr_size=32)
    ds = pydicom.dcmread(tmp_path / "s" / next(iter(manifest.burned_in)))
    del ds.Manufacturer
    before = bytes(ds.PixelData)
    report = PixelCleaner(load_pixel_rules(), ocr=None).clean(ds, header_facts(ds))
    assert report.rules_applied == ()
    assert bytes(ds.PixelData) == before


# --------------------------------------------------------------------------- failures


def _tiny(**extra: object) -> Dataset:
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality = "US"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 8, 8, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(64))
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


def test_missing_ocr_binary_quarantines(tmp_path: Path) -> None:
    ocr = TesseractOCR(binary=str(tmp_path / "no-such-tesseract"))
    assert not ocr.is_available()
    assert "tesseract-ocr" in ocr.missing_dependencies()[0]
    ds = _tiny()
    with pytest.raises(QuarantineError) as err:
        PixelCleaner(NO_RULES, ocr).clean(ds, header_facts(ds))
    assert err.value.reason is QuarantineReason.BURNED_IN_TEXT
    assert bytes(ds.PixelData) == bytes(range(64))


def test_missing_language_is_reported(tesseract: TesseractOCR) -> None:
    ocr = TesseractOCR(languages=("eng", "xx_missing"))
    assert ocr.missing_dependencies() == [
        "language 'xx_missing' (apt-get install tesseract-ocr-xx-missing)"
    ]


@pytest.mark.parametrize(
    "extra",
    [
        {"PixelData": bytes(10)},  # shorter than declared
        {"BitsAllocated": 1},  # packed bits: not supported
        {"PhotometricInterpretation": "YBR_FULL_422", "SamplesPerPixel": 3},
    ],
)
def test_unprocessable_native_pixels_quarantine(extra: dict[str, object]) -> None:
    ds = _tiny(**extra)
    with pytest.raises(QuarantineError) as err:
        PixelCleaner(NO_RULES, None).clean(ds, header_facts(ds))
    assert err.value.reason is QuarantineReason.PIXEL_UNDECODABLE


def test_corrupt_compressed_pixels_quarantine() -> None:
    ds = pydicom.dcmread(_shared(PYDICOM_TEST_FILES / "SC_rgb_jpeg_dcmtk.dcm"))
    ds.PixelData = ds.PixelData[:300]  # truncated inside the JPEG stream
    with pytest.raises(QuarantineError) as err:
        PixelCleaner(NO_RULES, None).clean(ds, header_facts(ds))
    assert err.value.reason is QuarantineReason.PIXEL_UNDECODABLE


class _FakeOCR:
    """Reports one word in the centre of each frame until it is blanked."""

    name = "fake"

    def is_available(self) -> bool:
        return True

    def missing_dependencies(self) -> list[str]:
        return []

    def detect(self, image: np.ndarray) -> list[WordBox]:
        rows, cols = image.shape
        box = (rows // 2, cols // 4, rows // 2 + 12, cols // 4 + 40)
        if np.ptp(image[box[0] : box[2], box[1] : box[3]]) == 0:
            return []
        return [WordBox(box, 95.0, 5, 1)]


def test_fake_ocr_blanks_and_verifies(blanked: list[tuple[tuple[int, ...], Box]]) -> None:
    ds = _tiny(Rows=64, Columns=64, PixelData=bytes(range(256)) * 16)
    before = _frames(ds).copy()
    report = PixelCleaner(NO_RULES, _FakeOCR()).clean(ds, header_facts(ds))
    assert (report.ocr_boxes, report.ocr_passes, report.ocr_verified) == (1, 2, True)
    assert ds.BurnedInAnnotation == "NO"
    _assert_only_blanked_changed(before, _frames(ds), blanked)


@pytest.mark.parametrize(
    ("path", "syntax_kept"),
    [
        (PYDICOM_TEST_FILES / "SC_rgb_rle_2frame.dcm", RLELossless),
        (PYDICOM_DATA / "OBXXXX1A_rle.dcm", RLELossless),  # PALETTE COLOR ultrasound
        (PYDICOM_DATA / "US1_J2KR.dcm", JPEG2000Lossless),
        (PYDICOM_TEST_FILES / "SC_rgb_jpeg_dcmtk.dcm", None),  # JPEG baseline, YBR_FULL
        (PYDICOM_TEST_FILES / "SC_rgb_jpeg_gdcm.dcm", None),  # JPEG lossless: no encoder
        pytest.param(
            PYDICOM_DATA / "color3d_jpeg_baseline.dcm",  # 120-frame JPEG ultrasound, ~20 s
            None,
            marks=pytest.mark.slow,
        ),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else str(v),
)
def test_compressed_round_trip(
    path: Path, syntax_kept: str | None, blanked: list[tuple[tuple[int, ...], Box]]
) -> None:
    ds = pydicom.dcmread(_shared(path))
    original_syntax = ds.file_meta.TransferSyntaxUID
    lossy = original_syntax.name.startswith("JPEG Baseline")
    before = _frames(ds).copy()  # decoded as pydicom does, YBR converted to RGB
    report = PixelCleaner(NO_RULES, _FakeOCR()).clean(ds, header_facts(ds))
    assert report.ocr_verified and report.frames == before.shape[0]
    assert report.ocr_boxes == before.shape[0]
    if syntax_kept is not None:
        assert ds.file_meta.TransferSyntaxUID == syntax_kept
        assert not report.transfer_syntax_changed
    else:
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert report.transfer_syntax_changed
        assert ds.PhotometricInterpretation == "RGB"
    if lossy:
        assert ds.LossyImageCompression == "01"
    # Written and read back: decodes, and only blanked pixels differ.
    buf = pydicom.filebase.DicomBytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    again = pydicom.dcmread(buf)
    _assert_only_blanked_changed(before, _frames(again), blanked)


# --------------------------------------------------------------------------- real OCR


def _residual(ocr: TesseractOCR, ds: Dataset) -> list[tuple[int, int]]:
    """(frame, word count) of text with >= 3 characters at confidence >= 60."""
    frames = _frames(ds)
    photometric = str(ds.PhotometricInterpretation)
    found = []
    for i, frame in enumerate(frames):
        image = to_grey8(frame[..., 0] if frame.shape[-1] == 1 else frame, photometric)
        words = [w for w in ocr.detect(image) if w.chars >= 3 and w.confidence >= 60]
        if words:
            found.append((i, len(words)))
    return found


def _check_real(ds: Dataset, ocr: TesseractOCR, blanked: list[tuple[tuple[int, ...], Box]]) -> None:
    before = _frames(ds).copy()
    rules = load_pixel_rules()
    facts = header_facts(ds)
    report = PixelCleaner(rules, ocr).clean(ds, facts)
    # Text was found by OCR on every frame, then nothing was left.
    rule_calls = sum(len(rule.blank) for rule in rules.matching(facts))
    ocr_frames = {f for frames, _ in blanked[rule_calls:] for f in frames}
    assert report.ocr_boxes > 0
    assert ocr_frames == set(range(before.shape[0]))
    assert report.ocr_verified and ds.BurnedInAnnotation == "NO"
    assert _residual(ocr, ds) == []
    _assert_only_blanked_changed(before, _frames(ds), blanked)
    # Blanking stays local: most of the image survives.
    assert _mask(before.shape, blanked).mean() < 0.15


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["GREYSCALE_IMAGE.dcm", "RGB_IMAGE.dcm"])
def test_real_ultrasound_text_is_blanked(
    name: str, tesseract: TesseractOCR, blanked: list[tuple[tuple[int, ...], Box]]
) -> None:
    ds = pydicom.dcmread(_shared(ULTRASOUNDS / name))
    assert _residual(tesseract, ds)  # the original carries readable text
    _check_real(ds, tesseract, blanked)


@pytest.mark.shared_data
def test_real_cine_frames_subset(
    tesseract: TesseractOCR, blanked: list[tuple[tuple[int, ...], Box]]
) -> None:
    """Three frames of the 27-frame cine (first, middle, last): the multi-frame path."""
    ds = pydicom.dcmread(_shared(ULTRASOUNDS / "GREYSCALE_CINE.dcm"))
    size = int(ds.Rows) * int(ds.Columns)
    ds.PixelData = b"".join(ds.PixelData[i * size : (i + 1) * size] for i in (0, 13, 26))
    ds.NumberOfFrames = 3
    _check_real(ds, tesseract, blanked)


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_cine_every_frame(
    tesseract: TesseractOCR, blanked: list[tuple[tuple[int, ...], Box]]
) -> None:
    ds = pydicom.dcmread(_shared(ULTRASOUNDS / "GREYSCALE_CINE.dcm"))
    _check_real(ds, tesseract, blanked)


def test_program_without_language_packs_is_unavailable(tmp_path: Path) -> None:
    # An executable that lists no languages fails the check before any frame is read.
    fake = tmp_path / "tesseract"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    assert shutil.which(str(fake))
    assert not TesseractOCR(binary=str(fake)).is_available()


def test_docstring_examples() -> None:
    import doctest

    result = doctest.testmod(px, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_ocr_failure_mid_run_quarantines(tmp_path: Path) -> None:
    fake = tmp_path / "tesseract"
    fake.write_text(
        '#!/bin/sh\nif [ "$1" = "--list-langs" ]; then printf "eng\\nchi_tra\\n"; exit 0; fi\n'
        "cat > /dev/null\nexit 3\n"
    )
    fake.chmod(0o755)
    ocr = TesseractOCR(binary=str(fake))
    assert ocr.is_available()
    ds = _tiny()
    with pytest.raises(QuarantineError) as err:
        PixelCleaner(NO_RULES, ocr).clean(ds, header_facts(ds))
    assert err.value.reason is QuarantineReason.BURNED_IN_TEXT
    assert "exit status 3" in err.value.message
