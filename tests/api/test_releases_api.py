"""The release routes: what a release grant opens, and the zip a download streams."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mida.sharing import AuditLog
from mida.sharing.identity import DENIED
from tests.api.enforcement_world import World, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield build_world(tmp_path_factory.mktemp("releases"))


def _as(world: World, role: str) -> TestClient:
    return TestClient(world.app, headers={"Authorization": f"Bearer {world.tokens[role]}"})


def test_list_shows_only_granted_releases_with_the_download_right(world: World) -> None:
    view = _as(world, "researcher+ra-view").get("/api/releases").json()
    assert [(x["release"], x["download"]) for x in view["data"]] == [("ra@1.0.0", False)]
    full = _as(world, "researcher+ra").get("/api/releases").json()
    assert [(x["release"], x["download"]) for x in full["data"]] == [("ra@1.0.0", True)]
    admin = _as(world, "admin").get("/api/releases").json()
    assert [x["release"] for x in admin["data"]] == ["ra@1.0.0", "rb@1.0.0"]
    assert _as(world, "researcher+A").get("/api/releases").json() == {"count": 0, "data": []}


def test_summary_and_files_match_the_stored_manifest(world: World) -> None:
    c = _as(world, "researcher+ra-view")
    summary = c.get("/api/releases/ra/1.0.0").json()
    assert summary["expression"] == "collection = 'A'" and "files" not in summary
    assert summary["counts"]["patients"] == 1 and summary["split"]["seed"] == 0
    raw = c.get("/api/releases/ra/1.0.0/manifest")
    assert raw.headers["content-type"] == "application/json"
    assert hashlib.sha256(raw.content).hexdigest() == summary["manifest_sha256"]
    manifest = json.loads(raw.content)
    files = c.get("/api/releases/ra/1.0.0", params={"files": "true"}).json()["files"]
    assert files == [{"SeriesInstanceUID": x["SeriesInstanceUID"],
                      "SOPInstanceUID": i["SOPInstanceUID"], "sha256": i["sha256"],
                      "size": i["size"]} for x in manifest["series"] for i in x["instances"]]
    assert len(files) == 1


def test_card_is_the_release_datasheet_in_markdown(world: World) -> None:
    r = _as(world, "researcher+ra-view").get("/api/releases/ra/1.0.0/card")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
    assert "ra" in r.text and r.text.lstrip().startswith("#")


def test_download_streams_the_same_zip_twice_audits_and_leaves_nothing(world: World) -> None:
    c = _as(world, "researcher+ra")
    first = c.get("/api/releases/ra/1.0.0/download", params={"format": "dicom"})
    second = c.get("/api/releases/ra/1.0.0/download", params={"format": "dicom"})
    assert first.status_code == 200 and first.headers["content-type"] == "application/zip"
    assert 'filename="ra-1.0.0-dicom.zip"' in first.headers["content-disposition"]
    assert first.content == second.content  # deterministic: same release, same bytes
    with zipfile.ZipFile(io.BytesIO(first.content)) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        report = json.loads(zf.read("ra-1.0.0/mida-export.json"))
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
    assert names == sorted(names) and all(n.startswith("ra-1.0.0/") for n in names)
    dicom = [n for n in names if n.endswith(".dcm")]
    assert len(dicom) == 1 and report["series"] == 1
    assert sorted(f["path"] for f in report["files"]) == sorted(
        n.removeprefix("ra-1.0.0/") for n in names if not n.endswith("mida-export.json"))
    assert list((world.node.settings.home / "tmp").iterdir()) == []
    entry = [e for e in AuditLog(world.node.settings.audit_file).entries()
             if e["action"] == "release.download"][-1]
    assert entry["actor"] == "user:researcher-ra"
    assert entry["detail"]["release"] == "ra@1.0.0" and entry["detail"]["formats"] == ["dicom"]
    assert entry["detail"]["user"] == "researcher-ra"
    assert entry["detail"]["grant"] == world.grants["researcher-ra"][0]


def test_a_bad_format_is_400_only_for_who_may_download(world: World) -> None:
    bad = {"format": "tiff"}
    r = _as(world, "researcher+ra").get("/api/releases/ra/1.0.0/download", params=bad)
    assert r.status_code == 400 and "unknown export format" in r.json()["detail"]
    r = _as(world, "researcher+ra-view").get("/api/releases/ra/1.0.0/download", params=bad)
    assert r.status_code == 403 and r.json() == {"detail": DENIED}


def test_view_only_and_collection_grants_cannot_download(world: World) -> None:
    for role in ("researcher+ra-view", "researcher+A", "provider-admin"):
        r = _as(world, role).get("/api/releases/ra/1.0.0/download")
        assert r.status_code == 403 and r.json() == {"detail": DENIED}, role


def test_admins_are_told_what_is_missing(world: World) -> None:
    r = _as(world, "admin").get("/api/releases/ra/9.9.9")
    assert r.status_code == 404 and "has no version 9.9.9" in r.json()["detail"]


def test_zip_stream_orders_entries_and_keeps_big_files_streamed(tmp_path: Path) -> None:
    from mida.api.releases import zip_stream

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.nii.gz").write_bytes(b"\x1f\x8b" + bytes(3 << 20))
    (tmp_path / "a.json").write_text("{}")
    chunks = list(zip_stream(tmp_path, "p"))
    assert max(len(c) for c in chunks) < 2 << 20  # a 3 MiB file never sits whole in memory
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as zf:
        assert zf.namelist() == ["p/a.json", "p/b/x.nii.gz"]
        assert zf.getinfo("p/b/x.nii.gz").compress_type == zipfile.ZIP_STORED
        assert zf.getinfo("p/a.json").compress_type == zipfile.ZIP_DEFLATED
        assert len(zf.read("p/b/x.nii.gz")) == (3 << 20) + 2
