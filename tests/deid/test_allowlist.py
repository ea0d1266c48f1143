"""What survives although Table E.1-1 does not list it."""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

from mida.deid.allowlist import (
    BULK_TAGS,
    CLASS_UID_TAGS,
    CODE_TAGS,
    STANDARD_CODING_SCHEMES,
    TEXT_TAGS,
    keep_unlisted,
)
from mida.deid.table import load_table


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None
    return tag


def test_allow_lists_never_override_the_table() -> None:
    table = load_table()
    for tag in TEXT_TAGS | BULK_TAGS | CLASS_UID_TAGS | CODE_TAGS:
        rule = table.lookup(tag)
        assert rule is None, f"{rule} is in Table E.1-1; the table decides it"


def test_technical_text_and_bulk_data_are_kept() -> None:
    kept = [
        ("Manufacturer", "LO"),
        ("ConvolutionKernel", "SH"),
        ("WindowCenterWidthExplanation", "LO"),
        ("PixelData", "OW"),
        ("FloatPixelData", "OF"),
        ("RedPaletteColorLookupTableData", "OW"),
    ]
    for keyword, vr in kept:
        assert keep_unlisted(_tag(keyword), vr), keyword


def test_other_text_is_removed() -> None:
    for keyword, vr in [("TextValue", "UT"), ("PixelDataProviderURL", "UR"),
                        ("CodingSchemeName", "ST"), ("TypeOfPatientID", "LO")]:  # fmt: skip
        assert not keep_unlisted(_tag(keyword), vr), keyword


def test_strict_mode_keeps_bulk_data_only() -> None:
    assert keep_unlisted(_tag("PixelData"), "OB", strict=True)
    assert not keep_unlisted(_tag("Manufacturer"), "LO", strict=True)
    assert not keep_unlisted(_tag("RescaleType"), "LO", strict=True)


def test_class_uids_and_schemes() -> None:
    assert _tag("TransferSyntaxUID") in CLASS_UID_TAGS
    assert _tag("SOPInstanceUID") not in CLASS_UID_TAGS
    assert {"DCM", "SCT", "LN", "UCUM"} <= STANDARD_CODING_SCHEMES
    assert "99LOCAL" not in STANDARD_CODING_SCHEMES and "L" not in STANDARD_CODING_SCHEMES
