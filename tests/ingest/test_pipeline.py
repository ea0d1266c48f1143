"""The ingest pipeline end to end, on each catalog backend."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import func, select

from mida.catalog.models import Instance, Provenance, QuarantineEntry
from mida.errors import QuarantineReason
from mida.ingest import ingest_paths
from mida.ingest.retry import list_entries, retry, show_entry
from mida.node import Node
from tests.factories import PHI, make_dataset, make_pdf, write


def _snapshot(root: Path) -> dict[str, tuple[str, float]]:
    return {
        str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime)
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def _count(node: Node, model: type) -> int:
    with node.catalog().session() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def test_ingest_deidentifies_stores_and_indexes(any_node: Node, tmp_path: Path) -> None:
    src = tmp_path / "src"
    study = pydicom.uid.generate_uid()
    for i in range(3):
        write(src / f"{i}.dcm", StudyInstanceUID=study, InstanceNumber=i + 1)
    before = _snapshot(src)
    summary = ingest_paths(any_node, [src], "liver", workers=2)
    assert (summary.stored, summary.quarantined, summary.duplicates) == (3, 0, 0)
    assert _snapshot(src) == before, "sources must never be modified"
    store = any_node.store()
    with any_node.catalog().session() as s:
        rows = list(s.scalars(select(Instance)))
        assert len(rows) == 3
        for row in rows:
            blob = store.get(row.blob_sha256, verify=True)
            ds = pydicom.dcmread(io.BytesIO(blob))
            assert ds.SOPInstanceUID == row.SOPInstanceUID
            assert ds.SOPInstanceUID.startswith("2.25.")
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert ds.PatientIdentityRemoved == "YES"
            assert PHI["pid"] not in blob.decode("latin-1")
            assert str(ds.PatientName) != PHI["name"]
            assert row.dataset["00080060"]["Value"] == ["CT"]
        assert len({r.series_id for r in rows}) == 3  # each file had its own series
        prov = list(s.scalars(select(Provenance)))
        assert len(prov) == 3 and all(p.key_id == any_node.key_id for p in prov)
        assert all(len(p.original_uid_hash) == 64 for p in prov)


def test_reingest_adds_nothing(any_node: Node, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(4):
        write(src / f"{i}.dcm")
    (src / "junk.txt").write_text("not dicom")
    first = ingest_paths(any_node, [src], "c1")
    assert (first.stored, first.quarantined) == (4, 1)
    second = ingest_paths(any_node, [src, src / "0.dcm"], "c1")
    assert (second.stored, second.duplicates) == (0, 5)
    assert _count(any_node, Instance) == 4
    assert _count(any_node, QuarantineEntry) == 1


def test_same_instance_in_two_transfer_syntaxes_is_stored_once(node: Node, tmp_path: Path) -> None:
    ds = make_dataset()
    write(tmp_path / "a" / "explicit.dcm", ds)
    ds2 = make_dataset(SOPInstanceUID=ds.SOPInstanceUID, StudyInstanceUID=ds.StudyInstanceUID,
                       SeriesInstanceUID=ds.SeriesInstanceUID)
    ds2.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    write(tmp_path / "a" / "implicit.dcm", ds2)
    s = ingest_paths(node, [tmp_path / "a"], "c", workers=1)
    assert (s.stored, s.duplicates) == (1, 1)


def test_a_stored_instance_sent_again_is_not_cleaned_again(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A known instance is a duplicate before de-identification: no second OCR of its frames."""
    from mida.deid.pixels import PixelCleaner

    cleaned: list[str] = []

    def fake_clean(self: PixelCleaner, ds: pydicom.Dataset, facts: object) -> None:
        cleaned.append(str(ds.SOPInstanceUID))  # a pseudonym: de-identified first

    monkeypatch.setattr(PixelCleaner, "clean", fake_clean)
    ds = make_dataset(Modality="US")
    write(tmp_path / "a" / "explicit.dcm", ds)
    assert ingest_paths(node, [tmp_path / "a"], "c", workers=1).stored == 1
    ds2 = make_dataset(Modality="US", SOPInstanceUID=ds.SOPInstanceUID,
                       StudyInstanceUID=ds.StudyInstanceUID,
                       SeriesInstanceUID=ds.SeriesInstanceUID)  # fmt: skip
    ds2.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    write(tmp_path / "b" / "implicit.dcm", ds2)
    s = ingest_paths(node, [tmp_path / "b"], "c", workers=1)
    assert (s.stored, s.duplicates) == (0, 1)
    assert len(cleaned) == 1 and cleaned[0] != ds.SOPInstanceUID


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_inputs_are_quarantined_with_reasons(node: Node, tmp_path: Path,
                                                 workers: int) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("Patient Lin Wen-Hsiung called 0912-345-678")
    good = write(src / "good.dcm")
    (src / "truncated.dcm").write_bytes(good.read_bytes()[:-100])
    write(src / "nouid.dcm", StudyInstanceUID=None)
    make_pdf(src / "report.dcm")
    s = ingest_paths(node, [src], "c", workers=workers)
    assert s.stored == 1
    assert s.by_reason == {
        "not_dicom": 1, "truncated": 1, "missing_uid": 1, "encapsulated_document": 1,
    }
    entries = list_entries(node)
    assert len(entries) == 4
    for e in entries:
        assert PHI["name"] not in e["message"] and "Lin" not in e["message"]
        shown = show_entry(node, e["id"])
        assert shown["original_kept"]
        kept = Path(shown["original_path"])
        assert oct(kept.stat().st_mode & 0o777) == "0o600"
        assert any(src.name in x["ref"] for x in shown["sources"])
    assert oct(node.settings.quarantine_dir.stat().st_mode & 0o777) == "0o700"
    missing = next(e for e in entries if e["reason"] == "missing_uid")
    assert "StudyInstanceUID" in missing["message"]


