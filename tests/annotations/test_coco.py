"""COCO JSON: export that pycocotools reads back exactly, import by SOP Instance UID."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from mida.annotations import store
from mida.annotations.formats import ExportOptions, ImportOptions, export, import_path
from mida.annotations.formats.coco import render_frame
from mida.annotations.geometry import series_geometry
from mida.annotations.schema import parse_schema
from mida.annotations.volume import load_volume
from mida.deid.pseudonyms import Pseudonymizer
from mida.errors import GeometryMismatchError, SchemaError
from mida.ingest import ingest_paths
from mida.node import Node
from tests.annotations.conftest import SCHEMA, CtCase
from tests.conftest import shared
from tests.factories import make_dataset

BOX = [4.0, 5.0, 10.0, 12.0]  # x0, y0, x1, y1 on slice 2
SQUARE = [[2.0, 20.0], [9.0, 20.0], [9.0, 26.0], [2.0, 26.0]]  # polygon on slice 3


def _annotate(case: CtCase, reader: str = "alice") -> dict[str, np.ndarray]:
    """A 3D lesion mask, a liver mask on two slices, a box and a polygon; returns the masks."""
    node = case.node
    liver = np.zeros_like(case.truth)
    liver[[1, 4], 20:28, 3:12] = True
    with node.catalog().session() as s:
        g = series_geometry(s, case.series_uid)
        m = store.UidMapper(s)
        t = m.target(series_uid=case.series_uid)
        store.create(s, node.store(), target=t, schema=case.schema, label="lesion",
                     reader=reader, mask=case.truth, geometry=g, status="submitted")
        store.create(s, node.store(), target=t, schema=case.schema, label="liver",
                     reader=reader, mask=liver, geometry=g, status="reviewed")
        store.create(s, node.store(), target=m.target(sop_instance_uid=case.sop_uids[2]),
                     schema=case.schema, label="nodule-box", reader=reader, data={"box": BOX})
        store.create(s, node.store(), target=m.target(sop_instance_uid=case.sop_uids[3]),
                     schema=case.schema, label="outline", reader=reader,
                     data={"points": SQUARE})
        store.create(s, node.store(), target=m.target(study_uid=case.study_uid),
                     schema=case.schema, label="lirads", reader=reader, data={"value": "LR-3"})
    return {"lesion": case.truth, "liver": liver}


def _volume_from_coco(coco: COCO, case: CtCase, category: str) -> np.ndarray:
    """Stack pycocotools' per-image masks of one category back onto the series grid."""
    cat = coco.getCatIds(catNms=[category])
    out = np.zeros_like(case.truth)
    for ann in coco.loadAnns(coco.getAnnIds(catIds=cat)):
        image = coco.loadImgs(ann["image_id"])[0]
        k = case.sop_uids.index(image["dicom_sop_instance_uid"])
        out[k] |= coco.annToMask(ann).astype(bool)
    return out


def test_export_reads_back_with_pycocotools(ct_case: CtCase, tmp_path: Path) -> None:
    masks = _annotate(ct_case)
    res = export(ct_case.node, "coco", ExportOptions(out=tmp_path / "out"))
    assert res.annotations == 4 and any("classification" in x for x in res.skipped)
    coco = COCO(str(tmp_path / "out" / "annotations.json"))
    # masks: one COCO annotation per slice touched, RLE, iscrowd 0; annToMask gives them back
    for label, m in masks.items():
        assert np.array_equal(_volume_from_coco(coco, ct_case, label), m)
        anns = coco.loadAnns(coco.getAnnIds(catIds=coco.getCatIds(catNms=[label])))
        assert len(anns) == int(m.any(axis=(1, 2)).sum())
        assert all(a["iscrowd"] == 0 and isinstance(a["segmentation"]["counts"], str)
                   for a in anns)
        assert sum(a["area"] for a in anns) == m.sum()
    # the box and the polygon rasterise to the pixels they enclose
    box = coco.loadAnns(coco.getAnnIds(catIds=coco.getCatIds(catNms=["nodule-box"])))[0]
    assert box["bbox"] == [4.0, 5.0, 6.0, 7.0] and box["area"] == 42.0
    want = np.zeros((32, 32), dtype=np.uint8)
    want[5:12, 4:10] = 1
    assert np.array_equal(coco.annToMask(box), want)
    assert coco.loadImgs(box["image_id"])[0]["dicom_sop_instance_uid"] == ct_case.sop_uids[2]
    poly = coco.loadAnns(coco.getAnnIds(catIds=coco.getCatIds(catNms=["outline"])))[0]
    want = np.zeros((32, 32), dtype=np.uint8)
    want[20:26, 2:9] = 1
    assert np.array_equal(coco.annToMask(poly), want) and poly["area"] == 42.0
    assert poly["segmentation"] == [[c for p in SQUARE for c in p]]
    attrs = poly["attributes"]
    assert attrs["reader"] == "alice" and attrs["revision"] == 1 and attrs["status"] == "draft"
    # categories carry the schema and the coded concept
    cat = coco.loadCats(coco.getCatIds(catNms=["lesion"]))[0]
    assert cat["supercategory"] == "liver" and cat["schema"] == "liver@1.0.0"
    assert cat["concept"]["CodeValue"] == "52988006" and cat["type"] == "mask"
    # images: stable names, sizes, and 8-bit renders next to the JSON
    for image in coco.dataset["images"]:
        sop = image["dicom_sop_instance_uid"]
        assert image["file_name"] == f"{ct_case.series_uid}/{sop}_1.png"
        assert (image["width"], image["height"]) == (32, 32)
        png = Image.open(tmp_path / "out" / "images" / image["file_name"])
        assert png.size == (32, 32) and png.mode == "L"
    assert len(coco.dataset["images"]) == len({*np.flatnonzero(masks["lesion"].any(axis=(1, 2))),
                                               1, 4, 2, 3})
    text = (tmp_path / "out" / "annotations.json").read_text()
    for original in [ct_case.original["series"], *ct_case.original["sops"]]:
        assert original not in text


