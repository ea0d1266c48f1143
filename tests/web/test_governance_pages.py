"""The governance pages: collections, the request form, requests, the DAC queue, grants.

Most tests drive the pages with a TestClient over the governance world of
:mod:`tests.sharing.governance_world` (two providers, DAC members of each),
signed in with the ``mida_token`` cookie as ``/login`` sets it. The last one
walks the whole path in headless Chromium (Debian's) over loopback, on a node
with real DICOM files so that the granted release downloads as a zip.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from mida.api import create_app
from mida.api.pages import PAGE_CSP, csrf_token
from mida.catalog.models import AccessRequest, RequestDecision, Series
from mida.datasets import cohort
from mida.ingest import ingest_paths
from mida.node import Node
from mida.sharing import AuditLog, dua, governance, identity, restrictions
from mida.sharing.identity import DENIED
from tests.conftest import REQUIRE_SERVICES
from tests.dicomweb.conftest import free_port, serve
from tests.factories import make_token, write
from tests.sharing import governance_world as gw

SCRIPT = "<script>alert('x')</script>"
ESCAPED = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
FORM = {"title": "Liver CT segmentation", "purpose": "Train a liver model " + SCRIPT,
        "target": "cohort", "cohort": "liver-ct", "release": "", "handlers": "hank, hana",
        "irb_number": "IRB-2026-001", "irb_body": "TEST Hospital IRB",
        "irb_expiry": "2099-12-31", "download": "on", "dua": "hwdc-standard@1.0"}


class Pages:
    """A browser-like client per user of the governance world (cookie sign-in)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.app = create_app(node)
        self.tokens = {name: make_token(node, name, role, "admin" if role == "admin" else "read")
                       for name, role, _ in gw.USERS}
        self._clients: dict[str, TestClient] = {}

    def client(self, who: str) -> TestClient:
        if who not in self._clients:
            c = TestClient(self.app, follow_redirects=False)
            c.cookies.set("mida_token", self.tokens[who])
            self._clients[who] = c
        return self._clients[who]

    def get(self, who: str, path: str) -> Any:
        return self.client(who).get(path)

    def post(self, who: str, path: str, data: dict[str, str], *, csrf: str | None = None,
             files: dict[str, Any] | None = None) -> Any:
        token = csrf if csrf is not None else csrf_token(self.tokens[who])
        return self.client(who).post(path, data={**data, "csrf": token}, files=files)

    def submit(self, who: str = "rita", doc: bytes | None = gw.IRB_PDF, **over: str) -> Any:
        files = None if doc is None else {"irb_document": ("approval.pdf", doc,
                                                           "application/pdf")}
        return self.post(who, "/requests/new", {**FORM, **over}, files=files)


@pytest.fixture
def pages(node: Node) -> Pages:
    gw.build(node)
    return Pages(node)


def _nav(html: str) -> set[str]:
    return set(re.findall(r'id="nav-([a-z-]+)"', html))


def _rid(r: Any) -> int:
    assert r.status_code == 303, r.text
    m = re.search(r"submitted=(\d+)", r.headers["location"])
    assert m
    return int(m.group(1))


def _request(node: Node, rid: int) -> AccessRequest:
    with node.catalog().session() as s:
        row = s.get(AccessRequest, rid)
        assert row is not None
        s.expunge(row)
        return row


# ----------------------------------------------------------------- navigation, sign-in


def test_navigation_shows_only_what_the_role_allows(pages: Pages) -> None:
    expected = {
        "rita": {"home", "collections", "request-new", "requests", "grants"},
        "dana": {"home", "collections", "requests", "dac", "grants"},
        "ada": {"home", "collections", "requests", "grants", "annotate"},
        "anne": {"home", "collections", "grants", "annotate"},
    }
    for who, links in expected.items():
        r = pages.get(who, "/grants")
        assert r.status_code == 200 and _nav(r.text) == links, who
    # the home page links the same pages (its own annotate link only where it is allowed)
    assert _nav(pages.get("rita", "/").text) == {"collections", "request-new", "requests",
                                                "grants"}
    assert _nav(pages.get("dana", "/").text) == {"collections", "requests", "dac", "grants"}
    assert "annotate" in _nav(pages.get("anne", "/").text)


