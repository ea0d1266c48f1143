"""The governance pages: collections and their terms, access requests, the DAC queue, grants.

Server-rendered (Jinja2, autoescaped) and script-free: every action is a plain
HTML form, so the pages work without JavaScript and load nothing from
elsewhere (:data:`PAGE_CSP`).

======  ==============================  ===================================================
GET     /collections                    every collection: owner, licence, counts, access,
                                        restrictions in force
GET     /collections/{name}             one collection: terms, citation, contributors,
                                        handler cap, counts, restrictions by reason/level
GET     /requests/new                   the request form (researchers)
POST    /requests/new                   submit it (multipart: fields + the IRB document)
GET     /requests                       the requests the user may see, with each owner's
                                        decision and reason; DUA acceptance when due
GET     /requests/{id}/resubmit         the form again, filled in (changes requested)
POST    /requests/{id}/resubmit         resubmit with changes (and an optional new letter)
POST    /requests/{id}/dua              a named handler accepts the DUA shown
GET     /dac                            the DAC queue of a dac-member's institution
POST    /dac/{id}                       approve, reject or ask for changes, with a reason
GET     /grants                         "my grants": what each opens, until when, status
GET     /releases/{name}/{version}      a granted release: summary, card, download form
======  ==============================  ===================================================

The pages call the same services as the JSON API (:mod:`mida.datasets.access`
and :mod:`mida.sharing.requests`), with the same audit entries.

**Sign-in.** The ``mida_token`` cookie set by ``/login`` (or a Bearer token).
A GET without one is sent to ``/login?next=<page>``.

**CSRF.** The cookie is ``SameSite=Strict``, and on top of that every form
carries a per-session token in a hidden ``csrf`` field: the HMAC-SHA256 of a
fixed label keyed by the caller's API token (:func:`csrf_token`). Another site
can neither read the cookie nor compute the field; a POST without the right
field answers 403 before anything is looked up or changed. The field needs no
server-side state and changes when the user signs in with a new token.

**Denials.** A page the user may not see (a collection, request or release
that is missing or not theirs, the DAC queue for a non-member, the request
form for a non-researcher) answers 403 with the same page, body for body, as
a missing one (:data:`~mida.sharing.identity.DENIED`); admins and operators,
who may know what exists, get 404 for what is missing.

**Counts.** As the API shows them: exact over collections the user's grants
cover (and for admins and operators), else with small cells hidden
(:mod:`mida.sharing.suppression`). Restrictions are shown as reasons and
levels with counts; their targets (pseudonyms, UIDs) and notes only to admins
and operators.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from mida import __version__
from mida.api.deps import SessionDep, audit_trail, get_principal, token_of
from mida.catalog.models import (
    AccessRequest,
    Collection,
    DatasetRelease,
    Institution,
    Restriction,
    Series,
    Study,
)
from mida.catalog.query import collections_overview
from mida.catalog.service import get_collection
from mida.datasets import access, cohort
from mida.datasets import release as releases
from mida.datasets.card import build_card
from mida.datasets.export import available as export_formats
from mida.dicomweb.multipart import MultipartReader, PayloadTooLargeError, parse_media_type
from mida.errors import (
    AccessDeniedError,
    AuthError,
    ConflictError,
    MidaError,
    NotFoundError,
)
from mida.node import Node
from mida.sharing import dua, governance, restrictions, suppression
from mida.sharing import requests as rq
from mida.sharing.identity import DENIED, ROLES, Principal, list_grants, scope_allows
from mida.web import templates

router = APIRouter(include_in_schema=False, tags=["pages"])

#: The pages run only their own stylesheet: no script at all, nothing from elsewhere.
PAGE_CSP = ("default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
#: Roles that see every request, collection and release (and the restrictions' targets).
STAFF = ("admin", "operator")
#: The largest form body read: the IRB document plus room for the other fields.
FORM_MAX = rq.IRB_DOCUMENT_MAX + 1024 * 1024
#: The largest form body without a file (urlencoded).
SMALL_FORM_MAX = 256 * 1024
_CSRF_LABEL = b"mida pages csrf v1"
_REQUEST_RELEASE = re.compile(r"^request-\d+$")
#: Fields of the request form, in the order the page shows them.
REQUEST_FIELDS = ("title", "purpose", "target", "cohort", "release", "handlers", "irb_number",
                  "irb_body", "irb_expiry", "download", "dua")


# ----------------------------------------------------------------- plumbing

def csrf_token(api_token: str) -> str:
    """The form token of a session: HMAC-SHA256 of a fixed label keyed by its API token.

    Examples
    --------
    >>> len(csrf_token("mida_" + "x" * 43)), csrf_token("a") == csrf_token("b")
    (64, False)
    """
    return hmac.new(api_token.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def _csrf_ok(request: Request, sent: str | None) -> bool:
    token = token_of(request)
    return bool(token and sent) and hmac.compare_digest(csrf_token(token or ""), sent or "")


def _who(request: Request) -> Principal | None:
    """The signed-in user, or None (no token, or one that no longer works)."""
    try:
        p = get_principal(request)
    except AuthError:
        return None
    return p if p.kind == "user" else None


def _to_login(request: Request) -> Response:
    target = request.url.path if request.method == "GET" else "/"
    if request.method == "GET" and request.url.query:
        target += "?" + request.url.query
    return RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303)


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def _staff(p: Principal) -> bool:
    return p.role in STAFF


def nav_items(request: Request) -> list[dict[str, str]]:
    """The links of the navigation bar: only the pages the user's role may use."""
    p = getattr(request.state, "principal", None)
    if not isinstance(p, Principal) or p.kind != "user":
        return []
    role = p.role or ""
    items = [("home", "/", "Home"), ("collections", "/collections", "Collections")]
    if role == "researcher":
        items.append(("request-new", "/requests/new", "New request"))
    if role in ("researcher", "dac-member", *STAFF):
        items.append(("requests", "/requests", "Requests"))
    if role == "dac-member" and p.institution_id is not None:
        items.append(("dac", "/dac", "DAC queue"))
    items.append(("grants", "/grants", "My grants"))
    if scope_allows(ROLES.get(role, ("read", False))[0], "write"):
        items.append(("annotate", "/annotate", "Annotate"))
    return [{"key": k, "href": h, "label": label} for k, h, label in items]


