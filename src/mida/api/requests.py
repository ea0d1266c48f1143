"""Access requests, data use agreements and collection terms over HTTP.

======  ==================================  ================================================
POST    /api/requests                       submit (multipart/form-data: a ``request`` part
                                            holding :class:`RequestCreate` as JSON, and an
                                            ``irb_document`` file part); 201 + Location
GET     /api/requests                       the caller's requests (own, as a handler, as a DAC
                                            member of an owner; admins: all); ``?status=``;
                                            ``?queue=dac``: what the caller's DAC has yet to
                                            decide
GET     /api/requests/{id}                  one request: decisions, handlers, DUA, grants
GET     /api/requests/{id}/irb              the IRB approval document
POST    /api/requests/{id}/decisions        a DAC member decides (:class:`DecisionCreate`)
POST    /api/requests/{id}/resubmit         answer a request for changes
                                            (:class:`RequestChanges` as JSON, or multipart
                                            with a ``changes`` part and a new
                                            ``irb_document``)
POST    /api/requests/{id}/dua              a named handler accepts the DUA
                                            (:class:`DuaAcceptanceCreate`: the sha256 of the
                                            text shown); the last one makes the grants
GET     /api/dua                            DUA templates (every version, without text)
GET     /api/dua/{name}/{version}           one DUA with its text and sha256
GET     /api/collections/{name}/terms       a collection's owner, licence, terms, citation,
                                            contributors and handler cap
======  ==================================  ================================================

The caller is the token's user; the rules are :mod:`mida.sharing.requests`'.
A request the caller may not see answers exactly as a missing one: 403 with
:data:`~mida.sharing.identity.DENIED` for anyone without node-wide access
(404 for admins); so does a decision by anyone but a DAC member of an owning
institution, and a DUA acceptance by anyone but a named handler. A refused
step (bad input) is 400 with the reason, a step the request's state does not
allow 409. Every step is an audit entry (besides the one per HTTP request),
written once its transaction has committed.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session

from mida.api.deps import PrincipalDep, SessionDep, audit_trail
from mida.datasets import access
from mida.dicomweb.multipart import MultipartReader, Part, parse_media_type
from mida.errors import AccessDeniedError, MidaError
from mida.node import Node
from mida.sharing import dua, governance
from mida.sharing import requests as rq
from mida.sharing.identity import DENIED, Principal

router = APIRouter(tags=["governance"])
#: The largest request body accepted: the IRB document plus room for the fields.
BODY_MAX = rq.IRB_DOCUMENT_MAX + 1024 * 1024


# ----------------------------------------------------------------- schemas

class RequestCreate(BaseModel):
    """A new access request (the ``request`` part of the multipart body)."""

    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=256)
    purpose: str = Field(min_length=1, max_length=20_000)
    cohort: str | None = Field(default=None, description="a saved cohort's name")
    release: str | None = Field(default=None, description="NAME@X.Y.Z")
    handlers: list[str] = Field(default_factory=list, max_length=100,
                                description="user names; the applicant is always one")
    irb_number: str = Field(min_length=1, max_length=64)
    irb_body: str = Field(min_length=1, max_length=256)
    irb_expiry: dt.date
    download: bool = Field(default=False, description="handlers may download raw data")
    dua: str = Field(min_length=1, max_length=100, description="name@version (or name)")


class RequestChanges(BaseModel):
    """What a resubmission changes (the rest is kept)."""

    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(default=None, min_length=1, max_length=256)
    purpose: str | None = Field(default=None, min_length=1, max_length=20_000)
    cohort: str | None = None
    release: str | None = None
    handlers: list[str] | None = Field(default=None, max_length=100)
    irb_number: str | None = Field(default=None, min_length=1, max_length=64)
    irb_body: str | None = Field(default=None, min_length=1, max_length=256)
    irb_expiry: dt.date | None = None
    download: bool | None = None
    dua: str | None = Field(default=None, min_length=1, max_length=100)


class DecisionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["approve", "reject", "changes"]
    reason: str = Field(default="", max_length=20_000,
                        description="needed to reject or ask for changes")


class DuaAcceptanceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$",
                        description="the sha256 of the DUA text shown to the handler "
                                    "(GET /api/dua/{name}/{version})")


class RequestSummary(BaseModel):
    id: int
    title: str
    researcher: str
    target: Literal["cohort", "release"]
    data: str = Field(description="the cohort's name or the release NAME@X.Y.Z")
    status: str
    revision: int
    institutions: list[str] = Field(description="the owners whose DACs decide")
    download: bool
    irb_expiry: dt.date
    created: str
    updated: str


class RequestList(BaseModel):
    count: int
    data: list[RequestSummary]


class DecisionPublic(BaseModel):
    revision: int
    institution: str
    decision: str
    reason: str
    created: str
    decided_by: str | None = Field(default=None, description="shown to DAC members and staff")


class HandlerPublic(BaseModel):
    user: str
    dua_accepted: str | None


class IrbPublic(BaseModel):
    number: str
    body: str
    expiry: dt.date
    document_sha256: str | None
    document_name: str | None


class DuaRef(BaseModel):
    ref: str
    title: str
    sha256: str


class GrantPublic(BaseModel):
    id: int
    user: str
    scope: str
    download: bool
    expires: str | None
    revoked: str | None


class CollectionRef(BaseModel):
    name: str
    institution: str


class RequestPublic(RequestSummary):
    purpose: str
    expression: str
    collections: list[CollectionRef]
    decisions: dict[str, str | None] = Field(
        description="each owner's decision on the current revision (null: not yet)")
    history: list[DecisionPublic]
    handlers: list[HandlerPublic]
    irb: IrbPublic
    dua: DuaRef | None
    granted_release: str | None
    grants: list[GrantPublic]


class DuaPublic(BaseModel):
    ref: str
    name: str
    version: str
    title: str
    sha256: str
    created: str
    body: str | None = None


class DuaList(BaseModel):
    count: int
    data: list[DuaPublic]


class InstitutionRef(BaseModel):
    code: str
    name: str


class CollectionTermsPublic(BaseModel):
    collection: str
    institution: InstitutionRef | None
    license: str | None
    terms_of_use: str
    citation: str
    contributors: list[str]
    handler_cap: int | None = Field(description="null: the node's MIDA_HANDLER_CAP")


# ----------------------------------------------------------------- helpers

def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def _viewer(p: Principal) -> str | None:
    """The user name the services judge by (None: the node's console)."""
    if p.kind == "user":
        return p.name
    if p.kind == "local":
        return None
    raise AccessDeniedError(DENIED)  # DICOM peers have no part in requests


def _actor(p: Principal) -> str:
    if p.kind != "user":
        raise AccessDeniedError(DENIED)
    return p.name


class _Form:
    """A parsed multipart/form-data body: JSON fields by name, files by name."""

    def __init__(self, parts: list[Part]) -> None:
        self.fields: dict[str, bytes] = {}
        self.files: dict[str, tuple[str, bytes]] = {}
        for part in parts:
            _, params = parse_media_type(part.headers.get("content-disposition", ""))
            name = params.get("name")
            if name is None:
                continue
            data = part.read()
            part.close()
            if "filename" in params:
                self.files[name] = (params["filename"], data)
            else:
                self.fields[name] = data

    def model(self, name: str, cls: type[BaseModel], required: bool = True) -> Any:
        raw = self.fields.get(name)
        if raw is None and name in self.files:
            raw = self.files[name][1]  # some clients send the JSON part as a file
        if raw is None:
            if required:
                raise MidaError(f"the multipart body needs a {name!r} part holding JSON")
            return None
        try:
            return cls.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            raise MidaError(f"the {name!r} part is not a valid {cls.__name__}: "
                            f"{_brief(exc)}") from None


def _brief(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}"
                         for e in exc.errors()[:5])
    return "malformed JSON"


