"""Access requests: a researcher asks, each owner's DAC decides, handlers sign, grants follow.

The workflow, as the Health and Welfare Data Center (HWDC) runs it::

    submit ──> submitted ──(every owner approves)──> approved ──(every handler
      ^            │   │                                          accepts the DUA)──> granted
      │            │   └──(any owner rejects)──> rejected
      └─resubmit───┴──(any owner asks for changes)──> changes_requested
    (the researcher may withdraw until granted)

**Submission.** A user with role ``researcher`` asks for a saved cohort or a
release (``NAME@X.Y.Z``) for a stated purpose, under an IRB approval (number,
body, expiry date, and the approval document, stored in the node's blob store
and kept by its sha256), naming the **handlers**: the people who will handle
the data. As at HWDC, the applicant is always one of them: a researcher who
does not name themselves is added first. Handlers must be enabled users with
role ``researcher``; their number (the applicant included) may not exceed the
smallest cap among the node's (``MIDA_HANDLER_CAP``, 6) and every requested
collection's own (``mida collections terms NAME --handler-cap N``). The
request names a data use agreement (``name@version``, or ``name`` for its
newest version, pinned at submission) and says whether the handlers need to
download the data or only to view and compute on it on the node.

The collections the requested data spans are fixed at submission: those of
the release's series, or those of the series the cohort selects at that time.

**Routing and decisions.** The request goes to the data access committee of
every institution owning one of those collections (:func:`route`). A DAC
member (role ``dac-member`` with that institution) decides for it, once per
revision: ``approve``, ``reject`` (final) or ``changes`` (both need a
reason). Any rejection rejects the request; any request for changes sends it
back to the researcher, who resubmits it (:func:`resubmit`: revision + 1; the
decisions on earlier revisions no longer count, so every owner decides
again). When every owner has approved the current revision, the request is
approved.

**DUA and grants.** Every named handler then accepts the DUA; the acceptance
records the template and the sha256 of the exact text. When the last one
has, :func:`make_grants` runs: one ``read`` grant per handler, on a release
(the requested one, or for a cohort the cohort frozen into
``request-<id>@1.0.0`` restricted to the approved collections), with the
request's purpose and download flag, expiring when the IRB approval does:
at the end of its expiry date in the node's time zone (``MIDA_GRANT_WITHIN_IRB``;
without it, grants do not expire by themselves).

Freezing a cohort needs the cohort language and releases, which live a floor
above this module (:mod:`mida.datasets`); so do the collections a cohort
spans. Both arrive as callables (:data:`CollectionsOf`, :data:`Freeze`);
:mod:`mida.datasets.access` supplies them and wraps :func:`submit`,
:func:`resubmit` and :func:`accept_dua` with them, and the faces call it.

**Visibility.** A request is visible to its researcher, its named handlers,
the DAC members of the institutions it is routed to, admins and operators,
and the node's console; to anyone else it does not exist (the same
:class:`~mida.errors.NotFoundError` as a missing one). Researchers and
handlers see each institution's decision and reason, not which DAC member
took it.

**Audit.** Every step calls ``audit(action, detail)`` (``requests.submit``,
``requests.decide``, ``requests.resubmit``, ``requests.withdraw``,
``requests.dua_accept``, ``requests.grant``, and ``requests.denied`` for a
refused decision or acceptance); details hold ids, user names and
institution codes, never free text.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, overload

from sqlalchemy import select
from sqlalchemy.orm import Session

from mida.catalog.models import (
    AccessRequest,
    Cohort,
    Collection,
    DatasetRelease,
    DuaAcceptance,
    DuaTemplate,
    Grant,
    Institution,
    ReleaseSeries,
    RequestDecision,
    Series,
    Study,
    User,
)
from mida.errors import AccessDeniedError, ConflictError, MidaError, NotFoundError
from mida.sharing import dua as duas
from mida.storage.blobstore import BlobStore

STATUSES = ("submitted", "changes_requested", "rejected", "approved", "granted", "withdrawn")
DECISIONS = ("approve", "reject", "changes")
#: Statuses from which the researcher may still withdraw.
WITHDRAWABLE = ("submitted", "changes_requested", "approved")
#: Roles that see every request.
STAFF = ("admin", "operator")
#: The largest IRB approval document kept (bytes).
IRB_DOCUMENT_MAX = 50 * 1024 * 1024
#: Fields :func:`resubmit` may change.
CHANGEABLE = ("title", "purpose", "cohort", "release", "handlers", "irb_number", "irb_body",
              "irb_expiry", "irb_document", "irb_document_name", "download", "dua")

Audit = Callable[[str, dict[str, Any]], None]
#: ``(session, cohort expression) -> ids of the collections its series belong to``.
CollectionsOf = Callable[[Session, str], Iterable[int]]
#: ``(session, approved cohort request) -> id of the release its grants open``.
Freeze = Callable[[Session, AccessRequest], int]

_RELEASE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(@\d+\.\d+\.\d+)?$")


def _no_audit(action: str, detail: dict[str, Any]) -> None:
    """The default audit: none (services called without a trail, e.g. in tests)."""


class AuditBuffer:
    """Hold a step's audit entries until its transaction is known to have committed.

    Use it around the session, so that it exits after the commit::

        with AuditBuffer(sink) as audit, catalog.session() as s:
            review(s, 3, "dana", "approve", audit=audit)

    On success every entry reaches ``sink``; on an error only the
    ``requests.denied`` entries do (a refusal is worth recording; a step that
    rolled back did not happen).
    """

    def __init__(self, sink: Audit) -> None:
        self.sink = sink
        self.entries: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, action: str, detail: dict[str, Any]) -> None:
        self.entries.append((action, detail))

    def __enter__(self) -> AuditBuffer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> None:
        entries, self.entries = self.entries, []
        for action, detail in entries:
            if exc_type is None or action == "requests.denied":
                self.sink(action, detail)


# ----------------------------------------------------------------- small helpers

def _user(s: Session, name: str) -> User:
    row = s.scalar(select(User).where(User.name == name))
    if row is None:
        raise NotFoundError(f"no user named {name!r}: add one with 'mida users add NAME --role R'")
    return row


def _acting(s: Session, name: str) -> User:
    """The user acting; a disabled account acts no more."""
    row = _user(s, name)
    if row.disabled:
        raise AccessDeniedError(f"user {name!r} is disabled")
    return row


@overload
def _iso(t: dt.datetime) -> str: ...


@overload
def _iso(t: None) -> None: ...


def _iso(t: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC (SQLite hands back naive UTC datetimes, PostgreSQL aware ones)."""
    if t is None:
        return None
    return (t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)).isoformat()


