"""Access requests: routing to each owner's DAC, revisions, the DUA, and the grants it makes."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mida.catalog.models import DatasetRelease, DuaAcceptance, Grant, ReleaseSeries, Series, Study
from mida.catalog.service import get_or_create_collection
from mida.datasets import access
from mida.errors import AccessDeniedError, ConflictError, MidaError, NotFoundError
from mida.node import Node
from mida.sharing import governance
from mida.sharing import requests as rq
from tests.sharing import governance_world as gw

TPE = dt.timezone(dt.timedelta(hours=8))


class Trail:
    """The audit callable the faces pass, kept in memory."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, action: str, detail: dict[str, Any]) -> None:
        self.entries.append((action, detail))

    def actions(self) -> list[str]:
        return [a for a, _ in self.entries]


@pytest.fixture
def world(node: Node) -> gw.World:
    return gw.build(node)


@pytest.fixture
def s(world: gw.World) -> Iterator[Any]:
    with world.node.catalog().session() as session:
        yield session


def _submit(s: Any, node: Node, **over: Any) -> Any:
    return access.submit(s, node.store(), over.pop("researcher", "rita"),
                         **gw.request_kwargs(**over))


def _approve_all(s: Any, rid: int) -> None:
    rq.review(s, rid, "dana", "approve")
    if "CGMH" in [i.code for i in rq.route(s, rq.get_request(s, rid))]:
        rq.review(s, rid, "dave", "approve")


# ----------------------------------------------------------------- the whole flow

