"""Catalog analytics: a Parquet snapshot of the catalog, queried read-only with DuckDB.

The model is the Imaging Data Commons' ``dicom_all`` view: one wide row per
instance with every retained DICOM attribute as a column named by its DICOM
keyword, beside tables of series, studies, patients, collections, feature
values and annotations. :func:`export_parquet` writes the snapshot;
:func:`sql` runs one read-only query over it, offline.

Only what the catalog holds goes out, and the catalog is de-identified:
pseudonymous ``PatientID`` and UIDs, shifted dates, cleaned text. Nothing is
read from the linkage vault, the users, tokens or the audit trail, and no
pixel data or other bulk data is ever present.

Columns of ``instances`` from the stored DICOM JSON (``Instance.dataset``):

- a public attribute is a column named by its keyword (``SliceThickness``);
  its type comes from the values: integer VRs give ``int64``, ``DS``/``FL``/``FD``
  give ``double``, ``DA`` gives ``date``, ``SQ`` gives a JSON string (items keyed
  by keyword) and the rest give ``string``. Values of different types in one
  column make it a ``string`` column, so a column has one type in every row;
- an attribute whose dictionary value multiplicity is not ``1`` (``PixelSpacing``,
  ``ImageType``, ``WindowCenter``), or that holds several values in any row,
  is a list column;
- private attributes, and public ones without a unique keyword (repeating
  groups such as overlays), are kept in one JSON string column,
  ``OtherElements``, as DICOM JSON keyed by tag (``{"00191023": {"vr": "DS",
  "Value": [39.4]}}``), as IDC keeps them: a vendor's private tags do not
  each make a column;
- binary values (``OB``, ``OW``, ``UN``... inline or by bulk data URI) are left out.

Examples
--------
>>> from mida.datasets.analytics import is_read_only
>>> is_read_only("SELECT Modality, count(*) FROM instances GROUP BY 1")
True
>>> is_read_only("COPY instances TO 'out.csv'")
False
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.parquet as pq
from pydicom import datadict
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, aliased

from mida import __version__
from mida.annotations.store import latest_revisions
from mida.catalog.models import (
    Annotation,
    AnnotationRevision,
    Collection,
    Feature,
    Instance,
    Institution,
    LabelSchema,
    Patient,
    Series,
    Study,
)
from mida.config import Settings
from mida.errors import MidaError, NotFoundError

_Query: TypeAlias = "Select[*tuple[Any, ...]]"

BATCH = 2000
"""Rows read from the catalog and written to Parquet at a time.

A batch of instances in flight (decoded DICOM JSON, column lists, Arrow
arrays) took about 150 kB per instance when measured (50,000 CT instances:
+130 MB at 500, +300 MB at 2,000, +555 MB at 4,000, for 22.5 s, 20.6 s and
17.6 s), so larger batches buy little time for much memory.
"""

FORMAT = "mida-catalog-snapshot/1"
MANIFEST = "snapshot.json"
TABLES = ("instances", "series", "studies", "patients", "collections", "features",
          "annotations")

_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_INT_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})
_FLOAT_VRS = frozenset({"DS", "FD", "FL"})
_ARROW = {"int": pa.int64(), "float": pa.float64(), "date": pa.date32(), "str": pa.string(),
          "json": pa.string()}
_READ_ONLY = frozenset({"SELECT", "EXPLAIN"})
_EXPLAIN = re.compile(r"^\s*explain\s+(analy[sz]e\s+)?", re.IGNORECASE)


class QueryError(MidaError):
    """A ``mida sql`` query was refused or failed; the message keeps DuckDB's text."""


# ----------------------------------------------------------------- results

@dataclass
class SnapshotResult:
    """What :func:`export_parquet` wrote.

    Attributes
    ----------
    path
        The snapshot folder.
    created
        When the export started (UTC, ISO 8601).
    rows
        Rows per table.
    columns
        Columns per table.
    seconds
        Time the export took.
    """

    path: Path
    created: str
    rows: dict[str, int] = field(default_factory=dict)
    columns: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "created": self.created, "rows": self.rows,
                "columns": self.columns, "seconds": round(self.seconds, 3)}


