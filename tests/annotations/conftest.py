"""A node holding one ingested CT series, and a label schema, for the annotation tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mida.annotations.schema import parse_schema
from mida.annotations.store import add_schema
from mida.catalog.models import LabelSchema
from mida.deid.pseudonyms import Pseudonymizer
from mida.ingest import ingest_paths
from mida.node import Node
from tests.factories import write_ct_series

SCHEMA = {
    "name": "liver",
    "version": "1.0.0",
    "description": "Test schema: one of every label type",
    "labels": [
        {"name": "lesion", "type": "mask", "dims": 3, "colour": "#e6194b", "key": "1",
         "concept": {"CodeValue": "52988006", "CodingSchemeDesignator": "SCT",
                     "CodeMeaning": "Lesion"},
         "category": {"CodeValue": "49755003", "CodingSchemeDesignator": "SCT",
                      "CodeMeaning": "Morphologically Altered Structure"}},
        {"name": "liver", "type": "mask", "colour": "#3cb44b", "key": "2",
         "concept": {"CodeValue": "10200004", "CodingSchemeDesignator": "SCT",
                     "CodeMeaning": "Liver"}},
        {"name": "nodule-box", "type": "bbox", "colour": "#ffe119", "key": "b",
         "concept": {"CodeValue": "27925004", "CodingSchemeDesignator": "SCT",
                     "CodeMeaning": "Nodule"}},
        {"name": "outline", "type": "polygon", "colour": "#4363d8", "key": "p",
         "concept": {"CodeValue": "52988006", "CodingSchemeDesignator": "SCT",
                     "CodeMeaning": "Lesion"}},
        {"name": "lirads", "type": "classification", "level": "study",
         "values": ["LR-1", "LR-2", "LR-3", "LR-4", "LR-5"], "key": "l",
         "concept": {"CodeValue": "LIRADS", "CodingSchemeDesignator": "99MIDA",
                     "CodeMeaning": "LI-RADS category"}},
        {"name": "diameter", "type": "measurement", "measure": "length",
         "concept": {"CodeValue": "410668003", "CodingSchemeDesignator": "SCT",
                     "CodeMeaning": "Length"}},
        {"name": "finding", "type": "text", "level": "study",
         "concept": {"CodeValue": "121071", "CodingSchemeDesignator": "DCM",
                     "CodeMeaning": "Finding"}},
    ],
}


@dataclass
class CtCase:
    """An ingested CT series: original and catalog (pseudonym) UIDs, and the planted sphere."""

    node: Node
    original: dict[str, Any]
    study_uid: str
    series_uid: str
    sop_uids: list[str]
    schema: LabelSchema

    @property
    def truth(self) -> Any:
        return self.original["truth"]


def ingest_ct(node: Node, folder: Path, collection: str = "ct", **kw: Any) -> dict[str, Any]:
    info = write_ct_series(folder, **kw)
    s = ingest_paths(node, [folder], collection, workers=1)
    assert s.stored == info["slices"], s
    return info


@pytest.fixture
def ct_case(node: Node, tmp_path: Path) -> CtCase:
    info = ingest_ct(node, tmp_path / "ct")
    p = Pseudonymizer(node.key())
    with node.catalog().session() as s:
        row, _ = add_schema(s, parse_schema(SCHEMA))
        s.commit()
        s.expunge(row)
    return CtCase(node=node, original=info, study_uid=p.uid(info["study"]),
                  series_uid=p.uid(info["series"]), sop_uids=[p.uid(u) for u in info["sops"]],
                  schema=row)
