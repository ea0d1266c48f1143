"""SQLAlchemy 2 models of the catalog.

Every row is de-identified: identifiers are pseudonyms produced by
:mod:`mida.deid`, and source references are keyed hashes. Column names use
DICOM keywords (``StudyInstanceUID``), as the standard's words are the ones
users search with. Schema changes go through Alembic migrations
(``mida/catalog/migrations``); the same models run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[str]: JSON,
        dt.datetime: DateTime(timezone=True),
    }


class Institution(Base):
    """A data provider (hospital, research centre); one per node at first."""

    __tablename__ = "institution"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(256))
    key_id: Mapped[str] = mapped_column(String(32))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    collections: Mapped[list[Collection]] = relationship(back_populates="institution")


class Collection(Base):
    """A named set of studies with one de-identification profile."""

    __tablename__ = "collection"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institution.id"))
    deid_profile: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    # governance (issue 7): what a user must see before using the data
    license: Mapped[str | None] = mapped_column(String(128))
    terms_of_use: Mapped[str] = mapped_column(Text, default="")
    citation: Mapped[str] = mapped_column(Text, default="")
    contributors: Mapped[list[str]] = mapped_column(JSON, default=list)
    handler_cap: Mapped[int | None] = mapped_column(Integer)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    institution: Mapped[Institution] = relationship(back_populates="collections")


class Patient(Base):
    """A pseudonymous patient (``PatientID`` is the keyed pseudonym)."""

    __tablename__ = "patient"
    __table_args__ = (UniqueConstraint("institution_id", "PatientID"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institution.id"))
    PatientID: Mapped[str] = mapped_column(String(64))
    PatientName: Mapped[str | None] = mapped_column(String(256))
    PatientBirthDate: Mapped[str | None] = mapped_column(String(16))
    PatientSex: Mapped[str | None] = mapped_column(String(16))
    PatientAge: Mapped[str | None] = mapped_column(String(8))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Study(Base):
    __tablename__ = "study"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    StudyInstanceUID: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collection.id"), index=True)
    StudyDate: Mapped[dt.date | None] = mapped_column(index=True)
    StudyTime: Mapped[str | None] = mapped_column(String(32))
    AccessionNumber: Mapped[str | None] = mapped_column(String(64))
    StudyID: Mapped[str | None] = mapped_column(String(64))
    StudyDescription: Mapped[str | None] = mapped_column(String(256))
    ReferringPhysicianName: Mapped[str | None] = mapped_column(String(256))
    ModalitiesInStudy: Mapped[str | None] = mapped_column(String(128))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    patient: Mapped[Patient] = relationship()
    collection: Mapped[Collection] = relationship()


class Series(Base):
    __tablename__ = "series"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    SeriesInstanceUID: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    Modality: Mapped[str | None] = mapped_column(String(16), index=True)
    SeriesNumber: Mapped[int | None] = mapped_column(Integer)
    SeriesDescription: Mapped[str | None] = mapped_column(String(256))
    BodyPartExamined: Mapped[str | None] = mapped_column(String(64))
    Manufacturer: Mapped[str | None] = mapped_column(String(128))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    study: Mapped[Study] = relationship()


class Instance(Base):
    """One stored, de-identified SOP instance and its blob."""

    __tablename__ = "instance"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    SOPInstanceUID: Mapped[str] = mapped_column(String(64), unique=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    SOPClassUID: Mapped[str] = mapped_column(String(64))
    TransferSyntaxUID: Mapped[str] = mapped_column(String(64))
    InstanceNumber: Mapped[int | None] = mapped_column(Integer)
    Rows: Mapped[int | None] = mapped_column(Integer)
    Columns: Mapped[int | None] = mapped_column(Integer)
    NumberOfFrames: Mapped[int | None] = mapped_column(Integer)
    blob_sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    dataset: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    series: Mapped[Series] = relationship()


class Provenance(Base):
    """How an instance arrived; identifiers are keyed hashes, never originals."""

    __tablename__ = "provenance"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instance.id"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("job.id"))
    source_kind: Mapped[str] = mapped_column(String(16))
    source_ref_hash: Mapped[str] = mapped_column(String(64))
    source_digest: Mapped[str] = mapped_column(String(64), unique=True)
    original_uid_hash: Mapped[str] = mapped_column(String(64), index=True)
    deid_profile: Mapped[str] = mapped_column(String(64))
    deid_profile_version: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str] = mapped_column(String(32))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class QuarantineEntry(Base):
    """A file that could not be ingested safely; its original is kept aside."""

    __tablename__ = "quarantine"
    __table_args__ = (UniqueConstraint("original_sha256", "reason"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("job.id"))
    collection_id: Mapped[int | None] = mapped_column(ForeignKey("collection.id"))
    reason: Mapped[str] = mapped_column(String(32), index=True)
    message: Mapped[str] = mapped_column(Text)
    original_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    source_kind: Mapped[str] = mapped_column(String(16))
    source_ref_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Job(Base):
    """A unit of long-running work (an ingest run, a pull, an export)."""

    __tablename__ = "job"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    pid: Mapped[int | None] = mapped_column(Integer)
    hostname: Mapped[str | None] = mapped_column(String(255))
    started: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished: Mapped[dt.datetime | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int | None] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    owner: Mapped[str | None] = mapped_column(String(64))


class User(Base):
    """A person or service account that may call the node (see :mod:`mida.sharing.identity`)."""

    __tablename__ = "user_account"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    institution_id: Mapped[int | None] = mapped_column(ForeignKey("institution.id"))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """An API token; only the sha256 of the secret is kept."""

    __tablename__ = "api_token"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(16))
    collection_id: Mapped[int | None] = mapped_column(ForeignKey("collection.id"))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires: Mapped[dt.datetime | None] = mapped_column()
    revoked: Mapped[dt.datetime | None] = mapped_column()
    user: Mapped[User] = relationship()


class Grant(Base):
    """A user's right to a collection (or, with no collection, to all of them)."""

    __tablename__ = "access_grant"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    collection_id: Mapped[int | None] = mapped_column(ForeignKey("collection.id"))
    scope: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(Text, default="")
    # issue 7: grants made by an approved access request
    request_id: Mapped[int | None] = mapped_column(ForeignKey("access_request.id"), index=True)
    release_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_release.id"))
    download: Mapped[bool] = mapped_column(Boolean, default=True)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires: Mapped[dt.datetime | None] = mapped_column()
    revoked: Mapped[dt.datetime | None] = mapped_column()


