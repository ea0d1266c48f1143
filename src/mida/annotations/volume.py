"""Pixel values of a stored series on its grid (for measurements and model pre-annotation).

Values are modality values (Rescale Slope/Intercept applied: HU on CT), as
float32, indexed ``[slice, row, column]`` in the order of
:class:`~mida.annotations.geometry.SeriesGeometry`. Colour images are reduced
to luminance.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut
from sqlalchemy import select
from sqlalchemy.orm import Session

from mida.annotations.geometry import SeriesGeometry
from mida.catalog.models import Instance
from mida.errors import AnnotationError
from mida.storage.blobstore import BlobStore


def load_volume(s: Session, store: BlobStore, geometry: SeriesGeometry) -> np.ndarray:
    """The series' modality values on ``geometry``'s grid."""
    uids = sorted({sl.sop_instance_uid for sl in geometry.slices})
    blobs = dict(s.execute(
        select(Instance.SOPInstanceUID, Instance.blob_sha256)
        .where(Instance.SOPInstanceUID.in_(uids))
    ).all())
    out = np.zeros(geometry.shape, dtype=np.float32)
    cache: dict[str, np.ndarray] = {}
    for k, sl in enumerate(geometry.slices):
        arr = cache.get(sl.sop_instance_uid)
        if arr is None:
            digest = blobs.get(sl.sop_instance_uid)
            if digest is None:
                raise AnnotationError(f"instance {sl.sop_instance_uid} is not in the catalog")
            ds = pydicom.dcmread(io.BytesIO(store.get(digest)))
            try:
                px = ds.pixel_array
            except Exception as exc:
                raise AnnotationError(
                    f"instance {sl.sop_instance_uid}: pixel data cannot be decoded "
                    f"({type(exc).__name__})") from None
            nframes = int(getattr(ds, "NumberOfFrames", 1) or 1)
            if int(getattr(ds, "SamplesPerPixel", 1)) > 1:
                rgb = px.astype(np.float32)
                px = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
            elif "RescaleSlope" in ds or "RescaleIntercept" in ds:
                px = apply_modality_lut(px, ds)
            arr = np.asarray(px, dtype=np.float32).reshape(nframes, *geometry.shape[1:])
            cache = {sl.sop_instance_uid: arr}
        out[k] = arr[sl.frame - 1]
    return out