def default_snapshot_dir(settings: Settings) -> Path:
    """``<MIDA_HOME>/snapshots/latest``: where ``mida sql`` looks when not told."""
    return settings.home / "snapshots" / "latest"


# ----------------------------------------------------------------- DICOM JSON -> columns

@dataclass(frozen=True)
class _Tag:
    """How one tag of the stored DICOM JSON maps to the wide table."""

    tag: str
    name: str | None  # the column, or None: the element goes to OtherElements
    multi: bool  # the dictionary's VM allows more than one value


@lru_cache(maxsize=8192)
def _tag(tag: str) -> _Tag:
    t = int(tag, 16)
    kw = datadict.keyword_for_tag(t)
    # Only a keyword that names exactly this tag is a column: repeating groups
    # (60xx overlays) share one keyword, and private tags have none.
    if not kw or datadict.tag_for_keyword(kw) != t:
        return _Tag(tag, None, False)
    try:
        vm = datadict.dictionary_VM(t)
    except KeyError:
        vm = "1"
    return _Tag(tag, kw, vm != "1")


def _is_binary(entry: dict[str, Any]) -> bool:
    return (entry.get("vr") in _BINARY_VRS or "InlineBinary" in entry
            or "BulkDataURI" in entry)


def _person_name(v: Any) -> str | None:
    if isinstance(v, dict):
        parts = [v.get(k) for k in ("Alphabetic", "Ideographic", "Phonetic")]
        return v.get("Alphabetic") or "=".join(p or "" for p in parts).strip("=") or None
    return None if v is None else str(v)


def _parse_date(v: Any) -> dt.date | None:
    if isinstance(v, str) and len(v) == 8 and v.isdigit():
        try:
            return dt.date(int(v[:4]), int(v[4:6]), int(v[6:]))
        except ValueError:
            return None
    return None


def _kind(vr: str, v: Any) -> str:
    """The type one value asks for: ``int``, ``float``, ``date`` or ``str``."""
    if vr in _INT_VRS and isinstance(v, int) and not isinstance(v, bool):
        return "int"
    if vr in _FLOAT_VRS and isinstance(v, int | float) and not isinstance(v, bool):
        return "float"
    if vr == "DA" and _parse_date(v) is not None:
        return "date"
    return "str"


def _plain(vr: str, v: Any) -> Any:
    """A JSON value as it reads in a sequence item (names as text)."""
    return _person_name(v) if vr == "PN" else v


def _plain_items(items: Sequence[Any]) -> list[dict[str, Any]]:
    """Sequence items keyed by keyword (tag for private ones), binary left out."""
    out = []
    for item in items:
        d: dict[str, Any] = {}
        if isinstance(item, dict):
            for tag, entry in item.items():
                if not isinstance(entry, dict) or _is_binary(entry):
                    continue
                info = _tag(tag)
                vals = entry.get("Value")
                vr = entry.get("vr", "")
                if vals is None:
                    value: Any = None
                elif vr == "SQ":
                    value = _plain_items(vals)
                else:
                    vals = [_plain(vr, v) for v in vals]
                    value = vals if info.multi or len(vals) > 1 else vals[0]
                d[info.name or tag] = value
        out.append(d)
    return out


@dataclass
class _Column:
    tag: str
    vr: str
    multi: bool
    kinds: set[str] = field(default_factory=set)

    @property
    def kind(self) -> str:
        if self.kinds <= {"int"} and self.kinds:
            return "int"
        if self.kinds <= {"int", "float"} and self.kinds:
            return "float"
        if len(self.kinds) == 1:
            return next(iter(self.kinds))
        return "str"  # empty (never a value) or mixed: text holds anything

    @property
    def arrow(self) -> pa.DataType:
        t = _ARROW[self.kind]
        return pa.list_(t) if self.multi and self.kind != "json" else t