def _when(value: Any) -> str:
    """An ISO time (or datetime) as ``YYYY-MM-DD HH:MM UTC``; a date as ``YYYY-MM-DD``."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = (dt.datetime.fromisoformat(value) if "T" in value
                     else dt.date.fromisoformat(value))
        except ValueError:
            return value
    if isinstance(value, dt.datetime):
        t = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        return t.strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


templates.env.globals["nav_items"] = nav_items
templates.env.filters["when"] = _when


def _render(request: Request, p: Principal | None, name: str, status: int = 200,
            **ctx: Any) -> Response:
    token = token_of(request)
    r = templates.TemplateResponse(
        request, name, {"version": __version__, "me": p, "csrf": csrf_token(token) if token
                        else "", "small_cell_min": _node(request).settings.small_cell_min,
                        **ctx}, status_code=status)
    r.headers["Content-Security-Policy"] = PAGE_CSP
    r.headers["Cache-Control"] = "no-store"
    return r


def _denied(request: Request, p: Principal | None) -> Response:
    """403 with the same body whether the thing is missing or not the user's to see."""
    return _render(request, p, "message.html", 403, title="Access denied", message=DENIED,
                   testid="denied")


def _refused(request: Request, p: Principal, exc: MidaError) -> Response:
    """A lookup or permission failure as a page: missing answers as denied, except to staff."""
    if isinstance(exc, NotFoundError) and _staff(p):
        return _render(request, p, "message.html", 404, title="Not found", message=str(exc),
                       testid="not-found")
    return _denied(request, p)


def _csrf_refused(request: Request, p: Principal) -> Response:
    return _render(request, p, "message.html", 403, title="Form refused", testid="csrf-refused",
                   message="This form did not come from a page of this node, or your session "
                   "changed since it was shown: reload the page and submit it again.")


