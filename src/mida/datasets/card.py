"""Dataset cards: a release described from its own manifest.

``mida release card NAME@X.Y.Z`` writes a datasheet for an immutable release
(:mod:`mida.datasets.release`). Every number on it is **computed** from the
release manifest (the canonical JSON blob whose sha256 the release row keeps)
and from the catalog's metadata of the release's collections and
institutions; nothing is typed by hand, so a card can be rebuilt at any time
and comes out byte-identical.

The card is one set of files (:data:`CARD_FILES`):

``card.md``, ``card.html``
    The human-readable datasheet: the programme's table fields (name, source,
    time range and frequency, volume, main variables, format, annotation
    items), composition charts (modality, sex, age, labels, sites, study
    years, splits), the de-identification report and the responsible-AI
    fields. The HTML page is self-contained: inline CSS and SVG, no script,
    no external asset, all text escaped.
``croissant.json``
    `Croissant 1.1 <http://mlcommons.org/croissant/1.1>`_ JSON-LD with the
    `RAI <http://mlcommons.org/croissant/RAI/1.0>`_ fields; its distribution
    lists ``manifest.json``, ``series.csv`` and ``annotations.csv`` with their
    sha256, and its record sets describe the two tables' columns.
``dcat.json``
    A DCAT-AP record (JSON-LD) for the national data catalogue.
``deid-report.json``
    How the images were de-identified (profiles, versions, options, key ids:
    never a key) and what release restrictions kept out.
``series.csv``, ``annotations.csv``
    One row per series and one per pinned annotation revision.
``manifest.json``
    The release manifest, byte for byte (its sha256 is the release's).

Definitions used throughout (also in ``docs/dataset-cards.md``):

* a **patient** is an institution code plus its pseudonymous PatientID; sex is
  the patient's recorded PatientSex, age the PatientAge at the patient's
  earliest study in the release (in whole years; under one year is 0);
* **time range** is the earliest and latest StudyDate, which are the dates as
  de-identified (shifted per patient when the profile shifts dates);
* **frequency** is studies per calendar year and month, and the mean number of
  studies per month over the months the time range spans;
* **completeness** of a variable is the share of series where it has a value.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mida.catalog.models import Collection, DatasetRelease, Institution
from mida.datasets import card_ld, card_render
from mida.datasets.card_data import (
    Chart,
    SourceInfo,
    annotations_csv,
    charts,
    programme_table,
    series_csv,
)
from mida.datasets.card_rai import deid_report, rai_fields
from mida.deid.profile import Profile, get_profile
from mida.errors import DatasetError, DeidError
from mida.storage.blobstore import BlobStore

CARD_FILES = ("card.md", "card.html", "croissant.json", "dcat.json", "deid-report.json",
              "series.csv", "annotations.csv", "manifest.json")
"""The files :func:`write_card` writes, in this order."""


@dataclass(frozen=True)
class Card:
    """A release's dataset card, every part computed from its manifest.

    Attributes
    ----------
    release
        ``name@version``.
    programme_table
        The programme's fields (see :func:`programme_table`).
    charts
        Composition charts by key (``modality``, ``sex``, ``age``, ``labels``,
        ``institution``, ``collection``, ``study_year``, ``split``).
    markdown, html
        The datasheet.
    croissant, dcat
        JSON-LD documents (Croissant 1.1 + RAI; DCAT-AP).
    deid_report
        The de-identification report.
    series_csv, annotations_csv
        The two tables the Croissant record sets describe.
    manifest_bytes, manifest_sha256
        The release manifest as stored, and its sha256.
    rai
        The Croissant RAI fields (also in ``croissant``, prefixed ``rai:``).
    """

    release: str
    programme_table: dict[str, Any]
    charts: dict[str, Chart]
    markdown: str
    html: str
    croissant: dict[str, Any]
    dcat: dict[str, Any]
    deid_report: dict[str, Any]
    series_csv: str
    annotations_csv: str
    manifest_bytes: bytes
    manifest_sha256: str
    rai: dict[str, Any]

    def files(self) -> dict[str, bytes]:
        """Each card file's name and exact bytes, in :data:`CARD_FILES` order."""
        return {
            "card.md": self.markdown.encode(),
            "card.html": self.html.encode(),
            "croissant.json": dump_json(self.croissant),
            "dcat.json": dump_json(self.dcat),
            "deid-report.json": dump_json(self.deid_report),
            "series.csv": self.series_csv.encode(),
            "annotations.csv": self.annotations_csv.encode(),
            "manifest.json": self.manifest_bytes,
        }


