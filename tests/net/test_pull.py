"""PACS pull (mida is the SCU) against a real Orthanc on loopback.

One Orthanc serves the module (tests/net/orthanc.py), loaded over REST with
synthetic studies carrying planted PHI:

====  ==========  ========  =========
name  modalities  date      instances
====  ==========  ========  =========
ct1   CT          20240305  3
mix   CT + MR     20240610  2 + 2
mr    MR          20240115  2
old   CT          20230101  2
====  ==========  ========  =========

Every query here names a StudyDate range in 2023-2024, so the shared-corpus
test may add its (older) files to the same Orthanc.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import MRImageStorage, generate_uid
from sqlalchemy import func, select
from typer.testing import CliRunner

from mida.catalog.models import Instance, Job, PullItem, Study
from mida.catalog.service import queue_job
from mida.errors import MidaError
from mida.net import pull as pull_mod
from mida.net.pull import (
    PullSummary,
    TokenBucket,
    add_pacs,
    parse_hours,
    parse_query,
    pull,
    run_pull_job,
    seconds_until_allowed,
)
from mida.net.scu import Remote, associate, storage_scp
from mida.node import Node
from tests.conftest import shared
from tests.factories import PHI, make_dataset
from tests.net.orthanc import OrthancHandle, free_port, start_orthanc, upload

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MOVE_AET = "MIDAMOVE"
IN_RANGE = "StudyDate=20230101-20241231"
STUDIES = {  # name -> (date, [(modality, instances), ...])
    "ct1": ("20240305", [("CT", 3)]),
    "mix": ("20240610", [("CT", 2), ("MR", 2)]),
    "mr": ("20240115", [("MR", 2)]),
    "old": ("20230101", [("CT", 2)]),
}


def _instances(*names: str) -> int:
    return sum(n for name in names for _, n in STUDIES[name][1])


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Orthanc with the synthetic studies; yields it, the move port and the original UIDs."""
    move_port = free_port()
    orthanc = start_orthanc(tmp_path_factory.mktemp("orthanc"), dicom_port=free_port(),
                            http_port=free_port(),
                            modalities={"mida": [MOVE_AET, "127.0.0.1", move_port]})
    uids: dict[str, str] = {}
    try:
        for name, (date, series) in STUDIES.items():
            uids[name] = study_uid = generate_uid()
            for s_no, (modality, count) in enumerate(series, 1):
                series_uid = generate_uid()
                for i in range(count):
                    extra: dict[str, Any] = {}
                    if modality == "MR":
                        extra = {"SOPClassUID": MRImageStorage, "ImageType": None,
                                 "RescaleIntercept": None, "RescaleSlope": None}
                    ds = make_dataset(StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid,
                                      Modality=modality, StudyDate=date, SeriesNumber=s_no,
                                      InstanceNumber=i + 1, **extra)
                    buf = io.BytesIO()
                    ds.save_as(buf, enforce_file_format=True)
                    assert upload(orthanc, buf.getvalue())["Status"] == "Success"
        yield {"orthanc": orthanc, "move_port": move_port, "uids": uids}
    finally:
        orthanc.stop()


def _add(node: Node, orthanc: OrthancHandle, name: str = "pacs", **options: Any) -> None:
    with node.catalog().session() as s:
        add_pacs(s, name, orthanc.aet, "127.0.0.1", orthanc.dicom_port, **options)


def _state(node: Node) -> dict[str, Any]:
    """What a re-run must not change: instance rows, study UIDs, blobs, pull items."""
    with node.catalog().session() as s:
        rows = sorted(s.execute(select(Instance.id, Instance.SOPInstanceUID,
                                       Instance.blob_sha256)).all())
        studies = sorted(s.scalars(select(Study.StudyInstanceUID)))
        items = sorted(s.execute(select(PullItem.study_hash, PullItem.status,
                                        PullItem.instances)).all())
    blobs = sorted(p.name for p in Path(node.settings.storage_url).rglob("*") if p.is_file())
    return {"instances": rows, "studies": studies, "blobs": blobs, "items": items}


def _blob_bytes(node: Node) -> list[bytes]:
    return [p.read_bytes() for p in Path(node.settings.storage_url).rglob("*") if p.is_file()]


# -- pure parts ----------------------------------------------------------------
def test_parse_query_names_bad_keys() -> None:
    assert parse_query("Modality=CT StudyDate=20240101-20241231") == {
        "ModalitiesInStudy": "CT", "StudyDate": "20240101-20241231"}
    assert parse_query('StudyDescription="CT chest*" PatientID=') == {
        "StudyDescription": "CT chest*", "PatientID": ""}
    assert parse_query("") == {}
    with pytest.raises(MidaError, match="'Modalty' is not a DICOM keyword"):
        parse_query("Modalty=CT")
    with pytest.raises(MidaError, match="'SeriesDescription' is not a study-level"):
        parse_query("SeriesDescription=x")
    with pytest.raises(MidaError, match="KEY=VALUE"):
        parse_query("CT")
    with pytest.raises(MidaError, match=r"'StudyDate'.*YYYYMMDD"):
        parse_query("StudyDate=2024-01-01")
    with pytest.raises(MidaError, match="twice"):
        parse_query("Modality=CT ModalitiesInStudy=MR")