async def _body(request: Request) -> tuple[str, bytes | _Form]:
    """The body as ``("json", bytes)`` or ``("form", _Form)``, bounded by :data:`BODY_MAX`."""
    media, params = parse_media_type(request.headers.get("content-type", ""))
    if media == "multipart/form-data":
        reader = MultipartReader(params.get("boundary", ""), BODY_MAX)
        try:
            async for chunk in request.stream():
                reader.feed(chunk)
            return "form", _Form(reader.close())
        except BaseException:
            reader.discard()
            raise
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > BODY_MAX:
            raise MidaError(f"the request body is larger than {BODY_MAX} bytes")
    return "json", bytes(data)


BodyDep = Annotated[tuple[str, Any], Depends(_body)]


def _multipart_schema(part: str, model: type[BaseModel], *, file_required: bool) -> dict[str, Any]:
    schema = {"type": "object",
              "properties": {part: {**model.model_json_schema(),
                                    "description": f"{model.__name__} as JSON"},
                             "irb_document": {"type": "string", "format": "binary",
                                              "description": "the IRB approval letter"}},
              "required": [part, "irb_document"] if file_required else [part]}
    return {"multipart/form-data": {"schema": schema}}


def _public(s: Session, request_id: int, viewer: str | None) -> RequestPublic:
    return RequestPublic.model_validate(rq.show(s, request_id, viewer))


