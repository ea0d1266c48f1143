"""The one settings object for a mida node.

Every setting comes from the environment with the prefix ``MIDA_`` (or a
``.env`` file), is validated on assignment, and is derived from ``MIDA_HOME``
when not given. Deployments differ by settings, never by code edits.

Examples
--------
>>> s = Settings(home="/tmp/node")
>>> s.database_url
'sqlite:////tmp/node/catalog.sqlite'
>>> s.storage_url
'/tmp/node/blobs'
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_workers() -> int:
    return max(1, os.cpu_count() or 1)


class Settings(BaseSettings):
    """Validated settings of a mida node (env prefix ``MIDA_``)."""

    model_config = SettingsConfigDict(
        env_prefix="MIDA_", env_file=".env", extra="ignore", validate_assignment=True
    )

    home: Path = Field(default=Path("./mida-data"), description="Node folder (MIDA_HOME).")
    database_url: str = Field(default="", description="SQLAlchemy URL; SQLite under home.")
    storage_url: str = Field(default="", description="fsspec URL of the blob store.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options as JSON, e.g. an S3 endpoint_url."
    )
    workers: int = Field(default_factory=_default_workers, ge=1, le=256)
    # Ingest behaviour
    batch_size: int = Field(default=200, ge=1, description="Catalog rows per transaction.")
    max_in_flight: int = Field(default=0, ge=0, description="Queued files; 0 = 4 x workers.")
    fsync: bool = Field(default=False, description="fsync each blob (power-loss safety).")
    quarantine_encapsulated_documents: bool = True
    pixel_risk_modalities: str = Field(
        default="US,SC,DX,XA,OT,XC,ES,GM",
        description="Modalities whose every frame is OCRed for burned-in text and blanked "
        "(anything with BurnedInAnnotation YES is too).",
    )
    ocr_engine: str = Field(
        default="tesseract",
        description="OCR for burned-in text: 'tesseract' (Debian tesseract-ocr, eng + chi_tra).",
    )
    # Archive bounds (zip/tar): a member or archive over these is refused.
    archive_max_members: int = Field(default=100_000, ge=1)
    archive_max_member_bytes: int = Field(default=2 * 1024**3, ge=1)
    archive_max_total_bytes: int = Field(default=64 * 1024**3, ge=1)
    archive_max_ratio: float = Field(default=200.0, gt=1)
    # Faces
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    public_url: str = Field(
        default="", description="Base URL clients reach the API at (BulkDataURIs, Location); "
        "default http://HOST:PORT.",
    )
    cors_origins: str = Field(
        default="*", description="Origins allowed by CORS (comma-separated; '*' for any), "
        "for browser viewers such as OHIF.",
    )
    stow_max_bytes: int = Field(
        default=2 * 1024**3, ge=1, description="Largest STOW-RS request body accepted (413 above)."
    )
    audit_fsync: bool = Field(default=True, description="fsync each audit entry.")
    # DICOM network node
    dicom_ae_title: str = Field(default="MIDA", min_length=1, max_length=16)
    dicom_port: int = Field(default=11112, ge=1, le=65535)
    dicom_ae_collections: dict[str, str] = Field(
        default_factory=dict,
        description="Called AE title -> collection for C-STORE, as JSON, e.g. "
        '{"MIDA_CT": "ct-research"}; other called titles store into dicom_default_collection.',
    )
    dicom_default_collection: str = Field(default="dicom-inbox", min_length=1)
    dicom_max_pdu: int = Field(default=0, ge=0, description="0 = unlimited.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    linkage_vault: bool = Field(
        default=False, description="Keep an encrypted pseudonym-to-identity vault (honest broker)."
    )
    deid_profile: str = Field(
        default="default", description="De-identification profile for new collections."
    )
    # Governance defaults follow Taiwanese practice (HWDC and the programme's rules);
    # each is a setting, so another jurisdiction's profile changes values, not code.
    small_cell_min: int = Field(
        default=3, ge=0,
        description="Counts below this are hidden (shown as '<N') to users without a grant "
        "on the data; 0 shows every count.")
    handler_cap: int = Field(
        default=6, ge=1,
        description="Most named data handlers per access request, unless a collection sets "
        "its own cap.")
    grant_within_irb: bool = Field(
        default=True,
        description="A grant never outlives the IRB approval of the request that made it.")
    timezone: str = Field(
        default="Asia/Taipei",
        description="The node's legal time zone (IANA name): an IRB approval valid until a "
        "date ends at midnight there.")

    @field_validator("timezone", mode="after")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}: use an IANA name such as "
                             "Asia/Taipei or UTC") from None
        return v

    @property
    def tz(self) -> dt.tzinfo:
        """:attr:`timezone` as a tzinfo."""
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.timezone)

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        return v.expanduser().absolute()

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.home / 'catalog.sqlite'}")
        if not self.storage_url:
            object.__setattr__(self, "storage_url", str(self.home / "blobs"))
        return self

    @property
    def base_url(self) -> str:
        """Where clients reach the HTTP API (no trailing slash)."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def key_file(self) -> Path:
        """The de-identification key (mode 0600, never logged)."""
        return self.home / "keys" / "deid.key"

    @property
    def vault_key_file(self) -> Path:
        """The linkage vault's key (mode 0600), apart from the de-identification key."""
        return self.home / "keys" / "vault.key"

    @property
    def vault_file(self) -> Path:
        return self.home / "vault" / "vault.sqlite"

    @property
    def audit_file(self) -> Path:
        return self.home / "audit" / "audit.jsonl"

    @property
    def node_file(self) -> Path:
        """The node descriptor written by ``mida init``."""
        return self.home / "node.json"

    @property
    def quarantine_dir(self) -> Path:
        """Protected area holding quarantined originals; never exported."""
        return self.home / "quarantine"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def risk_modalities(self) -> frozenset[str]:
        return frozenset(m.strip().upper() for m in self.pixel_risk_modalities.split(",") if m)

    @property
    def in_flight(self) -> int:
        return self.max_in_flight or 4 * self.workers


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


__all__ = ["Settings", "get_settings"]