def _observe(columns: dict[str, _Column], dataset: dict[str, Any]) -> None:
    """Widen the column plan with one instance's DICOM JSON."""
    for tag, entry in dataset.items():
        if not isinstance(entry, dict) or _is_binary(entry):
            continue
        info = _tag(tag)
        if info.name is None or info.name in _FIXED_NAMES:
            continue
        vr = entry.get("vr", "")
        col = columns.get(info.name)
        if col is None:
            col = columns[info.name] = _Column(tag, vr, info.multi)
        vals = entry.get("Value")
        if not vals:
            continue
        if vr == "SQ":
            col.kinds.add("json")
            continue
        if len(vals) > 1:
            col.multi = True
        for v in vals:
            col.kinds.add(_kind(vr, v))


def _convert(kind: str, vr: str, v: Any) -> Any:
    if v is None:
        return None
    if kind == "int":
        return int(v)
    if kind == "float":
        return float(v)
    if kind == "date":
        return _parse_date(v)
    if vr == "PN":
        return _person_name(v)
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def _cell(col: _Column, entry: dict[str, Any]) -> Any:
    vals = entry.get("Value")
    if not vals:
        return None
    vr = entry.get("vr", "")
    if col.kind == "json" or vr == "SQ":
        text = json.dumps(_plain_items(vals) if vr == "SQ" else vals, ensure_ascii=False)
        return [text] if pa.types.is_list(col.arrow) else text
    try:
        conv = [_convert(col.kind, vr, v) for v in vals]
    except (TypeError, ValueError):
        # A row stored after the column plan was made (the catalog changed
        # between the two passes) with a value the plan cannot hold.
        return None
    return conv if col.multi else conv[0]


# ----------------------------------------------------------------- table definitions

def _instance_query() -> _Query:
    return (select(Instance.id, Collection.name, Institution.code, Patient.PatientID,
                   Patient.PatientSex, Patient.PatientAge, Study.StudyInstanceUID,
                   Study.StudyDate, Series.Modality, Series.SeriesInstanceUID,
                   Instance.SOPInstanceUID, Instance.SOPClassUID, Instance.TransferSyntaxUID,
                   Instance.size, Instance.blob_sha256, Instance.created, Instance.dataset)
            .join(Series, Series.id == Instance.series_id)
            .join(Study, Study.id == Series.study_id)
            .join(Patient, Patient.id == Study.patient_id)
            .join(Collection, Collection.id == Study.collection_id)
            .join(Institution, Institution.id == Collection.institution_id))


_TS = pa.timestamp("us", tz="UTC")
_INSTANCE_FIXED: list[tuple[str, pa.DataType]] = [
    ("collection", pa.string()), ("institution", pa.string()), ("PatientID", pa.string()),
    ("PatientSex", pa.string()), ("PatientAge", pa.string()),
    ("StudyInstanceUID", pa.string()), ("StudyDate", pa.date32()), ("Modality", pa.string()),
    ("SeriesInstanceUID", pa.string()), ("SOPInstanceUID", pa.string()),
    ("SOPClassUID", pa.string()), ("TransferSyntaxUID", pa.string()), ("size", pa.int64()),
    ("blob_sha256", pa.string()), ("ingested", _TS),
]
# Catalog columns win over the same keyword in the stored JSON: they are the
# indexed values (StudyDate as a date, Modality as the series holds it).
_FIXED_NAMES = frozenset(n for n, _ in _INSTANCE_FIXED)


def _series_query() -> _Query:
    counts = (select(Instance.series_id, func.count().label("n"),
                     func.sum(Instance.size).label("bytes"))
              .group_by(Instance.series_id).subquery())
    return (select(Series.id, Collection.name, Patient.PatientID, Study.StudyInstanceUID,
                   Series.SeriesInstanceUID, Series.Modality, Series.SeriesNumber,
                   Series.SeriesDescription, Series.BodyPartExamined, Series.Manufacturer,
                   func.coalesce(counts.c.n, 0), func.coalesce(counts.c.bytes, 0),
                   Series.created)
            .join(Study, Study.id == Series.study_id)
            .join(Patient, Patient.id == Study.patient_id)
            .join(Collection, Collection.id == Study.collection_id)
            .outerjoin(counts, counts.c.series_id == Series.id))