@dataclass
class PageForm:
    """A posted form: text fields and files (name -> (file name, bytes)) by field name."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    error: str | None = None

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name, default)


async def read_form(request: Request) -> PageForm:
    """The posted form (urlencoded or multipart/form-data), bounded by :data:`FORM_MAX`."""
    media, params = parse_media_type(request.headers.get("content-type", ""))
    out = PageForm()
    try:
        if media == "multipart/form-data":
            reader = MultipartReader(params.get("boundary", ""), FORM_MAX)
            try:
                async for chunk in request.stream():
                    reader.feed(chunk)
                parts = reader.close()
            except BaseException:
                reader.discard()
                raise
            for part in parts:
                _, cd = parse_media_type(part.headers.get("content-disposition", ""))
                data = part.read()
                part.close()
                name = cd.get("name")
                if name is None:
                    continue
                if "filename" in cd:
                    # headers are read as latin-1; browsers send file names in UTF-8
                    fname = cd["filename"].encode("latin-1").decode("utf-8", "replace")
                    if fname or data:
                        out.files[name] = (fname, data)
                else:
                    out.fields[name] = data.decode("utf-8", "replace")
        elif media == "application/x-www-form-urlencoded":
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > SMALL_FORM_MAX:
                    raise MidaError(f"the form is larger than {SMALL_FORM_MAX} bytes")
            try:
                out.fields.update(parse_qsl(body.decode("utf-8", "replace"),
                                            keep_blank_values=True, max_num_fields=100))
            except ValueError:
                raise MidaError("the form has more than 100 fields") from None
        else:
            out.error = "send the form as a browser does (a form post)"
    except PayloadTooLargeError:
        out.error = (f"the form is larger than {FORM_MAX} bytes: the IRB approval letter may be "
                     f"at most {rq.IRB_DOCUMENT_MAX // (1024 * 1024)} MiB")
    except MidaError as exc:
        out.error = f"the form could not be read ({exc}): reload the page and send it again"
    return out


FormDep = Annotated[PageForm, Depends(read_form)]


# ----------------------------------------------------------------- counts and restrictions

def _fields(n: cohort.Node) -> set[str]:
    out = {n.field} if n.field else set()
    for c in n.children:
        out |= _fields(c)
    return out


def _shown(p: Principal, counts: dict[str, Any], collection_ids: Iterable[int],
           minimum: int) -> tuple[dict[str, Any], bool]:
    return suppression.for_principal(p, counts, collection_ids, minimum)


def _touched(s: Session, r: Restriction) -> list[tuple[int, int, int]]:
    """``(collection id, patient id, series id)`` of every series a restriction covers."""
    q = select(Study.collection_id, Study.patient_id, Series.id).join(
        Series, Series.study_id == Study.id)
    where = {"collection": Study.collection_id, "patient": Study.patient_id,
             "study": Study.id, "series": Series.id}[r.level]
    return [(int(c), int(pt), int(se)) for c, pt, se in s.execute(q.where(where == r.target_id))]


@dataclass
class _Rules:
    """The restrictions in force, and what each covers, grouped by collection."""

    by_collection: dict[int, list[tuple[Restriction, list[tuple[int, int, int]]]]]

    @classmethod
    def load(cls, s: Session, today: dt.date | None = None) -> _Rules:
        out: dict[int, list[tuple[Restriction, list[tuple[int, int, int]]]]] = defaultdict(list)
        for r in restrictions.active(s, today):
            rows = _touched(s, r)
            cids = {c for c, _, _ in rows}
            if r.level == "collection":
                cids.add(r.target_id)  # in force even while the collection is empty
            for cid in cids:
                out[cid].append((r, [x for x in rows if x[0] == cid]))
        return cls(dict(out))

    def reasons(self, cid: int) -> list[str]:
        return sorted({r.reason for r, _ in self.by_collection.get(cid, [])})

    def rows(self, cid: int) -> list[dict[str, Any]]:
        """Per reason and level: how many rules, and the patients and series they keep out."""
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for r, covered in self.by_collection.get(cid, []):
            g = groups.setdefault((r.reason, r.level), {
                "reason": r.reason, "level": r.level, "rules": 0, "patients": set(),
                "series": set(), "until": set()})
            g["rules"] += 1
            g["patients"] |= {pt for _, pt, _ in covered}
            g["series"] |= {se for _, _, se in covered}
            if r.until is not None:
                g["until"].add(r.until)
        return [{**g, "patients": len(g["patients"]), "series": len(g["series"]),
                 "until": max(g["until"]) if g["until"] else None}
                for _, g in sorted(groups.items(), key=lambda kv: (
                    restrictions.REASONS.index(kv[0][0]), restrictions.LEVELS.index(kv[0][1])))]


def _collection_rows(s: Session, p: Principal, minimum: int) -> list[dict[str, Any]]:
    ids = dict(s.execute(select(Collection.name, Collection.id)).all())
    rules = _Rules.load(s)
    out = []
    for row in collections_overview(s):
        cid = ids[row["name"]]
        shown, exact = _shown(p, row, [cid], minimum)
        access_ = ("none" if not exact else
                   "download" if p.collections is None or p.may_download(cid) else "view")
        out.append({**shown, "exact": exact, "access": access_,
                    "terms": governance.terms(s, row["name"]), "reasons": rules.reasons(cid)})
    return out


def _request_counts(request: Request, s: Session, p: Principal,
                    row: AccessRequest) -> tuple[dict[str, Any] | None, bool]:
    """What a request asks for, counted as the viewer may see it (None: cannot be counted)."""
    minimum = _node(request).settings.small_cell_min
    ids = list(row.collection_ids or [])
    if row.target == "release" and row.release_id is not None:
        rel = s.get(DatasetRelease, row.release_id)
        if rel is None or not rel.counts:
            return None, False
        totals = {k: rel.counts.get(k) for k in ("patients", "studies", "series", "instances")}
        if p.may_read_release(rel.id):
            return totals, True
        return _shown(p, totals, ids, minimum)
    try:
        scope = suppression.count_scope(p, _fields(cohort.parse(row.expression)))
        limit = frozenset(ids) if scope is None else frozenset(ids) & scope
        series = cohort.series_ids(s, row.expression, collection_ids=limit,
                                   store=_node(request).store())
    except MidaError:
        return None, False
    return _shown(p, cohort.counts_of(s, series, row.expression).as_dict(), ids, minimum)


# ----------------------------------------------------------------- collections

@router.get("/collections")
def collections_page(request: Request, s: SessionDep) -> Response:
    """Every collection with its owner, licence, counts, the user's access and restrictions."""
    p = _who(request)
    if p is None:
        return _to_login(request)
    rows = _collection_rows(s, p, _node(request).settings.small_cell_min)
    return _render(request, p, "collections.html", current="collections", title="Collections",
                   rows=rows)


