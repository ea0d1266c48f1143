"""Radiomics per annotated region: equal to pyradiomics run directly, traced to the mask."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from radiomics import featureextractor
from sqlalchemy import select

from mida.annotations import store as ann_store
from mida.annotations.geometry import series_geometry
from mida.annotations.schema import parse_schema
from mida.catalog.models import Feature
from mida.features import extract, features_of
from mida.features.radiomics import SETTINGS, extractor_name
from mida.node import Node
from tests.annotations.conftest import SCHEMA
from tests.conftest import shared
from tests.features.conftest import catalog_uid, ingest_series, phantom, write_series


def direct(folder: Path, mask: np.ndarray) -> dict[str, float]:
    """pyradiomics on the original files as SimpleITK reads them, with the same settings."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    assert image.GetOrigin() == pytest.approx((-20.0, -20.0, 0.0))  # slices sorted upwards
    label = sitk.GetImageFromArray(mask.astype(np.uint8))
    label.CopyInformation(image)
    ex = featureextractor.RadiomicsFeatureExtractor(**SETTINGS)
    return {k: float(v) for k, v in ex.execute(image, label, label=1).items()
            if not k.startswith("diagnostics_")}


@pytest.fixture
def lesion_case(node: Node, tmp_path: Path) -> dict[str, Any]:
    """A noisy CT phantom, ingested, with a lesion mask and a body ("liver") mask."""
    ph = phantom(6, 40, sigma=20.0, seed=11)
    info = write_series(tmp_path / "ct", ph["hu"])
    ingest_series(node, tmp_path / "ct")
    uid = catalog_uid(node, info["series"])
    body = ph["hu"] > -500
    with node.catalog().session() as s:
        schema, _ = ann_store.add_schema(s, parse_schema(SCHEMA))
        target = ann_store.UidMapper(s).target(series_uid=uid)
        g = series_geometry(s, uid)
        revs = [ann_store.create(s, node.store(), target=target, schema=schema, label=label,
                                 reader="ann", mask=m, geometry=g)
                for label, m in (("lesion", ph["lesion"]), ("liver", body))]
        uids = [ann_store.query(s, series_uid=uid, label=lb)[0][0].uid
                for lb in ("lesion", "liver")]
        rev_ids = [r.id for r in revs]
    return {"uid": uid, "folder": tmp_path / "ct", "lesion": ph["lesion"], "body": body,
            "uids": uids, "rev_ids": rev_ids}


def test_radiomics_values_equal_pyradiomics_run_directly(node: Node,
                                                         lesion_case: dict[str, Any]) -> None:
    with node.catalog().session() as s:
        res = extract(s, node.store(), series_uids=[lesion_case["uid"]], radiomics=True)
        got = features_of(s, lesion_case["uid"], family="radiomics")["radiomics"]
        rows = list(s.scalars(select(Feature).where(Feature.family == "radiomics")))
    lesion_uid, liver_uid = lesion_case["uids"]
    assert sorted(got) == sorted([f"lesion:{lesion_uid}@1", f"liver:{liver_uid}@1"])
    for region, mask in ((f"lesion:{lesion_uid}@1", lesion_case["lesion"]),
                         (f"liver:{liver_uid}@1", lesion_case["body"])):
        want = direct(lesion_case["folder"], mask)
        assert len(want) == 107 and set(got[region]) == set(want)
        for name, value in want.items():
            assert got[region][name] == pytest.approx(value, rel=1e-6, abs=1e-12), name
    assert got[f"lesion:{lesion_uid}@1"]["original_shape_VoxelVolume"] == pytest.approx(
        lesion_case["lesion"].sum() * 0.8 * 0.8 * 2.5)
    assert res.by_family["radiomics"] == 214
    assert {r.extractor for r in rows} == {extractor_name()} == {"pyradiomics 3.1.4"}
    assert {r.annotation_revision_id for r in rows} == set(lesion_case["rev_ids"])


