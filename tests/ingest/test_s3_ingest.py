"""Ingest into an S3 object store (moto's standalone server on loopback).

No real S3-compatible server can be installed here; moto speaks the S3 API
and stands in for one. The node's settings alone select the store.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from mida.config import Settings
from mida.ingest import ingest_paths
from mida.node import init_node
from mida.node.fsck import fsck
from tests.factories import write


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("s3fs")
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test"
                 ).create_bucket(Bucket="archive")
    yield endpoint
    server.stop()


@pytest.mark.s3
@pytest.mark.parametrize("workers", [1, 2])
def test_ingest_to_s3(tmp_path: Path, s3_endpoint: str, workers: int) -> None:
    settings = Settings(
        home=tmp_path / "node", workers=workers, storage_url=f"s3://archive/node-{workers}",
        storage_options={"endpoint_url": s3_endpoint, "key": "test", "secret": "test"},
    )
    node = init_node(settings, "S3", "S3 node", key=b"s" * 32)
    for i in range(4):
        write(tmp_path / "in" / f"{i}.dcm")
    s = ingest_paths(node, [tmp_path / "in"], "c")
    assert s.stored == 4
    store = node.store()
    assert not store.local
    digests = list(store.iter_digests())
    assert len(digests) == 4
    ds = pydicom.dcmread(io.BytesIO(store.get(digests[0], verify=True)))
    assert ds.PatientIdentityRemoved == "YES"
    assert fsck(node, verify=True).clean
    assert not (tmp_path / "node" / "blobs").exists(), "nothing lands on local disk"
