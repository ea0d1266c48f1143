"""Issue 7's whole path over HTTP, on real DICOM data held for two institutions.

Two providers on one hub (``TEST`` owns ``liver-a``, ``CGMH`` owns ``liver-b``),
a request whose cohort spans both, one DAC approving and the other asking for
changes, a resubmission, approval by both, DUA acceptance by every named
handler, the grant, a download of the granted release (checked file by file
against its manifest), denials of everything outside the grant, and access
stopping at once on expiry and on revocation. Every step is in the audit
trail, and the trail verifies.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from mida.api import create_app
from mida.catalog.models import Grant, User
from mida.datasets import cohort, release
from mida.ingest import ingest_paths
from mida.node import Node
from mida.sharing import AuditLog, dua, governance, identity
from mida.sharing.identity import DENIED
from tests.factories import bearer, make_token, write_ct_series

USERS = {"rita": ("researcher", "TEST"), "hank": ("researcher", "CGMH"),
         "ross": ("researcher", "TEST"), "dana": ("dac-member", "TEST"),
         "dave": ("dac-member", "CGMH"), "ada": ("admin", None)}


class Hub:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.client = TestClient(create_app(node))
        self.tokens: dict[str, str] = {}

    def get(self, who: str, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers=bearer(self.tokens[who]), **kw)

    def post(self, who: str, path: str, **kw: Any) -> Any:
        return self.client.post(path, headers=bearer(self.tokens[who]), **kw)


@pytest.fixture
def hub(node: Node, tmp_path: Path) -> Hub:
    with node.catalog().session() as s:
        governance.add_institution(s, "CGMH", "Chang Gung Memorial Hospital")
        governance.create_collection(s, "liver-b", "CGMH", "default")
        s.commit()
    for coll in ("liver-a", "liver-b"):
        for k in range(2):
            folder = tmp_path / coll / str(k)
            write_ct_series(folder, slices=2, size=8, PatientID=f"{coll}-{k}")
            assert ingest_paths(node, [folder], coll, workers=1).stored == 2
    h = Hub(node)
    for name, (role, inst) in USERS.items():
        h.tokens[name] = make_token(node, name, role, "admin" if role == "admin" else "read")
        with node.catalog().session() as s:
            governance.set_institution(s, name, inst)
            s.commit()
    with node.catalog().session() as s:
        cohort.save(s, "liver-ct", "modality = 'CT'", by="ada")
        dua.add_template(s, "standard", "1.0", "Standard research DUA",
                         "I will not attempt to re-identify anyone.\n")
        # a release nobody asked for: outside every grant below
        release.create(s, node.store(), "other", "1.0.0", expression="collection = 'liver-a'")
        s.commit()
    return h


def _actions(node: Node) -> list[str]:
    return [e["action"] for e in AuditLog(node.settings.audit_file).entries()]


def test_request_to_download_and_the_end_of_access(hub: Hub) -> None:
    expiry = (dt.date.today() + dt.timedelta(days=200)).isoformat()
    new = {"title": "Liver CT segmentation", "purpose": "Train a liver lesion model",
           "cohort": "liver-ct", "handlers": ["rita", "hank"], "irb_number": "IRB-2026-042",
           "irb_body": "TEST Hospital IRB", "irb_expiry": expiry, "download": True,
           "dua": "standard@1.0"}
    r = hub.post("rita", "/api/requests", data={"request": json.dumps(new)},
                 files={"irb_document": ("irb.pdf", b"%PDF-1.4 approval", "application/pdf")})
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert r.json()["institutions"] == ["CGMH", "TEST"]  # routed to both owners' DACs

    # one DAC approves, the other asks for changes; the researcher resubmits
    ok = hub.post("dana", f"/api/requests/{rid}/decisions", json={"decision": "approve"})
    assert ok.status_code in (200, 201), ok.text
    ch = hub.post("dave", f"/api/requests/{rid}/decisions",
                  json={"decision": "changes", "reason": "name the lesion types in the purpose"})
    assert ch.json()["status"] == "changes_requested"
    assert hub.post("ross", f"/api/requests/{rid}/decisions",  # not a DAC member
                    json={"decision": "approve"}).json() == {"detail": DENIED}
    rs = hub.post("rita", f"/api/requests/{rid}/resubmit",
                  json={"purpose": "Train a liver lesion model (HCC, metastases)"})
    assert rs.json()["revision"] == 2 and rs.json()["status"] == "submitted"
    for who in ("dana", "dave"):  # the earlier approval no longer counts: both decide again
        st = hub.post(who, f"/api/requests/{rid}/decisions", json={"decision": "approve"})
    assert st.json()["status"] == "approved"

    # every named handler accepts the DUA; the last acceptance makes the grants
    sha = hub.get("rita", "/api/dua/standard/1.0").json()["sha256"]
    assert hub.post("rita", f"/api/requests/{rid}/dua", json={"sha256": sha}).json()[
        "status"] == "approved"
    done = hub.post("hank", f"/api/requests/{rid}/dua", json={"sha256": sha}).json()
    assert done["status"] == "granted"
    name, version = done["granted_release"].split("@")

    # the grant: download of the frozen release, and nothing else
    r = hub.get("hank", f"/api/releases/{name}/{version}/download", params={"format": "dicom"})
    assert r.status_code == 200, r.text
    with hub.node.catalog().session() as s:
        manifest = release.load_manifest(hub.node.store(), release.get(s, f"{name}@{version}"))
    files = {i["sha256"] for x in manifest["series"] for i in x["instances"]}
    assert len(files) == 8 and {x["collection"] for x in manifest["series"]} == {
        "liver-a", "liver-b"}
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        got = {hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist()
               if n.endswith(".dcm")}
    assert files <= got
    missing = hub.get("hank", "/api/releases/nope/1.0.0/download", params={"format": "dicom"})
    for path in ("/api/releases/other/1.0.0", "/api/releases/other/1.0.0/download"):
        denied = hub.get("hank", path, params={"format": "dicom"})
        assert denied.status_code == missing.status_code == 403
        assert denied.json() == missing.json() == {"detail": DENIED}
    outsider = hub.get("ross", f"/api/releases/{name}/{version}/download",
                       params={"format": "dicom"})
    assert outsider.status_code == 403
    # a release grant opens no collection: DICOMweb shows nothing of the raw archive
    series = hub.get("hank", "/dicomweb/series")
    assert series.status_code in (200, 204) and (series.status_code == 204 or series.json() == [])

    # expiry takes effect at once ...
    with hub.node.catalog().session() as s:
        hank = s.scalar(select(User.id).where(User.name == "hank"))
        g = s.scalar(select(Grant).where(Grant.user_id == hank, Grant.request_id == rid))
        assert g is not None and g.download
        g.expires = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        s.commit()
    assert hub.get("hank", f"/api/releases/{name}/{version}/download",
                   params={"format": "dicom"}).status_code == 403
    # ... and so does revocation
    assert hub.get("rita", f"/api/releases/{name}/{version}").status_code == 200
    with hub.node.catalog().session() as s:
        rita = s.scalar(select(User.id).where(User.name == "rita"))
        gid = s.scalar(select(Grant.id).where(Grant.user_id == rita, Grant.request_id == rid))
        identity.revoke_grant(s, gid)
        s.commit()
    assert hub.get("rita", f"/api/releases/{name}/{version}").status_code == 403

    # every step is in the audit trail, in order, and the trail is intact
    acts = _actions(hub.node)
    steps = ["requests.submit", "requests.decide", "requests.decide", "requests.resubmit",
             "requests.decide", "requests.decide", "requests.dua_accept", "requests.dua_accept",
             "requests.grant", "requests.grant", "release.download", "release.denied"]
    pos = 0
    for step in steps:
        hits = [i for i, a in enumerate(acts) if a.startswith(step) and i >= pos]
        assert hits, f"{step} missing after entry {pos}: {acts}"
        pos = hits[0] + 1
    assert "release.denied" in acts and "requests.denied" in acts
    text = hub.node.settings.audit_file.read_text()
    assert "liver-a-0" not in text and "PatientName" not in text
    assert not AuditLog(hub.node.settings.audit_file).verify()
