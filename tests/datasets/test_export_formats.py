"""What each format writes, read back with the tools users load it with.

One small release (tests/datasets/export_fixtures.py: four CT series with
masks by two readers, a CR image with a box and a polygon) is exported once in
every format; each test reads one format back.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from mida.annotations.geometry import SeriesGeometry
from mida.annotations.store import decode_mask
from mida.datasets import release
from mida.datasets.convert import volumes_from_datasets
from tests.datasets.export_fixtures import Built, build, file_hashes, run_export

ALL = "dicom,nifti,nnunet,monai,coco,hf,hf-parquet"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("export")
    b = build(root)
    res = run_export(b, [ALL], root / "out")
    with b.node.catalog().session() as s:
        manifest = release.load_manifest(b.node.store(), release.get(s, b.ref))
    return {"b": b, "out": root / "out", "result": res, "manifest": manifest}


def _series(exported: dict[str, Any], pid: str) -> dict[str, Any]:
    b: Built = exported["b"]
    return next(x for x in exported["manifest"]["series"]
                if x["SeriesInstanceUID"] == b.series[pid])


def _ann(exported: dict[str, Any], key: str) -> dict[str, Any]:
    uid = exported["b"].annotations[key]
    return next(a for a in exported["manifest"]["annotations"] if a["uid"] == uid)


def _mask(exported: dict[str, Any], key: str) -> np.ndarray:
    a = _ann(exported, key)
    blob = exported["b"].node.store().get(a["mask_sha256"])
    return decode_mask(blob, tuple(a["geometry"]["shape"]))


# ----------------------------------------------------------------- the report

def test_report_lists_every_file_with_its_sha256(exported: dict[str, Any]) -> None:
    out: Path = exported["out"]
    report = json.loads((out / "mida-export.json").read_text())
    on_disk = file_hashes(out)
    assert on_disk.pop("mida-export.json")
    assert {f["path"]: f["sha256"] for f in report["files"]} == on_disk
    assert report["release"] == "demo@1.0.0"
    assert report["formats"] == ALL.split(",")
    assert report["manifest_sha256"] == hashlib.sha256(
        release.canonical_json(exported["manifest"])).hexdigest()
    assert report["series"] == 5 and report["excluded"]["series"] == 0
    assert "created" not in json.dumps(report)  # no timestamps: same release, same bytes
    assert not (out / ".mida-export").exists()


# ----------------------------------------------------------------- DICOM

def test_dicom_files_are_the_stored_blobs(exported: dict[str, Any]) -> None:
    out: Path = exported["out"]
    n = 0
    for ser in exported["manifest"]["series"]:
        folder = (out / "DICOM" / ser["split"] / ser["PatientID"] / ser["StudyInstanceUID"]
                  / ser["SeriesInstanceUID"])
        for inst in ser["instances"]:
            data = (folder / f"{inst['SOPInstanceUID']}.dcm").read_bytes()
            assert hashlib.sha256(data).hexdigest() == inst["sha256"]
            assert data == exported["b"].node.store().get(inst["sha256"])
            n += 1
    assert n == 17 == len(list((out / "DICOM").rglob("*.dcm"))) - 4  # and 4 SEG files


def test_dicom_seg_holds_each_reader_s_masks(exported: dict[str, Any]) -> None:
    import highdicom as hd

    out: Path = exported["out"]
    ser = _series(exported, "P1")
    study = out / "DICOM" / ser["split"] / ser["PatientID"] / ser["StudyInstanceUID"]
    segs = {}
    for p in study.rglob("*.dcm"):
        if p.parent.name != ser["SeriesInstanceUID"]:
            seg = hd.seg.segread(p)
            segs[str(seg.ContentCreatorName)] = seg
    assert sorted(segs) == ["alice^", "bob^"]
    created = exported["manifest"]["created"].replace("-", "")[:8]
    for reader, seg in segs.items():
        key = f"P1/{reader[:-1]}/lesion"
        assert seg.InstanceCreationDate == seg.ContentDate == created  # not the wall clock
        [desc] = seg.SegmentSequence
        assert desc.SegmentLabel == "lesion" and desc.TrackingUID == _ann(exported, key)["uid"]
        geo = SeriesGeometry.from_json(_ann(exported, key)["geometry"])
        vol = seg.get_pixels_by_source_instance(
            [s.sop_instance_uid for s in geo.slices], combine_segments=True)
        np.testing.assert_array_equal(vol.astype(bool), _mask(exported, key))


# ----------------------------------------------------------------- NIfTI

def test_nifti_images_are_the_converter_s_and_label_maps_share_their_grid(
        exported: dict[str, Any]) -> None:
    out: Path = exported["out"]
    ser = _series(exported, "P1")
    folder = out / "nifti" / ser["split"] / ser["PatientID"]
    dicoms = sorted((out / "DICOM").rglob(f"{ser['SeriesInstanceUID']}/*.dcm"))
    [vol] = volumes_from_datasets([pydicom.dcmread(p) for p in dicoms])
    image = nib.load(folder / f"{ser['SeriesInstanceUID']}.nii.gz")
    assert image.shape == vol.image.shape
    np.testing.assert_array_equal(image.affine, vol.image.affine)
    np.testing.assert_array_equal(np.asarray(image.dataobj), np.asarray(vol.image.dataobj))
    sidecar = json.loads((folder / f"{ser['SeriesInstanceUID']}.json").read_text())
    assert sidecar == vol.sidecar
    for reader, key in (("alice", "P1/alice/lesion"), ("bob", "P1/bob/lesion")):
        lm = nib.load(folder / f"{ser['SeriesInstanceUID']}_label-{reader}.nii.gz")
        assert lm.shape == image.shape
        np.testing.assert_array_equal(lm.affine, image.affine)
        assert lm.header["sform_code"] == image.header["sform_code"]
        assert lm.header["qform_code"] == image.header["qform_code"]
        # every labelled voxel is a mask voxel at the same place in patient space
        arr = np.asarray(lm.dataobj)
        mask = _mask(exported, key)
        assert int((arr == 1).sum()) == int(mask.sum()) > 0
        geo = SeriesGeometry.from_json(_ann(exported, key)["geometry"])
        ijk = np.argwhere(arr == 1)
        ras = (lm.affine @ np.c_[ijk, np.ones(len(ijk))].T)
        crs = np.rint(np.linalg.inv(geo.affine_ras()) @ ras)[:3].astype(int)
        assert mask[crs[2], crs[1], crs[0]].all()


def test_nifti_labels_json_names_values_and_files(exported: dict[str, Any]) -> None:
    body = json.loads((exported["out"] / "nifti" / "labels.json").read_text())
    assert {k: v["name"] for k, v in body["labels"].items()} == {
        "0": "background", "1": "lesion", "2": "liver"}
    ser = _series(exported, "P2")
    [entry] = [f for f in body["files"] if f["series"] == ser["SeriesInstanceUID"]]
    [lm] = entry["label_maps"]
    assert lm["reader"] == "alice"
    assert sorted(a["label"] for a in lm["annotations"]) == ["lesion", "liver"]
    arr = np.asarray(nib.load(exported["out"] / "nifti" / lm["file"]).dataobj)
    assert set(np.unique(arr).tolist()) == {0, 1, 2}
    assert any("overlap 'liver'" in n for n in exported["result"].notes)


def test_nifti_gzip_is_deterministic(exported: dict[str, Any]) -> None:
    """gzip header: no file name (FLG.FNAME unset) and modification time 0."""
    for p in (exported["out"] / "nifti").rglob("*.nii.gz"):
        head = p.read_bytes()[:10]
        assert head[:2] == b"\x1f\x8b" and not head[3] & 0x08 and head[4:8] == b"\0\0\0\0"
        gzip.decompress(p.read_bytes())


# ----------------------------------------------------------------- nnU-Net / MONAI

def test_nnunet_picks_one_annotation_per_label(exported: dict[str, Any]) -> None:
    ds = exported["out"] / "nnUNet_raw" / "Dataset001_demo"
    cases = json.loads((ds / "mida_cases.json").read_text())["cases"]
    p1 = next(c for c in cases.values() if c["series"] == exported["b"].series["P1"])
    # alice and bob both drew the lesion, both submitted, both people: by reader name
    assert [a["reader"] for a in p1["annotations"]] == ["alice"]
    assert not any(c["series"] == exported["b"].series["P5"] for c in cases.values())
    assert any("nnunet: 1 train/val volume(s) have no mask" in n
               for n in exported["result"].notes)


# ----------------------------------------------------------------- COCO

def test_coco_loads_with_pycocotools(exported: dict[str, Any]) -> None:
    from pycocotools.coco import COCO

    out: Path = exported["out"] / "coco"
    seen_masks = 0
    for split in ("train", "val", "test"):
        coco = COCO(str(out / "annotations" / f"{split}.json"))
        cats = {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())}
        assert cats == {"lesion": 1, "liver": 2, "nodule-box": 3, "outline": 4}
        for img in coco.loadImgs(coco.getImgIds()):
            png = Image.open(out / "images" / split / img["file_name"])
            assert png.size == (img["width"], img["height"]) and png.mode == "L"
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
                m = coco.annToMask(ann)
                assert m.shape == (img["height"], img["width"]) and m.any()
                if ann["category_id"] == cats["lesion"]:
                    key = next(k for k, v in exported["b"].annotations.items()
                               if v == ann["attributes"]["annotation_uid"])
                    k = ann["attributes"].get("slice")
                    ref = _mask(exported, key)
                    geo = SeriesGeometry.from_json(_ann(exported, key)["geometry"])
                    sl = next(i for i, s in enumerate(geo.slices)
                              if s.sop_instance_uid == img["dicom_sop_instance_uid"])
                    assert k is None or k == sl
                    np.testing.assert_array_equal(m.astype(bool), ref[sl])
                    seen_masks += 1
    # P1 (2 readers) + P2 + P3 lesions: each sphere touches the middle slices
    assert seen_masks >= 8


def test_coco_2d_image_with_box_and_polygon(exported: dict[str, Any]) -> None:
    from pycocotools.coco import COCO

    ser = _series(exported, "P5")
    coco = COCO(str(exported["out"] / "coco" / "annotations" / f"{ser['split']}.json"))
    [img] = [i for i in coco.loadImgs(coco.getImgIds())
             if i["dicom_series_instance_uid"] == ser["SeriesInstanceUID"]]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
    box = next(a for a in anns if a["attributes"]["annotation_uid"]
               == exported["b"].annotations["P5/alice/box"])
    assert box["bbox"] == [2.0, 3.0, 7.0, 9.0] and box["area"] == 63.0
    poly = next(a for a in anns if a["attributes"]["annotation_uid"]
                == exported["b"].annotations["P5/alice/outline"])
    assert poly["segmentation"] == [[1.0, 1.0, 10.0, 2.0, 6.0, 11.0]]
    # the CR image is windowed with its own Window Center/Width (300/600): value v -> PNG
    png = np.asarray(Image.open(exported["out"] / "coco" / "images" / ser["split"]
                                / img["file_name"]))
    values = (np.arange(256) * 3).reshape(16, 16).astype(float)
    expect = np.clip(np.round(((values - 299.5) / 599 + 0.5) * 255), 0, 255)
    np.testing.assert_array_equal(png, expect.astype(np.uint8))


def test_coco_3d_series_export_annotated_slices_only(exported: dict[str, Any]) -> None:
    out = exported["out"] / "coco" / "images"
    p4 = _series(exported, "P4")  # no mask, box or polygon
    assert not list(out.rglob(f"{p4['SeriesInstanceUID']}/*.png"))
    p1 = _series(exported, "P1")
    slices = len(list(out.rglob(f"{p1['SeriesInstanceUID']}/*.png")))
    touched = {k for key in ("P1/alice/lesion", "P1/bob/lesion")
               for k in np.flatnonzero(_mask(exported, key).any(axis=(1, 2)))}
    assert slices == len(touched) < 4


# ----------------------------------------------------------------- Hugging Face

def test_hf_imagefolder_and_parquet_hold_the_same_rows(exported: dict[str, Any]) -> None:
    import pyarrow.parquet as pq

    out: Path = exported["out"]
    for split, n in (("train", 9), ("val", 4), ("test", 4)):
        lines = [json.loads(x) for x in (out / "hf" / split / "metadata.jsonl")
                 .read_text().splitlines()]
        assert len(lines) == n
        table = pq.read_table(out / "hf-parquet" / "data" / f"{split}-00000-of-00001.parquet")
        assert table.num_rows == n
        assert {"image", "labels", "split", "lirads"} <= set(table.column_names)
        features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
        assert features["image"] == {"_type": "Image"}
        rows = table.to_pylist()
        for line, row in zip(lines, rows, strict=True):
            png = (out / "hf" / split / line["file_name"]).read_bytes()
            assert row["image"]["bytes"] == png and row["image"]["path"] == line["file_name"]
            assert row["labels"] == line["labels"] and row["split"] == split == line["split"]
            assert row["lirads"] == line["lirads"]
            Image.open(io.BytesIO(png)).verify()
    cr = next(json.loads(x) for x in (out / "hf" / _series(exported, "P5")["split"]
                                      / "metadata.jsonl").read_text().splitlines()
              if json.loads(x)["series"] == exported["b"].series["P5"])
    assert cr["labels"] == ["lirads", "nodule-box", "outline"] and cr["lirads"] == "LR-1"
