"""Clean Graphics: overlays and curves go whole, graphic annotation text is cleaned.

Product decision ("Overlays are removed under Clean Graphics"): the ``C`` of
Table E.1-1 for Overlay Data, Overlay Comments and Curve Data removes their
groups whole, as the Basic Profile does; the ``C`` of Graphic Annotation
Sequence keeps the annotations: graphic objects stay, the text of each text
object is cleaned of names, IDs and dates, and a text object left without
text is dropped. Without the option the Basic Profile's ``D`` keeps the
graphics but no text.
"""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from mida.deid import Deidentifier, Option, Profile, get_profile

from .builders import KEY, ct_dataset, default_without, output_bytes, reread

DEFAULT = default_without(Option.CLEAN_GRAPHICS, "default-no-graphics")
GRAPHICS = get_profile("default")  # the default research profile applies Clean Graphics
BASIC_GRAPHICS = Profile("basic-graphics", "1", options=frozenset({Option.CLEAN_GRAPHICS}))
KEPT = "arrow: lesion 2 cm"
NAMES = ("Chen Mei-Ling", "WATSON^JOHN")


@pytest.fixture(scope="module")
def graphics() -> Deidentifier:
    return Deidentifier(KEY, GRAPHICS)


def text_object(text: str) -> Dataset:
    item = Dataset()
    item.UnformattedTextValue = text
    item.AnchorPoint = [10.0, 20.0]
    item.AnchorPointAnnotationUnits = "PIXEL"
    item.AnchorPointVisibility = "Y"
    return item


def annotated(*texts: str) -> Dataset:
    """A CT with overlays, a curve and a graphic annotation holding `texts`."""
    ds = ct_dataset()
    polyline = Dataset()
    polyline.GraphicAnnotationUnits = "PIXEL"
    polyline.GraphicDimensions = 2
    polyline.NumberOfGraphicPoints = 2
    polyline.GraphicData = [1.0, 2.0, 30.0, 40.0]
    polyline.GraphicType = "POLYLINE"
    annotation = Dataset()
    annotation.GraphicLayer = "LESIONS"
    annotation.TextObjectSequence = [text_object(t) for t in texts]
    annotation.GraphicObjectSequence = [polyline]
    ds.GraphicAnnotationSequence = [annotation]
    for group in (0x6000, 0x6002):
        ds.add_new(group << 16 | 0x0010, "US", 16)
        ds.add_new(group << 16 | 0x0011, "US", 16)
        ds.add_new(group << 16 | 0x0040, "CS", "G")
        ds.add_new(group << 16 | 0x0100, "US", 1)
        ds.add_new(group << 16 | 0x3000, "OW", b"\x00" * 32)
        ds.add_new(group << 16 | 0x4000, "LT", "overlay by WATSON^JOHN")  # Overlay Comments
    ds.add_new(0x50000005, "US", 2)  # Curve Dimensions
    ds.add_new(0x50003000, "OW", b"\x00" * 8)  # Curve Data
    return reread(ds)


def texts_of(ds: Dataset) -> list[str]:
    (annotation,) = ds.GraphicAnnotationSequence
    return [str(t.UnformattedTextValue) for t in annotation.get("TextObjectSequence", [])]


def test_overlays_and_curves_are_removed_whole(graphics: Deidentifier) -> None:
    ds = annotated(KEPT)
    graphics.apply(ds)
    assert [e.tag for e in ds if e.tag.group >> 8 in (0x50, 0x60)] == []
    assert b"overlay by" not in output_bytes(ds)


def test_annotation_text_is_cleaned_and_clinical_text_kept(graphics: Deidentifier) -> None:
    ds = annotated(KEPT, *NAMES, "2 cm, seen by Chen Mei-Ling", "DOE JANE")
    graphics.apply(ds)
    # names alone: their text objects go; mixed: cleaned; DOE JANE: the patient
    assert texts_of(ds) == [KEPT, "2 cm, seen"]
    data = output_bytes(ds)
    for name in (*NAMES, "Mei-Ling", "WATSON", "DOE JANE"):
        assert name.encode() not in data, name
    (annotation,) = ds.GraphicAnnotationSequence
    for item in annotation.TextObjectSequence:  # the rest of a text object follows normal rules
        assert item.AnchorPoint == [10.0, 20.0] and item.AnchorPointVisibility == "Y"


def test_graphic_objects_are_kept(graphics: Deidentifier) -> None:
    ds = annotated(*NAMES)
    graphics.apply(ds)
    (annotation,) = ds.GraphicAnnotationSequence
    assert annotation.GraphicLayer == "LESIONS"
    assert "TextObjectSequence" not in annotation  # every text object lost its text
    (polyline,) = annotation.GraphicObjectSequence
    assert polyline.GraphicData == [1.0, 2.0, 30.0, 40.0]
    assert (polyline.GraphicType, polyline.NumberOfGraphicPoints) == ("POLYLINE", 2)


def test_the_option_is_recorded_with_its_code(graphics: Deidentifier) -> None:
    ds = annotated(KEPT)
    graphics.apply(ds)
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert "113103" in codes
    assert codes == [c.CodeValue for c in GRAPHICS.method_codes()]


def test_without_the_option_annotation_text_goes() -> None:
    ds = annotated(KEPT, *NAMES)
    Deidentifier(KEY, DEFAULT).apply(ds)
    assert [e.tag for e in ds if e.tag.group >> 8 in (0x50, 0x60)] == []
    (annotation,) = ds.GraphicAnnotationSequence  # D: kept, items filtered strictly
    assert all("UnformattedTextValue" not in t for t in annotation.TextObjectSequence)
    assert annotation.GraphicObjectSequence[0].GraphicData == [1.0, 2.0, 30.0, 40.0]
    assert "113103" not in [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]


def test_clean_graphics_alone_cleans_with_the_dataset_identifiers() -> None:
    ds = annotated(KEPT, "DOE JANE")  # the patient's name, known only from the dataset
    Deidentifier(KEY, BASIC_GRAPHICS).apply(ds)
    assert texts_of(ds) == [KEPT]
