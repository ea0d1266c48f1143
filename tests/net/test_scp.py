"""The DICOM node (DIMSE SCP), driven by DCMTK's own tools as real peers.

echoscu, storescu, findscu, movescu and getscu call the node over loopback
(with TCP_NODELAY=1, as DCMTK recommends); storescp stands in for a peer that
receives C-MOVEs. Without DCMTK these tests skip, except under CI
(MIDA_TEST_REQUIRE_SERVICES=1) where a missing tool fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import func, select
from typer.testing import CliRunner

from mida.catalog.models import Instance, Job, Provenance, QuarantineEntry, Series, Study
from mida.catalog.service import get_or_create_collection
from mida.config import Settings
from mida.net import qr
from mida.net.scp import DicomNode, start_dicom_node
from mida.net.tcp import NODELAY_HANDLERS
from mida.node import Node
from mida.sharing import AuditLog
from mida.sharing.identity import add_peer
from tests.conftest import REQUIRE_SERVICES, shared
from tests.factories import PHI, make_dataset, write

TOOLS = ("echoscu", "storescu", "findscu", "movescu", "getscu", "storescp")
ENV = {**os.environ, "TCP_NODELAY": "1"}
PHI_BYTES = [v.encode() for v in PHI.values()] + [b"Lin^Wen", b"A123456789"]


def _require_dcmtk() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        if REQUIRE_SERVICES:
            pytest.fail(f"DCMTK tools {missing} are missing but CI requires them "
                        "(apt-get install dcmtk)")
        pytest.skip(f"DCMTK tools {missing} are missing: apt-get install dcmtk")


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # the timeout only keeps a hung tool from hanging the suite; nothing asserts on time
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=120, check=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The node's settings: two called AE titles routed to two collections."""
    return Settings(home=tmp_path / "node", workers=1, audit_fsync=False,
                    dicom_ae_collections={"MIDA_A": "alpha", "MIDA_B": "beta"})


@pytest.fixture
def dicom(node: Node) -> Iterator[DicomNode]:
    _require_dcmtk()
    with node.catalog().session() as s:
        for name in ("alpha", "beta"):
            get_or_create_collection(s, name, node.institution_id(), "default")
        add_peer(s, "modality", "MODALITY", "127.0.0.1", 104, scope="write")
        add_peer(s, "reader-b", "READER_B", "127.0.0.1", 104, scope="read", collection="beta")
        add_peer(s, "viewer", "VIEWER", "127.0.0.1", 104, scope="read")
    d = start_dicom_node(node, port=0, host="127.0.0.1")
    try:
        yield d
    finally:
        d.stop()


def _addr(d: DicomNode) -> list[str]:
    return ["127.0.0.1", str(d.port)]


def _synthetic(folder: Path, studies: int = 2, per_study: int = 3) -> Path:
    """Small CT studies with the planted PHI of tests.factories."""
    for i in range(studies):
        st, se = generate_uid(), generate_uid()
        for j in range(per_study):
            write(folder / f"s{i}_{j}.dcm", make_dataset(
                StudyInstanceUID=st, SeriesInstanceUID=se, InstanceNumber=j + 1,
                SeriesNumber=i + 1, StudyDescription=f"CT chest {i}"))
    return folder


def _store(d: DicomNode, folder: Path, aet: str = "MODALITY", aec: str = "MIDA_A",
           *extra: str) -> subprocess.CompletedProcess[str]:
    res = _run("storescu", "-v", "-R", *extra, "-aet", aet, "-aec", aec, "+sd", *_addr(d), folder)
    assert d.wait_idle()  # the association has ended and its rows are committed
    return res


def _find(d: DicomNode, out: Path, *keys: str, aet: str = "VIEWER",
          model: str = "-S") -> list[Any]:
    """findscu's answers, read back from the files it extracts (-X)."""
    out.mkdir(parents=True, exist_ok=True)
    args = ["findscu", model, "-aet", aet, "-aec", "MIDA", "-X", "-od", out]
    for k in keys:
        args += ["-k", k]
    res = _run(*args, *_addr(d))
    assert res.returncode == 0, res.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def _audit(node: Node, op: str) -> list[dict[str, Any]]:
    return [e for e in AuditLog(node.settings.audit_file).entries()
            if e["action"] == "dimse" and e["detail"]["op"] == op]


def _no_phi(data: bytes) -> None:
    for value in PHI_BYTES:
        assert value not in data


def _study_uids(node: Node, collection_id: int | None = None) -> list[str]:
    with node.catalog().session() as s:
        q = select(Study.StudyInstanceUID).order_by(Study.StudyInstanceUID)
        if collection_id is not None:
            q = q.where(Study.collection_id == collection_id)
        return list(s.scalars(q))


