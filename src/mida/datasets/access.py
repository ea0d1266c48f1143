"""The dataset side of access requests: what a cohort spans, and freezing it for a grant.

:mod:`mida.sharing.requests` holds the workflow's rules; two of its steps need
this floor's cohort language and releases, which sharing cannot import:

* at submission (and at a resubmission that changes the data), the
  collections a cohort's series belong to, which fix where the request is
  routed (:func:`collections_of`);
* when the last handler accepts the DUA of a cohort request, the cohort
  snapshot taken at submission is frozen into the release
  ``request-<id>@1.0.0``, restricted to the collections the DACs approved
  and leaving out whatever a release restriction flags (:func:`freeze`).

The faces (CLI, API) call :func:`submit`, :func:`resubmit` and
:func:`accept_dua` here; they are the sharing functions with those two steps
filled in. Everything else (review, withdraw, show, lists) is called on
:mod:`mida.sharing.requests` directly.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mida.catalog.models import (
    AccessRequest,
    Collection,
    DatasetRelease,
    DuaAcceptance,
    Grant,
    Series,
    Study,
    User,
)
from mida.datasets import cohort as cohorts
from mida.datasets import release as releases
from mida.errors import DatasetError
from mida.sharing import requests
from mida.storage.blobstore import BlobStore

#: The version of every release made for a request.
REQUEST_RELEASE_VERSION = "1.0.0"


def release_name(request_id: int) -> str:
    """The name of the release a cohort request's grants open."""
    return f"request-{request_id}"


def collections_of(store: BlobStore | None = None) -> requests.CollectionsOf:
    """``(s, expression) -> collection ids`` that the expression's series belong to now."""

    def spans(s: Session, expression: str) -> list[int]:
        ids = cohorts.series_ids(s, expression, store=store)
        out: set[int] = set()
        for i in range(0, len(ids), 500):
            out |= {int(c) for c in s.scalars(
                select(Study.collection_id).distinct().join(Series, Series.study_id == Study.id)
                .where(Series.id.in_(ids[i:i + 500])))}
        return sorted(out)

    return spans


def _quoted(name: str) -> str:
    if "'" not in name:
        return f"'{name}'"
    if '"' not in name:
        return f'"{name}"'
    raise DatasetError(f"collection name {name!r} holds both quote characters and cannot be "
                       "named in a cohort expression: rename the collection")


def freezer(store: BlobStore) -> requests.Freeze:
    """``(s, request) -> release id``: :func:`freeze` with the node's store.

    The release is recorded as created by the request's researcher.
    """

    def run(s: Session, request: AccessRequest) -> int:
        by = s.get(User, request.researcher_id)
        return freeze(s, store, request, by=by.name if by else None).id

    return run


def freeze(s: Session, store: BlobStore, request: AccessRequest, *,
           by: str | None = None, today: dt.date | None = None) -> DatasetRelease:
    """Freeze a cohort request's snapshot into ``request-<id>@1.0.0``.

    The expression is the one recorded at submission, and-ed with
    ``collection in [...]`` over the collections fixed then (and approved by
    their DACs), so data ingested since into other collections stays out;
    restrictions are honoured by :func:`mida.datasets.release.create`. A
    release of that name made by anyone else is refused (releases are
    immutable), never reused.
    """
    names = list(s.scalars(select(Collection.name)
                           .where(Collection.id.in_(list(request.collection_ids or [])))
                           .order_by(Collection.name)))
    if not names:
        raise DatasetError(f"request {request.id} spans no collection: nothing to freeze")
    expression = (f"({request.expression}) and collection in "
                  f"[{', '.join(_quoted(n) for n in names)}]")
    return releases.create(
        s, store, release_name(request.id), REQUEST_RELEASE_VERSION, expression=expression,
        description=f"Frozen for access request {request.id}: {request.title}", by=by,
        today=today)


def submit(s: Session, store: BlobStore, researcher: str, **kwargs: Any) -> AccessRequest:
    """:func:`mida.sharing.requests.submit` with the cohort language filled in."""
    return requests.submit(s, store, researcher, collections_of=collections_of(store), **kwargs)


def resubmit(s: Session, store: BlobStore, request_id: int, researcher: str,
             **kwargs: Any) -> AccessRequest:
    """:func:`mida.sharing.requests.resubmit` with the cohort language filled in."""
    return requests.resubmit(s, store, request_id, researcher,
                             collections_of=collections_of(store), **kwargs)


def accept_dua(s: Session, store: BlobStore, request_id: int, user: str,
               **kwargs: Any) -> DuaAcceptance:
    """:func:`mida.sharing.requests.accept_dua` that can freeze a cohort request's release."""
    return requests.accept_dua(s, request_id, user, freeze=freezer(store), **kwargs)


def make_grants(s: Session, store: BlobStore, request_id: int, **kwargs: Any) -> list[Grant]:
    """:func:`mida.sharing.requests.make_grants` for a request id (e.g. a retry)."""
    return requests.make_grants(s, requests.get_request(s, request_id),
                                freeze=freezer(store), **kwargs)


__all__ = [
    "REQUEST_RELEASE_VERSION",
    "accept_dua",
    "collections_of",
    "freeze",
    "freezer",
    "make_grants",
    "release_name",
    "resubmit",
    "submit",
]