# ----------------------------------------------------------------- requests

@router.post("/api/requests", operation_id="submit_request", status_code=201,
             response_model=RequestPublic,
             openapi_extra={"requestBody": {"required": True, "content": _multipart_schema(
                 "request", RequestCreate, file_required=True)}})
def submit_request(request: Request, response: Response, s: SessionDep, p: PrincipalDep,
                   body: BodyDep) -> RequestPublic:
    """Submit an access request; it is routed to the DAC of every owning institution."""
    user = _actor(p)
    kind, form = body
    if kind != "form":
        raise MidaError("send multipart/form-data: a 'request' part (JSON) and an "
                        "'irb_document' file part")
    new: RequestCreate = form.model("request", RequestCreate)
    doc = form.files.get("irb_document")
    if doc is None:
        raise MidaError("the IRB approval document is missing: send it as the "
                        "'irb_document' file part")
    node = _node(request)
    with audit_trail(request, p) as trail:
        row = access.submit(s, node.store(), user, **new.model_dump(), irb_document=doc[1],
                            irb_document_name=doc[0], node_cap=node.settings.handler_cap,
                            audit=trail)
        rid = row.id
        s.commit()
    response.headers["Location"] = f"/api/requests/{rid}"
    return _public(s, rid, user)


@router.get("/api/requests", operation_id="list_requests", response_model=RequestList)
def list_requests(s: SessionDep, p: PrincipalDep,
                  status: Annotated[str | None, Query(description="only this status")] = None,
                  queue: Annotated[Literal["dac"] | None, Query(
                      description="dac: what the caller's institution has yet to decide")]
                  = None) -> RequestList:
    """The requests the caller may see, oldest first (or their DAC queue)."""
    viewer = _viewer(p)
    if queue == "dac":
        rows = rq.pending_for(s, viewer) if viewer is not None else []
        if status is not None:
            rows = [r for r in rows if r.status == status]
    else:
        rows = rq.list_requests(s, viewer, status)
    data = [RequestSummary.model_validate(rq.summary(s, r)) for r in rows]
    return RequestList(count=len(data), data=data)


@router.get("/api/requests/{request_id}", operation_id="get_request",
            response_model=RequestPublic)
def get_request(request_id: int, s: SessionDep, p: PrincipalDep) -> RequestPublic:
    """One request, as far as the caller may see it."""
    return _public(s, request_id, _viewer(p))


@router.get("/api/requests/{request_id}/irb", operation_id="get_request_irb_document",
            response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}})