@router.get("/collections/{name}")
def collection_page(name: str, request: Request, s: SessionDep) -> Response:
    """One collection: terms, citation, contributors, handler cap, counts, restrictions."""
    p = _who(request)
    if p is None:
        return _to_login(request)
    try:
        row = get_collection(s, name)
    except NotFoundError as exc:
        return _refused(request, p, exc)
    settings = _node(request).settings
    minimum = settings.small_cell_min
    overview = collections_overview(s, frozenset({row.id}))
    counts, exact = _shown(p, overview[0] if overview else {}, [row.id], minimum)
    rules = _Rules.load(s)
    shown_rules = []
    for g in rules.rows(row.id):
        nums, _ = _shown(p, {k: g[k] for k in ("rules", "patients", "series")}, [row.id],
                         minimum)
        shown_rules.append({**g, **nums})
    targets = ([restrictions.describe(s, r) for r, _ in rules.by_collection.get(row.id, [])]
               if _staff(p) else [])
    return _render(request, p, "collection.html", current="collections", title=row.name, c=row,
                   terms=governance.terms(s, row.name), counts=counts, exact=exact,
                   rules=shown_rules, targets=targets,
                   handler_cap=row.handler_cap or settings.handler_cap,
                   cap_is_default=row.handler_cap is None)


# ----------------------------------------------------------------- the request form

def _choices(s: Session, p: Principal, minimum: int) -> dict[str, Any]:
    """What the form offers: saved cohorts, releases (with counts as the user may see
    them) and DUA versions."""
    cohorts_ = []
    for c in cohort.list_all(s):
        shown, _ = suppression.saved_counts_for(s, p, c.counts or {}, minimum)
        cohorts_.append({"name": c.name, "patients": shown.get("patients"),
                         "description": c.description})
    rels = []
    for r in releases.list_all(s):
        # a release frozen for someone else's request is theirs: not offered
        if _REQUEST_RELEASE.match(r.name) and not p.may_read_release(r.id):
            continue
        counts = {"patients": (r.counts or {}).get("patients", 0)}
        if not p.may_read_release(r.id):
            counts, _ = _shown(p, counts, rq.release_collections(s, r.id), minimum)
        rels.append({"ref": f"{r.name}@{r.version}", "patients": counts["patients"]})
    duas = [{"ref": f"{t.name}@{t.version}", "title": t.title} for t in dua.list_templates(s)]
    return {"cohorts": cohorts_, "releases": rels, "duas": duas}


