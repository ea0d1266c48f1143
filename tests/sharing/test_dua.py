"""Data use agreement templates: immutable versions, found by name@version or newest."""

from __future__ import annotations

import pytest

from mida.errors import ConflictError, MidaError, NotFoundError
from mida.node import Node
from mida.sharing import dua


def test_a_version_is_immutable_and_adding_it_again_is_a_no_op(node: Node) -> None:
    with node.catalog().session() as s:
        row, created = dua.add_template(s, "std", "1.0", "Standard", "Text one.\n")
        assert created and row.sha256 == dua.template_sha256("Standard", "Text one.")
        again, created = dua.add_template(s, "std", "1.0", "Standard", "Text one.\r\n")
        assert (again.id, created) == (row.id, False)  # line endings do not make new text
        with pytest.raises(ConflictError, match=r"std@1\.0 already exists with different text"):
            dua.add_template(s, "std", "1.0", "Standard", "Text two.")
        with pytest.raises(ConflictError):
            dua.add_template(s, "std", "1.0", "Another title", "Text one.")


def test_the_newest_version_by_number_not_by_text(node: Node) -> None:
    with node.catalog().session() as s:
        for v in ("1.9", "1.10", "1.2"):
            dua.add_template(s, "std", v, "Standard", f"Version {v}")
        dua.add_template(s, "alt", "1", "Alternative", "Other")
        assert dua.get_template(s, "std").version == "1.10"
        assert dua.get_template(s, "std@1.2").body == "Version 1.2\n"
        assert [f"{r.name}@{r.version}" for r in dua.list_templates(s)] == [
            "alt@1", "std@1.2", "std@1.9", "std@1.10"]
        with pytest.raises(NotFoundError, match=r"known: alt@1, std@1\.10, std@1\.2, std@1\.9"):
            dua.get_template(s, "std@2")


@pytest.mark.parametrize(("name", "version", "title", "body", "match"), [
    ("bad name", "1", "T", "B", "DUA name"),
    ("std", "v1", "T", "B", "DUA version"),
    ("std", "1", "", "B", "title"),
    ("std", "1", "T", " \n", "empty"),
])
def test_bad_templates_are_refused(node: Node, name: str, version: str, title: str, body: str,
                                   match: str) -> None:
    with node.catalog().session() as s, pytest.raises(MidaError, match=match):
        dua.add_template(s, name, version, title, body)
