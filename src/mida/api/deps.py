"""Request plumbing shared by every route: sessions, the caller, and the access audit.

Every route except the open ones (:data:`OPEN_PATHS`: health, the OpenAPI
schema and its pages, login, the static files of the pages) needs a valid token, sent as
``Authorization: Bearer <token>`` or, for the browser pages, in the
``mida_token`` cookie that ``/login`` sets. :class:`AuditMiddleware` writes one
audit entry per such request: who, method, path (UIDs there are pseudonyms),
the names (never the values) of the query parameters, the HTTP status and
whether it was allowed, denied or failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mida.errors import AccessDeniedError
from mida.sharing import AuditLog
from mida.sharing.identity import DENIED, Principal, authenticate
from mida.sharing.requests import AuditBuffer

OPEN_PATHS = ("/health", "/docs", "/redoc", "/openapi.json", "/login", "/docs/oauth2-redirect",
              "/static")  # the pages' scripts and styles: no data, no token
COOKIE = "mida_token"


def get_session(request: Request) -> Iterator[Session]:
    """A catalog session per request, committed when the handler succeeds."""
    with request.app.state.node.catalog().session() as s:
        yield s


SessionDep = Annotated[Session, Depends(get_session)]


def token_of(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.cookies.get(COOKIE)


def get_principal(request: Request) -> Principal:
    """The authenticated caller (401 without a valid token)."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    with request.app.state.node.catalog().session() as s:
        principal = authenticate(s, token_of(request))
    request.state.principal = principal  # request.state is scope["state"]: the audit reads it
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def audit_log(request: Request) -> AuditLog:
    """The app's audit trail: the one its middleware writes (set by ``create_app``)."""
    log: AuditLog = request.app.state.audit
    return log


def audit_trail(request: Request, p: Principal) -> AuditBuffer:
    """The caller's entries for one step, written only once the step has committed."""
    log = audit_log(request)

    def write(action: str, detail: dict[str, Any]) -> None:
        log.append(action, detail, p.actor)

    return AuditBuffer(write)


def require(principal: Principal, need: str, collection_id: int | None = None) -> None:
    """403 unless ``principal`` may ``need`` on ``collection_id``."""
    if not principal.allows(need, collection_id):
        raise AccessDeniedError(DENIED)


class AuditMiddleware:
    """Append one audit entry per protected request, after its answer is known."""

    def __init__(self, app: ASGIApp, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        status: dict[str, int] = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            principal = scope.get("state", {}).get("principal")
            code = status["code"]
            result = ("allowed" if code < 400 else
                      "denied" if code in (401, 403) else "failed")
            query = scope.get("query_string", b"").decode("latin-1")
            params = sorted({p.split("=", 1)[0] for p in query.split("&") if p})
            detail: dict[str, Any] = {"method": scope["method"], "object": scope["path"],
                                      "params": params, "status": code, "result": result}
            actor = principal.actor if isinstance(principal, Principal) else "anonymous"
            await anyio.to_thread.run_sync(self.audit.append, "http", detail, actor)


class SecurityHeadersMiddleware:
    """Add the headers every answer carries (pure ASGI: no per-request task switching).

    ``Cross-Origin-Resource-Policy: cross-origin`` lets viewers such as OHIF,
    which run cross-origin isolated (SharedArrayBuffer), load what mida serves.
    """

    HEADERS = ((b"cross-origin-resource-policy", b"cross-origin"),
               (b"x-content-type-options", b"nosniff"))

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in self.HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_wrapper)


def _is_open(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in OPEN_PATHS) or path == "/favicon.ico"


__all__ = [
    "COOKIE",
    "OPEN_PATHS",
    "AuditMiddleware",
    "PrincipalDep",
    "SecurityHeadersMiddleware",
    "SessionDep",
    "get_principal",
    "get_session",
    "require",
    "token_of",
]