def test_export_then_import_as_another_reader_is_equal(ct_case: CtCase, tmp_path: Path) -> None:
    masks = _annotate(ct_case)
    export(ct_case.node, "coco", ExportOptions(out=tmp_path / "out", reader="alice"))
    path = tmp_path / "out" / "annotations.json"
    res = import_path(ct_case.node, path, "coco", ImportOptions(reader="bob"))
    assert len(res.created) == 4 and res.schema == "liver@1.0.0" and res.skipped == []
    with ct_case.node.catalog().session() as s:
        got = {a.label: (a, r) for a, r in store.query(s, reader="bob")}
        assert got["nodule-box"][1].data == {"box": BOX}
        assert store.view(s, *got["nodule-box"])["target"]["SOPInstanceUID"] == \
            ct_case.sop_uids[2]
        assert got["outline"][1].data == {"points": SQUARE}
        for label, m in masks.items():
            assert np.array_equal(store.load_mask(ct_case.node.store(), got[label][1]), m)
            prov = got[label][1].provenance
            assert prov["format"] == "coco" and prov["file_sha256"] == res.file_sha256
    again = import_path(ct_case.node, path, "coco", ImportOptions(reader="bob"))
    assert again.created == [] and "already imported" in again.skipped[0]


def _hospital_coco(case: CtCase) -> dict[str, Any]:
    """A COCO file from elsewhere: hospital UIDs in file names, polygons and raw RLE."""
    sops = case.original["sops"]
    rle = mask_utils.encode(np.asfortranarray(case.truth[3].astype(np.uint8)))
    raw_counts = []  # uncompressed RLE from the decoded mask (column-major runs)
    flat = case.truth[3].flatten(order="F").astype(int)
    run, cur = 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            raw_counts.append(run)
            run, cur = 1, v
    raw_counts.append(run)
    assert mask_utils.area(rle) == case.truth[3].sum()
    return {
        "images": [
            {"id": 10, "file_name": f"scans/{sops[3]}.png", "width": 32, "height": 32},
            {"id": 11, "file_name": f"scans/{sops[4]}_1.png", "width": 32, "height": 32},
            {"id": 12, "file_name": "other.png", "width": 32, "height": 32,
             "dicom_sop_instance_uid": sops[1]},
            {"id": 13, "file_name": f"{generate_uid()}.png", "width": 32, "height": 32},
        ],
        "categories": [{"id": 1, "name": "tumour"}, {"id": 2, "name": "liver"},
                       {"id": 3, "name": "nodule-box"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 1, "iscrowd": 1,
             "segmentation": {"size": [32, 32], "counts": raw_counts}},
            {"id": 2, "image_id": 11, "category_id": 2, "iscrowd": 0,
             "segmentation": [[3, 3, 12, 3, 12, 9, 3, 9]]},
            {"id": 3, "image_id": 12, "category_id": 2, "iscrowd": 0,
             "segmentation": [[3, 3, 12, 3, 12, 9, 3, 9]]},
            {"id": 4, "image_id": 12, "category_id": 3, "bbox": [1, 2, 3, 4]},
            {"id": 5, "image_id": 13, "category_id": 3, "bbox": [1, 2, 3, 4]},
        ],
    }


