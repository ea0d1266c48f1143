"""Write ingest outcomes to the catalog in batches (the single writer).

Workers never write to the catalog; the parent does, a batch per
transaction, so SQLite sees one writer and a kill leaves whole batches only.
If another process wrote the same rows meanwhile, the batch is replayed row
by row, each in a savepoint, and the rows already there count as duplicates.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mida.catalog import Catalog
from mida.catalog.models import (
    Instance,
    Patient,
    Provenance,
    QuarantineEntry,
    Series,
    Study,
    utcnow,
)
from mida.deid.vault import LinkageVault
from mida.ingest.processor import Outcome


def parse_da(value: str | None) -> dt.date | None:
    """A DICOM DA (YYYYMMDD) as a date, or None when absent or malformed."""
    if not value:
        return None
    v = value.strip().replace(".", "")
    try:
        return dt.date(int(v[0:4]), int(v[4:6]), int(v[6:8]))
    except (ValueError, IndexError):
        return None


class CatalogWriter:
    """Buffers outcomes and writes them in one transaction per batch."""

    def __init__(
        self, catalog: Catalog, *, institution_id: int, collection_id: int | None,
        job_id: int | None, batch_size: int = 200, vault: LinkageVault | None = None,
    ) -> None:
        self.vault = vault
        self.catalog = catalog
        self.institution_id = institution_id
        self.collection_id = collection_id
        self.job_id = job_id
        self.batch_size = batch_size
        self.pending: list[Outcome] = []
        self._patients: dict[str, int] = {}
        self._studies: dict[str, int] = {}
        self._series: dict[str, int] = {}
        self.late_duplicates = 0

    def add(self, outcome: Outcome) -> None:
        if outcome.status == "duplicate":
            return
        self.pending.append(outcome)
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        if self.vault is not None:  # before the catalog: a kill in between is redone next run
            sealed = [o.record["vault"] for o in batch if o.record.get("vault")]
            if sealed:
                self.vault.put_many(sealed)
        try:
            with self.catalog.session() as s:
                dups = self._write_batch(s, batch)
            self.late_duplicates += dups
        except IntegrityError:
            self._reset_caches()
            with self.catalog.session() as s:
                for o in batch:
                    try:
                        with s.begin_nested():
                            self._write_one(s, o)
                    except IntegrityError:
                        self.late_duplicates += 1
                        self._reset_caches()

    def _reset_caches(self) -> None:
        self._patients.clear()
        self._studies.clear()
        self._series.clear()

    # -- rows ---------------------------------------------------------------
    def _write_batch(self, s: Session, batch: list[Outcome]) -> int:
        """The fast path: parents through the caches, instances in bulk (Core INSERTs).

        Returns the number of in-batch duplicates skipped (counted by the caller
        only once the transaction commits, so a replay does not count twice).
        """
        dups = 0
        rows: list[dict[str, Any]] = []
        outcomes: list[Outcome] = []
        seen: set[str] = set()
        for o in batch:
            if o.status == "quarantined":
                self._write_quarantine(s, o)
                continue
            rec = o.record
            uid = rec["instance"]["SOPInstanceUID"]
            if uid in seen:  # the same instance twice in one batch (two copies of a file)
                dups += 1
                continue
            seen.add(uid)
            patient_id = self._patient(s, rec["patient"])
            study_id = self._study(s, rec["study"], patient_id, rec["series"].get("Modality"))
            series_id = self._series_id(s, rec["series"], study_id)
            rows.append({**rec["instance"], "series_id": series_id,
                         "blob_sha256": rec["blob"]["sha256"], "size": rec["blob"]["size"],
                         "created": utcnow()})
            outcomes.append(o)
        if not rows:
            return dups
        # Core (not ORM) INSERTs: one multi-row statement per batch ("insertmanyvalues").
        instance_t = cast(Table, Instance.__table__)
        provenance_t = cast(Table, Provenance.__table__)
        ids = s.execute(
            insert(instance_t).returning(instance_t.c.id, sort_by_parameter_order=True), rows
        ).scalars().all()
        s.execute(insert(provenance_t), [
            {"instance_id": iid, "job_id": self.job_id, "source_kind": o.source_kind,
             "source_ref_hash": o.source_ref_hash, "created": utcnow(),
             **o.record["provenance"]}
            for iid, o in zip(ids, outcomes, strict=True)
        ])
        return dups

    def _write_one(self, s: Session, o: Outcome) -> None:
        """The replay path: one outcome, checking for rows another writer added."""
        if o.status == "quarantined":
            self._write_quarantine(s, o)
        elif o.status == "stored":
            self._write_instance(s, o.record, o)

    def _write_quarantine(self, s: Session, o: Outcome) -> None:
        existing = s.scalar(
            select(QuarantineEntry).where(
                QuarantineEntry.original_sha256 == o.original_sha256,
                QuarantineEntry.reason == o.reason,
            )
        )
        if existing is not None:
            return
        entry = QuarantineEntry(
            job_id=self.job_id, collection_id=self.collection_id, reason=o.reason or "internal",
            message=o.message or "", original_sha256=o.original_sha256, size=o.size,
            source_kind=o.source_kind, source_ref_hash=o.source_ref_hash,
        )
        s.add(entry)
        s.flush()

    def _patient(self, s: Session, p: dict[str, Any]) -> int:
        pid = p["PatientID"]
        if pid in self._patients:
            return self._patients[pid]
        row = s.scalar(
            select(Patient).where(
                Patient.institution_id == self.institution_id, Patient.PatientID == pid
            )
        )
        if row is None:
            row = Patient(institution_id=self.institution_id, **p)
            s.add(row)
            s.flush()
        self._patients[pid] = row.id
        return row.id

    def _study(self, s: Session, st: dict[str, Any], patient_id: int, modality: str | None) -> int:
        uid = st["StudyInstanceUID"]
        if uid in self._studies:
            return self._studies[uid]
        row = s.scalar(select(Study).where(Study.StudyInstanceUID == uid))
        if row is None:
            if self.collection_id is None:
                raise ValueError("a collection is needed to store new studies")
            fields = dict(st)
            fields["StudyDate"] = parse_da(st.get("StudyDate"))
            row = Study(patient_id=patient_id, collection_id=self.collection_id,
                        ModalitiesInStudy=modality, **fields)
            s.add(row)
            s.flush()
        self._studies[uid] = row.id
        return row.id

    def _series_id(self, s: Session, se: dict[str, Any], study_id: int) -> int:
        uid = se["SeriesInstanceUID"]
        if uid in self._series:
            return self._series[uid]
        row = s.scalar(select(Series).where(Series.SeriesInstanceUID == uid))
        if row is None:
            row = Series(study_id=study_id, **se)
            s.add(row)
            s.flush()
            study = s.get(Study, study_id)
            if study is not None and se.get("Modality"):
                mods = set(filter(None, (study.ModalitiesInStudy or "").split("\\")))
                if se["Modality"] not in mods:
                    mods.add(se["Modality"])
                    study.ModalitiesInStudy = "\\".join(sorted(mods))
        self._series[uid] = row.id
        return row.id

    def _write_instance(self, s: Session, rec: dict[str, Any], o: Outcome) -> None:
        inst = rec["instance"]
        if s.scalar(
            select(Instance.id).where(Instance.SOPInstanceUID == inst["SOPInstanceUID"])
        ):
            self.late_duplicates += 1
            return
        patient_id = self._patient(s, rec["patient"])
        study_id = self._study(s, rec["study"], patient_id, rec["series"].get("Modality"))
        series_id = self._series_id(s, rec["series"], study_id)
        row = Instance(series_id=series_id, blob_sha256=rec["blob"]["sha256"],
                       size=rec["blob"]["size"], **inst)
        s.add(row)
        s.flush()
        s.add(Provenance(instance_id=row.id, job_id=self.job_id, source_kind=o.source_kind,
                         source_ref_hash=o.source_ref_hash, **rec["provenance"]))


__all__ = ["CatalogWriter", "parse_da"]