def _today(today: dt.date | None) -> dt.date:
    return today or dt.date.today()


def grant_expiry(irb_expiry: dt.date, tz: dt.tzinfo | None = None) -> dt.datetime:
    """When a grant bound to an IRB approval ends: as the approval's expiry date ends.

    That is midnight after ``irb_expiry`` in ``tz`` (the node's local time
    zone by default: Asia/Taipei on a Taiwanese node), returned in UTC.

    Examples
    --------
    >>> grant_expiry(dt.date(2027, 3, 31), dt.timezone(dt.timedelta(hours=8))).isoformat()
    '2027-03-31T16:00:00+00:00'
    """
    zone = tz or dt.datetime.now().astimezone().tzinfo
    end = dt.datetime.combine(irb_expiry + dt.timedelta(days=1), dt.time(), tzinfo=zone)
    return end.astimezone(dt.UTC)


def get_request(s: Session, request_id: int) -> AccessRequest:
    row = s.get(AccessRequest, request_id)
    if row is None:
        raise NotFoundError(f"no access request {request_id}")
    return row


def owners(s: Session, request: AccessRequest) -> list[Institution]:
    """The institutions owning the requested collections, by code."""
    ids = list(request.collection_ids or [])
    if not ids:
        return []
    return list(s.scalars(
        select(Institution).join(Collection, Collection.institution_id == Institution.id)
        .where(Collection.id.in_(ids)).distinct().order_by(Institution.code)))


route = owners
"""``route(s, request)``: the institutions whose DACs decide on ``request``."""


def _sees(s: Session, request: AccessRequest, viewer: User | None) -> bool:
    if viewer is None or viewer.role in STAFF:
        return True
    if viewer.id == request.researcher_id or viewer.name in (request.handlers or []):
        return True
    return (viewer.role == "dac-member" and viewer.institution_id is not None
            and viewer.institution_id in {i.id for i in owners(s, request)})


def _visible(s: Session, request_id: int, viewer: str | None) -> tuple[AccessRequest,
                                                                       User | None]:
    """The request and the viewer's row, or the same error as a missing request."""
    row = s.get(AccessRequest, request_id)
    user = None if viewer is None else _user(s, viewer)
    if row is None or not _sees(s, row, user):
        raise NotFoundError(f"no access request {request_id}")
    return row, user


def release_collections(s: Session, release_id: int) -> list[int]:
    """Ids of the collections a release's series belong to."""
    return sorted(int(c) for c in s.scalars(
        select(Study.collection_id).distinct()
        .join(Series, Series.study_id == Study.id)
        .join(ReleaseSeries, ReleaseSeries.series_id == Series.id)
        .where(ReleaseSeries.release_id == release_id)))


