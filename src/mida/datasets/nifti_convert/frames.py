"""From DICOM instances to frames: decode once, read each plane's geometry and scaling.

Three layouts reach the same :class:`~mida.datasets.nifti_convert.models.Frame`:

* **classic** single-frame images (CT, MR, CR/DX, US...), one plane each;
* **enhanced** multi-frame images (PS3.3 C.7.6.16 Multi-frame Functional Groups),
  one plane per frame, its position, orientation, spacing, rescale, echo time
  and frame type read from the per-frame group or else the shared group;
* **Siemens mosaics** (Image Type ``MOSAIC``), one plane per tile, each tile
  placed along the slice normal as dcm2niix and nibabel place them.

Classic multi-frame images without functional groups (US cine) give one
plane per frame that shares the instance's geometry, except that a Grid Frame
Offset Vector (RT Dose) places each frame along the normal.
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from mida.datasets.nifti_convert.models import ConversionError, Frame

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_RT_IMAGE = "1.2.840.10008.5.1.4.1.1.481.1"

# Storage classes that carry no image even when the modality sounds like one;
# everything else without Pixel Data is refused as "missing pixel data".
_NON_IMAGE_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",   # structured reports
    "1.2.840.10008.5.1.4.1.1.11.",   # presentation states
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated documents
    "1.2.840.10008.5.1.4.1.1.481.",  # RT objects (RT Image .1 has pixels and passes below)
    "1.2.840.10008.5.1.4.1.1.9.",    # waveforms
    "1.2.840.10008.5.1.4.1.1.66",    # raw data, spatial registration, fiducials
    "1.2.840.10008.5.1.4.1.1.67",    # real world value mapping
)


def frames_of(ds: Dataset) -> list[Frame]:
    """The planes of one instance, its pixel data decoded once.

    Raises
    ------
    ConversionError
        The instance is not an image, has no pixel data, or cannot be decoded.
    """
    label = f"instance {ds.get('SOPInstanceUID', '?')}"
    pixels = decode(ds, label)
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        return _enhanced_frames(ds, pixels)
    if pixels.shape[0] == 1 and "MOSAIC" in _image_type(ds):
        return _mosaic_frames(ds, pixels[0], label)
    return _classic_frames(ds, pixels)


def decode(ds: Dataset, label: str) -> np.ndarray:
    """The stored values as ``[frame, row, column(, sample)]`` in native byte order.

    pydicom masks unused high bits of unsigned data and sign-extends signed
    data stored in fewer bits (the 12-bit cases of ``dcm_qa_12bit``), converts
    YCbCr colour to RGB, and keeps palette indices and MONOCHROME1 values as
    stored, as dcm2niix does.
    """
    if not any(k in ds for k in PIXEL_KEYWORDS):
        sop_class = str(ds.get("SOPClassUID", ""))
        if sop_class.startswith(_NON_IMAGE_PREFIXES) and sop_class != _RT_IMAGE:
            raise ConversionError(
                f"{label} is not an image (SOP Class {sop_class}): only image series can be "
                f"converted to NIfTI; leave this series out of the export")
        raise ConversionError(
            f"{label} has no Pixel Data (SOP Class {sop_class or 'unknown'}): the file is "
            f"incomplete or not an image; re-ingest it from the source or leave it out")
    try:
        arr: np.ndarray = ds.pixel_array
    except Exception as exc:  # pydicom raises many types, all meaning "cannot decode"
        ts = ds.file_meta.get("TransferSyntaxUID", "?") if hasattr(ds, "file_meta") else "?"
        raise ConversionError(
            f"{label}: pixel data cannot be decoded (Transfer Syntax {ts}: "
            f"{type(exc).__name__}: {exc}); install the decoder pydicom names "
            f"(pylibjpeg-libjpeg, pylibjpeg-openjpeg, pyjpegls or python-gdcm)") from None
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    rows, cols = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    tail = (samples,) if samples > 1 else ()
    try:
        return arr.reshape(nframes, rows, cols, *tail)
    except ValueError:
        raise ConversionError(
            f"{label}: decoded {arr.shape} values do not match Rows {rows} x Columns {cols} "
            f"x {nframes} frame(s) x {samples} sample(s); the header is inconsistent") from None


# -- attribute helpers --------------------------------------------------------------------

def floats(value: Any) -> np.ndarray | None:
    """A multi-valued numeric attribute as float64, or None when absent or malformed."""
    if isinstance(value, list | tuple | MultiValue | np.ndarray):
        seq = list(value)
    elif value is None or value == "":
        return None
    else:
        seq = [value]
    try:
        out = np.array([float(v) for v in seq], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.size and np.all(np.isfinite(out)) else None


def number(value: Any) -> float | None:
    """A single numeric value (the first of a multi-valued one), or None."""
    arr = floats(value)
    return None if arr is None else float(arr[0])


def private(ds: Dataset, group: int, creator: str, element: int) -> Any:
    """The value of a private element found by its creator, whatever block it uses."""
    try:
        return ds.private_block(group, creator)[element].value
    except (KeyError, ValueError):
        return None


def group_items(ds: Dataset, index: int) -> tuple[Dataset, ...]:
    """The functional group items of frame ``index``: per-frame first, then shared."""
    out: list[Dataset] = []
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is not None and index < len(per):
        out.append(per[index])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        out.append(shared[0])
    return tuple(out)


def lookup(items: tuple[Dataset, ...], sequence: str, keyword: str) -> Any:
    """``keyword`` inside the first of ``items`` that holds ``sequence``, or None."""
    for item in items:
        seq = item.get(sequence)
        if seq:
            value = seq[0].get(keyword)
            if value is not None:
                return value
    return None


def nested(items: tuple[Dataset, ...], keyword: str) -> Any:
    """``keyword`` in any functional group macro of ``items`` (per-frame wins), or None."""
    for item in items:
        for elem in item:
            if elem.VR == "SQ" and isinstance(elem.value, DicomSequence) and elem.value:
                value = elem.value[0].get(keyword)
                if value is not None and value != "":
                    return value
    return None


def _image_type(ds: Dataset) -> tuple[str, ...]:
    value = ds.get("ImageType")
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split("\\")
    return tuple(str(v).upper() for v in value)


def component_of(image_type: tuple[str, ...]) -> str:
    """MAGNITUDE, PHASE, REAL or IMAGINARY from Image Type values 3 and on (Siemens M/P/R/I)."""
    values = set(image_type[2:])
    if values & {"P", "PHASE"}:
        return "PHASE"
    if values & {"R", "REAL"}:
        return "REAL"
    if values & {"I", "IMAGINARY"}:
        return "IMAGINARY"
    return "MAGNITUDE"


_EPOCH = dt.date(2000, 1, 1).toordinal()


def seconds(date: Any, time: Any) -> float | None:
    """A DA + TM pair (or a DT in ``time`` with ``date`` None) as seconds, for ordering.

    Dates in the catalog are shifted per patient, never reordered, so
    differences and order survive de-identification.
    """
    text = str(time or "").strip()
    day = str(date or "").strip()
    if not text:
        return None
    if date is None and len(text) >= 8 and "." not in text[:8]:
        day, text = text[:8], text[8:]
    text = text.split("+")[0].split("-")[0]
    whole, _, frac = text.partition(".")
    whole = (whole + "000000")[:6]
    try:
        tod = int(whole[:2]) * 3600 + int(whole[2:4]) * 60 + int(whole[4:6])
        tod_f = tod + (float("0." + frac) if frac else 0.0)
        # Days from 2000-01-01 keep the float's resolution near a microsecond.
        base = dt.date(int(day[:4]), int(day[4:6]), int(day[6:8])).toordinal() - _EPOCH \
            if day else 0
    except ValueError:
        return None
    return base * 86400.0 + tod_f


def _common(ds: Dataset) -> dict[str, Any]:
    return {
        "dataset": ds,
        "instance_number": int(number(ds.get("InstanceNumber")) or 0),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        "bits_stored": int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16),
    }


def _spacing(value: Any) -> tuple[float, float] | None:
    arr = floats(value)
    if arr is None or arr.size < 2 or arr[0] <= 0 or arr[1] <= 0:
        return None
    return float(arr[0]), float(arr[1])


def _orientation(value: Any) -> np.ndarray | None:
    arr = floats(value)
    if arr is None or arr.size != 6:
        return None
    row, col = arr[:3], arr[3:]
    if np.linalg.norm(row) < 1e-3 or np.linalg.norm(col) < 1e-3:
        return None
    return arr


def _position(value: Any) -> np.ndarray | None:
    arr = floats(value)
    return arr if arr is not None and arr.size == 3 else None


# -- classic ------------------------------------------------------------------------------

def _classic_frames(ds: Dataset, pixels: np.ndarray) -> list[Frame]:
    image_type = _image_type(ds)
    common = _common(ds)
    echo = number(ds.get("EchoNumbers"))
    philips = number(private(ds, 0x2005, "Philips MR Imaging DD 001", 0x0E))
    base: dict[str, Any] = {
        "position": _position(ds.get("ImagePositionPatient")),
        "orientation": _orientation(ds.get("ImageOrientationPatient")),
        "pixel_spacing": _spacing(ds.get("PixelSpacing")),
        # RT Dose stores Gy per stored unit in Dose Grid Scaling instead of a rescale.
        "slope": number(ds.get("RescaleSlope")) or number(ds.get("DoseGridScaling")) or 1.0,
        "intercept": number(ds.get("RescaleIntercept")) or 0.0,
        "philips_scale": philips if philips else None,
        "echo_number": int(echo) if echo else None,
        "echo_time": number(ds.get("EchoTime")),
        "component": component_of(image_type),
        "temporal_index": _int(ds.get("TemporalPositionIdentifier")),
        "acquired": seconds(ds.get("AcquisitionDate", ""), ds.get("AcquisitionTime"))
        if ds.get("AcquisitionTime") else seconds(None, ds.get("AcquisitionDateTime")),
    }
    frames = [Frame(pixels=pixels[i], number=i + 1, **common, **base)
              for i in range(pixels.shape[0])]
    _grid_frame_offsets(ds, frames)
    return frames


def _grid_frame_offsets(ds: Dataset, frames: list[Frame]) -> None:
    """Place the frames of a multi-frame RT Dose (or any image with Grid Frame Offset
    Vector): PS3.3 C.8.8.3.2, offsets along the normal from Image Position (Patient)."""
    offsets = floats(ds.get("GridFrameOffsetVector"))
    first = frames[0]
    if offsets is None or offsets.size != len(frames) or len(frames) < 2 \
            or first.position is None or first.orientation is None:
        return
    if offsets[0] != 0:  # relative offsets start at 0; absolute ones at the first z
        offsets = offsets - first.position[2]
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    normal /= np.linalg.norm(normal)
    for frame, offset in zip(frames, offsets, strict=True):
        frame.position = first.position + offset * normal


def _int(value: Any) -> int | None:
    v = number(value)
    return int(v) if v is not None else None


# -- enhanced -----------------------------------------------------------------------------

def _enhanced_frames(ds: Dataset, pixels: np.ndarray) -> list[Frame]:
    common = _common(ds)
    top_slope = number(ds.get("RescaleSlope")) or 1.0
    top_inter = number(ds.get("RescaleIntercept")) or 0.0
    out = []
    for i in range(pixels.shape[0]):
        items = group_items(ds, i)
        frame_type = lookup(items, "MRImageFrameTypeSequence", "FrameType") \
            or lookup(items, "CTImageFrameTypeSequence", "FrameType") or ()
        complex_part = lookup(items, "MRImageFrameTypeSequence", "ComplexImageComponent") \
            or ds.get("ComplexImageComponent")
        component = str(complex_part).upper() if complex_part else component_of(
            tuple(str(v).upper() for v in frame_type))
        if component not in ("PHASE", "REAL", "IMAGINARY"):
            component = "MAGNITUDE"
        units = None
        for item in items:
            rwv = item.get("RealWorldValueMappingSequence")
            if rwv:
                codes = rwv[0].get("MeasurementUnitsCodeSequence")
                if codes:
                    units = str(codes[0].get("CodeValue", "")) or None
                break
        slope = number(lookup(items, "PixelValueTransformationSequence", "RescaleSlope"))
        inter = number(lookup(items, "PixelValueTransformationSequence", "RescaleIntercept"))
        pm_spacing = lookup(items, "PixelMeasuresSequence", "PixelSpacing")
        acquired = lookup(items, "FrameContentSequence", "FrameAcquisitionDateTime") \
            or lookup(items, "FrameContentSequence", "FrameReferenceDateTime")
        out.append(Frame(
            pixels=pixels[i], number=i + 1, **common,
            position=_position(lookup(items, "PlanePositionSequence", "ImagePositionPatient")),
            orientation=_orientation(
                lookup(items, "PlaneOrientationSequence", "ImageOrientationPatient")),
            pixel_spacing=_spacing(pm_spacing if pm_spacing is not None
                                   else ds.get("PixelSpacing")),
            slope=slope if slope else top_slope,
            intercept=inter if inter is not None else top_inter,
            philips_scale=_philips_frame_scale(items),
            echo_time=number(lookup(items, "MREchoSequence", "EffectiveEchoTime")),
            component=component,
            units=units,
            temporal_index=_int(lookup(items, "FrameContentSequence", "TemporalPositionIndex")),
            acquired=seconds(None, acquired) if acquired else None,
            groups=items,
        ))
    return out


def _philips_frame_scale(items: tuple[Dataset, ...]) -> float | None:
    """Philips Scale Slope from the private per-frame item (2005,xx0F of DD 005), if kept."""
    for item in items:
        seq = private(item, 0x2005, "Philips MR Imaging DD 005", 0x0F)
        if seq:
            value = number(private(seq[0], 0x2005, "Philips MR Imaging DD 001", 0x0E))
            if value:
                return value
    return None


# -- Siemens mosaic -----------------------------------------------------------------------

def _mosaic_frames(ds: Dataset, mosaic: np.ndarray, label: str) -> list[Frame]:
    """Cut a Siemens mosaic into its tiles and place each one.

    The number of tiles comes from Number Of Images In Mosaic (0019,xx0A),
    else from the CSA image header; when de-identification removed both (the
    CSA headers are not on the safe-private list), the grid comes from the
    Acquisition Matrix and trailing all-zero tiles are dropped, as the scanner
    pads the grid with blank tiles. The slice normal comes from the CSA header
    when present, else from row x column (what Siemens writes for all but
    some sagittal stacks).
    """
    rows, cols = mosaic.shape[:2]
    csa = _csa_image_header(ds)
    count = number(private(ds, 0x0019, "SIEMENS MR HEADER", 0x0A))
    if not count and csa is not None:
        count = _csa_value(csa, "NumberOfImagesInMosaic")
    if count:
        grid = math.ceil(math.sqrt(int(count)))
        n = int(count)
    else:
        grid = _mosaic_grid(ds, rows, cols, label)
        n = grid * grid
    if rows % grid or cols % grid:
        raise ConversionError(
            f"{label}: a {rows}x{cols} mosaic cannot hold a {grid}x{grid} grid of tiles; "
            f"Number Of Images In Mosaic ({n}) disagrees with the image size")
    tr, tc = rows // grid, cols // grid
    tiles = mosaic.reshape(grid, tr, grid, tc, *mosaic.shape[2:]).swapaxes(1, 2)
    tiles = tiles.reshape(grid * grid, tr, tc, *mosaic.shape[2:])
    if not count:
        nonblank = np.flatnonzero(tiles.reshape(grid * grid, -1).any(axis=1))
        n = int(nonblank[-1]) + 1 if nonblank.size else 1
    common = _common(ds)
    (base,) = _classic_frames(ds, mosaic[None])
    iop, ipp, spacing = base.orientation, base.position, base.pixel_spacing
    positions: list[np.ndarray | None] = [None] * n
    if iop is not None and ipp is not None and spacing is not None:
        row_dir, col_dir = iop[:3], iop[3:]
        normal = _csa_normal(csa) if csa is not None else None
        if normal is None:
            normal = np.cross(row_dir, col_dir)
        normal = normal / np.linalg.norm(normal)
        step = number(ds.get("SpacingBetweenSlices")) or number(ds.get("SliceThickness")) or 1.0
        # Image Position refers to the mosaic's top-left pixel: move it to the first tile's.
        first = ipp + col_dir * spacing[0] * (rows - tr) / 2 \
            + row_dir * spacing[1] * (cols - tc) / 2
        positions = [first + k * step * normal for k in range(n)]
    times = floats(private(ds, 0x0019, "SIEMENS MR HEADER", 0x29))
    if times is None and csa is not None:
        times = floats(_csa_value(csa, "MosaicRefAcqTimes", many=True))
    out = []
    for k in range(n):
        out.append(Frame(
            pixels=tiles[k], number=k + 1, **common, position=positions[k],
            orientation=iop, pixel_spacing=spacing, slope=base.slope,
            intercept=base.intercept, philips_scale=None, echo_number=base.echo_number,
            echo_time=base.echo_time, component=base.component,
            temporal_index=base.temporal_index, acquired=base.acquired,
            slice_time=float(times[k]) / 1000.0 if times is not None and k < times.size else None,
        ))
    return out


def _mosaic_grid(ds: Dataset, rows: int, cols: int, label: str) -> int:
    """The tile grid of a mosaic whose tile count was removed: from the Acquisition Matrix."""
    matrix = floats(ds.get("AcquisitionMatrix"))
    sizes = sorted({int(v) for v in matrix if v > 0}, reverse=True) if matrix is not None else []
    for size in sizes:
        if size and rows % size == 0 and cols % size == 0 and rows // size == cols // size:
            return rows // size
    raise ConversionError(
        f"{label}: a Siemens mosaic without Number Of Images In Mosaic (0019,xx0A) or a CSA "
        f"header, and its Acquisition Matrix does not tell the tile size; keep (0019,xx0A) "
        f"in the de-identification profile's safe private attributes")


def _csa_image_header(ds: Dataset) -> dict[str, Any] | None:
    if private(ds, 0x0029, "SIEMENS CSA HEADER", 0x10) is None:
        return None
    try:
        with warnings.catch_warnings():
            # nibabel warns that its DICOM readers are experimental; only the CSA parser is used
            warnings.simplefilter("ignore")
            from nibabel.nicom import csareader

        header: dict[str, Any] | None = csareader.get_csa_header(ds, "image")
    except Exception:  # a malformed CSA header is ignored, as the fallbacks still apply
        return None
    return header


def _csa_value(csa: dict[str, Any], name: str, many: bool = False) -> Any:
    tag = csa.get("tags", {}).get(name)
    if not tag or not tag.get("items"):
        return None
    items = tag["items"]
    return items if many else items[0]


def _csa_normal(csa: dict[str, Any]) -> np.ndarray | None:
    value = floats(_csa_value(csa, "SliceNormalVector", many=True))
    return value if value is not None and value.size == 3 and np.linalg.norm(value) > 0 else None



def attribute(frame: Frame, keyword: str) -> Any:
    """``keyword`` for this frame: its functional groups first, then the instance."""
    if frame.groups:
        value = nested(frame.groups, keyword)
        if value is not None:
            return value
    value = frame.dataset.get(keyword)
    return None if value is None or value == "" else value


def phase_direction(frame: Frame) -> str | None:
    """In-plane Phase Encoding Direction as ``ROW`` or ``COL`` (enhanced files say ``COLUMN``)."""
    value = str(attribute(frame, "InPlanePhaseEncodingDirection") or "").strip().upper()
    return {"ROW": "ROW", "COL": "COL", "COLUMN": "COL"}.get(value)