def test_pages_send_a_visitor_without_a_token_to_sign_in(pages: Pages) -> None:
    anonymous = TestClient(pages.app, follow_redirects=False)
    for path in ("/collections", "/requests/new", "/dac", "/grants"):
        r = anonymous.get(path)
        assert (r.status_code, r.headers["location"]) == (303, f"/login?next={path}")
    r = pages.get("rita", "/collections")
    assert r.headers["content-security-policy"] == PAGE_CSP
    assert r.headers["cache-control"] == "no-store"


# ----------------------------------------------------------------- collections


def _restrict(node: Node) -> None:
    """Planted text in liver-b's terms; a consent withdrawal and a trade secret in it."""
    with node.catalog().session() as s:
        governance.set_terms(s, "liver-b", license="CC-BY-NC-4.0", terms_of_use=SCRIPT,
                             citation="CGMH liver CT " + SCRIPT,
                             contributors=["Dr. Lin", SCRIPT], handler_cap=4)
        restrictions.add(s, "patient", "PB0", "consent_withdrawn", note="letter " + SCRIPT)
        mr = s.scalars(select(Series.SeriesInstanceUID).where(Series.Modality == "MR")).first()
        assert mr is not None
        restrictions.add(s, "series", mr, "trade_secret")


def test_collection_pages_show_terms_counts_and_restrictions(pages: Pages) -> None:
    _restrict(pages.node)
    listed = pages.get("ross", "/collections").text
    row = re.search(r'data-testid="collection-liver-b">(.*?)</tr>', listed, re.S)
    assert row is not None
    cells = re.findall(r"<td>(.*?)</td>", row.group(1), re.S)
    assert cells[1:4] == ["Chang Gung Memorial Hospital (CGMH)", "CC-BY-NC-4.0", "3"]
    assert cells[-2:] == ["none", "consent withdrawn, trade secret"]

    page = pages.get("ross", "/collections/liver-b")
    assert page.status_code == 200
    html = page.text
    assert SCRIPT not in html and html.count(ESCAPED) == 3  # terms, citation, contributor
    assert "at most 4<" in html and "Dr. Lin" in html
    rules = re.findall(r"<tr><td>(consent withdrawn|trade secret)</td><td>(\w+)</td>"
                       r"<td>(.*?)</td><td>(.*?)</td><td>(.*?)</td>", html)
    # one patient, one series: small cells, hidden from a researcher without a grant
    assert rules == [("trade secret", "series", "&lt;3", "&lt;3", "&lt;3"),
                     ("consent withdrawn", "patient", "&lt;3", "&lt;3", "&lt;3")]
    assert "PB0" not in html and "letter" not in html  # no pseudonym, no note
    assert "restriction-targets" not in html

    with pages.node.catalog().session() as s:  # a grant on liver-b: exact counts
        identity.add_grant(s, "hank", "read", "liver-b")
    exact = pages.get("hank", "/collections/liver-b").text
    assert ("consent withdrawn", "patient", "1", "1", "2") in re.findall(
        r"<tr><td>(consent withdrawn)</td><td>(\w+)</td><td>(.*?)</td><td>(.*?)</td>"
        r"<td>(.*?)</td>", exact)
    assert "Exact counts." in exact and "PB0" not in exact

    staff = pages.get("ada", "/collections/liver-b").text
    assert "<code>PB0</code>" in staff and "letter " + ESCAPED in staff