def _handlers(text: str) -> list[str]:
    return [h for h in re.split(r"[\s,;]+", text or "") if h]


def _parse_request_form(form: PageForm) -> tuple[dict[str, Any], dict[str, str]]:
    """The service's arguments from the form, and errors by field for what cannot be parsed."""
    errors: dict[str, str] = {}
    target = form.get("target")
    args: dict[str, Any] = {k: form.get(k).strip() for k in ("title", "irb_number", "irb_body",
                                                              "dua")}
    args["purpose"] = form.get("purpose")
    for k, label in (("title", "a title"), ("purpose", "the purpose"),
                     ("irb_number", "the IRB approval number"),
                     ("irb_body", "the IRB (the board that approved)"),
                     ("dua", "a data use agreement")):
        if not args[k].strip():
            errors[k] = f"Give {label}."
    if target not in ("cohort", "release"):
        errors["target"] = "Choose a saved cohort or a release."
    elif not form.get(target):
        errors["target"] = f"Pick the {target} you are asking for."
    else:
        args[target] = form.get(target)
    args["handlers"] = _handlers(form.get("handlers"))
    try:
        args["irb_expiry"] = dt.date.fromisoformat(form.get("irb_expiry").strip())
    except ValueError:
        errors["irb_expiry"] = "Give the IRB approval's expiry date (YYYY-MM-DD)."
    args["download"] = form.get("download") in ("on", "true", "1", "yes")
    return args, errors


#: Where a service's message belongs on the form (first match wins); else above it.
_ERROR_FIELDS = (("handler", "handlers"), ("document", "irb_document"),
                 ("expired", "irb_expiry"), ("expiry", "irb_expiry"), ("cohort", "target"),
                 ("release", "target"), ("data use agreement", "dua"),
                 ("irb approval number", "irb_number"), ("reviewing board", "irb_body"),
                 ("title", "title"), ("purpose", "purpose"))


def _field_of(message: str) -> str | None:
    low = message.lower()
    return next((f for key, f in _ERROR_FIELDS if key in low), None)


def _form_page(request: Request, s: Session, p: Principal, values: dict[str, str], *,
               errors: dict[str, str] | None = None, status: int = 200,
               resubmit: AccessRequest | None = None) -> Response:
    errors = dict(errors or {})
    general = errors.pop("", None)
    return _render(request, p, "request_form.html", status,
                   current=None if resubmit else "request-new",
                   title=(f"Resubmit request {resubmit.id}" if resubmit else "New access request"),
                   values=values, errors=errors, general=general, resubmit=resubmit,
                   **_choices(s, p, _node(request).settings.small_cell_min))


def _service_error(errors: dict[str, str], exc: MidaError) -> int:
    errors[_field_of(str(exc)) or ""] = str(exc)
    return 409 if isinstance(exc, ConflictError) else 400


@router.get("/requests/new")
def new_request_page(request: Request, s: SessionDep) -> Response:
    """The request form (researchers only)."""
    p = _who(request)
    if p is None:
        return _to_login(request)
    if p.role != "researcher":
        return _denied(request, p)
    return _form_page(request, s, p, {"target": "cohort"})


@router.post("/requests/new")
def submit_request_page(request: Request, s: SessionDep, form: FormDep) -> Response:
    """Submit the form through :func:`mida.datasets.access.submit`; errors keep the input."""
    p = _who(request)
    if p is None:
        return _to_login(request)
    if p.role != "researcher":
        return _denied(request, p)
    values = {k: form.get(k) for k in REQUEST_FIELDS}
    if form.error:  # unread (too large, malformed): nothing is done, so no token to check
        return _form_page(request, s, p, values, errors={"": form.error}, status=400)
    if not _csrf_ok(request, form.get("csrf")):
        return _csrf_refused(request, p)
    args, errors = _parse_request_form(form)
    doc = form.files.get("irb_document")
    if doc is None or not doc[1]:
        errors["irb_document"] = "Attach the IRB approval letter (a PDF)."
    if errors:
        return _form_page(request, s, p, values, errors=errors, status=400)
    assert doc is not None
    node = _node(request)
    try:
        with audit_trail(request, p) as trail:
            row = access.submit(s, node.store(), p.name, **args, irb_document=doc[1],
                                irb_document_name=doc[0], node_cap=node.settings.handler_cap,
                                audit=trail)
            rid = row.id
            s.commit()
    except (AccessDeniedError, NotFoundError) as exc:
        s.rollback()
        return _refused(request, p, exc)
    except MidaError as exc:
        s.rollback()
        status = _service_error(errors, exc)
        return _form_page(request, s, p, values, errors=errors, status=status)
    return RedirectResponse(f"/requests?submitted={rid}#request-{rid}", status_code=303)


