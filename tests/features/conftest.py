"""Synthetic series with known answers for the feature tests, written as DICOM and ingested."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from mida.deid.pseudonyms import Pseudonymizer
from mida.ingest import ingest_paths
from mida.node import Node
from tests.annotations.conftest import ct_case  # noqa: F401  (fixture re-exported)
from tests.factories import make_dataset, write

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def phantom(slices: int = 6, size: int = 48, *, sigma: float = 0.0, seed: int = 0,
            spacing: float = 0.8, thickness: float = 2.5) -> dict[str, np.ndarray]:
    """HU volume ``[slice, row, column]``: air, a soft-tissue ellipse with a ramp, a bright sphere.

    Returns ``hu`` (float, with Gaussian noise of ``sigma`` HU) and ``lesion``
    (the sphere, boolean).
    """
    zz, yy, xx = np.mgrid[0:slices, 0:size, 0:size].astype(float)
    c = (size - 1) / 2
    body = ((yy - c) / (0.42 * size)) ** 2 + ((xx - c) / (0.46 * size)) ** 2 <= 1
    dist = np.sqrt(((zz - (slices - 1) / 2) * thickness) ** 2
                   + ((yy - c) * spacing) ** 2 + ((xx - c - size / 8) * spacing) ** 2)
    lesion = dist <= min(slices * thickness, size * spacing) / 4
    hu = np.where(body, 40.0 + 0.5 * xx, -1000.0)  # a ramp: smooth anatomy, not noise
    hu = np.where(lesion, 180.0, hu)
    rng = np.random.default_rng(seed)
    hu = hu + rng.normal(0.0, sigma, hu.shape) if sigma else hu
    return {"hu": hu, "lesion": lesion}


def write_series(folder: Path, hu: np.ndarray, *, spacing: float = 0.8, thickness: float = 2.5,
                 z: Sequence[float] | None = None,
                 orientations: Sequence[Sequence[float]] | None = None,
                 keep: Sequence[int] | None = None, series_uid: str | None = None,
                 per_slice: Sequence[dict[str, Any]] | None = None,
                 stored: np.ndarray | None = None, **attrs: Any) -> dict[str, Any]:
    """Write ``hu`` as an axial CT series (stored = HU + 1024, signed 16 bit).

    ``z`` gives each slice's position (default ``k * thickness``), ``keep``
    which slices are written (to leave gaps), ``orientations`` each slice's
    Image Orientation (Patient), ``per_slice`` attributes per slice, ``stored``
    the stored values directly (to plant saturated pixels); ``attrs`` go on
    every slice.
    """
    study, series, frame = generate_uid(), series_uid or generate_uid(), generate_uid()
    n, rows, cols = hu.shape
    z = list(z) if z is not None else [k * thickness for k in range(n)]
    values = stored if stored is not None else np.round(hu + 1024)
    for k in keep if keep is not None else range(n):
        ds = make_dataset(StudyInstanceUID=study, SeriesInstanceUID=series,
                          FrameOfReferenceUID=frame, InstanceNumber=k + 1, **attrs)
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness = thickness
        ds.ImageOrientationPatient = list(orientations[k] if orientations else AXIAL)
        ds.ImagePositionPatient = [-20.0, -20.0, float(z[k])]
        for key, v in (per_slice[k] if per_slice else {}).items():
            setattr(ds, key, v)
        ds.PixelData = np.asarray(values[k], dtype=np.int16).tobytes()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        write(folder / f"{k:03d}.dcm", ds)
    return {"study": study, "series": series}


def ingest_series(node: Node, folder: Path, collection: str = "ct") -> None:
    summary = ingest_paths(node, [folder], collection, workers=1)
    assert summary.quarantined == 0, summary


def catalog_uid(node: Node, original_uid: str) -> str:
    """The catalog's pseudonym of an original UID."""
    return Pseudonymizer(node.key()).uid(original_uid)


def dicom_json(**attrs: Any) -> dict[str, Any]:
    """DICOM JSON of a CT image header with these attributes (``None`` removes one)."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.Rows = ds.Columns = 16
    for k, v in attrs.items():
        if v is None:
            if k in ds:
                delattr(ds, k)
        else:
            setattr(ds, k, v)
    out: dict[str, Any] = ds.to_json_dict()
    return out