def test_what_a_user_may_not_see_answers_like_what_is_missing(pages: Pages) -> None:
    rid = _rid(pages.submit())
    denied = pages.get("ross", "/collections/nope")
    assert denied.status_code == 403 and DENIED in denied.text
    for path in ("/dac", f"/requests/{rid}/resubmit",
                 "/requests/9999/resubmit", "/releases/liver/1.0.0", "/releases/nope/1.0.0",
                 "/releases/liver/x"):
        r = pages.get("ross", path)
        assert (r.status_code, r.text) == (403, denied.text), path
    # posts alike: a decision or acceptance on a request that is not yours, or missing
    for path in (f"/dac/{rid}", "/dac/9999"):
        r = pages.post("kurt", path, {"decision": "approve"})
        assert (r.status_code, r.text) == (403, pages.get("kurt", "/collections/nope").text)
    for path in (f"/requests/{rid}/dua", "/requests/9999/dua", f"/requests/{rid}/resubmit"):
        r = pages.post("ross", path, {"agree": "on", "sha256": "0" * 64, **FORM})
        assert (r.status_code, r.text) == (403, denied.text), path
    assert pages.get("ada", "/collections/nope").status_code == 404  # staff may know
    with pages.node.catalog().session() as s:
        assert s.scalar(select(RequestDecision.id)) is None


# ----------------------------------------------------------------- the request form


def test_the_form_shows_errors_next_to_the_fields_and_keeps_the_input(pages: Pages) -> None:
    r = pages.submit(doc=None, irb_expiry="31/12/2099")
    assert r.status_code == 400
    html = r.text
    assert 'data-testid="error-irb_expiry"' in html and 'data-testid="error-irb_document"' in html
    assert 'value="Liver CT segmentation"' in html and 'value="hank, hana"' in html
    assert ">Train a liver model " + ESCAPED + "</textarea>" in html and SCRIPT not in html
    assert '<option value="liver-ct" selected>' in html

    r = pages.submit(handlers="hank, ghost")  # the service's message, by the handlers field
    assert r.status_code == 400
    assert re.search(r'data-testid="error-handlers">handler &#39;ghost&#39; is not a user',
                     r.text)
    r = pages.submit(irb_expiry="2001-01-01")
    assert 'data-testid="error-irb_expiry">the IRB approval expired on 2001-01-01' in r.text
    r = pages.submit(target="release", release="")
    assert 'data-testid="error-target">Pick the release' in r.text
    with pages.node.catalog().session() as s:
        assert s.scalar(select(AccessRequest.id)) is None
    assert pages.get("dana", "/requests/new").status_code == 403  # researchers only
    assert pages.submit("dana").status_code == 403