_SERIES_COLS = [
    ("collection", pa.string()), ("PatientID", pa.string()), ("StudyInstanceUID", pa.string()),
    ("SeriesInstanceUID", pa.string()), ("Modality", pa.string()), ("SeriesNumber", pa.int64()),
    ("SeriesDescription", pa.string()), ("BodyPartExamined", pa.string()),
    ("Manufacturer", pa.string()), ("instances", pa.int64()), ("size", pa.int64()),
    ("ingested", _TS),
]


def _study_query() -> _Query:
    ser = (select(Series.study_id, func.count().label("n")).group_by(Series.study_id)
           .subquery())
    inst = (select(Series.study_id, func.count().label("n"),
                   func.sum(Instance.size).label("bytes"))
            .join(Instance, Instance.series_id == Series.id)
            .group_by(Series.study_id).subquery())
    return (select(Study.id, Collection.name, Institution.code, Patient.PatientID,
                   Study.StudyInstanceUID, Study.StudyDate, Study.StudyTime,
                   Study.AccessionNumber, Study.StudyID, Study.StudyDescription,
                   Study.ModalitiesInStudy, func.coalesce(ser.c.n, 0),
                   func.coalesce(inst.c.n, 0), func.coalesce(inst.c.bytes, 0), Study.created)
            .join(Patient, Patient.id == Study.patient_id)
            .join(Collection, Collection.id == Study.collection_id)
            .join(Institution, Institution.id == Collection.institution_id)
            .outerjoin(ser, ser.c.study_id == Study.id)
            .outerjoin(inst, inst.c.study_id == Study.id))


_STUDY_COLS = [
    ("collection", pa.string()), ("institution", pa.string()), ("PatientID", pa.string()),
    ("StudyInstanceUID", pa.string()), ("StudyDate", pa.date32()), ("StudyTime", pa.string()),
    ("AccessionNumber", pa.string()), ("StudyID", pa.string()),
    ("StudyDescription", pa.string()), ("ModalitiesInStudy", pa.string()),
    ("series", pa.int64()), ("instances", pa.int64()), ("size", pa.int64()), ("ingested", _TS),
]


def _patient_query(collection_ids: list[int] | None) -> _Query:
    studies = select(Study.patient_id, func.count().label("n"),
                     func.min(Study.StudyDate).label("first"),
                     func.max(Study.StudyDate).label("last"))
    if collection_ids is not None:
        studies = studies.where(Study.collection_id.in_(collection_ids))
    sub = studies.group_by(Study.patient_id).subquery()
    # A patient belongs to the snapshot through its studies; only their count is kept.
    return (select(Patient.id, Institution.code, Patient.PatientID, Patient.PatientSex,
                   Patient.PatientAge, Patient.PatientBirthDate, sub.c.n, sub.c.first,
                   sub.c.last)
            .join(sub, sub.c.patient_id == Patient.id)
            .join(Institution, Institution.id == Patient.institution_id))


_PATIENT_COLS = [
    ("institution", pa.string()), ("PatientID", pa.string()), ("PatientSex", pa.string()),
    ("PatientAge", pa.string()), ("PatientBirthDate", pa.string()), ("studies", pa.int64()),
    ("first_study", pa.date32()), ("last_study", pa.date32()),
]


def _collection_query() -> _Query:
    studies = (select(Study.collection_id, func.count().label("n"),
                      func.count(func.distinct(Study.patient_id)).label("p"))
               .group_by(Study.collection_id).subquery())
    inst = (select(Study.collection_id, func.count(func.distinct(Series.id)).label("s"),
                   func.count(Instance.id).label("n"), func.sum(Instance.size).label("bytes"))
            .join(Series, Series.study_id == Study.id)
            .join(Instance, Instance.series_id == Series.id)
            .group_by(Study.collection_id).subquery())
    return (select(Collection.id, Collection.name, Institution.code, Collection.deid_profile,
                   Collection.description, func.coalesce(studies.c.p, 0),
                   func.coalesce(studies.c.n, 0), func.coalesce(inst.c.s, 0),
                   func.coalesce(inst.c.n, 0), func.coalesce(inst.c.bytes, 0),
                   Collection.created)
            .join(Institution, Institution.id == Collection.institution_id)
            .outerjoin(studies, studies.c.collection_id == Collection.id)
            .outerjoin(inst, inst.c.collection_id == Collection.id))