def _current_values(show: dict[str, Any], me: str) -> dict[str, str]:
    """A request as the form shows it (the applicant is left out of the handlers)."""
    return {"title": show["title"], "purpose": show["purpose"], "target": show["target"],
            "cohort": show["data"] if show["target"] == "cohort" else "",
            "release": show["data"] if show["target"] == "release" else "",
            "handlers": ", ".join(h["user"] for h in show["handlers"] if h["user"] != me),
            "irb_number": show["irb"]["number"], "irb_body": show["irb"]["body"],
            "irb_expiry": show["irb"]["expiry"], "download": "on" if show["download"] else "",
            "dua": show["dua"]["ref"] if show["dua"] else ""}


def _resubmittable(s: Session, p: Principal, request_id: int) -> tuple[AccessRequest,
                                                                        dict[str, Any]]:
    """The request and its view, if ``p`` submitted it (else as if missing)."""
    show = rq.show(s, request_id, p.name)
    if show["researcher"] != p.name:
        raise AccessDeniedError(DENIED)
    return rq.get_request(s, request_id), show


def _not_changes_requested(request: Request, p: Principal, row: AccessRequest) -> Response:
    return _render(request, p, "message.html", 409, title=f"Request {row.id}",
                   testid="conflict",
                   message=f"Request {row.id} is {row.status.replace('_', ' ')}: only a "
                   "request whose DAC asked for changes is resubmitted.")


@router.get("/requests/{request_id}/resubmit")
def resubmit_page(request_id: int, request: Request, s: SessionDep) -> Response:
    """The researcher's form, filled in with the request as it stands."""
    p = _who(request)
    if p is None:
        return _to_login(request)
    try:
        row, show = _resubmittable(s, p, request_id)
    except (AccessDeniedError, NotFoundError) as exc:
        return _refused(request, p, exc)
    if row.status != "changes_requested":
        return _not_changes_requested(request, p, row)
    return _form_page(request, s, p, _current_values(show, p.name), resubmit=row)


@router.post("/requests/{request_id}/resubmit")
def resubmit_request_page(request_id: int, request: Request, s: SessionDep,
                          form: FormDep) -> Response:
    """Resubmit with what changed (:func:`mida.datasets.access.resubmit`)."""
    p = _who(request)
    if p is None:
        return _to_login(request)
    try:
        row, show = _resubmittable(s, p, request_id)
    except (AccessDeniedError, NotFoundError) as exc:
        return _refused(request, p, exc)
    values = {k: form.get(k) for k in REQUEST_FIELDS}
    if form.error:
        return _form_page(request, s, p, values, errors={"": form.error}, status=400,
                          resubmit=row)
    if not _csrf_ok(request, form.get("csrf")):
        return _csrf_refused(request, p)
    args, errors = _parse_request_form(form)
    if errors:
        return _form_page(request, s, p, values, errors=errors, status=400, resubmit=row)
    now = _current_values(show, p.name)
    changes: dict[str, Any] = {}
    for k in ("title", "purpose", "irb_number", "irb_body", "dua"):
        if args[k] != now[k]:
            changes[k] = args[k]
    if args["irb_expiry"].isoformat() != now["irb_expiry"]:
        changes["irb_expiry"] = args["irb_expiry"]
    if args["download"] != bool(now["download"]):
        changes["download"] = args["download"]
    wanted = list(dict.fromkeys([p.name, *args["handlers"]]))
    if wanted != [h["user"] for h in show["handlers"]]:
        changes["handlers"] = args["handlers"]
    target = values["target"]
    # the data is changed only when another one is picked: an unchanged cohort keeps the
    # collections fixed at submission (and so its DACs)
    if (target, args[target]) != (show["target"], show["data"]):
        changes[target] = args[target]
    doc = form.files.get("irb_document")
    if doc is not None and doc[1]:
        changes.update(irb_document=doc[1], irb_document_name=doc[0])
    node = _node(request)
    try:
        with audit_trail(request, p) as trail:
            access.resubmit(s, node.store(), request_id, p.name, audit=trail,
                            node_cap=node.settings.handler_cap, **changes)
            s.commit()
    except (AccessDeniedError, NotFoundError) as exc:
        s.rollback()
        return _refused(request, p, exc)
    except MidaError as exc:
        s.rollback()
        status = _service_error(errors, exc)
        return _form_page(request, s, p, values, errors=errors, status=status, resubmit=row)
    return RedirectResponse(f"/requests?resubmitted={request_id}#request-{request_id}",
                            status_code=303)


