"""DICOM SEG import and export: segments become masks on the series grid and come back out.

Round trips (import -> export -> dciodvfy -> highdicom segread) compare voxels
against the stored masks; imports are checked against highdicom's own reading
of the file (``get_pixels_by_source_instance``) on the source images.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest

from mida.annotations import store
from mida.annotations.formats import ExportOptions, ImportOptions, export, import_path
from mida.annotations.geometry import series_geometry
from mida.annotations.schema import parse_schema
from mida.catalog.models import Annotation
from mida.deid.pseudonyms import Pseudonymizer
from mida.errors import AnnotationError, GeometryMismatchError, NotFoundError, SchemaError
from mida.ingest import ingest_paths
from mida.node import Node
from tests.annotations.conftest import SCHEMA, CtCase
from tests.conftest import REQUIRE_SERVICES, shared
from tests.factories import PHI

DCIODVFY = shutil.which("dciodvfy")
HD = ("dicom", "highdicom_test_files")
CT2 = ("dicom", "pydicom_test_files", "test_files", "dicomdirtests", "77654033", "CT2")
CR1 = ("dicom", "pydicom_test_files", "test_files", "dicomdirtests", "77654033", "CR1", "6154")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ------------------------------------------------------------------ helpers (used by the
# RTSTRUCT and SR tests too)

def dciodvfy_errors(path: Path) -> list[str]:
    """The 'Error' lines dciodvfy prints for a file (plain and -new checks)."""
    if DCIODVFY is None:
        if REQUIRE_SERVICES:  # CI must validate, never skip
            pytest.fail("dciodvfy is not installed but CI requires it (.ci/run installs "
                        "dicom3tools)")
        pytest.skip("dciodvfy is not installed (.ci/run installs dicom3tools)")
    lines: list[str] = []
    for args in ([], ["-new"]):
        out = subprocess.run([DCIODVFY, *args, str(path)], capture_output=True, text=True,
                             errors="replace", timeout=60, check=False)
        lines += [ln.strip() for ln in (out.stdout + out.stderr).splitlines()
                  if ln.strip().startswith("Error")]
    return lines


def masks_of(node: Node, **filters: Any) -> dict[str, tuple[Annotation, np.ndarray]]:
    """Stored masks by annotation UID (latest revisions)."""
    with node.catalog().session() as s:
        rows = store.query(s, kind="mask", **filters)
        out = {a.uid: (a, store.load_mask(node.store(), r)) for a, r in rows}
        for a, _ in out.values():
            s.expunge(a)
    return out


def export_and_read_back(node: Node, out: Path, series_uid: str, reader: str
                         ) -> tuple[Path, dict[str, np.ndarray]]:
    """Export one reader's masks of a series as SEG, validate it, read it back per segment.

    Returns the file and, by annotation UID (the segment's Tracking UID), the
    voxels highdicom reads on the series grid.
    """
    result = export(node, "seg", ExportOptions(out=out, series_uid=series_uid, reader=reader))
    assert len(result.files) == 1, result.as_dict()
    path = result.files[0]
    errors = dciodvfy_errors(path)
    assert errors == [], f"dciodvfy errors in {path.name}:\n" + "\n".join(errors)
    with node.catalog().session() as s:
        g = series_geometry(s, series_uid)
    seg = hd.seg.segread(path)
    assert seg.Manufacturer == "mida"
    order = list(dict.fromkeys(sl.sop_instance_uid for sl in g.slices))
    if len(order) == len(g.slices):
        px = seg.get_pixels_by_source_instance(order, assert_missing_frames_are_empty=True)
    else:  # one multi-frame source
        px = seg.get_pixels_by_source_frame(order[0], [sl.frame for sl in g.slices],
                                            assert_missing_frames_are_empty=True)
    back = {}
    for j, desc in enumerate(seg.SegmentSequence):
        back[str(desc.TrackingUID)] = px[..., j].astype(bool)
    return path, back


def expected_from_file(node: Node, seg_path: Path, series_uid: str, sources: list[Path]
                       ) -> dict[int, np.ndarray]:
    """What highdicom reads from a SEG on the ingested series grid, per segment number.

    The source files give the original UIDs; the catalog holds their pseudonyms.
    Fractional segments are thresholded at half the maximum, as the importer promises.
    """
    p = Pseudonymizer(node.key())
    originals = {p.uid(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)):
                 str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in sources}
    with node.catalog().session() as s:
        g = series_geometry(s, series_uid)
    order = [originals[sl.sop_instance_uid] for sl in g.slices]
    seg = hd.seg.segread(seg_path)
    px = seg.get_pixels_by_source_instance(order, assert_missing_frames_are_empty=True,
                                           rescale_fractional=True)
    out = {}
    for j, num in enumerate(seg.segment_numbers):
        out[num] = px[..., j] >= 0.5 if seg.SegmentationType == "FRACTIONAL" else px[..., j] > 0
    return out


def ingest(node: Node, *paths: Path) -> None:
    summary = ingest_paths(node, list(paths), "shared", workers=1)
    assert summary.stored + summary.duplicates >= 1, summary


def series_of(node: Node, path: Path) -> str:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return Pseudonymizer(node.key()).uid(str(ds.SeriesInstanceUID))


def _lesion(ct_case: CtCase, reader: str, mask: np.ndarray, *, kind: str = "person",
            version: str | None = None, status: str = "submitted") -> str:
    with ct_case.node.catalog().session() as s:
        g = series_geometry(s, ct_case.series_uid)
        t = store.UidMapper(s).target(series_uid=ct_case.series_uid)
        rev = store.create(s, ct_case.node.store(), target=t, schema=ct_case.schema,
                           label="lesion", reader=reader, reader_kind=kind, model_version=version,
                           status=status, mask=mask, geometry=g)
        uid: str = s.get(Annotation, rev.annotation_id).uid  # type: ignore[union-attr]
    return uid


# ------------------------------------------------------------------ synthetic (no shared data)

def test_synthetic_mask_exports_as_valid_seg_and_imports_back(ct_case: CtCase,
                                                              tmp_path: Path) -> None:
    node = ct_case.node
    uid = _lesion(ct_case, "alice", ct_case.truth)
    path, back = export_and_read_back(node, tmp_path / "out", ct_case.series_uid, "alice")
    assert np.array_equal(back[uid], ct_case.truth)
    ds = pydicom.dcmread(path)
    desc = ds.SegmentSequence[0]
    lesion = parse_schema(SCHEMA).label("lesion")
    assert desc.SegmentLabel == "lesion"
    assert desc.SegmentedPropertyTypeCodeSequence[0].CodeValue == lesion.concept.CodeValue
    assert desc.SegmentedPropertyCategoryCodeSequence[0].CodeValue == \
        lesion.category_code().CodeValue
    assert desc.SegmentAlgorithmType == "MANUAL"
    rgb = hd.color.CIELabColor.from_dicom_value(desc.RecommendedDisplayCIELabValue).to_rgb()
    assert rgb == pytest.approx([int(lesion.colour[i:i + 2], 16) for i in (1, 3, 5)], abs=1)
    assert str(ds.ContentCreatorName).rstrip("^") == "alice"
    assert ds.StudyInstanceUID == ct_case.study_uid
    assert {str(i.ReferencedSOPInstanceUID) for i in
            ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence} <= set(ct_case.sop_uids)

    # back in as another reader against the schema: same voxels, same label
    res = import_path(node, path, "seg", ImportOptions(reader="bob", schema="liver"))
    assert len(res.created) == 1 and res.schema == "liver@1.0.0"
    got = masks_of(node, reader="bob")
    ann, mask = got[res.created[0]]
    assert ann.label == "lesion" and np.array_equal(mask, ct_case.truth)
    # the same file again for the same reader creates nothing
    again = import_path(node, path, "seg", ImportOptions(reader="bob", schema="liver"))
    assert again.created == [] and "already imported" in again.skipped[0]
    assert len(masks_of(node, reader="bob")) == 1
    # without a schema one is derived from the segment descriptions
    res3 = import_path(node, path, "seg", ImportOptions(reader="carol"))
    with node.catalog().session() as s:
        _, schema = store.get_schema(s, res3.schema)
    assert res3.schema.startswith("seg-") and [lb.name for lb in schema.labels] == ["lesion"]
    lb = schema.labels[0]
    assert lb.concept == lesion.concept and lb.category == lesion.category_code()
    assert lb.colour == lesion.colour


def test_model_reader_exports_automatic_segments_with_its_version(ct_case: CtCase,
                                                                  tmp_path: Path) -> None:
    node = ct_case.node
    upper = ct_case.truth.copy()
    upper[: ct_case.truth.shape[0] // 2] = False
    uid_m = _lesion(ct_case, "livernet", upper, kind="model", version="2.1.0")
    _lesion(ct_case, "alice", ct_case.truth, status="draft")
    path, back = export_and_read_back(node, tmp_path / "m", ct_case.series_uid, "livernet")
    assert np.array_equal(back[uid_m], upper)
    desc = pydicom.dcmread(path).SegmentSequence[0]
    assert desc.SegmentAlgorithmType == "AUTOMATIC"
    assert desc.SegmentAlgorithmName == "livernet"
    algo = desc.SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "livernet" and algo.AlgorithmVersion == "2.1.0"
    # the filters: one file per (series, reader), status and reader narrow the selection
    every = export(node, "seg", ExportOptions(out=tmp_path / "all"))
    assert len(every.files) == 2 and every.annotations == 2
    drafts = export(node, "seg", ExportOptions(out=tmp_path / "d", status="draft"))
    assert len(drafts.files) == 1 and "alice" in drafts.files[0].name
    assert export(node, "seg", ExportOptions(out=tmp_path / "n", reader="nobody")).files == []
    assert export(node, "seg", ExportOptions(out=tmp_path / "s", schema="liver@1.0.0")
                  ).annotations == 2
    with pytest.raises(NotFoundError, match=r"liver@1\.0\.0"):
        export(node, "seg", ExportOptions(out=tmp_path / "x", schema="spleen"))


def test_frames_without_source_references_are_placed_by_plane_position(
        ct_case: CtCase, tmp_path: Path) -> None:
    node = ct_case.node
    _lesion(ct_case, "alice", ct_case.truth)
    res = export(node, "seg", ExportOptions(out=tmp_path / "o"))
    ds = pydicom.dcmread(res.files[0])
    for fg in ds.PerFrameFunctionalGroupsSequence:
        del fg.DerivationImageSequence
    del ds.ReferencedSeriesSequence
    stripped = tmp_path / "noref.dcm"
    ds.save_as(stripped)
    with pytest.raises(AnnotationError, match="--series"):
        import_path(node, stripped, "seg", ImportOptions(reader="bob"))
    out = import_path(node, stripped, "seg",
                      ImportOptions(reader="bob", series_uid=ct_case.series_uid))
    _, mask = masks_of(node, reader="bob")[out.created[0]]
    assert np.array_equal(mask, ct_case.truth)
    # a frame between two slices is refused with the distance
    ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient[2] += 1.2
    ds.save_as(stripped)
    with pytest.raises(GeometryMismatchError, match=r"no slice of series .*1\.200 mm away"):
        import_path(node, stripped, "seg",
                    ImportOptions(reader="carol", series_uid=ct_case.series_uid))


def _flip_rows(ds: pydicom.Dataset) -> None:
    """Re-describe a SEG's frames bottom-up, as dcmqi writes them for a NIfTI label map.

    Every frame's rows are reversed, the frames are oriented (1,0,0, 0,-1,0) and each
    frame's position becomes its last row's: the same voxels, described the other way.
    """
    from pydicom.pixels import pack_bits

    frames = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)[:, ::-1, :]
    ds.PixelData = pack_bits(np.ascontiguousarray(frames))
    shared = ds.SharedFunctionalGroupsSequence[0]
    row_cos = [float(x) for x in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [*row_cos[:3],
                                                                  *(-x for x in row_cos[3:])]
    dy = float(shared.PixelMeasuresSequence[0].PixelSpacing[0])
    for fg in ds.PerFrameFunctionalGroupsSequence:
        pos = [float(x) for x in fg.PlanePositionSequence[0].ImagePositionPatient]
        fg.PlanePositionSequence[0].ImagePositionPatient = [
            pos[i] + (ds.Rows - 1) * dy * row_cos[3 + i] for i in range(3)]


@pytest.mark.parametrize("references", [True, False])
def test_frames_oriented_the_other_way_land_on_the_same_voxels(
        ct_case: CtCase, tmp_path: Path, references: bool) -> None:
    # dcmqi writes a label map's SEG with rows reversed against the CT (its frames still
    # reference the CT slices); reading frames as if oriented like the series mirrors the mask.
    node = ct_case.node
    truth = ct_case.truth.copy()
    truth[:, : ct_case.original["size"] // 2, :] = False  # not symmetric top to bottom
    _lesion(ct_case, "alice", truth)
    ds = pydicom.dcmread(export(node, "seg", ExportOptions(out=tmp_path / "o")).files[0])
    _flip_rows(ds)
    if not references:
        for fg in ds.PerFrameFunctionalGroupsSequence:
            del fg.DerivationImageSequence
    flipped = tmp_path / "flipped.dcm"
    ds.save_as(flipped)
    out = import_path(node, flipped, "seg",
                      ImportOptions(reader="bob", series_uid=ct_case.series_uid))
    _, mask = masks_of(node, reader="bob")[out.created[0]]
    assert np.array_equal(mask, truth)
    # an oblique frame cannot be laid on the grid without resampling: refused
    ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient = [
        0.8, 0.6, 0, -0.6, 0.8, 0]
    ds.save_as(flipped)
    with pytest.raises(GeometryMismatchError, match="resample"):
        import_path(node, flipped, "seg",
                    ImportOptions(reader="carol", series_uid=ct_case.series_uid))


def test_schema_matching_and_unmatched_segments(ct_case: CtCase, tmp_path: Path) -> None:
    node = ct_case.node
    _lesion(ct_case, "alice", ct_case.truth)
    path = export(node, "seg", ExportOptions(out=tmp_path / "o")).files[0]
    ds = pydicom.dcmread(path)
    desc = ds.SegmentSequence[0]
    desc.SegmentLabel = "Spleen"
    desc.SegmentedPropertyTypeCodeSequence[0].CodeValue = "78961009"
    desc.SegmentedPropertyTypeCodeSequence[0].CodeMeaning = "Spleen"
    other = tmp_path / "spleen.dcm"
    ds.save_as(other)
    with pytest.raises(SchemaError) as e:
        import_path(node, other, "seg", ImportOptions(reader="bob", schema="liver"))
    msg = str(e.value)
    assert "segment 1 'Spleen' (78961009, SCT" in msg
    for lb in parse_schema(SCHEMA).labels:  # the schema's mask labels, with their codes
        shown = f"{lb.name} ({lb.concept.CodeValue}, {lb.concept.CodingSchemeDesignator})"
        assert (shown in msg) == (lb.type == "mask"), shown
    assert "nothing was imported" in msg and masks_of(node, reader="bob") == {}
    res = import_path(node, other, "seg",
                      ImportOptions(reader="bob", schema="liver", label_map={"Spleen": "liver"}))
    assert [a.label for a, _ in masks_of(node, reader="bob").values()] == ["liver"]
    assert res.created
    with pytest.raises(SchemaError, match="'diameter', a measurement label"):
        import_path(node, other, "seg", ImportOptions(reader="carol", schema="liver",
                                                      label_map={"1": "diameter"}))


def test_no_phi_from_a_seg_header_reaches_catalog_data_or_exports(ct_case: CtCase,
                                                                  tmp_path: Path) -> None:
    node = ct_case.node
    _lesion(ct_case, "alice", ct_case.truth)
    ds = pydicom.dcmread(export(node, "seg", ExportOptions(out=tmp_path / "o")).files[0])
    ds.PatientName = PHI["name"]
    ds.PatientID = PHI["pid"]
    ds.PatientBirthDate = PHI["birth"]
    ds.SegmentSequence[0].SegmentLabel = f"lesion of {PHI['name'].replace('^', ' ')} {PHI['pid']}"
    ds.SegmentSequence[0].SegmentAlgorithmName = f"drawn for {PHI['phone']}"
    planted = tmp_path / "phi.dcm"
    ds.save_as(planted)
    res = import_path(node, planted, "seg", ImportOptions(reader="bob"))
    out = export(node, "seg", ExportOptions(out=tmp_path / "again", reader="bob"))
    with node.catalog().session() as s:
        views = [store.view(s, a, r) for a, r in store.query(s, reader="bob")]
        _, schema = store.get_schema(s, res.schema)
    assert views and views[0]["provenance"]["segment_label"].startswith("lesion")
    blobs = [repr(views).encode(), repr(schema.canonical()).encode()]
    blobs += [p.read_bytes() for p in node.settings.home.glob("catalog.sqlite*")]
    blobs += [p.read_bytes() for p in out.files]
    needles = [PHI["name"], "Lin Wen-Hsiung", "Wen-Hsiung", PHI["pid"], PHI["birth"],
               PHI["phone"]]
    for blob in blobs:
        for needle in needles:
            assert needle.encode() not in blob


# ------------------------------------------------------------------ the shared corpus

CT_SEGS = ["seg_image_ct_binary.dcm", "seg_image_ct_binary_overlap.dcm",
           "seg_image_ct_binary_fractional.dcm", "seg_image_ct_true_fractional.dcm"]


@pytest.mark.shared_data
@pytest.mark.parametrize("name", CT_SEGS)
def test_ct_seg_imports_on_its_series_and_round_trips(node: Node, tmp_path: Path,
                                                      name: str) -> None:
    ct2 = shared(*CT2)
    seg_path = shared(*HD, name)
    sources = sorted(ct2.iterdir())
    ingest(node, ct2)
    series_uid = series_of(node, sources[0])
    res = import_path(node, seg_path, "seg", ImportOptions(reader="hd"))
    seg = hd.seg.segread(seg_path)
    assert len(res.created) == seg.number_of_segments and res.skipped == []
    expected = expected_from_file(node, seg_path, series_uid, sources)
    got = masks_of(node, reader="hd")
    by_segment = {}
    for uid in res.created:
        _, mask = got[uid]
        with node.catalog().session() as s:
            prov = store.latest(s, store.get(s, uid)).provenance
        assert prov["format"] == "seg" and prov["file_sha256"] == res.file_sha256
        assert prov["tool"].startswith("mida ")
        by_segment[prov["segment_number"]] = mask
        if seg.SegmentationType == "FRACTIONAL":
            assert "0.5" in prov["threshold"]
    assert set(by_segment) == set(expected)
    for num, mask in by_segment.items():
        assert mask.any() and np.array_equal(mask, expected[num]), f"segment {num}"
    if name == "seg_image_ct_binary_overlap.dcm":
        assert (by_segment[1] & by_segment[2]).any()  # overlapping segments stay overlapping
    if name == "seg_image_ct_true_fractional.dcm":
        # stored values 0, 64 and 128 of 255: only the 128s are at least half the maximum
        raw = seg.pixel_array
        assert int(by_segment[1].sum()) == int((raw == 128).sum())
    # the derived schema names the segment's coded concept
    with node.catalog().session() as s:
        _, schema = store.get_schema(s, res.schema)
    codes = {lb.concept.CodeValue for lb in schema.labels}
    assert codes == {str(d.SegmentedPropertyTypeCodeSequence[0].CodeValue)
                     for d in seg.SegmentSequence}
    _, back = export_and_read_back(node, tmp_path / "out", series_uid, "hd")
    assert set(back) == set(res.created)
    for uid in res.created:
        assert np.array_equal(back[uid], got[uid][1])


@pytest.mark.shared_data
@pytest.mark.parametrize(("name", "source"), [
    ("seg_image_ct_binary_single_frame.dcm", (*HD, "ct_image.dcm")),
    ("seg_image_cr_binary.dcm", CR1),
])
def test_single_image_segs_round_trip(node: Node, tmp_path: Path, name: str,
                                      source: tuple[str, ...]) -> None:
    src = shared(*source)
    seg_path = shared(*HD, name)
    ingest(node, src)
    series_uid = series_of(node, src)
    res = import_path(node, seg_path, "seg", ImportOptions(reader="hd"))
    assert len(res.created) == 1
    expected = expected_from_file(node, seg_path, series_uid, [src])
    (uid,) = res.created
    _, mask = masks_of(node, reader="hd")[uid]
    assert mask.any() and np.array_equal(mask, expected[1])
    _, back = export_and_read_back(node, tmp_path / "out", series_uid, "hd")
    assert np.array_equal(back[uid], mask)


@pytest.mark.shared_data
def test_seg_of_images_not_ingested_names_the_pseudonym(node: Node) -> None:
    seg_path = shared(*HD, "seg_image_ct_binary.dcm")
    seg = pydicom.dcmread(seg_path)
    original = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    with pytest.raises(NotFoundError) as e:
        import_path(node, seg_path, "seg", ImportOptions(reader="hd"))
    assert Pseudonymizer(node.key()).uid(original) in str(e.value)
    assert original not in str(e.value) and "ingest" in str(e.value)


@pytest.mark.shared_data
def test_frames_on_an_image_not_ingested_name_its_pseudonym(node: Node, tmp_path: Path) -> None:
    seg_path = shared(*HD, "seg_image_ct_binary.dcm")
    seg = pydicom.dcmread(seg_path)
    first = str(seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
                .SourceImageSequence[0].ReferencedSOPInstanceUID)
    kept = tmp_path / "ct2"
    kept.mkdir()
    for f in sorted(shared(*CT2).iterdir()):
        if str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) != first:
            shutil.copy(f, kept / f.name)
    assert len(list(kept.iterdir())) == 3
    ingest(node, kept)
    with pytest.raises(NotFoundError) as e:
        import_path(node, seg_path, "seg", ImportOptions(reader="hd"))
    msg = str(e.value)
    assert f"references instance {Pseudonymizer(node.key()).uid(first)}" in msg
    assert first not in msg and "ingest" in msg


@pytest.mark.shared_data
def test_tiled_slide_segmentations_are_refused_clearly(node: Node) -> None:
    ingest(node, shared(*HD, "sm_image.dcm"))
    with pytest.raises(AnnotationError, match=r"tiled .*slice grid"):
        import_path(node, shared(*HD, "seg_image_sm_control.dcm"), "seg",
                    ImportOptions(reader="hd"))
    with node.catalog().session() as s:
        assert store.query(s) == []
