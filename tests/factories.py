"""Small DICOM files built in code for tests (no large fixtures committed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

PHI = {
    "name": "Lin^Wen-Hsiung",
    "pid": "A123456789",
    "birth": "19610214",
    "address": "No. 7, Lane 12, Heping East Road, Taipei",
    "phone": "0912-345-678",
}


def make_dataset(**overrides: Any) -> Dataset:
    """A small valid CT instance with planted PHI."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName = PHI["name"]
    ds.PatientID = PHI["pid"]
    ds.PatientBirthDate = PHI["birth"]
    ds.PatientSex = "M"
    ds.PatientAddress = PHI["address"]
    ds.PatientTelephoneNumbers = PHI["phone"]
    ds.StudyDate = "20240305"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC20240305"
    ds.Modality = "CT"
    ds.InstanceNumber = 1
    ds.SeriesNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = (np.arange(256, dtype=np.int16) * 3).tobytes()
    for k, v in overrides.items():
        if v is None:
            if k in ds:
                delattr(ds, k)
        else:
            setattr(ds, k, v)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def write(path: Path, ds: Dataset | None = None, **overrides: Any) -> Path:
    ds = ds if ds is not None else make_dataset(**overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def make_pdf(path: Path) -> Path:
    ds = make_dataset(Modality="DOC", PixelData=None, Rows=None, Columns=None,
                      BitsAllocated=None, BitsStored=None, HighBit=None,
                      PixelRepresentation=None, SamplesPerPixel=None,
                      PhotometricInterpretation=None, RescaleIntercept=None,
                      RescaleSlope=None)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4 report for Lin Wen-Hsiung\n"
    return write(path, ds)


def make_token(node: Any, user: str = "alice", role: str = "admin", scope: str = "admin",
               collection: str | None = None, grant: str | None = None) -> str:
    """A fresh API token for ``user`` (created with ``role`` when new).

    ``grant`` gives the user that scope on ``collection`` first (non-admin roles).
    """
    from sqlalchemy import select

    from mida.catalog.models import User
    from mida.sharing import identity

    with node.catalog().session() as s:
        if s.scalar(select(User.id).where(User.name == user)) is None:
            identity.add_user(s, user, role)
        if grant:
            identity.add_grant(s, user, grant, collection)
        secret, _ = identity.create_token(s, user, scope, collection=collection)
    return secret


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def write_ct_series(folder: Path, *, slices: int = 6, size: int = 32, spacing: float = 0.8,
                    thickness: float = 2.5, study_uid: str | None = None,
                    series_uid: str | None = None, for_uid: str | None = None,
                    origin: tuple[float, float, float] = (-12.0, -12.0, -30.0),
                    **overrides: Any) -> dict[str, Any]:
    """An axial CT series with planted PHI and a bright sphere in the middle (>= 100 HU).

    Slices are written in reverse order (files on disk are not sorted by position).
    Returns the original UIDs (``study``, ``series``, ``for``, ``sops`` in slice order
    from inferior to superior), ``origin``, ``spacing`` and the sphere ``truth``
    (boolean ``[slice, row, column]``).
    """
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    for_uid = for_uid or generate_uid()
    zz, yy, xx = np.mgrid[0:slices, 0:size, 0:size]
    c = (slices - 1) / 2, (size - 1) / 2, (size - 1) / 2
    r_mm = min(slices * thickness, size * spacing) / 3
    dist = np.sqrt(((zz - c[0]) * thickness) ** 2 + ((yy - c[1]) * spacing) ** 2
                   + ((xx - c[2]) * spacing) ** 2)
    truth = dist <= r_mm
    hu = np.where(truth, 200, -50).astype(np.int16) + (xx % 3).astype(np.int16)
    sops = [generate_uid() for _ in range(slices)]
    for k in reversed(range(slices)):
        ds = make_dataset(StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid,
                          FrameOfReferenceUID=for_uid, SOPInstanceUID=sops[k],
                          InstanceNumber=k + 1, **overrides)
        ds.Rows = ds.Columns = size
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness = thickness
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * thickness]
        ds.PixelData = (hu[k] + 1024).astype(np.int16).tobytes()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        write(folder / f"{k:03d}.dcm", ds)
    return {"study": study_uid, "series": series_uid, "for": for_uid, "sops": sops,
            "origin": origin, "spacing": (thickness, spacing, spacing), "truth": truth,
            "size": size, "slices": slices}
