"""A hub node hosting two providers, for the access-request tests (service, CLI, API).

Institution ``TEST`` (the node's own) owns collection ``liver-a``; ``CGMH``
(added) owns ``liver-b``; ``KMUH`` owns nothing. Each collection holds three
pseudonymous patients with one CT series of two instances (plus, in
``liver-b``, an MR series), written as catalog rows (no DICOM files: nothing
here reads pixels). The saved cohort ``liver-ct`` (``modality = 'CT'``) spans
both collections; the release ``liver@1.0.0`` holds ``liver-a`` only.

Users: researchers ``rita`` (the applicant), ``hank`` and ``hana`` (handlers),
``ross`` (another researcher); DAC members ``dana`` (TEST), ``dave`` (CGMH),
``dina`` (a second TEST member), ``kurt`` (KMUH, owns nothing here); ``ada``
(admin) and ``anne`` (annotator). The DUA ``hwdc-standard@1.0`` exists.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from mida.catalog.models import Instance, Patient, Series, Study
from mida.catalog.service import get_or_create_collection
from mida.datasets import cohort as cohorts
from mida.datasets import release as releases
from mida.node import Node
from mida.sharing import dua, governance, identity

DUA_BODY = "# Data use agreement\n\nI will not attempt to re-identify anyone.\n"
IRB_PDF = b"%PDF-1.4\n% IRB approval letter (test)\n"
TODAY = dt.date(2026, 3, 2)
USERS = [("rita", "researcher", "TEST"), ("hank", "researcher", "TEST"),
         ("hana", "researcher", "CGMH"), ("ross", "researcher", "KMUH"),
         ("dana", "dac-member", "TEST"), ("dina", "dac-member", "TEST"),
         ("dave", "dac-member", "CGMH"), ("kurt", "dac-member", "KMUH"),
         ("ada", "admin", None), ("anne", "annotator", "TEST")]


@dataclass
class World:
    node: Node
    collections: dict[str, int]


def _uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


def _patient(s: Session, institution_id: int, collection_id: int, pid: str,
             modalities: tuple[str, ...]) -> None:
    p = Patient(institution_id=institution_id, PatientID=pid, PatientSex="F", PatientAge="050Y")
    s.add(p)
    s.flush()
    st = Study(StudyInstanceUID=_uid(), patient_id=p.id, collection_id=collection_id,
               StudyDate=dt.date(2024, 1, 5))
    s.add(st)
    s.flush()
    for m in modalities:
        se = Series(SeriesInstanceUID=_uid(), study_id=st.id, Modality=m)
        s.add(se)
        s.flush()
        for k in range(2):
            s.add(Instance(SOPInstanceUID=_uid(), series_id=se.id,
                           SOPClassUID="1.2.840.10008.5.1.4.1.1.2",
                           TransferSyntaxUID="1.2.840.10008.1.2.1", InstanceNumber=k + 1,
                           blob_sha256=f"{k:064x}", size=1000, dataset={}))


def build(node: Node) -> World:
    with node.catalog().session() as s:
        own = governance.get_institution(s, "TEST")
        cgmh = governance.add_institution(s, "CGMH", "Chang Gung Memorial Hospital")
        governance.add_institution(s, "KMUH", "Kaohsiung Medical University Hospital")
        a = get_or_create_collection(s, "liver-a", own.id, "default")
        b = governance.create_collection(s, "liver-b", "CGMH", "default")
        for i in range(3):
            _patient(s, own.id, a.id, f"PA{i}", ("CT",))
            _patient(s, cgmh.id, b.id, f"PB{i}", ("CT", "MR"))
        for name, role, inst in USERS:
            identity.add_user(s, name, role)
            if inst:
                governance.set_institution(s, name, inst)
        dua.add_template(s, "hwdc-standard", "1.0", "HWDC standard DUA", DUA_BODY)
        cohorts.save(s, "liver-ct", "modality = 'CT'")
        releases.create(s, node.store(), "liver", "1.0.0", expression="collection = 'liver-a'")
        return World(node, {"liver-a": a.id, "liver-b": b.id})


def request_kwargs(**over: Any) -> dict[str, Any]:
    """The arguments of a valid cohort request by ``rita``, changed by ``over``."""
    kw: dict[str, Any] = dict(
        title="Liver CT segmentation", purpose="Train and validate a liver segmentation model",
        cohort="liver-ct", handlers=["hank", "hana"], irb_number="IRB-2026-001",
        irb_body="TEST Hospital IRB", irb_expiry=dt.date(2027, 3, 31), irb_document=IRB_PDF,
        irb_document_name="approval.pdf", download=True, dua="hwdc-standard@1.0",
        today=TODAY)
    kw.update(over)
    return kw


__all__ = ["DUA_BODY", "IRB_PDF", "TODAY", "USERS", "World", "build", "request_kwargs"]
