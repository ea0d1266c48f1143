"""One exception tree for mida.

Every error raised by mida derives from :class:`MidaError`. Lower-layer errors
(pydicom, SQLAlchemy, fsspec) are translated into this tree at the boundary of
the module that calls them, and each message tells the user what was wrong and
how to fix it. Messages never carry identified data: values read from a source
file are never interpolated into a message.
"""

from __future__ import annotations

import enum


class MidaError(Exception):
    """Root of every mida error."""


class ConfigError(MidaError):
    """Settings are invalid or inconsistent."""


class NotInitializedError(MidaError):
    """The node has not been initialised with ``mida init``."""

    def __init__(self, home: str) -> None:
        super().__init__(
            f"no mida node at {home}: run 'mida init --institution CODE --name NAME' first "
            "(or set MIDA_HOME to an initialised node)"
        )


class AlreadyInitializedError(MidaError):
    """``mida init`` was run on a node that already exists."""


class StorageError(MidaError):
    """The blob store failed or holds corrupt content."""


class BlobNotFoundError(StorageError):
    """No blob with the requested digest exists."""


class IntegrityError(StorageError):
    """A blob's content does not match its digest."""


class CatalogError(MidaError):
    """The catalog database failed or is inconsistent."""


class NotFoundError(CatalogError):
    """A requested catalog record does not exist."""


class AuthError(MidaError):
    """No valid credentials (HTTP 401): missing, unknown, tampered, expired or revoked."""


class AccessDeniedError(MidaError):
    """Valid credentials without the right (HTTP 403). The message never says whether
    the resource exists."""


class ConflictError(MidaError):
    """The request conflicts with the current state (e.g. a name already in use)."""


class JobCancelledError(MidaError):
    """A long job stopped because someone asked it to."""


class DeidError(MidaError):
    """De-identification could not be applied safely."""


class QuarantineReason(enum.StrEnum):
    """Reason codes recorded on a quarantine entry.

    Values are stable identifiers: scripts and reports may match on them.
    """

    NOT_DICOM = "not_dicom"
    TRUNCATED = "truncated"
    BAD_VR = "bad_vr"
    MALFORMED = "malformed"
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"
    MISSING_UID = "missing_uid"
    PIXEL_UNDECODABLE = "pixel_undecodable"
    BURNED_IN_TEXT = "burned_in_text"
    ENCAPSULATED_DOCUMENT = "encapsulated_document"
    DICOMDIR = "dicomdir"
    UID_CONFLICT = "uid_conflict"
    UNSAFE_ARCHIVE = "unsafe_archive"
    ARCHIVE_LIMIT = "archive_limit"
    UNREADABLE = "unreadable"
    DEID_FAILED = "deid_failed"
    INTERNAL = "internal"


class QuarantineError(MidaError):
    """An input cannot be ingested safely; it goes to quarantine.

    Parameters
    ----------
    reason
        The machine-readable reason code.
    message
        A human-readable explanation that never contains values read from
        the source (no names, IDs, UIDs or dates).
    """

    def __init__(self, reason: QuarantineReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


class UnsafeArchiveError(QuarantineError):
    """An archive breaks the safety limits (traversal, bomb, link)."""


class IngestError(MidaError):
    """The ingest run itself failed (not a single bad file)."""


__all__ = [
    "AccessDeniedError",
    "AlreadyInitializedError",
    "AuthError",
    "BlobNotFoundError",
    "CatalogError",
    "ConfigError",
    "ConflictError",
    "DeidError",
    "IngestError",
    "IntegrityError",
    "JobCancelledError",
    "MidaError",
    "NotFoundError",
    "NotInitializedError",
    "QuarantineError",
    "QuarantineReason",
    "StorageError",
    "UnsafeArchiveError",
]


class AnnotationError(MidaError):
    """An annotation, label schema or annotation file is invalid or conflicts with the catalog."""


class SchemaError(AnnotationError):
    """A label schema file is malformed or conflicts with a stored version."""


class GeometryMismatchError(AnnotationError):
    """An annotation's grid (shape, spacing, origin, direction) does not fit its series."""


class DatasetError(MidaError):
    """A cohort, release, export, card or package cannot be made as asked."""


class CohortSyntaxError(DatasetError):
    """A cohort expression does not parse; ``column`` (1-based) points at the offending text."""

    def __init__(self, message: str, expression: str, column: int) -> None:
        self.expression = expression
        self.column = column
        caret = " " * (column - 1) + "^"
        super().__init__(f"column {column}: {message}\n  {expression}\n  {caret}")
