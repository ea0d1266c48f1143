"""Ingest cleans burned-in pixel text (issue 3, item 7) instead of refusing the image.

Images at risk (US, SC, DX, XA..., or BurnedInAnnotation YES) are OCRed on
every frame with the real Debian tesseract and the words blanked before
storage; without OCR they are quarantined, never stored uncleaned.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UltrasoundImageStorage
from sqlalchemy import select

from mida.catalog.models import Instance
from mida.deid import pixels
from mida.deid.pixels import PixelCleaner, TesseractOCR, load_pixel_rules, to_grey8
from mida.dicom.sample import render_text
from mida.dicom.write import encode
from mida.ingest import ingest_paths
from mida.node import Node
from tests.factories import make_dataset, write

TEXT = "CHEN MEI LING A123456789 2024-03-05"


@pytest.fixture(scope="module")
def tesseract() -> TesseractOCR:
    ocr = TesseractOCR()
    if not ocr.is_available():
        why = "tesseract is not installed: " + "; ".join(ocr.missing_dependencies())
        if os.environ.get("MIDA_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(f"CI requires OCR: {why}")
        pytest.skip(why)
    return ocr


def us_with_text(path: Path, frames: int = 1) -> Path:
    """An 8-bit ultrasound image (optionally multi-frame) with a name, ID and date burned in."""
    img = np.full((frames, 240, 480), 40, dtype=np.uint8)
    mask = render_text(TEXT, scale=2)
    for f in range(frames):
        img[f, 10 : 10 + mask.shape[0], 10 : 10 + mask.shape[1]][mask] = 250
        img[f, 120:200, 150:350] = 90 + 10 * f  # "anatomy": no text
    ds = make_dataset(
        Modality="US", SOPClassUID=UltrasoundImageStorage, Rows=240, Columns=480,
        BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0,
        RescaleIntercept=None, RescaleSlope=None, PixelData=img.tobytes(),
    )  # fmt: skip
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    return write(path, ds)


def _stored(node: Node) -> list[pydicom.Dataset]:
    store = node.store()
    with node.catalog().session() as s:
        digests = list(s.scalars(select(Instance.blob_sha256)))
    return [pydicom.dcmread(io.BytesIO(store.get(d))) for d in digests]


def test_burned_in_text_is_blanked_on_every_frame_and_stored(
    node: Node, tmp_path: Path, tesseract: TesseractOCR
) -> None:
    src = us_with_text(tmp_path / "src" / "us.dcm", frames=2)
    original = pydicom.dcmread(src)
    cleaner = PixelCleaner(load_pixel_rules(), tesseract)
    assert cleaner.text_words(tesseract.detect(to_grey8(original.pixel_array[0])))

    s = ingest_paths(node, [src.parent], "us", workers=1)
    assert (s.stored, s.quarantined) == (1, 0)
    (ds,) = _stored(node)
    assert ds.BurnedInAnnotation == "NO"
    codes = {i.CodeValue for i in ds.DeidentificationMethodCodeSequence}
    assert {"113100", "113101"} <= codes  # Basic Profile + Clean Pixel Data
    frames = ds.pixel_array
    for f in range(2):
        assert not cleaner.text_words(tesseract.detect(to_grey8(frames[f]))), f"frame {f}"
        # the anatomy outside the text is untouched
        anatomy = np.s_[f, 120:200, 150:350]
        assert np.array_equal(frames[anatomy], original.pixel_array[anatomy])
    assert not frames[:, 10:26, 10:400].max() > 40, "every text pixel was blanked"


def test_images_at_risk_are_quarantined_when_ocr_is_missing(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        pixels.OCR_ENGINES, "tesseract", lambda: TesseractOCR(binary=str(tmp_path / "none"))
    )
    src = us_with_text(tmp_path / "src" / "us.dcm")
    write(tmp_path / "src" / "ct.dcm")  # not at risk: stored without OCR
    write(tmp_path / "src" / "burned.dcm", BurnedInAnnotation="YES")
    s = ingest_paths(node, [src.parent], "us", workers=1)
    assert s.stored == 1
    assert s.by_reason == {"burned_in_text": 2}
    from mida.ingest.retry import list_entries

    messages = {e["message"] for e in list_entries(node)}
    assert messages == {
        f"OCR engine 'tesseract' is unavailable: program '{tmp_path / 'none'}' "
        "(apt-get install tesseract-ocr)"
    }


@pytest.mark.parametrize(
    "text", ["A123456789", "0912-345-678", "2024-03-05", "1130304", "CHEN MEI LING"]
)
def test_ids_dates_and_phones_alone_are_found(tesseract: TesseractOCR, text: str) -> None:
    # tesseract reads digits in small bitmap fonts with confidences near 0:
    # such words must still count as text
    img = np.full((240, 480), 40, dtype=np.uint8)
    mask = render_text(text, scale=2)
    img[10 : 10 + mask.shape[0], 10 : 10 + mask.shape[1]][mask] = 250
    img[120:200, 150:350] = 90
    cleaner = PixelCleaner(load_pixel_rules(), tesseract)
    words = cleaner.text_words(tesseract.detect(img))
    assert words
    covered = np.zeros_like(mask)
    for w in words:
        r0, c0, r1, c1 = cleaner._padded(w.box)
        covered[max(r0 - 10, 0) : r1 - 10, max(c0 - 10, 0) : c1 - 10] = True
    assert covered[mask].all(), "every inked pixel lies in a blanked box"


@pytest.mark.parametrize(
    "name",
    [
        "pydicom_data/OBXXXX1A_expb.dcm",  # big endian, 8-bit in OW: stored swapped in pairs
        "pydicom_data/gdcm-US-ALOKA-16_big.dcm",  # big endian, 16-bit
        "pydicom_data/SC_rgb_expb_2frame.dcm",  # big endian, RGB, 2 frames
        "pydicom_test_files/test_files/image_dfl.dcm",  # deflated
    ],
)
def test_byte_orders_and_deflate_are_cleaned_in_place(name: str) -> None:
    from pydicom.uid import UID

    from mida.deid.pixels import PixelRule, PixelRuleSet, header_facts
    from tests.conftest import shared

    path = shared("dicom", name)
    ds = pydicom.dcmread(path)
    before = ds.pixel_array.copy()
    ts = UID(str(ds.file_meta.TransferSyntaxUID))
    rules = PixelRuleSet(1, "test", (PixelRule("corner", blank=((0, 0, 4, 6),)),))
    PixelCleaner(rules, ocr=None).clean(ds, header_facts(ds))
    assert ds.file_meta.TransferSyntaxUID == ts, "native data keeps its transfer syntax"
    back = pydicom.dcmread(io.BytesIO(encode(ds))).pixel_array
    frames = back if back.ndim == before.ndim and int(ds.get("NumberOfFrames", 1)) > 1 else [back]
    originals = before if int(ds.get("NumberOfFrames", 1)) > 1 else [before]
    for new, old in zip(frames, originals, strict=True):
        assert not new[:4, :6].any() or ds.PhotometricInterpretation == "MONOCHROME1"
        assert np.array_equal(new[4:], old[4:]) and np.array_equal(new[:, 6:], old[:, 6:])


def test_implicit_vr_elements_survive_re_encoding_after_decompression(tmp_path: Path) -> None:
    # SC_rgb_jpeg.dcm declares JPEG Baseline (explicit VR) but its elements are
    # implicit VR; cleaning decodes it and stores Explicit VR Little Endian
    from mida.config import Settings
    from mida.deid import Deidentifier, get_profile
    from mida.ingest import parse
    from mida.ingest.processor import ensure_file_meta, make_safe, pixel_cleaner
    from tests.conftest import shared

    data = shared("dicom", "pydicom_test_files", "test_files", "SC_rgb_jpeg.dcm").read_bytes()
    ds = parse.read_dataset(data)
    ensure_file_meta(ds)
    settings = Settings(home=tmp_path)
    cleaner = pixel_cleaner(settings)
    cleaner.ocr = None  # rules only: this checks the encoding, not OCR
    make_safe(ds, Deidentifier(b"k" * 32, get_profile("default")), cleaner, settings)
    back = pydicom.dcmread(io.BytesIO(encode(ds)))
    assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert back.pixel_array.shape == (256, 256, 3) and back.PatientID == ds.PatientID
