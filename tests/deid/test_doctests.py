"""The examples in the docstrings of mida.deid run and stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "mida.deid",
    "mida.deid.allowlist",
    "mida.deid.elements",
    "mida.deid.engine",
    "mida.deid.freetext",
    "mida.deid.iod",
    "mida.deid.pixels",
    "mida.deid.plan",
    "mida.deid.profile",
    "mida.deid.profile_files",
    "mida.deid.pseudonyms",
    "mida.deid.report",
    "mida.deid.safe_private",
    "mida.deid.table",
    "mida.deid.verify",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
