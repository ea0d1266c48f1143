"""STOW-RS (PS3.18 10.5): store instances sent as ``multipart/related; type="application/dicom"``.

Every part goes through the one ingest path (:class:`~mida.ingest.InstanceProcessor`
then :class:`~mida.ingest.writer.CatalogWriter`), exactly as files and C-STORE
do: parsed, validated, de-identified, stored as a blob and indexed, or
quarantined with a reason. Each request is a job (kind ``stow``), so the
provenance of what it stored names it.

The response (DICOM JSON) lists what was stored under the pseudonymous UIDs
it is kept under (ReferencedSOPSequence, with RetrieveURLs) and what was not
(FailedSOPSequence, with a FailureReason and the quarantine reason code in
ErrorComment; never a value from the instance). Status: 200 all stored
(instances already stored count as stored), 202 some failed, 409 none stored.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.orm import Session

from mida.catalog.models import Collection, Instance, Provenance, Series, Study
from mida.catalog.service import finish_job, get_or_create_collection, start_job
from mida.deid import get_profile
from mida.deid.vault import LinkageVault
from mida.dicomweb.multipart import (
    DicomWebError,
    Part,
    UnsupportedMediaTypeError,
    parse_media_type,
)
from mida.ingest import InstanceProcessor, Outcome, Source
from mida.ingest.writer import CatalogWriter
from mida.node import Node
from mida.sharing.identity import Principal

log = logging.getLogger(__name__)

DICOM = "application/dicom"
#: FailureReason (0008,1197) per quarantine reason (PS3.18 Table 10.5.3-3, PS3.4 Annex B)
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
SOP_CLASS_NOT_SUPPORTED = 0x0122
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
DOES_NOT_MATCH = 0xA900
REASON_CODES = {
    "not_dicom": CANNOT_UNDERSTAND, "truncated": CANNOT_UNDERSTAND, "bad_vr": CANNOT_UNDERSTAND,
    "malformed": CANNOT_UNDERSTAND, "missing_uid": CANNOT_UNDERSTAND,
    "dicomdir": CANNOT_UNDERSTAND, "unsafe_archive": CANNOT_UNDERSTAND,
    "unsupported_transfer_syntax": TRANSFER_SYNTAX_NOT_SUPPORTED,
    "encapsulated_document": SOP_CLASS_NOT_SUPPORTED,
    "archive_limit": OUT_OF_RESOURCES,
}
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def check_content_type(value: str | None) -> str:
    """The boundary of a STOW request body; 415 unless multipart/related of application/dicom."""
    mt, params = parse_media_type(value or "")
    if mt != "multipart/related":
        raise UnsupportedMediaTypeError(
            'STOW-RS takes Content-Type: multipart/related; type="application/dicom"; '
            "boundary=...")
    t = params.get("type")
    if t and parse_media_type(t)[0] != DICOM:
        raise UnsupportedMediaTypeError(
            f"this node stores application/dicom parts only, not {parse_media_type(t)[0]} "
            "(the DICOM JSON/XML + bulk data form of STOW-RS is not supported)")
    boundary = params.get("boundary")
    if not boundary:
        raise DicomWebError("the multipart/related Content-Type needs a boundary parameter")
    return boundary


def check_parts(parts: list[Part]) -> None:
    """415 when a part is not application/dicom (a part without Content-Type is taken as one)."""
    if not parts:
        raise DicomWebError("the request has no parts: send one DICOM instance per part")
    for i, p in enumerate(parts, 1):
        if p.content_type is None:
            continue
        mt, _ = parse_media_type(p.content_type)
        if mt != DICOM:
            raise UnsupportedMediaTypeError(
                f"part {i} is {mt or 'of no media type'}: every part must be application/dicom")


@dataclass(frozen=True)
class StowTarget:
    """The collection a request stores into (created on the first store when new)."""

    name: str
    exists: bool


def prepare(node: Node, principal: Principal, collection: str | None) -> StowTarget:
    """Check that the caller may store into ``collection`` (403 otherwise), before any body."""
    name = collection or node.settings.dicom_default_collection
    if not name or len(name) > 128 or any(c in name for c in "/\\\x00"):
        raise DicomWebError("a collection name is 1-128 characters without / or \\")
    with node.catalog().session() as s:
        cid = s.scalar(select(Collection.id).where(Collection.name == name))
    if cid is None:
        principal.require("write")  # a new collection needs a node-wide grant
        return StowTarget(name, False)
    principal.require("write", int(cid))
    return StowTarget(name, True)


@dataclass
class _Head:
    sop_class: str
    sop_uid: str
    study_uid: str


def _uid(value: Any) -> str:
    v = str(value or "").strip("\x00 ")
    return v if len(v) <= 64 and _UID.fullmatch(v) else ""


def _peek(data: bytes) -> _Head | None:
    """The original SOP Class, SOP Instance and Study UIDs when they can be read."""
    try:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True, force=True,
                     specific_tags=[0x00080016, 0x00080018, 0x0020000D])
        return _Head(_uid(ds.get("SOPClassUID")), _uid(ds.get("SOPInstanceUID")),
                     _uid(ds.get("StudyInstanceUID")))
    except Exception:
        return None


@dataclass
class StowResult:
    """The HTTP status and DICOM JSON body of a STOW-RS response."""

    status: int
    body: dict[str, Any]
    job_id: int
    counts: dict[str, Any] = field(default_factory=dict)


def _ui(v: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [v]} if v else {"vr": "UI"}


def _located(s: Session, where: Any) -> tuple[str, str, str, str] | None:
    row = s.execute(
        select(Instance.SOPClassUID, Instance.SOPInstanceUID, Series.SeriesInstanceUID,
               Study.StudyInstanceUID)
        .join(Series, Series.id == Instance.series_id).join(Study, Study.id == Series.study_id)
        .where(where).limit(1)).first()
    return None if row is None else (str(row[0]), str(row[1]), str(row[2]), str(row[3]))


def store(node: Node, principal: Principal, target: StowTarget, parts: list[Part],
          study_uid: str | None = None) -> StowResult:
    """Ingest every part (read one at a time); the response to send. Closes the parts."""
    try:
        return _store(node, principal, target, parts, study_uid)
    finally:
        for p in parts:
            p.close()


def _store(node: Node, principal: Principal, target: StowTarget, parts: list[Part],
           study_uid: str | None) -> StowResult:
    settings = node.settings
    catalog = node.catalog()
    institution_id = node.institution_id()
    get_profile(settings.deid_profile, settings.home)  # a bad profile fails before any row
    with catalog.session() as s:
        col = get_or_create_collection(s, target.name, institution_id, settings.deid_profile)
        collection_id, profile = col.id, col.deid_profile
    vault_key = node.vault_key() if settings.linkage_vault else None
    proc = InstanceProcessor(settings, node.key(), profile, node.store(), catalog.engine,
                             vault_key=vault_key)
    with catalog.session() as s:
        job_id = start_job(s, "stow", {"collection": target.name, "parts": len(parts),
                                       **({"study": study_uid} if study_uid else {})},
                           owner=principal.actor).id
    vault = LinkageVault(settings.vault_file, vault_key) if vault_key is not None else None
    writer = CatalogWriter(catalog, institution_id=institution_id, collection_id=collection_id,
                           job_id=job_id, batch_size=settings.batch_size, vault=vault)
    counts: dict[str, Any] = {"parts": len(parts), "stored": 0, "duplicates": 0, "failed": 0,
                              "by_reason": {}}
    done: list[tuple[Outcome, str, _Head | None]] = []  # stored or duplicate, with input sha
    failed: list[tuple[_Head | None, int, str]] = []
    try:
        for i, part in enumerate(parts):
            data = part.read()
            part.close()
            head = _peek(data)
            if study_uid and head is not None and head.study_uid and study_uid not in (
                    head.study_uid, proc.pseudo.uid(head.study_uid)):
                failed.append((head, DOES_NOT_MATCH, "study_mismatch"))
                continue
            outcome = proc.process(data, Source("stow", f"stow:{job_id}:{i}"))
            writer.add(outcome)
            if outcome.status in ("stored", "duplicate"):
                done.append((outcome, hashlib.sha256(data).hexdigest(), head))
            else:
                reason = outcome.reason or "internal"
                failed.append((head, REASON_CODES.get(reason, PROCESSING_FAILURE), reason))
        writer.flush()
    except BaseException as exc:
        with catalog.session() as s:
            finish_job(s, job_id, "failed", counts, type(exc).__name__)
        raise
    finally:
        if vault is not None:
            vault.close()

    referenced: list[dict[str, Any]] = []
    base = f"{settings.base_url}/dicomweb/studies"
    studies: set[str] = set()
    with catalog.session() as s:
        for outcome, sha, head in done:
            found: tuple[str, str, str, str] | None = None
            if outcome.status == "stored":
                rec = outcome.record
                found = (rec["instance"]["SOPClassUID"], rec["instance"]["SOPInstanceUID"],
                         rec["series"]["SeriesInstanceUID"], rec["study"]["StudyInstanceUID"])
                counts["stored"] += 1
            else:
                counts["duplicates"] += 1
                digest = proc.pseudo.keyed_hash(sha)
                found = _located(s, Instance.id.in_(
                    select(Provenance.instance_id).where(Provenance.source_digest == digest)))
                if found is None and head is not None and head.sop_uid:
                    found = _located(s, Instance.SOPInstanceUID.in_(
                        [head.sop_uid, proc.pseudo.uid(head.sop_uid)]))
            if found is None:  # stored under a UID a profile override chose: say so honestly
                referenced.append({"00081150": _ui(head.sop_class if head else ""),
                                   "00081155": _ui("")})
                continue
            cls, sop, series, study = found
            studies.add(study)
            referenced.append({
                "00081150": _ui(cls), "00081155": _ui(sop),
                "00081190": {"vr": "UR",
                             "Value": [f"{base}/{study}/series/{series}/instances/{sop}"]},
            })
        for _, _, reason in failed:
            counts["failed"] += 1
            counts["by_reason"][reason] = counts["by_reason"].get(reason, 0) + 1
        finish_job(s, job_id, "done", counts)

    body: dict[str, Any] = {}
    if len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [f"{base}/{next(iter(studies))}"]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [
            {"00000902": {"vr": "LO", "Value": [reason[:64]]},
             "00081150": _ui(head.sop_class if head else ""),
             "00081155": _ui(head.sop_uid if head else ""),
             "00081197": {"vr": "US", "Value": [code]}}
            for head, code, reason in failed]}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    http = 200 if not failed else (202 if referenced else 409)
    log.info("stow job %s: %s", job_id, counts)
    return StowResult(http, body, job_id, counts)


__all__ = [
    "REASON_CODES",
    "StowResult",
    "StowTarget",
    "check_content_type",
    "check_parts",
    "prepare",
    "store",
]
