"""Image quality-control metrics of a series (family ``qc``).

Two kinds of metric. Geometry metrics come from the stored headers (slice
positions and orientations); pixel metrics decode every frame of the
series' stored (de-identified) instances from the blob store, one instance at
a time, so memory stays at one instance whatever the series length.

===========================  ================================================================
``orientation_consistent``   1 when every frame's Image Orientation (Patient) equals the
                             first frame's within 1e-4 (each direction cosine), else 0
``duplicate_positions``      frames whose position along the slice normal is within
                             0.01 mm of another frame's (count; multi-echo, multi-phase
                             or repeated acquisitions stacked in one series)
``missing_slices``           slices absent from the regular stack: every gap between
                             consecutive distinct positions larger than 1.5x the median gap
                             counts ``round(gap / median) - 1`` (at least 1) missing slices
``noise``                    robust estimate of the standard deviation of the image noise,
                             in modality units (HU on CT); see :func:`haar_noise`
``snr``                      mean of the foreground (pixels above their frame's mean) divided
                             by ``noise``; not for CT, whose values are offset (HU)
``saturation``               fraction of pixels at the lowest or highest stored value the
                             bit depth allows (BitsStored, PixelRepresentation), padding
                             excluded; ``saturation_low`` / ``saturation_high`` each end
``value_min``, ``value_max`` smallest and largest modality value, padding excluded
===========================  ================================================================

Padding is the Pixel Padding Value (and Pixel Padding Range Limit) when the
header has one: the area outside a CT's reconstruction circle is not data.
A series without image pixels (SR, SEG, RTSTRUCT, a PDF) is skipped with a
reason; a frame that cannot be decoded is left out of the pixel metrics and
said in the notes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pydicom

from mida.features import headers as h
from mida.features.models import FamilyResult, FeatureValue, StoredInstance, num
from mida.storage.blobstore import BlobStore

#: Orientations whose direction cosines differ by more than this are different.
ORIENTATION_TOLERANCE = 1e-4
#: A gap larger than this many median gaps holds missing slices.
GAP_FACTOR = 1.5
#: Fewer valid 2x2 blocks than this in a frame give no noise estimate for it.
MIN_BLOCKS = 32
#: median(|N(0, 1)|): turns a median absolute value into a standard deviation.
MAD_TO_SIGMA = 0.6744897501960817


# ----------------------------------------------------------------- geometry

def _orientations(js: dict[str, Any]) -> list[list[float] | None]:
    """Image Orientation (Patient) of each frame of an instance (``None`` when absent)."""
    n = h.frames(js)
    found = [h.floats(v[:6]) for v in h.lookup(js, "ImageOrientationPatient")]
    if len(found) == 1:
        return found * n
    if len(found) == n:
        return list(found)
    return [None] * n


def orientation_consistent(datasets: Sequence[dict[str, Any]]) -> int | None:
    """1/0: do all frames share one orientation? ``None`` when any frame has none."""
    oris = [o for js in datasets for o in _orientations(js)]
    if not oris or any(o is None or len(o) != 6 for o in oris):
        return None
    ref = np.asarray(oris[0])
    return int(all(np.max(np.abs(np.asarray(o) - ref)) <= ORIENTATION_TOLERANCE for o in oris))


def missing_slices(z: np.ndarray) -> int | None:
    """Slices missing from sorted distinct positions ``z`` (mm); ``None`` for < 2 positions.

    >>> missing_slices(np.array([0.0, 2.5, 5.0, 10.0, 12.5]))
    1
    >>> missing_slices(np.array([0.0, 2.5, 5.0, 7.5]))
    0
    """
    if len(z) < 2:
        return None
    gaps = np.diff(z)
    med = float(np.median(gaps))
    if med <= 0:
        return None
    big = gaps[gaps > GAP_FACTOR * med]
    return int(sum(max(round(g / med) - 1, 1) for g in big))


# ----------------------------------------------------------------- noise

def haar_noise(frame: np.ndarray, invalid: np.ndarray | None = None) -> float | None:
    """Noise standard deviation of one frame from its finest Haar wavelet detail.

    The frame is cut into non-overlapping 2x2 blocks ``[[a, b], [c, d]]``; the
    diagonal detail coefficient of each is ``(a - b - c + d) / 2``. For
    independent Gaussian noise of standard deviation sigma it has standard
    deviation sigma, and it is zero on any plane (constant or linear ramp),
    so anatomy contributes only at edges, a small minority of blocks that the
    median ignores. The estimate is ``median(|coefficient|) / 0.6745``
    (Donoho and Johnstone, Biometrika 1994). Blocks touching an ``invalid``
    pixel (padding, saturation) and blocks of four equal values (flat
    padding, clipped areas: no noise to measure) are left out; with fewer
    than :data:`MIN_BLOCKS` blocks left the frame gives ``None``.

    >>> rng = np.random.default_rng(0)
    >>> round(haar_noise(100 + rng.normal(0, 10, (256, 256))), 0)
    10.0
    """
    r, c = (frame.shape[0] // 2) * 2, (frame.shape[1] // 2) * 2
    x = np.asarray(frame[:r, :c], dtype=np.float64)
    a, b, cc, d = x[0::2, 0::2], x[0::2, 1::2], x[1::2, 0::2], x[1::2, 1::2]
    hh = (a - b - cc + d) / 2.0
    ok = ~((a == b) & (a == cc) & (a == d))
    if invalid is not None:
        bad = np.asarray(invalid[:r, :c], dtype=bool)
        ok &= ~(bad[0::2, 0::2] | bad[0::2, 1::2] | bad[1::2, 0::2] | bad[1::2, 1::2])
    coeffs = np.abs(hh[ok])
    if coeffs.size < MIN_BLOCKS:
        return None
    return float(np.median(coeffs) / MAD_TO_SIGMA)


# ----------------------------------------------------------------- pixels

def _per_frame(js: dict[str, Any], keyword: str, n: int, default: float) -> list[float]:
    found = [f[0] for f in (h.floats(v[:1]) for v in h.lookup(js, keyword)) if f]
    if len(found) == n:
        return found
    return [found[0] if found else default] * n


def _stored_range(js: dict[str, Any]) -> tuple[int, int] | None:
    bits = h.first(js, "BitsStored")
    if bits is None:
        return None
    bits = int(bits)
    if int(h.first(js, "PixelRepresentation") or 0) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _padding(js: dict[str, Any], stored: np.ndarray) -> np.ndarray | None:
    pad = h.first(js, "PixelPaddingValue")
    if pad is None:
        return None
    limit = h.first(js, "PixelPaddingRangeLimit")
    lo, hi = sorted((int(pad), int(limit if limit is not None else pad)))
    return (stored >= lo) & (stored <= hi)


class _PixelStats:
    """Running sums over frames, so a series is read one instance at a time."""

    def __init__(self) -> None:
        self.valid = self.low = self.high = 0
        self.sigmas: list[float] = []
        self.fg_sum = 0.0
        self.fg_n = 0
        self.vmin = np.inf
        self.vmax = -np.inf
        self.saturation_known = True

    def add(self, stored: np.ndarray, js: dict[str, Any], slope: float, intercept: float) -> None:
        """One frame: ``stored`` values (rows, columns[, samples])."""
        pad = _padding(js, stored)
        keep = ~pad if pad is not None else np.ones(stored.shape, dtype=bool)
        rng = _stored_range(js) if stored.dtype.kind in "iu" else None
        invalid = ~keep
        if rng is None:
            self.saturation_known = False
        else:
            lo, hi = stored == rng[0], stored == rng[1]
            self.low += int((lo & keep).sum())
            self.high += int((hi & keep).sum())
            invalid = invalid | lo | hi
        self.valid += int(keep.sum())
        if stored.ndim == 3:  # colour: noise and values on luminance (ITU-R BT.601 weights)
            lum = stored[..., 0] * 0.299 + stored[..., 1] * 0.587 + stored[..., 2] * 0.114
            values, invalid2 = lum.astype(np.float64), np.asarray(invalid.any(axis=-1))
        else:
            values = stored.astype(np.float64) * slope + intercept
            invalid2 = invalid
        sigma = haar_noise(values, invalid2)
        if sigma is not None:
            self.sigmas.append(sigma)
        kept = np.asarray(keep.all(axis=-1)) if stored.ndim == 3 else keep
        data = values[kept]
        if data.size:
            self.vmin = min(self.vmin, float(data.min()))
            self.vmax = max(self.vmax, float(data.max()))
            fg = data[data > data.mean()]
            self.fg_sum += float(fg.sum())
            self.fg_n += int(fg.size)

    def values(self, modality: str | None) -> list[FeatureValue]:
        out: list[FeatureValue] = []
        if self.valid and self.saturation_known:
            out += [num("saturation", (self.low + self.high) / self.valid),
                    num("saturation_low", self.low / self.valid),
                    num("saturation_high", self.high / self.valid)]
        if np.isfinite(self.vmin):
            out += [num("value_min", self.vmin), num("value_max", self.vmax)]
        if self.sigmas:
            noise = float(np.median(self.sigmas))
            out.append(num("noise", noise))
            if modality != "CT" and noise > 0 and self.fg_n:
                out.append(num("snr", self.fg_sum / self.fg_n / noise))
        return out


def _frames_of(ds: pydicom.Dataset, js: dict[str, Any]) -> np.ndarray:
    px = np.asarray(ds.pixel_array)
    n = h.frames(js)
    rows, cols = int(ds.Rows), int(ds.Columns)
    spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    return px.reshape((n, rows, cols, spp) if spp > 1 else (n, rows, cols))


def qc_features(store: BlobStore, instances: Sequence[StoredInstance],
                series_uid: str = "") -> FamilyResult:
    """The ``qc`` family of one series.

    Parameters
    ----------
    store
        The node's blob store (stored instances are read from it).
    instances
        The series' instances as catalogued (any order).
    series_uid
        Used only in messages.
    """
    images = [i for i in instances if h.is_image(i.dataset, i.SOPClassUID)]
    if not images:
        mods = sorted({str(h.first(i.dataset, "Modality") or "?") for i in instances})
        return FamilyResult(skipped=f"no image pixels to measure (modality {', '.join(mods)})")
    res = FamilyResult()
    datasets = [i.dataset for i in images]
    consistent = orientation_consistent(datasets)
    if consistent is not None:
        res.values.append(num("orientation_consistent", consistent))
    z, why = h.slice_coordinates(datasets, series_uid)
    if why is None and len(z) > 1:
        uz = h.unique_positions(z)
        res.values.append(num("duplicate_positions", len(z) - len(uz)))
        missing = missing_slices(uz)
        if missing is not None:
            res.values.append(num("missing_slices", missing))
    elif why is not None and consistent is not None:
        res.notes.append(f"no slice-position metrics: {why}")
    stats = _PixelStats()
    failed: list[str] = []
    for inst in images:
        js = inst.dataset
        try:
            ds = pydicom.dcmread(io.BytesIO(store.get(inst.blob_sha256)))
            frames = _frames_of(ds, js)
        except Exception as exc:  # any codec or file error: measure the rest
            failed.append(type(exc).__name__)
            continue
        n = len(frames)
        slopes = _per_frame(js, "RescaleSlope", n, 1.0)
        intercepts = _per_frame(js, "RescaleIntercept", n, 0.0)
        for k in range(n):
            stats.add(frames[k], js, slopes[k], intercepts[k])
    if failed:
        res.notes.append(f"{len(failed)} of {len(images)} instances' pixel data cannot be "
                         f"decoded ({failed[0]}): pixel metrics use the rest"
                         if len(failed) < len(images) else
                         f"pixel data cannot be decoded ({failed[0]}): no pixel metrics")
    modality = str(h.first(images[0].dataset, "Modality") or "").upper() or None
    res.values += stats.values(modality)
    res.values.sort(key=lambda v: v.name)
    return res


__all__ = ["GAP_FACTOR", "ORIENTATION_TOLERANCE", "haar_noise", "missing_slices",
           "orientation_consistent", "qc_features"]