def test_quarantine_retry_after_setting_change(settings: object, tmp_path: Path) -> None:
    from mida.config import Settings
    from mida.node import init_node, load_node

    assert isinstance(settings, Settings)
    node = init_node(settings, "T", "T", key=b"q" * 32)
    make_pdf(tmp_path / "src" / "report.dcm")
    ingest_paths(node, [tmp_path / "src"], "docs", workers=1)
    [entry] = list_entries(node)
    assert entry["reason"] == QuarantineReason.ENCAPSULATED_DOCUMENT
    assert retry(node, [entry["id"]])[0].status == "still_quarantined"
    relaxed = load_node(settings.model_copy(update={"quarantine_encapsulated_documents": False}))
    [res] = retry(relaxed, [entry["id"]])
    assert res.status == "resolved"
    assert _count(node, Instance) == 1
    assert list_entries(node) == []
    assert list_entries(node, status="resolved")[0]["attempts"] == 3


def test_archives_are_ingested_without_extraction(node: Node, tmp_path: Path) -> None:
    files = [write(tmp_path / "f" / f"{i}.dcm") for i in range(3)]
    z = tmp_path / "in" / "set.zip"
    z.parent.mkdir()
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(files[0], "a/0.dcm")
        zf.writestr("../../escape.dcm", files[1].read_bytes())
    t = tmp_path / "in" / "set.tgz"
    with tarfile.open(t, "w:gz") as tf:
        tf.add(files[2], "b/2.dcm")
    before = _snapshot(tmp_path / "in")
    s = ingest_paths(node, [tmp_path / "in"], "arch", workers=2)
    assert s.stored == 2
    assert s.by_reason == {"unsafe_archive": 1}
    assert _snapshot(tmp_path / "in") == before
    assert not (tmp_path / "escape.dcm").exists()
    again = ingest_paths(node, [tmp_path / "in"], "arch", workers=2)
    assert again.stored == 0


def test_unreadable_file_is_reported(node: Node, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    p = write(tmp_path / "src" / "x.dcm")
    p.chmod(0)
    s = ingest_paths(node, [tmp_path / "src"], "c", workers=1)
    assert s.by_reason == {"unreadable": 1}


@pytest.mark.parametrize("batch_size", [1, 200])
def test_two_copies_in_one_run_are_stored_once(tmp_path: Path, batch_size: int) -> None:
    """Copies in the same batch, or racing across batches, count as duplicates once."""
    from mida.config import Settings
    from mida.node import init_node

    node = init_node(Settings(home=tmp_path / "n", workers=2, batch_size=batch_size), "T", "T",
                     key=b"d" * 32)
    src = tmp_path / "src"
    for i in range(6):
        write(src / f"{i}.dcm")
    copies = tmp_path / "copies"
    copies.mkdir()
    for i in range(6):
        (copies / f"{i}.dcm").write_bytes((src / f"{i}.dcm").read_bytes() + b"")
    s = ingest_paths(node, [src, copies], "c")
    assert s.stored + s.duplicates == 12
    assert _count(node, Instance) == s.stored == 6


def test_a_hosted_institutions_patients_are_its_own(node: Node, tmp_path: Path) -> None:
    """On a hub, the same patient ID at two providers stays two patients (one per owner)."""
    from mida.catalog.models import Institution, Patient
    from mida.sharing.governance import add_institution, create_collection
    from tests.factories import write_ct_series

    with node.catalog().session() as s:
        add_institution(s, "CGMH", "Chang Gung Memorial Hospital")
        create_collection(s, "cgmh-liver", "CGMH", "default")
        s.commit()
    write_ct_series(tmp_path / "a", slices=2, size=8, PatientID="SAME-ID")
    write_ct_series(tmp_path / "b", slices=2, size=8, PatientID="SAME-ID")
    assert ingest_paths(node, [tmp_path / "a"], "own-liver", workers=1).stored == 2
    assert ingest_paths(node, [tmp_path / "b"], "cgmh-liver", workers=1).stored == 2
    with node.catalog().session() as s:
        owners = sorted(s.scalars(select(Institution.code).join(
            Patient, Patient.institution_id == Institution.id)))
    assert owners == ["CGMH", "TEST"]