def test_a_request_from_the_form_to_grants_through_the_pages(pages: Pages) -> None:
    node = pages.node
    form = pages.get("rita", "/requests/new").text
    assert "liver@1.0.0 — 3 patients" in form and "hwdc-standard@1.0" in form
    rid = _rid(pages.submit())
    row = _request(node, rid)
    assert (row.status, row.handlers, row.irb_document_name) == (
        "submitted", ["rita", "hank", "hana"], "approval.pdf")
    mine = pages.get("rita", "/requests").text
    assert f'data-testid="status-{rid}">submitted<' in mine
    assert "Train a liver model " + ESCAPED in mine and SCRIPT not in mine

    # the DAC queue of each owner: the request, its IRB letter, what it spans
    queue = pages.get("dave", "/dac").text
    assert f'data-testid="queue-{rid}"' in queue and "IRB-2026-001, TEST Hospital IRB" in queue
    assert f'href="/api/requests/{rid}/irb"' in queue and SCRIPT not in queue
    counts = re.search(rf'data-testid="counts-{rid}">(.*?)</table>', queue, re.S)
    assert counts and "<td>6</td>" in counts.group(1) and "liver-b" in counts.group(1)
    assert pages.client("dave").get(f"/api/requests/{rid}/irb").content == gw.IRB_PDF
    r = pages.post("dave", f"/dac/{rid}", {"decision": "changes", "reason": ""})
    assert r.status_code == 400 and f'data-testid="error-{rid}">a decision to ask for changes' \
        in r.text
    r = pages.post("dave", f"/dac/{rid}", {"decision": "changes",
                                           "reason": "Name fewer handlers " + SCRIPT})
    assert (r.status_code, r.headers["location"]) == (303, f"/dac?decided={rid}")
    assert f'data-testid="queue-{rid}"' not in pages.get("dave", "/dac").text
    r = pages.post("dana", f"/dac/{rid}", {"decision": "approve", "reason": ""})
    assert r.status_code == 409 and "decisions are taken on submitted requests" in r.text

    # the researcher reads each owner's decision and reason, and resubmits
    mine = pages.get("rita", "/requests").text
    cgmh = re.search(rf'data-testid="decision-{rid}-CGMH">(.*?)</tr>', mine, re.S)
    assert cgmh and "changes asked" in cgmh.group(1)
    assert "Name fewer handlers " + ESCAPED in cgmh.group(1)
    assert f'href="/requests/{rid}/resubmit"' in mine
    again = pages.get("rita", f"/requests/{rid}/resubmit").text
    assert 'value="hank, hana"' in again and 'value="2099-12-31"' in again
    r = pages.post("rita", f"/requests/{rid}/resubmit", {**FORM, "handlers": "hank"})
    assert r.status_code == 303, r.text
    row = _request(node, rid)
    assert (row.revision, row.status, row.handlers) == (2, "submitted", ["rita", "hank"])
    assert pages.get("rita", f"/requests/{rid}/resubmit").status_code == 409
    for who in ("dana", "dave"):
        assert pages.post(who, f"/dac/{rid}", {"decision": "approve"}).status_code == 303

    # each named handler reads the DUA (full text, version) and accepts it
    mine = pages.get("rita", "/requests").text
    assert f'data-testid="dua-version-{rid}">1.0<' in mine
    assert "I will not attempt to re-identify anyone." in mine
    with node.catalog().session() as s:
        sha = dua.get_template(s, "hwdc-standard@1.0").sha256
    assert f'name="sha256" value="{sha}"' in mine
    r = pages.post("rita", f"/requests/{rid}/dua", {"sha256": sha})
    assert r.status_code == 400 and "Tick the box" in r.text
    r = pages.post("rita", f"/requests/{rid}/dua", {"sha256": "0" * 64, "agree": "on"})
    assert r.status_code == 409 and "is not hwdc-standard@1.0" in r.text
    for who in ("rita", "hank"):
        r = pages.post(who, f"/requests/{rid}/dua", {"sha256": sha, "agree": "on"})
        assert r.status_code == 303, r.text
    assert _request(node, rid).status == "granted"
    assert f'data-testid="granted-{rid}"' in pages.get("rita", "/requests").text

    grants = pages.get("hank", "/grants").text
    gid = int(re.findall(r'data-testid="grant-(\d+)"', grants)[0])
    assert f'data-testid="grant-status-{gid}">active<' in grants
    assert f'href="/api/releases/request-{rid}/1.0.0/download?format=dicom"' in grants
    assert "Train a liver model " + ESCAPED in grants and "read, download" in grants
    release = pages.get("hank", f"/releases/request-{rid}/1.0.0")
    assert release.status_code == 200 and 'data-testid="download-form"' in release.text

    steps = [(e["actor"], e["action"]) for e in AuditLog(node.settings.audit_file).entries()
             if e["action"].startswith("requests.") and e["action"] != "requests.denied"]
    assert steps == [
        ("user:rita", "requests.submit"), ("user:dave", "requests.decide"),
        ("user:rita", "requests.resubmit"), ("user:dana", "requests.decide"),
        ("user:dave", "requests.decide"), ("user:rita", "requests.dua_accept"),
        ("user:hank", "requests.dua_accept"), ("user:hank", "requests.grant"),
        ("user:hank", "requests.grant")]


def test_forms_without_the_session_token_are_refused(pages: Pages) -> None:
    rid = _rid(pages.submit())
    for csrf in ("", "0" * 64, csrf_token(pages.tokens["dana"])):  # none, forged, another's
        r = pages.post("dave", f"/dac/{rid}", {"decision": "approve"}, csrf=csrf)
        assert r.status_code == 403 and 'data-testid="csrf-refused"' in r.text
        r = pages.post("rita", "/requests/new", FORM, csrf=csrf,
                       files={"irb_document": ("a.pdf", gw.IRB_PDF, "application/pdf")})
        assert r.status_code == 403 and 'data-testid="csrf-refused"' in r.text
        for path in (f"/requests/{rid}/resubmit", f"/requests/{rid}/dua"):
            r = pages.post("rita", path, {**FORM, "agree": "on"}, csrf=csrf)
            assert r.status_code == 403 and 'data-testid="csrf-refused"' in r.text
    with pages.node.catalog().session() as s:
        assert s.scalar(select(RequestDecision.id)) is None
        titles = sorted(s.scalars(select(AccessRequest.title)))
    assert titles == ["Liver CT segmentation"]


