"""RTSTRUCT import: closed contours rasterised onto the series they were drawn on.

pydicom's ``rtstruct.dcm`` references series 1.2.826.0.1.3680043.8.498.2010020400001.2.1.1
in frame of reference ...2010020400001.2; no image of it is in the corpus, so the
tests write a CT series with exactly those UIDs (in the file's own study,
...2010020400001.1; its RT Referenced Study item names ...2.1, which the
importer does not need: it resolves the series) covering the contours: 45x45
voxels of 10 mm from (-220, -170) mm, slices at z = -200, -190, -180 mm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from mida.annotations import store
from mida.annotations.formats import ImportOptions, import_path
from mida.annotations.formats.rtstruct import rasterise
from mida.annotations.geometry import SeriesGeometry, SliceRef
from mida.deid.pseudonyms import Pseudonymizer
from mida.errors import GeometryMismatchError, NotFoundError
from mida.node import Node
from tests.annotations.conftest import ingest_ct
from tests.annotations.test_seg import export_and_read_back, masks_of
from tests.conftest import shared
from tests.factories import PHI

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

STUDY = "1.2.826.0.1.3680043.8.498.2010020400001.1"
SERIES = "1.2.826.0.1.3680043.8.498.2010020400001.2.1.1"
FOR = "1.2.826.0.1.3680043.8.498.2010020400001.2"
RTSTRUCT = ("dicom", "pydicom_test_files", "test_files", "rtstruct.dcm")


def _series(node: Node, tmp_path: Path) -> str:
    ingest_ct(node, tmp_path / "ct", study_uid=STUDY, series_uid=SERIES, for_uid=FOR,
              slices=3, size=45, spacing=10.0, thickness=10.0, origin=(-220.0, -170.0, -200.0))
    return Pseudonymizer(node.key()).uid(SERIES)


def _expected() -> np.ndarray:
    """The rectangle x -200..200, y -150..150 mm on every slice: columns 2..42, rows 2..32."""
    want = np.zeros((3, 45, 45), dtype=bool)
    want[:, 2:33, 2:43] = True
    return want


@pytest.mark.shared_data
def test_closed_contours_fill_the_expected_voxels_and_export_as_seg(node: Node,
                                                                    tmp_path: Path) -> None:
    rt = shared(*RTSTRUCT)
    series_uid = _series(node, tmp_path)
    res = import_path(node, rt, "rtstruct", ImportOptions(reader="planner"))
    assert len(res.created) == 1
    # the two isocentres are points, not regions: skipped with the reason
    assert len(res.skipped) == 2
    assert all("POINT" in line and "Isocenter" in line for line in res.skipped)
    (uid,) = res.created
    ann, mask = masks_of(node, reader="planner")[uid]
    assert ann.label == "patient"
    assert np.array_equal(mask, _expected()), np.argwhere(mask != _expected())[:5]
    with node.catalog().session() as s:
        rev = store.latest(s, store.get(s, uid))
        _, schema = store.get_schema(s, res.schema)
        assert rev.data["voxels"] == 3 * 31 * 41
        assert rev.provenance["interpreted_type"] == "EXTERNAL"
        assert rev.provenance["format"] == "rtstruct"
        assert rev.provenance["file_sha256"] == res.file_sha256
    lb = schema.label("patient")
    assert (lb.concept.CodeValue, lb.concept.CodingSchemeDesignator) == ("123037004", "SCT")
    assert lb.colour == "#dca078"  # ROI Display Color 220\160\120
    # re-import: nothing new
    assert import_path(node, rt, "rtstruct", ImportOptions(reader="planner")).created == []
    # the required round trip: SEG export, dciodvfy clean, same voxels read back
    _, back = export_and_read_back(node, tmp_path / "out", series_uid, "planner")
    assert np.array_equal(back[uid], mask)


def _edited(tmp_path: Path, **changes: object) -> Path:
    ds = pydicom.dcmread(shared(*RTSTRUCT), force=True)
    for k, v in changes.items():
        setattr(ds, k, v)
    out = tmp_path / "edited.dcm"
    ds.save_as(out)
    return out


@pytest.mark.shared_data
def test_a_contour_off_the_slices_is_refused_with_its_position(node: Node,
                                                               tmp_path: Path) -> None:
    _series(node, tmp_path)
    ds = pydicom.dcmread(shared(*RTSTRUCT), force=True)
    contour = ds.ROIContourSequence[0].ContourSequence[1]
    pts = [float(v) for v in contour.ContourData]
    pts[2::3] = [-195.0] * (len(pts) // 3)
    contour.ContourData = pts
    bad = tmp_path / "off.dcm"
    ds.save_as(bad)
    with pytest.raises(GeometryMismatchError, match=r"-195\.000 mm .*from -200\.000 to -180\.000"):
        import_path(node, bad, "rtstruct", ImportOptions(reader="planner"))
    with node.catalog().session() as s:
        assert store.query(s) == []  # one transaction per file: nothing half-imported


@pytest.mark.shared_data
def test_open_contours_and_empty_rois_are_skipped_with_reasons(node: Node,
                                                               tmp_path: Path) -> None:
    _series(node, tmp_path)
    ds = pydicom.dcmread(shared(*RTSTRUCT), force=True)
    for c in ds.ROIContourSequence[0].ContourSequence:
        c.ContourGeometricType = "OPEN_PLANAR"
    del ds.ROIContourSequence[1].ContourSequence
    path = tmp_path / "open.dcm"
    ds.save_as(path)
    res = import_path(node, path, "rtstruct", ImportOptions(reader="planner"))
    assert res.created == []
    text = "\n".join(res.skipped)
    assert "ROI 1 'patient' is not a closed region (OPEN_PLANAR, EXTERNAL)" in text
    assert "ROI 2 'Isocenter 1' has no contours" in text
    assert "ROI 3 'Isocenter 2' is a point (POINT, ISOCENTER)" in text


@pytest.mark.shared_data
def test_structure_set_of_an_absent_series_names_its_pseudonym(node: Node) -> None:
    with pytest.raises(NotFoundError) as e:
        import_path(node, shared(*RTSTRUCT), "rtstruct", ImportOptions(reader="planner"))
    assert Pseudonymizer(node.key()).uid(SERIES) in str(e.value)
    assert SERIES not in str(e.value)


@pytest.mark.shared_data
def test_no_phi_from_the_structure_set_reaches_the_catalog(node: Node, tmp_path: Path) -> None:
    _series(node, tmp_path)  # its images carry the planted PHI too
    ds = pydicom.dcmread(shared(*RTSTRUCT), force=True)
    ds.PatientName = PHI["name"]
    ds.PatientID = PHI["pid"]
    ds.StructureSetROISequence[0].ROIName = f"body {PHI['pid']}"
    ds.StructureSetROISequence[0].ROIGenerationAlgorithm = "MANUAL"
    path = tmp_path / "phi.dcm"
    ds.save_as(path)
    res = import_path(node, path, "rtstruct", ImportOptions(reader="planner"))
    with node.catalog().session() as s:
        views = [store.view(s, a, r) for a, r in store.query(s)]
        _, schema = store.get_schema(s, res.schema)
    assert [v["label"] for v in views] == ["body"]
    blobs = [repr(views).encode(), repr(schema.canonical()).encode()]
    blobs += [p.read_bytes() for p in node.settings.home.glob("catalog.sqlite*")]
    for blob in blobs:
        for needle in (PHI["name"], PHI["pid"], "Lin^Wen", "Test^Phantom"):
            assert needle.encode() not in blob


def test_rasterising_rounds_vertices_to_voxel_centres_and_nests_holes() -> None:
    """Two slices 2 mm apart, 1 mm pixels: an outer square with a hole on slice 1."""
    geom = SeriesGeometry(
        series_uid="1.2.3", study_uid="1.2", frame_of_reference_uid="1.2.4", shape=(2, 12, 12),
        origin=(0.0, 0.0, 0.0), spacing=(2.0, 1.0, 1.0),
        direction=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
        slices=(SliceRef("1.2.5", "1.2.840.10008.5.1.4.1.1.2", 1),
                SliceRef("1.2.6", "1.2.840.10008.5.1.4.1.1.2", 1)),
        positions=((0.0, 0.0, 0.0), (0.0, 0.0, 2.0)))

    def contour(x0: float, y0: float, x1: float, y1: float, z: float) -> pydicom.Dataset:
        c = pydicom.Dataset()
        c.ContourGeometricType = "CLOSED_PLANAR"
        c.ContourData = [x0, y0, z, x1, y0, z, x1, y1, z, x0, y1, z]
        return c

    # vertices 0.4 voxel off the centres round to columns 2..8, rows 1..9
    mask = rasterise([contour(1.6, 1.4, 8.4, 8.6, 2.0), contour(4, 4, 6, 6, 2.0)], geom, "ROI")
    want = np.zeros((2, 12, 12), dtype=bool)
    want[1, 1:10, 2:9] = True
    want[1, 4:7, 4:7] = False  # the inner contour is a hole
    assert np.array_equal(mask, want), np.argwhere(mask != want)
    with pytest.raises(GeometryMismatchError, match=r"1\.000 mm .*from 0\.000 to 2\.000"):
        rasterise([contour(1, 1, 5, 5, 1.0)], geom, "ROI")
