"""Users, tokens, grants and peers: who may do what, on which collection."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from mida.catalog.models import ApiToken, Collection, utcnow
from mida.catalog.service import get_or_create_collection
from mida.errors import AuthError, ConflictError, MidaError
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
