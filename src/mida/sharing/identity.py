"""Users, API tokens, grants and DICOM peers, and the one authorization check.

A caller is a :class:`Principal`: a user holding a Bearer token (HTTP) or a
configured DICOM peer identified by its calling AE title and address (DIMSE).
Every operation names the scope it needs (``read`` < ``write`` < ``admin``)
and the collection it touches; :meth:`Principal.require` allows it or raises
:class:`~mida.errors.AccessDeniedError`, whose message never says whether the
resource exists.

Tokens are ``mida_`` plus 43 random URL-safe characters (256 bits). Only their
sha256 is stored; a token is shown once, when created. Because the secret is
random and long, a plain sha256 is the right hash (a slow password hash would
only slow every request).

Roles cap the scope a user's tokens may carry. ``admin`` and ``operator``
reach every collection and every release; every other role reaches only the
collections and releases it holds a grant for.

A grant is on a collection (``collection_id``; none = every collection) or on
a release (``release_id``). Collection grants open the REST, DICOMweb and
annotation routes of that collection; release grants open only the release
routes (summary, manifest, card, download). A grant with ``download`` false
is *view only*: metadata, counts, rendered images and server-side compute,
but no raw data (WADO-RS retrieval, release downloads). Grants are read from
the catalog on every request (:func:`authenticate` caches nothing), so an
expiry or a revocation takes effect at the next request.

Examples
--------
>>> scope_allows("write", "read"), scope_allows("read", "write")
(True, False)
>>> parse_expiry("30d").days
30
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mida.catalog.models import (
    ApiToken,
    Collection,
    DatasetRelease,
    DicomPeer,
    Grant,
    User,
    utcnow,
)
from mida.errors import AccessDeniedError, AuthError, ConflictError, MidaError, NotFoundError

SCOPES = ("read", "write", "admin")
_RANK = {s: i for i, s in enumerate(SCOPES)}
#: Role -> the widest scope its tokens may carry, and whether it reaches every collection.
ROLES: dict[str, tuple[str, bool]] = {
    "admin": ("admin", True),
    "operator": ("admin", True),
    "provider-admin": ("admin", False),
    "steward": ("write", False),
    "annotator": ("write", False),
    "service": ("write", False),
    "researcher": ("read", False),
    "dac-member": ("read", False),
    "honest-broker": ("read", False),
}
TOKEN_PREFIX = "mida_"
_TOKEN_RE = re.compile(r"^mida_[A-Za-z0-9_-]{43}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: no backslash, no control
DENIED = "access denied: your credentials do not grant this operation on this resource"


def scope_allows(have: str, need: str) -> bool:
    """Whether scope ``have`` covers ``need``."""
    return _RANK.get(have, -1) >= _RANK[need]


def parse_expiry(text: str) -> dt.timedelta:
    """``30d``, ``12h``, ``90m`` or ``1w`` as a duration."""
    m = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", text or "")
    if not m or int(m.group(1)) == 0:
        raise MidaError(f"bad expiry {text!r}: use a number and a unit, e.g. 30d, 12h, 90m, 1w")
    n, unit = int(m.group(1)), m.group(2)
    return {"m": dt.timedelta(minutes=n), "h": dt.timedelta(hours=n),
            "d": dt.timedelta(days=n), "w": dt.timedelta(weeks=n)}[unit]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _aware(t: dt.datetime | None) -> dt.datetime | None:
    """SQLite returns naive datetimes for UTC values; PostgreSQL aware ones."""
    if t is not None and t.tzinfo is None:
        return t.replace(tzinfo=dt.UTC)
    return t


def _active(expires: dt.datetime | None, revoked: dt.datetime | None,
            now: dt.datetime) -> bool:
    exp = _aware(expires)
    return revoked is None and (exp is None or exp > now)


@dataclass(frozen=True)
class ReleaseAccess:
    """What a principal's grants allow on one release."""

    grant_id: int
    """The grant that gives it (the downloading one when several do): audits name it."""
    download: bool