def test_a_cohort_request_across_two_institutions_ends_in_release_grants(any_node: Node) -> None:
    gw.build(any_node)
    trail = Trail()
    store = any_node.store()
    with any_node.catalog().session() as s:
        req = access.submit(s, store, "rita", audit=trail, **gw.request_kwargs())
        rid = req.id
        assert (req.status, req.revision, req.target) == ("submitted", 1, "cohort")
        assert req.handlers == ["rita", "hank", "hana"]  # the applicant is a handler
        assert req.irb_document_sha256 == hashlib.sha256(gw.IRB_PDF).hexdigest()
        assert store.get(req.irb_document_sha256) == gw.IRB_PDF
        assert [i.code for i in rq.route(s, req)] == ["CGMH", "TEST"]
        assert [r.id for r in rq.pending_for(s, "dana")] == [rid]
        assert [r.id for r in rq.pending_for(s, "dave")] == [rid]
        assert rq.pending_for(s, "kurt") == [] and rq.pending_for(s, "rita") == []

        rq.review(s, rid, "dana", "approve", audit=trail)
        assert req.status == "submitted"  # CGMH has not decided yet
        assert rq.pending_for(s, "dina") == []  # TEST decided, whichever member did
        rq.review(s, rid, "dave", "changes", "Leave out the MR series; name the model",
                  audit=trail)
        assert req.status == "changes_requested"
        assert rq.pending_for(s, "dave") == []

        rq.resubmit(s, store, rid, "rita", audit=trail,
                    purpose="Train a liver segmentation model (nnU-Net); CT only")
        assert (req.status, req.revision) == ("submitted", 2)
        # TEST's approval was on revision 1: it no longer counts
        assert [r.id for r in rq.pending_for(s, "dana")] == [rid]
        rq.review(s, rid, "dave", "approve", audit=trail)
        assert req.status == "submitted"
        rq.review(s, rid, "dina", "approve", audit=trail)
        assert req.status == "approved"

        for h in ("rita", "hank"):
            access.accept_dua(s, store, rid, h, audit=trail, today=gw.TODAY, tz=TPE)
        assert req.status == "approved"
        assert s.scalars(select(Grant).where(Grant.request_id == rid)).all() == []
        access.accept_dua(s, store, rid, "hana", audit=trail, today=gw.TODAY, tz=TPE)
        assert req.status == "granted"
        s.commit()

    with any_node.catalog().session() as s:
        rel = s.scalar(select(DatasetRelease).where(DatasetRelease.name == f"request-{rid}"))
        assert rel is not None and rel.version == "1.0.0"
        grants = s.scalars(select(Grant).where(Grant.request_id == rid)).all()
        assert len(grants) == 3
        expiry = dt.datetime(2027, 3, 31, 16, 0, tzinfo=dt.UTC)  # end of the day in Taipei
        for g in grants:
            assert (g.release_id, g.collection_id, g.scope, g.download) == (rel.id, None,
                                                                           "read", True)
            assert g.purpose == "Train a liver segmentation model (nnU-Net); CT only"
            exp = g.expires if g.expires.tzinfo else g.expires.replace(tzinfo=dt.UTC)
            assert exp == expiry
        # the release froze the CT series of both collections (3 + 3), not the MR ones
        mods = s.execute(select(Series.Modality, Study.collection_id)
                         .join(ReleaseSeries, ReleaseSeries.series_id == Series.id)
                         .join(Study, Study.id == Series.study_id)
                         .where(ReleaseSeries.release_id == rel.id)).all()
        assert len(mods) == 6 and {m for m, _ in mods} == {"CT"}
        accepted = s.scalars(select(DuaAcceptance).where(DuaAcceptance.request_id == rid)).all()
        assert len(accepted) == 3
        assert {a.template_sha256 for a in accepted} == {
            rq.duas.template_sha256("HWDC standard DUA", gw.DUA_BODY)}

        # who sees what: the researcher sees each institution's decision, not who took it
        mine = rq.show(s, rid, "rita")
        assert mine["decisions"] == {"CGMH": "approve", "TEST": "approve"}
        assert [(h["revision"], h["institution"], h["decision"]) for h in mine["history"]] == [
            (1, "TEST", "approve"), (1, "CGMH", "changes"), (2, "CGMH", "approve"),
            (2, "TEST", "approve")]
        assert "decided_by" not in mine["history"][0]
        assert rq.show(s, rid, "dave")["history"][1]["decided_by"] == "dave"
        assert mine["granted_release"] == f"request-{rid}@1.0.0"
        assert all(h["dua_accepted"] for h in mine["handlers"])

    assert trail.actions() == (
        ["requests.submit", "requests.decide", "requests.decide", "requests.resubmit",
         "requests.decide", "requests.decide"] + ["requests.dua_accept"] * 3
        + ["requests.grant"] * 3)
    decide = [d for a, d in trail.entries if a == "requests.decide"]
    assert [(d["institution"], d["revision"], d["decision"]) for d in decide] == [
        ("TEST", 1, "approve"), ("CGMH", 1, "changes"), ("CGMH", 2, "approve"),
        ("TEST", 2, "approve")]
    grants = [d for a, d in trail.entries if a == "requests.grant"]
    assert sorted(d["user"] for d in grants) == ["hana", "hank", "rita"]
    assert {d["release"] for d in grants} == {f"request-{rid}@1.0.0"}


def test_a_release_request_grants_that_release_routed_to_its_owner_only(
        node: Node, world: gw.World, s: Any) -> None:
    req = _submit(s, node, cohort=None, release="liver@1.0.0", handlers=["hank"],
                  download=False)
    assert [i.code for i in rq.route(s, req)] == ["TEST"]
    assert rq.pending_for(s, "dave") == []
    with pytest.raises(AccessDeniedError, match="not a DAC member"):
        rq.review(s, req.id, "dave", "approve")  # CGMH owns none of it
    rq.review(s, req.id, "dana", "approve")
    assert req.status == "approved"
    access.accept_dua(s, node.store(), req.id, "rita", today=gw.TODAY)
    access.accept_dua(s, node.store(), req.id, "hank", today=gw.TODAY, within_irb=False)
    liver = s.scalar(select(DatasetRelease).where(DatasetRelease.name == "liver"))
    grants = s.scalars(select(Grant).where(Grant.request_id == req.id)).all()
    assert {(g.release_id, g.download, g.expires) for g in grants} == {(liver.id, False, None)}
    assert s.scalar(select(DatasetRelease).where(DatasetRelease.name == f"request-{req.id}")) \
        is None


