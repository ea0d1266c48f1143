"""Image QC metrics on synthetic series whose right answers are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from mida.catalog.models import Instance, Series
from mida.features import StoredInstance, extract, features_of, qc_features
from mida.features.qc import haar_noise, missing_slices
from mida.node import Node
from tests.features.conftest import (
    catalog_uid,
    dicom_json,
    ingest_series,
    phantom,
    write_series,
)


def qc_of(node: Node, folder: Path, series: str) -> dict[str, float | str]:
    ingest_series(node, folder)
    with node.catalog().session() as s:
        extract(s, node.store(), series_uids=[catalog_uid(node, series)])
        return features_of(s, catalog_uid(node, series))["qc"][""]


@pytest.mark.parametrize("sigma", [3.0, 12.0, 40.0])
def test_haar_noise_recovers_gaussian_sigma_despite_anatomy(sigma: float) -> None:
    image = phantom(1, 128)["hu"][0]
    noisy = image + np.random.default_rng(1).normal(0, sigma, image.shape)
    assert haar_noise(noisy) == pytest.approx(sigma, rel=0.10)
    # without noise the estimate is ~0: the ramp and flat areas contribute nothing
    assert haar_noise(image) == pytest.approx(0.0, abs=0.5)


def test_noise_of_a_stored_ct_series_in_hu(node: Node, tmp_path: Path) -> None:
    ph = phantom(4, 64, sigma=15.0, seed=3)
    info = write_series(tmp_path / "ct", ph["hu"])
    qc = qc_of(node, tmp_path / "ct", info["series"])
    assert qc["noise"] == pytest.approx(15.0, rel=0.10)
    assert "snr" not in qc  # CT values are offset (HU): no SNR
    assert qc["value_min"] < -1000 < 180 < qc["value_max"]
    assert (qc["orientation_consistent"], qc["missing_slices"], qc["duplicate_positions"]) == (
        1.0, 0.0, 0.0)


def test_missing_slice_is_counted(node: Node, tmp_path: Path) -> None:
    hu = phantom(8, 16)["hu"]
    info = write_series(tmp_path / "ct", hu, keep=[0, 1, 2, 4, 5, 6, 7])  # slice 3 deleted
    qc = qc_of(node, tmp_path / "ct", info["series"])
    assert qc["missing_slices"] == 1.0 and qc["duplicate_positions"] == 0.0
    assert pytest.approx(missing_slices(np.array([0.0, 1, 2, 5, 6]))) == 2


def test_duplicate_positions_are_counted(node: Node, tmp_path: Path) -> None:
    hu = phantom(5, 16)["hu"]
    info = write_series(tmp_path / "ct", hu, z=[0.0, 2.5, 5.0, 5.0, 7.5])
    qc = qc_of(node, tmp_path / "ct", info["series"])
    assert (qc["duplicate_positions"], qc["missing_slices"]) == (1.0, 0.0)


def test_inconsistent_orientation_is_flagged_and_pixels_still_measured(
        node: Node, tmp_path: Path) -> None:
    hu = phantom(3, 16)["hu"]
    tilted = (1.0, 0.0, 0.0, 0.0, 0.9998, 0.02)
    axial = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    info = write_series(tmp_path / "ct", hu, orientations=[axial, axial, tilted])
    qc = qc_of(node, tmp_path / "ct", info["series"])
    assert qc["orientation_consistent"] == 0.0
    assert "missing_slices" not in qc  # no single slice normal to measure along
    assert "saturation" in qc and "noise" in qc


def test_saturation_counts_the_bit_depth_ends_and_ignores_padding(
        node: Node, tmp_path: Path) -> None:
    hu = phantom(2, 20)["hu"]
    stored = np.round(hu + 1024).astype(np.int16)
    stored[:, :2, :] = 32767  # 2 rows of 20 clipped high: 40 of 400 pixels per slice
    stored[:, 2, :5] = -32768  # 5 pixels at the low end
    stored[:, -4:, :] = -2000  # 4 rows of padding (outside the reconstruction circle)
    info = write_series(tmp_path / "ct", hu, stored=stored, PixelPaddingValue=-2000)
    qc = qc_of(node, tmp_path / "ct", info["series"])
    valid = 400 - 80
    assert qc["saturation_high"] == pytest.approx(40 / valid)
    assert qc["saturation_low"] == pytest.approx(5 / valid)
    assert qc["saturation"] == pytest.approx(45 / valid)
    assert qc["value_min"] == -32768 - 1024  # padding (-2000 stored) is not a value
    assert qc["value_max"] == 32767 - 1024


def test_mr_series_gets_snr(node: Node, tmp_path: Path) -> None:
    ph = phantom(3, 64, sigma=8.0, seed=5)
    signal = np.where(ph["hu"] > -500, 400.0, 30.0) + np.random.default_rng(2).normal(
        0, 8.0, ph["hu"].shape)
    info = write_series(tmp_path / "mr", signal - 1024, Modality="MR",
                        SOPClassUID="1.2.840.10008.5.1.4.1.1.4", RescaleIntercept=0,
                        MagneticFieldStrength=3)
    qc = qc_of(node, tmp_path / "mr", info["series"])
    assert qc["noise"] == pytest.approx(8.0, rel=0.10)
    assert qc["snr"] == pytest.approx(400 / 8.0, rel=0.15)


def test_series_without_pixels_is_skipped_with_a_reason(node: Node) -> None:
    seg = dicom_json(Modality="SEG", SOPClassUID="1.2.840.10008.5.1.4.1.1.66.4")
    res = qc_features(node.store(), [StoredInstance(seg["00080016"]["Value"][0], "0" * 64, seg)])
    assert (res.skipped, res.values) == ("no image pixels to measure (modality SEG)", [])


def test_undecodable_pixels_leave_header_metrics_and_a_note(node: Node, tmp_path: Path) -> None:
    info = write_series(tmp_path / "ct", phantom(3, 16)["hu"])
    ingest_series(node, tmp_path / "ct")
    with node.catalog().session() as s:
        rows = s.execute(select(Instance.SOPClassUID, Instance.blob_sha256, Instance.dataset)
                         .join(Series).where(Series.SeriesInstanceUID
                                             == catalog_uid(node, info["series"]))).all()
    instances = [StoredInstance(c, b, js) for c, b, js in rows]
    broken = StoredInstance(instances[0].SOPClassUID,
                            node.store().put(b"not a DICOM file").digest, instances[0].dataset)
    res = qc_features(node.store(), [broken, *instances[1:]])
    names = {v.name for v in res.values}
    assert {"orientation_consistent", "missing_slices", "noise", "saturation"} <= names
    assert res.notes == ["1 of 3 instances' pixel data cannot be decoded (InvalidDicomError): "
                         "pixel metrics use the rest"]
    res = qc_features(node.store(), [broken])
    assert res.notes == ["pixel data cannot be decoded (InvalidDicomError): no pixel metrics"]
    assert "noise" not in {v.name for v in res.values}
