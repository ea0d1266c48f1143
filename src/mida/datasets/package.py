"""Packages: a release as a BagIt bag for the national data center.

``mida release package NAME@X.Y.Z --out DIR`` writes a
`BagIt <https://www.rfc-editor.org/rfc/rfc8493>`_ (RFC 8493) bag::

    DIR/
      bagit.txt                 BagIt version and encoding
      bag-info.txt              who, what, when (see :func:`bag_info`), Payload-Oxum
      manifest-sha256.txt       sha256 of every payload file
      manifest-sha512.txt       sha512 of every payload file
      tagmanifest-sha256.txt    checksums of the tag files above
      tagmanifest-sha512.txt
      data/                     the payload:
        manifest.json           the release manifest, byte for byte
        card.md  card.html  croissant.json  dcat.json  deid-report.json
        series.csv  annotations.csv
        DICOM/...               with --with-data: the files (mida.datasets.export layout)
        mida-export.json        with --with-data: what the export wrote and left out

The receiver checks it with ``bagit.py --validate DIR`` (or
``bagit.Bag(DIR).validate()``): every payload file against both manifests,
and the file count and byte total against Payload-Oxum.

The bag is built in a hidden sibling folder (``.DIR.*.partial``) and renamed
to ``DIR`` only when complete, so an interrupted run never leaves a half bag
at ``DIR``; a leftover ``.partial`` folder can be deleted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from mida.catalog.models import DatasetRelease
from mida.datasets.card import Card, build_card, write_card
from mida.datasets.card_data import human_bytes
from mida.errors import ConflictError, DatasetError
from mida.storage.blobstore import BlobStore

CHECKSUMS = ("sha256", "sha512")


def bag_info(card: Card, *, contact_name: str | None = None, contact_email: str | None = None,
             data_formats: str | None = None, license: str | None = None) -> dict[str, Any]:
    """The ``bag-info.txt`` fields of a release's bag (BagIt's reserved names first).

    ``Source-Organization`` lists the institutions that provided the data,
    ``External-Identifier`` is ``name@version``, ``Bag-Group-Identifier`` the
    release name (all versions of a release form one group) and
    ``Internal-Sender-Identifier`` the manifest's sha256. ``Bagging-Date``,
    ``Payload-Oxum`` and ``Bag-Software-Agent`` are added by bagit.
    """
    t = card.programme_table
    info: dict[str, Any] = {
        "Source-Organization": [i["name"] for i in t["source"]["institutions"]],
        "External-Description": t["description"] or f"mida release {t['name']}",
        "External-Identifier": t["name"],
        "Bag-Group-Identifier": t["title"],
        "Bag-Count": "1 of 1",
        "Internal-Sender-Identifier": f"sha256:{card.manifest_sha256}",
        "Internal-Sender-Description": (
            f"{t['volume']['records']}; {t['volume']['annotations']} annotations; "
            f"{t['volume']['size']} of DICOM in the release"),
    }
    if contact_name:
        info["Contact-Name"] = contact_name
    if contact_email:
        info["Contact-Email"] = contact_email
    info["Mida-Release"] = t["name"]
    info["Mida-Manifest-SHA256"] = card.manifest_sha256
    info["Mida-Data"] = data_formats or "none (card and manifest only)"
    info["Mida-License"] = license or ", ".join(
        x for x in card.croissant.get("license", []) if isinstance(x, str))
    # a tag file holds one "Name: value" per line: a line break in a value would forge fields
    return {k: [_one_line(x) for x in v] if isinstance(v, list) else _one_line(v)
            for k, v in info.items()}


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())


def _payload_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _export_data(s: Session, store: BlobStore, row: DatasetRelease, formats: str, dest: Path,
                 progress: Callable[[Any], None] | None) -> dict[str, Any]:
    """Write the release's data in ``formats`` into the empty folder ``dest``."""
    try:
        from mida.datasets.export import export
    except ImportError as exc:  # the exporters are optional parts of an install
        raise DatasetError(f"cannot include data: the release exporters are unavailable "
                           f"({exc}); package without --with-data") from None
    result = export(s, store, row, [formats], dest, progress=progress)
    out: dict[str, Any] = result.as_dict()
    return out


def package(s: Session, store: BlobStore, release_row: DatasetRelease, out_dir: Path, *,
            include_data: str | None = None, home: Path | None = None,
            license: str | None = None, contact_name: str | None = None,
            contact_email: str | None = None,
            progress: Callable[[Any], None] | None = None) -> Path:
    """Write release ``release_row`` as a BagIt bag at ``out_dir``; returns ``out_dir``.

    Parameters
    ----------
    s, store
        Catalog session and the node's blob store.
    release_row
        A ready release (:func:`mida.datasets.release.get`).
    out_dir
        Where the bag goes: a folder that does not exist yet, or an empty one.
    include_data
        Also put the data in the payload, in these export formats
        (``"dicom"``: the de-identified files as stored; any
        ``mida release export`` format list works). Series that a restriction
        now in force flags are left out and ``mida-export.json`` says so.
    home
        The node's home (its own de-identification profiles, for the card).
    license, contact_name, contact_email
        Stated on the card and in ``bag-info.txt``.
    progress
        Passed to the exporter (called after each series).

    Raises
    ------
    ConflictError
        If ``out_dir`` exists and is not an empty folder.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConflictError(f"{out_dir} exists and is not empty: a bag is written into a new or "
                            "empty folder (choose another --out or remove that one)")
    card = build_card(s, store, release_row, home=home, license=license)
    parent = out_dir.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=parent))
    try:
        if include_data:
            _export_data(s, store, release_row, include_data, work, progress)
        taken = {p.name for p in work.iterdir()} & set(card.files())
        if taken:
            raise DatasetError(f"the data export wrote {sorted(taken)}, which are card files")
        write_card(card, work)
        info = bag_info(card, contact_name=contact_name, contact_email=contact_email,
                        data_formats=include_data, license=license)
        info["Bag-Size"] = human_bytes(_payload_size(work))
        import bagit  # a declared dependency; imported here as only packaging needs it

        # make_bag moves the folder's content under data/ and writes the tag files;
        # it changes the process's working directory while it runs (bagit does).
        bag = bagit.make_bag(str(work), bag_info=info, checksums=list(CHECKSUMS))
        bag.validate(fast=True)  # Payload-Oxum: file count and bytes as written
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above): the rename needs the name free
        os.replace(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out_dir


__all__ = ["CHECKSUMS", "bag_info", "package"]