@dataclass(frozen=True)
class Principal:
    """Who is calling, with what scope, on which collections (None = every one).

    ``view_only`` holds the readable collections that no download-allowing
    grant covers; ``releases`` maps each release the caller holds a grant on
    to its :class:`ReleaseAccess` (None = every release: admins, operators and
    the console).
    """

    kind: str  # "user" | "peer" | "local"
    name: str
    scope: str
    collections: frozenset[int] | None
    user_id: int | None = None
    token_id: int | None = None
    scopes_by_collection: dict[int, str] = field(default_factory=dict)
    role: str | None = None
    institution_id: int | None = None
    view_only: frozenset[int] = frozenset()
    releases: dict[int, ReleaseAccess] | None = field(default_factory=dict)

    def allows(self, need: str, collection_id: int | None = None) -> bool:
        """Whether this caller may do ``need`` on ``collection_id`` (None: node-wide)."""
        if not scope_allows(self.scope, need):
            return False
        if self.collections is None:
            return True
        if collection_id is None:  # node-wide operations need every collection
            return False
        if collection_id not in self.collections:
            return False
        return scope_allows(self.scopes_by_collection.get(collection_id, self.scope), need)

    def require(self, need: str, collection_id: int | None = None) -> None:
        if not self.allows(need, collection_id):
            raise AccessDeniedError(DENIED)

    def readable(self, need: str = "read") -> frozenset[int] | None:
        """Collections this caller may ``need`` (None = all); empty when none."""
        if not scope_allows(self.scope, need):
            return frozenset()
        if self.collections is None:
            return None
        return frozenset(c for c in self.collections
                         if scope_allows(self.scopes_by_collection.get(c, self.scope), need))

    @property
    def everything(self) -> bool:
        """Whether this caller reaches every collection and release (admin, operator, console)."""
        return self.collections is None and self.releases is None

    def may_download(self, collection_id: int) -> bool:
        """Whether this caller may take raw data (WADO-RS instances, frames, bulk data) of
        ``collection_id``: read access through a grant that allows download."""
        return self.allows("read", collection_id) and collection_id not in self.view_only

    def require_download(self, collection_id: int) -> None:
        if not self.may_download(collection_id):
            raise AccessDeniedError(DENIED)

    def may_read_release(self, release_id: int) -> bool:
        """Whether this caller may see release ``release_id`` (summary, manifest, card)."""
        return self.releases is None or release_id in self.releases

    def may_download_release(self, release_id: int) -> bool:
        """Whether this caller may download (export) release ``release_id``."""
        if self.releases is None:
            return True
        access = self.releases.get(release_id)
        return access is not None and access.download

    def require_release(self, release_id: int, *, download: bool = False) -> None:
        ok = (self.may_download_release(release_id) if download
              else self.may_read_release(release_id))
        if not ok:
            raise AccessDeniedError(DENIED)

    def release_grant_id(self, release_id: int) -> int | None:
        """The id of the grant that opens ``release_id`` (None: admin access, or none)."""
        if self.releases is None:
            return None
        access = self.releases.get(release_id)
        return access.grant_id if access is not None else None

    def covers(self, collection_ids: Iterable[int]) -> bool:
        """Whether this caller may read every one of ``collection_ids`` (exact counts).

        Small-cell suppression (:mod:`mida.sharing.suppression`) applies to
        counts over data a caller's grants do not cover; view-only grants
        cover (they allow counts). An empty set is covered.
        """
        readable = self.readable("read")
        return readable is None or set(collection_ids) <= readable

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"


#: The node's own operator at the console (CLI commands run with the node's files).
LOCAL = Principal(kind="local", name="console", scope="admin", collections=None,
                  releases=None)