def _release(s: Session, ref: str) -> DatasetRelease:
    """The ready release ``NAME@X.Y.Z`` (or the newest ready version of ``NAME``)."""
    if not _RELEASE_REF.match(ref or ""):
        raise MidaError(f"release {ref!r}: give NAME@X.Y.Z (see 'mida release ls')")
    name, _, version = ref.partition("@")
    rows = list(s.scalars(select(DatasetRelease).where(DatasetRelease.name == name,
                                                       DatasetRelease.status == "ready")))
    if version:
        rows = [r for r in rows if r.version == version]
    if not rows:
        raise MidaError(f"no release {ref!r}: see 'mida release ls'")
    return max(rows, key=lambda r: duas.version_key(r.version))


# ----------------------------------------------------------------- validation

@dataclass
class _Draft:
    """What a submission or resubmission asks for, before it is checked."""

    title: str
    purpose: str
    cohort: str | None
    release: str | None
    handlers: list[str]
    irb_number: str
    irb_body: str
    irb_expiry: dt.date
    download: bool
    dua: str
    irb_document: bytes | None = None  # None on a resubmission that keeps the document
    irb_document_name: str | None = None
    resolved: dict[str, Any] = field(default_factory=dict)


def _check_text(value: str, what: str, flag: str, most: int) -> str:
    if not value or not value.strip():
        raise MidaError(f"the request needs a {what} ({flag})")
    if len(value) > most:
        raise MidaError(f"the {what} has {len(value)} characters; at most {most} ({flag})")
    return value.strip()


def _check_document(data: bytes | None, name: str | None) -> str:
    if data is None or len(data) == 0:
        raise MidaError("the IRB approval document is empty: attach the approval letter "
                        "(--irb-document FILE)")
    if len(data) > IRB_DOCUMENT_MAX:
        raise MidaError(f"the IRB approval document is {len(data)} bytes; at most "
                        f"{IRB_DOCUMENT_MAX} are kept: attach the approval letter only")
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not base or len(base) > 256 or any(ord(c) < 32 for c in base):
        raise MidaError("the IRB approval document needs a file name of 1-256 printable "
                        "characters")
    return base


def _cap(s: Session, collection_ids: Sequence[int], node_cap: int) -> tuple[int, str]:
    """The handler cap for these collections and what sets it (for the message)."""
    cap, why = node_cap, f"this node allows at most {node_cap} (MIDA_HANDLER_CAP)"
    rows = s.execute(select(Collection.name, Collection.handler_cap, Institution.code)
                     .join(Institution, Institution.id == Collection.institution_id)
                     .where(Collection.id.in_(list(collection_ids)))
                     .order_by(Collection.name)).all()
    for name, ccap, code in rows:
        if ccap is not None and ccap < cap:
            cap, why = ccap, f"collection {name!r} ({code}) allows at most {ccap}"
    return cap, why


