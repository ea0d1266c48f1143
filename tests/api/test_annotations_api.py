"""The annotation REST API: schemas, worklist, geometry, create/revise/read, masks, access.

A node holds one ingested CT series (6 slices of 32x32, a bright sphere) in
collection ``ct`` and one in ``other``. Tokens: ``alice`` (admin), ``ann`` and
``bob`` (annotators with write on ``ct``), ``rae`` (read on ``ct``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from mida.annotations import store
from mida.annotations.schema import parse_schema
from mida.api import create_app
from mida.api.annotations import decode_rle_slices, encode_rle_slices
from mida.catalog.models import (
    Annotation,
    AnnotationTask,
    Collection,
    Series,
    Study,
    TaskAssignment,
    TaskCase,
)
from mida.deid.pseudonyms import Pseudonymizer
from mida.errors import AnnotationError
from mida.node import Node
from mida.sharing import AuditLog
from mida.sharing.identity import DENIED
from tests.annotations.conftest import SCHEMA, ingest_ct
from tests.factories import bearer, make_token


@dataclass
class World:
    node: Node
    app: Any
    study: str
    series: str
    sops: list[str]  # catalog UIDs, inferior to superior
    truth: np.ndarray
    other_study: str
    other_series: str
    other_sop: str
    tokens: dict[str, str]

    def client(self, who: str | None = "ann") -> TestClient:
        return TestClient(self.app, headers=bearer(self.tokens[who]) if who else {})


@pytest.fixture
def world(node: Node, tmp_path: Path) -> World:
    return make_world(node, tmp_path)


def make_world(node: Node, tmp_path: Path) -> World:
    info = ingest_ct(node, tmp_path / "ct", "ct")
    other = ingest_ct(node, tmp_path / "other", "other", slices=2, size=16)
    p = Pseudonymizer(node.key())
    with node.catalog().session() as s:
        store.add_schema(s, parse_schema(SCHEMA))
    tokens = {
        "alice": make_token(node),
        "ann": make_token(node, "ann", "annotator", "write", "ct", grant="write"),
        "bob": make_token(node, "bob", "annotator", "write", "ct", grant="write"),
        "rae": make_token(node, "rae", "researcher", "read", "ct", grant="read"),
    }
    return World(node, create_app(node), p.uid(info["study"]), p.uid(info["series"]),
                 [p.uid(u) for u in info["sops"]], info["truth"], p.uid(other["study"]),
                 p.uid(other["series"]), p.uid(other["sops"][0]), tokens)


def box_body(w: World, box: list[float], k: int = 2, **extra: Any) -> dict[str, Any]:
    return {"schema": "liver@1.0.0", "label": "nodule-box",
            "target": {"StudyInstanceUID": w.study, "SeriesInstanceUID": w.series,
                       "SOPInstanceUID": w.sops[k]},
            "data": {"box": box}, **extra}


def mask_body(w: World, mask: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"schema": "liver@1.0.0", "label": "lesion",
            "target": {"StudyInstanceUID": w.study, "SeriesInstanceUID": w.series},
            "mask": encode_rle_slices(mask), **extra}


# ----------------------------------------------------------------- mask encoding

def test_rle_slices_format_by_hand() -> None:
    """Runs alternate background/foreground, row by row, starting with background."""
    m = np.zeros((3, 2, 3), dtype=bool)
    m[1] = [[1, 1, 0], [0, 0, 1]]  # starts with foreground: a leading 0 run
    m[2, 0, 1] = True
    enc = encode_rle_slices(m)
    assert enc["shape"] == [3, 2, 3]
    assert enc["slices"] == {"1": [0, 2, 3, 1], "2": [1, 1, 4]}  # slice 0 is empty: left out
    assert np.array_equal(decode_rle_slices(enc, (3, 2, 3)), m)


def test_rle_slices_round_trip_on_random_masks() -> None:
    rng = np.random.default_rng(3)
    for density in (0.0, 0.05, 0.5, 0.95, 1.0):
        m = rng.random((4, 7, 5)) < density
        back = decode_rle_slices(encode_rle_slices(m), m.shape)
        assert back.dtype == bool and np.array_equal(back, m)


@pytest.mark.parametrize(("slices", "shape", "message"), [
    ({"0": [5, 3]}, None, "add up to 8 pixels but a slice has 3x4 = 12"),
    ({"2": [12]}, None, "outside the series' slices 0..1"),
    ({"x": [12]}, None, "not a slice index"),
    ({"0": [6, -1, 7]}, None, "non-negative whole numbers"),
    ({"0": [12]}, [2, 4, 3], "is not the series grid [2, 3, 4]"),
])
def test_rle_slices_errors_say_what_is_wrong(slices: dict, shape: list | None,
                                             message: str) -> None:
    with pytest.raises(AnnotationError, match=message.replace("[", r"\[").replace(".", r"\.")):
        decode_rle_slices({"encoding": "rle-slices", "slices": slices, "shape": shape}, (2, 3, 4))


# ----------------------------------------------------------------- schemas, geometry, worklist

def test_label_schemas(world: World) -> None:
    c = world.client("rae")
    listed = c.get("/api/labels").json()
    assert [x["ref"] for x in listed["data"]] == ["liver@1.0.0"]
    one = c.get("/api/labels/liver").json()
    assert one["ref"] == "liver@1.0.0"
    lesion = next(lb for lb in one["labels"] if lb["name"] == "lesion")
    assert lesion["key"] == "1" and lesion["colour"] == "#e6194b" and lesion["type"] == "mask"
    assert c.get("/api/labels/liver", params={"version": "1.0.0"}).status_code == 200
    r = c.get("/api/labels/liver", params={"version": "9"})
    assert r.status_code == 404 and "liver@1.0.0" in r.json()["detail"]


def test_geometry_orders_slices_anatomically(world: World) -> None:
    geo = world.client("rae").get(f"/api/series/{world.series}/geometry").json()
    assert geo["shape"] == [6, 32, 32] and geo["Modality"] == "CT"
    assert [u for u, _cls, _f in geo["slices"]] == world.sops  # files were written reversed
    assert geo["spacing"] == pytest.approx([2.5, 0.8, 0.8])


def test_worklist_lists_readable_series_then_task_assignments(world: World) -> None:
    series = world.client("ann").get("/api/worklist").json()
    assert series["mode"] == "series"
    assert [(x["SeriesInstanceUID"], x["slices"], x["task"]) for x in series["data"]] == [
        (world.series, 6, None)]  # the 'other' collection is not ann's
    admin = world.client("alice").get("/api/worklist").json()["data"]
    assert [x["SeriesInstanceUID"] for x in admin] == [world.other_series, world.series]
    task = make_task(world, {"ann": "read", "bob": "read"})
    items = world.client("ann").get("/api/worklist").json()
    assert items["mode"] == "tasks"
    [it] = items["data"]
    assert it["task"]["id"] == task and it["step"] == "read" and it["state"] == "assigned"
    assert it["schema"] == "liver@1.0.0" and it["SeriesInstanceUID"] == world.series
    assert it["StudyInstanceUID"] == world.study and it["Modality"] == "CT" and it["slices"] == 6
    assert world.client("rae").get("/api/worklist").json()["mode"] == "series"


def test_worklist_listing_and_masks_on_each_catalog_backend(any_node: Node,
                                                            tmp_path: Path) -> None:
    """The SQL behind the worklist, the blinded listing and masks, on SQLite and PostgreSQL."""
    w = make_world(any_node, tmp_path)
    assert [x["slices"] for x in w.client("ann").get("/api/worklist").json()["data"]] == [6]
    task = make_task(w, {"ann": "read", "bob": "read"})
    assert w.client("ann").get("/api/worklist").json()["data"][0]["task"]["id"] == task
    for who in ("ann", "bob"):
        r = w.client(who).post("/api/annotations", json=mask_body(w, w.truth, task=task))
        assert r.status_code == 201, r.text
    mine = w.client("ann").get("/api/annotations", params={"series": w.series}).json()["data"]
    assert [x["reader"] for x in mine] == ["ann"]
    got = w.client("ann").get(f"/api/annotations/{mine[0]['uid']}/mask").json()
    assert np.array_equal(decode_rle_slices(got, (6, 32, 32)), w.truth)


def make_task(w: World, people: dict[str, str], blinded: bool = True) -> int:
    """A task over the CT series; ``people`` maps reader -> step."""
    with w.node.catalog().session() as s:
        series = s.scalars(select(Series).where(Series.SeriesInstanceUID == w.series)).one()
        schema_row, _ = store.get_schema(s, "liver@1.0.0")
        cid = s.scalars(select(Collection.id).where(Collection.name == "ct")).one()
        task = AnnotationTask(name=f"t{blinded}", collection_id=cid, schema_id=schema_row.id,
                              readers=[r for r, st in people.items() if st == "read"],
                              blinded=blinded)
        s.add(task)
        s.flush()
        case = TaskCase(task_id=task.id, study_id=series.study_id, series_id=series.id)
        s.add(case)
        s.flush()
        for who, step in people.items():
            s.add(TaskAssignment(case_id=case.id, reader=who, step=step))
        return task.id


# ----------------------------------------------------------------- create, revise, read

def test_create_revise_and_read_every_revision(world: World) -> None:
    c = world.client("ann")
    r = c.post("/api/annotations", json=box_body(world, [3, 4, 10.5, 12]))
    assert r.status_code == 201, r.text
    v = r.json()
    assert r.headers["location"] == f"/api/annotations/{v['uid']}"
    assert v["reader"] == "ann" and v["reader_kind"] == "person" and v["status"] == "draft"
    assert v["label"] == "nodule-box" and v["data"]["box"] == [3, 4, 10.5, 12]
    assert v["target"]["SOPInstanceUID"] == world.sops[2] and v["revision"] == 1
    assert c.get(r.headers["location"]).json() == v

    r2 = c.post(f"/api/annotations/{v['uid']}/revisions",
                json={"data": {"box": [4, 4, 11, 13]}, "status": "submitted"})
    assert r2.status_code == 201, r2.text
    assert r2.json()["revision"] == 2 and r2.json()["status"] == "submitted"
    r3 = c.post(f"/api/annotations/{v['uid']}/revisions", json={"comment": "checked"})
    assert r3.json()["revision"] == 3 and r3.json()["data"]["box"] == [4, 4, 11, 13]

    assert c.get(f"/api/annotations/{v['uid']}").json()["revision"] == 3
    first = c.get(f"/api/annotations/{v['uid']}", params={"revision": 1}).json()
    assert first["data"]["box"] == [3, 4, 10.5, 12] and first["status"] == "draft"
    revs = c.get(f"/api/annotations/{v['uid']}/revisions").json()["data"]
    assert [(x["revision"], x["status"]) for x in revs] == [
        (1, "draft"), (2, "submitted"), (3, "submitted")]
    assert c.get(f"/api/annotations/{v['uid']}", params={"revision": 9}).status_code == 403

    listed = c.get("/api/annotations", params={"series": world.series}).json()["data"]
    assert [(x["uid"], x["revision"]) for x in listed] == [(v["uid"], 3)]
    assert c.get("/api/annotations", params={"status": "draft"}).json()["count"] == 0

    entry = AuditLog(world.node.settings.audit_file).entries()[-1]
    assert entry["actor"] == "user:ann" and entry["detail"]["method"] == "GET"
    posts = [e for e in AuditLog(world.node.settings.audit_file).entries()
             if e["detail"].get("method") == "POST"]
    assert [e["detail"]["status"] for e in posts] == [201, 201, 201]


def test_content_errors_are_422_with_the_reason(world: World) -> None:
    c = world.client("ann")
    bad_box = c.post("/api/annotations", json=box_body(world, [10, 10, 5, 20]))
    assert bad_box.status_code == 422 and "x0 < x1" in bad_box.json()["detail"]
    outside = c.post("/api/annotations", json=box_body(world, [1, 1, 40, 5]))
    assert outside.status_code == 422 and "outside the 32x32 image" in outside.json()["detail"]
    r = c.post("/api/annotations", json={**box_body(world, [1, 1, 4, 4]), "label": "nope"})
    assert r.status_code == 422 and "label 'nope' is not in schema liver@1.0.0" in r.text
    r = c.post("/api/annotations", json={**box_body(world, [1, 1, 4, 4]), "schema": "x@1"})
    assert r.status_code == 422 and "no label schema 'x@1'" in r.text
    r = c.post("/api/annotations", json={**box_body(world, [1, 1, 4, 4]), "status": "reviewed"})
    assert r.status_code == 422
    assert c.get("/api/annotations").json()["count"] == 0  # nothing stored by the failures


def test_mask_round_trip_through_the_api(world: World) -> None:
    c = world.client("ann")
    r = c.post("/api/annotations", json=mask_body(world, world.truth, status="submitted"))
    assert r.status_code == 201, r.text
    v = r.json()
    assert v["has_mask"] and v["data"]["voxels"] == int(world.truth.sum())
    got = c.get(f"/api/annotations/{v['uid']}/mask").json()
    assert got["shape"] == [6, 32, 32] and got["revision"] == 1
    assert [u for u, _f in got["slice_uids"]] == world.sops
    assert np.array_equal(decode_rle_slices(got, (6, 32, 32)), world.truth)
    with world.node.catalog().session() as s:
        ann = s.scalars(select(Annotation).where(Annotation.uid == v["uid"])).one()
        assert np.array_equal(store.load_mask(world.node.store(), store.latest(s, ann)),
                              world.truth)

    edited = world.truth.copy()
    edited[3] = False  # erase one slice
    r2 = c.post(f"/api/annotations/{v['uid']}/revisions",
                json={"mask": encode_rle_slices(edited)})
    assert r2.status_code == 201 and r2.json()["data"]["voxels"] == int(edited.sum())
    old = c.get(f"/api/annotations/{v['uid']}/mask", params={"revision": 1}).json()
    new = c.get(f"/api/annotations/{v['uid']}/mask").json()
    assert np.array_equal(decode_rle_slices(old, (6, 32, 32)), world.truth)
    assert np.array_equal(decode_rle_slices(new, (6, 32, 32)), edited)

    box = c.post("/api/annotations", json=box_body(world, [1, 1, 4, 4])).json()
    assert c.get(f"/api/annotations/{box['uid']}/mask").status_code == 404


def test_bad_masks_are_422(world: World) -> None:
    c = world.client("ann")
    short = {"encoding": "rle-slices", "slices": {"2": [100, 20]}}
    r = c.post("/api/annotations", json={**mask_body(world, world.truth), "mask": short})
    assert r.status_code == 422
    assert r.json()["detail"] == ("mask slice 2: the runs add up to 120 pixels but a slice "
                                  "has 32x32 = 1024")
    r = c.post("/api/annotations", json={**mask_body(world, world.truth),
                                         "mask": {**short, "slices": {"6": [1024]}}})
    assert r.status_code == 422 and "outside the series' slices 0..5" in r.json()["detail"]
    small = np.zeros((6, 16, 16), dtype=bool)
    r = c.post("/api/annotations", json=mask_body(world, small))
    assert r.status_code == 422 and "series grid [6, 32, 32]" in r.json()["detail"]
    r = c.post("/api/annotations", json={**mask_body(world, world.truth),
                                         "mask": {"encoding": "png", "slices": {}}})
    assert r.status_code == 422  # an unknown encoding fails the request's schema
    r = c.post("/api/annotations", json={**box_body(world, [1, 1, 4, 4]),
                                         "mask": encode_rle_slices(world.truth)})
    assert r.status_code == 422
    good = c.post("/api/annotations", json=mask_body(world, world.truth)).json()
    r = c.post(f"/api/annotations/{good['uid']}/revisions", json={"mask": short})
    assert r.status_code == 422 and "add up to 120" in r.json()["detail"]
    assert c.get(f"/api/annotations/{good['uid']}").json()["revision"] == 1


# ----------------------------------------------------------------- access

def test_no_token_is_401(world: World) -> None:
    c = world.client(None)
    assert c.get("/api/annotations").status_code == 401
    r = c.post("/api/annotations", json=box_body(world, [1, 1, 4, 4]))
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert c.get("/api/worklist").status_code == 401
    assert c.get(f"/api/series/{world.series}/geometry").status_code == 401


def test_another_collection_answers_like_a_missing_object(world: World) -> None:
    admin = world.client("alice")
    theirs = admin.post("/api/annotations", json={
        "schema": "liver@1.0.0", "label": "nodule-box", "data": {"box": [1, 1, 4, 4]},
        "target": {"SOPInstanceUID": world.other_sop}})
    assert theirs.status_code == 201, theirs.text
    uid = theirs.json()["uid"]
    c = world.client("ann")
    missing = c.get("/api/annotations/1.2.826.0.1.3680043.8.498.1")
    assert missing.status_code == 403 and missing.json() == {"detail": DENIED}
    for path in (f"/api/annotations/{uid}", f"/api/annotations/{uid}/revisions",
                 f"/api/annotations/{uid}/mask", f"/api/series/{world.other_series}/geometry",
                 "/api/series/1.2.3.4/geometry"):
        r = c.get(path)
        assert (r.status_code, r.json()) == (403, missing.json()), path
    r = c.post(f"/api/annotations/{uid}/revisions", json={"status": "submitted"})
    assert (r.status_code, r.json()) == (403, missing.json())
    for target in ({"SOPInstanceUID": world.other_sop}, {"SOPInstanceUID": "1.2.3.4"}):
        r = c.post("/api/annotations", json={**box_body(world, [1, 1, 4, 4]), "target": target})
        assert (r.status_code, r.json()) == (403, missing.json())
    assert c.get("/api/annotations").json()["count"] == 0
    assert admin.get("/api/annotations").json()["count"] == 1
    assert admin.get("/api/annotations/1.2.3.4").status_code == 404  # node-wide: a plain 404


def test_read_scope_cannot_annotate(world: World) -> None:
    made = world.client("ann").post("/api/annotations", json=box_body(world, [1, 1, 4, 4]))
    rae = world.client("rae")
    assert rae.get(f"/api/annotations/{made.json()['uid']}").status_code == 200
    r = rae.post("/api/annotations", json=box_body(world, [1, 1, 4, 4]))
    assert (r.status_code, r.json()) == (403, {"detail": DENIED})
    r = rae.post(f"/api/annotations/{made.json()['uid']}/revisions", json={"status": "submitted"})
    assert r.status_code == 403
    entry = AuditLog(world.node.settings.audit_file).entries()[-1]
    assert entry["actor"] == "user:rae" and entry["detail"]["result"] == "denied"


def test_only_the_reader_or_an_admin_revises(world: World) -> None:
    uid = world.client("ann").post("/api/annotations",
                                   json=box_body(world, [1, 1, 4, 4])).json()["uid"]
    r = world.client("bob").post(f"/api/annotations/{uid}/revisions",
                                 json={"status": "submitted"})
    assert (r.status_code, r.json()) == (403, {"detail": DENIED})
    r = world.client("alice").post(f"/api/annotations/{uid}/revisions",
                                   json={"status": "submitted"})
    assert r.status_code == 201 and r.json()["author"] == "alice" and r.json()["reader"] == "ann"


def test_blinded_task_hides_other_readers_entirely(world: World) -> None:
    task = make_task(world, {"ann": "read", "bob": "read", "rae": "review"})
    uids = {}
    for who, box in (("ann", [1, 1, 4, 4]), ("bob", [2, 2, 6, 6])):
        r = world.client(who).post("/api/annotations", json=box_body(world, box, task=task))
        assert r.status_code == 201, r.text
        uids[who] = r.json()["uid"]
    untasked = world.client("bob").post("/api/annotations",
                                        json=box_body(world, [3, 3, 5, 5])).json()["uid"]

    ann_sees = world.client("ann").get("/api/annotations", params={"series": world.series})
    assert {x["uid"] for x in ann_sees.json()["data"]} == {uids["ann"], untasked}
    assert world.client("ann").get("/api/annotations", params={"task": task}).json()["count"] == 1
    r = world.client("ann").get(f"/api/annotations/{uids['bob']}")
    assert (r.status_code, r.json()) == (403, {"detail": DENIED})

    reviewer = world.client("rae").get("/api/annotations", params={"task": task}).json()["data"]
    assert {x["uid"] for x in reviewer} == set(uids.values())
    assert {x["reader"] for x in reviewer} == {"(blinded)"}
    admin = world.client("alice").get("/api/annotations", params={"task": task}).json()["data"]
    assert {x["reader"] for x in admin} == {"ann", "bob"}

    open_task = make_task(world, {"ann": "read", "bob": "read"}, blinded=False)
    world.client("bob").post("/api/annotations", json=box_body(world, [2, 2, 6, 6],
                                                               task=open_task))
    seen = world.client("ann").get("/api/annotations", params={"task": open_task}).json()
    assert [x["reader"] for x in seen["data"]] == ["bob"]


def test_task_annotations_need_an_assignment(world: World) -> None:
    task = make_task(world, {"bob": "read"})
    r = world.client("ann").post("/api/annotations", json=box_body(world, [1, 1, 4, 4],
                                                                   task=task))
    assert r.status_code == 422 and "no assignment for this series" in r.json()["detail"]
    r = world.client("bob").post("/api/annotations", json=box_body(world, [1, 1, 4, 4],
                                                                   task=task + 100))
    assert r.status_code == 422 and f"no task {task + 100}" in r.json()["detail"]
    with world.node.catalog().session() as s:
        assert s.scalars(select(Study.id)).all()  # the catalog is intact
        assert not s.scalars(select(Annotation.id)).all()


# ----------------------------------------------------------------- the page

def test_annotate_page_and_sign_in(world: World) -> None:
    anon = TestClient(world.app, follow_redirects=False)
    r = anon.get("/annotate")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/annotate"
    form = anon.get("/login", params={"next": "/annotate"})
    assert form.status_code == 401 and 'name="next" value="/annotate"' in form.text
    r = anon.get("/login", params={"token": world.tokens["ann"], "next": "/annotate"})
    assert r.status_code == 303 and r.headers["location"] == "/annotate"
    assert "mida_token" in r.headers["set-cookie"]
    for hostile in ("//evil.example", "https://evil.example/", "/\\evil.example"):
        r = anon.get("/login", params={"token": world.tokens["ann"], "next": hostile})
        assert r.headers["location"] == "/", hostile

    page = world.client("ann").get("/annotate")
    assert page.status_code == 200 and 'data-user="ann"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    audited = len(AuditLog(world.node.settings.audit_file).entries())
    js = anon.get("/static/annotate.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert anon.get("/static/annotate.css").status_code == 200
    assert len(AuditLog(world.node.settings.audit_file).entries()) == audited  # no data: no audit
