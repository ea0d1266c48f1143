"""Small-cell suppression: counts shown to callers whose grants do not cover the data.

Taiwanese practice (the Health and Welfare Data Science Center's) lets
aggregated results out only with small cells hidden, because a count of one
or two people can identify them. mida hides every count from 1 to
``minimum - 1`` (``settings.small_cell_min``, 3 by default) that a caller
sees over collections they hold no grant on: cohort counts
(``GET /api/cohorts/count``), saved cohorts' counts, and the collection
overview of ``GET /api/collections?all=true``. Callers whose
grants cover every collection in the result (view-only grants included), and
admins and operators, see exact counts.

The rules, as :func:`suppress` applies them:

Primary suppression
    Every count from 1 to ``minimum - 1`` becomes the text ``"<minimum"``
    (``"<3"``). Keys in ``exempt`` (``bytes``: a size, not a count of people)
    are left alone, and so are texts, booleans and floats.
Zero
    0 stays 0. An empty cell says that nothing in the catalog matches, which
    discloses no one; the way it *could* disclose someone (asking whether one
    known pseudonym or UID is present) is closed upstream: counts by
    ``patient``, ``study_uid`` or ``series_uid`` are computed only over the
    collections the caller may read (:func:`count_scope`).
Secondary (complementary) suppression
    Groups that add up to a total shown next to them would give a hidden cell
    away: with groups ``{A: "<3", B: 10}`` and a total of 12, A = 12 - 10. So
    in every dimension of ``counts["by"]`` and for every measure, when cells
    are hidden and none of them is a secondary one, one more cell is hidden as
    ``"suppressed"`` (its value is at least the minimum, so ``"<3"`` would be
    false): the smallest one of at least ``2 * minimum - 2``. That size keeps
    every value from 1 to ``minimum - 1`` possible for each hidden cell even to
    someone who knows that a ``"suppressed"`` cell holds at least ``minimum``
    (with a minimum of 3, A = 1 next to a suppressed 3 would be pinned, since
    2 + 2 is not allowed). A dimension with no cell that large is withheld:
    it is left out of ``counts["by"]`` and named in ``counts["withheld"]``.
    Dimensions are then independent of one another: each is safe given the
    total, which is shown.
Small totals
    When a total is itself hidden (fewer than ``minimum``), the whole
    breakdown is withheld (``counts["by"]`` becomes ``{}``): groups appear
    only where they hold someone, so two groups under a total of "<3" would
    say one each.

This is a simple rule, not an optimal one (such as tau-Argus's): it hides
more than strictly needed, and it does not model the order between the
measures of one group (patients <= studies <= series), which in rare tables
narrows a hidden cell further. Nor does anything here stop *differencing*
across queries (counting ``X`` and ``X and not Y`` to learn ``X and Y``):
the audit trail records every query, which is how agencies that publish
aggregates handle it.

Examples
--------
>>> suppress({"patients": 12, "by": {"sex": {"F": {"patients": 2},
...                                          "M": {"patients": 10}}}}, 3)
{'patients': 12, 'by': {'sex': {'F': {'patients': '<3'}, 'M': {'patients': 'suppressed'}}}}
>>> suppress({"patients": 0, "series": 1, "bytes": 2}, 3)
{'patients': 0, 'series': '<3', 'bytes': 2}
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mida.catalog.models import Collection, Series, Study
from mida.sharing.identity import Principal

SECONDARY = "suppressed"
"""What a secondarily suppressed cell shows (its value is at least the minimum)."""
EXEMPT = frozenset({"bytes"})
"""Keys that hold sizes, not counts of people: never suppressed."""
IDENTIFYING_FIELDS = frozenset({"patient", "study_uid", "series_uid"})
"""Cohort fields that select one person, study or series: see :func:`count_scope`."""


def marker(minimum: int) -> str:
    """The text a primary-suppressed count shows: ``"<3"`` for a minimum of 3."""
    return f"<{minimum}"


def is_suppressed(value: Any) -> bool:
    """Whether a shown count was hidden (primary or secondary)."""
    return isinstance(value, str) and (value == SECONDARY or value.startswith("<"))


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _primary(obj: Any, minimum: int, exempt: frozenset[str], key: str | None = None) -> Any:
    if isinstance(obj, dict):
        return {k: _primary(v, minimum, exempt, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_primary(v, minimum, exempt, key) for v in obj]
    if _count(obj) and key not in exempt and 0 < obj < minimum:
        return marker(minimum)
    return obj


def suppress(counts: dict[str, Any], minimum: int, *, exempt: Iterable[str] = EXEMPT,
             groups: str = "by") -> dict[str, Any]:
    """A copy of ``counts`` with small cells hidden (see the module docstring).

    Parameters
    ----------
    counts
        Nested counts: integers at any depth (in dicts and lists); where
        ``counts[groups]`` is ``{dimension: {group: {measure: n}}}`` and
        ``counts[measure]`` is that measure's total (as in
        :meth:`mida.datasets.cohort.CohortCounts.as_dict`), secondary
        suppression also applies.
    minimum
        Counts from 1 to ``minimum - 1`` are hidden; 0 or 1 hides nothing.
    exempt
        Keys whose integers are not counts of people.
    groups
        The key of the grouped counts.

    Returns
    -------
    dict
        A new dict; ``counts`` is not changed.
    """
    ex = frozenset(exempt)
    out: dict[str, Any] = _primary(counts, minimum, ex)
    if minimum <= 1 or not isinstance(counts.get(groups), dict):
        return out
    totals = [k for k, v in counts.items() if _count(v) and k not in ex]
    if any(is_suppressed(out[m]) for m in totals):
        out[groups] = {}
        return out
    big = 2 * minimum - 2
    withheld = []
    for dim, cells in counts[groups].items():
        if not isinstance(cells, dict):
            continue
        shown = out[groups][dim]
        for m in totals:
            have = [g for g, c in cells.items() if isinstance(c, dict) and _count(c.get(m))]
            hidden = [shown[g][m] for g in have if is_suppressed(shown[g][m])]
            if not hidden or SECONDARY in hidden:
                continue
            large = sorted((cells[g][m], str(g), g) for g in have
                           if _count(shown[g][m]) and cells[g][m] >= big)
            if not large:
                withheld.append(dim)
                break
            shown[large[0][2]][m] = SECONDARY
    for dim in withheld:
        del out[groups][dim]
    if withheld:
        out["withheld"] = withheld
    return out


def collections_of_series(s: Session, series_ids: Iterable[int]) -> frozenset[int]:
    """The collections holding these series (the data a count is over)."""
    ids = sorted(set(series_ids))
    out: set[int] = set()
    for i in range(0, len(ids), 500):
        out |= {int(c) for c in s.scalars(
            select(Study.collection_id).join(Series, Series.study_id == Study.id)
            .where(Series.id.in_(ids[i:i + 500])).distinct())}
    return frozenset(out)


def saved_counts_for(s: Session, principal: Principal, counts: dict[str, Any],
                     minimum: int) -> tuple[dict[str, Any], bool]:
    """Stored cohort counts (``Cohort.counts``) as ``principal`` may see them.

    The collections are the names under ``counts["by"]["collection"]``; a name
    no longer in the catalog counts as not covered.
    """
    names = set((counts.get("by") or {}).get("collection") or {})
    ids = dict(s.execute(select(Collection.name, Collection.id)
                         .where(Collection.name.in_(sorted(names)))).all()) if names else {}
    if len(ids) < len(names) and not principal.covers([-1]):
        return suppress(counts, minimum), False
    return for_principal(principal, counts, ids.values(), minimum)


def count_scope(principal: Principal, fields: Iterable[str]) -> frozenset[int] | None:
    """The collections a count may look at for ``principal`` (None: every one).

    Counts span every collection (suppressed where not covered), except when
    the expression names an identifying field (:data:`IDENTIFYING_FIELDS`):
    then only the collections the caller may read, so that no caller can learn
    whether a given pseudonym or UID is held in a collection they may not read.
    """
    if principal.collections is None or not IDENTIFYING_FIELDS & set(fields):
        return None
    readable = principal.readable("read")
    return frozenset() if readable is None else readable


def for_principal(principal: Principal, counts: dict[str, Any],
                  collection_ids: Iterable[int], minimum: int) -> tuple[dict[str, Any], bool]:
    """``counts`` as ``principal`` may see them, and whether they are exact.

    Exact when the caller's grants cover every collection the counts are
    over (:meth:`Principal.covers`; admins and operators always); else
    :func:`suppress` ed with ``minimum``.
    """
    if principal.covers(collection_ids):
        return dict(counts), True
    return suppress(counts, minimum), False


__all__ = [
    "EXEMPT",
    "IDENTIFYING_FIELDS",
    "SECONDARY",
    "collections_of_series",
    "count_scope",
    "for_principal",
    "is_suppressed",
    "marker",
    "saved_counts_for",
    "suppress",
]