def _check(s: Session, researcher: User, d: _Draft, *, collections_of: CollectionsOf | None,
           node_cap: int, today: dt.date) -> _Draft:
    """Validate every field of ``d``; resolve the target, DUA and handlers into ``resolved``.

    A cohort, release, DUA or handler the request names but the node lacks is
    a mistake in the request (:class:`~mida.errors.MidaError`, HTTP 400), not
    a resource hidden from the caller.
    """
    title = _check_text(d.title, "title", "--title", 256)
    purpose = _check_text(d.purpose, "purpose", "--purpose", 20_000)
    irb_number = _check_text(d.irb_number, "IRB approval number", "--irb-number", 64)
    irb_body = _check_text(d.irb_body, "IRB (the reviewing board's name)", "--irb-body", 256)
    if not isinstance(d.irb_expiry, dt.date):
        raise MidaError("the IRB expiry is a date (YYYY-MM-DD)")
    if d.irb_expiry < today:
        raise MidaError(f"the IRB approval expired on {d.irb_expiry.isoformat()} (before "
                        f"{today.isoformat()}): renew it with the IRB and give the new expiry")
    out: dict[str, Any] = {}
    if (d.cohort is None) == (d.release is None):
        raise MidaError("request either a saved cohort (--cohort NAME) or a release "
                        "(--release NAME@X.Y.Z), not both")
    if d.cohort is not None:
        coh = s.scalar(select(Cohort).where(Cohort.name == d.cohort))
        if coh is None:
            raise MidaError(f"no cohort {d.cohort!r}: save one with 'mida cohort save'")
        if collections_of is None:
            raise MidaError("a cohort request needs the cohort language to find the collections "
                            "it spans: submit it through mida.datasets.access")
        ids = sorted({int(c) for c in collections_of(s, coh.expression)})
        if not ids:
            raise MidaError(f"cohort {d.cohort!r} selects no series now: there is nothing to "
                            "request")
        out.update(target="cohort", cohort_id=coh.id, release_id=None,
                   expression=coh.expression, collection_ids=ids)
    else:
        rel = _release(s, d.release or "")
        ids = release_collections(s, rel.id)
        if not ids:
            raise MidaError(f"release {rel.name}@{rel.version} holds no series: there is "
                            "nothing to request")
        out.update(target="release", cohort_id=None, release_id=rel.id,
                   expression=rel.expression, collection_ids=ids)
    try:
        template = duas.get_template(s, d.dua)
    except NotFoundError as exc:  # a mistake in the request, not a resource to hide
        raise MidaError(str(exc)) from None
    # The applicant is one of the named handlers (HWDC): added first when left out.
    names = list(dict.fromkeys([researcher.name, *(h.strip() for h in d.handlers)]))
    for name in names:
        if not name:
            raise MidaError("a handler's user name cannot be empty")
        u = s.scalar(select(User).where(User.name == name))
        if u is None:
            raise MidaError(f"handler {name!r} is not a user of this node: each handler "
                                "needs an account (mida users add NAME --role researcher)")
        if u.disabled:
            raise MidaError(f"handler {name!r} is disabled: name an active user")
        if u.role != "researcher":
            raise MidaError(f"handler {name!r} has role {u.role!r}: handlers receive the "
                            "grants, so each must be a researcher")
    cap, why = _cap(s, ids, node_cap)
    if len(names) > cap:
        raise MidaError(f"{len(names)} handlers named (you included) but {why}: name at most "
                        f"{cap}")
    out.update(title=title, purpose=purpose, irb_number=irb_number, irb_body=irb_body,
               handlers=names, dua_template_id=template.id)
    return replace(d, resolved=out)


def _apply(row: AccessRequest, d: _Draft) -> None:
    for k, v in d.resolved.items():
        setattr(row, k, v)
    row.irb_expiry = d.irb_expiry
    row.download = bool(d.download)


def _store_document(store: BlobStore, d: _Draft, row: AccessRequest) -> None:
    if d.irb_document is None:
        return
    name = _check_document(d.irb_document, d.irb_document_name)
    row.irb_document_sha256 = store.put(d.irb_document).digest
    row.irb_document_name = name


# ----------------------------------------------------------------- the workflow

def submit(s: Session, store: BlobStore, researcher: str, *, title: str, purpose: str,
           cohort: str | None = None, release: str | None = None,
           handlers: Sequence[str] = (), irb_number: str, irb_body: str,
           irb_expiry: dt.date, irb_document: bytes, irb_document_name: str,
           download: bool = False, dua: str, collections_of: CollectionsOf | None = None,
           node_cap: int = 6, audit: Audit | None = None,
           today: dt.date | None = None) -> AccessRequest:
    """Submit a request (see the module description); returns the new row, flushed.

    Parameters
    ----------
    researcher
        The applicant's user name (role ``researcher``).
    cohort, release
        Exactly one: a saved cohort's name, or ``NAME@X.Y.Z``.
    handlers
        User names of the people who will handle the data; the applicant is
        added when absent.
    irb_document, irb_document_name
        The approval letter's bytes (stored as a blob) and file name.
    dua
        ``name@version`` (or ``name``: its newest version, pinned now).
    collections_of
        Needed for a cohort: the collections an expression spans
        (:func:`mida.datasets.access.collections_of`).
    node_cap
        ``settings.handler_cap``.
    """
    user = _acting(s, researcher)
    if user.role != "researcher":
        raise AccessDeniedError(f"user {researcher!r} has role {user.role!r}: only researchers "
                                "submit access requests")
    d = _check(s, user, _Draft(title, purpose, cohort, release, list(handlers), irb_number,
                               irb_body, irb_expiry, download, dua, irb_document,
                               irb_document_name),
               collections_of=collections_of, node_cap=node_cap, today=_today(today))
    _check_document(irb_document, irb_document_name)
    row = AccessRequest(researcher_id=user.id, status="submitted", revision=1)
    _apply(row, d)
    _store_document(store, d, row)
    s.add(row)
    s.flush()
    (audit or _no_audit)("requests.submit", {
        "request": row.id, "user": researcher, "target": row.target,
        "cohort": cohort, "release": release, "revision": 1, "handlers": row.handlers,
        "institutions": [i.code for i in owners(s, row)], "download": row.download,
        "irb_document_sha256": row.irb_document_sha256})
    return row


