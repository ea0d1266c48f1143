"""Cohort counts over HTTP, with small-cell suppression.

======  =========================  ==================================================
GET     /api/cohorts/count         ``?where=EXPR``: what the expression selects, counted
                                   over every collection, broken down by collection,
                                   modality, sex and age band
GET     /api/cohorts               saved cohorts (``mida cohort save``) with the counts
                                   stored when they were saved
======  =========================  ==================================================

Any signed-in caller may count: counting moves no data, and is how a
researcher finds out what to request. Counts are exact (``"exact": true``)
when the caller's grants cover every collection in the result, or the caller
is an admin or operator; otherwise small cells are hidden
(:mod:`mida.sharing.suppression`: 1 and 2 show as ``"<3"`` with the default
``MIDA_SMALL_CELL_MIN``). An expression naming ``patient``, ``study_uid`` or
``series_uid`` is counted only over the collections the caller may read, so a
count never tells whether someone is held where the caller may not look. A
syntax error answers 422 with the message and the 1-based ``column``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from mida.api.deps import PrincipalDep, SessionDep
from mida.datasets import cohort
from mida.errors import CohortSyntaxError
from mida.sharing import suppression

router = APIRouter(tags=["cohorts"])


def _fields(n: cohort.Node) -> set[str]:
    """The catalog fields an expression tests (functions' arguments are labels, not fields)."""
    out = {n.field} if n.field else set()
    for c in n.children:
        out |= _fields(c)
    return out


@router.get("/api/cohorts/count", operation_id="count_cohort", response_model=None)
def count_cohort(
    request: Request, s: SessionDep, p: PrincipalDep,
    where: Annotated[str, Query(min_length=1, max_length=4000,
                                description="A cohort expression, e.g. modality = 'CT' "
                                "and age >= 18 (see docs/datasets.md).")],
) -> dict[str, Any] | JSONResponse:
    """Count what ``where`` selects; small cells hidden unless your grants cover the data."""
    node = request.app.state.node
    minimum = node.settings.small_cell_min
    try:
        scope = suppression.count_scope(p, _fields(cohort.parse(where)))
        ids = cohort.series_ids(s, where, collection_ids=scope, store=node.store())
    except CohortSyntaxError as exc:
        return JSONResponse({"detail": str(exc), "column": exc.column}, status_code=422)
    counts = cohort.counts_of(s, ids, where).as_dict()
    shown, exact = suppression.for_principal(
        p, counts, suppression.collections_of_series(s, ids), minimum)
    return {**shown, "exact": exact, "small_cell_min": minimum}


@router.get("/api/cohorts", operation_id="list_cohorts")
def list_cohorts(request: Request, s: SessionDep, p: PrincipalDep) -> dict[str, Any]:
    """Saved cohorts: name, expression, and the counts stored when saved (suppressed alike)."""
    minimum = request.app.state.node.settings.small_cell_min
    data = []
    for row in cohort.list_all(s):
        shown, exact = suppression.saved_counts_for(s, p, row.counts or {}, minimum)
        data.append({"name": row.name, "expression": row.expression,
                     "description": row.description, "created_by": row.created_by,
                     "created": row.created.isoformat(), "counts": shown, "exact": exact})
    return {"count": len(data), "data": data}


__all__ = ["router"]