def test_a_new_mask_revision_replaces_the_old_regions(node: Node,
                                                      lesion_case: dict[str, Any]) -> None:
    uid, (lesion_uid, _) = lesion_case["uid"], lesion_case["uids"]
    with node.catalog().session() as s:
        extract(s, node.store(), series_uids=[uid], radiomics=True, qc=False)
        ann = ann_store.get(s, lesion_uid)
        smaller = lesion_case["lesion"].copy()
        smaller[: smaller.shape[0] // 2] = False
        rev2 = ann_store.revise(s, node.store(), ann, author="ann", mask=smaller)
        s.commit()
        extract(s, node.store(), series_uids=[uid], radiomics=True, qc=False)
        got = features_of(s, uid, family="radiomics")["radiomics"]
        rev_ids = set(s.scalars(select(Feature.annotation_revision_id)
                                .where(Feature.region == f"lesion:{lesion_uid}@2")))
    assert f"lesion:{lesion_uid}@1" not in got and f"lesion:{lesion_uid}@2" in got
    assert rev_ids == {rev2.id}
    assert got[f"lesion:{lesion_uid}@2"]["original_shape_VoxelVolume"] == pytest.approx(
        smaller.sum() * 0.8 * 0.8 * 2.5)


def test_series_without_masks_is_skipped_and_empty_masks_noted(node: Node, tmp_path: Path) -> None:
    info = write_series(tmp_path / "ct", phantom(3, 16)["hu"])
    ingest_series(node, tmp_path / "ct")
    uid = catalog_uid(node, info["series"])
    with node.catalog().session() as s:
        res = extract(s, node.store(), series_uids=[uid], radiomics=True, qc=False)
        assert [(k.family, k.reason) for k in res.skipped] == [
            ("radiomics", "no mask annotation on this series")]
        schema, _ = ann_store.add_schema(s, parse_schema(SCHEMA))
        target = ann_store.UidMapper(s).target(series_uid=uid)
        ann_store.create(s, node.store(), target=target, schema=schema, label="lesion",
                               reader="ann", mask=np.zeros((3, 16, 16), bool),
                               geometry=series_geometry(s, uid))
        s.commit()
        res = extract(s, node.store(), series_uids=[uid], radiomics=True, qc=False)
    assert len(res.skipped) == 1 and res.skipped[0].reason.endswith("the mask is empty")


def test_radiomics_on_totalsegmentator_reference_ct_equal_pyradiomics(
        node: Node, tmp_path: Path) -> None:
    """Real data: a 20-slice JPEG 2000 CT and one organ of its reference label map.

    The direct run reads the DICOM files with SimpleITK (GDCM) and the NIfTI
    label map with SimpleITK, placing it on the CT grid by physical space
    (nearest neighbour; the two grids are the same lattice, the NIfTI flipped
    in y). mida reads the same files through ingest, the catalog's geometry
    and its own decoder.
    """
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    ts = shared("labelled", "totalsegmentator_ref")
    folder = tmp_path / "in"
    folder.mkdir()
    study, series = generate_uid(), generate_uid()
    for p in sorted((ts / "example_ct_dicom").iterdir()):
        # the reference series leaves its study/series/SOP UIDs empty; mida needs them
        ds = dcmread(p)
        for kw, v in (("SOPClassUID", ds.file_meta.MediaStorageSOPClassUID),
                      ("SOPInstanceUID", ds.file_meta.MediaStorageSOPInstanceUID),
                      ("StudyInstanceUID", study), ("SeriesInstanceUID", series)):
            if not str(ds.get(kw, "") or "").strip():
                setattr(ds, kw, v)
        ds.save_as(folder / f"{p.name}.dcm", enforce_file_format=True)
    ingest_series(node, folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    labels = sitk.Resample(sitk.ReadImage(str(ts / "example_seg_dicom.nii.gz")), image,
                           sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    organ = sitk.GetArrayFromImage(labels) == 7  # a small organ: ~1,300 voxels
    assert 1000 < organ.sum() < 2000
    uid = catalog_uid(node, series)
    with node.catalog().session() as s:
        g = series_geometry(s, uid)
        assert g.origin == pytest.approx(image.GetOrigin())
        assert np.asarray(g.direction).T.ravel() == pytest.approx(image.GetDirection())
        schema, _ = ann_store.add_schema(s, parse_schema(SCHEMA))
        ann_store.create(s, node.store(), target=ann_store.UidMapper(s).target(series_uid=uid),
                         schema=schema, label="liver", reader="totalsegmentator", mask=organ,
                         geometry=g)
        s.commit()
        extract(s, node.store(), series_uids=[uid], radiomics=True, qc=False)
        (got,) = features_of(s, uid, family="radiomics")["radiomics"].values()
    label = sitk.GetImageFromArray(organ.astype(np.uint8))
    label.CopyInformation(image)
    want = {k: float(v) for k, v in featureextractor.RadiomicsFeatureExtractor(**SETTINGS)
            .execute(image, label, label=1).items() if not k.startswith("diagnostics_")}
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-6, abs=1e-12), name
