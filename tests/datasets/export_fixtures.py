"""A small released dataset for the export tests, built once per test module.

Five patients: four CT series (4 slices of 16 x 16, collection ``ct``) and
one single-frame CR image (collection ``dx``). Reader ``alice`` drew the
planted sphere as a ``lesion`` mask on P1-P3, reader ``bob`` a shifted one on
P1; P2 also has a ``liver`` mask (the lower two slices, overlapping the
lesion). Every CT study has a LI-RADS classification; the CR image has a box,
a polygon and a classification. The release ``demo@1.0.0`` splits the five
patients 3/1/1 (70/15/15).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import ComputedRadiographyImageStorage
from sqlalchemy import select

from mida.annotations import store
from mida.annotations.geometry import series_geometry
from mida.annotations.schema import parse_schema
from mida.catalog.models import Instance, Series, Study
from mida.config import Settings
from mida.datasets import release
from mida.deid.pseudonyms import Pseudonymizer
from mida.ingest import ingest_paths
from mida.node import Node, init_node
from tests.annotations.conftest import SCHEMA
from tests.factories import write, write_ct_series

CT_PATIENTS = ("P1", "P2", "P3", "P4")


@dataclass
class Built:
    """The node, the release and what was planted (catalog UIDs)."""

    node: Node
    ref: str
    series: dict[str, str] = field(default_factory=dict)  # original PatientID -> series UID
    truth: Any = None
    annotations: dict[str, str] = field(default_factory=dict)  # "P1/alice/lesion" -> uid


def _dx(folder: Path) -> dict[str, Any]:
    from tests.factories import make_dataset

    ds = make_dataset(PatientID="P5", Modality="CR", PatientSex="F", PatientAge="050Y",
                      SOPClassUID=ComputedRadiographyImageStorage,
                      RescaleIntercept=None, RescaleSlope=None, PixelRepresentation=0,
                      WindowCenter=300, WindowWidth=600)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BurnedInAnnotation = "NO"
    ds.PixelData = (np.arange(256, dtype=np.uint16) * 3).tobytes()
    ds.PixelSpacing = [0.2, 0.2]
    write(folder / "dx.dcm", ds)
    return {"series": ds.SeriesInstanceUID, "sop": ds.SOPInstanceUID}


def make_node(root: Path) -> Node:
    """A node of its own for a module-scoped fixture (explicit settings: no environment)."""
    settings = Settings(home=root / "node", workers=1, database_url="", storage_url="")
    return init_node(settings, "TEST", "Test Hospital", key=b"k" * 32)


def build(root: Path, name: str = "demo", node: Node | None = None) -> Built:
    """Ingest, annotate and release the dataset of the module docstring (on ``node``,
    or a new SQLite node under ``root``)."""
    node = node or make_node(root)
    p = Pseudonymizer(node.key())
    b = Built(node, f"{name}@1.0.0")
    folders = []
    for i, pid in enumerate(CT_PATIENTS):
        info = write_ct_series(root / "in" / pid, slices=4, size=16, PatientID=pid,
                               PatientSex="MF"[i % 2], PatientAge=f"0{40 + i}Y")
        b.series[pid] = p.uid(info["series"])
        b.truth = info["truth"]
        folders.append(root / "in" / pid)
    assert ingest_paths(node, folders, "ct", workers=1).stored == 16
    dx = _dx(root / "in" / "P5")
    assert ingest_paths(node, [root / "in" / "P5"], "dx", workers=1).stored == 1
    b.series["P5"] = p.uid(dx["series"])
    bs = node.store()
    with node.catalog().session() as s:
        schema, _ = store.add_schema(s, parse_schema(SCHEMA))
        s.flush()

        def target(pid: str, instance: bool = False) -> store.Target:
            ser = s.scalar(select(Series).where(Series.SeriesInstanceUID == b.series[pid]))
            assert ser is not None
            study = s.get(Study, ser.study_id)
            assert study is not None
            inst = s.scalar(select(Instance).where(Instance.series_id == ser.id)) \
                if instance else None
            return store.Target(study=study, series=ser, instance=inst)

        def add(key: str, tgt: store.Target, label: str, reader: str, **kw: Any) -> None:
            rev = store.create(s, bs, target=tgt, schema=schema, label=label, reader=reader,
                               status="submitted", **kw)
            ann = s.get(store.Annotation, rev.annotation_id)
            assert ann is not None
            b.annotations[key] = ann.uid

        for pid in CT_PATIENTS:
            tgt = target(pid)
            add(f"{pid}/alice/lirads", store.Target(study=tgt.study), "lirads", "alice",
                data={"value": "LR-5" if pid != "P4" else "LR-3"})
            geo = series_geometry(s, b.series[pid])
            if pid in ("P1", "P2", "P3"):
                add(f"{pid}/alice/lesion", tgt, "lesion", "alice",
                    mask=b.truth.astype(np.uint8), geometry=geo)
            if pid == "P1":
                add("P1/bob/lesion", tgt, "lesion", "bob",
                    mask=np.roll(b.truth, 1, axis=2).astype(np.uint8), geometry=geo)
            if pid == "P2":
                liver = np.zeros_like(b.truth)
                liver[:2] = True
                add("P2/alice/liver", tgt, "liver", "alice", mask=liver.astype(np.uint8),
                    geometry=geo)
        dxt = target("P5", instance=True)
        add("P5/alice/box", dxt, "nodule-box", "alice", data={"box": [2, 3, 9, 12]})
        add("P5/alice/outline", dxt, "outline", "alice",
            data={"points": [[1, 1], [10, 2], [6, 11]]})
        add("P5/alice/lirads", store.Target(study=dxt.study), "lirads", "alice",
            data={"value": "LR-1"})
        release.create(s, bs, name, "1.0.0", expression="modality in ['CT', 'CR']",
                       description="export test release")
        s.commit()
    return b


def file_hashes(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_export(b: Built, formats: list[str], out: Path, **kw: Any) -> Any:
    from mida.datasets.export import export

    with b.node.catalog().session() as s:
        row = release.get(s, b.ref if "ref" not in kw else kw.pop("ref"))
        return export(s, b.node.store(), row, formats, out, **kw)