# -- users ---------------------------------------------------------------------
def add_user(s: Session, name: str, role: str) -> User:
    if not _NAME_RE.match(name or ""):
        raise MidaError(f"bad user name {name!r}: 1-64 letters, digits, '.', '_', '@' or '-'")
    if role not in ROLES:
        raise MidaError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    if s.scalar(select(User.id).where(User.name == name)) is not None:
        raise ConflictError(f"a user named {name!r} already exists")
    user = User(name=name, role=role)
    s.add(user)
    s.flush()
    return user


def get_user(s: Session, name: str) -> User:
    user = s.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFoundError(f"no user named {name!r}: add one with 'mida users add NAME --role R'")
    return user


def list_users(s: Session) -> list[dict[str, Any]]:
    return [{"name": u.name, "role": u.role, "disabled": u.disabled,
             "created": u.created.isoformat()}
            for u in s.scalars(select(User).order_by(User.name))]


def set_disabled(s: Session, name: str, disabled: bool) -> None:
    get_user(s, name).disabled = disabled


def _collection_id(s: Session, name: str | None) -> int | None:
    if name is None:
        return None
    cid = s.scalar(select(Collection.id).where(Collection.name == name))
    if cid is None:
        raise NotFoundError(f"no collection named {name!r}")
    return cid


# -- grants --------------------------------------------------------------------
def _release_id(s: Session, ref: str) -> int:
    """The id of the ready release ``NAME@X.Y.Z`` (a grant names one exact version)."""
    name, _, version = ref.partition("@")
    if not version:
        raise MidaError(f"release {ref!r}: name the exact version, e.g. {name}@1.0.0 "
                        "(a grant is on one immutable version)")
    rid = s.scalar(select(DatasetRelease.id).where(DatasetRelease.name == name,
                                                  DatasetRelease.version == version,
                                                  DatasetRelease.status == "ready"))
    if rid is None:
        raise NotFoundError(f"no release {ref!r}: see 'mida release ls'")
    return int(rid)


def add_grant(s: Session, user: str, scope: str, collection: str | None = None,
              expires: dt.datetime | None = None, purpose: str = "", *,
              release: str | None = None, download: bool = True,
              request_id: int | None = None) -> Grant:
    """Grant ``user`` ``scope`` on a collection (None: every one) or on a release.

    Parameters
    ----------
    release
        ``NAME@X.Y.Z``: a release grant (scope ``read``; opens the release
        routes only). Not combined with ``collection``.
    download
        False makes the grant view only: metadata, counts, rendered images and
        compute, but no raw data and no release download.
    request_id
        The access request that made the grant, if any.
    """
    if scope not in SCOPES:
        raise MidaError(f"unknown scope {scope!r}: choose one of {', '.join(SCOPES)}")
    u = get_user(s, user)
    if not scope_allows(ROLES[u.role][0], scope):
        raise MidaError(f"role {u.role!r} cannot hold scope {scope!r}")
    rid: int | None = None
    if release is not None:
        if collection is not None:
            raise MidaError("a grant is on a collection or on a release, not both")
        if scope != "read":
            raise MidaError("a release grant has scope 'read' (releases are immutable)")
        rid = _release_id(s, release)
    g = Grant(user_id=u.id, collection_id=_collection_id(s, collection), release_id=rid,
              scope=scope, expires=expires, purpose=purpose, download=download,
              request_id=request_id)
    s.add(g)
    s.flush()
    return g


def list_grants(s: Session, user: str | None = None) -> list[dict[str, Any]]:
    """Every grant (or ``user``'s): what it opens, whether it allows download, and whether
    it is in force now (not expired, not revoked)."""
    q = (select(Grant, User.name, Collection.name, DatasetRelease.name,
                DatasetRelease.version)
         .join(User, User.id == Grant.user_id)
         .outerjoin(Collection, Collection.id == Grant.collection_id)
         .outerjoin(DatasetRelease, DatasetRelease.id == Grant.release_id).order_by(Grant.id))
    if user:
        q = q.where(User.name == user)
    now = utcnow()
    return [{"id": g.id, "user": uname,
             "collection": None if g.release_id is not None else (cname or "*"),
             "release": f"{rname}@{rversion}" if g.release_id is not None else None,
             "scope": g.scope, "download": bool(g.download), "purpose": g.purpose,
             "request": g.request_id,
             "expires": g.expires.isoformat() if g.expires else None,
             "revoked": g.revoked.isoformat() if g.revoked else None,
             "active": _active(g.expires, g.revoked, now)}
            for g, uname, cname, rname, rversion in s.execute(q).all()]


