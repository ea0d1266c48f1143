"""Usage reports: who used which collection, for which approved purpose, how often.

:func:`usage` reads the audit trail (:mod:`mida.sharing.audit`) over a
period and the grants in the catalog, and counts, per collection, per user
and per purpose, each kind of use:

``read``
    Metadata, searches, rendered images and thumbnails, release manifests
    and cards: REST and DICOMweb ``GET`` answered 2xx/3xx that are not a
    download; DIMSE C-FIND.
``download``
    Raw data leaving the node: DICOMweb WADO retrieval of studies, series,
    instances, frames and bulk data, ``/api/releases/.../download``; DIMSE
    C-MOVE and C-GET.
``export``
    ``mida release export`` and ``mida release package`` at the console
    (the release's collections), ``mida annotations export``.
``write``
    Other allowed HTTP methods (STOW-RS, annotations) and DIMSE C-STORE.
``denied``
    Any of these refused (401/403, DIMSE "denied"): attempts are usage too.

**Attribution of an entry to collections.** An entry names its data in one
of these ways, tried in order: a ``collection`` (or ``collections``) field;
a ``release`` (``NAME@X.Y.Z``: every collection the release spans); an HTTP
path (``/dicomweb/studies/{uid}...``, ``/api/series/{uid}/...``,
``/api/uids/{uid}``, ``/api/releases/{name}/{version}/...``,
``/api/collections/{name}/...``, ``/api/annotations/{uid}/...``); a DIMSE
``object`` (study UIDs). Entries naming none (a QIDO search over every
collection, ``/api/stats``) are counted under ``*`` (node-wide).

**Purpose.** A use is credited to the grant that allowed it: an entry that
names ``grant_id`` (or ``grant``) or ``request_id`` is credited to that grant
or request;
otherwise to the user's grant that was in force at the entry's time and
covers the collection, preferring a release grant on the entry's release,
then a grant on that collection, then an all-collections grant (the newest
when several tie). Uses with no such grant (administrators, operators,
console users, denials) show the purpose ``(no grant)``.

Only HTTP (one entry per request, written by the API's middleware), DIMSE
and the console's export commands count; governance entries (requests,
decisions, grants) are decisions, not uses, and are left out.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mida.catalog.models import (
    Annotation,
    Collection,
    DatasetRelease,
    Grant,
    Instance,
    ReleaseSeries,
    Series,
    Study,
    User,
)
from mida.errors import NotFoundError
from mida.sharing.audit import AuditLog, entry_time

ACTIONS = ("read", "download", "export", "write", "denied")
NODE_WIDE = "*"
NO_GRANT = "(no grant)"
_RETRIEVE_SUFFIXES = ("metadata", "rendered", "thumbnail")
_EXPORT_ACTIONS = {"release.export": "export", "release.package": "export",
                   "annotations.export": "export"}


@dataclass(frozen=True)
class Use:
    """One audit entry read as a use: what kind, by whom, of what, when."""

    action: str
    actor: str
    time: dt.datetime
    collections: tuple[str, ...] = ()
    release: str | None = None
    grant_id: int | None = None
    request_id: int | None = None


def _user_of(actor: str) -> tuple[str, str]:
    """(kind, name) of an audit actor: ``user:alice`` -> (user, alice), ``root`` -> (console,
    root)."""
    kind, sep, name = actor.partition(":")
    if sep and kind in ("user", "peer", "local", "unknown-ae"):
        return kind, name
    return ("anonymous", actor) if actor == "anonymous" else ("console", actor)


class _Resolver:
    """UIDs, release refs and collection names to collection names (cached lookups)."""

    def __init__(self, s: Session) -> None:
        self.s = s
        self.names = {cid: name for cid, name in s.execute(select(Collection.id,
                                                                  Collection.name))}
        self.uid: dict[str, tuple[str, ...]] = {}
        self.release_cols: dict[str, tuple[str, ...]] = {}
        self.release_id: dict[str, int | None] = {}

    def uid_collections(self, uid: str) -> tuple[str, ...]:
        if uid not in self.uid:
            s = self.s
            cid = (s.scalar(select(Study.collection_id).where(Study.StudyInstanceUID == uid))
                   or s.scalar(select(Study.collection_id).join(Series, Series.study_id == Study.id)
                               .where(Series.SeriesInstanceUID == uid))
                   or s.scalar(select(Study.collection_id)
                               .join(Series, Series.study_id == Study.id)
                               .join(Instance, Instance.series_id == Series.id)
                               .where(Instance.SOPInstanceUID == uid)))
            self.uid[uid] = (self.names[cid],) if cid in self.names else ()
        return self.uid[uid]

    def annotation_collections(self, uid: str) -> tuple[str, ...]:
        key = f"annotation:{uid}"
        if key not in self.uid:
            cid = self.s.scalar(select(Study.collection_id)
                                .join(Annotation, Annotation.study_id == Study.id)
                                .where(Annotation.uid == uid))
            self.uid[key] = (self.names[cid],) if cid in self.names else ()
        return self.uid[key]

    def release(self, ref: str) -> tuple[int | None, tuple[str, ...]]:
        if ref not in self.release_cols:
            name, _, version = ref.partition("@")
            rid = self.s.scalar(select(DatasetRelease.id).where(
                DatasetRelease.name == name, DatasetRelease.version == version))
            cols: tuple[str, ...] = ()
            if rid is not None:
                ids = self.s.scalars(
                    select(Study.collection_id).distinct()
                    .join(Series, Series.study_id == Study.id)
                    .join(ReleaseSeries, ReleaseSeries.series_id == Series.id)
                    .where(ReleaseSeries.release_id == rid))
                cols = tuple(sorted(self.names[c] for c in ids if c in self.names))
            self.release_id[ref], self.release_cols[ref] = rid, cols
        return self.release_id[ref], self.release_cols[ref]


def _http(detail: dict[str, Any], r: _Resolver) -> tuple[str, tuple[str, ...], str | None]:
    """(action, collections, release) of an HTTP request entry."""
    method = str(detail.get("method", "GET")).upper()
    path = str(detail.get("object", ""))
    parts = [p for p in path.split("/") if p]
    result = detail.get("result")
    action = "read" if method in ("GET", "HEAD") else "write"
    cols: tuple[str, ...] = ()
    release = None
    if parts[:2] == ["dicomweb", "studies"] and len(parts) >= 3:
        cols = r.uid_collections(parts[2])
        rest = parts[3:]
        # retrieval of a study, series, instance, frames or bulk data moves pixels out
        if method == "GET" and not (set(rest) & set(_RETRIEVE_SUFFIXES)) and (
                len(rest) in (0, 2, 4) or "frames" in rest or "bulkdata" in rest):
            action = "download"
    elif parts[:2] in (["api", "series"], ["api", "uids"]) and len(parts) >= 3:
        cols = r.uid_collections(parts[2])
    elif parts[:2] == ["api", "annotations"] and len(parts) >= 3:
        cols = r.annotation_collections(parts[2])
    elif parts[:2] == ["api", "collections"] and len(parts) >= 3:
        cols = (parts[2],)
    elif parts[:2] == ["api", "releases"] and len(parts) >= 4:
        release = f"{parts[2]}@{parts[3]}"
        cols = r.release(release)[1]
        if method == "GET" and len(parts) >= 5 and parts[4] == "download":
            action = "download"
    if result == "denied" or detail.get("status") in (401, 403):
        action = "denied"
    elif result == "failed":
        return "", (), None
    return action, cols, release


def _dimse(detail: dict[str, Any], r: _Resolver) -> tuple[str, tuple[str, ...]]:
    op = str(detail.get("op", ""))
    action = {"C-FIND": "read", "C-MOVE": "download", "C-GET": "download",
              "C-STORE": "write"}.get(op, "")
    if not action or detail.get("result") == "failed":
        return "", ()
    if detail.get("result") == "denied":
        action = "denied"
    if isinstance(detail.get("collection"), str):
        return action, (detail["collection"],)
    obj = detail.get("object")
    if isinstance(obj, list):
        cols = sorted({c for uid in obj if isinstance(uid, str) for c in r.uid_collections(uid)})
        return action, tuple(cols)
    return action, ()


def read_use(entry: dict[str, Any], r: _Resolver) -> Use | None:
    """The use an audit entry records, or None when it is not a use of data."""
    detail = entry.get("detail") if isinstance(entry.get("detail"), dict) else {}
    assert isinstance(detail, dict)
    action_name = str(entry.get("action", ""))
    when = entry_time(entry)
    if when is None:
        return None
    release = detail.get("release") if isinstance(detail.get("release"), str) else None
    cols: tuple[str, ...] = ()
    if action_name == "http":
        kind, cols, path_release = _http(detail, r)
        release = release or path_release
    elif action_name == "dimse":
        kind, cols = _dimse(detail, r)
    elif action_name in _EXPORT_ACTIONS:
        kind = _EXPORT_ACTIONS[action_name]
    else:
        return None
    if not kind:
        return None
    if isinstance(detail.get("collection"), str):
        cols = (detail["collection"],)
    elif isinstance(detail.get("collections"), list):
        cols = tuple(sorted(str(c) for c in detail["collections"]))
    elif not cols and release:
        cols = r.release(release)[1]
    gid = next((detail[k] for k in ("grant_id", "grant") if isinstance(detail.get(k), int)),
               None)
    rid = detail.get("request_id") if isinstance(detail.get("request_id"), int) else None
    return Use(kind, str(entry.get("actor", "")), when, cols, release, gid, rid)


def _aware(t: dt.datetime | None) -> dt.datetime | None:
    if t is not None and t.tzinfo is None:
        return t.replace(tzinfo=dt.UTC)
    return t


class _Grants:
    """Grants by user name, to find the one that allowed a use."""

    def __init__(self, s: Session, r: _Resolver) -> None:
        self.r = r
        self.by_user: dict[str, list[Grant]] = defaultdict(list)
        self.by_id: dict[int, Grant] = {}
        self.release_of: dict[int, str] = {}
        for g, name in s.execute(select(Grant, User.name).join(User, User.id == Grant.user_id)
                                 .order_by(Grant.id)):
            self.by_user[name].append(g)
            self.by_id[g.id] = g
        for rid, n, v in s.execute(select(DatasetRelease.id, DatasetRelease.name,
                                          DatasetRelease.version)):
            self.release_of[rid] = f"{n}@{v}"

    def find(self, use: Use, user: str, collection: str) -> Grant | None:
        if use.grant_id is not None:
            return self.by_id.get(use.grant_id)
        best: tuple[int, int, Grant] | None = None
        for g in self.by_user.get(user, ()):
            if use.request_id is not None and g.request_id != use.request_id:
                continue
            created, expires, revoked = _aware(g.created), _aware(g.expires), _aware(g.revoked)
            if (created and created > use.time) or (expires and expires <= use.time) \
                    or (revoked and revoked <= use.time):
                continue
            if g.release_id is not None:  # opens that release's endpoints only
                if use.release is None or self.release_of.get(g.release_id) != use.release:
                    continue
                rank = 3
            elif g.collection_id is not None:
                if self.r.names.get(g.collection_id) != collection:
                    continue
                rank = 2
            else:
                rank = 1
            if best is None or (rank, g.id) > best[:2]:
                best = (rank, g.id, g)
        return best[2] if best else None


def usage(s: Session, log: AuditLog, *, collection: str | None = None,
          since: dt.datetime | None = None, until: dt.datetime | None = None) -> dict[str, Any]:
    """Count uses per collection, user, purpose and action over ``[since, until)``.

    Returns ``{"period", "collection", "rows", "totals"}``. Each row:
    ``collection``, ``user``, ``user_kind`` (user, peer, console, local,
    anonymous), ``purpose`` (the grant's purpose, or ``(no grant)``),
    ``request_id`` and ``grant_id`` (None without one), ``action`` (one of
    :data:`ACTIONS`), ``count``, ``first`` and ``last`` (ISO times).
    ``totals`` counts each action per collection.
    """
    r = _Resolver(s)
    if collection is not None and collection not in r.names.values():
        raise NotFoundError(f"no collection named {collection!r}")
    grants = _Grants(s, r)
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for entry in log.iter_entries(since, until):
        use = read_use(entry, r)
        if use is None:
            continue
        kind, user = _user_of(use.actor)
        for coll in use.collections or (NODE_WIDE,):
            if collection is not None and coll != collection:
                continue
            g = grants.find(use, user, coll) if kind == "user" else None
            key = (coll, user, kind, g.id if g else None, use.action)
            row = rows.get(key)
            if row is None:
                row = rows[key] = {
                    "collection": coll, "user": user, "user_kind": kind,
                    "purpose": (g.purpose or f"grant {g.id}") if g else NO_GRANT,
                    "request_id": g.request_id if g else use.request_id,
                    "grant_id": g.id if g else None, "action": use.action, "count": 0,
                    "first": use.time.isoformat(), "last": use.time.isoformat()}
            row["count"] += 1
            row["first"] = min(row["first"], use.time.isoformat())
            row["last"] = max(row["last"], use.time.isoformat())
    out = sorted(rows.values(), key=lambda x: (x["collection"], x["user"], x["purpose"],
                                               ACTIONS.index(x["action"])))
    totals: dict[str, dict[str, int]] = {}
    for row in out:
        t = totals.setdefault(row["collection"], dict.fromkeys(ACTIONS, 0))
        t[row["action"]] += row["count"]
    return {"period": {"since": since.isoformat() if since else None,
                       "until": until.isoformat() if until else None},
            "collection": collection, "rows": out, "totals": totals}


__all__ = ["ACTIONS", "NODE_WIDE", "NO_GRANT", "Use", "read_use", "usage"]
