"""The OpenAPI schema: served at /docs and /openapi.json, with stable operation ids.

Client generators name methods after operation ids, so renaming one breaks
every generated client. ``operation_ids.txt`` is the contract: a route added,
renamed or removed must update it on purpose.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from mida.api import create_app
from mida.node import Node

CONTRACT = Path(__file__).with_name("operation_ids.txt")


def test_schema_and_docs_are_served_without_a_token(node: Node) -> None:
    c = TestClient(create_app(node))
    assert c.get("/docs").status_code == 200
    assert c.get("/openapi.json").json()["info"]["title"] == "mida"


def test_operation_ids_are_stable_unique_and_snake_case(node: Node) -> None:
    spec = TestClient(create_app(node)).get("/openapi.json").json()
    lines = sorted(f"{op['operationId']} {method.upper()} {path}"
                   for path, ops in spec["paths"].items() for method, op in ops.items())
    ids = [line.split()[0] for line in lines]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", i) for i in ids)
    assert lines == sorted(CONTRACT.read_text().split("\n")[:-1])
