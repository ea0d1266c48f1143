"""FastAPI application of a mida node.

Thin by design: each route authenticates the caller, opens a catalog session,
calls a query or service, and formats the answer. Every protected request is
audited (:class:`mida.api.deps.AuditMiddleware`). DICOMweb lives under
``/dicomweb`` (:mod:`mida.api.dicomweb`), long jobs under ``/jobs``
(:mod:`mida.api.jobs`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import select, text

from mida import __version__
from mida.api.deps import (
    COOKIE,
    AuditMiddleware,
    PrincipalDep,
    SecurityHeadersMiddleware,
    SessionDep,
    require,
)
from mida.catalog.models import Collection
from mida.catalog.query import collection_of_uid, collections_overview, list_level, show_uid
from mida.catalog.service import stats
from mida.errors import AccessDeniedError, AuthError, ConflictError, MidaError, NotFoundError
from mida.node import Node
from mida.sharing import AuditLog, suppression
from mida.sharing.identity import DENIED, Principal
from mida.web import STATIC_DIR, templates


def _restricted(request: Request) -> bool:
    p = getattr(request.state, "principal", None)
    return not isinstance(p, Principal) or p.collections is not None


def create_app(node: Node) -> FastAPI:
    """Build the app for an opened node."""
    settings = node.settings
    app = FastAPI(title="mida", version=__version__,
                  description="Medical Imaging Data for AI: a de-identified imaging archive. "
                  "Every route except /health and these pages needs "
                  "'Authorization: Bearer <token>' (mida tokens create).")
    app.state.node = node
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    app.add_middleware(
        CORSMiddleware, allow_origins=origins, allow_credentials="*" not in origins,
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Accept"],
        expose_headers=["Location", "Warning", "Content-Location"],
    )
    app.state.audit = AuditLog(settings.audit_file, fsync=settings.audit_fsync)
    app.add_middleware(AuditMiddleware, audit=app.state.audit)

    app.add_middleware(SecurityHeadersMiddleware)

    @app.exception_handler(AuthError)
    async def _unauthorized(_req: Request, exc: AuthError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=401,
                            headers={"WWW-Authenticate": 'Bearer realm="mida"'})

    @app.exception_handler(AccessDeniedError)
    async def _forbidden(_req: Request, exc: AccessDeniedError) -> JSONResponse:
        return JSONResponse({"detail": DENIED}, status_code=403)

    @app.exception_handler(NotFoundError)
    async def _not_found(req: Request, exc: NotFoundError) -> JSONResponse:
        if _restricted(req):  # never tell a caller without a node-wide grant what exists
            return JSONResponse({"detail": DENIED}, status_code=403)
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ConflictError)
    async def _conflict(_req: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(MidaError)
    async def _bad(_req: Request, exc: MidaError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    from mida.api import annotations, cohorts, pages, releases, requests

    app.include_router(annotations.router)  # before /api/{level}, which would shadow it
    app.include_router(cohorts.router)
    app.include_router(releases.router)
    app.include_router(requests.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/health", operation_id="health", tags=["node"])
    def health(s: SessionDep) -> dict[str, Any]:
        checks: dict[str, str] = {}
        try:
            s.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # report, do not crash the probe
            checks["database"] = f"error: {type(exc).__name__}"
        try:
            node.store()
            checks["storage"] = "ok"
        except Exception as exc:
            checks["storage"] = f"error: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        if not ok:
            raise HTTPException(503, detail={"status": "degraded", **checks})
        return {"status": "ok", "version": __version__, "institution": node.institution_code,
                **checks}

    @app.get("/login", operation_id="login", tags=["node"], include_in_schema=False)
    def login(request: Request, s: SessionDep, token: str | None = None,
              next: str = "/") -> Response:
        from mida.sharing.identity import authenticate

        if not token:
            return templates.TemplateResponse(request, "login.html",
                                              {"version": __version__, "next": next},
                                              status_code=401)
        authenticate(s, token)  # 401 for a bad token, before any cookie is set
        local = next.startswith("/") and not next.startswith(("//", "/\\"))
        r = RedirectResponse(next if local else "/", status_code=303)
        r.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                     secure=settings.base_url.startswith("https"))
        return r

    @app.get("/api/whoami", operation_id="whoami", tags=["node"])
    def whoami(p: PrincipalDep) -> dict[str, Any]:
        return {"name": p.name, "kind": p.kind, "scope": p.scope, "role": p.role,
                "collections": None if p.collections is None else sorted(p.collections),
                "view_only": sorted(p.view_only),
                "releases": None if p.releases is None else sorted(p.releases)}

    @app.get("/api/stats", operation_id="get_stats", tags=["catalog"])
    def get_stats(s: SessionDep, p: PrincipalDep) -> dict[str, Any]:
        require(p, "read")  # node-wide counts: a node-wide grant
        return stats(s)

    @app.get("/api/collections", operation_id="list_collections", tags=["catalog"])
    def list_collections(s: SessionDep, p: PrincipalDep, all: bool = False) -> dict[str, Any]:
        """The collections you may read, with counts; ``all=true``: every collection, the
        ones you hold no grant on with small counts hidden (``MIDA_SMALL_CELL_MIN``)."""
        readable = p.readable()
        if not all:
            rows = collections_overview(s, readable)
            return {"count": len(rows), "data": rows}
        ids = dict(s.execute(select(Collection.name, Collection.id)).all())
        rows = []
        for row in collections_overview(s):
            cid = ids[row["name"]]
            shown, exact = suppression.for_principal(p, row, [cid],
                                                     settings.small_cell_min)
            access = ("none" if not exact else
                      "download" if p.collections is None or p.may_download(cid) else "view")
            rows.append({**shown, "access": access, "exact": exact})
        return {"count": len(rows), "data": rows}

    @app.get("/api/{level}", operation_id="list_level", tags=["catalog"])
    def list_rows(
        level: str, s: SessionDep, p: PrincipalDep, collection: str | None = None,
        modality: str | None = None, study_date: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        if level not in ("patients", "studies", "series", "instances"):
            raise HTTPException(404, detail=f"unknown listing {level!r}")
        rows = list_level(s, level, collection=collection, modality=modality,
                          study_date=study_date, limit=limit, offset=offset,
                          collection_ids=p.readable())
        return {"count": len(rows), "data": rows}

    @app.get("/api/uids/{uid}", operation_id="show_uid", tags=["catalog"])
    def get_uid(uid: str, s: SessionDep, p: PrincipalDep) -> dict[str, Any]:
        cid = collection_of_uid(s, uid)
        if cid is not None:
            require(p, "read", cid)
        return show_uid(s, uid)

    @app.get("/", response_class=HTMLResponse, operation_id="home", tags=["pages"])
    def home(request: Request, s: SessionDep) -> HTMLResponse:
        from mida.api.deps import get_principal

        try:
            p = get_principal(request)
        except AuthError:
            return templates.TemplateResponse(request, "login.html", {"version": __version__},
                                              status_code=401)
        ids = p.readable()
        return templates.TemplateResponse(
            request, "index.html",
            {"node": node, "stats": stats(s) if ids is None else None,
             "collections": collections_overview(s, ids),
             "studies": list_level(s, "studies", limit=200, collection_ids=ids),
             "version": __version__, "user": p.name},
        )

    from mida.api import dicomweb, jobs

    app.include_router(jobs.router)
    app.include_router(dicomweb.router)
    return app


__all__ = ["create_app"]
