"""DICOM → NIfTI conversion (:mod:`mida.datasets.convert`) checked against dcm2niix.

What "same voxels" means here: the **stored values** are equal element for
element with the same NIfTI data type (``dataobj.get_unscaled()``), and
``scl_slope`` / ``scl_inter`` are equal to float32 precision, so the modality
values (``get_fdata()``) are equal too. Comparing stored values rather than
``get_fdata()`` alone also catches a converter that rescales or changes type
(int16 stored with a slope is not float32 of the same values to a consumer
that reads the raw array, as nnU-Net does).

The references are dcm2niix's own outputs in ``../shared/data/conversion/*/Ref``
(neurolabusc's dcm_qa_ts, dcm_qa_12bit, dcm_qa_enh subsets). Where the test
ingests the inputs first, mida's de-identification runs: UIDs change and dates
shift, but geometry and pixels must not, and they don't; nor does the Philips
precise scaling (Retain Safe Private keeps the MR Scale Slope inside the private
per-frame item: mida's supplement to the safe-private dictionary lists it there).
What a de-identified copy cannot carry is pinned below with the reason: the
Siemens CSA headers (the 12-bit mosaics' tile count is then inferred from blank
tiles).
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from mida.catalog.models import Series
from mida.config import Settings
from mida.datasets.convert import (
    ConversionError,
    NiftiVolume,
    nifti_bytes,
    series_to_nifti,
    volumes_from_datasets,
    write_nifti,
)
from mida.datasets.nifti_convert.sidecar import NEVER
from mida.deid.pseudonyms import Pseudonymizer
from mida.errors import DatasetError, NotFoundError
from mida.ingest import ingest_paths
from mida.node import Node, init_node
from tests.conftest import shared
from tests.factories import PHI, make_dataset, write, write_ct_series

# -- helpers ------------------------------------------------------------------------------

def raw(vol: NiftiVolume | nib.Nifti1Image) -> np.ndarray:
    img = vol.image if isinstance(vol, NiftiVolume) else vol
    return np.asanyarray(img.dataobj.get_unscaled())


def assert_same_image(vol: NiftiVolume, ref: Path, *, scaling: tuple[float, float] | None = None
                      ) -> dict[str, float]:
    """Shape, data type, stored values, affine (1e-4) and scaling equal to dcm2niix's."""
    want = nib.load(ref)
    got = vol.image
    assert got.shape == want.shape, ref.name
    assert got.get_data_dtype() == want.get_data_dtype(), ref.name
    assert np.array_equal(raw(vol), raw(want)), f"{ref.name}: stored values differ"
    affine_diff = float(np.abs(got.affine - want.affine).max())
    assert affine_diff < 1e-4, f"{ref.name}: affine differs by {affine_diff}"
    slope, inter = scaling or (float(want.dataobj.slope), float(want.dataobj.inter))
    assert got.dataobj.slope == pytest.approx(slope, rel=1e-6), ref.name
    assert got.dataobj.inter == pytest.approx(inter, rel=1e-6, abs=1e-6), ref.name
    return {"affine": affine_diff}


# Keys both sidecars carry that are not compared, and why.
NOT_COMPARED = {
    "ConversionSoftware", "ConversionSoftwareVersion",  # the converter's own name
    # dcm2niix v1.0.2026 appends its own terms (MAGNITUDE, FIELDMAPHZ) to Image Type,
    # differently across versions and files; mida writes Image Type as DICOM holds it.
    "ImageType",
    # dcm2niix writes its command-line option here; mida writes whether it was applied.
    "UsePhilipsFloatNotDisplayScaling",
}


def assert_sidecar_agrees(sidecar: dict[str, Any], ref_json: Path) -> set[str]:
    want = json.loads(ref_json.read_text())
    shared_keys = (set(sidecar) & set(want)) - NOT_COMPARED
    for key in sorted(shared_keys):
        got, exp = sidecar[key], want[key]
        if isinstance(exp, float | int) and not isinstance(exp, bool):
            # dcm2niix prints %g (6 significant digits)
            assert got == pytest.approx(exp, rel=1e-5, abs=1e-6), key
        elif isinstance(exp, list) and all(isinstance(v, float | int) for v in exp):
            assert np.allclose(got, exp, rtol=1e-5, atol=1e-6), key
        else:
            assert got == exp, key
    assert not set(sidecar) & NEVER
    return shared_keys


