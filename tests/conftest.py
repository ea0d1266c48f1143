"""Shared fixtures: settings in a temp folder, catalogs on SQLite and PostgreSQL, nodes.

PostgreSQL is a real server: `.ci/run` starts one on loopback and exports
MIDA_TEST_POSTGRES_URL. Without it the PostgreSQL variants skip, except
under CI (MIDA_TEST_REQUIRE_SERVICES=1) where a missing server fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mida.catalog.db import open_catalog
from mida.config import Settings, get_settings
from mida.node import Node, init_node

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
REQUIRE_SERVICES = os.environ.get("MIDA_TEST_REQUIRE_SERVICES") == "1"


def shared(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test when the folder is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent: the shared corpora exist only in CI and dev machines")
    return p


def _postgres_url() -> str:
    url = os.environ.get("MIDA_TEST_POSTGRES_URL")
    if not url:
        if REQUIRE_SERVICES:
            pytest.fail("MIDA_TEST_POSTGRES_URL is not set but CI requires PostgreSQL")
        pytest.skip("no PostgreSQL server: set MIDA_TEST_POSTGRES_URL (.ci/run starts one)")
    return url


@pytest.fixture
def postgres_db() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the CI server; dropped afterwards."""
    import sqlalchemy as sa

    base = _postgres_url()
    name = f"mida_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        open_catalog.cache_clear()
        with admin.connect() as c:
            c.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
            ), {"n": name})
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The catalog URL, once per backend: SQLite (WAL) and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    url: str = request.getfixturevalue("postgres_db")
    return url


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's MIDA_* environment or a cached engine."""
    for k in list(os.environ):
        if k.startswith("MIDA_") and not k.startswith("MIDA_TEST_"):
            monkeypatch.delenv(k)
    get_settings.cache_clear()
    open_catalog.cache_clear()
    yield
    get_settings.cache_clear()
    open_catalog.cache_clear()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings of a node in a temporary folder, SQLite catalog, 2 workers."""
    return Settings(home=tmp_path / "node", workers=2)


@pytest.fixture
def node(settings: Settings) -> Node:
    return init_node(settings, "TEST", "Test Hospital", key=b"k" * 32)


@pytest.fixture
def any_node(tmp_path: Path, database_url: str) -> Node:
    """A node on each catalog backend (SQLite and PostgreSQL)."""
    s = Settings(home=tmp_path / "node", workers=2, database_url=database_url)
    return init_node(s, "TEST", "Test Hospital", key=b"k" * 32)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic studies with planted PHI, generated once per session."""
    from mida.dicom.sample import generate

    out = tmp_path_factory.mktemp("sample")
    generate(out, 3, seed=7, ct_slices=4, ct_size=128, mr_slices=2, mr_size=64)
    return out
