"""The catalog: SQLAlchemy models, sessions and Alembic migrations."""

from mida.catalog.db import Catalog, make_engine, migrate, open_catalog
from mida.catalog.models import (
    Base,
    Collection,
    Instance,
    Institution,
    Job,
    Patient,
    Provenance,
    QuarantineEntry,
    Series,
    Study,
)

__all__ = [
    "Base",
    "Catalog",
    "Collection",
    "Instance",
    "Institution",
    "Job",
    "Patient",
    "Provenance",
    "QuarantineEntry",
    "Series",
    "Study",
    "make_engine",
    "migrate",
    "open_catalog",
]
