"""No identified data reaches storage, the catalog or the logs.

Ingests the shared PHI corpora (../shared/data/phi) and mida's own synthetic
sample, then scans every stored blob, every catalog row and every log line for
the names, IDs, birth dates, addresses, phone numbers and UIDs of the
originals. The quarantine area is the one place allowed to hold originals.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import text

from mida.catalog.models import Base
from mida.cli import logs
from mida.deid.safe_private import load_safe_private
from mida.deid.verify import safe_listed_elements
from mida.ingest import ingest_paths
from mida.node import Node
from tests.conftest import SHARED_DATA

SAFE_CREATORS = load_safe_private().creators

MIN_LEN = 4
GENERIC = {"ANONYMOUS", "ANONYMIZED", "NONE", "UNKNOWN", "TEST", "YES", "NO", "MALE", "FEMALE"}
IDENTIFYING_KEYWORDS = {
    "PatientID", "OtherPatientIDs", "PatientBirthDate", "PatientAddress",
    "PatientTelephoneNumbers", "InstitutionName", "InstitutionAddress", "AccessionNumber",
    "MedicalRecordLocator", "StudyID", "PatientMotherBirthName", "OtherPatientNames",
    "RequestingPhysician", "ReferringPhysicianName", "PerformingPhysicianName",
    "OperatorsName", "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord",
}


def _values(elem: object) -> list[str]:
    """The strings to look for in one element of an original file."""
    vr, kw, val = elem.VR, elem.keyword, elem.value  # type: ignore[attr-defined]
    if val is None or vr == "SQ":
        return []
    vals = list(val) if isinstance(val, pydicom.multival.MultiValue) else [val]
    out: list[str] = []
    for v in vals:
        if vr == "PN":
            out.append(str(v))
            if isinstance(v, pydicom.valuerep.PersonName):
                for comp in (v.alphabetic, v.ideographic, v.phonetic):
                    out += [c for c in comp.replace("=", "^").split("^") if c]
        elif vr == "UI":
            if not str(v).startswith("1.2.840.10008."):
                out.append(str(v))
        elif kw in IDENTIFYING_KEYWORDS or (elem.tag.is_private and vr in PRIVATE_TEXT_VRS):
            out.append(str(v))
    return out


PRIVATE_TEXT_VRS = ("LO", "LT", "SH", "ST", "PN")
DESCRIPTOR_VRS = ("LO", "SH", "ST", "LT", "UT", "UC")
# SOP classes name a kind of object, not a person; the standard keeps them unchanged.
TECHNICAL_TEXT = {"RescaleType", "Manufacturer", "ManufacturerModelName", "SoftwareVersions"}
CLASS_UIDS = {"SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID",
              "ReferencedSOPClassUIDInFile", "AffectedSOPClassUID", "RequestedSOPClassUID"}


def _walk(ds: Dataset) -> list[str]:
    """Identifying strings in a dataset at every depth.

    A private value that merely repeats the file's own technical data (e.g. a
    vendor copy of RescaleType) is not counted: it identifies no one. Nor are
    the values and creators of private attributes that the safe-private
    dictionary lists: the default profile keeps them (Retain Safe Private) as
    non-identifying by that dictionary's word. Names, IDs and dates planted in
    them are still searched for, as they are collected from standard attributes.
    """
    out: list[str] = []
    technical: set[str] = set()
    for elem, listed in safe_listed_elements(ds):
        try:
            if listed or (elem.tag.is_private_creator and str(elem.value) in SAFE_CREATORS):
                continue
            if elem.keyword in CLASS_UIDS or elem.VR == "CS" or elem.keyword in TECHNICAL_TEXT:
                technical.add(str(elem.value))
            elif (not elem.tag.is_private and elem.VR in DESCRIPTOR_VRS
                  and elem.keyword not in IDENTIFYING_KEYWORDS):  # fmt: skip
                # A private copy of a public description ("CT BRAIN WO IVCON") is
                # no more identifying than the description, which Clean Descriptors
                # keeps once its names, IDs and dates (checked here) are removed.
                technical.add(str(elem.value))
            out += _values(elem)
        except Exception:
            continue
    return [v for v in out if v not in technical]


def _phi_from_originals(root: Path) -> set[str]:
    found: set[str] = set()
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        try:
            ds = pydicom.dcmread(p)
        except Exception:
            continue
        found.update(_walk(ds))
    return found


def _clean(values: set[str]) -> set[str]:
    out = set()
    for v in values:
        v = v.strip().strip("\x00")
        if len(v) >= MIN_LEN and v.upper() not in GENERIC:
            out.add(v)
    return out


def _planted(manifest: object) -> set[str]:
    """Every string in the sample's PHI manifest, wherever it is nested."""
    out: set[str] = set()
    if isinstance(manifest, dict):
        for k, v in manifest.items():
            if k not in ("files", "counts"):
                out |= _planted(v)
    elif isinstance(manifest, list):
        for v in manifest:
            out |= _planted(v)
    elif isinstance(manifest, str):
        out.add(manifest)
    return out


def _catalog_text(node: Node) -> str:
    chunks = []
    with node.catalog().engine.connect() as c:
        for table in Base.metadata.sorted_tables:
            for row in c.execute(text(f"SELECT * FROM {table.name}")):
                chunks.append(json.dumps([str(x) for x in row], ensure_ascii=False))
    return "\n".join(chunks)


def _hits(haystack: str, needles: set[str]) -> list[str]:
    """Needles found as whole tokens ("MARY" must not match inside "PRIMARY")."""
    found = []
    for n in needles:
        if n not in haystack:
            continue
        pattern = r"(?<![A-Za-z0-9])" + re.escape(n) + r"(?![A-Za-z0-9])"
        if re.search(pattern, haystack):
            found.append(n)
    return sorted(found)


@pytest.mark.shared_data
def test_no_phi_in_store_catalog_or_logs(node: Node, sample_dir: Path, tmp_path: Path) -> None:
    phi_root = SHARED_DATA / "phi"
    if not phi_root.exists():
        pytest.skip(f"{phi_root} is absent: shared PHI corpora exist only in CI and dev machines")
    logs.configure(node.settings)
    try:
        s1 = ingest_paths(node, [phi_root / "deid_data", phi_root / "deid_examples"], "phi")
        s2 = ingest_paths(node, [sample_dir], "sample")
    finally:
        for h in logging.getLogger("mida").handlers:
            h.flush()
    assert s1.stored > 0 and s2.stored > 0
    manifest = json.loads((sample_dir / "phi_manifest.json").read_text())
    planted = _planted(manifest)
    needles = _clean(_phi_from_originals(phi_root) | _phi_from_originals(sample_dir) | planted)
    assert len(needles) > 50, "the scan must look for a real list of identifiers"

    store = node.store()
    blob_hits: dict[str, list[str]] = {}
    n_blobs = 0
    for digest in store.iter_digests():
        n_blobs += 1
        raw = store.get(digest)
        text_ = raw.decode("utf-8", errors="ignore") + raw.decode("latin-1")
        hits = _hits(text_, needles)
        if hits:
            blob_hits[digest[:12]] = hits
    assert n_blobs == s1.stored + s2.stored
    assert blob_hits == {}

    assert _hits(_catalog_text(node), needles) == []
    log_text = "".join(p.read_text(errors="ignore") for p in node.settings.log_dir.glob("*"))
    assert "ingest job" in log_text
    assert _hits(log_text, needles) == []