def get_request_irb_document(request: Request, request_id: int, s: SessionDep,
                             p: PrincipalDep) -> Response:
    """The IRB approval document (for the DACs' review)."""
    name, data = rq.irb_document(s, _node(request).store(), request_id, _viewer(p))
    media = "application/pdf" if name.lower().endswith(".pdf") else "application/octet-stream"
    safe = "".join(c for c in name if c.isalnum() or c in "._- ") or "irb-approval"
    return Response(data, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{safe}"'})


@router.post("/api/requests/{request_id}/decisions", operation_id="decide_request",
             status_code=201, response_model=RequestPublic)
def decide_request(request: Request, request_id: int, body: DecisionCreate, s: SessionDep,
                   p: PrincipalDep) -> RequestPublic:
    """A DAC member's decision for their institution on the current revision."""
    user = _actor(p)
    with audit_trail(request, p) as trail:
        rq.review(s, request_id, user, body.decision, body.reason, audit=trail)
        s.commit()
    return _public(s, request_id, user)


@router.post("/api/requests/{request_id}/resubmit", operation_id="resubmit_request",
             response_model=RequestPublic,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": RequestChanges.model_json_schema()},
                 **_multipart_schema("changes", RequestChanges, file_required=False)}}})
def resubmit_request(request: Request, request_id: int, s: SessionDep, p: PrincipalDep,
                     body: BodyDep) -> RequestPublic:
    """Answer a request for changes: the request becomes revision + 1, decided anew."""
    user = _actor(p)
    kind, payload = body
    extra: dict[str, Any] = {}
    if kind == "form":
        changes: RequestChanges = payload.model("changes", RequestChanges, required=False) \
            or RequestChanges()
        doc = payload.files.get("irb_document")
        if doc is not None:
            extra = {"irb_document": doc[1], "irb_document_name": doc[0]}
    else:
        try:
            changes = RequestChanges.model_validate_json(payload or b"{}")
        except ValidationError as exc:
            raise MidaError(f"not a valid RequestChanges: {_brief(exc)}") from None
    node = _node(request)
    with audit_trail(request, p) as trail:
        access.resubmit(s, node.store(), request_id, user, audit=trail,
                        node_cap=node.settings.handler_cap,
                        **changes.model_dump(exclude_unset=True), **extra)
        s.commit()
    return _public(s, request_id, user)


@router.post("/api/requests/{request_id}/dua", operation_id="accept_request_dua",
             status_code=201, response_model=RequestPublic)
def accept_request_dua(request: Request, request_id: int, body: DuaAcceptanceCreate,
                       s: SessionDep, p: PrincipalDep) -> RequestPublic:
    """A named handler accepts the request's DUA; the last acceptance makes the grants."""
    user = _actor(p)
    node = _node(request)
    with audit_trail(request, p) as trail:
        access.accept_dua(s, node.store(), request_id, user, sha256=body.sha256,
                          within_irb=node.settings.grant_within_irb, audit=trail,
                          tz=node.settings.tz)
        s.commit()
    return _public(s, request_id, user)


# ----------------------------------------------------------------- DUAs, terms

@router.get("/api/dua", operation_id="list_dua_templates", response_model=DuaList)
def list_dua_templates(s: SessionDep, p: PrincipalDep) -> DuaList:
    """Every DUA version (without the text)."""
    data = [DuaPublic.model_validate(dua.view(r, body=False)) for r in dua.list_templates(s)]
    return DuaList(count=len(data), data=data)


@router.get("/api/dua/{name}/{version}", operation_id="get_dua_template",
            response_model=DuaPublic)
def get_dua_template(name: str, version: str, s: SessionDep, p: PrincipalDep) -> DuaPublic:
    """One DUA version with its text; its sha256 is what an acceptance names."""
    return DuaPublic.model_validate(dua.view(dua.get_template(s, f"{name}@{version}")))


@router.get("/api/collections/{name}/terms", operation_id="get_collection_terms",
            response_model=CollectionTermsPublic)
def get_collection_terms(name: str, s: SessionDep, p: PrincipalDep) -> CollectionTermsPublic:
    """A collection's owner and terms: what to read before requesting or using its data."""
    return CollectionTermsPublic.model_validate(governance.terms(s, name))


__all__ = ["router"]