# ----------------------------------------------------------------- requests and the DUA

def _decisions(show: dict[str, Any]) -> list[dict[str, Any]]:
    """Each owner's decision on the current revision, with its reason (pending: None)."""
    current = {h["institution"]: h for h in show["history"] if h["revision"] == show["revision"]}
    return [{"institution": code, "decision": decision,
             "reason": current[code]["reason"] if code in current else "",
             "created": current[code]["created"] if code in current else None}
            for code, decision in show["decisions"].items()]


def _request_views(s: Session, p: Principal, rows: Iterable[AccessRequest]) -> list[dict[str,
                                                                                           Any]]:
    out = []
    for row in rows:
        show = rq.show(s, row.id, p.name)
        mine = {h["user"]: h["dua_accepted"] for h in show["handlers"]}
        text = None
        if show["status"] == "approved" and p.name in mine and show["dua"]:
            text = dua.get_template(s, show["dua"]["ref"])
        out.append({**show, "current": _decisions(show), "dua_text": text,
                    "is_researcher": show["researcher"] == p.name,
                    "is_handler": p.name in mine, "my_acceptance": mine.get(p.name),
                    "waiting_for": [u for u, t in mine.items() if t is None]})
    return out


def _requests_page(request: Request, s: Session, p: Principal, *, status: int = 200,
                   errors: dict[int, str] | None = None) -> Response:
    rows = rq.list_requests(s, p.name)
    notice = None
    for key, text in (("submitted", "Request {} was submitted: it is routed to the DAC of "
                       "every institution owning the data."),
                      ("resubmitted", "Request {} was resubmitted: every owner decides anew."),
                      ("accepted", "You accepted the data use agreement of request {}.")):
        value = request.query_params.get(key, "")
        if value.isdigit():
            notice = text.format(int(value))
    return _render(request, p, "requests.html", status, current="requests",
                   title="Access requests",
                   requests=_request_views(s, p, rows), errors=errors or {}, notice=notice)


@router.get("/requests")
def requests_page(request: Request, s: SessionDep) -> Response:
    """The requests the user may see: status, each owner's decision and reason, actions."""
    p = _who(request)
    if p is None:
        return _to_login(request)
    return _requests_page(request, s, p)


@router.post("/requests/{request_id}/dua")
def accept_dua_page(request_id: int, request: Request, s: SessionDep,
                    form: FormDep) -> Response:
    """A named handler accepts the DUA text the page showed (its sha256 is in the form)."""
    p = _who(request)
    if p is None:
        return _to_login(request)
    if not _csrf_ok(request, form.get("csrf")):
        return _csrf_refused(request, p)
    if form.get("agree") != "on":
        try:
            rq.show(s, request_id, p.name)  # the same answer as below for a hidden request
        except NotFoundError as exc:
            return _refused(request, p, exc)
        return _requests_page(request, s, p, status=400, errors={
            request_id: "Tick the box to say that you have read and accept the agreement."})
    node = _node(request)
    try:
        with audit_trail(request, p) as trail:
            access.accept_dua(s, node.store(), request_id, p.name,
                              sha256=form.get("sha256") or "-",
                              within_irb=node.settings.grant_within_irb, audit=trail,
                              tz=node.settings.tz)
            s.commit()
    except (AccessDeniedError, NotFoundError) as exc:
        s.rollback()
        return _refused(request, p, exc)
    except MidaError as exc:
        s.rollback()
        return _requests_page(request, s, p, status=409 if isinstance(exc, ConflictError)
                              else 400, errors={request_id: str(exc)})
    return RedirectResponse(f"/requests?accepted={request_id}#request-{request_id}",
                            status_code=303)


