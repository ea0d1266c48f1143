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
    # Pinned on the corpus as shipped (pydicom 3.0 + pylibjpeg 2 + GDCM 3.2): a change in
    # these numbers means a parser, codec or rule changed, and must be looked at.
    # 74 files repeat an instance already stored (the same image in another transfer
    # syntax). The US/SC/OT images are OCRed on every frame and their text blanked.
    assert (s.stored, s.duplicates, s.quarantined) == (184, 74, 71)
    assert s.by_reason == {
        "not_dicom": 24,  # READMEs, licences, _SOURCE.txt, non-DICOM test files
        "missing_uid": 29,  # codec test files without Study/Series UIDs
        "bad_vr": 1,
        "unsupported_transfer_syntax": 2,  # Deflated Image Frame Compression
        "pixel_undecodable": 4,  # RLE "liver" pair, a 12-bit JPEG, a broken JPEG 2000
        "truncated": 2,
        "malformed": 1,
        "dicomdir": 8,
    }
    with node.catalog().session() as sess:
        n_inst = sess.scalar(select(func.count()).select_from(Instance))
        n_q = sess.scalar(select(func.count()).select_from(QuarantineEntry))
    assert n_inst == s.stored
    assert n_q is not None and 0 < n_q <= s.quarantined
    again = ingest_paths(node, [root], "public", workers=2)
    assert again.stored == 0
