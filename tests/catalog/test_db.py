"""The catalog suite, run on SQLite (WAL) and on a real PostgreSQL server."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from mida.catalog import Catalog, Collection, Instance, Institution, Patient, Series, Study
from mida.catalog.db import alembic_config
from mida.catalog.query import list_level, parse_date_range, show_uid
from mida.catalog.service import get_or_create_collection, start_job, stats
from mida.errors import MidaError, NotFoundError


@pytest.fixture
def catalog(database_url: str) -> Catalog:
    cat = Catalog(database_url)
    cat.migrate()
    return cat


def _populate(cat: Catalog) -> None:
    with cat.session() as s:
        inst = Institution(code="H1", name="Hospital", key_id="abc")
        s.add(inst)
        s.flush()
        col = get_or_create_collection(s, "liver", inst.id, "default")
        p = Patient(institution_id=inst.id, PatientID="PABC", PatientSex="F", PatientAge="054Y")
        s.add(p)
        s.flush()
        for i, (date, mod) in enumerate([(dt.date(2024, 3, 1), "CT"), (dt.date(2023, 1, 5), "MR")]):
            st = Study(StudyInstanceUID=f"2.25.{i}", patient_id=p.id, collection_id=col.id,
                       StudyDate=date, ModalitiesInStudy=mod)
            s.add(st)
            s.flush()
            se = Series(SeriesInstanceUID=f"2.25.1{i}", study_id=st.id, Modality=mod,
                        SeriesNumber=1)
            s.add(se)
            s.flush()
            for k in range(3):
                s.add(Instance(SOPInstanceUID=f"2.25.2{i}{k}", series_id=se.id,
                               SOPClassUID="1.2.840.10008.5.1.4.1.1.2",
                               TransferSyntaxUID="1.2.840.10008.1.2.1", InstanceNumber=k,
                               blob_sha256=f"{i}{k}".ljust(64, "0"), size=100,
                               dataset={"00080060": {"vr": "CS", "Value": [mod]}}))


def test_migration_creates_every_table_and_is_idempotent(catalog: Catalog) -> None:
    names = set(inspect(catalog.engine).get_table_names())
    assert {"institution", "collection", "patient", "study", "series", "instance",
            "provenance", "quarantine", "job", "alembic_version"} <= names
    catalog.migrate()  # a second run changes nothing


def test_models_match_the_migrations(catalog: Catalog) -> None:
    """Autogenerate finds no difference: every model change has a migration."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from mida.catalog.models import Base

    with catalog.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    assert alembic_config(catalog.url).get_main_option("script_location")


def test_sqlite_uses_wal(tmp_path: object) -> None:
    cat = Catalog(f"sqlite:///{tmp_path}/c.sqlite")
    cat.migrate()
    with cat.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_unique_uids_are_enforced(catalog: Catalog) -> None:
    _populate(catalog)
    with pytest.raises(IntegrityError), catalog.session() as s:
        s.add(Study(StudyInstanceUID="2.25.0", patient_id=1, collection_id=1))
        s.flush()


def test_listing_with_filters(catalog: Catalog) -> None:
    _populate(catalog)
    with catalog.session() as s:
        assert len(list_level(s, "studies")) == 2
        ct = list_level(s, "studies", modality="ct")
        assert [r["StudyInstanceUID"] for r in ct] == ["2.25.0"]
        in_2024 = list_level(s, "studies", study_date="2024-01-01..2024-12-31")
        assert [r["StudyDate"] for r in in_2024] == ["2024-03-01"]
        assert list_level(s, "instances", collection="liver", modality="MR")[0]["Modality"] == "MR"
        pats = list_level(s, "patients")
        assert pats == [{"PatientID": "PABC", "PatientSex": "F", "PatientAge": "054Y",
                         "studies": 2, "instances": 6}]
        assert len(list_level(s, "series", collection="other")) == 0
        with pytest.raises(MidaError, match="unknown level"):
            list_level(s, "frames")


