"""Every file of the shared public corpora lands in the catalog or in quarantine."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from mida.catalog.models import Instance, QuarantineEntry
from mida.ingest import ingest_paths
from mida.ingest.sources import count_inputs
from mida.node import Node
from tests.conftest import shared


@pytest.mark.shared_data
@pytest.mark.slow
def test_every_shared_dicom_file_is_accounted_for(node: Node) -> None:
    root: Path = shared("dicom")
    n_files = count_inputs([root])
    s = ingest_paths(node, [root], "public", workers=2)
    assert s.inputs == n_files
    assert s.stored + s.duplicates + s.quarantined == n_files
    # No exception escaped into an "internal" quarantine: every refusal has a real reason.
    assert "internal" not in s.by_reason, s.by_reason
    # Pinned on the corpus as shipped (pydicom 3 + pylibjpeg + GDCM): a change in these
    # numbers means a parser, codec or rule changed, and must be looked at.
    assert s.stored >= 250
    assert s.by_reason.get("not_dicom", 0) >= 20  # READMEs, licences, text files
    assert s.by_reason.get("dicomdir") == 8
    assert s.by_reason.get("truncated", 0) >= 2
    assert s.by_reason.get("missing_uid", 0) >= 20
    with node.catalog().session() as sess:
        n_inst = sess.scalar(select(func.count()).select_from(Instance))
        n_q = sess.scalar(select(func.count()).select_from(QuarantineEntry))
    assert n_inst == s.stored
    assert n_q is not None and 0 < n_q <= s.quarantined
    again = ingest_paths(node, [root], "public", workers=2)
    assert again.stored == 0