def resubmit(s: Session, store: BlobStore, request_id: int, researcher: str, *,
             collections_of: CollectionsOf | None = None, node_cap: int = 6,
             audit: Audit | None = None, today: dt.date | None = None,
             **changes: Any) -> AccessRequest:
    """Answer a request for changes: apply ``changes`` and submit again as revision + 1.

    ``changes`` takes any of :data:`CHANGEABLE` (the same names as
    :func:`submit`); the rest is kept. Everything is checked again (an IRB
    that expired since, a cap lowered since). Every owner decides anew.
    """
    row, user = _visible(s, request_id, researcher)
    assert user is not None
    if user.id != row.researcher_id:
        raise AccessDeniedError(f"only the researcher who submitted request {request_id} "
                                "resubmits it")
    unknown = sorted(set(changes) - set(CHANGEABLE))
    if unknown:
        raise MidaError(f"cannot change {', '.join(unknown)}: a resubmission changes "
                        f"{', '.join(CHANGEABLE)}")
    if row.status != "changes_requested":
        raise ConflictError(f"request {request_id} is {row.status}: only a request whose DAC "
                            "asked for changes is resubmitted")
    _acting(s, researcher)
    current = _draft_of(s, row)
    target_changed = "cohort" in changes or "release" in changes
    if target_changed:  # a new target replaces the old one entirely
        current.cohort = current.release = None
    d = replace(current, **{k: v for k, v in changes.items()
                            if k not in ("irb_document", "irb_document_name")})
    if "irb_document" in changes:
        d.irb_document = changes["irb_document"]
        d.irb_document_name = changes.get("irb_document_name") or row.irb_document_name
        _check_document(d.irb_document, d.irb_document_name)
    if not target_changed and row.target == "cohort":
        # the collections were fixed at submission: keep them, do not re-evaluate
        d = _check(s, user, d, collections_of=lambda _s, _e: row.collection_ids,
                   node_cap=node_cap, today=_today(today))
        d.resolved["expression"] = row.expression
    else:
        d = _check(s, user, d, collections_of=collections_of, node_cap=node_cap,
                   today=_today(today))
    _apply(row, d)
    _store_document(store, d, row)
    row.revision += 1
    row.status = "submitted"
    s.flush()
    (audit or _no_audit)("requests.resubmit", {
        "request": row.id, "user": researcher, "revision": row.revision,
        "changed": sorted(changes), "handlers": row.handlers,
        "institutions": [i.code for i in owners(s, row)],
        "irb_document_sha256": row.irb_document_sha256})
    return row


def _draft_of(s: Session, row: AccessRequest) -> _Draft:
    cohort = release = None
    if row.target == "cohort" and row.cohort_id is not None:
        c = s.get(Cohort, row.cohort_id)
        cohort = c.name if c else None
    elif row.release_id is not None:
        r = s.get(DatasetRelease, row.release_id)
        release = f"{r.name}@{r.version}" if r else None
    t = s.get(DuaTemplate, row.dua_template_id) if row.dua_template_id else None
    return _Draft(row.title, row.purpose, cohort, release, list(row.handlers or []),
                  row.irb_number, row.irb_body, row.irb_expiry, row.download,
                  f"{t.name}@{t.version}" if t else "")


def withdraw(s: Session, request_id: int, researcher: str, *,
             audit: Audit | None = None) -> AccessRequest:
    """The researcher withdraws a request that has not been granted or rejected."""
    row, user = _visible(s, request_id, researcher)
    assert user is not None
    if user.id != row.researcher_id:
        raise AccessDeniedError(f"only the researcher who submitted request {request_id} "
                                "withdraws it")
    if row.status not in WITHDRAWABLE:
        hint = (": revoke its grants instead (mida grants revoke)" if row.status == "granted"
                else "")
        raise ConflictError(f"request {request_id} is {row.status} and cannot be "
                            f"withdrawn{hint}")
    row.status = "withdrawn"
    s.flush()
    (audit or _no_audit)("requests.withdraw", {"request": row.id, "user": researcher,
                                               "revision": row.revision})
    return row


def _decisions(s: Session, request: AccessRequest,
               revision: int | None = None) -> list[RequestDecision]:
    q = select(RequestDecision).where(RequestDecision.request_id == request.id)
    if revision is not None:
        q = q.where(RequestDecision.revision == revision)
    return list(s.scalars(q.order_by(RequestDecision.id)))


def _settle(s: Session, request: AccessRequest) -> None:
    """The request's status from the decisions on its current revision."""
    current = {d.institution_id: d.decision for d in _decisions(s, request, request.revision)}
    if "reject" in current.values():
        request.status = "rejected"
    elif "changes" in current.values():
        request.status = "changes_requested"
    elif all(current.get(i.id) == "approve" for i in owners(s, request)):
        request.status = "approved"