# -- association -----------------------------------------------------------------
def test_echo_from_a_known_peer_and_unknown_ae_rejected_and_audited(
        dicom: DicomNode, node: Node) -> None:
    ok = _run("echoscu", "-aet", "VIEWER", "-aec", "MIDA", *_addr(dicom))
    assert ok.returncode == 0, ok.stderr
    bad = _run("echoscu", "-aet", "STRANGER", "-aec", "MIDA", *_addr(dicom))
    assert bad.returncode != 0
    assert "Association Rejected" in bad.stderr
    assert [e["detail"]["result"] for e in _audit(node, "C-ECHO")] == ["allowed"]
    rejected = _audit(node, "A-ASSOCIATE")
    assert len(rejected) == 1
    assert rejected[0]["actor"] == "unknown-ae:STRANGER"
    assert rejected[0]["detail"]["result"] == "denied"
    # a stranger cannot store either, and nothing arrives
    tmp = _synthetic(node.settings.home.parent / "stranger", 1, 1)
    assert _store(dicom, tmp, aet="STRANGER").returncode != 0
    assert _study_uids(node) == []


# -- C-STORE, C-FIND, C-GET ------------------------------------------------------
def test_store_find_and_get_give_only_deidentified_data(
        dicom: DicomNode, node: Node, tmp_path: Path) -> None:
    src = _synthetic(tmp_path / "in")
    res = _store(dicom, src)
    assert res.returncode == 0, res.stderr
    with node.catalog().session() as s:
        assert s.scalar(select(func.count(Instance.id))) == 6
        jobs = list(s.scalars(select(Job).where(Job.kind == "dimse")))
        assert len(jobs) == 1 and jobs[0].status == "done"
        assert jobs[0].counts["stored"] == 6 and jobs[0].owner == "peer:modality"
        assert set(s.scalars(select(Provenance.job_id))) == {jobs[0].id}
        assert set(s.scalars(select(Provenance.source_kind))) == {"dimse"}
    stored = _audit(node, "C-STORE")
    assert len(stored) == 6 and {e["detail"]["result"] for e in stored} == {"allowed"}
    assert all(e["detail"]["object"].startswith("2.25.") for e in stored)
    # sending the same files again stores nothing new and succeeds
    assert _store(dicom, src).returncode == 0
    with node.catalog().session() as s:
        assert s.scalar(select(func.count(Instance.id))) == 6

    studies = _study_uids(node)
    answers = _find(dicom, tmp_path / "f1", "QueryRetrieveLevel=STUDY", "StudyInstanceUID",
                    "PatientName", "PatientID", "PatientBirthDate", "StudyDate",
                    "StudyDescription", "NumberOfStudyRelatedInstances")
    assert sorted(a.StudyInstanceUID for a in answers) == studies
    for a in answers:
        assert a.QueryRetrieveLevel == "STUDY"
        assert a.NumberOfStudyRelatedInstances == 3
        assert str(a.PatientID) != PHI["pid"] and str(a.PatientName) != PHI["name"]
        assert a.StudyDescription.startswith("CT chest")
        assert "SOPInstanceUID" not in a and "Modality" not in a  # only the keys asked for
    for p in (tmp_path / "f1").glob("*.dcm"):
        _no_phi(p.read_bytes())
    # the original identity finds nothing: the catalog holds only pseudonyms
    assert _find(dicom, tmp_path / "f2", "QueryRetrieveLevel=STUDY",
                 f"PatientName={PHI['name']}", "StudyInstanceUID") == []
    assert _find(dicom, tmp_path / "f3", "QueryRetrieveLevel=STUDY",
                 f"PatientID={PHI['pid']}", "StudyInstanceUID") == []

    series = _find(dicom, tmp_path / "f4", "QueryRetrieveLevel=SERIES",
                   f"StudyInstanceUID={studies[0]}", "SeriesInstanceUID", "Modality",
                   "NumberOfSeriesRelatedInstances")
    assert len(series) == 1
    assert series[0].Modality == "CT" and series[0].NumberOfSeriesRelatedInstances == 3
    images = _find(dicom, tmp_path / "f5", "QueryRetrieveLevel=IMAGE",
                   f"StudyInstanceUID={studies[0]}",
                   f"SeriesInstanceUID={series[0].SeriesInstanceUID}", "SOPInstanceUID",
                   "InstanceNumber")
    assert sorted(int(i.InstanceNumber) for i in images) == [1, 2, 3]
    patients = _find(dicom, tmp_path / "f6", "QueryRetrieveLevel=PATIENT", "PatientID",
                     "PatientName", "NumberOfPatientRelatedStudies", model="-P")
    assert len(patients) == 1 and patients[0].NumberOfPatientRelatedStudies == 2
    assert {e["detail"]["object"] for e in _audit(node, "C-FIND")} == {
        "STUDY", "SERIES", "IMAGE", "PATIENT"}
    _no_phi(node.settings.audit_file.read_bytes())  # queried names and IDs are not logged

    got = tmp_path / "get"
    got.mkdir()
    res = _run("getscu", "-S", "-aet", "VIEWER", "-aec", "MIDA", "-od", got,
               "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={studies[0]}",
               *_addr(dicom))
    assert res.returncode == 0, res.stderr
    files = sorted(got.iterdir())
    assert len(files) == 3
    with node.catalog().session() as s:
        expected = set(s.scalars(select(Instance.SOPInstanceUID).join(Series).join(Study)
                                 .where(Study.StudyInstanceUID == studies[0])))
    assert {str(dcmread(f).SOPInstanceUID) for f in files} == expected
    for f in files:
        _no_phi(f.read_bytes())
    gets = _audit(node, "C-GET")
    assert gets[-1]["detail"]["result"] == "allowed" and gets[-1]["detail"]["instances"] == 3


