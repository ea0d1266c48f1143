"""Packages: a BagIt bag that validates, fails when tampered with, never appears half
written, and carries the card, the manifest and (optionally) the data, without PHI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import bagit
import pydicom
import pytest

from mida.datasets import card, package, release
from mida.errors import ConflictError
from tests.datasets.test_card import Released, assert_no_phi, build_release


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Released:
    return build_release(tmp_path_factory.mktemp("package"))


def _package(r: Released, out: Path, **kw: object) -> Path:
    with r.node.catalog().session() as s:
        return package.package(s, r.node.store(), release.get(s, "liver@1.0.0"), out,
                               home=r.node.settings.home, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def bag_dir(released: Released, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _package(released, tmp_path_factory.mktemp("bags") / "liver-1.0.0",
                    contact_name="Data Steward", contact_email="steward@example.org")


def test_the_bag_validates_and_holds_the_card_and_manifest(bag_dir: Path,
                                                           released: Released) -> None:
    bag = bagit.Bag(str(bag_dir))
    bag.validate()  # every payload file against both manifests, and Payload-Oxum
    assert bag.is_valid()
    assert sorted(bag.algorithms) == ["sha256", "sha512"]
    assert sorted(p.name for p in bag_dir.iterdir()) == [
        "bag-info.txt", "bagit.txt", "data", "manifest-sha256.txt", "manifest-sha512.txt",
        "tagmanifest-sha256.txt", "tagmanifest-sha512.txt"]
    assert sorted(bag.payload_files()) == sorted(f"data/{n}" for n in card.CARD_FILES)
    raw = (bag_dir / "data" / "manifest.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == released.manifest_sha256
    info = bag.info
    assert info["External-Identifier"] == "liver@1.0.0"
    assert info["Bag-Group-Identifier"] == "liver"
    assert info["Source-Organization"] == "Test Hospital"
    assert info["Internal-Sender-Identifier"] == f"sha256:{released.manifest_sha256}"
    assert info["Contact-Name"] == "Data Steward"
    assert info["Contact-Email"] == "steward@example.org"
    size = sum(p.stat().st_size for p in (bag_dir / "data").rglob("*") if p.is_file())
    assert info["Payload-Oxum"] == f"{size}.{len(card.CARD_FILES)}"
    # the payload's card is the card built from the release
    built = released.card()
    for name, data in built.files().items():
        assert (bag_dir / "data" / name).read_bytes() == data, name
    # one line per field: the planted description's markup is data, not a new field
    assert "\n" not in info["External-Description"]
    assert_no_phi(bag_dir, released.originals)


def test_tampering_with_a_payload_file_fails_validation(bag_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "bag"
    shutil.copytree(bag_dir, copy)
    bagit.Bag(str(copy)).validate()
    target = copy / "data" / "series.csv"
    data = bytearray(target.read_bytes())
    data[-3] = ord("9") if data[-3] != ord("9") else ord("8")  # same size: Oxum still holds
    target.write_bytes(bytes(data))
    with pytest.raises(bagit.BagValidationError, match=r"series\.csv"):
        bagit.Bag(str(copy)).validate()
    bagit.Bag(str(copy)).validate(fast=True)  # only a full check sees it: sizes are equal


def test_a_non_empty_folder_is_refused_and_a_failure_leaves_no_half_bag(
        released: Released, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("mine")
    with pytest.raises(ConflictError, match="not empty"):
        _package(released, busy)
    assert [p.name for p in busy.iterdir()] == ["x.txt"]

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("killed while bagging")

    monkeypatch.setattr(bagit, "make_bag", boom)
    with pytest.raises(RuntimeError, match="killed"):
        _package(released, tmp_path / "bag")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]  # no bag, no .partial left
    monkeypatch.undo()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _package(released, empty) == empty  # an empty folder is fine
    bagit.Bag(str(empty)).validate()


def test_a_bag_with_data_carries_every_file_as_stored(released: Released,
                                                      tmp_path: Path) -> None:
    out = _package(released, tmp_path / "with-data", include_data="dicom")
    bag = bagit.Bag(str(out))
    bag.validate()
    files = [i for x in released.manifest["series"] for i in x["instances"]]
    shas = {f["sha256"] for f in files}
    images, segs = [], []
    for p in sorted((out / "data" / "DICOM").rglob("*.dcm")):
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if digest in shas:
            images.append(digest)
        else:  # the masks travel as DICOM SEG, one per reader per series
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            assert ds.Modality == "SEG", p
            segs.append((ds.ReferencedSeriesSequence[0].SeriesInstanceUID, ds.ContentCreatorName))
    assert sorted(images) == sorted(f["sha256"] for f in files)
    assert len(images) == released.manifest["counts"]["instances"]
    masked = {a["SeriesInstanceUID"] for a in released.manifest["annotations"]
              if a["mask_sha256"]}
    assert {uid for uid, _ in segs} == masked and len(segs) == len(set(segs))
    assert bag.info["Mida-Data"] == "dicom"
    assert (out / "data" / "mida-export.json").is_file()
    assert_no_phi(out, released.originals)