def test_the_frozen_release_holds_only_the_collections_fixed_at_submission(
        node: Node, world: gw.World, s: Any) -> None:
    req = _submit(s, node)
    kmuh = governance.get_institution(s, "KMUH")
    later = get_or_create_collection(s, "liver-c", kmuh.id, "default")
    gw._patient(s, kmuh.id, later.id, "PC0", ("CT",))  # arrives after the submission
    _approve_all(s, req.id)
    for h in req.handlers:
        access.accept_dua(s, node.store(), req.id, h, today=gw.TODAY)
    rel = s.scalar(select(DatasetRelease).where(DatasetRelease.name == f"request-{req.id}"))
    cols = set(s.scalars(select(Study.collection_id).join(Series, Series.study_id == Study.id)
                         .join(ReleaseSeries, ReleaseSeries.series_id == Series.id)
                         .where(ReleaseSeries.release_id == rel.id)))
    assert cols == {world.collections["liver-a"], world.collections["liver-b"]}


# ----------------------------------------------------------------- refusals at submission

@pytest.mark.parametrize(("over", "error", "match"), [
    ({"irb_expiry": dt.date(2026, 3, 1)}, MidaError, "expired on 2026-03-01"),
    ({"irb_document": b""}, MidaError, "IRB approval document is empty"),
    ({"irb_number": " "}, MidaError, "IRB approval number"),
    ({"title": ""}, MidaError, "needs a title"),
    ({"release": "liver@1.0.0"}, MidaError, "not both"),
    ({"cohort": None}, MidaError, "not both"),
    ({"cohort": "nope"}, MidaError, "no cohort 'nope'"),
    ({"cohort": None, "release": "liver@9.9.9"}, MidaError, "no release"),
    ({"dua": "other@1.0"}, MidaError, "known: hwdc-standard@1.0"),
    ({"handlers": ["hank", "ghost"]}, MidaError, "handler 'ghost' is not a user"),
    ({"handlers": ["anne"]}, MidaError, "handler 'anne' has role 'annotator'"),
    ({"researcher": "dana"}, AccessDeniedError, "only researchers submit"),
])
def test_submission_refusals_say_what_is_wrong(node: Node, world: gw.World, s: Any,
                                               over: dict[str, Any], error: type[Exception],
                                               match: str) -> None:
    with pytest.raises(error, match=match):
        _submit(s, node, **over)


def test_the_handler_cap_names_the_collection_or_the_node_that_sets_it(
        node: Node, world: gw.World, s: Any) -> None:
    five = ["hank", "hana", "ross"]  # rita + 3 = 4 handlers
    _submit(s, node, handlers=five)  # under the node's 6
    governance.set_terms(s, "liver-b", handler_cap=3)
    with pytest.raises(MidaError, match=r"4 handlers named \(you included\) but collection "
                                        r"'liver-b' \(CGMH\) allows at most 3"):
        _submit(s, node, handlers=five)
    # liver-b's cap does not bind a request for liver-a only
    _submit(s, node, cohort=None, release="liver@1.0.0", handlers=five)
    with pytest.raises(MidaError, match=r"this node allows at most 2 \(MIDA_HANDLER_CAP\)"):
        _submit(s, node, cohort=None, release="liver@1.0.0", handlers=five, node_cap=2)
    # duplicates and the applicant named again count once
    req = _submit(s, node, handlers=["rita", "hank", "hank"])
    assert req.handlers == ["rita", "hank"]


def test_a_cohort_request_needs_the_cohort_language(node: Node, world: gw.World,
                                                    s: Any) -> None:
    kw = gw.request_kwargs()
    with pytest.raises(MidaError, match=r"mida\.datasets\.access"):
        rq.submit(s, node.store(), "rita", **kw)


# ----------------------------------------------------------------- refusals at decision

