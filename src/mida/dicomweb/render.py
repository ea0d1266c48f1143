"""Rendered images and thumbnails (PS3.18 8.3.5, 10.4.1.1.3; thumbnails per Sup 203).

One frame is decoded by pydicom (every transfer syntax pylibjpeg and GDCM
read), then:

- grayscale: the Modality LUT (rescale slope and intercept, or a Modality
  LUT Sequence), then the VOI LUT: the ``window`` parameter, else the
  dataset's first Window Center/Width (per-frame functional groups first),
  else its VOI LUT Sequence, else the frame's minimum to maximum;
  MONOCHROME1 is inverted;
- colour: RGB as decoded (YBR converted by pydicom), palette colour through
  its lookup tables, scaled to 8 bits;

and the result is scaled to fit ``viewport`` (aspect ratio kept) and encoded
as JPEG (default; ``quality`` 1-100) or PNG. Nothing is burned in: the
``annotation`` parameter is ignored, so no patient or technique text can be
added to the pixels.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

from mida.catalog.dicomquery import Located
from mida.dicomweb.multipart import (
    DicomWebError,
    MediaRange,
    NotAcceptableError,
    multipart_body,
    multipart_content_type,
    new_boundary,
    parse_accept,
    type_matches,
)
from mida.dicomweb.wado import frame_count, read_dataset
from mida.storage import BlobStore

IMAGE_TYPES = ("image/jpeg", "image/png")
THUMBNAIL_SIZE = 128
MAX_VIEWPORT = 8192


@dataclass(frozen=True)
class RenderParams:
    """Parsed rendering parameters."""

    media_type: str = "image/jpeg"
    window: tuple[float, float, str] | None = None
    viewport: tuple[int, int] | None = None
    quality: int = 90
    multipart: bool = False  # the client asked for multipart/related; type=image/...

    def package(self, image: bytes) -> tuple[str, bytes]:
        """The content type and body carrying ``image`` the way the client asked."""
        if not self.multipart:
            return self.media_type, image
        boundary = new_boundary()
        return (multipart_content_type(self.media_type, boundary),
                b"".join(multipart_body([(self.media_type, [image])], boundary)))


def _number(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise DicomWebError(f"bad {what} {text!r}: a number") from None
    if not math.isfinite(v):
        raise DicomWebError(f"bad {what}: a finite number")
    return v


def choose_image_type(accept_param: str | None, accept_header: str | None) -> tuple[str, bool]:
    """image/jpeg or image/png from the ``accept`` query parameter or the Accept header,
    and whether it goes in a multipart/related body (when only that was asked for)."""
    ranges: list[MediaRange] = parse_accept(accept_param or accept_header)
    for r in ranges:
        wanted = (r.part_type or "*/*") if r.multipart else r.media_type
        for t in IMAGE_TYPES:
            if type_matches(wanted, t):
                return t, r.multipart
    raise NotAcceptableError("rendered images are available as image/jpeg or image/png")


def parse_params(query: dict[str, str], accept_header: str | None, *,
                 default_viewport: tuple[int, int] | None = None) -> RenderParams:
    """Rendering parameters from the query (``window``, ``viewport``, ``quality``, ``accept``)."""
    media_type, multipart = choose_image_type(query.get("accept"), accept_header)
    window = None
    if query.get("window"):
        parts = [p.strip() for p in query["window"].split(",")]
        if len(parts) not in (2, 3):
            raise DicomWebError("window is center,width[,function] (function: linear, "
                                "linear-exact or sigmoid)")
        center, width = _number(parts[0], "window center"), _number(parts[1], "window width")
        if width <= 0:
            raise DicomWebError("the window width must be above 0")
        function = (parts[2] if len(parts) == 3 else "linear").lower().replace("_", "-")
        if function not in ("linear", "linear-exact", "sigmoid"):
            raise DicomWebError("the window function is linear, linear-exact or sigmoid")
        window = (center, width, function)
    viewport = default_viewport
    if query.get("viewport"):
        parts = [p.strip() for p in query["viewport"].split(",")]
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise DicomWebError("viewport is vw,vh in pixels (a source region is not supported)")
        vw, vh = int(parts[0]), int(parts[1])
        if not (1 <= vw <= MAX_VIEWPORT and 1 <= vh <= MAX_VIEWPORT):
            raise DicomWebError(f"viewport sizes are 1 to {MAX_VIEWPORT} pixels")
        viewport = (vw, vh)
    quality = 90
    if query.get("quality"):
        q = query["quality"].strip()
        if not q.isdigit() or not 1 <= int(q) <= 100:
            raise DicomWebError("quality is a whole number from 1 to 100")
        quality = int(q)
    return RenderParams(media_type, window, viewport, quality, multipart)


# -- per-frame attributes ----------------------------------------------------------
def _frame_value(ds: Dataset, index: int, seq: str, keyword: str) -> Any:
    """An attribute of frame ``index`` from the functional groups, else the top level."""
    containers = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and index < len(per_frame):
        containers.append(per_frame[index])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        containers.append(shared[0])
    for c in containers:
        items = c.get(seq)
        if items and keyword in items[0]:
            return items[0][keyword].value
    return ds.get(keyword)


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def window_to_8bit(arr: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 windowing to 0-255."""
    x = arr.astype(np.float64)
    if function == "sigmoid":
        out = 255.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif function == "linear-exact":
        out = np.clip((x - (center - width / 2.0)) / width, 0.0, 1.0) * 255.0
    else:
        w1 = max(width - 1.0, 1e-9)
        out = np.clip((x - (center - 0.5)) / w1 + 0.5, 0.0, 1.0) * 255.0
    return np.asarray(out, dtype=np.float64)


