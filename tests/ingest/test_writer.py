"""The catalog writer: batches, and a replay when another writer got there first."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from mida.catalog.models import Instance, Provenance, QuarantineEntry
from mida.catalog.service import get_or_create_collection
from mida.ingest.pipeline import _make_processor
from mida.ingest.processor import Outcome, Source
from mida.ingest.writer import CatalogWriter, parse_da
from mida.node import Node
from tests.factories import write


def _outcomes(node: Node, tmp_path: Path, n: int) -> list[Outcome]:
    proc = _make_processor(node.settings, node.key(), "default")
    out = []
    for i in range(n):
        p = write(tmp_path / f"{i}.dcm")
        out.append(proc.process(p.read_bytes(), Source("file", str(p))))
    return out


def _writer(node: Node) -> CatalogWriter:
    with node.catalog().session() as s:
        col = get_or_create_collection(s, "c", node.institution_id(), "default")
        col_id = col.id
    return CatalogWriter(node.catalog(), institution_id=node.institution_id(),
                         collection_id=col_id, job_id=None, batch_size=50)


def test_batch_then_concurrent_replay(any_node: Node, tmp_path: Path) -> None:
    outcomes = _outcomes(any_node, tmp_path, 3)
    assert {o.status for o in outcomes} == {"stored"}
    first = _writer(any_node)
    first.add(outcomes[0])
    first.flush()
    # A second writer (another process) holds the same outcome plus two new ones:
    # its bulk insert fails on the unique UID and is replayed row by row.
    second = _writer(any_node)
    for o in outcomes:
        second.add(o)
    second.flush()
    assert second.late_duplicates == 1
    with any_node.catalog().session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 3
        assert s.scalar(select(func.count()).select_from(Provenance)) == 3


def test_quarantine_entries_are_not_repeated(any_node: Node) -> None:
    o = Outcome("quarantined", size=3, original_sha256="a" * 64, source_kind="file",
                source_ref_hash="b" * 64, reason="not_dicom", message="no preamble")
    for _ in range(2):
        w = _writer(any_node)
        w.add(o)
        w.flush()
    with any_node.catalog().session() as s:
        assert s.scalar(select(func.count()).select_from(QuarantineEntry)) == 1


def test_parse_da() -> None:
    assert parse_da("20240229").isoformat() == "2024-02-29"  # type: ignore[union-attr]
    assert parse_da("2024.02.29") is not None
    assert parse_da("20240230") is None
    assert parse_da("") is None