def test_hours_window_and_token_bucket() -> None:
    import datetime as dt

    assert parse_hours("20-06") == (1200, 360)
    assert parse_hours("19:30-06:00") == (1170, 360)
    for bad in ("25-06", "8-8", "night"):
        with pytest.raises(MidaError, match="bad hours"):
            parse_hours(bad)
    day = dt.datetime(2024, 5, 1)
    assert seconds_until_allowed(day.replace(hour=23), (1200, 360)) == 0
    assert seconds_until_allowed(day.replace(hour=3), (1200, 360)) == 0
    assert seconds_until_allowed(day.replace(hour=6), (1200, 360)) == 14 * 3600
    assert seconds_until_allowed(day.replace(hour=7), (480, 1020)) == 3600
    assert seconds_until_allowed(day.replace(hour=18), (480, 1020)) == 14 * 3600

    now = [0.0]
    slept: list[float] = []

    def sleep(t: float) -> None:
        slept.append(t)
        now[0] += t

    bucket = TokenBucket(1000.0, clock=lambda: now[0], sleep=sleep)
    assert bucket.consume(1000) == 0  # the burst
    assert bucket.consume(500) == pytest.approx(0.5)
    now[0] += 10  # idle: refills up to the burst only
    assert bucket.consume(1000) == 0
    assert bucket.consume(2000) == pytest.approx(2.0)
    assert sum(slept) == pytest.approx(2.5)


