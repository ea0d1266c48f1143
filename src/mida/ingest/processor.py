"""Turn one input's bytes into a stored, de-identified instance, or a quarantine.

:class:`InstanceProcessor` is the single path every source feeds (files,
archives, C-STORE, STOW-RS, PACS pull). It runs in worker processes and
returns a small, de-identified :class:`Outcome` that the parent writes to
the catalog. Order of work, chosen for crash safety: the blob is written
(content-addressed, atomic, idempotent) before the catalog row, so a kill at
any moment leaves at most an orphan blob that the next run re-registers.
"""

from __future__ import annotations

import hashlib
import logging
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import UID, AllTransferSyntaxes
from sqlalchemy import Connection, Engine, TextClause, text

from mida.config import Settings
from mida.deid import Deidentifier, DeidReport, Pseudonymizer, get_profile
from mida.deid.pixels import (
    PixelCleaner,
    PixelReport,
    get_ocr_engine,
    header_facts,
    load_pixel_rules,
    requires_ocr,
)
from mida.deid.vault import IDENTIFYING_KEYWORDS, seal
from mida.dicom.json import to_json_dict
from mida.dicom.write import encode
from mida.errors import QuarantineError, QuarantineReason
from mida.ingest import parse
from mida.storage import BlobStore
from mida.storage.quarantine import QuarantineArea

log = logging.getLogger(__name__)


_SOP_INSTANCE_UID = 0x00080018


def quiet_pydicom() -> None:
    """Keep pydicom from echoing values of identified files.

    pydicom's validators warn and log with the offending value quoted, which
    for an identified input can be a name or an ID. Ingest does not need that
    validation (it checks what it keeps, and reports by tag), so it is off in
    ingest processes and pydicom's own log records go nowhere.
    """
    from pydicom import config as pydicom_config

    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    plog = logging.getLogger("pydicom")
    plog.handlers[:] = [logging.NullHandler()]
    plog.propagate = False


@dataclass(frozen=True)
class Source:
    """Where an input came from: a kind and a local reference (hashed before storage)."""

    kind: str
    ref: str


@dataclass
class Outcome:
    """What happened to one input; carries only de-identified data."""

    status: str  # stored | duplicate | quarantined
    size: int
    original_sha256: str
    source_kind: str
    source_ref_hash: str
    reason: str | None = None
    message: str | None = None
    record: dict[str, Any] = field(default_factory=dict)


def _first(js: dict[str, Any], keyword: str) -> Any:
    """The first value of an attribute in a DICOM JSON dict, or None."""
    entry = js.get(_TAGS[keyword])
    if not entry:
        return None
    values = entry.get("Value")
    if not values:
        return None
    v = values[0]
    if isinstance(v, dict):  # a person name
        return v.get("Alphabetic")
    return v


def _str(js: dict[str, Any], keyword: str) -> str | None:
    v = _first(js, keyword)
    if v is None or v == "":
        return None
    return str(v)


def _int(js: dict[str, Any], keyword: str) -> int | None:
    v = _first(js, keyword)
    try:
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _bulk_uri(elem: Any) -> str:
    return f"bulkdata/{int(elem.tag):08X}"