def new_node(tmp_path: Path, name: str) -> Node:
    return init_node(Settings(home=tmp_path / name, workers=1), "TEST", "Test Hospital",
                     key=b"k" * 32)


def catalog_volumes(node: Node) -> list[tuple[str, NiftiVolume]]:
    from sqlalchemy import select

    out = []
    with node.catalog().session() as s:
        uids = s.scalars(select(Series.SeriesInstanceUID).order_by(Series.id)).all()
        for uid in uids:
            out += [(uid, v) for v in series_to_nifti(s, node.store(), uid)]
    return out


TS = "dcm_qa_ts"
BIT12 = {"12bitUnsigned.dcm": 2, "12bitUnsigned_0x0F0F.dcm": 3, "12bitSigned_0x0F0F.dcm": 4}
PHILIPS = "Philips_WIP_B0_NS_801"
SIEMENS = "Siemens_REST1_w_SMS_PF7-8_6"


# -- the references -----------------------------------------------------------------------

@pytest.mark.shared_data
def test_catalog_exports_match_every_dcm2niix_reference(node: Node, tmp_path: Path) -> None:
    """Done-when of issue 6 item 4: every series of every In/ folder, read back from the
    catalog after de-identifying ingest, equals dcm2niix's Ref NIfTI."""
    root = shared("conversion")
    checked: dict[str, dict[str, float]] = {}

    # dcm_qa_ts: one series (one Series Instance UID), nine Series Numbers -> nine volumes.
    ingest_paths(node, [root / TS / "In"], "ts", workers=1)
    # dcm_qa_enh_subset: Philips (one file, two echoes) and Siemens XA (4 files, one 4D).
    ingest_paths(node, [root / "dcm_qa_enh_subset" / "In"], "enh", workers=1)
    for _, vol in catalog_volumes(node):
        desc = vol.sidecar["SeriesDescription"]
        sidecar = vol.sidecar
        if desc == "ax_asc_35sl":
            name = vol.suffix.removeprefix("_s")
            ref = root / TS / "Ref" / name
            checked[f"ts/{name}"] = assert_same_image(vol, ref.with_suffix(".nii"))
        elif desc == "B0 NS":
            # dcm2niix's default Philips "precise" scaling (the Ref's scl_slope/scl_inter,
            # e.g. 118362.24 for echo 1): the per-frame Scale Slope survives de-identification.
            ref = root / "dcm_qa_enh_subset" / "Ref" / f"{PHILIPS}{vol.suffix}"
            checked[ref.name] = assert_same_image(vol, ref.with_suffix(".nii"))
            assert vol.sidecar["UsePhilipsFloatNotDisplayScaling"] == 1
            if vol.suffix == "_e1":
                # Scanning Sequence is only in the (kept) private per-frame items: GR in the
                # 32 frames of echo 1, RM in the field map's. dcm2niix writes the last value
                # in the file (RM) for both volumes; mida the volume's own.
                sidecar = {k: v for k, v in sidecar.items() if k != "ScanningSequence"}
                assert vol.sidecar["ScanningSequence"] == "GR"
        else:
            assert desc == "REST1 w SMS PF7-8" and vol.suffix == ""
            ref = root / "dcm_qa_enh_subset" / "Ref" / SIEMENS
            checked[ref.name] = assert_same_image(vol, ref.with_suffix(".nii"))
        assert_sidecar_agrees(sidecar, ref.with_suffix(".json"))

    # dcm_qa_12bit: the three files share one SOP Instance UID, so one catalog keeps one;
    # each goes to its own node.
    for name, number in BIT12.items():
        one = new_node(tmp_path, name)
        folder = tmp_path / "in" / name
        folder.mkdir(parents=True)
        shutil.copy(root / "dcm_qa_12bit" / "In" / name, folder)
        ingest_paths(one, [folder], "12bit", workers=1)
        [(_, vol)] = catalog_volumes(one)
        ref = root / "dcm_qa_12bit" / "Ref" / str(number)
        checked[f"12bit/{number}"] = assert_same_image(vol, ref.with_suffix(".nii"))
        assert_sidecar_agrees(vol.sidecar, ref.with_suffix(".json"))

    assert len(checked) == 9 + 3 + 3
    assert all(c["affine"] < 1e-4 for c in checked.values())


