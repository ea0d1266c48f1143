"""A node with a small multi-patient, multi-collection cohort, for the dataset tests.

Eight patients in two collections (``liver-a``, ``liver-b``): one CT series
each (patients 1 and 2 also have a second CT study), and patient 8 an MR
series. Two readers drew the sphere as a ``lesion`` mask on patients 1-4
(reader ``bob``'s mask on patient 4 is shifted one column, so the two readers
disagree there); every CT study has a LI-RADS classification (LR-5 on 1-4,
LR-3 on 5-7). Ages and sexes vary so that the breakdowns have several groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.uid import MRImageStorage
from sqlalchemy import select

from mida.annotations import store
from mida.annotations.geometry import series_geometry
from mida.annotations.schema import parse_schema
from mida.catalog.models import LabelSchema, Series, Study
from mida.deid.pseudonyms import Pseudonymizer
from mida.ingest import ingest_paths
from mida.node import Node
from tests.annotations.conftest import SCHEMA
from tests.factories import write_ct_series

PATIENTS = [  # (original PatientID, sex, age, collection, modality)
    ("P1", "M", "045Y", "liver-a", "CT"),
    ("P2", "F", "062Y", "liver-a", "CT"),
    ("P3", "M", "071Y", "liver-a", "CT"),
    ("P4", "F", "033Y", "liver-a", "CT"),
    ("P5", "M", "016Y", "liver-b", "CT"),
    ("P6", "F", "058Y", "liver-b", "CT"),
    ("P7", "M", "080Y", "liver-b", "CT"),
    ("P8", "F", "049Y", "liver-b", "MR"),
]


@dataclass
class Cohort:
    """The ingested node and, per original PatientID, the catalog series UIDs."""

    node: Node
    series: dict[str, list[str]] = field(default_factory=dict)
    patient: dict[str, str] = field(default_factory=dict)  # original -> pseudonymous PatientID
    schema: LabelSchema | None = None
    truth: Any = None

    def series_id(self, uid: str) -> int:
        with self.node.catalog().session() as s:
            return int(s.scalar(select(Series.id).where(Series.SeriesInstanceUID == uid)))


def _annotate(c: Cohort) -> None:
    n = c.node
    with n.catalog().session() as s:
        schema, _ = store.add_schema(s, parse_schema(SCHEMA))
        s.flush()
        for pid, *_ in PATIENTS:
            num = int(pid[1:])
            if num == 8:
                continue
            uid = c.series[pid][0]
            ser = s.scalar(select(Series).where(Series.SeriesInstanceUID == uid))
            assert ser is not None
            study = s.get(Study, ser.study_id)
            assert study is not None
            store.create(s, n.store(), target=store.Target(study=study), schema=schema,
                         label="lirads", reader="alice", status="submitted",
                         data={"value": "LR-5" if num <= 4 else "LR-3"})
            if num <= 4:
                geo = series_geometry(s, uid)
                for reader in ("alice", "bob"):
                    mask = c.truth.astype(np.uint8)
                    if reader == "bob" and num == 4:
                        mask = np.roll(mask, 1, axis=2)
                    store.create(s, n.store(), target=store.Target(study=study, series=ser),
                                 schema=schema, label="lesion", reader=reader,
                                 status="submitted", mask=mask, geometry=geo)
        s.commit()
        s.expunge(schema)
        c.schema = schema


@pytest.fixture
def cohort_node(node: Node, tmp_path: Path) -> Cohort:
    """The eight-patient node described in the module docstring (SQLite catalog)."""
    return build_cohort(node, tmp_path)


@pytest.fixture
def cohort_any(any_node: Node, tmp_path: Path) -> Cohort:
    """The same on each catalog backend (SQLite and PostgreSQL)."""
    return build_cohort(any_node, tmp_path)


def build_cohort(node: Node, tmp_path: Path) -> Cohort:
    c = Cohort(node)
    p = Pseudonymizer(node.key())
    by_coll: dict[str, list[Path]] = {}
    for pid, sex, age, coll, modality in PATIENTS:
        studies = 2 if pid in ("P1", "P2") else 1
        for k in range(studies):
            folder = tmp_path / "in" / coll / f"{pid}-{k}"
            extra: dict[str, Any] = {"PatientID": pid, "PatientSex": sex, "PatientAge": age,
                                     "Modality": modality,
                                     "StudyDate": f"202{k + 1}0{int(pid[1:])}15"}
            if modality == "MR":
                extra["SOPClassUID"] = MRImageStorage
                extra["RescaleIntercept"] = None
                extra["RescaleSlope"] = None
            info = write_ct_series(folder, slices=4, size=16, **extra)
            c.series.setdefault(pid, []).append(p.uid(info["series"]))
            c.truth = info["truth"]
            by_coll.setdefault(coll, []).append(folder)
    for coll, folders in by_coll.items():
        res = ingest_paths(node, folders, coll, workers=1)
        assert res.stored == 4 * len(folders), res
    with node.catalog().session() as s:
        from mida.catalog.models import Patient

        for pid, *_ in PATIENTS:
            st = s.scalar(select(Study).join(Series, Series.study_id == Study.id)
                          .where(Series.SeriesInstanceUID == c.series[pid][0]))
            assert st is not None
            pat = s.get(Patient, st.patient_id)
            assert pat is not None
            c.patient[pid] = pat.PatientID
    _annotate(c)
    return c
