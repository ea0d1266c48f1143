"""The blob store suite, run on a local folder and on S3.

S3 is moto's standalone server on loopback: no real S3-compatible server can
be installed here, so moto stands in for the object store.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mida.errors import BlobNotFoundError, ConfigError, IntegrityError, StorageError
from mida.storage import BlobStore, backends, open_store


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test"
                 ).create_bucket(Bucket="mida-test")
    yield endpoint
    server.stop()


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return open_store(str(tmp_path / "blobs"))
    endpoint = request.getfixturevalue("moto_endpoint")
    prefix = os.urandom(4).hex()
    return open_store(
        f"s3://mida-test/{prefix}",
        storage_options={"endpoint_url": endpoint, "key": "test", "secret": "test",
                         "client_kwargs": {"region_name": "us-east-1"}},
    )


def test_put_is_content_addressed_and_idempotent(store: BlobStore) -> None:
    data = b"DICM" * 1000
    ref = store.put(data)
    assert ref.digest == hashlib.sha256(data).hexdigest()
    assert ref.created and ref.size == len(data)
    again = store.put(data)
    assert not again.created and again.digest == ref.digest
    assert store.get(ref.digest) == data
    assert store.size(ref.digest) == len(data)
    assert list(store.iter_digests()) == [ref.digest]


def test_missing_blob_is_a_clear_error(store: BlobStore) -> None:
    with pytest.raises(BlobNotFoundError, match="is not in"):
        store.get("0" * 64)
    assert not store.exists("0" * 64)


def test_rejects_non_digest_names(store: BlobStore) -> None:
    with pytest.raises(StorageError, match="not a sha256"):
        store.get("../../etc/passwd")


def test_delete_and_iterate(store: BlobStore) -> None:
    refs = [store.put(bytes([i]) * 10) for i in range(5)]
    assert sorted(store.iter_digests()) == sorted(r.digest for r in refs)
    store.delete(refs[0].digest)
    assert not store.exists(refs[0].digest)
    store.delete(refs[0].digest)  # deleting twice is harmless
    assert len(list(store.iter_digests())) == 4


def test_verify_detects_corruption(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "b"))
    ref = store.put(b"original")
    Path(store.path(ref.digest)).write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match="corrupt"):
        store.get(ref.digest, verify=True)


def test_local_writes_are_atomic_no_partial_blob_visible(tmp_path: Path) -> None:
    """A write goes to tmp/ then os.replace: an interrupted write leaves only tmp/."""
    store = open_store(str(tmp_path / "b"), fsync=True)
    ref = store.put(b"x" * 100_000)
    assert Path(store.path(ref.digest)).stat().st_size == 100_000
    assert os.listdir(tmp_path / "b" / "tmp") == []
    (tmp_path / "b" / "tmp" / "dead.part").write_bytes(b"partial")
    assert store.stale_temp_files(older_than=0)
    assert ref.digest in set(store.iter_digests())
    assert len(list(store.iter_digests())) == 1


def test_unknown_protocol_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not supported"):
        open_store("ftp://example/blobs")


def test_backends_report_availability() -> None:
    names = {b.name: b for b in backends()}
    assert names["local"].is_available
    assert names["s3"].missing_dependencies in ([], ["s3fs"])