_COLLECTION_COLS = [
    ("collection", pa.string()), ("institution", pa.string()), ("deid_profile", pa.string()),
    ("description", pa.string()), ("patients", pa.int64()), ("studies", pa.int64()),
    ("series", pa.int64()), ("instances", pa.int64()), ("size", pa.int64()),
    ("created", _TS),
]


def _feature_query() -> _Query:
    return (select(Feature.id, Collection.name, Study.StudyInstanceUID,
                   Series.SeriesInstanceUID, Feature.family, Feature.region, Feature.name,
                   Feature.value_num, Feature.value_text, Feature.extractor, Feature.created)
            .join(Series, Series.id == Feature.series_id)
            .join(Study, Study.id == Series.study_id)
            .join(Collection, Collection.id == Study.collection_id))


_FEATURE_COLS = [
    ("collection", pa.string()), ("StudyInstanceUID", pa.string()),
    ("SeriesInstanceUID", pa.string()), ("family", pa.string()), ("region", pa.string()),
    ("name", pa.string()), ("value_num", pa.float64()), ("value_text", pa.string()),
    ("extractor", pa.string()), ("created", _TS),
]


def _annotation_query() -> _Query:
    ser, inst = aliased(Series), aliased(Instance)
    return (latest_revisions()
            .with_only_columns(
                Annotation.id, Annotation.uid, Collection.name, Study.StudyInstanceUID,
                ser.SeriesInstanceUID, inst.SOPInstanceUID, Annotation.frame, Annotation.level,
                Annotation.label, Annotation.kind, Annotation.reader, Annotation.reader_kind,
                AnnotationRevision.status, AnnotationRevision.revision,
                LabelSchema.name + "@" + LabelSchema.version, AnnotationRevision.mask_sha256,
                AnnotationRevision.data, AnnotationRevision.author,
                AnnotationRevision.model_version, AnnotationRevision.created,
                maintain_column_froms=False)
            .join(Collection, Collection.id == Annotation.collection_id)
            .join(Study, Study.id == Annotation.study_id)
            .join(LabelSchema, LabelSchema.id == Annotation.schema_id)
            .outerjoin(ser, ser.id == Annotation.series_id)
            .outerjoin(inst, inst.id == Annotation.instance_id))


_ANNOTATION_COLS = [
    ("uid", pa.string()), ("collection", pa.string()), ("StudyInstanceUID", pa.string()),
    ("SeriesInstanceUID", pa.string()), ("SOPInstanceUID", pa.string()), ("frame", pa.int64()),
    ("level", pa.string()), ("label", pa.string()), ("kind", pa.string()),
    ("reader", pa.string()), ("reader_kind", pa.string()), ("status", pa.string()),
    ("revision", pa.int64()), ("schema", pa.string()), ("mask_sha256", pa.string()),
    ("data", pa.string()), ("author", pa.string()), ("model_version", pa.string()),
    ("created", _TS),
]


# ----------------------------------------------------------------- export

