"""Dataset releases over HTTP: what a release grant opens.

======  ============================================  ========================================
GET     /api/releases                                 the releases the caller may read
GET     /api/releases/{name}/{version}                summary: counts, split, expression,
                                                      manifest sha256 (``?files=true``: also
                                                      every file with its sha256 and size)
GET     /api/releases/{name}/{version}/manifest       the manifest as stored (JSON bytes)
GET     /api/releases/{name}/{version}/card           the dataset card (Markdown)
GET     /api/releases/{name}/{version}/download       ``?format=dicom|nifti|nnunet|monai|coco|hf``
                                                      (comma-separated for several): a zip
======  ============================================  ========================================

Release access comes from release grants (made when an access request is
granted, or with ``mida grants add --release``), or the admin and operator
roles; a collection grant does not open a release. Reading (summary,
manifest, card) needs a grant in force; downloading needs one that allows
download. Anything else, a missing release included, answers 403 with the
same body (:data:`mida.sharing.identity.DENIED`).

A download exports the release (:func:`mida.datasets.export.export`) into a
temporary folder under the node's home, and streams it as a zip: entries in
sorted path order under ``NAME-VERSION/``, each dated 1980-01-01, so the same
release and formats give the same bytes. The folder is removed once the zip
is sent. Each download is one audit entry (``release.download``: release,
formats, user, grant id, manifest sha256); a denial by an expired or revoked
grant is one too (``release.denied``).
"""

from __future__ import annotations

import io
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from mida.api.deps import PrincipalDep, SessionDep, audit_log
from mida.catalog.models import DatasetRelease
from mida.datasets import release
from mida.datasets.card import build_card
from mida.datasets.export import export, parse_formats
from mida.errors import AccessDeniedError, NotFoundError
from mida.node import Node
from mida.sharing.identity import DENIED, Principal, lapsed_grant

router = APIRouter(tags=["releases"])
PATH = "/api/releases/{name}/{version}"
#: Suffixes of files already compressed: stored in the zip as they are.
_STORED = (".gz", ".png", ".jpg", ".jpeg", ".zip", ".parquet", ".npz")
_CHUNK = 1 << 20
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def _deny(request: Request, s: Session, p: Principal, row: DatasetRelease,
          what: str) -> NoReturn:
    """403; an expired or revoked grant on the release is audited as the reason."""
    if p.user_id is not None:
        gone = lapsed_grant(s, p.user_id, release_id=row.id)
        if gone is not None:
            reason = "grant revoked" if gone.revoked is not None else "grant expired"
            audit_log(request).append("release.denied", {
                "release": f"{row.name}@{row.version}", "action": what, "reason": reason,
                "grant": gone.id}, p.actor)
    raise AccessDeniedError(DENIED)


def _release(request: Request, s: Session, p: Principal, name: str, version: str, *,
             download: bool = False) -> DatasetRelease:
    """The release, if the caller may read (or download) it; else 403 with DENIED."""
    try:
        row = release.get(s, f"{name}@{version}")
    except NotFoundError:
        if p.releases is not None:  # a missing release answers as a forbidden one
            raise AccessDeniedError(DENIED) from None
        raise
    if not p.may_read_release(row.id):
        _deny(request, s, p, row, "read")
    if download and not p.may_download_release(row.id):
        _deny(request, s, p, row, "download")
    return row


def _summary(row: DatasetRelease, p: Principal) -> dict[str, Any]:
    return {**release.describe(row), "download": p.may_download_release(row.id)}


@router.get("/api/releases", operation_id="list_releases")
def list_releases(s: SessionDep, p: PrincipalDep) -> dict[str, Any]:
    """The ready releases you hold a grant on (admins: every one), oldest version first."""
    rows = [r for r in release.list_all(s) if p.may_read_release(r.id)]
    data = [{k: v for k, v in _summary(r, p).items() if k != "split"} for r in rows]
    return {"count": len(data), "data": data}


