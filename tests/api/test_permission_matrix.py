"""The permission matrix over the API: roles x actions x resources, every cell asserted.

:data:`EXPECTED` is the table, written from the rules (docs/governance.md,
"Enforcement"), not derived from the code:

* admin and operator reach everything; a caller reaching everything gets 404
  for what does not exist;
* a collection grant opens that collection's REST, DICOMweb and annotation
  routes and exact counts; a view-only grant (download false) all of that but
  raw data (WADO-RS instances and frames);
* a release grant opens that release's summary, manifest and card, and its
  download only when the grant allows download; no collection route;
* counts over collections a caller holds no grant on are suppressed;
* ingest needs node-wide admin; every caller lists their own jobs.

Cell values: ``Y`` allowed (2xx, rows returned, the release listed, exact
counts), ``n`` refused (403 with the DENIED body, no rows, not listed,
suppressed counts), ``4`` 404 (missing, for callers reaching everything).
Resources: ``own`` is collection A (the one the granted roles hold) or
release ra@1.0.0 (the granted one), ``other`` collection B or rb@1.0.0, and
``missing`` UIDs, a collection name, a release or a job that do not exist.
Every refusal's body is the body the same caller gets for the missing
resource, so a refusal never tells that something exists.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from mida.catalog.models import Grant, utcnow
from mida.catalog.service import queue_job
from mida.sharing import AuditLog
from mida.sharing.identity import DENIED
from tests.api.enforcement_world import ROLES, World, body, build_world, study_uid, wado

COLS = ("admin", "operator", "provider-admin", "steward", "dac-member", "researcher",
        "researcher+A", "researcher+A-view", "researcher+ra", "researcher+ra-view",
        "annotator", "honest-broker")
#                                 adm ops pad stw dac r0  rA  rAv rr  rrv ann hb
EXPECTED_TABLE = """
qido_series         own           Y   Y   Y   Y   n   n   Y   Y   n   n   Y   n
qido_series         other         Y   Y   n   n   n   n   n   n   n   n   n   n
qido_series         missing       n   n   n   n   n   n   n   n   n   n   n   n
wado_metadata       own           Y   Y   Y   Y   n   n   Y   Y   n   n   Y   n
wado_metadata       other         Y   Y   n   n   n   n   n   n   n   n   n   n
wado_metadata       missing       4   4   n   n   n   n   n   n   n   n   n   n
wado_retrieve       own           Y   Y   Y   Y   n   n   Y   n   n   n   Y   n
wado_retrieve       other         Y   Y   n   n   n   n   n   n   n   n   n   n
wado_retrieve       missing       4   4   n   n   n   n   n   n   n   n   n   n
wado_frames         own           Y   Y   Y   Y   n   n   Y   n   n   n   Y   n
wado_frames         other         Y   Y   n   n   n   n   n   n   n   n   n   n
wado_frames         missing       4   4   n   n   n   n   n   n   n   n   n   n
rendered            own           Y   Y   Y   Y   n   n   Y   Y   n   n   Y   n
rendered            other         Y   Y   n   n   n   n   n   n   n   n   n   n
rendered            missing       4   4   n   n   n   n   n   n   n   n   n   n
thumbnail           own           Y   Y   Y   Y   n   n   Y   Y   n   n   Y   n
thumbnail           other         Y   Y   n   n   n   n   n   n   n   n   n   n
api_studies         own           Y   Y   Y   Y   n   n   Y   Y   n   n   Y   n
api_studies         other         Y   Y   n   n   n   n   n   n   n   n   n   n
api_studies         missing       n   n   n   n   n   n   n   n   n   n   n   n
api_uid             own           Y   Y   Y   Y   n   n   Y   Y   n   n   Y   n
api_uid             other         Y   Y   n   n   n   n   n   n   n   n   n   n
api_uid             missing       4   4   n   n   n   n   n   n   n   n   n   n
annotations_list    own           Y   Y   Y   Y   n   n   Y   Y   n   n   Y   n
annotations_list    other         Y   Y   n   n   n   n   n   n   n   n   n   n
annotations_list    missing       n   n   n   n   n   n   n   n   n   n   n   n
release_list        own           Y   Y   n   n   n   n   n   n   Y   Y   n   n
release_list        other         Y   Y   n   n   n   n   n   n   n   n   n   n
release_summary     own           Y   Y   n   n   n   n   n   n   Y   Y   n   n
release_summary     other         Y   Y   n   n   n   n   n   n   n   n   n   n
release_summary     missing       4   4   n   n   n   n   n   n   n   n   n   n
release_manifest    own           Y   Y   n   n   n   n   n   n   Y   Y   n   n
release_manifest    other         Y   Y   n   n   n   n   n   n   n   n   n   n
release_manifest    missing       4   4   n   n   n   n   n   n   n   n   n   n
release_download    own           Y   Y   n   n   n   n   n   n   Y   n   n   n
release_download    other         Y   Y   n   n   n   n   n   n   n   n   n   n
release_download    missing       4   4   n   n   n   n   n   n   n   n   n   n
cohort_count        own           Y   Y   Y   Y   n   n   Y   Y   n   n   Y   n
cohort_count        other         Y   Y   n   n   n   n   n   n   n   n   n   n
cohort_count        missing       Y   Y   Y   Y   Y   Y   Y   Y   Y   Y   Y   Y
ingest              own           Y   Y   n   n   n   n   n   n   n   n   n   n
ingest              other         Y   Y   n   n   n   n   n   n   n   n   n   n
ingest              missing       Y   Y   n   n   n   n   n   n   n   n   n   n
jobs                own           Y   Y   Y   Y   Y   Y   Y   Y   Y   Y   Y   Y
jobs                other         Y   Y   n   n   n   n   n   n   n   n   n   n
jobs                missing       4   4   n   n   n   n   n   n   n   n   n   n
"""


def _table() -> dict[tuple[str, str, str], str]:
    out = {}
    for line in EXPECTED_TABLE.strip().splitlines():
        action, resource, *cells = line.split()
        assert len(cells) == len(COLS), line
        out.update({(role, action, resource): c for role, c in zip(COLS, cells, strict=True)})
    return out


EXPECTED = _table()
assert set(COLS) == set(ROLES)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    mp = pytest.MonkeyPatch()
    mp.setattr("mida.api.jobs.spawn_job", lambda *a, **k: None)  # queue the job, run nothing
    try:
        w = build_world(tmp_path_factory.mktemp("matrix"))
        with w.node.catalog().session() as s:
            w.release_ids["admin-job"] = queue_job(s, "ingest", {}, owner="user:admin").id
        yield w
    finally:
        mp.undo()


def _col(resource: str) -> str:
    return {"own": "A", "other": "B", "missing": "Z"}[resource]


def _rel(resource: str) -> str:
    return {"own": "ra", "other": "rb", "missing": "nope"}[resource]


# action -> (request, kind): kind "status" (2xx / 403 / 404), "rows" (a listing holds the
# resource or not), "count" (exact or suppressed)
Request = Callable[[TestClient, World, str], Any]
ACTIONS: dict[str, tuple[Request, str]] = {
    "qido_series": (lambda c, w, r: c.get(f"/dicomweb/studies/{study_uid(w, _col(r))}/series"),
                    "rows"),
    "wado_metadata": (lambda c, w, r: c.get(f"/dicomweb/studies/{study_uid(w, _col(r))}"
                                            "/metadata"), "status"),
    "wado_retrieve": (lambda c, w, r: c.get(wado(w, _col(r))), "status"),
    "wado_frames": (lambda c, w, r: c.get(wado(w, _col(r), "/frames/1")), "status"),
    "rendered": (lambda c, w, r: c.get(wado(w, _col(r), "/rendered")), "status"),
    "thumbnail": (lambda c, w, r: c.get(wado(w, _col(r), "/thumbnail")), "status"),
    "api_studies": (lambda c, w, r: c.get("/api/studies", params={"collection": _col(r)}),
                    "rows"),
    "api_uid": (lambda c, w, r: c.get(f"/api/uids/{study_uid(w, _col(r))}"), "status"),
    "annotations_list": (lambda c, w, r: c.get("/api/annotations",
                                               params={"study": study_uid(w, _col(r))}), "rows"),
    "release_list": (lambda c, w, r: c.get("/api/releases"), "rows"),
    "release_summary": (lambda c, w, r: c.get(f"/api/releases/{_rel(r)}/1.0.0"), "status"),
    "release_manifest": (lambda c, w, r: c.get(f"/api/releases/{_rel(r)}/1.0.0/manifest"),
                         "status"),
    "release_download": (lambda c, w, r: c.get(f"/api/releases/{_rel(r)}/1.0.0/download",
                                               params={"format": "dicom"}), "status"),
    "cohort_count": (lambda c, w, r: c.get("/api/cohorts/count",
                                           params={"where": f"collection = '{_col(r)}'"}),
                     "count"),
    "ingest": (lambda c, w, r: c.post("/api/ingest", json={"paths": ["/nonexistent"],
                                                          "collection": _col(r)}), "status"),
    "jobs": (lambda c, w, r: c.get({"own": "/jobs", "other": f"/jobs/{w.release_ids['admin-job']}",
                                    "missing": "/jobs/999999"}[r]), "status"),
}


def _outcome(kind: str, r: Any, action: str, resource: str) -> str:
    if kind == "status":
        return "Y" if r.status_code < 300 else "4" if r.status_code == 404 else "n"
    assert r.status_code == 200, (r.status_code, r.text)
    data = r.json()
    if kind == "count":
        return "Y" if data["exact"] else "n"
    if action == "release_list":
        return "Y" if any(x["name"] == _rel(resource) for x in data["data"]) else "n"
    rows = data if isinstance(data, list) else data["data"]
    return "Y" if rows else "n"


CELLS = sorted(EXPECTED)


@pytest.mark.parametrize("role, action, resource", CELLS,
                         ids=[f"{a}-{r}-{role}" for role, a, r in CELLS])
def test_cell(world: World, role: str, action: str, resource: str) -> None:
    request, kind = ACTIONS[action]
    client = TestClient(world.app, headers={"Authorization": f"Bearer {world.tokens[role]}"})
    r = request(client, world, resource)
    got = _outcome(kind, r, action, resource)
    assert got == EXPECTED[(role, action, resource)], (r.status_code, r.text[:300])
    if kind == "status" and got == "n":
        assert r.status_code == 403 and r.json() == {"detail": DENIED}
        if (role, action, "missing") in EXPECTED:  # the same answer as for nothing at all
            assert body(request(client, world, "missing")) == body(r)
    if kind == "count":
        patients = r.json()["patients"]
        want = {"Y": 0 if resource == "missing" else 1, "n": "<3"}[got]
        assert patients == want  # one patient per collection: exact 1, or hidden


def _client(world: World, token: str) -> TestClient:
    return TestClient(world.app, headers={"Authorization": f"Bearer {token}"})


def test_expiry_stops_access_at_the_next_request_and_is_audited(world: World) -> None:
    token = world.token("exp-user", "researcher", [("A", True), ("ra", True)])
    c = _client(world, token)
    manifest = "/api/releases/ra/1.0.0/manifest"
    assert c.get(wado(world, "A")).status_code == 200
    assert c.get(manifest).status_code == 200
    with world.node.catalog().session() as s:
        for g in s.scalars(select(Grant).where(Grant.id.in_(world.grants["exp-user"]))):
            g.expires = utcnow() - dt.timedelta(seconds=1)
    assert c.get(wado(world, "A")).json() == {"detail": DENIED}
    assert c.get(f"/dicomweb/studies/{study_uid(world, 'A')}/series").json() == []
    r = c.get(manifest)
    assert r.status_code == 403 and r.json() == {"detail": DENIED}
    denied = [e for e in AuditLog(world.node.settings.audit_file).entries()
              if e["action"] == "release.denied" and e["actor"] == "user:exp-user"]
    assert denied[-1]["detail"]["reason"] == "grant expired"
    assert denied[-1]["detail"]["grant"] == world.grants["exp-user"][1]


def test_revocation_stops_access_at_the_next_request(world: World) -> None:
    token = world.token("rev-user", "researcher", [("A", True), ("ra", True)])
    c = _client(world, token)
    assert c.get(wado(world, "A")).status_code == 200
    assert c.get("/api/releases/ra/1.0.0/download").status_code == 200
    with world.node.catalog().session() as s:
        for g in s.scalars(select(Grant).where(Grant.id.in_(world.grants["rev-user"]))):
            g.revoked = utcnow()
    assert c.get(wado(world, "A")).status_code == 403
    assert c.get("/api/releases/ra/1.0.0/download").status_code == 403
    assert c.get("/api/releases").json()["count"] == 0
    assert c.get("/api/cohorts/count", params={"where": "collection = 'A'"}).json()[
        "patients"] == "<3"