def review(s: Session, request_id: int, user: str, decision: str, reason: str = "", *,
           audit: Audit | None = None) -> RequestDecision:
    """A DAC member decides, for their institution, on the current revision.

    ``decision`` is ``approve``, ``reject`` or ``changes``; the last two need
    a ``reason`` (the researcher reads it). Each owning institution decides
    once per revision.
    """
    log = audit or _no_audit
    member = _acting(s, user)
    row = get_request(s, request_id)
    owner_ids = {i.id for i in owners(s, row)}
    if member.role != "dac-member" or member.institution_id not in owner_ids:
        log("requests.denied", {"request": request_id, "user": user, "operation": "decide"})
        raise AccessDeniedError(f"user {user!r} is not a DAC member of an institution owning "
                                f"the data of request {request_id}: only they decide on it")
    if decision not in DECISIONS:
        raise MidaError(f"unknown decision {decision!r}: choose one of {', '.join(DECISIONS)}")
    reason = (reason or "").strip()
    if decision != "approve" and not reason:
        raise MidaError(f"a decision to {'reject' if decision == 'reject' else 'ask for changes'}"
                        " needs a reason (--reason): the researcher reads it")
    if len(reason) > 20_000:
        raise MidaError("the reason is longer than 20000 characters")
    inst = s.get(Institution, member.institution_id)
    assert inst is not None
    if row.status != "submitted":
        raise ConflictError(f"request {request_id} is {row.status}: decisions are taken on "
                            "submitted requests only")
    done = [d for d in _decisions(s, row, row.revision) if d.institution_id == inst.id]
    if done:
        raise ConflictError(f"{inst.code} already decided on revision {row.revision} of request "
                            f"{request_id} ({done[0].decision}, by {done[0].decided_by}): "
                            "each institution decides once per revision")
    d = RequestDecision(request_id=row.id, institution_id=inst.id, revision=row.revision,
                        decision=decision, reason=reason, decided_by=member.name)
    s.add(d)
    s.flush()
    _settle(s, row)
    s.flush()
    log("requests.decide", {"request": row.id, "user": user, "institution": inst.code,
                            "revision": row.revision, "decision": decision,
                            "status": row.status})
    return d


def pending_for(s: Session, user: str) -> list[AccessRequest]:
    """The DAC queue of ``user``: submitted requests their institution has not decided on.

    Empty for anyone but a ``dac-member`` with an institution. Oldest first.
    """
    member = _user(s, user)
    if member.role != "dac-member" or member.institution_id is None:
        return []
    out = []
    for row in s.scalars(select(AccessRequest).where(AccessRequest.status == "submitted")
                         .order_by(AccessRequest.id)):
        if member.institution_id not in {i.id for i in owners(s, row)}:
            continue
        decided = {d.institution_id for d in _decisions(s, row, row.revision)}
        if member.institution_id not in decided:
            out.append(row)
    return out


def _accepted(s: Session, request: AccessRequest) -> dict[int, DuaAcceptance]:
    return {a.user_id: a for a in s.scalars(
        select(DuaAcceptance).where(DuaAcceptance.request_id == request.id,
                                    DuaAcceptance.template_id == request.dua_template_id))}


def accept_dua(s: Session, request_id: int, user: str, *, sha256: str | None = None,
               freeze: Freeze | None = None, within_irb: bool = True,
               audit: Audit | None = None, today: dt.date | None = None,
               tz: dt.tzinfo | None = None) -> DuaAcceptance:
    """A named handler accepts the request's DUA; the last acceptance makes the grants.

    Records the template and the sha256 of its text. ``sha256``, when given,
    is the hash of the text the handler was shown (the API requires it): an
    acceptance of any other text is refused. When every handler has
    accepted, :func:`make_grants` runs in the same transaction (``freeze``,
    ``within_irb``, ``today`` and ``tz`` are passed on to it).
    """
    log = audit or _no_audit
    row = get_request(s, request_id)
    member = _user(s, user)
    if member.name not in (row.handlers or []):
        log("requests.denied", {"request": request_id, "user": user, "operation": "dua_accept"})
        if not _sees(s, row, member):
            raise NotFoundError(f"no access request {request_id}")
        raise AccessDeniedError(f"user {user!r} is not a named handler of request "
                                f"{request_id}: only its handlers accept its DUA")
    _acting(s, user)
    if row.status != "approved":
        raise ConflictError(f"request {request_id} is {row.status}: the DUA is accepted once "
                            "every owning institution has approved the request")
    template = s.get(DuaTemplate, row.dua_template_id) if row.dua_template_id else None
    if template is None:
        raise MidaError(f"request {request_id} names no data use agreement")
    if sha256 is not None and sha256.lower() != template.sha256:
        raise ConflictError(f"the DUA text accepted (sha256 {sha256[:12]}...) is not "
                            f"{template.name}@{template.version} (sha256 "
                            f"{template.sha256[:12]}...): show the handler that version and "
                            "accept it")
    done = _accepted(s, row)
    if member.id in done:
        raise ConflictError(f"{user} already accepted {template.name}@{template.version} for "
                            f"request {request_id} on {_iso(done[member.id].accepted)}")
    acc = DuaAcceptance(request_id=row.id, user_id=member.id, template_id=template.id,
                        template_sha256=template.sha256)
    s.add(acc)
    s.flush()
    log("requests.dua_accept", {"request": row.id, "user": user,
                                "dua": f"{template.name}@{template.version}",
                                "dua_sha256": template.sha256})
    done[member.id] = acc
    handler_ids = {u.id for u in s.scalars(select(User).where(User.name.in_(row.handlers)))}
    if handler_ids <= set(done):
        make_grants(s, row, freeze=freeze, within_irb=within_irb, audit=audit, today=today,
                    tz=tz)
    return acc