# ----------------------------------------------------------------- the DAC queue

def _is_dac(p: Principal) -> bool:
    return p.role == "dac-member" and p.institution_id is not None


def _dac_page(request: Request, s: Session, p: Principal, *, status: int = 200,
              errors: dict[int, str] | None = None,
              reasons: dict[int, str] | None = None) -> Response:
    inst = s.get(Institution, p.institution_id)
    items = []
    for row in rq.pending_for(s, p.name):
        view = _request_views(s, p, [row])[0]
        counts, exact = _request_counts(request, s, p, row)
        items.append({**view, "counts": counts, "exact": exact})
    decided = request.query_params.get("decided", "")
    shown = {i["id"] for i in items}
    # a request decided meanwhile (by a colleague) has left the queue: say why above it
    general = " ".join(m for rid, m in (errors or {}).items() if rid not in shown) or None
    return _render(request, p, "dac.html", status, current="dac", title="DAC queue",
                   institution=inst, items=items, errors=errors or {}, reasons=reasons or {},
                   general=general,
                   notice=(f"Your decision on request {int(decided)} was recorded."
                           if decided.isdigit() else None))


@router.get("/dac")
def dac_page(request: Request, s: SessionDep) -> Response:
    """What the member's institution has yet to decide, oldest first."""
    p = _who(request)
    if p is None:
        return _to_login(request)
    if not _is_dac(p):
        return _denied(request, p)
    return _dac_page(request, s, p)


@router.post("/dac/{request_id}")
def decide_page(request_id: int, request: Request, s: SessionDep, form: FormDep) -> Response:
    """Approve, reject or ask for changes (:func:`mida.sharing.requests.review`)."""
    p = _who(request)
    if p is None:
        return _to_login(request)
    if not _csrf_ok(request, form.get("csrf")):
        return _csrf_refused(request, p)
    if not _is_dac(p):
        return _denied(request, p)
    reason = form.get("reason")
    try:
        with audit_trail(request, p) as trail:
            rq.review(s, request_id, p.name, form.get("decision"), reason, audit=trail)
            s.commit()
    except (AccessDeniedError, NotFoundError) as exc:
        s.rollback()
        return _refused(request, p, exc)
    except MidaError as exc:
        s.rollback()
        return _dac_page(request, s, p, status=409 if isinstance(exc, ConflictError) else 400,
                         errors={request_id: str(exc)}, reasons={request_id: reason})
    return RedirectResponse(f"/dac?decided={request_id}", status_code=303)


# ----------------------------------------------------------------- grants and releases

def _grant_status(g: dict[str, Any]) -> str:
    if g["revoked"]:
        return "revoked"
    return "active" if g["active"] else "expired"


@router.get("/grants")
def grants_page(request: Request, s: SessionDep) -> Response:
    """The user's grants: what each opens, purpose, download or view only, expiry, status."""
    p = _who(request)
    if p is None:
        return _to_login(request)
    rows = []
    for g in list_grants(s, p.name):
        name, _, version = (g["release"] or "").partition("@")
        rows.append({**g, "status": _grant_status(g), "release_name": name,
                     "release_version": version})
    return _render(request, p, "grants.html", current="grants", title="My grants", grants=rows,
                   everything=p.everything)


@router.get("/releases/{name}/{version}")
def release_page(name: str, version: str, request: Request, s: SessionDep) -> Response:
    """A release the user holds a grant on: summary, counts, card and the download form."""
    p = _who(request)
    if p is None:
        return _to_login(request)
    try:
        row = releases.get(s, f"{name}@{version}")
    except (NotFoundError, MidaError):
        return _refused(request, p, NotFoundError(f"no release {name}@{version}"))
    if not p.may_read_release(row.id):
        return _denied(request, p)
    node = _node(request)
    card = build_card(s, node.store(), row, home=node.settings.home)
    formats = [f for f, missing in export_formats().items() if not missing]
    return _render(request, p, "release.html", title=f"{row.name}@{row.version}", r=row,
                   summary=releases.describe(row), card=card.markdown, formats=formats,
                   download=p.may_download_release(row.id))


__all__ = ["PAGE_CSP", "csrf_token", "nav_items", "read_form", "router"]
