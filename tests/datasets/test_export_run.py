"""The export pass: immutability, resume after an interruption, refusals, restrictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mida.annotations import store
from mida.datasets import release
from mida.datasets.export import ExportProgress, available, exporters, parse_formats
from mida.errors import ConflictError, DatasetError
from mida.node import Node
from mida.sharing import restrictions
from tests.datasets.export_fixtures import Built, build, file_hashes, run_export

ALL = "dicom,nifti,nnunet,monai,coco,hf,hf-parquet"


@pytest.fixture
def built(tmp_path: Path) -> Built:
    return build(tmp_path)


def test_registry_reports_availability() -> None:
    names = [e.name for e in exporters()]
    assert names == ALL.split(",")
    assert available() == {n: [] for n in names}  # everything is installed here
    assert all(e.is_available() and e.summary for e in exporters())
    assert parse_formats(["nifti,nnunet", "NIFTI", "coco"]) == ["nifti", "nnunet", "coco"]
    with pytest.raises(DatasetError, match="unknown export format 'tiff'"):
        parse_formats(["tiff"])


def test_a_release_exports_the_same_bytes_after_its_annotations_change(
        built: Built, tmp_path: Path) -> None:
    """Revise a pinned annotation and release 1.1.0: 1.0.0 still exports byte for byte."""
    first = run_export(built, [ALL], tmp_path / "a")
    n = built.node
    with n.catalog().session() as s:
        ann = store.get(s, built.annotations["P1/alice/lesion"])
        store.revise(s, n.store(), ann, author="alice",
                     mask=np.roll(built.truth, 2, axis=1).astype(np.uint8), comment="redrawn")
        lirads = store.get(s, built.annotations["P4/alice/lirads"])
        store.revise(s, n.store(), lirads, author="alice", data={"value": "LR-4"})
        release.create(s, n.store(), "demo", "1.1.0", expression="modality in ['CT', 'CR']")
        s.commit()
    again = run_export(built, [ALL], tmp_path / "b")
    a, b = file_hashes(tmp_path / "a"), file_hashes(tmp_path / "b")
    assert a == b and len(a) == len(first.report["files"]) + 1
    run_export(built, [ALL], tmp_path / "c", ref="demo@1.1.0")
    newer = file_hashes(tmp_path / "c")
    changed = sorted(k for k in a if k in newer and a[k] != newer[k])
    # the redrawn mask and the new LI-RADS value change the label files, not the images
    assert any("_label-alice" in k for k in changed)
    assert any(k.startswith("nnUNet_raw/") and "/labelsTr/" in k for k in changed)
    assert any(k.startswith("hf/") and k.endswith("metadata.jsonl") for k in changed)
    # the stored images never change; a SEG carries its release's creation time
    images = set(built.series.values())
    assert not any(k.startswith("DICOM/") and k.split("/")[-2] in images for k in changed)
    assert again.report["manifest_sha256"] == first.report["manifest_sha256"]


def test_an_interrupted_export_resumes_and_ends_identical(built: Built, tmp_path: Path) -> None:
    clean = run_export(built, [ALL], tmp_path / "clean")

    class Killed(Exception):
        pass

    def kill_after_two(p: ExportProgress) -> None:
        if p.series_done == 2:
            raise Killed

    out = tmp_path / "out"
    with pytest.raises(Killed):
        run_export(built, [ALL], out, progress=kill_after_two)
    assert (out / ".mida-export" / "journal.jsonl").is_file()
    assert not (out / "mida-export.json").exists()
    # a kill mid-write leaves a temporary file and a torn journal line
    (out / "nifti" / "half.nii.gz.mida-tmp").write_bytes(b"partial")
    with (out / ".mida-export" / "journal.jsonl").open("a") as f:
        f.write('{"series": "torn')
    seen: list[ExportProgress] = []
    res = run_export(built, [ALL], out, progress=seen.append)
    assert res.resumed == 2
    assert [p.resumed for p in seen if p.phase == "series"] == [True, True, False, False, False]
    assert seen[-1].phase == "finish" and seen[-1].bytes_done == seen[-1].bytes_total
    assert file_hashes(out) == file_hashes(tmp_path / "clean")
    assert clean.resumed == 0


def test_a_resumed_series_with_a_damaged_file_is_redone(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "out"

    def stop(p: ExportProgress) -> None:
        if p.series_done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_export(built, ["nifti"], out, progress=stop)
    victim = sorted((out / "nifti").rglob("*.nii.gz"))[0]
    victim.write_bytes(b"damaged")
    res = run_export(built, ["nifti"], out)
    assert res.resumed == 2
    run_export(built, ["nifti"], tmp_path / "clean")
    assert file_hashes(out) == file_hashes(tmp_path / "clean")


def test_refuses_a_folder_that_holds_something_else(built: Built, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConflictError, match="not empty"):
        run_export(built, ["nifti"], other)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    done = tmp_path / "done"
    run_export(built, ["nifti"], done)
    with pytest.raises(ConflictError, match=r"holds an export of demo@1\.0\.0"):
        run_export(built, ["coco"], done)
    with pytest.raises(ConflictError):
        run_export(built, ["nifti"], done, dataset_id=7)
    before = file_hashes(done)
    run_export(built, ["nifti"], done)  # the same export again: allowed, same bytes
    assert file_hashes(done) == before
    with pytest.raises(DatasetError, match="1 to 999"):
        run_export(built, ["nnunet"], tmp_path / "x", dataset_id=1000)


def test_restrictions_added_after_the_release_stop_distribution(
        any_node: Node, tmp_path: Path) -> None:
    built = build(tmp_path, node=any_node)
    out = tmp_path / "out"
    run_export(built, ["dicom,nifti"], out)
    p1 = built.series["P1"]
    assert list(out.rglob(f"{p1}*"))
    with built.node.catalog().session() as s:
        row = release.get(s, built.ref)
        manifest = release.load_manifest(built.node.store(), row)
        pid = next(x["PatientID"] for x in manifest["series"] if x["SeriesInstanceUID"] == p1)
        restrictions.add(s, "patient", pid, "consent_withdrawn", by="dpo")
        restrictions.add(s, "series", built.series["P5"], "contract", by="dpo")
        s.commit()
    res = run_export(built, ["dicom,nifti"], out)  # the earlier export, redone
    report: dict[str, Any] = json.loads((out / "mida-export.json").read_text())
    assert report["excluded"]["series"] == 2
    assert report["excluded"]["by_reason"] == {"consent_withdrawn": 1, "contract": 1}
    assert report["series"] == 3 == res.as_dict()["series"]
    assert not list(out.rglob(f"{p1}*")) and not list(out.rglob(f"{built.series['P5']}*"))
    listed = {f["path"] for f in report["files"]}
    assert listed == set(file_hashes(out)) - {"mida-export.json"}
    labels = json.loads((out / "nifti" / "labels.json").read_text())
    assert p1 not in json.dumps(labels)
    # the release itself is unchanged
    with built.node.catalog().session() as s:
        assert release.load_manifest(built.node.store(), release.get(s, built.ref)) == manifest


def test_a_series_that_cannot_be_converted_is_left_out_of_the_nifti_formats(
        built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mida.datasets import convert
    from mida.datasets.convert import ConversionError

    real = convert.volumes_from_datasets
    p2 = built.series["P2"]

    def fussy(datasets: Any) -> Any:
        items = list(datasets)
        if str(items[0].SeriesInstanceUID) == p2:
            raise ConversionError("slice spacing varies (2.5 to 5.0 mm)")
        return real(items)

    monkeypatch.setattr(convert, "volumes_from_datasets", fussy)
    res = run_export(built, ["dicom,nifti,nnunet"], tmp_path / "out")
    assert any(f"series {p2} cannot be converted to NIfTI (slice spacing varies" in n
               for n in res.notes)
    files = {f["path"] for f in res.report["files"]}
    assert any(p2 in f for f in files if f.startswith("DICOM/"))
    assert not any(p2 in f for f in files if f.startswith("nifti/"))
    assert sum(1 for f in files if "/labelsTr/" in f) == 2  # P1 and P3 are left