def test_only_a_dac_member_of_an_owner_decides_once_per_revision(
        node: Node, world: gw.World, s: Any) -> None:
    trail = Trail()
    req = _submit(s, node)
    for user in ("kurt", "rita", "ada", "anne"):
        with pytest.raises(AccessDeniedError):
            rq.review(s, req.id, user, "approve", audit=trail)
    assert trail.actions() == ["requests.denied"] * 4
    with pytest.raises(MidaError, match="needs a reason"):
        rq.review(s, req.id, "dana", "changes")
    with pytest.raises(MidaError, match="unknown decision 'maybe'"):
        rq.review(s, req.id, "dana", "maybe")
    rq.review(s, req.id, "dana", "approve")
    with pytest.raises(ConflictError, match="TEST already decided on revision 1"):
        rq.review(s, req.id, "dina", "approve")  # another member of the same institution
    with pytest.raises(NotFoundError, match="no access request 999"):
        rq.review(s, 999, "dana", "approve")


def test_a_rejection_is_final(node: Node, world: gw.World, s: Any) -> None:
    req = _submit(s, node)
    rq.review(s, req.id, "dave", "reject", "The purpose does not need identifiable ages")
    assert req.status == "rejected"
    with pytest.raises(ConflictError, match="is rejected"):
        rq.review(s, req.id, "dana", "approve")
    with pytest.raises(ConflictError, match="is rejected"):
        rq.resubmit(s, node.store(), req.id, "rita", purpose="x")
    with pytest.raises(ConflictError, match="cannot be withdrawn"):
        rq.withdraw(s, req.id, "rita")


def test_resubmission_rules(node: Node, world: gw.World, s: Any) -> None:
    req = _submit(s, node)
    with pytest.raises(ConflictError, match="is submitted: only a request whose DAC asked"):
        rq.resubmit(s, node.store(), req.id, "rita", purpose="x")
    rq.review(s, req.id, "dana", "changes", "Shorten the handler list")
    with pytest.raises(NotFoundError):  # another researcher: as if it did not exist
        rq.resubmit(s, node.store(), req.id, "ross", purpose="x")
    with pytest.raises(AccessDeniedError, match="only the researcher"):
        rq.resubmit(s, node.store(), req.id, "hank", purpose="x")  # a handler sees, not edits
    with pytest.raises(MidaError, match="cannot change collection_ids"):
        rq.resubmit(s, node.store(), req.id, "rita", collection_ids=[1])
    with pytest.raises(MidaError, match="expired"):
        rq.resubmit(s, node.store(), req.id, "rita", irb_expiry=dt.date(2025, 1, 1),
                    today=gw.TODAY)
    new_doc = b"%PDF-1.4 renewed approval"
    access.resubmit(s, node.store(), req.id, "rita", handlers=["hank"], irb_document=new_doc,
                    irb_document_name="renewal.pdf", today=gw.TODAY)
    assert (req.revision, req.handlers, req.irb_document_name) == (2, ["rita", "hank"],
                                                                   "renewal.pdf")
    assert req.irb_document_sha256 == hashlib.sha256(new_doc).hexdigest()
    _approve_all(s, req.id)
    with pytest.raises(ConflictError, match="is approved"):
        rq.resubmit(s, node.store(), req.id, "rita", purpose="x")


def test_a_resubmission_may_change_the_data_and_so_the_route(node: Node, world: gw.World,
                                                            s: Any) -> None:
    req = _submit(s, node)
    rq.review(s, req.id, "dave", "changes", "Ask for liver-a only")
    access.resubmit(s, node.store(), req.id, "rita", release="liver@1.0.0", today=gw.TODAY)
    assert (req.target, [i.code for i in rq.route(s, req)]) == ("release", ["TEST"])
    assert rq.pending_for(s, "dave") == []


# ----------------------------------------------------------------- refusals at the DUA