@pytest.mark.shared_data
def test_original_files_match_references_including_philips_precise_scaling() -> None:
    """Straight from the scanner files (nothing removed), the Philips volumes carry
    dcm2niix's default "precise" floating-point scaling (PV x RS + RI) / (RS x SS) too."""
    root = shared("conversion", "dcm_qa_enh_subset")
    ds = pydicom.dcmread(root / "In" / "Philips" / "IM_0027_fMAP.dcm")
    vols = {v.suffix: v for v in volumes_from_datasets([ds])}
    assert set(vols) == {"_e1", "_e2_fieldmaphz"}
    for suffix, vol in vols.items():
        assert_same_image(vol, root / "Ref" / f"{PHILIPS}{suffix}.nii")
        assert vol.sidecar["UsePhilipsFloatNotDisplayScaling"] == 1
    assert vols["_e1"].image.dataobj.slope == pytest.approx(118362.24, rel=1e-6)
    assert vols["_e2_fieldmaphz"].sidecar["Units"] == "Hz"
    assert vols["_e2_fieldmaphz"].sidecar["EchoNumber"] == 2

    mosaic = pydicom.dcmread(shared("conversion", "dcm_qa_12bit", "In", "12bitUnsigned.dcm"))
    [vol] = volumes_from_datasets([mosaic])  # tile count from the CSA header here
    assert_same_image(vol, shared("conversion", "dcm_qa_12bit", "Ref", "2.nii"))


@pytest.mark.shared_data
def test_every_transfer_syntax_decodes_to_the_same_volume() -> None:
    root = shared("conversion", TS, "In")
    first = None
    for i in range(1, 10):
        [vol] = volumes_from_datasets([pydicom.dcmread(root / f"{i}.dcm")])
        if first is None:
            first = raw(vol)
        assert np.array_equal(raw(vol), first), f"{i}.dcm"


# -- conventions on small synthetic series ------------------------------------------------

def stack(n: int = 4, *, iop: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
          step: tuple[float, float, float] = (0, 0, 2.5), rows: int = 5, cols: int = 7,
          modality: str = "CT", per: Any = None, **common: Any) -> list[Dataset]:
    """``n`` single-frame slices; pixel value = 100 x slice + row x cols + column."""
    series = generate_uid()
    out = []
    for k in range(n):
        kw: dict[str, Any] = {"SeriesInstanceUID": series, "InstanceNumber": k + 1,
                              "Modality": modality, **common}
        if per is not None:
            kw.update(per(k))
        ds = make_dataset(**{k2: v for k2, v in kw.items() if k2 != "pixels"})
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = [0.5, 0.75]
        ds.SliceThickness = 2
        ds.ImageOrientationPatient = list(iop)
        ds.ImagePositionPatient = [-10 + k * step[0], -20 + k * step[1], 5 + k * step[2]]
        pixels = kw.get("pixels")
        if pixels is None:
            pixels = (np.arange(rows * cols).reshape(rows, cols) + 100 * k).astype(np.int16)
        ds.PixelData = pixels.tobytes()
        out.append(ds)
    return out


def test_ct_stack_keeps_stored_integers_with_rescale_and_sorts_by_position() -> None:
    datasets = stack(5, RescaleSlope=1, RescaleIntercept=-1024)
    shuffled = datasets[:]
    random.Random(3).shuffle(shuffled)
    [vol] = volumes_from_datasets(shuffled)
    img = vol.image
    assert img.shape == (7, 5, 5) and img.get_data_dtype() == np.int16
    assert (img.dataobj.slope, img.dataobj.inter) == (1.0, -1024.0)
    # x = column; y = rows stored bottom-up (dcm2niix's row flip); z = ascending position
    stored = raw(vol)
    assert stored[0, 0, 0] == 28 and stored[0, 4, 0] == 0 and stored[0, 0, 4] == 428
    assert img.get_fdata()[0, 0, 0] == 28 - 1024
    np.testing.assert_allclose(img.affine, [[-0.75, 0, 0, 10], [0, 0.5, 0, 18],
                                            [0, 0, 2.5, 5], [0, 0, 0, 1]], atol=1e-6)
    assert img.header.get_qform(coded=True)[1] == 1 and img.header.get_sform(coded=True)[1] == 1
    # input order does not matter, to the byte
    [again] = volumes_from_datasets(datasets)
    assert nifti_bytes(again.image)[0] == nifti_bytes(vol.image)[0]
    assert bytes(nifti_bytes(again.image)[1]) == bytes(nifti_bytes(vol.image)[1])