def dataset_json(ds: Dataset) -> dict[str, Any]:
    """DICOM JSON (PS3.18 F.2) of every retained attribute; bulk data by reference."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_json_dict(ds, bulk_data_threshold=1024, bulk_data_element_handler=_bulk_uri)


_TAGS = {
    kw: f"{int(tag_for_keyword(kw) or 0):08X}"
    for kw in (
        "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "PatientAge",
        "ReferringPhysicianName", "StudyInstanceUID", "StudyDate", "StudyTime",
        "AccessionNumber", "StudyID", "StudyDescription", "SeriesInstanceUID", "Modality",
        "SeriesNumber", "SeriesDescription", "BodyPartExamined", "Manufacturer",
        "SOPInstanceUID", "SOPClassUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames",
    )
}


def record_of(ds: Dataset) -> dict[str, Any]:
    """Catalog columns of a de-identified dataset, read from its DICOM JSON."""
    js = dataset_json(ds)
    return {
        "patient": {
            "PatientID": _str(js, "PatientID") or "",
            "PatientName": _str(js, "PatientName"),
            "PatientBirthDate": _str(js, "PatientBirthDate"),
            "PatientSex": _str(js, "PatientSex"),
            "PatientAge": _str(js, "PatientAge"),
        },
        "study": {
            "StudyInstanceUID": _str(js, "StudyInstanceUID"),
            "StudyDate": _str(js, "StudyDate"),
            "StudyTime": _str(js, "StudyTime"),
            "AccessionNumber": _str(js, "AccessionNumber"),
            "StudyID": _str(js, "StudyID"),
            "StudyDescription": _str(js, "StudyDescription"),
            "ReferringPhysicianName": _str(js, "ReferringPhysicianName"),
        },
        "series": {
            "SeriesInstanceUID": _str(js, "SeriesInstanceUID"),
            "Modality": _str(js, "Modality"),
            "SeriesNumber": _int(js, "SeriesNumber"),
            "SeriesDescription": _str(js, "SeriesDescription"),
            "BodyPartExamined": _str(js, "BodyPartExamined"),
            "Manufacturer": _str(js, "Manufacturer"),
        },
        "instance": {
            "SOPInstanceUID": _str(js, "SOPInstanceUID"),
            "SOPClassUID": _str(js, "SOPClassUID"),
            "TransferSyntaxUID": str(ds.file_meta.TransferSyntaxUID),
            "InstanceNumber": _int(js, "InstanceNumber"),
            "Rows": _int(js, "Rows"),
            "Columns": _int(js, "Columns"),
            "NumberOfFrames": _int(js, "NumberOfFrames"),
            "dataset": js,
        },
    }


def ensure_file_meta(ds: Dataset) -> None:
    """Give a bare dataset the file meta it was implicitly encoded with."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import (
        ExplicitVRBigEndian,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
    )

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = FileMetaDataset()
        ds.file_meta = meta
    if "TransferSyntaxUID" not in meta:
        implicit, little = ds.original_encoding
        if implicit:
            meta.TransferSyntaxUID = ImplicitVRLittleEndian
        else:
            meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    ts = UID(str(meta.TransferSyntaxUID))
    if ts not in AllTransferSyntaxes:  # static list; the UID dictionary varies with imports
        raise QuarantineError(
            QuarantineReason.MALFORMED,
            f"transfer syntax {ts} is not one that can be read and written here",
        )
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def pixel_cleaner(settings: Settings) -> PixelCleaner:
    """The pixel cleaner of a worker process: shipped region rules and the OCR engine.

    Frames are OCRed in parallel threads, sharing the CPUs with the other
    worker processes.
    """
    import os

    per_worker = max(1, (os.cpu_count() or 1) // max(1, settings.workers))
    return PixelCleaner(load_pixel_rules(), get_ocr_engine(settings.ocr_engine), workers=per_worker)


def make_safe(
    ds: Dataset, deid: Deidentifier, pixels: PixelCleaner, settings: Settings
) -> tuple[DeidReport, PixelReport | None]:
    """De-identify the header and, where they may carry text, clean the pixels.

    Pixels are cleaned (region rules of the original header, then OCR of
    every frame) when the image's modality is one of
    ``settings.risk_modalities``, BurnedInAnnotation is YES, or a region
    rule matches; the header facts the rules need are read before the
    header is de-identified. Other compressed pixel data is checked to
    decode, so nothing undecodable is stored.

    Raises
    ------
    QuarantineError
        When the header or the pixels cannot be made safe; `ds` is then
        half-processed and must be discarded (quarantine the original).
    """
    clean = False
    facts = None
    if "PixelData" in ds:
        facts = header_facts(ds)
        modality = str(facts.get("Modality", "")).upper()
        clean = (
            requires_ocr(facts)
            or modality in settings.risk_modalities
            or bool(pixels.rules.matching(facts))
        )
        if not clean and UID(str(ds.file_meta.TransferSyntaxUID)).is_compressed:
            parse.check_decodable(ds)
    report = deid.apply(ds)
    if not clean or facts is None:
        return report, None
    return report, pixels.clean(ds, facts)


class InstanceProcessor:
    """Parse, validate, de-identify and store one input.

    Parameters
    ----------
    settings
        The node's settings.
    key
        The de-identification key.
    profile
        Name of the de-identification profile (the collection's).
    store
        The blob store.
    engine
        Catalog engine used read-only, to skip inputs already ingested.
    """

    def __init__(
        self, settings: Settings, key: bytes, profile: str, store: BlobStore, engine: Engine,
        vault_key: bytes | None = None,
    ) -> None:
        quiet_pydicom()
        self.vault_key = vault_key
        self._sealed: set[str] = set()  # pseudonyms this process already sealed
        self.settings = settings
        self.profile = get_profile(profile, settings.home)
        self.deid = Deidentifier(key, self.profile)
        self.pixels = pixel_cleaner(settings)
        self.pseudo = Pseudonymizer(key)
        self.store = store
        self.engine = engine
        self._conn: Connection | None = None
        self.quarantine = QuarantineArea(settings.quarantine_dir)

    @staticmethod
    def _identifiers(ds: Dataset) -> dict[str, str]:
        """The original identifiers the linkage vault keeps (read before de-identification)."""
        out = {}
        for kw in IDENTIFYING_KEYWORDS:
            v = ds.get(kw)
            if v not in (None, ""):
                out[kw] = str(v)
        return out

    # -- lookups ------------------------------------------------------------
    # Two indexed look-ups per input, on one connection held by this process
    # (opened lazily, so never shared across a fork), each in its own short
    # read transaction so that rows committed by the writer are seen.
    _SOURCE = text("SELECT 1 FROM provenance WHERE source_digest = :v LIMIT 1")
    _INSTANCE = text('SELECT 1 FROM instance WHERE "SOPInstanceUID" = :v LIMIT 1')

    def _exists(self, stmt: TextClause, value: str) -> bool:
        if self._conn is None:
            self._conn = self.engine.connect()
        try:
            return self._conn.execute(stmt, {"v": value}).first() is not None
        finally:
            self._conn.rollback()

    def _known_source(self, source_digest: str) -> bool:
        return self._exists(self._SOURCE, source_digest)

    def _known_instance(self, sop_uid: str) -> bool:
        return self._exists(self._INSTANCE, sop_uid)

    def _output_uid(self, ds: Dataset) -> str | None:
        """The SOP Instance UID that de-identification will write, if it can be told now.

        The keyed pseudonym of the original (the original under Retain UIDs);
        None when the value cannot be read or a profile override decides it.
        """
        if _SOP_INSTANCE_UID in self.profile.overrides:
            return None
        try:
            uid = str(ds.SOPInstanceUID).strip("\x00 ")
        except Exception:  # unreadable here: make_safe gives the precise error
            return None
        if not uid:
            return None
        return uid if self.deid.planner.keep_uids else self.pseudo.uid(uid)

    # -- work ---------------------------------------------------------------
    def process(self, data: bytes, source: Source) -> Outcome:
        """Process one input; never raises for a bad input (it is quarantined)."""
        sha = hashlib.sha256(data).hexdigest()
        ref_hash = self.pseudo.keyed_hash(source.ref)
        base: dict[str, Any] = {"size": len(data), "original_sha256": sha,
                                "source_kind": source.kind, "source_ref_hash": ref_hash}
        source_digest = self.pseudo.keyed_hash(sha)
        if self._known_source(source_digest):
            return Outcome("duplicate", **base)
        try:
            return self._ingest(data, source_digest, base)
        except QuarantineError as exc:
            return self.to_quarantine(data, source, exc.reason, exc.message, base)
        except Exception as exc:  # a bug or an unforeseen encoding: keep the file, say so
            # The exception's message may quote values from the file: log the type and the
            # stack only, never the message.
            log.error("unexpected %s while ingesting (kept in quarantine)\n%s",
                      type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
            return self.to_quarantine(
                data, source, QuarantineReason.INTERNAL,
                f"unexpected {type(exc).__name__} while ingesting; please report it", base,
            )

    def to_quarantine(
        self, data: bytes | None, source: Source, reason: QuarantineReason, message: str,
        base: dict[str, Any], *, file: str | None = None,
    ) -> Outcome:
        self.quarantine.keep(base["original_sha256"], data=data, file=file,
                             source_ref=source.ref, source_kind=source.kind)
        return Outcome("quarantined", reason=reason.value, message=message, **base)

    def _ingest(self, data: bytes, source_digest: str, base: dict[str, Any]) -> Outcome:
        if data[:4] == b"PK\x03\x04" or data[:2] == b"\x1f\x8b":
            raise QuarantineError(
                QuarantineReason.NOT_DICOM,
                "a nested archive: archives inside archives are not opened (to bound "
                "expansion); extract it and ingest the result",
            )
        ds = parse.read_dataset(data)
        parse.validate(ds, quarantine_documents=self.settings.quarantine_encapsulated_documents)
        ensure_file_meta(ds)
        identifiers = self._identifiers(ds) if self.vault_key is not None else None
        predicted = self._output_uid(ds)
        if predicted is not None and self._known_instance(predicted):
            # The same instance is stored already (e.g. sent again in another transfer
            # syntax): skip the de-identification and the OCR of its every frame.
            return Outcome("duplicate", **base)
        report, _ = make_safe(ds, self.deid, self.pixels, self.settings)
        original_uid_hash = report.source_uid_hash
        sop_uid = str(ds.SOPInstanceUID)
        if self._known_instance(sop_uid):
            return Outcome("duplicate", **base)
        out = encode(ds)
        ref = self.store.put(out)
        record = record_of(ds)
        record["blob"] = {"sha256": ref.digest, "size": ref.size}
        if identifiers is not None and report.patient_pseudonym not in self._sealed:
            assert self.vault_key is not None
            pseudonym = report.patient_pseudonym
            record["vault"] = (pseudonym, seal(self.vault_key, pseudonym, identifiers))
            self._sealed.add(pseudonym)
        record["provenance"] = {
            "source_digest": source_digest,
            "original_uid_hash": original_uid_hash,
            "deid_profile": self.profile.name,
            "deid_profile_version": self.profile.version,
            "key_id": self.pseudo.key_id,
        }

        return Outcome("stored", record=record, **base)


__all__ = [
    "InstanceProcessor",
    "Outcome",
    "Source",
    "dataset_json",
    "ensure_file_meta",
    "make_safe",
    "pixel_cleaner",
    "record_of",
]
