"""Users, tokens, grants and peers: who may do what, on which collection."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mida.catalog.models import ApiToken, Collection, DatasetRelease, Grant, utcnow
from mida.catalog.service import get_or_create_collection
from mida.errors import AccessDeniedError, AuthError, ConflictError, MidaError, NotFoundError
from mida.node import Node
from mida.sharing import identity as idn


@pytest.fixture
def cols(any_node: Node) -> dict[str, int]:
    with any_node.catalog().session() as s:
        for name in ("A", "B"):
            get_or_create_collection(s, name, any_node.institution_id(), "default")
        return dict(s.execute(select(Collection.name, Collection.id)).all())


def test_token_is_hashed_at_rest_shown_once_and_authenticates(any_node: Node,
                                                              cols: dict[str, int]) -> None:
    with any_node.catalog().session() as s:
        idn.add_user(s, "ana", "admin")
        secret, row = idn.create_token(s, "ana", "admin")
        assert secret.startswith("mida_") and len(secret) == 48
        stored = s.scalar(select(ApiToken.token_hash).where(ApiToken.id == row.id))
        assert stored == idn.hash_token(secret) and secret not in stored
        p = idn.authenticate(s, secret)
    assert p.name == "ana" and p.collections is None and p.allows("admin", cols["B"])


@pytest.mark.parametrize("mangle", [
    lambda t: None, lambda t: "", lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
    lambda t: t + "x", lambda t: "Bearer " + t, lambda t: t.replace("mida_", "midb_"),
])
def test_missing_or_tampered_tokens_are_refused(any_node: Node, mangle) -> None:  # type: ignore[no-untyped-def]
    with any_node.catalog().session() as s:
        idn.add_user(s, "ana", "admin")
        secret, _ = idn.create_token(s, "ana", "read")
        with pytest.raises(AuthError):
            idn.authenticate(s, mangle(secret))


def test_expired_revoked_and_disabled_stop_at_once(any_node: Node) -> None:
    with any_node.catalog().session() as s:
        idn.add_user(s, "ana", "admin")
        t1, r1 = idn.create_token(s, "ana", "read")
        t2, r2 = idn.create_token(s, "ana", "read")
        t3, _ = idn.create_token(s, "ana", "read")
        r1.expires = utcnow() - dt.timedelta(seconds=1)
        idn.revoke_token(s, r2.id)
        s.flush()
        with pytest.raises(AuthError, match="expired"):
            idn.authenticate(s, t1)
        with pytest.raises(AuthError, match="revoked"):
            idn.authenticate(s, t2)
        idn.authenticate(s, t3)
        idn.set_disabled(s, "ana", True)
        s.flush()
        with pytest.raises(AuthError):
            idn.authenticate(s, t3)


def test_grants_scope_and_collection_limits(any_node: Node, cols: dict[str, int]) -> None:
    with any_node.catalog().session() as s:
        idn.add_user(s, "rae", "researcher")
        with pytest.raises(MidaError, match="no 'read' grant"):
            idn.create_token(s, "rae", "read", collection="A")
        with pytest.raises(MidaError, match="up to scope 'read'"):
            idn.create_token(s, "rae", "write")
        g = idn.add_grant(s, "rae", "read", "A")
        t_a, _ = idn.create_token(s, "rae", "read", collection="A")
        t_any, _ = idn.create_token(s, "rae", "read")
        p = idn.authenticate(s, t_a)
        assert p.allows("read", cols["A"]) and not p.allows("read", cols["B"])
        assert not p.allows("write", cols["A"]) and not p.allows("read")
        assert p.readable() == frozenset({cols["A"]})
        assert idn.authenticate(s, t_any).readable() == frozenset({cols["A"]})
        idn.revoke_grant(s, g.id)
        s.flush()
        assert idn.authenticate(s, t_a).readable() == frozenset()


def test_a_collection_token_of_an_admin_is_limited_to_it(any_node: Node,
                                                         cols: dict[str, int]) -> None:
    with any_node.catalog().session() as s:
        idn.add_user(s, "ana", "admin")
        t, _ = idn.create_token(s, "ana", "write", collection="A")
        p = idn.authenticate(s, t)
    assert p.allows("write", cols["A"]) and not p.allows("read", cols["B"])
    assert not p.allows("admin", cols["A"])


def test_names_roles_and_duplicates_are_checked(any_node: Node) -> None:
    with any_node.catalog().session() as s:
        with pytest.raises(MidaError, match="unknown role"):
            idn.add_user(s, "x", "king")
        with pytest.raises(MidaError, match="bad user name"):
            idn.add_user(s, "../x", "admin")
        idn.add_user(s, "x", "admin")
        with pytest.raises(ConflictError):
            idn.add_user(s, "x", "admin")
    assert idn.parse_expiry("12h") == dt.timedelta(hours=12)
    with pytest.raises(MidaError):
        idn.parse_expiry("forever")


def test_peers_are_known_by_calling_ae_and_address(any_node: Node,
                                                   cols: dict[str, int]) -> None:
    with any_node.catalog().session() as s:
        idn.add_peer(s, "ct1", "CT_SCANNER", "127.0.0.1", 104, scope="write", collection="A")
        idn.add_peer(s, "pacs", "PACS", "127.0.0.1", 4242, role="pacs")
        p = idn.peer_principal(s, "CT_SCANNER", "127.0.0.1")
        assert p.allows("write", cols["A"]) and not p.allows("read", cols["B"])
        with pytest.raises(AuthError):
            idn.peer_principal(s, "CT_SCANNER", "10.1.2.3")
        with pytest.raises(AuthError):
            idn.peer_principal(s, "STRANGER", "127.0.0.1")
        with pytest.raises(AuthError):  # a PACS we pull from may not call in
            idn.peer_principal(s, "PACS", "127.0.0.1")
        with pytest.raises(MidaError, match="AE title"):
            idn.add_peer(s, "bad", "WAY\\TOO", "h", 1)
        assert [x["name"] for x in idn.list_peers(s, "peer")] == ["ct1"]


# -- issue 7: release grants, the download flag, expiry per request -------------------
def _release(s: Session, name: str = "r") -> int:
    row = DatasetRelease(name=name, version="1.0.0", expression="modality = 'CT'",
                         status="ready", code_version="0")
    s.add(row)
    s.flush()
    return row.id


def test_a_release_grant_opens_that_release_and_no_collection(any_node: Node,
                                                              cols: dict[str, int]) -> None:
    with any_node.catalog().session() as s:
        r1, r2 = _release(s, "r1"), _release(s, "r2")
        idn.add_user(s, "rae", "researcher")
        view = idn.add_grant(s, "rae", "read", release="r1@1.0.0", download=False)
        token, _ = idn.create_token(s, "rae", "read")
        p = idn.authenticate(s, token)
        # a release grant has no collection: it must not read as "every collection"
        assert p.readable() == frozenset() and not p.allows("read", cols["A"])
        assert not p.covers([cols["A"]]) and p.covers([])
        assert p.may_read_release(r1) and not p.may_download_release(r1)
        assert not p.may_read_release(r2) and p.release_grant_id(r2) is None
        dl = idn.add_grant(s, "rae", "read", release="r1@1.0.0", download=True)
        p = idn.authenticate(s, token)
        assert p.may_download_release(r1) and p.release_grant_id(r1) == dl.id
        with pytest.raises(AccessDeniedError):
            p.require_release(r2)
        idn.revoke_grant(s, dl.id)
        s.flush()
        p = idn.authenticate(s, token)  # the next request sees the revocation
        assert not p.may_download_release(r1) and p.release_grant_id(r1) == view.id
        s.get(Grant, view.id).expires = utcnow() - dt.timedelta(seconds=1)  # type: ignore[union-attr]
        s.flush()
        assert not idn.authenticate(s, token).may_read_release(r1)
        assert idn.lapsed_grant(s, p.user_id, release_id=r1).id == dl.id  # type: ignore[arg-type,union-attr]
        rows = {g["id"]: g for g in idn.list_grants(s, "rae")}
        assert rows[view.id]["release"] == "r1@1.0.0" and rows[view.id]["collection"] is None
        assert not rows[view.id]["active"] and not rows[view.id]["download"]


def test_release_grants_name_one_ready_version_with_read_scope(any_node: Node,
                                                               cols: dict[str, int]) -> None:
    with any_node.catalog().session() as s:
        _release(s, "r1")
        idn.add_user(s, "rae", "steward")
        with pytest.raises(MidaError, match="exact version"):
            idn.add_grant(s, "rae", "read", release="r1")
        with pytest.raises(NotFoundError):
            idn.add_grant(s, "rae", "read", release="r1@2.0.0")
        with pytest.raises(MidaError, match="not both"):
            idn.add_grant(s, "rae", "read", "A", release="r1@1.0.0")
        with pytest.raises(MidaError, match="scope 'read'"):
            idn.add_grant(s, "rae", "write", release="r1@1.0.0")


def test_view_only_grants_read_but_do_not_download(any_node: Node,
                                                   cols: dict[str, int]) -> None:
    a, b = cols["A"], cols["B"]
    with any_node.catalog().session() as s:
        idn.add_user(s, "vic", "researcher")
        idn.add_grant(s, "vic", "read", "A", download=False)
        token, _ = idn.create_token(s, "vic", "read")
        p = idn.authenticate(s, token)
        assert p.allows("read", a) and not p.may_download(a) and not p.may_download(b)
        assert p.covers([a]) and p.view_only == frozenset({a})
        with pytest.raises(AccessDeniedError):
            p.require_download(a)
        g = idn.add_grant(s, "vic", "read", "A")  # a second grant that allows download
        assert idn.authenticate(s, token).may_download(a)
        idn.revoke_grant(s, g.id)
        idn.add_grant(s, "vic", "read", None, download=False)  # every collection, view only
        s.flush()
        p = idn.authenticate(s, token)
        assert p.readable() == frozenset({a, b}) and not (p.may_download(a) or p.may_download(b))


def test_roles_that_reach_everything_and_tokens_bound_to_a_collection(
        any_node: Node, cols: dict[str, int]) -> None:
    with any_node.catalog().session() as s:
        r1 = _release(s, "r1")
        for name, role in (("ana", "admin"), ("ops", "operator")):
            idn.add_user(s, name, role)
            p = idn.authenticate(s, idn.create_token(s, name, "read")[0])
            assert p.everything and p.role == role and p.may_download(cols["B"])
            assert p.may_download_release(r1) and p.release_grant_id(r1) is None
        idn.add_user(s, "rae", "researcher")
        idn.add_grant(s, "rae", "read", "A")
        idn.add_grant(s, "rae", "read", release="r1@1.0.0")
        bound = idn.authenticate(s, idn.create_token(s, "rae", "read", collection="A")[0])
        assert bound.may_download(cols["A"]) and not bound.may_read_release(r1)
        ana = idn.authenticate(s, idn.create_token(s, "ana", "read", collection="A")[0])
        assert not ana.everything and not ana.may_read_release(r1)
    assert idn.LOCAL.everything and idn.LOCAL.may_download_release(r1)