def test_my_grants_show_what_each_opens_and_whether_it_is_in_force(pages: Pages) -> None:
    with pages.node.catalog().session() as s:
        past = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
        view = identity.add_grant(s, "ross", "read", release="liver@1.0.0", download=False,
                                  purpose="Look " + SCRIPT)
        old = identity.add_grant(s, "ross", "read", "liver-a", expires=past)
        gone = identity.add_grant(s, "ross", "read", "liver-b")
        identity.revoke_grant(s, gone.id)
        ids = view.id, old.id, gone.id
    html = pages.get("ross", "/grants").text
    status = dict(re.findall(r'data-testid="grant-status-(\d+)">(\w+)<', html))
    assert status == {str(ids[0]): "active", str(ids[1]): "expired", str(ids[2]): "revoked"}
    assert "read, view and compute only" in html and "2001-01-01 00:00 UTC" in html
    assert "/download" not in html  # a view-only grant has no download link
    assert 'href="/releases/liver/1.0.0"' in html and 'href="/collections/liver-a"' in html
    assert "Look " + ESCAPED in html and SCRIPT not in html
    page = pages.get("ross", "/releases/liver/1.0.0")
    assert page.status_code == 200 and 'data-testid="view-only"' in page.text
    assert 'data-testid="no-grants"' in pages.get("hank", "/grants").text


# ----------------------------------------------------------------- the browser walk

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 20_000


def _browser_world(node: Node, root: Path) -> dict[str, str]:
    """Two providers with one real CT file each, a cohort over both, a DUA; tokens."""
    with node.catalog().session() as s:
        governance.add_institution(s, "CGMH", "Chang Gung Memorial Hospital")
        governance.create_collection(s, "ct-cgmh", "CGMH", "default")
    for name, pid in (("ct-test", "PAT-A"), ("ct-cgmh", "PAT-B")):
        write(root / name / "0.dcm", PatientID=pid)
        ingest_paths(node, [root / name], name, workers=1)
    with node.catalog().session() as s:
        cohort.save(s, "ct-all", "modality = 'CT'")
        dua.add_template(s, "hwdc-standard", "1.0", "HWDC standard DUA", gw.DUA_BODY)
    users = (("rita", "researcher", "TEST"), ("dana", "dac-member", "TEST"),
             ("dave", "dac-member", "CGMH"))
    tokens = {}
    for name, role, inst in users:
        tokens[name] = make_token(node, name, role, "read")
        with node.catalog().session() as s:
            governance.set_institution(s, name, inst)
    return tokens


