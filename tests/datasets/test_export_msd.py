"""nnU-Net and MONAI exports of the MSD hippocampus data, checked by the tools themselves.

Six MSD Task04 cases are written as DICOM MR series, ingested, labelled with
the NIfTI importer and released (split 70/15/15 by patient: 4 train, 1 val, 1
test). The nnU-Net export must pass ``nnUNetv2_plan_and_preprocess
--verify_dataset_integrity``; the MONAI export must load with
``load_decathlon_datalist`` and ``LoadImaged``; and the label maps must be the
MSD labels, voxel for voxel, once both are brought to the same orientation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from mida.datasets import release
from mida.datasets.export import export
from tests.conftest import shared
from tests.datasets.export_fixtures import make_node
from tests.datasets.factories_msd import MSD, load_cases

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def msd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    shared(*MSD)
    root = tmp_path_factory.mktemp("msd")
    node = make_node(root)
    cases = load_cases(node, root / "in")
    out = root / "out"
    with node.catalog().session() as s:
        release.create(s, node.store(), "hippocampus", "1.0.0", expression="modality = 'MR'")
        s.commit()
        res = export(s, node.store(), release.get(s, "hippocampus@1.0.0"),
                     ["nnunet,monai,nifti"], out, dataset_id=4)
    return {"root": root, "out": out, "cases": cases, "result": res}


def _canonical(img: Any) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(img).dataobj)


def test_nnunet_layout_and_dataset_json(msd: dict[str, Any]) -> None:
    ds = msd["out"] / "nnUNet_raw" / "Dataset004_hippocampus"
    body = json.loads((ds / "dataset.json").read_text())
    assert body["labels"] == {"background": 0, "anterior": 1, "posterior": 2}
    assert body["channel_names"] == {"0": "MR"}
    assert body["file_ending"] == ".nii.gz"
    assert body["numTraining"] == 5 == len(list((ds / "imagesTr").iterdir()))
    assert len(list((ds / "labelsTr").iterdir())) == 5
    assert len(list((ds / "imagesTs").iterdir())) == 1
    split = json.loads((msd["out"] / "nnUNet_preprocessed" / "Dataset004_hippocampus"
                        / "splits_final.json").read_text())
    assert len(split) == 1 and len(split[0]["train"]) == 4 and len(split[0]["val"]) == 1
    cases = json.loads((ds / "mida_cases.json").read_text())["cases"]
    patients = {c["patient"] for c in cases.values()}
    assert len(patients) == 6  # one series per patient, no patient in two splits
    for name in split[0]["train"] + split[0]["val"]:
        assert (ds / "imagesTr" / f"{name}_0000.nii.gz").is_file()


def test_label_maps_are_the_msd_labels(msd: dict[str, Any]) -> None:
    """Each exported label map equals the MSD label file, and shares its image's grid."""
    root = shared(*MSD)
    ds = msd["out"] / "nnUNet_raw" / "Dataset004_hippocampus"
    cases = json.loads((ds / "mida_cases.json").read_text())["cases"]
    by_series = {v["series"]: k for k, v in cases.items()}
    checked = 0
    for case, uid in msd["cases"].items():
        name = by_series[uid]
        folder = "Tr" if cases[name]["split"] != "test" else "Ts"
        image = nib.load(ds / f"images{folder}" / f"{name}_0000.nii.gz")
        label = nib.load(ds / f"labels{folder}" / f"{name}.nii.gz")
        assert label.shape == image.shape
        np.testing.assert_allclose(label.affine, image.affine, atol=0)
        truth = nib.load(root / "labels" / f"{case}.nii.gz")
        np.testing.assert_allclose(nib.as_closest_canonical(image).affine,
                                   nib.as_closest_canonical(truth).affine, atol=1e-4)
        np.testing.assert_array_equal(_canonical(label), _canonical(truth).astype(np.uint8))
        src = nib.load(root / "images" / f"{case}.nii.gz")
        np.testing.assert_array_equal(
            np.asarray(nib.as_closest_canonical(image).get_fdata()),
            np.rint(nib.as_closest_canonical(src).get_fdata()))
        checked += 1
    assert checked == 6


@pytest.mark.slow
def test_nnunet_plan_and_preprocess_verifies(msd: dict[str, Any], tmp_path: Path) -> None:
    """nnU-Net's own integrity check and preprocessing accept the export (CPU)."""
    out = msd["out"]
    env = {**os.environ, "nnUNet_raw": str(out / "nnUNet_raw"),
           "nnUNet_preprocessed": str(tmp_path / "pre"), "nnUNet_results": str(tmp_path / "res"),
           "nnUNet_n_proc_DA": "1", "OMP_NUM_THREADS": "1"}
    shutil.copytree(out / "nnUNet_preprocessed", tmp_path / "pre")  # holds splits_final.json
    exe = Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"
    done = subprocess.run([str(exe), "-d", "4", "--verify_dataset_integrity", "-c", "3d_fullres",
                           "-np", "1", "-npfp", "1", "--no_pbar"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "verify_dataset_integrity Done" in done.stdout, done.stdout[-3000:]
    assert "mismatch" not in done.stdout and "Error" not in done.stdout, done.stdout[-3000:]
    pre = tmp_path / "pre" / "Dataset004_hippocampus"
    split = json.loads((pre / "splits_final.json").read_text())  # nnU-Net kept the release's
    assert len(split[0]["val"]) == 1
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    assert "3d_fullres" in plans["configurations"]
    assert len(list((pre / "nnUNetPlans_3d_fullres").glob("*.b2nd"))
               + list((pre / "nnUNetPlans_3d_fullres").glob("*.npz"))) >= 5


def test_monai_datalist_loads(msd: dict[str, Any]) -> None:
    from monai.data import load_decathlon_datalist
    from monai.transforms import LoadImaged

    path = msd["out"] / "monai" / "datalist.json"
    training = load_decathlon_datalist(str(path), is_segmentation=True,
                                       data_list_key="training")
    validation = load_decathlon_datalist(str(path), is_segmentation=True,
                                         data_list_key="validation")
    test = load_decathlon_datalist(str(path), is_segmentation=True, data_list_key="test")
    assert (len(training), len(validation), len(test)) == (4, 1, 1)
    load = LoadImaged(keys=["image", "label"], image_only=True)
    for item in training + validation + test:
        d = load(item)
        assert tuple(d["image"].shape) == tuple(d["label"].shape)
        assert set(np.unique(np.asarray(d["label"])).tolist()) == {0, 1, 2}
        np.testing.assert_allclose(d["image"].affine, d["label"].affine)
    body = json.loads(path.read_text())
    assert body["labels"] == {"0": "background", "1": "anterior", "2": "posterior"}


def test_nifti_export_matches_nnunet_images(msd: dict[str, Any]) -> None:
    """One conversion feeds every format: NIfTI, nnU-Net and MONAI hold the same bytes."""
    files = {f["path"]: f["sha256"] for f in msd["result"].report["files"]}
    nifti = sorted(v for k, v in files.items() if k.startswith("nifti/")
                   and k.endswith(".nii.gz") and "_label-" not in k)
    nnunet = sorted(v for k, v in files.items() if k.startswith("nnUNet_raw/")
                    and "/images" in k)
    monai = sorted(v for k, v in files.items() if k.startswith("monai/images/"))
    assert len(nifti) == 6 and nifti == nnunet == monai
    labels = sorted(v for k, v in files.items() if k.startswith("nnUNet_raw/") and "/labels" in k)
    assert labels == sorted(v for k, v in files.items() if k.startswith("monai/labels/"))
    assert labels == sorted(v for k, v in files.items() if "_label-msd" in k)
