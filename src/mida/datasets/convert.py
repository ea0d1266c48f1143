"""DICOM series → NIfTI-1 volumes with BIDS-style sidecars, as dcm2niix writes them.

mida's exports read de-identified instances from the node's catalog and blob
store and convert them here, in Python, so a release does not depend on an
external program. The output matches dcm2niix's (``tests/datasets/test_convert.py``
compares with dcm2niix's reference files): same shape, affine, data type,
stored values and scaling. The conventions are in ``docs/datasets-nifti.md``
and :mod:`mida.datasets.nifti_convert.stack`.

Examples
--------
Convert one catalogued series and write it next to its sidecar::

    from mida.datasets.convert import series_to_nifti, write_nifti
    with node.catalog().session() as s:
        for vol in series_to_nifti(s, node.store(), series_uid):
            write_nifti(vol, out / "ct")        # ct.nii.gz + ct.json (+ suffixes)

Convert files that are already read (no catalog)::

    vols = volumes_from_datasets([pydicom.dcmread(p) for p in paths])
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from mida.catalog.models import Instance, Series
from mida.datasets.nifti_convert.frames import PIXEL_KEYWORDS, frames_of
from mida.datasets.nifti_convert.models import ConversionError, NiftiVolume
from mida.datasets.nifti_convert.stack import volumes_from_frames
from mida.datasets.nifti_convert.writer import nifti_bytes, sidecar_text, write_nifti
from mida.errors import NotFoundError
from mida.storage.blobstore import BlobStore

__all__ = [
    "ConversionError",
    "NiftiVolume",
    "nifti_bytes",
    "series_to_nifti",
    "sidecar_text",
    "volumes_from_datasets",
    "write_nifti",
]


def volumes_from_datasets(datasets: Iterable[Dataset]) -> list[NiftiVolume]:
    """The NIfTI volumes of one series given as pydicom datasets.

    Each dataset's pixel data is decoded once (a dataset whose ``pixel_array``
    was already read is not decoded again). Instances may come in any order;
    the result does not depend on it.

    Parameters
    ----------
    datasets
        The instances of one series (classic, enhanced multi-frame or Siemens
        mosaic), with pixel data.

    Returns
    -------
    list[NiftiVolume]
        One volume per echo, complex component and geometry, in order of first
        appearance; repeated positions make a 4D volume.

    Raises
    ------
    ConversionError
        No instances, instances of several series, a non-image object,
        missing or undecodable pixel data, or slices that do not form a
        regular grid (uneven spacing, a position repeated more than others).
    """
    items = list(datasets)
    if not items:
        raise ConversionError("no instances to convert: the series is empty")
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in items} - {""}
    if len(series) > 1:
        raise ConversionError(
            f"the instances belong to {len(series)} series; convert one series at a time")
    frames = [f for ds in items for f in frames_of(ds)]
    return volumes_from_frames(frames)


def series_to_nifti(session: Session, store: BlobStore, series_uid: str) -> list[NiftiVolume]:
    """The NIfTI volumes of a catalogued series, read from the node's blob store.

    Parameters
    ----------
    session
        A catalog session.
    store
        The node's blob store (``node.store()``).
    series_uid
        The series' (pseudonymous) Series Instance UID as the catalog holds it.

    Raises
    ------
    NotFoundError
        The series is not in the catalog, or has no instances.
    ConversionError
        As :func:`volumes_from_datasets`.
    """
    series_id = session.scalar(select(Series.id).where(Series.SeriesInstanceUID == series_uid))
    if series_id is None:
        raise NotFoundError(
            f"series {series_uid} is not in the catalog; `mida` lists series by study "
            f"(check the UID is the catalog's pseudonymous one)")
    digests = session.scalars(
        select(Instance.blob_sha256).where(Instance.series_id == series_id)
        .order_by(Instance.InstanceNumber, Instance.SOPInstanceUID)).all()
    if not digests:
        raise NotFoundError(f"series {series_uid} has no instances in the catalog")
    frames = []
    for digest in digests:
        ds = pydicom.dcmread(io.BytesIO(store.get(digest)))
        frames += frames_of(ds)
        # Only the decoded planes are needed from here on: let the encoded bytes go,
        # so a large series holds its pixels once, not twice.
        for keyword in PIXEL_KEYWORDS:
            if keyword in ds:
                delattr(ds, keyword)
    return volumes_from_frames(frames)