# Affines dcm2niix v1.0.20220720 writes for these very series.
ORIENTATIONS = {
    "axial, normal against +z": ((1, 0, 0, 0, -1, 0), (0, 0, 2.5),
                                 [[-0.75, 0, 0, 10], [0, -0.5, 0, 22], [0, 0, -2.5, 12.5]]),
    "sagittal": ((0, 1, 0, 0, 0, -1), (3, 0, 0),
                 [[0, 0, 3, 1], [-0.75, 0, 0, 20], [0, 0.5, 0, 3]]),
    "coronal": ((1, 0, 0, 0, 0, -1), (0, 2, 0),
                [[-0.75, 0, 0, 10], [0, 0, -2, 20], [0, 0.5, 0, 3]]),
}


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_slices_ascend_along_row_cross_column_like_dcm2niix(name: str) -> None:
    iop, step, affine = ORIENTATIONS[name]
    [vol] = volumes_from_datasets(stack(4, iop=iop, step=step))
    np.testing.assert_allclose(vol.image.affine[:3], affine, atol=1e-6)


def test_3d_mr_acquisitions_are_reoriented_as_dcm2niix_does() -> None:
    """A 3D (non-EPI) sagittal MR volume is stored closest to RAS+ (x = left-right)."""
    sag = dict(iop=(0, 1, 0, 0, 0, -1), step=(-1.2, 0, 0), modality="MR",
               MRAcquisitionType="3D", ScanningSequence="GR", RescaleSlope=None,
               RescaleIntercept=None)
    [vol] = volumes_from_datasets(stack(4, **sag))
    assert vol.image.shape == (4, 7, 5)
    np.testing.assert_allclose(vol.image.affine[:3], [[1.2, 0, 0, 10], [0, 0.75, 0, 15.5],
                                                      [0, 0, 0.5, 3]], atol=1e-6)
    assert nib.aff2axcodes(vol.image.affine) == ("R", "A", "S")
    # EPI and 2D acquisitions keep the plain row flip
    [epi] = volumes_from_datasets(stack(4, **{**sag, "ScanningSequence": "EP"}))
    assert epi.image.shape == (7, 5, 4)


def test_repeated_positions_make_a_4d_volume_in_time_order() -> None:
    def per(k: int) -> dict[str, Any]:
        return {"AcquisitionTime": f"1000{(5 - k) // 3:02d}", "InstanceNumber": 10 - k}

    datasets = stack(6, per=per, modality="MR", RepetitionTime=2000)
    for k, ds in enumerate(datasets):
        ds.ImagePositionPatient = [-10, -20, 5 + 2 * (k % 3)]
    [vol] = volumes_from_datasets(datasets)
    assert vol.image.shape == (7, 5, 3, 2)
    stored = raw(vol)
    # k = 3, 4, 5 were acquired first (100000), so they are volume 0
    assert [stored[0, 4, z, 0] for z in range(3)] == [300, 400, 500]
    assert [stored[0, 4, z, 1] for z in range(3)] == [0, 100, 200]
    assert vol.image.header.get_zooms()[3] == pytest.approx(2.0)  # TR in seconds


