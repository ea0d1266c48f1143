"""Institutions, their collections' terms, and users' institutions."""

from __future__ import annotations

import pytest

from mida.errors import ConflictError, DeidError, MidaError, NotFoundError
from mida.node import Node
from mida.sharing import governance, identity


def test_a_hub_hosts_collections_of_several_institutions(node: Node) -> None:
    with node.catalog().session() as s:
        governance.add_institution(s, "CGMH", "Chang Gung Memorial Hospital")
        with pytest.raises(ConflictError, match="'CGMH' already exists"):
            governance.add_institution(s, "CGMH", "Again")
        col = governance.create_collection(s, "ct-b", "CGMH", "default")
        assert governance.create_collection(s, "ct-b", "CGMH", "default").id == col.id
        with pytest.raises(ConflictError, match="belongs to CGMH"):
            governance.create_collection(s, "ct-b", "TEST", "default")
        with pytest.raises(NotFoundError, match="known: CGMH, TEST"):
            governance.create_collection(s, "ct-c", "NOPE", "default")
        with pytest.raises(DeidError, match="unknown de-identification profile"):
            governance.create_collection(s, "ct-c", "CGMH", "no-such-profile")
        identity.add_user(s, "dave", "dac-member")
        assert governance.set_institution(s, "dave", "CGMH").institution_id == col.institution_id
        assert governance.set_institution(s, "dave", None).institution_id is None
        rows = {r["code"]: r for r in governance.list_institutions(s)}
        assert (rows["CGMH"]["collections"], rows["TEST"]["collections"]) == (1, 0)


def test_terms_change_field_by_field(node: Node) -> None:
    with node.catalog().session() as s:
        governance.create_collection(s, "ct-a", "TEST", "default")
        t = governance.set_terms(s, "ct-a", license="CC-BY-NC-4.0", citation="Lin et al. 2026",
                                 contributors=["Radiology, TEST", "W. Lin"], handler_cap=4)
        assert t == {"collection": "ct-a",
                     "institution": {"code": "TEST", "name": "Test Hospital"},
                     "license": "CC-BY-NC-4.0", "terms_of_use": "",
                     "citation": "Lin et al. 2026",
                     "contributors": ["Radiology, TEST", "W. Lin"], "handler_cap": 4}
        t = governance.set_terms(s, "ct-a", terms_of_use="No re-identification.", handler_cap=0)
        assert (t["license"], t["terms_of_use"], t["handler_cap"]) == (
            "CC-BY-NC-4.0", "No re-identification.", None)
        assert governance.set_terms(s, "ct-a", license="")["license"] is None
        with pytest.raises(MidaError, match="handler cap -1"):
            governance.set_terms(s, "ct-a", handler_cap=-1)
        with pytest.raises(NotFoundError, match="no collection named 'nope'"):
            governance.terms(s, "nope")
