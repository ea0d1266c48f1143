"""DICOMweb (PS3.18) routes under ``/dicomweb``: QIDO-RS, WADO-RS, STOW-RS.

Thin: each route authenticates (``PrincipalDep``), calls :mod:`mida.dicomweb`
and formats the answer. Read routes need read access to the UID's
collection (an unreadable UID answers like a missing one); retrieving raw
data (instances, frames, bulk data) also needs a grant that allows download
(a view-only grant opens metadata, rendered images and thumbnails only); searches see only
readable collections; STOW-RS needs write access to the target collection
(``?collection=NAME``, default ``MIDA_DICOM_DEFAULT_COLLECTION``; creating a
new one needs a node-wide grant). Errors are JSON ``{"detail": ...}`` with the
status PS3.18 names (400, 403, 404, 406, 409, 413, 415).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute

from mida.api.deps import PrincipalDep, SessionDep
from mida.dicomweb import qido, render, stow, wado
from mida.dicomweb.multipart import (
    DicomWebError,
    MultipartReader,
    PayloadTooLargeError,
    multipart_content_type,
    new_boundary,
    parse_accept,
)
from mida.node import Node
from mida.sharing.identity import Principal

DICOM_JSON = "application/dicom+json"


class _DicomWebRoute(APIRoute):
    """Answers a :class:`DicomWebError` with its own HTTP status (406, 413, 415...)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except DicomWebError as exc:
                return JSONResponse({"detail": str(exc)}, status_code=exc.status)

        return run


router = APIRouter(prefix="/dicomweb", tags=["dicomweb"], route_class=_DicomWebRoute)
STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def _accept(request: Request) -> list[Any]:
    return parse_accept(request.headers.get("accept"))


# -- QIDO-RS -------------------------------------------------------------------------
def _search(request: Request, s: Any, p: Any, level: str, study: str | None = None,
            series: str | None = None) -> Response:
    q = qido.parse_query(request.query_params.multi_items())
    res = qido.run(s, p, level, q, study_uid=study, series_uid=series)
    headers = {}
    if res.more:
        headers["Warning"] = qido.warning(urlsplit(_node(request).settings.base_url).netloc)
    return Response(qido.encode(res.rows), media_type=DICOM_JSON, headers=headers)


@router.get("/studies", operation_id="qido_studies")
def search_studies(request: Request, s: SessionDep, p: PrincipalDep) -> Response:
    """QIDO-RS: search for studies."""
    return _search(request, s, p, "STUDY")


@router.get("/series", operation_id="qido_series")
def search_series(request: Request, s: SessionDep, p: PrincipalDep) -> Response:
    """QIDO-RS: search for series."""
    return _search(request, s, p, "SERIES")


@router.get("/instances", operation_id="qido_instances")
def search_instances(request: Request, s: SessionDep, p: PrincipalDep) -> Response:
    """QIDO-RS: search for instances."""
    return _search(request, s, p, "IMAGE")


@router.get(STUDY + "/series", operation_id="qido_study_series")
def search_study_series(study: str, request: Request, s: SessionDep,
                        p: PrincipalDep) -> Response:
    """QIDO-RS: search for the series of a study."""
    return _search(request, s, p, "SERIES", study)


@router.get(STUDY + "/instances", operation_id="qido_study_instances")
def search_study_instances(study: str, request: Request, s: SessionDep,
                           p: PrincipalDep) -> Response:
    """QIDO-RS: search for the instances of a study."""
    return _search(request, s, p, "IMAGE", study)


@router.get(SERIES + "/instances", operation_id="qido_series_instances")
def search_series_instances(study: str, series: str, request: Request, s: SessionDep,
                            p: PrincipalDep) -> Response:
    """QIDO-RS: search for the instances of a series."""
    return _search(request, s, p, "IMAGE", study, series)


# -- WADO-RS: instances and metadata ----------------------------------------------------
def _raw(s: Any, p: Principal, study: str, series: str | None = None,
         instance: str | None = None) -> list[wado.Located]:
    """The instances of a raw-data request, after checking the caller may download them.

    A view-only grant (``download`` false) opens metadata, rendered images and
    thumbnails, not the stored instances, frames or bulk data: those answer
    403 with the body a missing UID gets.
    """
    found = wado.find_instances(s, p, study, series, instance)
    for cid in sorted({f.collection_id for f in found}):
        p.require_download(cid)
    return found


