"""Acquisition parameters: normalised names and units, the rules for missing and varying values."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from mida.features import acquisition_features, extract, features_of
from mida.features.acquisition import body_part, field_strength_tesla, manufacturer, mr_sequence
from mida.node import Node
from tests.conftest import shared
from tests.features.conftest import catalog_uid, dicom_json, ingest_series


def acq(*datasets: dict[str, Any]) -> dict[str, float | str]:
    res = acquisition_features(list(datasets))
    assert res.skipped is None
    return {v.name: v.value for v in res.values}


def test_ct_header_gives_normalised_parameters_and_nothing_else() -> None:
    got = acq(dicom_json(KVP="120", XRayTubeCurrent=250, Exposure=125, ExposureTime=500,
                         ConvolutionKernel=["Br40", "3"], SliceThickness="1.25",
                         PixelSpacing=[0.7, 0.8], BodyPartExamined="ABD",
                         Manufacturer="GE MEDICAL SYSTEMS", ManufacturerModelName="Revolution",
                         CTDIvol=12.5))
    assert got == {
        "modality": "CT", "body_part": "ABDOMEN", "manufacturer": "GE", "model": "Revolution",
        "kvp": 120.0, "tube_current_ma": 250.0, "exposure_mas": 125.0,
        "exposure_time_ms": 500.0, "ctdi_vol_mgy": 12.5, "slice_thickness_mm": 1.25,
        "pixel_spacing_row_mm": 0.7, "pixel_spacing_col_mm": 0.8,
        "reconstruction_kernel": "Br40/3", "contrast": 0.0, "rows": 16.0, "columns": 16.0,
        "slices": 1.0,
    }


def test_missing_attributes_give_no_row_not_zero() -> None:
    got = acq(dicom_json())
    assert set(got) == {"modality", "contrast", "rows", "columns", "slices"}
    placeholder = acq(dicom_json(PixelSpacing=[0, 0], SliceThickness="0"))
    assert "pixel_spacing_row_mm" not in placeholder and "slice_thickness_mm" not in placeholder


def test_tube_current_and_exposure_derive_from_each_other_only_when_absent() -> None:
    from_exposure = acq(dicom_json(Exposure=100, ExposureTime=500))
    assert from_exposure["tube_current_ma"] == pytest.approx(200.0)  # 100 mAs / 0.5 s
    from_current = acq(dicom_json(XRayTubeCurrent=300, ExposureTime=250))
    assert from_current["exposure_mas"] == pytest.approx(75.0)  # 300 mA x 0.25 s
    enhanced_units = acq(dicom_json(XRayTubeCurrentInuA=150000.0, ExposureInuAs=45000))
    assert enhanced_units["tube_current_ma"] == 150.0 and enhanced_units["exposure_mas"] == 45.0


def _code(meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = "C-B0300", "SRT", meaning
    return c


def test_contrast_from_agent_code_route_or_usage() -> None:
    named = acq(dicom_json(ContrastBolusAgent="OMNIPAQUE 350"))
    assert (named["contrast"], named["contrast_agent"]) == (1.0, "OMNIPAQUE 350")
    coded = acq(dicom_json(ContrastBolusAgentSequence=[_code("Iohexol")]))
    assert (coded["contrast"], coded["contrast_agent"]) == (1.0, "Iohexol")
    route_only = acq(dicom_json(ContrastBolusRoute="IV"))  # the basic profile empties the agent
    assert route_only["contrast"] == 1.0 and "contrast_agent" not in route_only
    usage = Dataset()
    usage.ContrastBolusAgentNumber = 1
    usage.ContrastBolusAgentAdministered = "NO"
    assert acq(dicom_json(ContrastBolusUsageSequence=[usage]))["contrast"] == 0.0
    assert acq(dicom_json(ContrastBolusAgent=""))["contrast"] == 0.0


@pytest.mark.parametrize(("value", "tesla"), [
    (1.5, 1.5), (3, 3.0), (7.0, 7.0), (15000, 1.5), (30000, 3.0), (10000, 1.0),
    (500, 0.5), (0, None), (-1, None),
])
def test_field_strength_is_normalised_to_tesla(value: float, tesla: float | None) -> None:
    assert field_strength_tesla(value) == tesla


@pytest.mark.parametrize(("raw", "term"), [
    ("ABDOMEN", "ABDOMEN"), ("abd", "ABDOMEN"), ("Thorax", "CHEST"), ("CHEST", "CHEST"),
    ("abdomen pelvis", "ABDOMENPELVIS"), ("ABD_PELVIS", "ABDOMENPELVIS"), ("C-Spine", "CSPINE"),
    ("head&neck", "HEADNECK"), ("Whole Body", "WHOLEBODY"), ("KNEE", "KNEE"), ("", None),
])
def test_body_part_maps_synonyms_to_annex_l_terms(raw: str, term: str | None) -> None:
    assert body_part(raw) == term


@pytest.mark.parametrize(("raw", "vendor"), [
    ("SIEMENS", "SIEMENS"), ("Siemens Healthineers", "SIEMENS"), ("GE MEDICAL SYSTEMS", "GE"),
    ("G.E. Medical Systems", "GE"), ("Philips Medical Systems", "PHILIPS"),
    ("TOSHIBA", "TOSHIBA"), ("Acme  Devices", "ACME DEVICES"),
])
def test_manufacturer_is_a_short_vendor_name(raw: str, vendor: str) -> None:
    assert manufacturer(raw) == vendor


def test_mr_parameters_classic_header() -> None:
    got = acq(dicom_json(Modality="MR", SOPClassUID="1.2.840.10008.5.1.4.1.1.4",
                         MagneticFieldStrength="15000", ScanningSequence=["IR", "GR"],
                         SequenceVariant=["SP", "MP", "SK"], SequenceName="*tfl3d1_16ns",
                         EchoTime="2.98", RepetitionTime="2300", InversionTime="900",
                         FlipAngle="9", MRAcquisitionType="3D"))
    assert {k: got[k] for k in ("field_strength_t", "sequence", "sequence_variant",
                                "sequence_name", "echo_time_ms", "repetition_time_ms",
                                "inversion_time_ms", "flip_angle_deg",
                                "mr_acquisition_type")} == {
        "field_strength_t": 1.5, "sequence": "GR+IR", "sequence_variant": "SK+SP+MP",
        "sequence_name": "*tfl3d1_16ns", "echo_time_ms": 2.98, "repetition_time_ms": 2300.0,
        "inversion_time_ms": 900.0, "flip_angle_deg": 9.0, "mr_acquisition_type": "3D"}
    assert "kvp" not in got


def test_enhanced_mr_reads_functional_groups_and_flags_varying_echo_times() -> None:
    def fg(**kw: Any) -> Dataset:
        d = Dataset()
        for k, v in kw.items():
            setattr(d, k, v)
        return d

    shared_fg = fg(PixelMeasuresSequence=[fg(PixelSpacing=[0.5, 0.5], SliceThickness="3")],
                   MRTimingAndRelatedParametersSequence=[fg(RepetitionTime=4000.0)])
    frames = [fg(MREchoSequence=[fg(EffectiveEchoTime=te)]) for te in (10.0, 20.0, 90.0)]
    got = acq(dicom_json(Modality="MR", SOPClassUID="1.2.840.10008.5.1.4.1.1.4.1",
                         NumberOfFrames=3, MagneticFieldStrength="3", EchoPulseSequence="SPIN",
                         InversionRecovery="YES", EchoPlanarPulseSequence="NO",
                         SharedFunctionalGroupsSequence=[shared_fg],
                         PerFrameFunctionalGroupsSequence=frames))
    assert got["sequence"] == "SE+IR"
    assert (got["pixel_spacing_row_mm"], got["slice_thickness_mm"]) == (0.5, 3.0)
    assert got["repetition_time_ms"] == 4000.0
    assert (got["echo_time_ms"], got["echo_time_ms_varies"]) == (20.0, 1.0)  # the median
    assert got["slices"] == 3.0
    assert mr_sequence(echo_pulse="BOTH") == "SE+GR"


def test_values_that_vary_across_instances_store_the_median_and_a_flag() -> None:
    got = acq(*(dicom_json(KVP="120", XRayTubeCurrent=ma, ConvolutionKernel=k,
                           ImagePositionPatient=[0, 0, z], PixelSpacing=[1, 1],
                           ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
                for ma, k, z in ((100, "B30f", 0.0), (200, "B30f", 3.0), (400, "B70f", 6.0),
                                 (150, "B30f", 6.0))))
    assert got["tube_current_ma"] == 175.0 and got["tube_current_ma_varies"] == 1.0
    assert got["reconstruction_kernel"] == "B30f" and got["reconstruction_kernel_varies"] == 1.0
    assert "kvp_varies" not in got
    # positions 0, 3, 6, 6: the spacing comes from distinct positions, not SliceThickness
    assert got["spacing_between_slices_mm"] == 3.0 and got["slices"] == 4.0


def test_non_image_instances_give_only_modality_and_equipment() -> None:
    seg = dicom_json(Modality="SEG", SOPClassUID="1.2.840.10008.5.1.4.1.1.66.4",
                     Manufacturer="QIICR", PixelSpacing=[1, 1], ContrastBolusAgent="X")
    assert acq(seg) == {"modality": "SEG", "manufacturer": "QIICR"}
    assert acquisition_features([]).skipped == "the series has no instances"


# ----------------------------------------------------------------- real files

PYDICOM_FILES = ("693_UNCR.dcm", "MR2_UNCR.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm",
                 "RG1_UNCR.dcm")


def test_acquisition_values_of_real_files_match_their_headers(node: Node, tmp_path: Path) -> None:
    src = shared("dicom", "pydicom_data")
    folder = tmp_path / "in"
    folder.mkdir()
    for name in PYDICOM_FILES:
        shutil.copy(src / name, folder / name)
    ingest_series(node, folder, "pd")
    with node.catalog().session() as s:
        extract(s, node.store(), collection="pd", qc=False)
        for name in PYDICOM_FILES:
            ds = pydicom.dcmread(src / name, stop_before_pixels=True)
            got = features_of(s, catalog_uid(node, ds.SeriesInstanceUID))["acq"][""]
            assert got["modality"] == ds.Modality
            assert got["rows"] == ds.Rows and got["columns"] == ds.Columns
            for kw, feature in (("KVP", "kvp"), ("XRayTubeCurrent", "tube_current_ma"),
                                ("SliceThickness", "slice_thickness_mm"),
                                ("EchoTime", "echo_time_ms"),
                                ("RepetitionTime", "repetition_time_ms"),
                                ("MagneticFieldStrength", "field_strength_t")):
                if ds.get(kw) not in (None, ""):
                    assert got[feature] == pytest.approx(float(ds.get(kw))), (name, kw)
                elif kw == "XRayTubeCurrent" and ds.get("Exposure") and ds.get("ExposureTime"):
                    assert got[feature] == pytest.approx(  # RG1: derived, mAs / s
                        float(ds.Exposure) * 1000 / float(ds.ExposureTime))
                else:
                    assert feature not in got, (name, kw)
            if "PixelSpacing" in ds and float(ds.PixelSpacing[0]) > 0:
                assert got["pixel_spacing_row_mm"] == pytest.approx(float(ds.PixelSpacing[0]))
            else:  # RG1 says 0.000: a placeholder, not a spacing
                assert "pixel_spacing_row_mm" not in got
            if "ScanningSequence" in ds:
                assert got["sequence"] == mr_sequence(list(np.atleast_1d(ds.ScanningSequence)))
            if ds.get("ContrastBolusAgent"):
                assert (got["contrast"], got["contrast_agent"]) == (1.0, ds.ContrastBolusAgent)
            if ds.get("Manufacturer"):
                assert got["manufacturer"] == manufacturer(ds.Manufacturer)
            else:
                assert "manufacturer" not in got
