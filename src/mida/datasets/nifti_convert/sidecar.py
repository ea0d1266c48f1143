"""The BIDS-style JSON sidecar of a converted volume: acquisition fields, never identity.

Field names and units follow dcm2niix (and so BIDS): times in seconds, angles
in degrees, multi-valued strings joined with a backslash as DICOM writes them.
The sidecar is built from an allow-list, so nothing a de-identification
profile might have left in a header (names, identifiers, institution, station,
serial numbers, free-text comments, dates, times of day) can reach it. The only
identifier is the Series Instance UID, which in mida's catalog is already the
keyed pseudonym.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import mida
from mida.datasets.nifti_convert.frames import attribute, number, phase_direction
from mida.datasets.nifti_convert.models import Frame

_MANUFACTURERS = (
    ("SIEMENS", "Siemens"), ("PHILIPS", "Philips"), ("GE ", "GE"), ("GE_", "GE"),
    ("GENERAL ELECTRIC", "GE"), ("TOSHIBA", "Toshiba"), ("CANON", "Canon"),
    ("HITACHI", "Hitachi"), ("UIH", "UIH"), ("UNITED IMAGING", "UIH"), ("BRUKER", "Bruker"),
)

NEVER = frozenset({
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "PatientWeight", "PatientSize", "AccessionNumber", "StudyID", "StudyInstanceUID",
    "ReferringPhysicianName", "InstitutionName", "InstitutionAddress",
    "InstitutionalDepartmentName", "StationName", "DeviceSerialNumber",
    "AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime", "StudyDate", "StudyTime",
    "SeriesDate", "SeriesTime", "ContentDate", "ContentTime", "ImageComments",
    "ProcedureStepDescription", "StudyDescription",
})
"""Keys a mida sidecar never holds (tests check every sidecar against this list)."""


def _clean(value: float) -> float:
    """Round away binary noise (1.52 / 1000 stays 0.00152) but keep 10 significant digits."""
    return float(f"{value:.10g}")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list | tuple) or (hasattr(value, "__iter__")
                                           and not isinstance(value, str | bytes)):
        parts = [str(v) for v in value]
        text = "\\".join(parts)
    else:
        text = str(value)
    text = text.strip()
    return text or None


def _positive(value: Any, scale: float = 1.0) -> float | None:
    v = number(value)
    return _clean(v * scale) if v is not None and v > 0 else None


def _integer(value: Any) -> int | None:
    v = number(value)
    return int(v) if v is not None else None


_FieldReader = Callable[[Frame], Any]


def _field(*keywords: str, kind: Callable[[Any], Any] = _text) -> _FieldReader:
    def read(f: Frame) -> Any:
        for keyword in keywords:
            value = attribute(f, keyword)
            if value is not None:
                out = kind(value)
                if out is not None:
                    return out
        return None
    return read


def _seconds(*keywords: str) -> _FieldReader:
    return _field(*keywords, kind=lambda v: _positive(v, 1e-3))


def _manufacturer(f: Frame) -> str | None:
    raw = _text(attribute(f, "Manufacturer"))
    if raw is None:
        return None
    upper = raw.upper() + " "
    for needle, name in _MANUFACTURERS:
        if needle in upper or upper.startswith(needle.strip() + " "):
            return name
    return raw


def _image_type(f: Frame) -> list[str] | None:
    value = f.dataset.get("ImageType")
    if not value:
        return None
    return [str(v) for v in (value if not isinstance(value, str) else value.split("\\"))]


def _orientation(f: Frame) -> list[float] | None:
    return None if f.orientation is None else [_clean(float(v)) for v in f.orientation]


# Order is the order of the JSON file before keys are sorted on writing; it groups
# fields as dcm2niix does, which helps reading this table.
_FIELDS: tuple[tuple[str, _FieldReader], ...] = (
    ("Modality", _field("Modality")),
    ("MagneticFieldStrength", _field("MagneticFieldStrength", kind=_positive)),
    ("ImagingFrequency", _field("ImagingFrequency", "TransmitterFrequency", kind=_positive)),
    ("Manufacturer", _manufacturer),
    ("ManufacturersModelName", _field("ManufacturerModelName")),
    ("BodyPart", _field("BodyPartExamined")),
    ("PatientPosition", _field("PatientPosition")),
    ("SoftwareVersions", _field("SoftwareVersions")),
    ("MRAcquisitionType", _field("MRAcquisitionType")),
    ("SeriesDescription", _field("SeriesDescription")),
    ("ProtocolName", _field("ProtocolName")),
    ("ScanningSequence", _field("ScanningSequence")),
    ("SequenceVariant", _field("SequenceVariant")),
    ("ScanOptions", _field("ScanOptions")),
    ("SequenceName", _field("SequenceName", "PulseSequenceName")),
    ("ImageType", _image_type),
    ("SeriesNumber", _field("SeriesNumber", kind=_integer)),
    ("AcquisitionNumber", _field("AcquisitionNumber", kind=_integer)),
    ("SliceThickness", _field("SliceThickness", kind=_positive)),
    ("SpacingBetweenSlices", _field("SpacingBetweenSlices", kind=_positive)),
    ("SAR", _field("SAR", kind=_positive)),
    ("RepetitionTime", _seconds("RepetitionTime")),
    ("InversionTime", _seconds("InversionTime")),
    ("FlipAngle", _field("FlipAngle", kind=_positive)),
    ("PercentPhaseFOV", _field("PercentPhaseFieldOfView", kind=_positive)),
    ("PercentSampling", _field("PercentSampling", kind=_positive)),
    ("PhaseEncodingSteps", _field("NumberOfPhaseEncodingSteps",
                                  "MRAcquisitionPhaseEncodingStepsInPlane", kind=_integer)),
    ("PixelBandwidth", _field("PixelBandwidth", kind=_positive)),
    ("InPlanePhaseEncodingDirectionDICOM", phase_direction),
    ("KVP", _field("KVP", kind=_positive)),
    ("XRayTubeCurrent", _field("XRayTubeCurrent", kind=_positive)),
    ("XRayExposure", _field("Exposure", kind=_positive)),
    ("ExposureTime", _seconds("ExposureTime")),
    ("ConvolutionKernel", _field("ConvolutionKernel")),
    ("ImageOrientationPatientDICOM", _orientation),
    ("SeriesInstanceUID", _field("SeriesInstanceUID")),
)


def sidecar_for(grid: Sequence[Sequence[Frame]], echo_number: int | None) -> dict[str, Any]:
    """The sidecar of a volume given as ``[volume][slice]`` frames.

    Values come from the first frame of the first volume, as dcm2niix takes
    them from its first file. ``echo_number`` is set when the series has more
    than one echo.
    """
    ref = grid[0][0]
    out: dict[str, Any] = {}
    for key, read in _FIELDS:
        value = read(ref)
        if value is not None:
            out[key] = value
    if str(out.get("Modality", "")).upper() == "MR" and ref.echo_time and ref.echo_time > 0:
        out["EchoTime"] = _clean(ref.echo_time / 1000.0)
    if echo_number is not None:
        out["EchoNumber"] = echo_number
    if ref.units == "Hz":
        out["Units"] = "Hz"
    if ref.philips_scale or (out.get("Manufacturer") == "Philips" and out.get("Modality") == "MR"):
        out["PhilipsRescaleSlope"] = _clean(ref.slope)
        out["PhilipsRescaleIntercept"] = _clean(ref.intercept)
        if ref.philips_scale:
            out["PhilipsScaleSlope"] = _clean(ref.philips_scale)
        out["UsePhilipsFloatNotDisplayScaling"] = 1 if ref.philips_scale else 0
    timing = _slice_timing(grid[0]) if out.get("Modality") == "MR" else None
    if timing is not None:
        out["SliceTiming"] = timing
    out["ConversionSoftware"] = "mida"
    out["ConversionSoftwareVersion"] = mida.__version__
    return {k: v for k, v in out.items() if k not in NEVER}


def _slice_timing(first: Sequence[Frame]) -> list[float] | None:
    """Each slice's acquisition time in seconds from the volume's first slice.

    From a mosaic's reference times, else from per-frame or per-instance
    acquisition times; left out when all slices share one time (3D acquisitions).
    """
    if len(first) < 2:
        return None
    if all(f.slice_time is not None for f in first):
        times = [float(f.slice_time) for f in first]  # type: ignore[arg-type]
    elif all(f.acquired is not None for f in first):
        start = min(f.acquired for f in first)  # type: ignore[type-var]
        times = [float(f.acquired) - start for f in first]  # type: ignore[operator, arg-type]
    else:
        return None
    if max(times) - min(times) <= 0:
        return None
    return [_clean(round(t, 6)) for t in times]