def test_show_uid_at_each_level(catalog: Catalog) -> None:
    _populate(catalog)
    with catalog.session() as s:
        assert show_uid(s, "2.25.0")["level"] == "study"
        assert show_uid(s, "2.25.10")["level"] == "series"
        inst = show_uid(s, "2.25.201")
        assert inst["level"] == "instance" and inst["dataset"]["00080060"]["Value"] == ["CT"]
        with pytest.raises(NotFoundError, match="pseudonyms"):
            show_uid(s, "1.2.3")


def test_stats_counts(catalog: Catalog) -> None:
    _populate(catalog)
    with catalog.session() as s:
        st = stats(s)
    assert (st["patients"], st["studies"], st["series"], st["instances"]) == (1, 2, 2, 6)
    assert st["bytes"] == 600
    assert st["by_collection"] == [{"collection": "liver", "studies": 2, "instances": 6}]
    assert st["modalities"] == {"CT": 3, "MR": 3}


def test_collection_names_are_validated(catalog: Catalog) -> None:
    _populate(catalog)
    with catalog.session() as s:
        inst_id = s.scalar(select(Institution.id))
        assert inst_id is not None
        with pytest.raises(ValueError, match="collection name"):
            get_or_create_collection(s, "a/b", inst_id, "default")
        assert get_or_create_collection(s, "liver", inst_id, "x").deid_profile == "default"
        assert s.scalar(select(Collection.id).where(Collection.name == "liver"))


def test_dead_running_jobs_are_marked_interrupted(catalog: Catalog) -> None:
    with catalog.session() as s:
        old = start_job(s, "ingest", {})
        old.pid = 2**22 + 12345  # no such process
    with catalog.session() as s:
        new = start_job(s, "ingest", {})
        assert new.status == "running"
        from mida.catalog.models import Job

        assert s.get(Job, old.id).status == "interrupted"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text_", "expected"),
    [("2024-01-01..", (dt.date(2024, 1, 1), None)), ("..20241231", (None, dt.date(2024, 12, 31)))],
)
def test_open_date_ranges(text_: str, expected: tuple[object, object]) -> None:
    assert parse_date_range(text_) == expected


def test_bad_date_says_how_to_fix() -> None:
    with pytest.raises(MidaError, match="YYYY-MM-DD"):
        parse_date_range("March")


def test_upgrading_a_catalog_with_rows_keeps_them_and_their_keys(database_url: str) -> None:
    """A node made before the governance tables upgrades in place (SQLite recreates tables)."""
    from mida.catalog.db import make_engine, migrate

    engine = make_engine(database_url)
    migrate(engine, "0004")
    with engine.begin() as c:
        c.execute(text("INSERT INTO institution (code, name, key_id, created) "
                       "VALUES ('H1', 'H', 'k', '2024-01-01')"))
        c.execute(text("INSERT INTO collection (name, institution_id, deid_profile, "
                       "description, created) VALUES ('liver', 1, 'default', '', '2024-01-01')"))
        c.execute(text("INSERT INTO user_account (name, role, disabled, created) "
                       "VALUES ('ana', 'researcher', false, '2024-01-01')"))
        c.execute(text("INSERT INTO access_grant (user_id, collection_id, scope, purpose, "
                       "created) VALUES (1, 1, 'read', 'study', '2024-01-01')"))
        c.execute(text("INSERT INTO api_token (user_id, token_hash, prefix, scope, created) "
                       "VALUES (1, 'h', 'p', 'read', '2024-01-01')"))
    migrate(engine)
    with engine.connect() as c:
        assert c.execute(text("SELECT download, purpose FROM access_grant")).one() == (
            True, "study")
        assert c.execute(text("SELECT terms_of_use, citation FROM collection")).one() == ("", "")
        assert c.execute(text("SELECT count(*) FROM api_token")).scalar() == 1
        if engine.dialect.name == "sqlite":
            assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            with pytest.raises(IntegrityError):  # keys are enforced again after migrating
                c.execute(text("INSERT INTO access_grant (user_id, scope, purpose, download, "
                               "created) VALUES (99, 'read', '', true, '2024-01-01')"))
    engine.dispose()
