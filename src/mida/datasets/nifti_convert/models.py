"""The data of the DICOM → NIfTI converter: one output volume, one input frame, its error."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset

from mida.errors import DatasetError


class ConversionError(DatasetError):
    """A series cannot be converted to NIfTI as asked (no pixels, irregular geometry...)."""


@dataclass
class NiftiVolume:
    """One NIfTI image made from (part of) a DICOM series, with its sidecar.

    Attributes
    ----------
    image
        The NIfTI-1 image. Its data object is an array proxy over the stored
        values exactly as :func:`write_nifti` writes them: ``image.dataobj.get_unscaled()``
        holds the stored integers, ``image.dataobj.slope`` / ``.inter`` the NIfTI
        ``scl_slope`` / ``scl_inter``, and ``image.get_fdata()`` the modality
        values (HU on CT). As with any image nibabel loads, ``image.header``
        shows the scaling as ``nan`` because it lives in the proxy.
    sidecar
        BIDS-style acquisition fields (JSON-ready: str, int, float, lists). Never
        names, identifiers, dates or times of day.
    suffix
        What tells this volume apart from the other volumes of the same series,
        in dcm2niix's words: ``""`` for the only (or plain magnitude) volume,
        ``"_s7"`` for the instances with Series Number 7 when a series mixes
        several, ``"_e2"`` for the second echo, ``"_ph"`` for phase, ``"_real"``,
        ``"_imaginary"``, ``"_fieldmaphz"`` for a field map in Hz, and
        ``"_i00012"`` when a series mixes geometries (the lowest Instance Number
        of that stack).
    """

    image: nib.Nifti1Image
    sidecar: dict[str, Any]
    suffix: str = ""


@dataclass(eq=False)
class Frame:
    """One 2D plane of stored values and everything needed to place it in a volume.

    A classic instance gives one frame, an enhanced multi-frame instance one per
    frame, a Siemens mosaic one per tile. ``pixels`` is ``[row, column]`` (plus a
    trailing sample axis for colour) in native byte order, a view into the
    instance's decoded array: nothing is copied until the volume is filled.
    """

    pixels: np.ndarray
    dataset: Dataset
    number: int
    """1-based frame (or mosaic tile) number within its instance."""
    instance_number: int
    sop_instance_uid: str
    bits_stored: int
    position: np.ndarray | None
    """Image Position (Patient) of the centre of the first stored pixel, LPS mm."""
    orientation: np.ndarray | None
    """Image Orientation (Patient): row direction then column direction cosines."""
    pixel_spacing: tuple[float, float] | None
    """Pixel Spacing: (between rows, between columns) in mm."""
    slope: float = 1.0
    intercept: float = 0.0
    philips_scale: float | None = None
    """Philips MR Scale Slope (2005,xx0E): present, it turns stored values into
    floating-point values (dcm2niix's default "Philips precise" scaling)."""
    echo_number: int | None = None
    echo_time: float | None = None
    component: str = "MAGNITUDE"
    units: str | None = None
    temporal_index: int | None = None
    acquired: float | None = None
    """Acquisition time in seconds on a shifted-but-consistent clock (for order only)."""
    slice_time: float | None = None
    """Mosaic slice acquisition time in seconds from the start of the volume."""
    groups: tuple[Dataset, ...] = field(default_factory=tuple)
    """Functional group items of an enhanced frame: per-frame first, then shared."""


class MemoryFile(io.RawIOBase):
    """A read-only, seekable file over a converted volume's bytes, without copying them.

    nibabel reads the image header and, on demand, the voxels from it, as from
    the file :func:`write_nifti` writes; the writer takes ``buffer`` as is.
    Pickles as its bytes (for process pools).
    """

    def __init__(self, data: bytes | bytearray) -> None:
        super().__init__()
        self._data = data
        self.buffer = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        n = min(len(view), len(self.buffer) - self._pos)
        view[:n] = self.buffer[self._pos:self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self.buffer)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __reduce__(self) -> tuple[Any, ...]:
        return (MemoryFile, (bytes(self._data),))
