"""Cohort counts and collection overviews: exact for grant holders, suppressed otherwise."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from mida.datasets import cohort
from tests.api.enforcement_world import World, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp("cohorts"))
    with w.node.catalog().session() as s:
        cohort.save(s, "all-ct", "modality = 'CT'", by="admin")
        cohort.save(s, "only-a", "collection = 'A'", by="admin")
    yield w


def _as(world: World, role: str) -> TestClient:
    return TestClient(world.app, headers={"Authorization": f"Bearer {world.tokens[role]}"})


def _count(world: World, role: str, where: str) -> dict:
    r = _as(world, role).get("/api/cohorts/count", params={"where": where})
    assert r.status_code == 200, r.text
    return r.json()


def test_every_collection_is_counted_and_small_cells_hidden_without_a_grant(
        world: World) -> None:
    admin = _count(world, "admin", "modality = 'CT'")
    assert admin["exact"] and admin["patients"] == 2 and admin["series"] == 2
    assert set(admin["by"]["collection"]) == {"A", "B"}
    for role in ("researcher", "researcher+A", "researcher+ra"):  # none covers A and B
        shown = _count(world, role, "modality = 'CT'")
        assert not shown["exact"] and shown["small_cell_min"] == 3
        assert shown["patients"] == shown["series"] == "<3" and shown["by"] == {}
        assert shown["bytes"] == admin["bytes"]  # a size, not a count of people


def test_a_grant_covering_the_result_sees_it_exactly(world: World) -> None:
    for role in ("researcher+A", "researcher+A-view", "steward"):
        shown = _count(world, role, "collection = 'A'")
        assert shown["exact"] and shown["patients"] == 1, role
        assert shown["by"]["collection"] == {"A": {"patients": 1, "studies": 1, "series": 1,
                                                   "instances": 1}}


def test_identifying_fields_count_only_readable_collections(world: World) -> None:
    """Asking whether a study UID is held where one may not read says 0, not '<3'."""
    where_b = f"study_uid = '{world.uids['B']['study']}'"
    assert _count(world, "admin", where_b)["series"] == 1
    shown = _count(world, "researcher+A", where_b)
    assert shown["exact"] and shown["series"] == 0
    assert _count(world, "researcher", where_b)["series"] == 0
    where_a = f"study_uid = '{world.uids['A']['study']}'"
    assert _count(world, "researcher+A", where_a)["series"] == 1


def test_a_syntax_error_is_422_with_the_column(world: World) -> None:
    r = _as(world, "researcher").get("/api/cohorts/count", params={"where": "modality == 'CT'"})
    assert r.status_code == 422 and r.json()["column"] == 11
    assert "expected a value" in r.json()["detail"]


def test_saved_cohorts_show_their_counts_suppressed_alike(world: World) -> None:
    admin = {x["name"]: x for x in _as(world, "admin").get("/api/cohorts").json()["data"]}
    assert admin["all-ct"]["counts"]["patients"] == 2 and admin["all-ct"]["exact"]
    holder = {x["name"]: x for x in _as(world, "researcher+A").get("/api/cohorts").json()["data"]}
    assert holder["only-a"]["exact"] and holder["only-a"]["counts"]["patients"] == 1
    assert not holder["all-ct"]["exact"] and holder["all-ct"]["counts"]["patients"] == "<3"
    assert holder["all-ct"]["expression"] == "modality = 'CT'"


def test_collection_overview_of_every_collection_hides_what_is_not_granted(
        world: World) -> None:
    def overview(role: str) -> dict[str, dict]:
        r = _as(world, role).get("/api/collections", params={"all": "true"})
        return {x["name"]: x for x in r.json()["data"]}

    mine = overview("researcher+A")
    assert mine["A"]["patients"] == 1 and mine["A"]["access"] == "download"
    assert mine["B"]["patients"] == "<3" and mine["B"]["access"] == "none"
    assert overview("researcher+A-view")["A"]["access"] == "view"
    assert overview("admin")["B"] == {**overview("admin")["B"], "patients": 1, "exact": True}
    # without all=true only readable collections are listed, exactly (as before)
    plain = _as(world, "researcher+A").get("/api/collections").json()["data"]
    assert [(x["name"], x["patients"]) for x in plain] == [("A", 1)]


def test_whoami_tells_role_view_only_collections_and_releases(world: World) -> None:
    me = _as(world, "researcher+A-view").get("/api/whoami").json()
    assert me["role"] == "researcher" and me["view_only"] == me["collections"]
    assert me["releases"] == []
    assert _as(world, "researcher+ra").get("/api/whoami").json()["releases"] == [
        world.release_ids["ra"]]
    assert _as(world, "operator").get("/api/whoami").json()["releases"] is None
