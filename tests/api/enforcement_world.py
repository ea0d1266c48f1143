"""A small node for the enforcement tests: two collections, two releases, every role.

Collection ``A`` and ``B`` each hold one patient with one CT study (one
instance) and one study-level annotation. Release ``ra@1.0.0`` freezes A,
``rb@1.0.0`` freezes B. Each role of :data:`ROLES` is a user with a token of
the widest scope its role allows and the grants the entry names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select

from mida.annotations.schema import parse_schema
from mida.annotations.store import Target, add_schema, create
from mida.api import create_app
from mida.catalog.models import Instance, Series, Study
from mida.catalog.service import get_collection
from mida.config import Settings
from mida.datasets import release
from mida.ingest import ingest_paths
from mida.node import Node, init_node
from mida.sharing import identity
from tests.factories import write

SCHEMA = {"name": "grade", "version": "1.0.0", "labels": [
    {"name": "grade", "type": "classification", "level": "study", "values": ["low", "high"],
     "concept": {"CodeValue": "G", "CodingSchemeDesignator": "99MIDA", "CodeMeaning": "Grade"}}]}

#: role key -> (role, grants): ("A", download) a collection grant of the role's widest scope
#: on A; ("ra", download) a release grant on ra@1.0.0.
ROLES: dict[str, tuple[str, list[tuple[str, bool]]]] = {
    "admin": ("admin", []),
    "operator": ("operator", []),
    "provider-admin": ("provider-admin", [("A", True)]),
    "steward": ("steward", [("A", True)]),
    "dac-member": ("dac-member", []),
    "researcher": ("researcher", []),
    "researcher+A": ("researcher", [("A", True)]),
    "researcher+A-view": ("researcher", [("A", False)]),
    "researcher+ra": ("researcher", [("ra", True)]),
    "researcher+ra-view": ("researcher", [("ra", False)]),
    "annotator": ("annotator", [("A", True)]),
    "honest-broker": ("honest-broker", []),
}


@dataclass
class World:
    node: Node
    app: FastAPI
    uids: dict[str, dict[str, str]]  # collection -> StudyInstanceUID, Series..., SOP...
    release_ids: dict[str, int]
    tokens: dict[str, str] = field(default_factory=dict)
    grants: dict[str, list[int]] = field(default_factory=dict)

    def token(self, user: str, role: str, grants: list[tuple[str, bool]]) -> str:
        """A new user with ``grants`` and a token of the role's widest scope."""
        scope = identity.ROLES[role][0]
        with self.node.catalog().session() as s:
            identity.add_user(s, user, role)
            ids = []
            for target, download in grants:
                if target in self.release_ids or target in ("ra", "rb"):
                    g = identity.add_grant(s, user, "read", release=f"{target}@1.0.0",
                                           download=download)
                else:
                    g = identity.add_grant(s, user, scope, target, download=download)
                ids.append(g.id)
            self.grants[user] = ids
            secret, _ = identity.create_token(s, user, scope)
        return secret


def build_world(root: Path) -> World:
    node = init_node(Settings(home=root / "node", workers=1, audit_fsync=False), "TEST",
                     "Test Hospital", key=b"k" * 32)
    for name in ("A", "B"):
        write(root / name / "0.dcm", PatientID=f"PAT-{name}")  # one patient in each
        ingest_paths(node, [root / name], name, workers=1)
    uids: dict[str, dict[str, str]] = {}
    with node.catalog().session() as s:
        schema, _ = add_schema(s, parse_schema(SCHEMA))
        for name in ("A", "B"):
            cid = get_collection(s, name).id
            study = s.scalars(select(Study).where(Study.collection_id == cid)).one()
            series = s.scalars(select(Series).where(Series.study_id == study.id)).one()
            sop = s.scalars(select(Instance.SOPInstanceUID)
                            .where(Instance.series_id == series.id)).one()
            create(s, node.store(), target=Target(study), schema=schema, label="grade",
                   reader="dr-x", data={"value": "low"})
            uids[name] = {"study": study.StudyInstanceUID, "series": series.SeriesInstanceUID,
                          "sop": sop}
        ids = {r: release.create(s, node.store(), r, "1.0.0",
                                 expression=f"collection = '{c}'").id
               for r, c in (("ra", "A"), ("rb", "B"))}
    world = World(node, create_app(node), uids, ids)
    for key, (role, grants) in ROLES.items():
        world.tokens[key] = world.token(key.replace("+", "-"), role, grants)
    return world


def wado(world: World, collection: str, suffix: str = "") -> str:
    """The WADO-RS path of the instance of ``collection`` (``Z``: UIDs that do not exist)."""
    u = world.uids.get(collection, {"study": "2.25.1", "series": "2.25.2", "sop": "2.25.3"})
    return f"/dicomweb/studies/{u['study']}/series/{u['series']}/instances/{u['sop']}{suffix}"


def study_uid(world: World, collection: str) -> str:
    return world.uids.get(collection, {"study": "2.25.1"})["study"]


def body(r: Any) -> Any:
    """A response's JSON, or its status and bytes when it has none."""
    try:
        return r.json()
    except ValueError:
        return (r.status_code, r.content[:200])
