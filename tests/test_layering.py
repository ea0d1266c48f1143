"""The house plan's promise: a module imports only from its own floor or below.

Floors follow ARCHITECTURE.md: 1 core, 2 records, 3 services, 4 products,
5 faces. A violation names the importing module and what it imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mida"
FLOORS = {
    "config": 1, "errors": 1, "events": 1, "dicom": 1, "storage": 1,
    "deid": 2, "catalog": 2,
    "ingest": 3, "node": 3, "features": 3, "annotations": 3, "sharing": 3, "compute": 3,
    "datasets": 4, "net": 4, "dicomweb": 4, "publish": 4, "federation": 4, "apps": 4,
    "api": 5, "cli": 5, "web": 5, "__main__": 5,
}
# Faces may not be imported by anything below them; services never import FastAPI/Typer.
FACE_LIBRARIES = {"fastapi", "typer", "starlette", "uvicorn", "jinja2"}


def _package(path: Path, root: Path) -> str:
    rel = path.relative_to(root)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


def _violations(root: Path) -> tuple[int, list[str]]:
    violations = []
    checked = 0
    for path in sorted(root.rglob("*.py")):
        if path.parent == root and path.name == "__init__.py":
            continue
        pkg = _package(path, root)
        floor = FLOORS.get(pkg)
        assert floor is not None, f"{pkg} has no floor in ARCHITECTURE.md terms"
        checked += 1
        for mod in _imports(path):
            top = mod.split(".")[0]
            if top == "mida" and "." in mod:
                target = mod.split(".")[1]
                if target in FLOORS and FLOORS[target] > floor:
                    violations.append(f"{path.relative_to(root)} imports {mod}")
            elif top in FACE_LIBRARIES and floor < 5:
                violations.append(f"{path.relative_to(root)} imports the face library {top}")
    return checked, violations


def test_every_module_imports_only_from_its_floor_or_below() -> None:
    checked, violations = _violations(SRC)
    assert checked > 30
    assert violations == []


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    (tmp_path / "storage").mkdir()
    (tmp_path / "storage" / "bad.py").write_text("from mida.ingest import Ingestor\n")
    (tmp_path / "catalog.py").write_text("import fastapi\n")
    _, violations = _violations(tmp_path)
    assert violations == [
        "catalog.py imports the face library fastapi",
        "storage/bad.py imports mida.ingest",
    ]