@router.get(PATH, operation_id="get_release")
def get_release(name: str, version: str, request: Request, s: SessionDep, p: PrincipalDep,
                files: bool = False) -> dict[str, Any]:
    """A release's summary; ``files=true`` adds every file (instance) with sha256 and size."""
    row = _release(request, s, p, name, version)
    out = _summary(row, p)
    if files:
        manifest = release.load_manifest(_node(request).store(), row)
        out["files"] = [{"SeriesInstanceUID": x["SeriesInstanceUID"],
                         "SOPInstanceUID": i["SOPInstanceUID"], "sha256": i["sha256"],
                         "size": i["size"]}
                        for x in manifest["series"] for i in x["instances"]]
    return out


@router.get(PATH + "/manifest", operation_id="get_release_manifest",
            response_class=Response, responses={200: {"content": {"application/json": {}}}})
def get_release_manifest(name: str, version: str, request: Request, s: SessionDep,
                         p: PrincipalDep) -> Response:
    """The manifest exactly as stored: its sha256 is the summary's ``manifest_sha256``."""
    row = _release(request, s, p, name, version)
    assert row.manifest_sha256 is not None  # a ready release has one
    data = _node(request).store().get(row.manifest_sha256, verify=True)
    return Response(data, media_type="application/json")


@router.get(PATH + "/card", operation_id="get_release_card",
            response_class=Response, responses={200: {"content": {"text/markdown": {}}}})
def get_release_card(name: str, version: str, request: Request, s: SessionDep,
                     p: PrincipalDep) -> Response:
    """The release's datasheet (``mida release card``'s card.md)."""
    row = _release(request, s, p, name, version)
    node = _node(request)
    card = build_card(s, node.store(), row, home=node.settings.home)
    return Response(card.markdown.encode(), media_type="text/markdown; charset=utf-8")


class _Sink(io.RawIOBase):
    """An unseekable byte sink: zipfile writes into it, the response takes what is there."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.buf += b
        return len(b)

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


def zip_stream(folder: Path, prefix: str) -> Iterator[bytes]:
    """The files under ``folder`` as a zip, in sorted path order, with fixed dates.

    Written through an unseekable sink (sizes and CRCs follow each entry), so
    nothing but one chunk is held in memory.
    """
    sink = _Sink()
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    with zipfile.ZipFile(sink, "w", allowZip64=True) as zf:
        for path in paths:
            rel = path.relative_to(folder).as_posix()
            info = zipfile.ZipInfo(f"{prefix}/{rel}", date_time=_EPOCH)
            info.create_system = 3  # Unix, so the permissions below are read
            info.external_attr = 0o644 << 16
            info.compress_type = (zipfile.ZIP_STORED if path.suffix.lower() in _STORED
                                  else zipfile.ZIP_DEFLATED)
            size = path.stat().st_size
            with path.open("rb") as src, zf.open(info, "w", force_zip64=size > 2**31) as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
                    if len(sink.buf) >= _CHUNK:
                        yield sink.take()
            yield sink.take()
    yield sink.take()  # the central directory


@router.get(PATH + "/download", operation_id="download_release",
            response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {}}}})
def download_release(
    name: str, version: str, request: Request, s: SessionDep, p: PrincipalDep,
    format: Annotated[str, Query(max_length=200, description="Export format(s): dicom, "
                                 "nifti, nnunet, monai, coco, hf, hf-parquet; "
                                 "comma-separated for several.")] = "dicom",
) -> StreamingResponse:
    """Export the release in ``format`` and stream it as a zip (needs a download grant)."""
    row = _release(request, s, p, name, version, download=True)
    formats = parse_formats([format])
    node = _node(request)
    tmp_root = node.settings.home / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="download-", dir=tmp_root))
    try:
        result = export(s, node.store(), row, formats, tmp / "export")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    audit_log(request).append("release.download", {
        "release": f"{row.name}@{row.version}", "formats": formats, "user": p.name,
        "grant": p.release_grant_id(row.id), "manifest": row.manifest_sha256,
        "series": result.report.get("series"), "files": len(result.report.get("files", []))},
        p.actor)

    def body() -> Iterator[bytes]:
        try:
            yield from zip_stream(tmp / "export", f"{row.name}-{row.version}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    filename = f"{row.name}-{row.version}-{'-'.join(formats)}.zip"
    return StreamingResponse(
        body(), media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        # also when the body never starts (the client went away first)
        background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))


__all__ = ["router", "zip_stream"]
