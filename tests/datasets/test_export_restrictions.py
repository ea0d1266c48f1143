"""Restricted data appears in no export format, and the manifest counts it.

Issue 7's check: a series flagged as a trade secret and a patient who withdrew
consent are absent from every format mida writes (their files, their UIDs and
the patient's pseudonym, in file names, JSON, sidecars, Parquet and DICOM),
while the release manifest says how much each reason kept out.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq

from mida.datasets import release
from mida.datasets.export import export
from mida.sharing import restrictions
from tests.datasets.conftest import Cohort

FORMATS = ["dicom", "nifti", "nnunet", "monai", "coco", "hf", "hf-parquet"]


def _strings(path: Path) -> str:
    if path.suffix == ".parquet":
        return json.dumps(pq.read_table(path).drop_columns(
            [c for c in pq.read_table(path).column_names if c == "image"]).to_pylist(),
            default=str)
    if path.suffix in (".json", ".jsonl", ".csv", ".txt", ".md"):
        return path.read_text()
    return ""


def test_trade_secret_and_withdrawn_consent_are_in_no_export(cohort_node: Cohort,
                                                             tmp_path: Path) -> None:
    c = cohort_node
    secret_series = c.series["P3"][0]
    withdrawn = c.patient["P1"]
    with c.node.catalog().session() as s:
        restrictions.add(s, "series", secret_series, "trade_secret", by="steward")
        restrictions.add(s, "patient", withdrawn, "consent_withdrawn", by="steward")
        row = release.create(s, c.node.store(), "liver", "1.0.0", expression="modality = 'CT'")
        s.commit()
        manifest = release.load_manifest(c.node.store(), row)
        export(s, c.node.store(), row, FORMATS, tmp_path / "out")
    by_reason = manifest["counts"]["excluded"]["by_reason"]
    assert by_reason["trade_secret"]["series"] == 1
    assert by_reason["consent_withdrawn"] == {"patients": 1, "studies": 2, "series": 2,
                                              "instances": 8}
    banned_uids = {secret_series, *c.series["P1"], withdrawn}
    with c.node.catalog().session() as s:
        from sqlalchemy import select

        from mida.catalog.models import Instance, Series

        banned_files = set(s.scalars(
            select(Instance.blob_sha256).join(Series, Series.id == Instance.series_id)
            .where(Series.SeriesInstanceUID.in_(banned_uids))))
    assert len(banned_files) == 12
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert {p.relative_to(tmp_path / "out").parts[0] for p in written} >= {
        "DICOM", "nifti", "monai", "coco", "hf"}
    for p in written:
        assert not any(u in str(p) for u in banned_uids), p
        assert hashlib.sha256(p.read_bytes()).hexdigest() not in banned_files, p
        text = _strings(p)
        assert not any(u in text for u in banned_uids), p
        if p.suffix == ".dcm":
            import pydicom

            ds = pydicom.dcmread(p, stop_before_pixels=True)
            refs = {ds.SeriesInstanceUID, ds.get("PatientID", "")}
            refs |= {x.SeriesInstanceUID for x in ds.get("ReferencedSeriesSequence", [])}
            assert not refs & banned_uids, p
    # what remains is the rest of the cohort: 9 CT series minus the 3 restricted ones
    kept = {x["SeriesInstanceUID"] for x in manifest["series"]}
    assert len(kept) == 6 and not kept & banned_uids
