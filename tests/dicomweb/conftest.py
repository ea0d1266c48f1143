"""A node served over HTTP on loopback, for the real dicomweb-client to talk to.

One node for the whole directory (ingest and server start-up cost seconds):
the synthetic sample studies (``mida sample``: CT, MR, CR, US with planted PHI)
in collection ``sample`` and one CT instance in collection ``other``. Tests
that store add collections of their own, so counts are read at test time.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from mida.catalog.models import Collection, Series, Study
from mida.config import Settings
from mida.dicomweb.multipart import parse_media_type
from mida.ingest import ingest_paths
from mida.node import Node, init_node
from tests.factories import bearer, make_token, write

OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def split_multipart(r: requests.Response) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related response (a plain split, not mida's reader)."""
    mt, params = parse_media_type(r.headers["content-type"])
    assert mt == "multipart/related"
    marker = b"--" + params["boundary"].encode()
    body = r.content
    assert body.startswith(marker) and body.rstrip().endswith(marker + b"--")
    out = []
    for chunk in body.split(b"\r\n" + marker)[:-1]:
        chunk = chunk.removeprefix(marker)
        head, _, data = chunk.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().strip().split("\r\n"):
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        out.append((headers, data))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    """A served node: its URLs, tokens and a few UIDs."""

    node: Node
    url: str  # .../dicomweb
    admin: str
    reader: str  # read on "sample" only
    other_study: str  # the study in "other"

    def client(self, token: str | None = None) -> object:
        from dicomweb_client.api import DICOMwebClient

        return DICOMwebClient(url=self.url, headers=bearer(token or self.admin))

    def headers(self, token: str | None = None, **extra: str) -> dict[str, str]:
        return {**bearer(token or self.admin), **extra}

    def studies(self, collection: str | None = "sample") -> list[str]:
        """Study UIDs of a collection (None: every collection), oldest first."""
        q = select(Study.StudyInstanceUID).join(Collection).order_by(Study.id)
        if collection is not None:
            q = q.where(Collection.name == collection)
        with self.node.catalog().session() as s:
            return list(s.scalars(q))

    def series_of(self, study: str) -> list[tuple[str, str | None]]:
        with self.node.catalog().session() as s:
            return [(str(u), m) for u, m in s.execute(
                select(Series.SeriesInstanceUID, Series.Modality).join(Study)
                .where(Study.StudyInstanceUID == study).order_by(Series.id))]


@contextlib.contextmanager
def serve(node: Node, port: int) -> Iterator[None]:
    """Serve ``node``'s app with uvicorn on loopback ``port`` in a thread."""
    import uvicorn

    from mida.api import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(node), host="127.0.0.1", port=port,
                                           log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        for _ in range(400):
            if server.started:
                break
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        yield
    finally:
        server.should_exit = True
        t.join(timeout=10)


def make_node(home: Path, port: int) -> Node:
    with pytest.MonkeyPatch.context() as mp:
        for k in list(os.environ):
            if k.startswith("MIDA_") and not k.startswith("MIDA_TEST_"):
                mp.delenv(k)
        settings = Settings(home=home, workers=1, public_url=f"http://127.0.0.1:{port}")
    return init_node(settings, "TEST", "Test Hospital", key=b"k" * 32)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("dicomweb")
    port = free_port()
    node = make_node(base / "node", port)
    ingest_paths(node, [sample_dir], "sample", workers=1)
    write(base / "other" / "0.dcm")
    ingest_paths(node, [base / "other"], "other", workers=1)
    admin = make_token(node)
    reader = make_token(node, "rae", "researcher", "read", "sample", grant="read")
    live = Live(node, f"http://127.0.0.1:{port}/dicomweb", admin, reader, "")
    live.other_study = live.studies("other")[0]
    with serve(node, port):
        yield live