def test_unknown_pacs_unreachable_pacs_and_bad_key_are_clear_errors(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(MidaError, match="no PACS named 'nope'"):
        pull(node, "nope", "", "c")
    port = free_port()  # nothing listens there
    with node.catalog().session() as s:
        add_pacs(s, "gone", "GONE", "127.0.0.1", port)
    with pytest.raises(MidaError) as err:
        pull(node, "gone", "Modality=CT", "c")
    msg = str(err.value)
    assert f"cannot reach PACS gone at 127.0.0.1:{port}: connection refused" in msg
    assert "mida pacs ls" in msg
    with node.catalog().session() as s:
        job = s.scalars(select(Job).order_by(Job.id.desc())).first()
        assert job is not None and job.status == "failed" and "cannot reach" in (job.error or "")

    from mida.cli.main import app

    monkeypatch.setenv("MIDA_HOME", str(node.settings.home))
    runner = CliRunner()
    res = runner.invoke(app, ["pacs", "pull", "gone", "--collection", "c", "--query", "Foo=1"])
    assert res.exit_code == 1 and "'Foo' is not a DICOM keyword" in res.output
    res = runner.invoke(app, ["pacs", "pull", "gone", "--collection", "c"])
    assert res.exit_code == 1 and "connection refused" in res.output
    res = runner.invoke(app, ["pacs", "add", "x", "--aet", "X", "--host", "h", "--port", "1",
                              "--hours", "8-8"])
    assert res.exit_code == 1 and "bad hours" in res.output


# -- against Orthanc -----------------------------------------------------------
def test_cli_pull_brings_matching_studies_deidentified(
    pacs: dict[str, Any], node: Node, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import datetime as dt
    import json

    from mida.cli.main import app

    orthanc: OrthancHandle = pacs["orthanc"]
    monkeypatch.setenv("MIDA_HOME", str(node.settings.home))
    runner = CliRunner()
    hour = dt.datetime.now().hour
    hours = f"{hour}-{(hour + 2) % 24}"  # open now (and for the next hour at least)
    res = runner.invoke(app, ["pacs", "add", "hospital", "--aet", orthanc.aet, "--host",
                              "127.0.0.1", "--port", str(orthanc.dicom_port), "--max-mbps",
                              "1000", "--hours", hours])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["pacs", "ls", "--json"])
    assert res.exit_code == 0, res.output
    [row] = json.loads(res.stdout)
    assert row["name"] == "hospital" and row["method"] == "get" and row["max_mbps"] == 1000

    res = runner.invoke(app, ["pacs", "pull", "hospital", "--query",
                              "Modality=CT StudyDate=20240101-20241231",
                              "--collection", "ct2024", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["status"] == "done"
    assert (summary["studies"], summary["pulled"], summary["failed_studies"]) == (2, 2, 0)
    assert summary["stored"] == summary["instances"] == _instances("ct1", "mix")

    with node.catalog().session() as s:
        uids = list(s.scalars(select(Study.StudyInstanceUID)))
        assert s.scalar(select(func.count()).select_from(Instance)) == _instances("ct1", "mix")
        items = list(s.scalars(select(PullItem)))
        job = s.get(Job, summary["job_id"])
        assert job is not None and job.status == "done"
        assert job.progress_done == job.progress_total == 2
        assert job.counts["stored"] == 7 and job.counts["failed_studies"] == 0
    assert len(uids) == 2 and all(u.startswith("2.25.") for u in uids)
    originals = set(pacs["uids"].values())
    assert not originals & set(uids)
    assert sorted(i.status for i in items) == ["done", "done"]
    assert not {i.study_hash for i in items} & originals  # keyed hashes only
    planted = [v.encode() for v in (*PHI.values(), *originals)]
    for blob in _blob_bytes(node):
        for value in planted:
            assert value not in blob

    # the same, queued (--no-wait) and run by 'mida jobs run' in its own process
    res = runner.invoke(app, ["pacs", "pull", "hospital", "--query", f"Modality=MR {IN_RANGE}",
                              "--collection", "mr", "--no-wait", "--json"])
    assert res.exit_code == 0, res.output
    job_id = json.loads(res.stdout)["job_id"]
    res = runner.invoke(app, ["jobs", "wait", str(job_id), "--json"])
    assert res.exit_code == 0, res.output
    job_view = json.loads(res.stdout)
    assert job_view["counts"]["stored"] == _instances("mr")  # mix's MR series came with CT
    assert job_view["counts"]["duplicates"] == _instances("mix")
    logs = [p.read_bytes() for p in node.settings.log_dir.rglob("*") if p.is_file()]
    assert logs, "the job's process writes a log"
    for text in logs:
        for value in planted:
            assert value not in text

    res = runner.invoke(app, ["pacs", "rm", "hospital"])
    assert res.exit_code == 0, res.output
    assert json.loads(runner.invoke(app, ["pacs", "ls", "--json"]).stdout) == []
    with node.catalog().session() as s:
        assert s.scalar(select(func.count()).select_from(PullItem)) == 0
        assert s.scalar(select(func.count()).select_from(Instance)) == _instances(
            "ct1", "mix", "mr")


def test_interrupt_cancel_resume_then_rerun_changes_nothing(
    pacs: dict[str, Any], node: Node,
) -> None:
    _add(node, pacs["orthanc"])
    query = f"Modality=CT {IN_RANGE}"  # ct1, mix, old
    expected = _instances("ct1", "mix", "old")

    def cancel_after_first(p: PullSummary) -> None:
        if p.studies_done == 1:
            with node.catalog().session() as s:
                job = s.get(Job, p.job_id)
                assert job is not None
                job.cancel_requested = True

    first = pull(node, "pacs", query, "c", on_progress=cancel_after_first)
    assert first.status == "cancelled" and (first.studies, first.pulled) == (3, 1)
    with node.catalog().session() as s:
        assert s.get(Job, first.job_id).status == "cancelled"  # type: ignore[union-attr]
    partial = _state(node)
    assert [i[1] for i in partial["items"]] == ["done"]
    assert len(partial["studies"]) == 1
    assert len(partial["instances"]) == partial["items"][0][2] == first.stored

    def interrupt_after_next(p: PullSummary) -> None:
        if p.pulled == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pull(node, "pacs", query, "c", on_progress=interrupt_after_next)
    with node.catalog().session() as s:
        job = s.scalars(select(Job).order_by(Job.id.desc())).first()
        assert job is not None and job.status == "interrupted"
        assert job.counts["skipped"] == 1
    assert [i[1] for i in _state(node)["items"]].count("done") == 2

    resumed = pull(node, "pacs", query, "c")
    assert resumed.status == "done"
    assert (resumed.skipped, resumed.pulled, resumed.failed_studies) == (2, 1, 0)
    done = _state(node)
    assert len(done["studies"]) == 3 and len(done["instances"]) == expected
    assert [i[1] for i in done["items"]] == ["done"] * 3

    again = pull(node, "pacs", query, "c")
    assert (again.skipped, again.pulled, again.instances, again.stored) == (3, 0, 0, 0)
    assert _state(node) == done

    refreshed = pull(node, "pacs", query, "c", refresh=True)
    assert (refreshed.pulled, refreshed.instances, refreshed.stored) == (3, expected, 0)
    assert refreshed.duplicates == expected
    assert _state(node) == done


def test_c_move_as_a_queued_job(pacs: dict[str, Any], node: Node) -> None:
    _add(node, pacs["orthanc"], method="move", move_dest_aet=MOVE_AET,
         move_port=pacs["move_port"])
    params = {"pacs": "pacs", "query": f"Modality=MR {IN_RANGE}", "collection": "mr",
              "method": None, "owner": "alice"}
    with node.catalog().session() as s:
        job_id = queue_job(s, "pull", params, owner="alice").id
    summary = run_pull_job(node, job_id, params)
    assert summary.method == "move" and summary.status == "done"
    assert (summary.studies, summary.pulled, summary.failed_studies) == (2, 2, 0)
    assert summary.stored == _instances("mix", "mr")
    with node.catalog().session() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.status == "done" and job.owner == "alice"
        assert s.scalar(select(func.count()).select_from(Instance)) == _instances("mix", "mr")
    again = run_pull_job(node, job_id, params)  # the same query: nothing to do
    assert (again.skipped, again.stored) == (2, 0)


def test_failed_study_is_recorded_and_the_pull_goes_on(
    pacs: dict[str, Any], node: Node, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mida.net.scu import RetrieveResult

    _add(node, pacs["orthanc"])
    real_get = pull_mod.Retrieval.get
    calls = {"n": 0}

    def flaky(self: Any, *args: Any, **kwargs: Any) -> RetrieveResult:
        calls["n"] += 1
        if calls["n"] == 1:
            return RetrieveResult(status=0xA702, error="out of resources (simulated)")
        return real_get(self, *args, **kwargs)

    monkeypatch.setattr(pull_mod.Retrieval, "get", flaky)
    query = f"Modality=MR {IN_RANGE}"
    first = pull(node, "pacs", query, "c")
    assert first.status == "done" and (first.pulled, first.failed_studies) == (1, 1)
    assert sorted(i[1] for i in _state(node)["items"]) == ["done", "failed"]
    with node.catalog().session() as s:
        job = s.get(Job, first.job_id)
        assert job is not None and job.error == "1 of 2 studies failed"
    second = pull(node, "pacs", query, "c")  # the failed one is tried again
    assert (second.skipped, second.pulled, second.failed_studies) == (1, 1, 0)
    assert [i[1] for i in _state(node)["items"]] == ["done", "done"]


def test_sockets_have_tcp_nodelay(pacs: dict[str, Any]) -> None:
    from pynetdicom import AE
    from pynetdicom.presentation import build_context
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        CTImageStorage,
        Verification,
    )

    orthanc: OrthancHandle = pacs["orthanc"]
    assoc = associate(Remote("pacs", orthanc.aet, "127.0.0.1", orthanc.dicom_port),
                      [build_context(Verification)])
    try:
        sock = assoc.dul.socket.socket  # type: ignore[union-attr]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        assoc.release()
    with storage_scp("SCP", lambda event: 0) as scp:
        ae = AE("PEER")
        ae.add_requested_context(CTImageStorage)
        peer = ae.associate("127.0.0.1", scp.port, ae_title="SCP")
        try:
            assert peer.is_established
            [accepted] = scp.server.active_associations
            sock = accepted.dul.socket.socket
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            peer.release()
    with storage_scp("SCP", lambda event: 0, calling_aets=["ORTHANC"]) as scp, \
            pytest.raises(MidaError, match="rejected the association"):
        associate(Remote("here", "SCP", "127.0.0.1", scp.port, calling_aet="STRANGER"),
                  [build_context(CTImageStorage)])


SHARED_FILES = [
    ("pynetdicom_dicom_files", "CTImageStorage.dcm"),  # explicit VR little endian
    ("pydicom_data", "MR2_J2KR.dcm"),  # JPEG 2000 lossless
    ("pydicom_data", "emri_small_jpeg_ls_lossless.dcm"),  # JPEG-LS, enhanced MR, 10 frames
    ("pydicom_data", "liver_j2k.dcm"),  # segmentation, JPEG 2000 lossless, 3 frames
]


@pytest.mark.shared_data
def test_pull_real_files_in_their_transfer_syntaxes(pacs: dict[str, Any], node: Node) -> None:
    files = [shared("dicom", folder, name) for folder, name in SHARED_FILES]
    orthanc: OrthancHandle = pacs["orthanc"]
    syntaxes: set[str] = set()
    for f in files:
        upload(orthanc, f.read_bytes())
        syntaxes.add(str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID))
    _add(node, orthanc)
    summary = pull(node, "pacs", "StudyDate=-20221231", "shared")
    assert summary.status == "done" and summary.failed_studies == 0
    assert summary.instances == len(files)
    assert summary.stored == len(files)
    with node.catalog().session() as s:
        stored = set(s.scalars(select(Instance.TransferSyntaxUID)))
        assert all(u.startswith("2.25.") for u in s.scalars(select(Study.StudyInstanceUID)))
    assert stored == syntaxes  # as stored on the PACS: never transcoded on the way
