"""The web app: health, the first page, JSON listings; and the page in a real browser."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mida.api import create_app
from mida.ingest import ingest_paths
from mida.node import Node
from tests.factories import bearer, make_token, write


@pytest.fixture
def client(node: Node, tmp_path: Path) -> TestClient:
    for i in range(3):
        write(tmp_path / "in" / f"{i}.dcm")
    ingest_paths(node, [tmp_path / "in"], "liver", workers=1)
    return TestClient(create_app(node), headers=bearer(make_token(node)))


def test_health(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["database"] == "ok"


def test_home_without_a_token_asks_to_sign_in(node: Node) -> None:
    r = TestClient(create_app(node)).get("/")
    assert r.status_code == 401 and "mida tokens create" in r.text


def test_login_sets_a_cookie_for_the_pages(node: Node) -> None:
    c = TestClient(create_app(node))
    assert c.get("/login", params={"token": "mida_" + "x" * 43}).status_code == 401
    r = c.get("/login", params={"token": make_token(node)})
    assert r.status_code == 200 and 'id="user">alice<' in r.text


def test_home_lists_collections_studies_and_counts(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "liver" in r.text and 'id="n-instances">3<' in r.text
    assert "Lin" not in r.text


def test_json_listings(client: TestClient) -> None:
    cols = client.get("/api/collections").json()
    assert cols["count"] == 1 and cols["data"][0]["instances"] == 3
    studies = client.get("/api/studies", params={"collection": "liver"}).json()
    assert studies["count"] == 3
    uid = studies["data"][0]["StudyInstanceUID"]
    assert client.get(f"/api/uids/{uid}").json()["level"] == "study"
    assert client.get("/api/uids/1.2.3").status_code == 404
    assert client.get("/api/frames").status_code == 404
    assert client.get("/api/studies", params={"study_date": "bad"}).status_code == 400


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_home_page_in_chromium(node: Node, tmp_path: Path) -> None:
    """The first page, rendered by a real browser (Debian chromium) over loopback."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    import uvicorn

    write(tmp_path / "in" / "0.dcm")
    ingest_paths(node, [tmp_path / "in"], "liver", workers=1)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(node), host="127.0.0.1", port=port,
                                           log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        dom = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
             f"http://127.0.0.1:{port}/login?token={make_token(node)}"],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout
    finally:
        server.should_exit = True
        t.join(timeout=10)
    assert 'id="n-instances">1<' in dom
    assert "liver" in dom
    assert 'id="nav-annotate" href="/annotate"' in dom


def test_headers_a_cross_origin_viewer_needs(client: TestClient) -> None:
    """OHIF runs on another origin, cross-origin isolated: CORS and CORP must allow it."""
    pre = client.options("/dicomweb/studies", headers={
        "Origin": "https://viewer.example.org", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] in ("*", "https://viewer.example.org")
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    r = client.get("/dicomweb/studies", headers={"Origin": "https://viewer.example.org"})
    assert r.status_code == 200
    assert r.headers["cross-origin-resource-policy"] == "cross-origin"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "access-control-allow-origin" in r.headers
    assert client.get("/health").headers["cross-origin-resource-policy"] == "cross-origin"