def _retrieve(request: Request, s: Any, p: Principal, study: str, series: str | None = None,
              instance: str | None = None) -> Response:
    found = _raw(s, p, study, series, instance)
    plan = wado.plan_retrieve(found, _accept(request))
    boundary = new_boundary()
    return StreamingResponse(wado.iter_retrieve(_node(request).store(), plan, boundary),
                             media_type=multipart_content_type(wado.DICOM, boundary))


@router.get(STUDY, operation_id="wado_study")
def retrieve_study(study: str, request: Request, s: SessionDep, p: PrincipalDep) -> Response:
    """WADO-RS: every instance of a study (multipart/related; type="application/dicom")."""
    return _retrieve(request, s, p, study)


@router.get(SERIES, operation_id="wado_series")
def retrieve_series(study: str, series: str, request: Request, s: SessionDep,
                    p: PrincipalDep) -> Response:
    """WADO-RS: every instance of a series."""
    return _retrieve(request, s, p, study, series)


@router.get(INSTANCE, operation_id="wado_instance")
def retrieve_instance(study: str, series: str, instance: str, request: Request, s: SessionDep,
                      p: PrincipalDep) -> Response:
    """WADO-RS: one instance."""
    return _retrieve(request, s, p, study, series, instance)


def _metadata(request: Request, s: Any, p: Any, study: str, series: str | None = None,
              instance: str | None = None) -> Response:
    scope = wado.metadata_scope(s, p, study, series, instance)
    node = _node(request)
    chunks = wado.iter_metadata(node.catalog(), scope, node.settings.base_url)
    if series is None:  # a whole study: stream it
        return StreamingResponse(chunks, media_type=DICOM_JSON)
    return Response(b"".join(chunks), media_type=DICOM_JSON)


@router.get(STUDY + "/metadata", operation_id="wado_study_metadata")
def study_metadata(study: str, request: Request, s: SessionDep, p: PrincipalDep) -> Response:
    """WADO-RS: DICOM JSON of every instance of a study (from the catalog)."""
    return _metadata(request, s, p, study)


@router.get(SERIES + "/metadata", operation_id="wado_series_metadata")
def series_metadata(study: str, series: str, request: Request, s: SessionDep,
                    p: PrincipalDep) -> Response:
    """WADO-RS: DICOM JSON of every instance of a series."""
    return _metadata(request, s, p, study, series)


@router.get(INSTANCE + "/metadata", operation_id="wado_instance_metadata")
def instance_metadata(study: str, series: str, instance: str, request: Request, s: SessionDep,
                      p: PrincipalDep) -> Response:
    """WADO-RS: DICOM JSON of one instance."""
    return _metadata(request, s, p, study, series, instance)


# -- WADO-RS: frames, bulk data, rendered, thumbnails --------------------------------------
@router.get(INSTANCE + "/frames/{frames}", operation_id="wado_frames")
def retrieve_frames(study: str, series: str, instance: str, frames: str, request: Request,
                    s: SessionDep, p: PrincipalDep) -> Response:
    """WADO-RS: frames (``1,2,3``) as multipart/related, native or as stored."""
    numbers = wado.parse_frames(frames)
    loc = _raw(s, p, study, series, instance)[0]
    content_type, body = wado.retrieve_frames(_node(request).store(), loc, numbers,
                                              _accept(request))
    return Response(body, media_type=content_type)


@router.get(INSTANCE + "/bulkdata/{tag}", operation_id="wado_bulkdata")
def retrieve_bulkdata(study: str, series: str, instance: str, tag: str, request: Request,
                      s: SessionDep, p: PrincipalDep) -> Response:
    """WADO-RS: one bulk data element (the metadata's BulkDataURI)."""
    number = wado.check_tag(tag)
    loc = _raw(s, p, study, series, instance)[0]
    content_type, body = wado.retrieve_bulkdata(_node(request).store(), loc, number,
                                                _accept(request))
    return Response(body, media_type=content_type)


