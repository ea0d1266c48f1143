"""FastAPI application of a mida node.

Thin by design: each route opens a catalog session, calls a query or
service, and formats the answer. Later issues add DICOMweb and auth here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import text
from sqlalchemy.orm import Session

from mida import __version__
from mida.catalog.query import collections_overview, list_level, show_uid
from mida.catalog.service import stats
from mida.errors import MidaError, NotFoundError
from mida.node import Node
from mida.web import templates


def get_session(request: Request) -> Iterator[Session]:
    """A catalog session per request, committed when the handler succeeds."""
    with request.app.state.node.catalog().session() as s:
        yield s


SessionDep = Annotated[Session, Depends(get_session)]


def create_app(node: Node) -> FastAPI:
    """Build the app for an opened node."""
    app = FastAPI(title="mida", version=__version__,
                  description="Medical Imaging Data for AI: a de-identified imaging archive.")
    app.state.node = node

    @app.exception_handler(NotFoundError)
    async def _not_found(_req: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(MidaError)
    async def _bad(_req: Request, exc: MidaError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/health", operation_id="health")
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

    @app.get("/api/stats", operation_id="get_stats")
    def get_stats(s: SessionDep) -> dict[str, Any]:
        return stats(s)

    @app.get("/api/collections", operation_id="list_collections")
    def list_collections(s: SessionDep) -> dict[str, Any]:
        rows = collections_overview(s)
        return {"count": len(rows), "data": rows}

    @app.get("/api/{level}", operation_id="list_level")
    def list_rows(
        level: str, s: SessionDep, collection: str | None = None, modality: str | None = None,
        study_date: str | None = None, limit: Annotated[int, Query(le=10000)] = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        if level not in ("patients", "studies", "series", "instances"):
            raise HTTPException(404, detail=f"unknown listing {level!r}")
        rows = list_level(s, level, collection=collection, modality=modality,
                          study_date=study_date, limit=limit, offset=offset)
        return {"count": len(rows), "data": rows}

    @app.get("/api/uids/{uid}", operation_id="show_uid")
    def get_uid(uid: str, s: SessionDep) -> dict[str, Any]:
        return show_uid(s, uid)

    @app.get("/", response_class=HTMLResponse, operation_id="home")
    def home(request: Request, s: SessionDep) -> HTMLResponse:
        return templates.TemplateResponse(
            request, "index.html",
            {"node": node, "stats": stats(s), "collections": collections_overview(s),
             "studies": list_level(s, "studies", limit=200), "version": __version__},
        )

    return app


__all__ = ["create_app"]