def make_grants(s: Session, request: AccessRequest, *, freeze: Freeze | None = None,
                within_irb: bool = True, audit: Audit | None = None,
                today: dt.date | None = None, tz: dt.tzinfo | None = None) -> list[Grant]:
    """Grant every handler ``read`` on the request's release; the request becomes granted.

    For a cohort request ``freeze(s, request)`` makes the release first
    (:func:`mida.datasets.access.freeze` names it ``request-<id>@1.0.0``).
    Refused unless the request is approved and every handler accepted the
    DUA, and when the IRB approval has expired.
    """
    log = audit or _no_audit
    if request.status != "approved":
        raise ConflictError(f"request {request.id} is {request.status}: grants follow an "
                            "approved request")
    done = _accepted(s, request)
    missing = [u.name for u in s.scalars(select(User).where(User.name.in_(request.handlers)))
               if u.id not in done]
    if missing:
        raise ConflictError(f"request {request.id}: {', '.join(sorted(missing))} "
                            "must accept the DUA first")
    day = _today(today)
    if request.irb_expiry < day:
        raise MidaError(f"the IRB approval of request {request.id} expired on "
                        f"{request.irb_expiry.isoformat()}: no grant is made; withdraw it and "
                        "submit a new request under a current approval")
    if request.target == "cohort":
        if freeze is None:
            raise MidaError("granting a cohort request freezes the cohort into a release: "
                            "make the grants through mida.datasets.access")
        release_id = freeze(s, request)
    else:
        assert request.release_id is not None
        release_id = request.release_id
    outside = set(release_collections(s, release_id)) - set(request.collection_ids or [])
    if outside:  # a release wider than what the DACs approved must never be opened
        raise MidaError(f"the release for request {request.id} holds data of collections no "
                        "DAC approved for it; nothing was granted")
    rel = s.get(DatasetRelease, release_id)
    assert rel is not None
    expires = grant_expiry(request.irb_expiry, tz) if within_irb else None
    grants = []
    for u in s.scalars(select(User).where(User.name.in_(request.handlers)).order_by(User.name)):
        g = Grant(user_id=u.id, collection_id=None, release_id=release_id, scope="read",
                  purpose=request.purpose, request_id=request.id, download=request.download,
                  expires=expires)
        s.add(g)
        grants.append((g, u.name))
    request.status = "granted"
    s.flush()
    for g, name in grants:
        log("requests.grant", {"request": request.id, "grant": g.id, "user": name,
                               "release": f"{rel.name}@{rel.version}", "scope": "read",
                               "download": g.download,
                               "expires": expires.isoformat() if expires else None})
    return [g for g, _ in grants]


# ----------------------------------------------------------------- reading