def test_a_request_walked_through_in_a_browser(node: Node, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    if not CHROMIUM.exists():
        if REQUIRE_SERVICES:
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium to run the browser test")
    tokens = _browser_world(node, tmp_path / "in")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    problems: list[str] = []
    shots = Path(os.environ.get("MIDA_TEST_ARTIFACTS_DIR") or tmp_path)  # .ci/run sets it
    shots.mkdir(parents=True, exist_ok=True)

    with serve(node, port), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            def sign_in(who: str, page_path: str) -> Any:
                ctx = browser.new_context(viewport={"width": 1100, "height": 900})
                page = ctx.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                page.on("console", lambda m: problems.append(f"{who}: {m.text}")
                        if m.type == "error" and not m.text.startswith("Failed to load")
                        else None)  # the favicon is missing by design
                page.on("pageerror", lambda e: problems.append(f"{who}: {e}"))
                page.goto(f"{base}/login?token={tokens[who]}&next={page_path}")
                expect(page.get_by_test_id("me")).to_have_text(who)
                return page

            # the researcher fills in the form and uploads the IRB letter
            rita = sign_in("rita", "/requests/new")
            rita.fill("#title", "CT denoising")
            rita.fill("#purpose", "Train a CT denoiser")
            rita.check("#target-cohort")
            rita.select_option("#cohort", "ct-all")
            rita.fill("#irb_number", "202601001RINA")
            rita.fill("#irb_body", "NTUH REC")
            rita.fill("#irb_expiry", "2099-12-31")
            rita.set_input_files("#irb_document", files=[{
                "name": "irb-approval.pdf", "mimeType": "application/pdf",
                "buffer": gw.IRB_PDF}])
            rita.check("#download")
            rita.get_by_test_id("submit-request").click()
            rita.wait_for_url(re.compile(r"/requests\?submitted=\d+"))
            rid = int(re.findall(r"submitted=(\d+)", rita.url)[0])
            expect(rita.get_by_test_id(f"status-{rid}")).to_have_text("submitted")

            # a DAC member of each institution decides: TEST approves, CGMH asks for changes
            dana = sign_in("dana", "/dac")
            expect(dana.get_by_test_id(f"queue-{rid}")).to_contain_text("202601001RINA")
            irb = dana.request.get(
                base + (dana.get_by_test_id("irb-document").get_attribute("href") or ""))
            assert irb.ok and irb.body() == gw.IRB_PDF
            dana.get_by_test_id(f"approve-{rid}").click()
            expect(dana.get_by_test_id("notice")).to_contain_text(f"request {rid}")
            dave = sign_in("dave", "/dac")
            dave.fill(f"#reason-{rid}", "State where the model will run")
            dave.get_by_test_id(f"changes-{rid}").click()
            expect(dave.get_by_test_id("queue-empty")).to_be_visible()

            # the researcher reads why and resubmits
            rita.goto(f"{base}/requests")
            expect(rita.get_by_test_id(f"decision-{rid}-CGMH")).to_contain_text(
                "State where the model will run")
            rita.get_by_test_id(f"resubmit-{rid}").click()
            expect(rita.locator("#title")).to_have_value("CT denoising")
            rita.fill("#purpose", "Train a CT denoiser on the NTUH GPU cluster")
            rita.get_by_test_id("submit-request").click()
            rita.wait_for_url(re.compile(r"/requests\?resubmitted="))

            # both approve revision 2
            for page in (dana, dave):
                page.goto(f"{base}/dac")
                page.get_by_test_id(f"approve-{rid}").click()
                expect(page.get_by_test_id("notice")).to_be_visible()

            # the researcher, the only handler, reads and accepts the DUA: grants are made
            rita.goto(f"{base}/requests")
            expect(rita.get_by_test_id(f"dua-version-{rid}")).to_have_text("1.0")
            expect(rita.get_by_test_id(f"dua-text-{rid}")).to_contain_text("re-identify")
            rita.check(f"#agree-{rid}")
            rita.get_by_test_id(f"accept-dua-{rid}").click()
            expect(rita.get_by_test_id(f"status-{rid}")).to_have_text("granted")

            # my grants: the frozen release, with a working download link
            rita.get_by_role("navigation").get_by_role("link", name="My grants").click()
            link = rita.locator("[data-testid^=download-]")
            expect(link).to_have_count(1)
            rita.screenshot(path=str(shots / "governance-grants.png"), full_page=True)
            href = link.get_attribute("href") or ""
            assert href == f"/api/releases/request-{rid}/1.0.0/download?format=dicom"
            got = rita.request.get(base + href)
            assert got.ok and got.headers["content-type"] == "application/zip"
            with zipfile.ZipFile(io.BytesIO(got.body())) as zf:
                assert zf.testzip() is None
                dicom = [n for n in zf.namelist() if n.endswith(".dcm")]
            assert len(dicom) == 2  # one file of each institution
        finally:
            browser.close()
    assert problems == []
    with node.catalog().session() as s:
        row = s.get(AccessRequest, rid)
        assert row is not None and (row.status, row.revision) == ("granted", 2)