def test_import_from_hospital_uids_combines_slices(ct_case: CtCase, tmp_path: Path) -> None:
    path = tmp_path / "hospital.json"
    path.write_text(json.dumps(_hospital_coco(ct_case)))
    with pytest.raises(SchemaError) as e:
        import_path(ct_case.node, path, "coco", ImportOptions(schema="liver"))
    assert "'tumour' (id 1)" in str(e.value) and "--label-map" in str(e.value)
    res = import_path(ct_case.node, path, "coco", ImportOptions(
        schema="liver", reader="h", label_map={"tumour": "lesion"}))
    assert len(res.created) == 3  # lesion (1 slice), liver (2 slices combined), one box
    assert len(res.skipped) == 1 and "image 13" in res.skipped[0]
    with ct_case.node.catalog().session() as s:
        got = {a.label: (a, r) for a, r in store.query(s, reader="h")}
        lesion = store.load_mask(ct_case.node.store(), got["lesion"][1])
        liver = store.load_mask(ct_case.node.store(), got["liver"][1])
        view = store.view(s, *got["nodule-box"])
    want = np.zeros_like(ct_case.truth)
    want[3] = ct_case.truth[3]
    assert np.array_equal(lesion, want)
    want = np.zeros_like(ct_case.truth)
    want[[1, 4], 3:9, 3:12] = True
    assert np.array_equal(liver, want)
    assert view["target"]["SOPInstanceUID"] == ct_case.sop_uids[1]
    assert view["data"] == {"box": [1.0, 2.0, 4.0, 6.0]}
    # messages name pseudonyms only
    assert not any(u in " ".join(res.skipped) for u in ct_case.original["sops"])


def test_resized_images_are_refused(ct_case: CtCase, tmp_path: Path) -> None:
    body = _hospital_coco(ct_case)
    body["images"][0]["width"] = 64
    path = tmp_path / "resized.json"
    path.write_text(json.dumps(body))
    with pytest.raises(GeometryMismatchError) as e:
        import_path(ct_case.node, path, "coco", ImportOptions(
            schema="liver", label_map={"tumour": "lesion"}))
    assert "64x32" in str(e.value) and ct_case.sop_uids[3] in str(e.value)
    assert ct_case.original["sops"][3] not in str(e.value)
    with ct_case.node.catalog().session() as s:
        assert store.query(s) == []  # one transaction: nothing of the file


def test_render_applies_rescale_window_and_monochrome1() -> None:
    # stored values 3 * index, rescale intercept -1024: -1024..-259
    ds = make_dataset(WindowCenter=-600, WindowWidth=400)
    hu = np.arange(256).reshape(16, 16) * 3 - 1024.0
    img = render_frame(ds)
    # PS3.3 C.11.2.1.2.1 (linear), onto 0..255
    want = np.clip(np.round(((hu + 600.5) / 399 + 0.5) * 255), 0, 255)
    assert img.dtype == np.uint8 and np.array_equal(img, want)
    assert img[hu <= -800].max() == 0 and img[hu >= -400].min() == 255
    assert abs(int(img[hu == -601][0]) - 128) <= 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert np.array_equal(render_frame(ds), 255 - want)
    plain = make_dataset()  # no window: the frame's range
    img = render_frame(plain)
    assert img.min() == 0 and img.max() == 255


def test_cli_exports_coco(ct_case: CtCase, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    from mida.cli.main import app

    _annotate(ct_case)
    monkeypatch.setenv("MIDA_HOME", str(ct_case.node.settings.home))
    res = CliRunner().invoke(app, ["annotations", "export", "--format", "coco",
                                   "--out", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["annotations"] == 4
    assert COCO(str(tmp_path / "out" / "annotations.json")).getCatIds()


@pytest.mark.shared_data
def test_non_square_mr_series_round_trips(node: Node, tmp_path: Path) -> None:
    """MSD hippocampus MR: 51 rows x 35 columns, so width and height cannot be swapped."""
    folder = shared("labelled", "msd_hippocampus_udacity", "TestVolumes", "Study1",
                    "13_HCropVolume")
    summary = ingest_paths(node, [folder], "msd", workers=1)
    assert summary.stored == 32
    uid = Pseudonymizer(node.key()).uid(
        pydicom.dcmread(folder / "1.dcm", stop_before_pixels=True).SeriesInstanceUID)
    with node.catalog().session() as s:
        row, _ = store.add_schema(s, parse_schema(SCHEMA))
        g = series_geometry(s, uid)
        vol = load_volume(s, node.store(), g)
        bright = vol >= np.percentile(vol, 97)
        store.create(s, node.store(), target=store.UidMapper(s).target(series_uid=uid),
                     schema=row, label="lesion", reader="a", mask=bright, geometry=g)
    export(node, "coco", ExportOptions(out=tmp_path / "out"))
    coco = COCO(str(tmp_path / "out" / "annotations.json"))
    assert {(im["width"], im["height"]) for im in coco.dataset["images"]} == {(35, 51)}
    stacked = np.zeros_like(bright)
    for ann in coco.dataset["annotations"]:
        image = coco.loadImgs(ann["image_id"])[0]
        stacked[g.slice_of(image["dicom_sop_instance_uid"])] |= coco.annToMask(ann) > 0
    assert np.array_equal(stacked, bright)
    png = Image.open(tmp_path / "out" / "images" / coco.dataset["images"][0]["file_name"])
    assert png.size == (35, 51)
    import_path(node, tmp_path / "out" / "annotations.json", "coco", ImportOptions(reader="b"))
    with node.catalog().session() as s:
        (_, rev), = store.query(s, reader="b")
        assert np.array_equal(store.load_mask(node.store(), rev), bright)