def revoke_grant(s: Session, grant_id: int) -> Grant:
    """Revoke a grant; it stops working at the next request. Returns the row."""
    g = s.get(Grant, grant_id)
    if g is None:
        raise NotFoundError(f"no grant {grant_id}: see 'mida grants ls'")
    if g.revoked is None:  # revoking twice keeps the first time
        g.revoked = utcnow()
    return g


def lapsed_grant(s: Session, user_id: int, *, release_id: int | None = None,
                 collection_id: int | None = None) -> Grant | None:
    """The latest expired or revoked grant of a user on a release or collection.

    Used to audit *why* a request was denied (an expiry or revocation rather
    than no grant at all); it never changes what is allowed.
    """
    q = select(Grant).where(Grant.user_id == user_id)
    if release_id is not None:
        q = q.where(Grant.release_id == release_id)
    else:
        q = q.where(Grant.release_id.is_(None),
                    (Grant.collection_id == collection_id) | Grant.collection_id.is_(None))
    now = utcnow()
    gone = [g for g in s.scalars(q.order_by(Grant.id)) if not _active(g.expires, g.revoked, now)]
    return gone[-1] if gone else None


# -- tokens --------------------------------------------------------------------
def create_token(s: Session, user: str, scope: str, *, collection: str | None = None,
                 expires_in: dt.timedelta | None = dt.timedelta(days=30)) -> tuple[str, ApiToken]:
    """A new token for ``user``; returns the secret (shown once) and its row."""
    if scope not in SCOPES:
        raise MidaError(f"unknown scope {scope!r}: choose one of {', '.join(SCOPES)}")
    u = get_user(s, user)
    max_scope, everywhere = ROLES[u.role]
    if not scope_allows(max_scope, scope):
        raise MidaError(f"role {u.role!r} allows tokens up to scope {max_scope!r}, not {scope!r}")
    cid = _collection_id(s, collection)
    if cid is not None and not everywhere:
        now = utcnow()
        held = [g for g in s.scalars(select(Grant).where(Grant.user_id == u.id))
                if _active(g.expires, g.revoked, now) and g.release_id is None
                and g.collection_id in (None, cid) and scope_allows(g.scope, scope)]
        if not held:
            raise MidaError(f"user {user!r} holds no {scope!r} grant on collection "
                            f"{collection!r}: add one with 'mida grants add' first")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=u.id, token_hash=hash_token(secret), prefix=secret[5:13],
                   scope=scope, collection_id=cid,
                   expires=utcnow() + expires_in if expires_in else None)
    s.add(row)
    s.flush()
    return secret, row


def list_tokens(s: Session, user: str | None = None) -> list[dict[str, Any]]:
    q = (select(ApiToken, User.name, Collection.name)
         .join(User, User.id == ApiToken.user_id)
         .outerjoin(Collection, Collection.id == ApiToken.collection_id).order_by(ApiToken.id))
    if user:
        q = q.where(User.name == user)
    now = utcnow()
    return [{"id": t.id, "user": uname, "prefix": t.prefix, "scope": t.scope,
             "collection": cname or "*",
             "expires": t.expires.isoformat() if t.expires else None,
             "active": _active(t.expires, t.revoked, now)}
            for t, uname, cname in s.execute(q).all()]


def revoke_token(s: Session, token_id: int) -> None:
    t = s.get(ApiToken, token_id)
    if t is None:
        raise NotFoundError(f"no token {token_id}")
    t.revoked = utcnow()