def dump_json(obj: Any) -> bytes:
    """Stable, readable JSON: sorted keys, two-space indent, a final newline."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------- inputs

def source_info(s: Session, manifest: dict[str, Any]) -> SourceInfo:
    """The catalog's names and descriptions of the manifest's institutions and collections.

    The licence is each collection's ``license`` (``mida collections terms
    --license``); when none is set the card says the licence is not set.
    """
    codes = sorted({x["institution"] for x in manifest["series"]})
    names = sorted({x["collection"] for x in manifest["series"]})
    insts = {i.code: i.name for i in s.scalars(select(Institution)
                                               .where(Institution.code.in_(codes)))}
    colls: dict[str, dict[str, Any]] = {}
    licenses: set[str] = set()
    for c in s.scalars(select(Collection).where(Collection.name.in_(names))):
        colls[c.name] = {"description": c.description or "", "deid_profile": c.deid_profile,
                         "institution": c.institution.code}
        lic = getattr(c, "license", None)
        if isinstance(lic, str) and lic.strip():
            licenses.add(lic.strip())
    for code in codes:
        insts.setdefault(code, code)
    for name in names:
        colls.setdefault(name, {"description": "", "deid_profile": None, "institution": None})
    return SourceInfo(insts, colls, tuple(sorted(licenses)))


def _profile(name: str, home: Path | None) -> Profile | None:
    try:
        return get_profile(name, home)
    except DeidError:
        return None


# ----------------------------------------------------------------- the card

def build_card(s: Session, store: BlobStore, release_row: DatasetRelease, *,
               home: Path | None = None, license: str | None = None) -> Card:
    """The dataset card of a ready release.

    Parameters
    ----------
    s
        A catalog session (read only: collection and institution metadata).
    store
        The node's blob store, which holds the release manifest.
    release_row
        The release (:func:`mida.datasets.release.get`).
    home
        The node's home, where node-specific de-identification profiles live.
    license
        A licence (SPDX id or URL) to state; default: the collections' own,
        else the card says the licence is not set.
    """
    if release_row.status != "ready" or not release_row.manifest_sha256:
        raise DatasetError(f"release {release_row.name}@{release_row.version} is not ready: "
                           "only a ready release has a manifest to describe")
    raw = store.get(release_row.manifest_sha256, verify=True)
    manifest: dict[str, Any] = json.loads(raw)
    return compose(raw, source_info(s, manifest), home=home, license=license)


def compose(manifest_bytes: bytes, src: SourceInfo, *, home: Path | None = None,
            license: str | None = None) -> Card:
    """The card of a manifest (as stored) and its sources' metadata; no catalog access."""
    manifest: dict[str, Any] = json.loads(manifest_bytes)
    profiles = {(d["profile"], d["profile_version"]): _profile(d["profile"], home)
                for d in manifest.get("deid", [])}
    table = programme_table(manifest, src, list(profiles.values()))
    cs = charts(manifest)
    report = deid_report(manifest, src, profiles)
    licenses = (license,) if license else src.licenses
    s_csv, a_csv = series_csv(manifest), annotations_csv(manifest)
    files = {"manifest.json": manifest_bytes, "series.csv": s_csv.encode(),
             "annotations.csv": a_csv.encode()}
    rai = rai_fields(manifest, table, cs, report)
    croissant = card_ld.croissant(manifest, table, rai, files, licenses)
    dcat = card_ld.dcat(manifest, table, files, licenses)
    digest = sha256(manifest_bytes)
    md = card_render.markdown(table, cs, report, rai, digest, licenses)
    page = card_render.html(table, cs, report, rai, digest, licenses)
    return Card(release=table["name"], programme_table=table, charts=cs, markdown=md, html=page,
                croissant=croissant, dcat=dcat, deid_report=report, series_csv=s_csv,
                annotations_csv=a_csv, manifest_bytes=manifest_bytes, manifest_sha256=digest,
                rai=rai)


# ----------------------------------------------------------------- writing

def write_card(card: Card, out_dir: Path) -> list[Path]:
    """Write the card files into ``out_dir`` (created if missing); returns their paths.

    Each file is written to a temporary name and renamed into place, so a
    crash never leaves a torn file; writing the same card again gives the same
    bytes (nothing on the card depends on when it was written).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in card.files().items():
        path = out_dir / name
        tmp = out_dir / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
        paths.append(path)
    return paths


__all__ = ["CARD_FILES", "Card", "build_card", "compose", "dump_json", "source_info",
           "write_card"]
