"""MSD hippocampus cases (NIfTI) written as DICOM MR series, ingested and labelled in mida.

The Medical Segmentation Decathlon's Task04 ships NIfTI only. To test the
exports end to end, each image becomes an MR series whose geometry is the
NIfTI affine's (columns along i, rows along j, one slice per k, positions and
directions in LPS), the series is ingested (de-identified like any other),
and the label map is imported onto it with the NIfTI importer
(``--label-map 1=anterior 2=posterior``), status submitted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from pydicom.uid import MRImageStorage, generate_uid

from mida.annotations.formats import ImportOptions, import_path
from mida.annotations.schema import parse_schema
from mida.annotations.store import add_schema
from mida.deid.pseudonyms import Pseudonymizer
from mida.ingest import ingest_paths
from mida.node import Node
from tests.conftest import shared
from tests.factories import make_dataset, write

MSD = ("labelled", "msd_hippocampus_udacity", "TrainingSet")
CASES = ("hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006",
         "hippocampus_007", "hippocampus_008")
SCHEMA = {
    "name": "hippocampus", "version": "1.0.0",
    "description": "MSD Task04: anterior and posterior hippocampus",
    "labels": [
        {"name": "anterior", "type": "mask", "colour": "#e6194b",
         "concept": {"CodeValue": "anterior-hippocampus", "CodingSchemeDesignator": "99MIDA",
                     "CodeMeaning": "Anterior hippocampus"}},
        {"name": "posterior", "type": "mask", "colour": "#3cb44b",
         "concept": {"CodeValue": "posterior-hippocampus", "CodingSchemeDesignator": "99MIDA",
                     "CodeMeaning": "Posterior hippocampus"}},
    ],
}
LPS = np.diag([-1.0, -1.0, 1.0])


def write_mr_series(image: Path, folder: Path, patient_id: str) -> dict[str, Any]:
    """Write a NIfTI image as single-frame MR instances (uint16, values rounded)."""
    img = nib.load(str(image))
    data = np.rint(np.asanyarray(img.get_fdata())).clip(0, 65535).astype(np.uint16)
    a = np.asarray(img.affine, dtype=float)
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    row_cos = LPS @ a[:3, 0] / spacing[0]  # along i: increasing column index
    col_cos = LPS @ a[:3, 1] / spacing[1]  # along j: increasing row index
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    sops = []
    for k in range(data.shape[2]):
        sop = generate_uid()
        ds = make_dataset(PatientID=patient_id, Modality="MR", SOPClassUID=MRImageStorage,
                          StudyInstanceUID=study, SeriesInstanceUID=series,
                          FrameOfReferenceUID=frame, SOPInstanceUID=sop, InstanceNumber=k + 1,
                          RescaleIntercept=None, RescaleSlope=None, PixelRepresentation=0,
                          ImageType=["ORIGINAL", "PRIMARY", "M"])
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.Rows, ds.Columns = int(data.shape[1]), int(data.shape[0])
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # row spacing, column spacing
        ds.SliceThickness = float(spacing[2])
        ds.ImageOrientationPatient = [float(x) for x in (*row_cos, *col_cos)]
        ds.ImagePositionPatient = [float(x) for x in LPS @ (a[:3, 3] + k * a[:3, 2])]
        ds.MagneticFieldStrength = 3
        ds.PixelData = np.ascontiguousarray(data[:, :, k].T).tobytes()
        write(folder / f"{k:03d}.dcm", ds)
        sops.append(sop)
    return {"study": study, "series": series, "sops": sops}


def load_cases(node: Node, tmp: Path, cases: tuple[str, ...] = CASES) -> dict[str, str]:
    """Ingest and label the cases; return case name -> catalog SeriesInstanceUID."""
    root = shared(*MSD)
    p = Pseudonymizer(node.key())
    out: dict[str, str] = {}
    folders = []
    for i, case in enumerate(cases):
        info = write_mr_series(root / "images" / f"{case}.nii.gz", tmp / case, f"MSD{i:03d}")
        out[case] = p.uid(info["series"])
        folders.append(tmp / case)
    res = ingest_paths(node, folders, "msd", workers=1)
    assert res.quarantined == 0, res.as_dict()
    with node.catalog().session() as s:
        add_schema(s, parse_schema(SCHEMA))
        s.commit()
    for case, uid in out.items():
        res2 = import_path(node, root / "labels" / f"{case}.nii.gz", "nifti", ImportOptions(
            reader="msd", schema="hippocampus", series_uid=uid, status="submitted",
            label_map={"1": "anterior", "2": "posterior"}))
        assert len(res2.created) == 2, res2.as_dict()
    return out