class DicomPeer(Base):
    """A configured DICOM application entity: a peer that may call mida, or a PACS to pull.

    ``role`` is ``peer`` (calls in: store/find/move/get with ``scope`` on
    ``collection_id``, or every collection when empty) or ``pacs`` (mida calls it).
    """

    __tablename__ = "dicom_peer"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(8), default="peer")
    ae_title: Mapped[str] = mapped_column(String(16), index=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    scope: Mapped[str] = mapped_column(String(16), default="read")
    collection_id: Mapped[int | None] = mapped_column(ForeignKey("collection.id"))
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PullItem(Base):
    """One study of a PACS pull; keys are keyed hashes, never the PACS's UIDs."""

    __tablename__ = "pull_item"
    __table_args__ = (UniqueConstraint("peer_id", "query_hash", "study_hash"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    peer_id: Mapped[int] = mapped_column(ForeignKey("dicom_peer.id"), index=True)
    query_hash: Mapped[str] = mapped_column(String(64))
    study_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    instances: Mapped[int] = mapped_column(Integer, default=0)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("job.id"))
    updated: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class LabelSchema(Base):
    """One version of a label set (:mod:`mida.annotations.schema`); never edited once added."""

    __tablename__ = "label_schema"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    sha256: Mapped[str] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AnnotationTask(Base):
    """A multi-reader worklist over a collection (:mod:`mida.annotations.tasks`)."""

    __tablename__ = "annotation_task"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collection.id"), index=True)
    schema_id: Mapped[int] = mapped_column(ForeignKey("label_schema.id"))
    readers: Mapped[list[str]] = mapped_column(JSON, default=list)
    per_case: Mapped[int] = mapped_column(Integer, default=1)
    blinded: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(16), default="open")
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TaskCase(Base):
    """One case (a series) of a task."""

    __tablename__ = "task_case"
    __table_args__ = (UniqueConstraint("task_id", "series_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("annotation_task.id"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"))
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"))
    position: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="reading")


