"""NIfTI label maps: import onto the series grid by the affine, export that round-trips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from mida.annotations import store
from mida.annotations.formats import ExportOptions, ImportOptions, export, import_path
from mida.annotations.geometry import series_geometry
from mida.annotations.schema import parse_schema
from mida.annotations.volume import load_volume
from mida.deid.pseudonyms import Pseudonymizer
from mida.errors import AnnotationError, GeometryMismatchError, SchemaError
from mida.ingest import ingest_paths
from mida.node import Node
from tests.annotations.conftest import CtCase
from tests.conftest import shared

SIZE, SLICES, SP, THICK = 32, 6, 0.8, 2.5  # the ct_case series (write_ct_series defaults)
ORIGIN = (-12.0, -12.0, -30.0)  # LPS of slice 0's first pixel


def _save(path: Path, arr: np.ndarray, affine: np.ndarray, *, coded: bool = True) -> Path:
    img = nib.Nifti1Image(np.asarray(arr), affine)
    img.set_sform(affine, code=1 if coded else 0)
    img.set_qform(affine, code=1 if coded else 0)
    nib.save(img, str(path))
    return path


def _load(path: Path) -> nib.Nifti1Image:
    img = nib.load(str(path))
    assert isinstance(img, nib.Nifti1Image)
    return img


def _ras_affine(spacing: tuple[float, float, float] = (SP, SP, THICK),
                origin: tuple[float, float, float] = ORIGIN) -> np.ndarray:
    """RAS affine of an array stored [column, row, slice] on an axial LPS grid, by hand."""
    a = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    a[:3, 3] = [-origin[0], -origin[1], origin[2]]
    return a


def _two_labels(case: CtCase) -> tuple[np.ndarray, np.ndarray]:
    lesion = case.truth.copy()
    liver = np.zeros_like(lesion)
    liver[1:4, 2:9, 20:30] = True  # a block away from the sphere
    assert not (lesion & liver).any()
    return lesion, liver


def _label_map(case: CtCase) -> np.ndarray:
    """A [slice, row, column] map: 1 = lesion, 2 = liver (their schema mask positions)."""
    lesion, liver = _two_labels(case)
    return lesion.astype(np.uint8) + 2 * liver.astype(np.uint8)


def _opts(case: CtCase, **kw: object) -> ImportOptions:
    kw.setdefault("schema", "liver")
    return ImportOptions(series_uid=case.series_uid, **kw)  # type: ignore[arg-type]


def _masks(case: CtCase, reader: str) -> dict[str, np.ndarray]:
    node = case.node
    with node.catalog().session() as s:
        return {a.label: store.load_mask(node.store(), r)
                for a, r in store.query(s, reader=reader, kind="mask")}


def _provenance(case: CtCase, reader: str) -> list[dict[str, object]]:
    with case.node.catalog().session() as s:
        return [r.provenance for _, r in store.query(s, reader=reader)]


def test_map_stored_like_dcm2niix_lands_on_the_right_voxels(ct_case: CtCase,
                                                           tmp_path: Path) -> None:
    # dcm2niix stores [column, row flipped, slice]: voxel (i, j, k) is column i, row R-1-j
    lm = _label_map(ct_case)
    arr = np.flip(np.transpose(lm, (2, 1, 0)), axis=1)
    aff = _ras_affine()
    aff[:3, 1] *= -1  # j grows as the row falls: towards anterior, +y in RAS
    aff[1, 3] = -ORIGIN[1] - SP * (SIZE - 1)  # RAS y of row R-1, stored at j = 0
    path = _save(tmp_path / "dcm2niix_like.nii.gz", arr, aff)
    res = import_path(ct_case.node, path, "nifti", _opts(ct_case, reader="nia"))
    assert len(res.created) == 2 and res.schema == "liver@1.0.0" and res.skipped == []
    lesion, liver = _two_labels(ct_case)
    got = _masks(ct_case, "nia")
    assert np.array_equal(got["lesion"], lesion) and np.array_equal(got["liver"], liver)
    prov = _provenance(ct_case, "nia")
    assert {p["label_value"] for p in prov} == {1, 2}
    assert all(p["format"] == "nifti" and p["resampled"] is False
               and p["file_sha256"] == res.file_sha256 and str(p["tool"]).startswith("mida ")
               for p in prov)


def test_label_map_option_and_the_position_rule(ct_case: CtCase, tmp_path: Path) -> None:
    arr = np.transpose(_label_map(ct_case), (2, 1, 0)) * 3  # values 3 (lesion) and 6 (liver)
    path = _save(tmp_path / "m.nii.gz", arr, _ras_affine())
    # without a map, value v is the v-th mask label: 3 and 6 have none (the schema has 2)
    with pytest.raises(SchemaError) as e:
        import_path(ct_case.node, path, "nifti", _opts(ct_case))
    assert "values 3, 6" in str(e.value) and "1=lesion, 2=liver" in str(e.value)
    assert "--label-map" in str(e.value)
    # a map sends 6 to lesion; 3 is not named, so it is skipped and said so
    res = import_path(ct_case.node, path, "nifti",
                      _opts(ct_case, reader="r1", label_map={"6": "lesion"}))
    assert len(res.created) == 1 and any("label value 3" in x for x in res.skipped)
    assert np.array_equal(_masks(ct_case, "r1")["lesion"], _two_labels(ct_case)[1])
    with pytest.raises(SchemaError, match="bbox label"):
        import_path(ct_case.node, path, "nifti",
                    _opts(ct_case, reader="r2", label_map={"3": "nodule-box"}))
    # positions: values 1 and 2 are lesion and liver
    path2 = _save(tmp_path / "p.nii.gz", arr // 3, _ras_affine())
    import_path(ct_case.node, path2, "nifti", _opts(ct_case, reader="r3"))
    lesion, liver = _two_labels(ct_case)
    got = _masks(ct_case, "r3")
    assert np.array_equal(got["lesion"], lesion) and np.array_equal(got["liver"], liver)


def test_export_round_trips_and_reimport_creates_nothing(ct_case: CtCase,
                                                         tmp_path: Path) -> None:
    node = ct_case.node
    lesion, liver = _two_labels(ct_case)
    with node.catalog().session() as s:
        g = series_geometry(s, ct_case.series_uid)
        t = store.UidMapper(s).target(series_uid=ct_case.series_uid)
        for label, m in (("lesion", lesion), ("liver", liver)):
            store.create(s, node.store(), target=t, schema=ct_case.schema, label=label,
                         reader="alice", mask=m, geometry=g, status="submitted")
        store.create(s, node.store(), target=t, schema=ct_case.schema, label="lesion",
                     reader="bob", mask=np.roll(lesion, 2, axis=2), geometry=g)
    out = tmp_path / "out"
    res = export(node, "nifti", ExportOptions(out=out))
    assert res.annotations == 3
    folder = out / "liver@1.0.0"
    files = sorted(p.name for p in folder.iterdir())
    assert files == sorted(["labels.json", f"{ct_case.series_uid}_alice.nii.gz",
                            f"{ct_case.series_uid}_bob.nii.gz"])
    labels = json.loads((folder / "labels.json").read_text())
    assert labels["labels"]["1"]["name"] == "lesion" and labels["labels"]["2"]["name"] == "liver"
    assert labels["labels"]["1"]["concept"]["CodeValue"] == "52988006"
    img = _load(folder / f"{ct_case.series_uid}_alice.nii.gz")
    assert img.shape == (SIZE, SIZE, SLICES)  # [column, row, slice]
    assert np.allclose(img.affine, _ras_affine(), atol=1e-4)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    # voxel (column 20, row 3, slice 2) is liver: value 2
    assert np.asarray(img.dataobj)[20, 3, 2] == 2 and liver[2, 3, 20]
    # import as a new reader, no schema and no map: labels.json next to the file names them
    path = folder / f"{ct_case.series_uid}_alice.nii.gz"
    back = import_path(node, path, "nifti", ImportOptions(series_uid=ct_case.series_uid,
                                                          reader="carol"))
    assert len(back.created) == 2 and back.schema == "liver@1.0.0"
    got = _masks(ct_case, "carol")
    assert np.array_equal(got["lesion"], lesion) and np.array_equal(got["liver"], liver)
    again = import_path(node, path, "nifti", ImportOptions(series_uid=ct_case.series_uid,
                                                           reader="carol"))
    assert again.created == [] and "already imported" in again.skipped[0]
    assert len(_masks(ct_case, "carol")) == 2


def test_other_sampling_is_resampled_nearest_neighbour(ct_case: CtCase, tmp_path: Path) -> None:
    # a map at twice the in-plane resolution: every series voxel is 2x2 map voxels
    lm = _label_map(ct_case)
    fine = np.repeat(np.repeat(np.transpose(lm, (2, 1, 0)), 2, axis=0), 2, axis=1)
    origin = (ORIGIN[0] - SP / 4, ORIGIN[1] - SP / 4, ORIGIN[2])
    path = _save(tmp_path / "fine.nii.gz", fine, _ras_affine((SP / 2, SP / 2, THICK), origin))
    res = import_path(ct_case.node, path, "nifti", _opts(ct_case, reader="fine"))
    assert len(res.created) == 2
    lesion, liver = _two_labels(ct_case)
    got = _masks(ct_case, "fine")
    assert np.array_equal(got["lesion"], lesion) and np.array_equal(got["liver"], liver)
    assert all(p["resampled"] is True for p in _provenance(ct_case, "fine"))


def test_a_crop_on_the_series_grid_is_placed_where_its_affine_says(ct_case: CtCase,
                                                                  tmp_path: Path) -> None:
    lm = np.transpose(_label_map(ct_case), (2, 1, 0))[8:24, 8:24, 1:5]  # columns, rows, slices
    origin = (ORIGIN[0] + 8 * SP, ORIGIN[1] + 8 * SP, ORIGIN[2] + THICK)
    path = _save(tmp_path / "crop.nii.gz", lm, _ras_affine(origin=origin))
    import_path(ct_case.node, path, "nifti", _opts(ct_case, reader="crop"))
    want = np.zeros_like(ct_case.truth)
    want[1:5, 8:24, 8:24] = ct_case.truth[1:5, 8:24, 8:24]
    got = _masks(ct_case, "crop")["lesion"]
    assert np.array_equal(got, want) and got.any()
    assert _provenance(ct_case, "crop")[0]["resampled"] is False


def test_a_map_of_a_larger_region_is_cut_to_the_series(ct_case: CtCase, tmp_path: Path) -> None:
    lm = np.transpose(_label_map(ct_case), (2, 1, 0))  # columns, rows, slices
    big = np.pad(lm, 2)  # two more voxels on every side; some of them labelled
    big[0, 0, 0] = big[-1, 5, 3] = 2
    origin = (ORIGIN[0] - 2 * SP, ORIGIN[1] - 2 * SP, ORIGIN[2] - 2 * THICK)
    path = _save(tmp_path / "big.nii.gz", big, _ras_affine(origin=origin))
    res = import_path(ct_case.node, path, "nifti", _opts(ct_case, reader="big"))
    assert res.skipped == ["label value 2: 2 voxel(s) lie outside the series (the map covers "
                           "a larger region); those were not imported"]
    lesion, liver = _two_labels(ct_case)
    got = _masks(ct_case, "big")
    assert np.array_equal(got["lesion"], lesion) and np.array_equal(got["liver"], liver)


@pytest.mark.parametrize(("case", "names"), [
    ("spacing", ["spacing differs", "(2.500, 1.000, 1.000)", "(2.500, 0.800, 0.800)"]),
    ("outside", ["no overlap", "origin differs"]),
    ("transposed", ["shape differs", "(32, 32, 6)", "(6, 32, 32)", "only partly over"]),
    ("identity", ["the identity", "saved without the image's geometry"]),
    ("uncoded", ["qform and sform codes 0"]),
    ("half-voxel", ["origin differs", "0.400 mm apart", "header"]),
    ("oblique", ["orientation differs", "not parallel"]),
])
def test_maps_that_do_not_fit_name_the_difference(ct_case: CtCase, tmp_path: Path, case: str,
                                                  names: list[str]) -> None:
    arr = np.transpose(_label_map(ct_case), (2, 1, 0))
    aff = _ras_affine()
    coded = True
    if case == "spacing":
        aff = _ras_affine((1.0, 1.0, THICK))
    elif case == "outside":
        aff = _ras_affine(origin=(ORIGIN[0] + 100, ORIGIN[1], ORIGIN[2]))
    elif case == "transposed":
        arr = _label_map(ct_case)  # [slice, row, column] saved with the series' affine
    elif case == "identity":
        aff = np.eye(4)
    elif case == "uncoded":
        aff = _ras_affine((1.0, 1.0, 1.0))
        coded = False
    elif case == "half-voxel":
        aff = _ras_affine(origin=(ORIGIN[0] + SP / 2, ORIGIN[1], ORIGIN[2]))
    elif case == "oblique":
        c, s_ = np.cos(np.radians(30)), np.sin(np.radians(30))
        rot = np.eye(4)
        rot[:2, :2] = [[c, -s_], [s_, c]]
        aff = rot @ aff
    path = _save(tmp_path / f"{case}.nii.gz", arr, aff, coded=coded)
    with pytest.raises(GeometryMismatchError) as e:
        import_path(ct_case.node, path, "nifti", _opts(ct_case))
    msg = str(e.value)
    for n in names:
        assert n in msg, msg
    assert ct_case.series_uid in msg and ct_case.original["series"] not in msg
    assert _masks(ct_case, "import") == {}  # nothing stored


def test_refusals_before_any_record(ct_case: CtCase, tmp_path: Path) -> None:
    arr = np.transpose(_label_map(ct_case), (2, 1, 0))
    path = _save(tmp_path / "m.nii.gz", arr, _ras_affine())
    with pytest.raises(AnnotationError, match="--series"):
        import_path(ct_case.node, path, "nifti", ImportOptions(schema="liver"))
    with pytest.raises(SchemaError, match="--schema"):
        import_path(ct_case.node, path, "nifti", ImportOptions(series_uid=ct_case.series_uid))
    prob = _save(tmp_path / "prob.nii.gz", arr.astype(np.float32) * 0.5, _ras_affine())
    with pytest.raises(AnnotationError, match="whole numbers"):
        import_path(ct_case.node, prob, "nifti", _opts(ct_case))
    empty = _save(tmp_path / "empty.nii.gz", np.zeros_like(arr), _ras_affine())
    with pytest.raises(AnnotationError, match="empty"):
        import_path(ct_case.node, empty, "nifti", _opts(ct_case))
    (tmp_path / "x.nii.gz").write_bytes(b"not nifti")
    with pytest.raises(AnnotationError, match="not a readable NIfTI"):
        import_path(ct_case.node, tmp_path / "x.nii.gz", "nifti", _opts(ct_case))


def test_cli_imports_with_label_map_and_exports(ct_case: CtCase, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from mida.cli.main import app

    monkeypatch.setenv("MIDA_HOME", str(ct_case.node.settings.home))
    arr = np.transpose(_label_map(ct_case), (2, 1, 0))
    path = _save(tmp_path / "m.nii.gz", arr * 5, _ras_affine())
    runner = CliRunner()
    res = runner.invoke(app, ["annotations", "import", str(path), "--format", "nifti",
                              "--series", ct_case.series_uid, "--schema", "liver",
                              "--reader", "cli", "--label-map", "5=lesion",
                              "--label-map", "10=liver", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["created"] == 2
    res = runner.invoke(app, ["annotations", "export", "--format", "nifti",
                              "--out", str(tmp_path / "out"), "--reader", "cli", "--json"])
    assert res.exit_code == 0, res.output
    img = _load(tmp_path / "out" / "liver@1.0.0" / f"{ct_case.series_uid}_cli.nii.gz")
    assert np.array_equal(np.asarray(img.dataobj), arr)


# ----------------------------------------------------------------- real data (../shared/data)

def _ingest_one(node: Node, files: list[Path], tmp: Path, collection: str) -> str:
    """Ingest copies of ``files``; the catalog UID of their series."""
    tmp.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, tmp / f.name)
    summary = ingest_paths(node, [tmp], collection, workers=1)
    assert summary.stored == len(files), summary
    original = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    return Pseudonymizer(node.key()).uid(original)


DCM2NIIX = ("conversion", "dcm_qa_enh_subset")
HIPPO = {
    "name": "hippocampus", "version": "1.0.0",
    "description": "MSD Task04: 1 anterior, 2 posterior hippocampus",
    "labels": [
        {"name": "anterior", "type": "mask", "colour": "#e6194b",
         "concept": {"CodeValue": "5001000", "CodingSchemeDesignator": "99MIDA",
                     "CodeMeaning": "Anterior hippocampus"}},
        {"name": "posterior", "type": "mask", "colour": "#3cb44b",
         "concept": {"CodeValue": "5001001", "CodingSchemeDesignator": "99MIDA",
                     "CodeMeaning": "Posterior hippocampus"}},
    ],
}
MSD = ("labelled", "msd_hippocampus_udacity")
MSD_SERIES = ["Study1/13_HCropVolume", "Study2/14_HCropVolume", "Study3/11_HCropVolume"]


@pytest.mark.shared_data
def test_affine_agrees_with_dcm2niix(node: Node, tmp_path: Path) -> None:
    """mida's NIfTI affine and dcm2niix's place the same voxels at the same RAS points.

    dcm_qa_ts and dcm_qa_12bit are Siemens mosaics (dcm2niix cuts a 384x384 image
    into 64x64 slices; mida keeps the DICOM grid), so the check uses the enhanced
    multi-frame Siemens XA10 series: 6_1.dcm is volume 0 of dcm2niix's 4D
    reference. dcm2niix stores an array ``[column, row flipped, slice]``: its voxel
    (i, j, k) is mida's column i, row R-1-j, slice k (the pixel values confirm it).
    """
    src = shared(*DCM2NIIX)
    ref = _load(src / "Ref" / "Siemens_REST1_w_SMS_PF7-8_6.nii")
    uid = _ingest_one(node, [src / "In" / "Siemens" / "XA10" / "6_1.dcm"], tmp_path / "in", "x")
    with node.catalog().session() as s:
        g = series_geometry(s, uid)
        vol = load_volume(s, node.store(), g)
    slices, rows, cols = g.shape
    ref0 = np.asarray(ref.dataobj)[..., 0]
    assert ref0.shape == (cols, rows, slices)
    # the voxel mapping, shown by the pixel values of both readers
    assert np.array_equal(np.transpose(ref0[:, ::-1, :], (2, 1, 0)), vol)
    ijk = np.array([[i, j, k] for i in (0, cols - 1) for j in (0, rows - 1)
                    for k in (0, slices - 1)] + [[17, 40, 3]], dtype=float)
    theirs = (ref.affine @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]
    ours_idx = np.c_[ijk[:, 0], rows - 1 - ijk[:, 1], ijk[:, 2], np.ones(len(ijk))]
    assert np.abs((g.affine_ras() @ ours_idx.T).T[:, :3] - theirs).max() < 1e-3
    # the exported label map carries that affine
    schema = parse_schema(HIPPO)
    with node.catalog().session() as s:
        row, _ = store.add_schema(s, schema)
        t = store.UidMapper(s).target(series_uid=uid)
        store.create(s, node.store(), target=t, schema=row, label="anterior", reader="a",
                     mask=vol > 600, geometry=g)
    res = export(node, "nifti", ExportOptions(out=tmp_path / "out"))
    mine = _load(next(p for p in res.files if p.name.endswith(".nii.gz")))
    ours = (mine.affine @ ours_idx.T).T[:, :3]
    assert np.abs(ours - theirs).max() < 1e-3


@pytest.mark.shared_data
def test_map_with_dcm2niix_affine_lands_on_the_right_voxels(node: Node, tmp_path: Path) -> None:
    src = shared(*DCM2NIIX)
    ref = _load(src / "Ref" / "Siemens_REST1_w_SMS_PF7-8_6.nii")
    uid = _ingest_one(node, [src / "In" / "Siemens" / "XA10" / "6_1.dcm"], tmp_path / "in", "x")
    labels = (np.asarray(ref.dataobj)[..., 0] > 600).astype(np.uint8)  # dcm2niix's orientation
    path = _save(tmp_path / "thr.nii.gz", labels, ref.affine)
    with node.catalog().session() as s:
        store.add_schema(s, parse_schema(HIPPO))
        g = series_geometry(s, uid)
        vol = load_volume(s, node.store(), g)
    res = import_path(node, path, "nifti", ImportOptions(series_uid=uid, schema="hippocampus",
                                                         reader="thr"))
    assert len(res.created) == 1
    got = _masks_of(node, "thr")["anterior"]
    assert got.sum() == labels.sum() > 0
    assert np.array_equal(got, vol > 600)  # mida's own pixel reading, same voxels


def _masks_of(node: Node, reader: str) -> dict[str, np.ndarray]:
    with node.catalog().session() as s:
        return {a.label: store.load_mask(node.store(), r)
                for a, r in store.query(s, reader=reader, kind="mask")}


def _msd_mask(folder: Path, out: Path) -> tuple[np.ndarray, sitk.Image]:
    """A two-label map written by SimpleITK: bright voxels split into anterior and posterior.

    Returns the labels as SimpleITK's array ``[k, j, i]`` and the image read by
    ImageSeriesReader (an independent DICOM reader).
    """
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    arr = sitk.GetArrayFromImage(image)  # [k, j, i]
    bright = arr >= np.percentile(arr, 97)
    # LPS y of every voxel (+y is posterior); the region splits at its median y
    k, j, i = np.nonzero(bright)
    y = np.array([image.TransformIndexToPhysicalPoint((int(a), int(b), int(c)))[1]
                  for a, b, c in zip(i, j, k, strict=True)])
    labels = np.zeros(arr.shape, dtype=np.uint8)
    split = np.median(y)
    labels[k[y < split], j[y < split], i[y < split]] = 1
    labels[k[y >= split], j[y >= split], i[y >= split]] = 2
    assert (labels == 1).any() and (labels == 2).any()
    img = sitk.GetImageFromArray(labels)
    img.CopyInformation(image)
    sitk.WriteImage(img, str(out))
    return labels, image


@pytest.mark.shared_data
@pytest.mark.parametrize("series", MSD_SERIES)
def test_msd_hippocampus_mask_made_with_simpleitk_imports(node: Node, tmp_path: Path,
                                                          series: str) -> None:
    """The acceptance test: a NIfTI mask made for an MSD hippocampus DICOM series imports."""
    folder = shared(*MSD, "TestVolumes", *series.split("/"))
    files = sorted(folder.glob("*.dcm"))
    labels, image = _msd_mask(folder, tmp_path / "hippo.nii.gz")
    uid = _ingest_one(node, files, tmp_path / "in", "msd")
    with node.catalog().session() as s:
        store.add_schema(s, parse_schema(HIPPO))
        g = series_geometry(s, uid)
        vol = load_volume(s, node.store(), g)
    # SimpleITK's [k, j, i] is mida's [slice, row, column] when both grids agree: same
    # origin, spacing and axes (and both readers then see the same pixel values)
    assert np.allclose(image.GetOrigin(), g.origin)
    assert np.allclose(image.GetSpacing(), g.spacing[::-1])
    assert np.allclose(np.reshape(image.GetDirection(), (3, 3)), np.column_stack(g.direction))
    assert np.array_equal(sitk.GetArrayFromImage(image), vol)
    res = import_path(node, tmp_path / "hippo.nii.gz", "nifti", ImportOptions(
        series_uid=uid, schema="hippocampus", reader="sitk",
        label_map={"1": "anterior", "2": "posterior"}))
    assert len(res.created) == 2 and res.skipped == []
    got = _masks_of(node, "sitk")
    assert np.array_equal(got["anterior"], labels == 1)
    assert np.array_equal(got["posterior"], labels == 2)
    # NIfTI round trip: export, import as another reader, same masks
    out = export(node, "nifti", ExportOptions(out=tmp_path / "out", reader="sitk"))
    exported = next(p for p in out.files if p.name.endswith(".nii.gz"))
    import_path(node, exported, "nifti", ImportOptions(series_uid=uid, reader="back"))
    back = _masks_of(node, "back")
    assert np.array_equal(back["anterior"], labels == 1)
    assert np.array_equal(back["posterior"], labels == 2)


@pytest.mark.shared_data
def test_msd_hippocampus_mask_round_trips_through_seg(node: Node, tmp_path: Path) -> None:
    folder = shared(*MSD, "TestVolumes", "Study1", "13_HCropVolume")
    labels, _ = _msd_mask(folder, tmp_path / "hippo.nii.gz")
    uid = _ingest_one(node, sorted(folder.glob("*.dcm")), tmp_path / "in", "msd")
    with node.catalog().session() as s:
        store.add_schema(s, parse_schema(HIPPO))
    import_path(node, tmp_path / "hippo.nii.gz", "nifti", ImportOptions(
        series_uid=uid, schema="hippocampus", reader="sitk",
        label_map={"1": "anterior", "2": "posterior"}))
    out = export(node, "seg", ExportOptions(out=tmp_path / "seg", reader="sitk"))
    segs = [p for p in out.files if p.suffix == ".dcm"]
    assert len(segs) == 1
    import_path(node, segs[0], "seg", ImportOptions(reader="seg-back", schema="hippocampus"))
    back = _masks_of(node, "seg-back")
    assert np.array_equal(back["anterior"], labels == 1)
    assert np.array_equal(back["posterior"], labels == 2)


@pytest.mark.shared_data
def test_msd_training_labels_do_not_fit_the_dicom_series(node: Node, tmp_path: Path) -> None:
    """The MSD label crops live in another space (identity affine, 35x51x35): refused."""
    folder = shared(*MSD, "TestVolumes", "Study1", "13_HCropVolume")
    uid = _ingest_one(node, sorted(folder.glob("*.dcm")), tmp_path / "in", "msd")
    with node.catalog().session() as s:
        store.add_schema(s, parse_schema(HIPPO))
    label = shared(*MSD, "TrainingSet", "labels", "hippocampus_001.nii.gz")
    with pytest.raises(GeometryMismatchError) as e:
        import_path(node, label, "nifti", ImportOptions(series_uid=uid, schema="hippocampus"))
    msg = str(e.value)
    assert "shape differs" in msg and "(32, 51, 35)" in msg and "origin differs" in msg
    assert "Avasarala" not in msg  # the files' (fictional) patient name


@pytest.mark.shared_data
def test_msd_mask_with_wrong_spacing_is_refused(node: Node, tmp_path: Path) -> None:
    folder = shared(*MSD, "TestVolumes", "Study1", "13_HCropVolume")
    _msd_mask(folder, tmp_path / "hippo.nii.gz")
    img = sitk.ReadImage(str(tmp_path / "hippo.nii.gz"))
    img.SetSpacing((1.2, 1.2, 1.0))
    sitk.WriteImage(img, str(tmp_path / "wrong.nii.gz"))
    uid = _ingest_one(node, sorted(folder.glob("*.dcm")), tmp_path / "in", "msd")
    with node.catalog().session() as s:
        store.add_schema(s, parse_schema(HIPPO))
    with pytest.raises(GeometryMismatchError) as e:
        import_path(node, tmp_path / "wrong.nii.gz", "nifti",
                    ImportOptions(series_uid=uid, schema="hippocampus"))
    assert "spacing differs" in str(e.value) and "(1.000, 1.200, 1.200)" in str(e.value)