def _image(request: Request, s: Any, p: Any, study: str, series: str | None,
           instance: str | None, frame: int | None, thumbnail: bool) -> Response:
    default = (render.THUMBNAIL_SIZE, render.THUMBNAIL_SIZE) if thumbnail else None
    params = render.parse_params(dict(request.query_params), request.headers.get("accept"),
                                 default_viewport=default)
    found = wado.find_instances(s, p, study, series, instance)
    loc = wado.pick_thumbnail(found) if instance is None else found[0]
    image = render.render_instance(_node(request).store(), loc, (frame or 1) - 1, params)
    content_type, body = params.package(image)
    return Response(body, media_type=content_type)


def _one_frame(frame: str) -> int:
    numbers = wado.parse_frames(frame)
    if len(numbers) != 1:
        raise DicomWebError("a rendered frame is one frame number")
    return numbers[0]


@router.get(INSTANCE + "/rendered", operation_id="wado_instance_rendered")
def instance_rendered(study: str, series: str, instance: str, request: Request,
                      s: SessionDep, p: PrincipalDep) -> Response:
    """WADO-RS: an instance (its first frame) rendered as image/jpeg or image/png."""
    return _image(request, s, p, study, series, instance, None, False)


@router.get(INSTANCE + "/frames/{frame}/rendered", operation_id="wado_frame_rendered")
def frame_rendered(study: str, series: str, instance: str, frame: str, request: Request,
                   s: SessionDep, p: PrincipalDep) -> Response:
    """WADO-RS: one frame rendered."""
    return _image(request, s, p, study, series, instance, _one_frame(frame), False)


@router.get(STUDY + "/thumbnail", operation_id="wado_study_thumbnail")
def study_thumbnail(study: str, request: Request, s: SessionDep, p: PrincipalDep) -> Response:
    """A small JPEG of the middle image of the study's first series."""
    return _image(request, s, p, study, None, None, None, True)


@router.get(SERIES + "/thumbnail", operation_id="wado_series_thumbnail")
def series_thumbnail(study: str, series: str, request: Request, s: SessionDep,
                     p: PrincipalDep) -> Response:
    """A small JPEG of the middle image of the series."""
    return _image(request, s, p, study, series, None, None, True)


@router.get(INSTANCE + "/thumbnail", operation_id="wado_instance_thumbnail")
def instance_thumbnail(study: str, series: str, instance: str, request: Request,
                       s: SessionDep, p: PrincipalDep) -> Response:
    """A small JPEG of the instance (its first frame)."""
    return _image(request, s, p, study, series, instance, None, True)


@router.get(INSTANCE + "/frames/{frame}/thumbnail", operation_id="wado_frame_thumbnail")
def frame_thumbnail(study: str, series: str, instance: str, frame: str, request: Request,
                    s: SessionDep, p: PrincipalDep) -> Response:
    """A small JPEG of one frame."""
    return _image(request, s, p, study, series, instance, _one_frame(frame), True)


# -- STOW-RS ----------------------------------------------------------------------------
async def _stow(request: Request, p: Any, collection: str | None,
                study: str | None) -> Response:
    node = _node(request)
    if study is not None:
        wado.check_uid(study, "study")
    target = await run_in_threadpool(stow.prepare, node, p, collection)
    boundary = stow.check_content_type(request.headers.get("content-type"))
    limit = node.settings.stow_max_bytes
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise PayloadTooLargeError(limit)
    reader = MultipartReader(boundary, limit)
    try:
        async for chunk in request.stream():
            reader.feed(chunk)
        parts = reader.close()
        stow.check_parts(parts)
    except BaseException:
        reader.discard()
        raise
    result = await run_in_threadpool(stow.store, node, p, target, parts, study)
    return Response(json.dumps(result.body).encode("utf-8"), status_code=result.status,
                    media_type=DICOM_JSON)


@router.post("/studies", operation_id="stow_studies")
async def store_instances(request: Request, p: PrincipalDep,
                          collection: str | None = None) -> Response:
    """STOW-RS: store instances (multipart/related; type="application/dicom")."""
    return await _stow(request, p, collection, None)


@router.post(STUDY, operation_id="stow_study")
async def store_study_instances(study: str, request: Request, p: PrincipalDep,
                                collection: str | None = None) -> Response:
    """STOW-RS: store instances of one study (others fail with 0xA900)."""
    return await _stow(request, p, collection, study)


__all__ = ["router"]