@dataclass
class _Held:
    """A user's grants in force now, merged (widest scope, download if any grant allows it)."""

    collections: frozenset[int] | None = None  # None: every collection (role-wide)
    scopes: dict[int, str] = field(default_factory=dict)
    view_only: frozenset[int] = frozenset()
    releases: dict[int, ReleaseAccess] | None = None  # None: every release (role-wide)


def _grants_of(s: Session, user: User, now: dt.datetime) -> _Held:
    if ROLES.get(user.role, ("read", False))[1]:
        return _Held()
    by_collection: dict[int, str] = {}
    downloadable: set[int] = set()
    everything: str | None = None
    everything_download = False
    releases: dict[int, ReleaseAccess] = {}
    for g in s.scalars(select(Grant).where(Grant.user_id == user.id).order_by(Grant.id)):
        if not _active(g.expires, g.revoked, now):
            continue
        if g.release_id is not None:  # a release grant opens that release, no collection
            old = releases.get(g.release_id)
            if old is None or (g.download and not old.download):
                releases[g.release_id] = ReleaseAccess(g.id, bool(g.download))
        elif g.collection_id is None:
            if everything is None or scope_allows(g.scope, everything):
                everything = g.scope
            everything_download = everything_download or bool(g.download)
        else:
            old_scope = by_collection.get(g.collection_id)
            if old_scope is None or scope_allows(g.scope, old_scope):
                by_collection[g.collection_id] = g.scope
            if g.download:
                downloadable.add(g.collection_id)
    if everything is not None:
        for cid in s.scalars(select(Collection.id)):
            if cid not in by_collection or scope_allows(everything, by_collection[cid]):
                by_collection[cid] = everything
            if everything_download:
                downloadable.add(cid)
    collections = frozenset(by_collection)
    return _Held(collections, by_collection, collections - downloadable, releases)


def authenticate(s: Session, token: str | None) -> Principal:
    """The principal behind a Bearer token, or :class:`AuthError`.

    Reads the token, the user and the user's grants in force now from the
    catalog, every call: nothing is cached, so a revoked or expired token or
    grant stops working at the next request (the API builds the principal once
    per request, :func:`mida.api.deps.get_principal`).
    """
    if not token:
        raise AuthError("authentication required: send 'Authorization: Bearer <token>' "
                        "(create one with 'mida tokens create')")
    if not _TOKEN_RE.match(token):
        raise AuthError("invalid token")
    row = s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    now = utcnow()
    if row is None:
        raise AuthError("invalid token")
    if row.revoked is not None:
        raise AuthError("token revoked")
    exp = _aware(row.expires)
    if exp is not None and exp <= now:
        raise AuthError("token expired: create a new one with 'mida tokens create'")
    user = s.get(User, row.user_id)
    if user is None or user.disabled:
        raise AuthError("invalid token")
    max_scope = ROLES.get(user.role, ("read", False))[0]
    scope = row.scope if scope_allows(max_scope, row.scope) else max_scope
    held = _grants_of(s, user, now)
    collections, by_collection, releases = held.collections, held.scopes, held.releases
    if row.collection_id is not None:  # a token bound to one collection reaches only it
        releases = {}
        if collections is None:
            collections, by_collection = frozenset({row.collection_id}), {}
        else:
            collections = collections & {row.collection_id}
            by_collection = {k: v for k, v in by_collection.items() if k in collections}
    view_only = held.view_only & collections if collections is not None else frozenset()
    return Principal(kind="user", name=user.name, scope=scope, collections=collections,
                     user_id=user.id, token_id=row.id, scopes_by_collection=by_collection,
                     role=user.role, institution_id=user.institution_id,
                     view_only=view_only, releases=releases)


# -- DICOM peers ----------------------------------------------------------------
def check_ae_title(aet: str) -> str:
    if not _AE_RE.match(aet or "") or not aet.strip():
        raise MidaError(f"bad AE title {aet!r}: 1-16 printable characters, no backslash")
    return aet.strip()