def test_echoes_and_phase_become_separate_volumes_with_dcm2niix_suffixes() -> None:
    def per(k: int) -> dict[str, Any]:
        echo = 1 + (k // 2) % 2
        phase = k >= 4
        return {"EchoNumbers": echo, "EchoTime": 5.0 * echo,
                "ImageType": ["ORIGINAL", "PRIMARY", "P" if phase else "M", "ND"]}

    datasets = stack(8, per=per, modality="MR", RescaleSlope=None, RescaleIntercept=None)
    for k, ds in enumerate(datasets):
        ds.ImagePositionPatient = [-10, -20, 5 + 2 * (k % 2)]
    vols = {v.suffix: v for v in volumes_from_datasets(datasets)}
    assert set(vols) == {"_e1", "_e2", "_e1_ph", "_e2_ph"}
    assert vols["_e2"].sidecar["EchoTime"] == pytest.approx(0.010)
    assert vols["_e2"].sidecar["EchoNumber"] == 2
    assert all(v.image.shape == (7, 5, 2) for v in vols.values())


def test_mixed_orientations_split_with_instance_number_suffixes() -> None:
    datasets = stack(4)
    for ds in datasets[2:]:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        ds.ImagePositionPatient = [-10, 2 * ds.InstanceNumber, 5]
    vols = volumes_from_datasets(datasets)
    assert sorted(v.suffix for v in vols) == ["_i00001", "_i00003"]


def test_rescale_that_varies_between_slices_gives_float32_modality_values() -> None:
    datasets = stack(3, per=lambda k: {"RescaleSlope": 1 + k, "RescaleIntercept": -10 * k})
    [vol] = volumes_from_datasets(datasets)
    assert vol.image.get_data_dtype() == np.float32
    assert (vol.image.dataobj.slope, vol.image.dataobj.inter) == (1.0, 0.0)
    assert raw(vol)[0, 4, 2] == pytest.approx(200 * 3 - 20)


@pytest.mark.parametrize(("bits", "dtype"), [(12, np.int16), (16, np.uint16)])
def test_unsigned_16_bit_is_int16_only_when_fewer_bits_are_stored(bits: int,
                                                                  dtype: type) -> None:
    datasets = stack(2, RescaleSlope=None, RescaleIntercept=None)
    for ds in datasets:
        ds.PixelRepresentation = 0
        ds.BitsStored, ds.HighBit = bits, bits - 1
    [vol] = volumes_from_datasets(datasets)
    assert vol.image.get_data_dtype() == dtype


def test_one_image_without_patient_geometry_is_3d_with_z_of_1() -> None:
    ds = make_dataset(Modality="CR", ImageOrientationPatient=None, ImagePositionPatient=None,
                      RescaleSlope=None, RescaleIntercept=None)
    ds.Rows, ds.Columns, ds.PixelData = 16, 16, (np.arange(256, dtype=np.int16)).tobytes()
    [vol] = volumes_from_datasets([ds])
    assert vol.image.shape == (16, 16, 1)
    assert vol.image.header.get_qform(coded=True)[1] == 0  # no patient space to claim
    assert vol.image.header.get_sform(coded=True)[1] == 0
    assert raw(vol)[0, 0, 0] == 240  # still stored bottom-up


def test_one_slice_is_as_thick_as_the_spacing_between_slices() -> None:
    [ds] = stack(1, SpacingBetweenSlices=20)  # SliceThickness 2
    [vol] = volumes_from_datasets([ds])
    assert vol.image.shape == (7, 5, 1)
    np.testing.assert_allclose(vol.image.affine[:3, 2], [0, 0, 20])


def test_3d_acquisition_without_geometry_keeps_dicom_row_order() -> None:
    datasets = stack(3, modality="MR", MRAcquisitionType="3D", RescaleSlope=None,
                     RescaleIntercept=None)
    for ds in datasets:
        del ds.ImageOrientationPatient, ds.ImagePositionPatient
    [vol] = volumes_from_datasets(datasets)
    assert raw(vol)[0, 0, 0] == 0  # first stored row is the first DICOM row, as dcm2niix


def test_colour_ultrasound_is_rgb24() -> None:
    ds = make_dataset(Modality="US", RescaleSlope=None, RescaleIntercept=None)
    ds.Rows, ds.Columns = 4, 6
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    ds.PixelData = rgb.tobytes()
    [vol] = volumes_from_datasets([ds])
    assert vol.image.shape == (6, 4, 1)
    got = raw(vol)
    assert got.dtype.names == ("R", "G", "B")
    assert tuple(got[1, 0, 0]) == tuple(rgb[3, 1])


def test_rt_dose_frames_are_placed_by_grid_frame_offset_and_scaled_to_gray() -> None:
    ds = make_dataset(Modality="RTDOSE", RescaleSlope=None, RescaleIntercept=None)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.2"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 4, 6, 3
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit, ds.PixelRepresentation = 31, 0
    ds.PixelSpacing, ds.ImageOrientationPatient = [2, 2], [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-5, -4, 10]
    ds.GridFrameOffsetVector, ds.DoseGridScaling = [0, 2.5, 5], 0.001
    ds.PixelData = np.arange(72, dtype=np.uint32).tobytes()
    [vol] = volumes_from_datasets([ds])
    assert vol.image.shape == (6, 4, 3) and vol.image.get_data_dtype() == np.uint32
    np.testing.assert_allclose(vol.image.affine[:3, 2:], [[0, 5], [0, -2], [2.5, 10]])
    assert vol.image.dataobj.slope == pytest.approx(0.001)


def test_datasets_already_decoded_are_not_decoded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = stack(3)
    for ds in datasets:
        _ = ds.pixel_array  # a caller that already looked at the pixels

    def decode_again(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pixel data decoded a second time")

    monkeypatch.setattr("pydicom.dataset.pixel_array", decode_again)
    [vol] = volumes_from_datasets(datasets)
    assert vol.image.shape == (7, 5, 3)


def test_volumes_pickle_for_process_pools() -> None:
    import pickle

    [vol] = volumes_from_datasets(stack(3, RescaleSlope=2, RescaleIntercept=-1024))
    back = pickle.loads(pickle.dumps(vol))
    assert np.array_equal(back.image.get_fdata(), vol.image.get_fdata())
    assert back.sidecar == vol.sidecar and back.image.dataobj.slope == 2


def test_uneven_spacing_repeats_and_mixed_series_are_refused() -> None:
    uneven = stack(4)
    uneven[3].ImagePositionPatient = [-10, -20, 5 + 2.5 * 4]
    with pytest.raises(ConversionError, match="not evenly spaced"):
        volumes_from_datasets(uneven)
    repeated = stack(4)
    repeated[2].ImagePositionPatient = repeated[1].ImagePositionPatient
    with pytest.raises(ConversionError, match="repeat unevenly"):
        volumes_from_datasets(repeated)
    with pytest.raises(ConversionError, match="2 series"):
        volumes_from_datasets(stack(2) + stack(2))
    with pytest.raises(ConversionError, match="empty"):
        volumes_from_datasets([])


def test_non_images_and_missing_pixel_data_are_refused_with_a_reason() -> None:
    sr = make_dataset(PixelData=None, Modality="SR")
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    with pytest.raises(ConversionError, match="not an image"):
        volumes_from_datasets([sr])
    empty = make_dataset(PixelData=None)
    with pytest.raises(ConversionError, match="no Pixel Data") as err:
        volumes_from_datasets([empty])
    assert isinstance(err.value, DatasetError)


# -- the sidecar and the files ------------------------------------------------------------

def test_sidecar_holds_acquisition_fields_and_never_identity() -> None:
    datasets = stack(3, modality="MR", RescaleSlope=None, RescaleIntercept=None,
                     Manufacturer="SIEMENS", ManufacturerModelName="Prisma",
                     MagneticFieldStrength=3, EchoTime=30, RepetitionTime=2000, FlipAngle=9,
                     InstitutionName="Taipei General", StationName="MR1",
                     DeviceSerialNumber="12345", AcquisitionDate="20240305",
                     AcquisitionTime="101500", SeriesDescription="t2")
    [vol] = volumes_from_datasets(datasets)
    sc = vol.sidecar
    assert sc["Manufacturer"] == "Siemens" and sc["MagneticFieldStrength"] == 3
    assert sc["EchoTime"] == pytest.approx(0.03) and sc["RepetitionTime"] == pytest.approx(2)
    assert sc["SliceThickness"] == 2 and sc["ImageOrientationPatientDICOM"] == [1, 0, 0, 0, 1, 0]
    assert sc["ConversionSoftware"] == "mida"
    assert not set(sc) & NEVER
    text = json.dumps(sc)
    for secret in (*PHI.values(), "Taipei General", "MR1", "12345", "20240305", "10:15"):
        assert secret not in text


def test_written_files_are_byte_identical_and_read_back_the_same(tmp_path: Path) -> None:
    [vol] = volumes_from_datasets(stack(3, RescaleSlope=1, RescaleIntercept=-1024))
    vol.suffix = "_e2"
    first = write_nifti(vol, tmp_path / "a" / "ct")
    second = write_nifti(vol, tmp_path / "b" / "ct")
    assert [p.name for p in first] == ["ct_e2.nii.gz", "ct_e2.json"]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
    blob = first[0].read_bytes()
    assert blob[4:8] == b"\0\0\0\0"           # gzip MTIME = 0
    assert not blob[3] & 0x08                  # no FNAME field
    back = nib.load(first[0])
    assert np.array_equal(raw(back), raw(vol)) and back.dataobj.inter == -1024
    np.testing.assert_allclose(back.affine, vol.image.affine)
    text = first[1].read_text()
    assert list(json.loads(text)) == sorted(json.loads(text)) and text.endswith("\n")
    [plain, _] = write_nifti(vol, tmp_path / "c" / "ct", gzip=False)
    assert plain.read_bytes() == gzip.decompress(blob)


# -- the catalog ----------------------------------------------------------------------------

def test_series_to_nifti_reads_deidentified_instances_from_the_store(any_node: Node,
                                                                     tmp_path: Path) -> None:
    info = write_ct_series(tmp_path / "ct", slices=5, size=16)
    ingest_paths(any_node, [tmp_path / "ct"], "ct", workers=1)
    uid = Pseudonymizer(any_node.key()).uid(info["series"])
    with any_node.catalog().session() as s:
        [vol] = series_to_nifti(s, any_node.store(), uid)
        with pytest.raises(NotFoundError):
            series_to_nifti(s, any_node.store(), "2.25.1")
    assert vol.image.shape == (16, 16, 5)
    assert vol.sidecar["SeriesInstanceUID"] == uid  # the pseudonym, never the original
    assert info["series"] not in json.dumps(vol.sidecar)
    hu = vol.image.get_fdata()
    # the planted sphere (>= 200 HU) is where the factory put it, slices bottom-up
    truth = info["truth"].transpose(2, 1, 0)[:, ::-1, :]
    assert np.all(hu[truth] >= 200) and np.all(hu[~truth] < 0)


# -- dcm2niix itself, when installed ----------------------------------------------------------

_ROW = (np.cos(0.3), np.sin(0.3), 0.0)  # an oblique, exactly orthonormal orientation
_COL = (-np.sin(0.3) * np.sin(0.2), np.cos(0.3) * np.sin(0.2), -np.cos(0.2))
SYNTHETIC = {
    "ct": dict(RescaleSlope=1, RescaleIntercept=-1024),
    "slope": dict(RescaleSlope=0.5, RescaleIntercept=-1024),
    "sagittal": dict(iop=(0, 1, 0, 0, 0, -1), step=(3, 0, 0)),
    "ct_gantry_tilt": dict(step=(0, 1, 2), GantryDetectorTilt=26.565,
                           RescaleSlope=1, RescaleIntercept=-1024),
    "mr_3d_sagittal": dict(iop=(0, 1, 0, 0, 0, -1), step=(1.2, 0, 0), modality="MR",
                           MRAcquisitionType="3D", ScanningSequence="GR",
                           RescaleSlope=None, RescaleIntercept=None),
    "mr_3d_oblique": dict(iop=(*_ROW, *_COL), step=tuple(1.5 * np.cross(_ROW, _COL)),
                          modality="MR", MRAcquisitionType="3D",
                          RescaleSlope=None, RescaleIntercept=None),
}


@pytest.mark.parametrize("name", SYNTHETIC)
def test_matches_installed_dcm2niix(name: str, tmp_path: Path) -> None:
    exe = shutil.which("dcm2niix")
    if exe is None:
        pytest.skip("dcm2niix is not installed (Debian package dcm2niix)")
    datasets = stack(4, **SYNTHETIC[name])  # type: ignore[arg-type]
    for k, ds in enumerate(datasets):
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        write(tmp_path / "in" / f"{k}.dcm", ds)
    (tmp_path / "out").mkdir()
    subprocess.run([exe, "-f", "ref", "-o", str(tmp_path / "out"), str(tmp_path / "in")],
                   check=True, capture_output=True, timeout=60)
    [vol] = volumes_from_datasets([pydicom.dcmread(p) for p in sorted((tmp_path / "in").iterdir())])
    assert_same_image(vol, tmp_path / "out" / "ref.nii")


@pytest.mark.shared_data
def test_jpeg2000_ct_series_matches_installed_dcm2niix(tmp_path: Path) -> None:
    """A real CT series (20 slices, JPEG 2000 lossless, Rescale Intercept -1024)."""
    exe = shutil.which("dcm2niix")
    if exe is None:
        pytest.skip("dcm2niix is not installed (Debian package dcm2niix)")
    folder = shared("labelled", "totalsegmentator_ref", "example_ct_dicom")
    subprocess.run([exe, "-f", "ref", "-o", str(tmp_path), str(folder)],
                   check=True, capture_output=True, timeout=120)
    [vol] = volumes_from_datasets([pydicom.dcmread(p) for p in sorted(folder.iterdir())])
    assert_same_image(vol, tmp_path / "ref.nii")
    assert (vol.image.dataobj.slope, vol.image.dataobj.inter) == (1.0, -1024.0)