def show(s: Session, request_id: int, viewer: str | None) -> dict[str, Any]:
    """Everything about a request the viewer may see (``None``: the node's console).

    Raises the same :class:`~mida.errors.NotFoundError` for a request the
    viewer may not see as for a missing one.
    """
    row, user = _visible(s, request_id, viewer)
    insiders = user is None or user.role in STAFF or user.role == "dac-member"
    inst_code = {i.id: i.code for i in s.scalars(select(Institution))}
    current = {d.institution_id: d for d in _decisions(s, row, row.revision)}
    history = []
    for d in _decisions(s, row):
        item: dict[str, Any] = {"revision": d.revision, "institution": inst_code[d.institution_id],
                                "decision": d.decision, "reason": d.reason,
                                "created": _iso(d.created)}
        if insiders:
            item["decided_by"] = d.decided_by
        history.append(item)
    template = s.get(DuaTemplate, row.dua_template_id) if row.dua_template_id else None
    done = _accepted(s, row)
    names = {u.id: u.name for u in s.scalars(select(User).where(User.name.in_(row.handlers)))}
    accepted = {names[uid]: _iso(a.accepted) for uid, a in done.items() if uid in names}
    grants = [{"id": g.id, "user": names.get(g.user_id, "?"), "scope": g.scope,
               "download": g.download, "expires": _iso(g.expires),
               "revoked": _iso(g.revoked)}
              for g in s.scalars(select(Grant).where(Grant.request_id == row.id)
                                 .order_by(Grant.id))]
    rid = grants_release(s, row)
    rel = s.get(DatasetRelease, rid) if rid is not None else None
    return {**summary(s, row), "purpose": row.purpose, "expression": row.expression,
            "collections": [{"name": c.name, "institution": inst_code[c.institution_id]}
                            for c in s.scalars(select(Collection)
                                               .where(Collection.id.in_(row.collection_ids))
                                               .order_by(Collection.name))],
            "decisions": {code: (current[i].decision if i in current else None)
                          for i, code in ((x.id, x.code) for x in owners(s, row))},
            "history": history,
            "handlers": [{"user": h, "dua_accepted": accepted.get(h)} for h in row.handlers],
            "irb": {"number": row.irb_number, "body": row.irb_body,
                    "expiry": row.irb_expiry.isoformat(),
                    "document_sha256": row.irb_document_sha256,
                    "document_name": row.irb_document_name},
            "dua": (None if template is None else
                    {"ref": f"{template.name}@{template.version}", "title": template.title,
                     "sha256": template.sha256}),
            "granted_release": f"{rel.name}@{rel.version}" if rel else None,
            "grants": grants}


def grants_release(s: Session, request: AccessRequest) -> int | None:
    """The release the request's grants open (None before any grant)."""
    rid = s.scalar(select(Grant.release_id).where(Grant.request_id == request.id).limit(1))
    return int(rid) if rid is not None else None


def summary(s: Session, row: AccessRequest) -> dict[str, Any]:
    """One line about a request (lists)."""
    researcher = s.get(User, row.researcher_id)
    if row.target == "cohort":
        c = s.get(Cohort, row.cohort_id) if row.cohort_id else None
        what = c.name if c else "(deleted cohort)"
    else:
        r = s.get(DatasetRelease, row.release_id) if row.release_id else None
        what = f"{r.name}@{r.version}" if r else "?"
    return {"id": row.id, "title": row.title, "researcher": researcher.name if researcher else "?",
            "target": row.target, "data": what, "status": row.status, "revision": row.revision,
            "institutions": [i.code for i in owners(s, row)], "download": row.download,
            "irb_expiry": row.irb_expiry.isoformat(), "created": _iso(row.created),
            "updated": _iso(row.updated)}


def list_requests(s: Session, viewer: str | None, status: str | None = None) -> list[AccessRequest]:
    """The requests ``viewer`` may see (``None``: the console sees all), oldest first."""
    if status is not None and status not in STATUSES:
        raise MidaError(f"unknown status {status!r}: choose one of {', '.join(STATUSES)}")
    user = None if viewer is None else _user(s, viewer)
    q = select(AccessRequest).order_by(AccessRequest.id)
    if status is not None:
        q = q.where(AccessRequest.status == status)
    return [r for r in s.scalars(q) if _sees(s, r, user)]


def irb_document(s: Session, store: BlobStore, request_id: int,
                 viewer: str | None) -> tuple[str, bytes]:
    """The IRB approval document of a request the viewer may see: ``(file name, bytes)``."""
    row, _ = _visible(s, request_id, viewer)
    if not row.irb_document_sha256:
        raise NotFoundError(f"request {request_id} has no IRB document")
    return row.irb_document_name or "irb-approval", store.get(row.irb_document_sha256,
                                                              verify=True)


__all__ = [
    "CHANGEABLE",
    "DECISIONS",
    "IRB_DOCUMENT_MAX",
    "STATUSES",
    "Audit",
    "AuditBuffer",
    "CollectionsOf",
    "Freeze",
    "accept_dua",
    "get_request",
    "grant_expiry",
    "grants_release",
    "irb_document",
    "list_requests",
    "make_grants",
    "owners",
    "pending_for",
    "release_collections",
    "resubmit",
    "review",
    "route",
    "show",
    "submit",
    "summary",
    "withdraw",
]
