"""Engines, sessions and migrations for the catalog.

SQLite runs in WAL mode with foreign keys on and a busy timeout, so readers
(the web UI, ``mida ls``) never block the ingest writer. PostgreSQL needs no
tuning here. The schema is created and upgraded only by Alembic.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mida.errors import CatalogError

if TYPE_CHECKING:  # alembic costs ~0.7 s to import: only migrations need it
    from alembic.config import Config


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str) -> Engine:
    """Create an engine for ``url`` with the settings mida relies on."""
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError) as exc:
        raise CatalogError(
            f"cannot open the catalog database ({type(exc).__name__}): check MIDA_DATABASE_URL"
            " (for PostgreSQL install the extra: pip install 'mida[postgres]')"
        ) from exc
    return engine


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("mida.catalog") / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to ``revision`` (idempotent)."""
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    try:
        with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # SQLite's ALTER TABLE is limited: Alembic's batch mode copies a table and
                # drops the old one, which foreign keys referring to it would refuse. The
                # pragma only takes effect outside a transaction; the keys are checked
                # before the migration commits.
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                conn.commit()
            try:
                with conn.begin():
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, revision)
                    if sqlite:
                        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                        if broken:
                            raise CatalogError(f"catalog migration left {len(broken)} rows "
                                               f"with broken foreign keys, e.g. {broken[0]}")
            finally:
                if sqlite:
                    conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                    conn.commit()
    except SQLAlchemyError as exc:
        raise CatalogError(f"catalog migration failed: {type(exc).__name__}: {exc}") from exc


def is_migrated(engine: Engine) -> bool:
    return inspect(engine).has_table("alembic_version")


class Catalog:
    """A handle on the catalog database: engine plus session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        migrate(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        with self._sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()


@functools.lru_cache(maxsize=8)
def open_catalog(url: str) -> Catalog:
    """A cached :class:`Catalog` per URL (one engine per process)."""
    return Catalog(url)


__all__ = ["Catalog", "alembic_config", "is_migrated", "make_engine", "migrate", "open_catalog"]