def _minmax_8bit(arr: np.ndarray) -> np.ndarray:
    x = arr.astype(np.float64)
    lo, hi = float(np.min(x)), float(np.max(x))
    if hi <= lo:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo) * 255.0


def _grayscale(ds: Dataset, arr: np.ndarray, index: int,
               window: tuple[float, float, str] | None) -> np.ndarray:
    slope = _first(_frame_value(ds, index, "PixelValueTransformationSequence", "RescaleSlope"))
    intercept = _first(_frame_value(ds, index, "PixelValueTransformationSequence",
                                    "RescaleIntercept"))
    if slope is not None or intercept is not None:
        x = arr.astype(np.float64) * (slope if slope is not None else 1.0) + (intercept or 0.0)
    elif "ModalityLUTSequence" in ds:
        x = apply_modality_lut(arr, ds).astype(np.float64)
    else:
        x = arr.astype(np.float64)
    if window is None:
        center = _first(_frame_value(ds, index, "FrameVOILUTSequence", "WindowCenter"))
        width = _first(_frame_value(ds, index, "FrameVOILUTSequence", "WindowWidth"))
        function = str(_frame_value(ds, index, "FrameVOILUTSequence", "VOILUTFunction")
                       or "LINEAR").lower().replace("_", "-")
        if center is not None and width is not None and width > 0:
            window = (center, width, function)
    if window is not None:
        out = window_to_8bit(x, *window)
    elif "VOILUTSequence" in ds:
        out = _minmax_8bit(apply_voi_lut(x, ds, prefer_lut=True))
    else:
        out = _minmax_8bit(x)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 255.0 - out
    return out


def _colour(ds: Dataset, arr: np.ndarray) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        bits = 8 if rgb.dtype == np.uint8 else 16
        return rgb.astype(np.float64) * (255.0 / (2**bits - 1))
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    if arr.dtype == np.uint8 or bits <= 8:
        return arr.astype(np.float64)
    return arr.astype(np.float64) * (255.0 / (2**bits - 1))


def render_frame(ds: Dataset, index: int, params: RenderParams) -> bytes:
    """Frame ``index`` (0-based) of ``ds`` rendered as ``params.media_type`` bytes."""
    try:
        arr = pixel_array(ds, index=index)
    except Exception as exc:  # a codec failure: say which kind, never the values
        raise DicomWebError(f"the pixel data cannot be decoded ({type(exc).__name__})",
                            500) from exc
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    samples = int(ds.get("SamplesPerPixel") or 1)
    if samples == 1 and photometric != "PALETTE COLOR":
        if arr.ndim == 3:  # a multi-frame decoder gave every frame
            arr = arr[0]
        out = _grayscale(ds, arr, index, params.window)
        mode = "L"
    else:
        out = _colour(ds, arr)
        mode = "RGB"
    img = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    if img.mode != mode:
        img = img.convert(mode)
    if params.viewport is not None:
        vw, vh = params.viewport
        scale = min(vw / img.width, vh / img.height)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        if size != img.size:
            img = img.resize(size, Image.Resampling.LANCZOS if scale < 1
                             else Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    if params.media_type == "image/png":
        img.save(buf, format="PNG")
    else:
        img.save(buf, format="JPEG", quality=params.quality)
    return buf.getvalue()


def render_instance(store: BlobStore, loc: Located, index: int, params: RenderParams) -> bytes:
    """Frame ``index`` (0-based) of a stored instance, rendered."""
    ds = read_dataset(store, loc)
    n = frame_count(ds)
    if index >= n:
        raise DicomWebError(f"frame {index + 1} is out of range: this instance has {n} frame(s)",
                            404)
    return render_frame(ds, index, params)


__all__ = [
    "IMAGE_TYPES",
    "THUMBNAIL_SIZE",
    "RenderParams",
    "choose_image_type",
    "parse_params",
    "render_frame",
    "render_instance",
    "window_to_8bit",
]