class TaskAssignment(Base):
    """Who works on a case and in which step: ``read``, ``review`` or ``adjudicate``."""

    __tablename__ = "task_assignment"
    __table_args__ = (UniqueConstraint("case_id", "reader", "step"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("task_case.id"), index=True)
    reader: Mapped[str] = mapped_column(String(64), index=True)
    step: Mapped[str] = mapped_column(String(16), default="read")
    state: Mapped[str] = mapped_column(String(16), default="assigned")
    updated: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Annotation(Base):
    """The identity of one annotation: what it is about, who made it, with which label.

    Its content lives in :class:`AnnotationRevision` rows; an edit adds a revision and
    never overwrites one. ``uid`` is a DICOM UID (used as the tracking UID on export).
    """

    __tablename__ = "annotation"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(64), unique=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collection.id"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    series_id: Mapped[int | None] = mapped_column(ForeignKey("series.id"), index=True)
    instance_id: Mapped[int | None] = mapped_column(ForeignKey("instance.id"))
    frame: Mapped[int | None] = mapped_column(Integer)
    level: Mapped[str] = mapped_column(String(16))
    schema_id: Mapped[int] = mapped_column(ForeignKey("label_schema.id"))
    label: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    reader: Mapped[str] = mapped_column(String(64), index=True)
    reader_kind: Mapped[str] = mapped_column(String(8), default="person")
    task_id: Mapped[int | None] = mapped_column(ForeignKey("annotation_task.id"), index=True)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AnnotationRevision(Base):
    """One immutable revision of an annotation.

    ``data`` holds the geometry or value (box, polygon points, class value,
    measurement, de-identified text); a mask is a blob (``mask_sha256``) whose
    ``geometry`` ties it to the series: shape, origin, spacing, direction and the
    SOP Instance UID of every slice.
    """

    __tablename__ = "annotation_revision"
    __table_args__ = (UniqueConstraint("annotation_id", "revision"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    annotation_id: Mapped[int] = mapped_column(ForeignKey("annotation.id"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    mask_sha256: Mapped[str | None] = mapped_column(String(64))
    geometry: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    author: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str | None] = mapped_column(String(64))
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    comment: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


# ------------------------------------------------------------ issue 6: AI-ready datasets

class Feature(Base):
    """One feature value of a series: an acquisition parameter, a QC metric or radiomics.

    ``family`` is ``acq`` (normalised acquisition parameters), ``qc`` (image
    quality) or ``radiomics`` (pyradiomics, per annotated region). ``region``
    is empty for whole-series features; for radiomics it names the region as
    ``<label>:<annotation uid>@<revision>`` so a value stays traceable to the
    exact mask it was computed on. Numbers go in ``value_num``, words in
    ``value_text``. Extracting again replaces a series' values of that family.
    """

    __tablename__ = "feature"
    __table_args__ = (UniqueConstraint("series_id", "family", "region", "name"),
                      # cohort tests like acq.kvp >= 100 filter by family, name and value
                      Index("ix_feature_family_name_num", "family", "name", "value_num"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    family: Mapped[str] = mapped_column(String(16), index=True)
    region: Mapped[str] = mapped_column(String(160), default="")
    name: Mapped[str] = mapped_column(String(128), index=True)
    value_num: Mapped[float | None] = mapped_column(Float)
    value_text: Mapped[str | None] = mapped_column(String(256))
    annotation_revision_id: Mapped[int | None] = mapped_column(
        ForeignKey("annotation_revision.id"))
    extractor: Mapped[str] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Cohort(Base):
    """A saved cohort: a named expression over the catalog (see ``mida.datasets.cohort``).

    A cohort is a definition, not a frozen list: it is evaluated again each time.
    A release freezes its members.
    """

    __tablename__ = "cohort"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    expression: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Restriction(Base):
    """A release restriction: a flag that keeps data out of releases and exports.

    ``level`` is ``collection``, ``patient``, ``study`` or ``series`` and
    ``target_id`` the row id at that level. ``reason`` is one of
    ``personal_data``, ``trade_secret``, ``contract``, ``consent_withdrawn``
    or ``embargo`` (with ``until``: the embargo ends on that date). A lifted
    restriction keeps its row with ``lifted`` set.
    """

    __tablename__ = "restriction"
    __table_args__ = (Index("ix_restriction_target", "level", "target_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    level: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))
    until: Mapped[dt.date | None] = mapped_column(Date)
    note: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    lifted: Mapped[dt.datetime | None] = mapped_column()
    lifted_by: Mapped[str | None] = mapped_column(String(64))


class DatasetRelease(Base):
    """An immutable, versioned dataset: the frozen members of a cohort with pinned labels.

    Once ``status`` is ``ready`` nothing about the release changes. Its
    manifest (every file with its sha256, the annotation revisions, the
    de-identification profile and key id, the code version) is a JSON blob
    in the node's store, addressed by ``manifest_sha256``.
    """

    __tablename__ = "dataset_release"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(32))
    cohort_id: Mapped[int | None] = mapped_column(ForeignKey("cohort.id"))
    expression: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="building")
    split: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    code_version: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ReleaseSeries(Base):
    """A series frozen into a release, with its patient and split."""

    __tablename__ = "release_series"
    __table_args__ = (UniqueConstraint("release_id", "series_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("dataset_release.id"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    split: Mapped[str] = mapped_column(String(16))


class ReleaseAnnotation(Base):
    """An annotation revision pinned into a release (exports read exactly this revision)."""

    __tablename__ = "release_annotation"
    __table_args__ = (UniqueConstraint("release_id", "revision_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("dataset_release.id"), index=True)
    revision_id: Mapped[int] = mapped_column(ForeignKey("annotation_revision.id"))


# ------------------------------------------------------------ issue 7: governance

class DuaTemplate(Base):
    """A versioned data use agreement text; a version, once added, never changes."""

    __tablename__ = "dua_template"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(256))
    body: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AccessRequest(Base):
    """A researcher's request for a cohort or a release, routed to each owner's DAC.

    ``status``: ``submitted`` (awaiting decisions), ``changes_requested``,
    ``rejected``, ``approved`` (every owning institution approved; awaiting the
    DUA), ``granted`` (DUA accepted, grants made), ``withdrawn``. A
    resubmission raises ``revision``; decisions are per revision.
    """

    __tablename__ = "access_request"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    researcher_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    title: Mapped[str] = mapped_column(String(256))
    purpose: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(String(16))
    cohort_id: Mapped[int | None] = mapped_column(ForeignKey("cohort.id"))
    release_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_release.id"))
    expression: Mapped[str] = mapped_column(Text, default="")
    collection_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    handlers: Mapped[list[str]] = mapped_column(JSON, default=list)
    irb_number: Mapped[str] = mapped_column(String(64))
    irb_body: Mapped[str] = mapped_column(String(256))
    irb_expiry: Mapped[dt.date] = mapped_column(Date)
    irb_document_sha256: Mapped[str | None] = mapped_column(String(64))
    irb_document_name: Mapped[str | None] = mapped_column(String(256))
    download: Mapped[bool] = mapped_column(Boolean, default=False)
    dua_template_id: Mapped[int | None] = mapped_column(ForeignKey("dua_template.id"))
    status: Mapped[str] = mapped_column(String(24), default="submitted", index=True)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RequestDecision(Base):
    """One DAC's decision on one revision of a request: approve, reject or changes."""

    __tablename__ = "request_decision"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("access_request.id"), index=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institution.id"))
    revision: Mapped[int] = mapped_column(Integer)
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[str] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class DuaAcceptance(Base):
    """A user's acceptance of a DUA version for a request (time and exact text hash)."""

    __tablename__ = "dua_acceptance"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("access_request.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"))
    template_id: Mapped[int] = mapped_column(ForeignKey("dua_template.id"))
    template_sha256: Mapped[str] = mapped_column(String(64))
    accepted: Mapped[dt.datetime] = mapped_column(default=utcnow)


class VaultResolution(Base):
    """An honest broker's request to resolve a pseudonym, approved by a second person."""

    __tablename__ = "vault_resolution"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(64))
    justification: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decision_reason: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    decided: Mapped[dt.datetime | None] = mapped_column()
    resolved: Mapped[dt.datetime | None] = mapped_column()


Index("ix_study_patient_date", Study.patient_id, Study.StudyDate)

__all__ = [
    "AccessRequest",
    "Annotation",
    "AnnotationRevision",
    "AnnotationTask",
    "ApiToken",
    "Base",
    "Cohort",
    "Collection",
    "DatasetRelease",
    "DicomPeer",
    "DuaAcceptance",
    "DuaTemplate",
    "Feature",
    "Grant",
    "Instance",
    "Institution",
    "Job",
    "LabelSchema",
    "Patient",
    "Provenance",
    "PullItem",
    "QuarantineEntry",
    "ReleaseAnnotation",
    "ReleaseSeries",
    "RequestDecision",
    "Restriction",
    "Series",
    "Study",
    "TaskAssignment",
    "TaskCase",
    "User",
    "VaultResolution",
]