def test_move_sends_to_a_configured_peer_only(dicom: DicomNode, node: Node,
                                              tmp_path: Path) -> None:
    assert _store(dicom, _synthetic(tmp_path / "in", 1, 2)).returncode == 0
    (study,) = _study_uids(node)
    port = _free_port()
    with node.catalog().session() as s:
        add_peer(s, "archive", "ARCHIVE", "127.0.0.1", port, scope="read")
    out = tmp_path / "moved"
    out.mkdir()
    scp = subprocess.Popen(["storescp", "-aet", "ARCHIVE", "-od", str(out), str(port)], env=ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):  # wait until storescp answers (no timing is asserted)
            if _run("echoscu", "-aec", "ARCHIVE", "127.0.0.1", str(port)).returncode == 0:
                break
            time.sleep(0.05)
        moved = _run("movescu", "-S", "-aet", "VIEWER", "-aec", "MIDA", "-aem", "ARCHIVE",
                     "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                     *_addr(dicom))
        assert moved.returncode == 0, moved.stderr
        unknown = _run("movescu", "-v", "-S", "-aet", "VIEWER", "-aec", "MIDA", "-aem", "ELSEWHERE",
                       "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                       *_addr(dicom))
        missing = _run("movescu", "-v", "-S", "-aet", "VIEWER", "-aec", "MIDA", "-aem",
                       "ARCHIVE", "-k", "QueryRetrieveLevel=STUDY",
                       "-k", f"StudyInstanceUID={generate_uid()}", *_addr(dicom))
    finally:
        scp.terminate()
        scp.wait()
    files = sorted(out.iterdir())
    assert len(files) == 2
    for f in files:
        _no_phi(f.read_bytes())
        assert str(dcmread(f).StudyInstanceUID) == study
    for res in (unknown, missing):
        assert "Final Move Response (Refused: MoveDestinationUnknown)" in res.stderr
    results = [e["detail"]["result"] for e in _audit(node, "C-MOVE")]
    assert results == ["allowed", "failed", "failed"]


# -- authorisation ---------------------------------------------------------------
def test_read_only_peer_cannot_store_and_sees_only_its_collection(
        dicom: DicomNode, node: Node, tmp_path: Path) -> None:
    refused = _store(dicom, _synthetic(tmp_path / "ro", 1, 2), "VIEWER", "MIDA_B")
    assert "Status: 0x124" in refused.stderr, refused.stderr  # Refused: Not Authorized
    assert _study_uids(node) == []
    denied = _audit(node, "C-STORE")
    assert denied and {e["detail"]["result"] for e in denied} == {"denied"}

    assert _store(dicom, _synthetic(tmp_path / "a", 1, 1), "MODALITY", "MIDA_A").returncode == 0
    assert _store(dicom, _synthetic(tmp_path / "b", 1, 1), "MODALITY", "MIDA_B").returncode == 0
    with node.catalog().session() as s:
        beta = get_or_create_collection(s, "beta", node.institution_id(), "default").id
    (in_beta,) = _study_uids(node, beta)
    (in_alpha,) = [u for u in _study_uids(node) if u != in_beta]

    seen = _find(dicom, tmp_path / "f", "QueryRetrieveLevel=STUDY", "StudyInstanceUID",
                 aet="READER_B")
    assert [a.StudyInstanceUID for a in seen] == [in_beta]
    assert len(_find(dicom, tmp_path / "g", "QueryRetrieveLevel=STUDY", "StudyInstanceUID")) == 2

    got = tmp_path / "got"
    got.mkdir()
    other = _run("getscu", "-v", "-S", "-aet", "READER_B", "-aec", "MIDA", "-od", got,
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={in_alpha}",
                 *_addr(dicom))
    absent = _run("getscu", "-v", "-S", "-aet", "READER_B", "-aec", "MIDA", "-od", got,
                  "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={generate_uid()}",
                  *_addr(dicom))
    assert list(got.iterdir()) == []
    # denied and absent answer alike: the peer cannot tell whether the study exists
    assert "Failed" in other.stderr
    assert other.stderr.split("Final status report")[-1] == absent.stderr.split(
        "Final status report")[-1]
    assert [e["detail"]["result"] for e in _audit(node, "C-GET")] == ["denied", "failed"]


# -- quarantine --------------------------------------------------------------------
def test_a_quarantined_instance_fails_with_its_reason_and_is_kept(
        dicom: DicomNode, node: Node, tmp_path: Path) -> None:
    bad = write(tmp_path / "bad" / "no_study_uid.dcm", make_dataset(StudyInstanceUID=None))
    res = _run("storescu", "-v", "-aet", "MODALITY", "-aec", "MIDA", *_addr(dicom), bad)
    assert dicom.wait_idle()
    assert "Store Response (Error" in res.stderr or "Failed" in res.stderr, res.stderr
    with node.catalog().session() as s:
        entries = list(s.scalars(select(QuarantineEntry)))
        job = s.scalar(select(Job).where(Job.kind == "dimse"))
    assert [e.reason for e in entries] == ["missing_uid"]
    assert job is not None and entries[0].job_id == job.id
    assert entries[0].source_kind == "dimse"
    assert node.settings.quarantine_dir.exists()
    (entry,) = _audit(node, "C-STORE")
    assert entry["detail"]["result"] == "failed" and entry["detail"]["reason"] == "missing_uid"


# -- identifiers (no network) --------------------------------------------------------
def test_find_request_maps_keys_and_ignores_unmatchable_ones() -> None:
    ds = make_dataset()
    ident = type(ds)()
    ident.QueryRetrieveLevel = "SERIES"
    ident.StudyInstanceUID = ["1.2.3", "1.2.4"]
    ident.Modality = "CT"
    ident.SeriesDescription = ""
    ident.ImageType = ["ORIGINAL"]  # not matchable in the catalog: a return key
    req = qr.find_request(ident)
    assert req.level == "SERIES"
    assert req.match == {"StudyInstanceUID": "1.2.3\\1.2.4", "Modality": "CT",
                         "SeriesDescription": "", "ImageType": ""}
    assert req.ignored == ["ImageType"]


# -- shared corpus: many SOP classes and transfer syntaxes ----------------------------
_SYNTAX_OPTIONS = {  # transfer syntax -> the storescu option that proposes it
    "1.2.840.10008.1.2": "-x=", "1.2.840.10008.1.2.1": "-x=", "1.2.840.10008.1.2.2": "-x=",
    "1.2.840.10008.1.2.4.90": "-xv", "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.4.70": "-xs", "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.5": "-xr",
}
# no ultrasound, secondary capture or DX: their OCR costs seconds a frame
_SKIP_MODALITIES = {"US", "OT", "DX", "XA", "SC", None}
_LABEL_MAP_SEG = "1.2.840.10008.5.1.4.1.1.66.7"  # newer than DCMTK 3.6.7 knows


def test_shared_corpus_every_transfer_syntax_is_stored_or_quarantined(
        dicom: DicomNode, node: Node, tmp_path: Path) -> None:
    groups: dict[str, list[Path]] = {}
    for folder in ("pydicom_data", "highdicom_test_files", "pynetdicom_dicom_files"):
        for p in sorted(shared("dicom", folder).glob("*.dcm")):
            try:
                ds = dcmread(p, stop_before_pixels=True)
                ts = str(ds.file_meta.TransferSyntaxUID)
            except Exception:
                continue
            if ds.get("Modality") in _SKIP_MODALITIES or ts not in _SYNTAX_OPTIONS:
                continue
            if str(ds.get("SOPClassUID", "")) in ("", _LABEL_MAP_SEG):
                continue  # storescu refuses to send these
            if p.stat().st_size > 2_000_000 or "bad" in p.name or "too_short" in p.name:
                continue
            groups.setdefault(_SYNTAX_OPTIONS[ts], []).append(p)
    sent = 0
    for option, paths in sorted(groups.items()):
        folder = tmp_path / option.strip("-=") / "x"
        folder.mkdir(parents=True)
        for i, p in enumerate(paths):
            shutil.copy(p, folder / f"{i:03d}_{p.name}")
        # -nh: go on after a failed (quarantined) store; failures are counted below
        res = _store(dicom, folder, "MODALITY", "MIDA_A", option, "-nh")
        sent += len(paths) - res.stderr.count("ignoring file")  # storescu cannot read them
    assert sent >= 30 and len(groups) >= 5
    with node.catalog().session() as s:
        jobs = list(s.scalars(select(Job).where(Job.kind == "dimse")))
        syntaxes = set(s.scalars(select(Instance.TransferSyntaxUID)))
        stored = s.scalar(select(func.count(Instance.id)))
        quarantined = s.scalar(select(func.count(QuarantineEntry.id)))
    received = sum(j.counts.get("inputs", 0) for j in jobs)
    assert received == sent  # every file reached the pipeline, none was refused at the door
    assert sum(j.counts.get("quarantined", 0) for j in jobs) == quarantined
    assert stored >= 20
    assert {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.70"} <= syntaxes

    # C-GET of a JPEG 2000 instance: as stored with +xv, decompressed for a peer that
    # accepts only uncompressed syntaxes
    with node.catalog().session() as s:
        j2k = s.scalar(select(Instance.SOPInstanceUID)
                       .where(Instance.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"))
        study = s.scalar(select(Study.StudyInstanceUID).join(Series).join(Instance)
                         .where(Instance.SOPInstanceUID == j2k))
    syntax_of = {}
    for flag in ("+xv", "+x="):
        out = tmp_path / f"get{flag.strip('+=')}"
        out.mkdir()
        res = _run("getscu", flag, "-aet", "VIEWER", "-aec", "MIDA", "-od", out,
                   "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={study}",
                   "-k", f"SOPInstanceUID={j2k}", *_addr(dicom))
        assert res.returncode == 0, res.stderr
        (f,) = out.iterdir()
        syntax_of[flag] = str(dcmread(f).file_meta.TransferSyntaxUID)
    assert syntax_of["+xv"] == "1.2.840.10008.1.2.4.90"
    assert syntax_of["+x="] in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


# -- sockets and the command line ------------------------------------------------------
def test_tcp_nodelay_is_set_on_accepted_and_requested_sockets(dicom: DicomNode) -> None:
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", dicom.port, ae_title="MIDA",
                         evt_handlers=NODELAY_HANDLERS)
    try:
        assert assoc.is_established
        assert assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert dicom._server is not None
        (accepted,) = dicom._server.active_associations
        assert accepted.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()


def test_mida_scp_serves_until_interrupted(dicom: DicomNode, node: Node) -> None:
    port = _free_port()
    env = {**ENV, "MIDA_HOME": str(node.settings.home), "MIDA_AUDIT_FSYNC": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "mida", "scp", "--port", str(port),
                             "--aet", "MIDA2"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(600):  # wait until it answers (no timing is asserted)
            if proc.poll() is not None:
                break
            if _run("echoscu", "-aet", "VIEWER", "-aec", "MIDA2", "127.0.0.1",
                    str(port)).returncode == 0:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[0]
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "listening on 127.0.0.1:" in out and "stopped" in out


# -- CLI -----------------------------------------------------------------------------
def test_aes_commands_add_list_remove_and_audit(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from mida.cli.main import app

    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "cli"))
    monkeypatch.setenv("MIDA_AUDIT_FSYNC", "false")
    runner = CliRunner()

    def ok(*args: str) -> str:
        res = runner.invoke(app, list(args))
        assert res.exit_code == 0, res.output
        return res.stdout

    ok("init", "--institution", "T", "--name", "Test")
    ok("aes", "add", "ct3", "--aet", "CT3", "--host", "10.0.0.3", "--port", "104",
       "--scope", "write")
    rows = json.loads(ok("aes", "ls", "--json"))
    assert [(r["name"], r["ae_title"], r["scope"], r["collection"]) for r in rows] == [
        ("ct3", "CT3", "write", "*")]
    bad = runner.invoke(app, ["aes", "add", "x", "--aet", "BAD\\AET", "--host", "h",
                              "--port", "104"])
    assert bad.exit_code == 1 and "AE title" in bad.output
    ok("aes", "rm", "ct3")
    assert json.loads(ok("aes", "ls", "--json")) == []
    actions = [e["action"] for e in AuditLog(tmp_path / "cli" / "audit" / "audit.jsonl").entries()]
    assert actions == ["aes.add", "aes.rm"]
