"""Small-cell suppression: what callers without a covering grant see of a count."""

from __future__ import annotations

import copy
import itertools
import random
from typing import Any

import pytest

from mida.sharing.identity import Principal
from mida.sharing.suppression import (
    SECONDARY,
    count_scope,
    for_principal,
    is_suppressed,
    suppress,
)


def _cohort(by: dict[str, dict[str, int]], measure: str = "series") -> dict[str, Any]:
    """A CohortCounts-shaped dict of one measure whose total is the sum of each dimension."""
    totals = {sum(v.values()) for v in by.values()}
    assert len(totals) == 1
    return {"expression": "x", measure: totals.pop(), "bytes": 7,
            "by": {d: {g: {measure: n} for g, n in cells.items()} for d, cells in by.items()}}


def test_primary_hides_one_and_two_keeps_zero_sizes_and_text() -> None:
    counts = {"expression": "modality = 'CT'", "patients": 2, "studies": 3, "series": 1,
              "instances": 0, "bytes": 1, "ok": True, "share": 1.0,
              "rows": [{"name": "A", "patients": 1}, {"name": "B", "patients": 40}]}
    before = copy.deepcopy(counts)
    out = suppress(counts, 3)
    assert out == {"expression": "modality = 'CT'", "patients": "<3", "studies": 3,
                   "series": "<3", "instances": 0, "bytes": 1, "ok": True, "share": 1.0,
                   "rows": [{"name": "A", "patients": "<3"}, {"name": "B", "patients": 40}]}
    assert counts == before  # a copy: the caller's dict is untouched


@pytest.mark.parametrize("minimum, hidden", [(0, []), (1, []), (2, [1]), (5, [1, 2, 3, 4])])
def test_the_minimum_is_a_setting(minimum: int, hidden: list[int]) -> None:
    out = suppress({str(n): n for n in range(8)}, minimum)
    assert [n for n in range(8) if out[str(n)] != n] == hidden
    assert all(out[str(n)] == f"<{minimum}" for n in hidden)


def test_one_hidden_group_takes_a_large_enough_second_one_with_it() -> None:
    # F=2 is hidden; M=3 is too small to cover it (under 2*3-2), O=5 is the smallest that is
    counts = _cohort({"sex": {"F": 2, "M": 3, "O": 5, "U": 9}})
    out = suppress(counts, 3)
    cells = {g: c["series"] for g, c in out["by"]["sex"].items()}
    assert cells == {"F": "<3", "M": 3, "O": SECONDARY, "U": 9}
    assert out["series"] == 19 and "withheld" not in out


def test_no_cell_large_enough_withholds_that_dimension_only() -> None:
    counts = _cohort({"sex": {"F": 1, "M": 3}, "modality": {"CT": 4}})
    out = suppress(counts, 3)
    assert out["withheld"] == ["sex"] and "sex" not in out["by"]
    assert out["by"]["modality"] == {"CT": {"series": 4}} and out["series"] == 4


def test_a_small_total_withholds_the_whole_breakdown() -> None:
    out = suppress(_cohort({"sex": {"F": 1, "M": 1}}), 3)
    assert out["series"] == "<3" and out["by"] == {}


def test_nothing_hidden_leaves_groups_as_they_are() -> None:
    counts = _cohort({"sex": {"F": 3, "M": 4}, "modality": {"CT": 7}})
    assert suppress(counts, 3) == counts


def _possible(shown: dict[str, Any], total: int, minimum: int) -> dict[str, set[int]]:
    """What an attacker can still believe of each hidden cell, knowing the total, that
    '<m' is 1..m-1 and that a secondary cell is at least m (groups exist, so >= 1)."""
    hidden = [g for g, v in shown.items() if is_suppressed(v)]
    rest = total - sum(v for v in shown.values() if not is_suppressed(v))
    ranges = [range(1, minimum) if shown[g] != SECONDARY else range(minimum, total + 1)
              for g in hidden]
    out: dict[str, set[int]] = {g: set() for g in hidden}
    for combo in itertools.product(*ranges):
        if sum(combo) == rest:
            for g, v in zip(hidden, combo, strict=True):
                out[g].add(v)
    return out


@pytest.mark.parametrize("minimum", [3, 4, 5])
def test_no_hidden_cell_can_be_worked_out_from_the_total(minimum: int) -> None:
    """Every table of up to five groups (seeded sample): each primary-hidden cell keeps
    every value from 1 to minimum-1 possible, or its dimension is withheld."""
    rng = random.Random(minimum)
    checked = 0
    for _ in range(400):
        cells = {f"g{i}": rng.randint(1, 3 * minimum) for i in range(rng.randint(1, 5))}
        out = suppress(_cohort({"d": cells}), minimum)
        if not isinstance(out["series"], int) or "d" not in out["by"]:
            continue
        shown = {g: c["series"] for g, c in out["by"]["d"].items()}
        for g, values in _possible(shown, out["series"], minimum).items():
            if shown[g] != SECONDARY:
                assert values == set(range(1, minimum)), (cells, shown)
                checked += 1
    assert checked > 50  # the sample does exercise hidden cells


def _principal(collections: frozenset[int] | None, **kw: Any) -> Principal:
    return Principal(kind="user", name="u", scope="read", collections=collections, **kw)


def test_exact_only_for_callers_whose_grants_cover_the_data() -> None:
    counts = {"patients": 2, "by": {}}
    admin = _principal(None, releases=None)
    holder = _principal(frozenset({1, 2}), view_only=frozenset({2}))
    other = _principal(frozenset({1}))
    assert for_principal(admin, counts, {1, 5}, 3) == (counts, True)
    assert for_principal(holder, counts, {1, 2}, 3) == (counts, True)  # view-only covers
    assert for_principal(other, counts, {1, 2}, 3) == ({"patients": "<3", "by": {}}, False)
    assert for_principal(other, {"patients": 0}, set(), 3) == ({"patients": 0}, True)


def test_identifying_fields_are_counted_only_where_the_caller_may_read() -> None:
    other = _principal(frozenset({1}))
    assert count_scope(other, {"modality", "age"}) is None  # every collection, suppressed
    assert count_scope(other, {"modality", "patient"}) == frozenset({1})
    assert count_scope(_principal(frozenset()), {"series_uid"}) == frozenset()
    assert count_scope(_principal(None, releases=None), {"patient"}) is None
