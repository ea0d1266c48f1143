"""fsck finds and repairs orphans in both directions."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from mida.catalog.models import Instance
from mida.ingest import ingest_paths
from mida.node import Node
from mida.node.fsck import fsck
from tests.factories import write


def test_clean_after_ingest(node: Node, tmp_path: Path) -> None:
    for i in range(3):
        write(tmp_path / "s" / f"{i}.dcm")
    ingest_paths(node, [tmp_path / "s"], "c", workers=1)
    rep = fsck(node, verify=True)
    assert rep.clean and rep.instances == 3 and rep.blobs == 3


def test_orphan_blob_and_missing_blob_are_repaired(node: Node, tmp_path: Path) -> None:
    for i in range(3):
        write(tmp_path / "s" / f"{i}.dcm")
    ingest_paths(node, [tmp_path / "s"], "c", workers=1)
    store = node.store()
    orphan = store.put(b"left by a killed ingest").digest
    with node.catalog().session() as s:
        victim = s.scalars(select(Instance.blob_sha256)).first()
    assert victim is not None
    Path(store.path(victim)).unlink()
    rep = fsck(node)
    assert rep.orphan_blobs == [orphan] and rep.missing_blobs == [victim] and not rep.clean
    young = fsck(node, repair=True)  # orphan is younger than the grace period: kept
    assert store.exists(orphan)
    assert young.repaired["rows_dropped"] == 1
    fsck(node, repair=True, grace_seconds=0)
    assert not store.exists(orphan)
    assert fsck(node).clean
    with node.catalog().session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 2
    again = ingest_paths(node, [tmp_path / "s"], "c", workers=1)
    assert again.stored == 1, "re-ingesting the source restores the instance whose blob was lost"
    assert fsck(node, verify=True).clean


def test_verify_detects_tampered_blob(node: Node, tmp_path: Path) -> None:
    write(tmp_path / "s" / "0.dcm")
    ingest_paths(node, [tmp_path / "s"], "c", workers=1)
    store = node.store()
    [d] = list(store.iter_digests())
    Path(store.path(d)).write_bytes(b"tampered")
    rep = fsck(node, verify=True)
    assert rep.corrupt_blobs == [d]
