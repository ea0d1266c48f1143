"""Attribution: each contributing institution's share of a release.

For IP sharing agreements and citations, :func:`attribution` counts, from
the release's manifest (immutable, hash-checked: the counts are those of
what was released, whatever the catalog says today), what each institution
contributed:

``patients``
    Distinct patients (``institution/PatientID`` in the manifest).
``studies``, ``series``, ``instances``, ``bytes``
    Distinct studies and series, and the instances and bytes in them.
``annotations``
    Pinned annotation revisions on the institution's studies and series
    (credited to the institution that provided the images, not to the
    reader who drew them; the ``readers`` field lists the readers).

``share`` gives each count as a fraction of the release's total (0 to 1,
four decimals; they sum to 1 up to rounding). ``collections`` lists the
institution's collections in the release with their licence, citation and
contributors, to quote in a paper or a data availability statement.

This lives with the releases (floor 4) because it reads release manifests,
whose layout :mod:`mida.datasets.release` owns.

Examples
--------
``mida reports attribution liver@1.0.0`` prints one row per institution, e.g.
``NTUH  patients 12 (60.0%)  studies 14 (58.3%) ...``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mida.catalog.models import Collection, Institution
from mida.datasets import release as releases
from mida.storage.blobstore import BlobStore

COUNTS = ("patients", "studies", "series", "instances", "bytes", "annotations")


def from_manifest(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Institution code -> its counts, collections and readers, from a release manifest."""
    acc: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "patients": set(), "studies": set(), "series": 0, "instances": 0, "bytes": 0,
        "annotations": 0, "collections": set(), "readers": set()})
    owner_of_study: dict[str, str] = {}
    owner_of_series: dict[str, str] = {}
    for x in manifest["series"]:
        inst = x["institution"]
        a = acc[inst]
        a["patients"].add(x["patient"])
        a["studies"].add(x["StudyInstanceUID"])
        a["series"] += 1
        a["instances"] += len(x["instances"])
        a["bytes"] += sum(int(i["size"]) for i in x["instances"])
        a["collections"].add(x["collection"])
        owner_of_study[x["StudyInstanceUID"]] = inst
        owner_of_series[x["SeriesInstanceUID"]] = inst
    for ann in manifest["annotations"]:
        inst = (owner_of_series.get(ann.get("SeriesInstanceUID") or "")
                or owner_of_study.get(ann.get("StudyInstanceUID") or ""))
        if inst is None:
            continue  # cannot happen for a manifest mida wrote: every annotation is on a member
        acc[inst]["annotations"] += 1
        if ann.get("reader"):
            acc[inst]["readers"].add(str(ann["reader"]))
    return {code: {"patients": len(a["patients"]), "studies": len(a["studies"]),
                   "series": a["series"], "instances": a["instances"], "bytes": a["bytes"],
                   "annotations": a["annotations"], "collections": sorted(a["collections"]),
                   "readers": sorted(a["readers"])}
            for code, a in sorted(acc.items())}


def attribution(s: Session, store: BlobStore, ref: str) -> dict[str, Any]:
    """Each institution's share of release ``ref`` (``NAME@X.Y.Z``, or ``NAME``: the latest).

    Returns ``{"release", "manifest_sha256", "totals", "institutions"}``;
    each institution: ``code``, ``name``, the :data:`COUNTS`, ``share`` (the
    same keys, as fractions of ``totals``), ``readers`` and ``collections``
    (``name``, ``license``, ``citation``, ``contributors``).
    """
    row = releases.get(s, ref)
    manifest = releases.load_manifest(store, row)
    per = from_manifest(manifest)
    totals = {k: sum(v[k] for v in per.values()) for k in COUNTS}
    names = {code: name for code, name in s.execute(
        select(Institution.code, Institution.name).where(Institution.code.in_(list(per))))}
    wanted = sorted({c for v in per.values() for c in v["collections"]})
    cols = {c.name: c for c in s.scalars(select(Collection).where(Collection.name.in_(wanted)))}
    institutions = []
    for code, v in per.items():
        institutions.append({
            "code": code, "name": names.get(code, code),
            **{k: v[k] for k in COUNTS},
            "share": {k: round(v[k] / totals[k], 4) if totals[k] else 0.0 for k in COUNTS},
            "readers": v["readers"],
            "collections": [
                {"name": c, "license": cols[c].license if c in cols else None,
                 "citation": cols[c].citation if c in cols else "",
                 "contributors": list(cols[c].contributors or []) if c in cols else []}
                for c in v["collections"]]})
    return {"release": f"{row.name}@{row.version}", "manifest_sha256": row.manifest_sha256,
            "totals": totals, "institutions": institutions}


__all__ = ["COUNTS", "attribution", "from_manifest"]