def test_only_named_handlers_accept_the_dua_of_an_approved_request(
        node: Node, world: gw.World, s: Any) -> None:
    trail = Trail()
    store = node.store()
    req = _submit(s, node, handlers=["hank"])
    with pytest.raises(ConflictError, match="is submitted"):
        access.accept_dua(s, store, req.id, "hank", today=gw.TODAY)
    _approve_all(s, req.id)
    with pytest.raises(NotFoundError):  # ross cannot see the request at all
        access.accept_dua(s, store, req.id, "ross", audit=trail)
    with pytest.raises(AccessDeniedError, match="not a named handler"):
        access.accept_dua(s, store, req.id, "dana", audit=trail)  # sees it, may not sign
    assert trail.actions() == ["requests.denied"] * 2
    access.accept_dua(s, store, req.id, "hank", today=gw.TODAY)
    with pytest.raises(ConflictError, match="already accepted"):
        access.accept_dua(s, store, req.id, "hank", today=gw.TODAY)
    with pytest.raises(ConflictError, match="rita must accept the DUA first"):
        access.make_grants(s, store, req.id, today=gw.TODAY)


def test_no_grant_once_the_irb_approval_has_expired(node: Node, world: gw.World,
                                                   s: Any) -> None:
    req = _submit(s, node, handlers=[])
    _approve_all(s, req.id)
    with pytest.raises(MidaError, match="expired on 2027-03-31: no grant is made"):
        access.accept_dua(s, node.store(), req.id, "rita", today=dt.date(2027, 4, 1))
    assert s.scalars(select(Grant)).all() == []


def test_withdrawal(node: Node, world: gw.World, s: Any) -> None:
    req = _submit(s, node, handlers=[])
    with pytest.raises(AccessDeniedError):
        rq.withdraw(s, req.id, "dana")
    rq.withdraw(s, req.id, "rita")
    assert req.status == "withdrawn"
    assert rq.pending_for(s, "dana") == []
    with pytest.raises(ConflictError):
        rq.review(s, req.id, "dana", "approve")
    granted = _submit(s, node, handlers=[])
    _approve_all(s, granted.id)
    access.accept_dua(s, node.store(), granted.id, "rita", today=gw.TODAY)
    with pytest.raises(ConflictError, match="revoke its grants instead"):
        rq.withdraw(s, granted.id, "rita")


# ----------------------------------------------------------------- who sees what

def test_a_request_is_visible_to_its_people_and_to_no_one_else(node: Node, world: gw.World,
                                                              s: Any) -> None:
    req = _submit(s, node, handlers=["hank"])
    for who in ("rita", "hank", "dana", "dave", "ada", None):
        assert rq.show(s, req.id, who)["id"] == req.id
    for who in ("ross", "kurt", "hana", "anne"):
        with pytest.raises(NotFoundError, match=f"no access request {req.id}$"):
            rq.show(s, req.id, who)
        assert rq.list_requests(s, who) == []
    assert [r.id for r in rq.list_requests(s, "dave", status="submitted")] == [req.id]
    assert rq.list_requests(s, "dave", status="granted") == []
    with pytest.raises(MidaError, match="unknown status"):
        rq.list_requests(s, None, status="done")
    name, data = rq.irb_document(s, node.store(), req.id, "dana")
    assert (name, data) == ("approval.pdf", gw.IRB_PDF)
    with pytest.raises(NotFoundError):
        rq.irb_document(s, node.store(), req.id, "kurt")


def test_grant_expiry_ends_with_the_irb_expiry_date() -> None:
    assert rq.grant_expiry(dt.date(2027, 3, 31), dt.UTC) == dt.datetime(2027, 4, 1,
                                                                        tzinfo=dt.UTC)
    assert rq.grant_expiry(dt.date(2027, 3, 31), TPE).isoformat() == "2027-03-31T16:00:00+00:00"


def test_the_nodes_time_zone_is_a_validated_setting(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from mida.config import Settings

    s = Settings(home=tmp_path)
    assert s.timezone == "Asia/Taipei"  # Taiwanese default: an IRB date ends at midnight there
    assert rq.grant_expiry(dt.date(2027, 3, 31), s.tz).isoformat() == "2027-03-31T16:00:00+00:00"
    assert str(Settings(home=tmp_path, timezone="UTC").tz) == "UTC"
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        Settings(home=tmp_path, timezone="Mars/Olympus")