def add_peer(s: Session, name: str, ae_title: str, host: str, port: int, *,
             role: str = "peer", scope: str = "read", collection: str | None = None,
             options: dict[str, Any] | None = None) -> DicomPeer:
    if not _NAME_RE.match(name or ""):
        raise MidaError(f"bad name {name!r}: 1-64 letters, digits, '.', '_', '@' or '-'")
    if role not in ("peer", "pacs"):
        raise MidaError("role must be 'peer' (calls mida) or 'pacs' (mida calls it)")
    if scope not in SCOPES:
        raise MidaError(f"unknown scope {scope!r}: choose one of {', '.join(SCOPES)}")
    if not 1 <= port <= 65535:
        raise MidaError(f"bad port {port}: 1-65535")
    if s.scalar(select(DicomPeer.id).where(DicomPeer.name == name)) is not None:
        raise ConflictError(f"an AE named {name!r} already exists (remove it first)")
    peer = DicomPeer(name=name, role=role, ae_title=check_ae_title(ae_title), host=host,
                     port=port, scope=scope, collection_id=_collection_id(s, collection),
                     options=options or {})
    s.add(peer)
    s.flush()
    return peer


def get_peer(s: Session, name: str, role: str | None = None) -> DicomPeer:
    q = select(DicomPeer).where(DicomPeer.name == name)
    if role:
        q = q.where(DicomPeer.role == role)
    peer = s.scalar(q)
    if peer is None:
        raise NotFoundError(f"no {'AE' if role != 'pacs' else 'PACS'} named {name!r}")
    return peer


def list_peers(s: Session, role: str | None = None) -> list[dict[str, Any]]:
    q = (select(DicomPeer, Collection.name)
         .outerjoin(Collection, Collection.id == DicomPeer.collection_id)
         .order_by(DicomPeer.name))
    if role:
        q = q.where(DicomPeer.role == role)
    return [{"name": p.name, "role": p.role, "ae_title": p.ae_title, "host": p.host,
             "port": p.port, "scope": p.scope, "collection": cname or "*",
             "options": p.options}
            for p, cname in s.execute(q).all()]


def remove_peer(s: Session, name: str, role: str | None = None) -> None:
    s.delete(get_peer(s, name, role))


def peer_principal(s: Session, calling_ae: str, address: str | None) -> Principal:
    """The principal of an association from ``calling_ae`` at ``address``.

    The calling AE title must be configured (``mida aes add``) with role ``peer``,
    and when the peer's host is an IP address the association must come from it.
    """
    peers = list(s.scalars(select(DicomPeer).where(DicomPeer.ae_title == calling_ae.strip(),
                                                   DicomPeer.role == "peer")))
    for p in peers:
        if address is None or p.host in ("*", "0.0.0.0") or address in _addresses(p.host):
            cols = None if p.collection_id is None else frozenset({p.collection_id})
            # a peer is a configured DICOM node: it takes what its scope allows on its
            # collection (C-GET/C-MOVE included); users' grants and releases do not apply
            return Principal(kind="peer", name=p.name, scope=p.scope, collections=cols)
    raise AuthError("unknown calling AE title or address: configure it with 'mida aes add'")


def _addresses(host: str) -> set[str]:
    """The IP addresses of a configured peer host (itself when it is one)."""
    import socket

    try:
        return {host, *socket.gethostbyname_ex(host)[2]}
    except OSError:
        return {host}


__all__ = [
    "DENIED",
    "LOCAL",
    "ROLES",
    "SCOPES",
    "Principal",
    "ReleaseAccess",
    "add_grant",
    "add_peer",
    "add_user",
    "authenticate",
    "check_ae_title",
    "create_token",
    "get_peer",
    "get_user",
    "hash_token",
    "lapsed_grant",
    "list_grants",
    "list_peers",
    "list_tokens",
    "list_users",
    "parse_expiry",
    "peer_principal",
    "remove_peer",
    "revoke_grant",
    "revoke_token",
    "scope_allows",
    "set_disabled",
]