def _batches(session: Session, stmt: _Query, key: Any,
             upto: int | None = None) -> Iterator[Sequence[Any]]:
    """Rows of ``stmt`` (whose first column is ``key``) in keyset-paged batches.

    Paging on the primary key keeps no cursor open between batches and reads
    each row once, on SQLite and PostgreSQL alike; only a batch is in memory.
    """
    last: int | None = None
    while True:
        q = stmt.order_by(key).limit(BATCH)
        if last is not None:
            q = q.where(key > last)
        if upto is not None:
            q = q.where(key <= upto)
        rows = session.execute(q).all()
        if not rows:
            return
        last = rows[-1][0]
        yield rows
        del rows  # before the next batch is read, not after


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while batches of DICOM JSON are decoded.

    A batch is millions of small dicts and lists that reference counting
    frees; the collector would walk them again and again while they are alive
    (measured: JSON decoding 5x slower with it on). They hold no cycles.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _utc(t: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes that are UTC; PostgreSQL aware ones.
    if t is not None and t.tzinfo is None:
        return t.replace(tzinfo=dt.UTC)
    return t


def _write_simple(session: Session, path: Path, stmt: _Query, key: Any,
                  cols: list[tuple[str, pa.DataType]]) -> int:
    schema = pa.schema(cols)
    n = 0
    with pq.ParquetWriter(path, schema) as w:
        for rows in _batches(session, stmt, key):
            data: list[list[Any]] = [[] for _ in cols]
            for r in rows:
                for i, (name, typ) in enumerate(cols):
                    v = r[i + 1]
                    if typ == _TS:
                        v = _utc(v)
                    elif name == "data" and v is not None:
                        v = json.dumps(v, ensure_ascii=False, sort_keys=True)
                    data[i].append(v)
            w.write_table(pa.Table.from_arrays(
                [pa.array(d, type=t) for d, (_, t) in zip(data, cols, strict=True)],
                schema=schema))
            n += len(rows)
    return n


def _write_instances(session: Session, path: Path, stmt: _Query) -> tuple[int, pa.Schema]:
    """The wide table: a first pass plans the columns, a second writes the rows."""
    plan: dict[str, _Column] = {}
    other = False
    upto: int | None = None
    for rows in _batches(session, stmt.with_only_columns(Instance.id, Instance.dataset),
                         Instance.id):
        for _id, ds in rows:
            _observe(plan, ds or {})
            other = other or any(_tag(t).name is None for t in (ds or {}))
        upto = rows[-1][0]
    dicom = sorted(plan.values(), key=lambda c: c.tag)
    fields = [pa.field(n, t) for n, t in _INSTANCE_FIXED]
    for c in dicom:
        name = _tag(c.tag).name
        assert name is not None
        fields.append(pa.field(name, c.arrow, metadata={"tag": c.tag, "vr": c.vr}))
    if other:
        fields.append(pa.field("OtherElements", pa.string()))
    schema = pa.schema(fields)
    n = 0
    with pq.ParquetWriter(path, schema) as w:
        if upto is None:
            w.write_table(schema.empty_table())
            return 0, schema
        for rows in _batches(session, stmt, Instance.id, upto=upto):
            cols: dict[str, list[Any]] = {f.name: [None] * len(rows) for f in fields}
            for i, r in enumerate(rows):
                for j, (name, _) in enumerate(_INSTANCE_FIXED):
                    cols[name][i] = _utc(r[j + 1]) if name == "ingested" else r[j + 1]
                extra: dict[str, Any] = {}
                for tag, entry in (r[-1] or {}).items():
                    if not isinstance(entry, dict) or _is_binary(entry):
                        continue
                    info = _tag(tag)
                    if info.name is None:
                        extra[tag] = entry
                    elif info.name in plan:
                        cols[info.name][i] = _cell(plan[info.name], entry)
                if extra and other:
                    cols["OtherElements"][i] = json.dumps(extra, ensure_ascii=False)
            w.write_table(pa.Table.from_arrays(
                [pa.array(cols[f.name], type=f.type) for f in fields], schema=schema))
            n += len(rows)
    return n, schema


def _collection_ids(session: Session, names: list[str] | None) -> list[int] | None:
    if names is None:
        return None
    rows = {n: i for n, i in session.execute(select(Collection.name, Collection.id))}
    missing = sorted(set(names) - set(rows))
    if missing:
        raise NotFoundError(f"no collection {', '.join(missing)}; known: "
                            f"{', '.join(sorted(rows)) or 'none'} (see 'mida stats')")
    return [rows[n] for n in names]


def _check_target(out_dir: Path) -> None:
    if out_dir.is_file():
        raise MidaError(f"{out_dir} is a file; give a folder for the snapshot")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists():
        # Replacing the folder must never delete someone's files.
        raise MidaError(f"{out_dir} holds files but no {MANIFEST}, so it is not a snapshot; "
                        "give a new or empty folder")


def _columns_of(schema: pa.Schema) -> list[dict[str, Any]]:
    out = []
    for f in schema:
        d: dict[str, Any] = {"name": f.name, "type": str(f.type)}
        for k, v in (f.metadata or {}).items():
            d[k.decode()] = v.decode()
        out.append(d)
    return out


def export_parquet(session: Session, out_dir: Path, *,
                   collections: list[str] | None = None) -> SnapshotResult:
    """Write a Parquet snapshot of the catalog to ``out_dir``.

    The snapshot is one Parquet file per table (see :data:`TABLES`) and a
    ``snapshot.json`` with the time, mida's version, the row counts and every
    table's columns. It is written to a hidden folder beside ``out_dir`` and
    moved into place at the end, so an interrupted export leaves the previous
    snapshot (or nothing), never half of one. The catalog is read in batches
    of :data:`BATCH` rows; the instance table is read twice, once to plan its
    columns and once to write them.

    Parameters
    ----------
    session
        A catalog session (only read).
    out_dir
        The snapshot folder; an earlier snapshot there is replaced. A folder
        that holds other files is refused.
    collections
        Only these collections (all when ``None``).

    Returns
    -------
    SnapshotResult
        Rows and columns per table.

    Raises
    ------
    NotFoundError
        A collection does not exist.
    MidaError
        ``out_dir`` is a file or a non-empty folder that is not a snapshot.
    """
    t0 = time.perf_counter()
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    out_dir = Path(out_dir).absolute()
    _check_target(out_dir)
    ids = _collection_ids(session, collections)

    def only(stmt: _Query, column: Any) -> _Query:
        return stmt if ids is None else stmt.where(column.in_(ids))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        rows: dict[str, int] = {}
        schemas: dict[str, pa.Schema] = {}
        with _gc_paused():
            rows["instances"], schemas["instances"] = _write_instances(
                session, tmp / "instances.parquet",
                only(_instance_query(), Study.collection_id))
        simple: list[tuple[str, _Query, Any, list[tuple[str, pa.DataType]]]] = [
            ("series", only(_series_query(), Study.collection_id), Series.id, _SERIES_COLS),
            ("studies", only(_study_query(), Study.collection_id), Study.id, _STUDY_COLS),
            ("patients", _patient_query(ids), Patient.id, _PATIENT_COLS),
            ("collections", only(_collection_query(), Collection.id), Collection.id,
             _COLLECTION_COLS),
            ("features", only(_feature_query(), Study.collection_id), Feature.id,
             _FEATURE_COLS),
            ("annotations", only(_annotation_query(), Annotation.collection_id),
             Annotation.id, _ANNOTATION_COLS),
        ]
        for name, stmt, key, cols in simple:
            rows[name] = _write_simple(session, tmp / f"{name}.parquet", stmt, key, cols)
            schemas[name] = pa.schema(cols)
        manifest = {
            "format": FORMAT, "created": created, "mida_version": __version__,
            "collections": collections,
            "tables": {name: {"file": f"{name}.parquet", "rows": rows[name],
                              "columns": _columns_of(schemas[name])} for name in TABLES},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SnapshotResult(path=out_dir, created=created, rows=rows,
                          columns={n: len(s) for n, s in schemas.items()},
                          seconds=time.perf_counter() - t0)


def _replace(tmp: Path, out_dir: Path) -> None:
    """Move the finished snapshot into place; the old one goes only after."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_manifest(snapshot_dir: Path) -> dict[str, Any]:
    """The ``snapshot.json`` of a snapshot; :class:`NotFoundError` when there is none."""
    p = Path(snapshot_dir) / MANIFEST
    if not p.is_file():
        raise NotFoundError(f"no catalog snapshot at {snapshot_dir}: write one with "
                            f"'mida catalog export-parquet {snapshot_dir}'")
    data: dict[str, Any] = json.loads(p.read_text())
    return data


# ----------------------------------------------------------------- query

def is_read_only(query: str) -> bool:
    """Whether ``query`` is one statement that only reads.

    DuckDB's own parser classifies the statement: ``SELECT`` (which covers
    ``WITH``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE`` and ``FROM``-first
    queries) and ``EXPLAIN`` of one of those pass; ``COPY``, ``ATTACH``,
    ``INSTALL``, ``SET``, ``PRAGMA``, ``CREATE`` and the rest do not.
    A query that does not parse raises :class:`QueryError`.
    """
    import duckdb

    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None
    if len(statements) != 1:
        return False
    kind = statements[0].type.name
    if kind == "EXPLAIN":
        # EXPLAIN ANALYZE runs its statement: look at what it explains.
        inner = _EXPLAIN.sub("", query, count=1)
        return inner != query and is_read_only(inner)
    return kind in _READ_ONLY


def check_query(query: str) -> None:
    """Raise :class:`QueryError` unless ``query`` is one read-only statement that parses."""
    if not query.strip():
        raise QueryError("the query is empty; write one SELECT statement")
    if not is_read_only(query):
        raise QueryError(
            "mida sql runs one read-only statement (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE "
            "or EXPLAIN); the snapshot cannot be changed from here: to refresh it, run "
            "'mida catalog export-parquet' (or 'mida sql --refresh')")


def _connect(snapshot_dir: Path) -> Any:
    import duckdb

    files = sorted(p.resolve() for p in Path(snapshot_dir).glob("*.parquet"))
    con = duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False, "autoload_known_extensions": False})
    for f in files:
        if not f.stem.isidentifier():
            continue
        path = str(f).replace("'", "''")
        con.execute(f'CREATE VIEW "{f.stem}" AS SELECT * FROM read_parquet(\'{path}\')')
    # From here on the connection reads the snapshot's files and nothing else:
    # no other file, no network, no extension, and the lock keeps a query from
    # turning any of it back on.
    con.execute("SET allowed_paths = ?", [[str(f) for f in files]])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def sql(query: str, snapshot_dir: Path, *,
        limit: int | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read-only query over a snapshot with DuckDB.

    Each Parquet file of the snapshot is a view named after it
    (``instances``, ``series``, ``studies``, ``patients``, ``collections``,
    ``features``, ``annotations``). Two locks keep the query from changing
    anything: the statement must be a single ``SELECT`` (``WITH``,
    ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``) or ``EXPLAIN`` of one, by DuckDB's
    parser; and the connection is in memory, may open only the snapshot's
    files, loads no extension and cannot change those settings.

    Parameters
    ----------
    query
        The SQL (DuckDB's dialect).
    snapshot_dir
        A folder written by :func:`export_parquet`.
    limit
        Most rows to return (all when ``None``).

    Returns
    -------
    tuple
        Column names and rows.

    Raises
    ------
    QueryError
        Not a single read-only statement, or DuckDB refused it (syntax
        errors keep DuckDB's message, which points at the position).
    NotFoundError
        No snapshot at ``snapshot_dir``.

    Examples
    --------
    >>> cols, rows = sql("SELECT Modality, count(*) AS n FROM instances GROUP BY 1",
    ...                  snap)  # doctest: +SKIP
    """
    import duckdb

    check_query(query)
    read_manifest(snapshot_dir)
    con = _connect(snapshot_dir)
    try:
        cur = con.execute(query)
        columns = [d[0] for d in cur.description or []]
        rows = cur.fetchall() if limit is None else cur.fetchmany(limit)
    except duckdb.PermissionException as exc:
        raise QueryError(f"{exc}\n(mida sql reads only the snapshot's tables: "
                         f"{', '.join(TABLES)})") from None
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None
    finally:
        con.close()
    return columns, rows


__all__ = [
    "BATCH",
    "MANIFEST",
    "TABLES",
    "QueryError",
    "SnapshotResult",
    "check_query",
    "default_snapshot_dir",
    "export_parquet",
    "is_read_only",
    "read_manifest",
    "sql",
]
