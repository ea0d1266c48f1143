"""SR TID 1500: measurements and classifications out as a measurement report and back.

highdicom's ``sr_document.dcm`` and ``sr_document_with_multiple_groups.dcm`` cite
``ct_image.dcm`` (SOP Instance ...1.1.1.1.1.20040119072730.12322), which the
corpus holds, so those tests ingest it rather than a synthetic stand-in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from sqlalchemy import select

from mida.annotations import store
from mida.annotations.formats import ExportOptions, ImportOptions, export, import_path
from mida.annotations.schema import parse_schema
from mida.catalog.models import Annotation, Instance, Series
from mida.deid.pseudonyms import Pseudonymizer
from mida.errors import NotFoundError, SchemaError
from mida.node import Node
from tests.annotations.conftest import SCHEMA, CtCase
from tests.annotations.test_seg import HD, dciodvfy_errors, ingest
from tests.conftest import shared
from tests.factories import PHI

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def records(node: Node, reader: str) -> list[tuple[Any, ...]]:
    """(label, level, target UID, value, unit, points) of a reader's annotations, sorted."""
    out = []
    with node.catalog().session() as s:
        for a, r in store.query(s, reader=reader):
            v = store.view(s, a, r)
            t = v["target"]
            uid = t["SOPInstanceUID"] or t["SeriesInstanceUID"] or t["StudyInstanceUID"]
            out.append((a.label, a.level, uid, r.data.get("value"), r.data.get("unit"),
                        r.data.get("points")))
    return sorted(out, key=repr)


def _create(ct_case: CtCase, reader: str, kind: str = "person",
            version: str | None = None) -> None:
    node = ct_case.node
    kw: dict[str, Any] = {"schema": ct_case.schema, "reader": reader, "reader_kind": kind,
                          "model_version": version, "status": "submitted"}
    with node.catalog().session() as s:
        m = store.UidMapper(s)
        store.create(s, node.store(), target=m.target(sop_instance_uid=ct_case.sop_uids[2]),
                     label="diameter", data={"value": 12.5, "unit": "mm",
                                             "points": [[3, 4], [10.5, 12.25]]}, **kw)
        store.create(s, node.store(), target=m.target(series_uid=ct_case.series_uid),
                     label="diameter", data={"value": 30.25}, **kw)
        store.create(s, node.store(), target=m.target(study_uid=ct_case.study_uid),
                     label="lirads", data={"value": "LR-4"}, **kw)


def _export_one(node: Node, out: Path, reader: str) -> Path:
    res = export(node, "sr", ExportOptions(out=out, reader=reader))
    assert len(res.files) == 1, res.as_dict()
    errors = dciodvfy_errors(res.files[0])
    assert errors == [], f"dciodvfy errors in {res.files[0].name}:\n" + "\n".join(errors)
    return res.files[0]


def _items(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    out = []
    stack = list(ds.ContentSequence)
    while stack:
        it = stack.pop(0)
        out.append(it)
        stack += list(it.get("ContentSequence") or [])
    return out


def _text(ds: pydicom.Dataset, meaning: str) -> str:
    for it in _items(ds):
        if it.ConceptNameCodeSequence[0].CodeMeaning == meaning:
            return str(it.get("TextValue") or it.get("PersonName") or it.get("UID"))
    raise AssertionError(f"no content item {meaning!r}")


def test_measurements_and_classifications_round_trip_through_sr(ct_case: CtCase,
                                                                tmp_path: Path) -> None:
    node = ct_case.node
    _create(ct_case, "alice")
    path = _export_one(node, tmp_path / "out", "alice")
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert ds.Manufacturer == "mida" and ds.StudyInstanceUID == ct_case.study_uid
    assert _text(ds, "Person Observer Name").rstrip("^") == "alice"
    report = hd.sr.srread(path).content
    assert isinstance(report, hd.sr.MeasurementReport)
    groups = report.get_image_measurement_groups()
    assert len(groups) == 3
    # the series-level group cites every image of the series
    cited = sorted(len(g.source_images) for g in groups)
    assert cited == [0, 1, len(ct_case.sop_uids)]
    want = records(node, "alice")
    res = import_path(node, path, "sr", ImportOptions(reader="bob", schema="liver"))
    assert len(res.created) == 3 and res.skipped == []
    assert records(node, "bob") == want
    assert import_path(node, path, "sr", ImportOptions(reader="bob", schema="liver")
                       ).created == []
    # a derived schema keeps the concepts, values and measures
    res2 = import_path(node, path, "sr", ImportOptions(reader="carol"))
    with node.catalog().session() as s:
        _, schema = store.get_schema(s, res2.schema)
    given = parse_schema(ct_case.schema.body)
    diameter, lirads = (given.label(n).concept.CodeValue for n in ("diameter", "lirads"))
    by_code = {lb.concept.CodeValue: lb for lb in schema.labels}
    assert by_code[diameter].type == "measurement" and by_code[diameter].measure == "length"
    assert by_code[lirads].values == ["LR-4"] and by_code[lirads].level == "study"
    assert records(node, "carol") == sorted(
        [(by_code[lirads if r[0] == "lirads" else diameter].name, *r[1:]) for r in want],
        key=repr)


def test_model_readers_are_device_observers(ct_case: CtCase, tmp_path: Path) -> None:
    _create(ct_case, "livernet", kind="model", version="2.1.0")
    ds = pydicom.dcmread(_export_one(ct_case.node, tmp_path / "out", "livernet"))
    assert _text(ds, "Device Observer Name") == "livernet"
    assert _text(ds, "Device Observer Model Name") == "2.1.0"


def test_units_are_converted_or_skipped(ct_case: CtCase, tmp_path: Path) -> None:
    node = ct_case.node
    _create(ct_case, "alice")
    ds = pydicom.dcmread(_export_one(node, tmp_path / "out", "alice"))
    nums = [it for it in _items(ds) if it.ValueType == "NUM"]
    nums[0].MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue = "cm"
    nums[1].MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue = "{ratio}"
    edited = tmp_path / "units.dcm"
    ds.save_as(edited)
    res = import_path(node, edited, "sr", ImportOptions(reader="bob", schema="liver"))
    assert len(res.created) == 2
    assert len(res.skipped) == 1 and "{ratio}" in res.skipped[0]
    first = float(nums[0].MeasuredValueSequence[0].NumericValue)
    with node.catalog().session() as s:
        values = {r.data["value"]: r.provenance for a, r in store.query(s, reader="bob",
                                                                          kind="measurement")}
    assert list(values) == [first * 10]
    assert values[first * 10]["unit_in_file"] == "cm"


def test_no_phi_from_an_sr_reaches_the_catalog_or_exports(ct_case: CtCase,
                                                         tmp_path: Path) -> None:
    node = ct_case.node
    _create(ct_case, "alice")
    ds = pydicom.dcmread(_export_one(node, tmp_path / "out", "alice"))
    ds.PatientName = PHI["name"]
    ds.PatientID = PHI["pid"]
    for it in _items(ds):
        meaning = it.ConceptNameCodeSequence[0].CodeMeaning
        if meaning == "Tracking Identifier":
            it.TextValue = f"lesion of {PHI['name']} {PHI['pid']}"
        if meaning == "Person Observer Name":
            it.PersonName = PHI["name"]
    planted = tmp_path / "phi.dcm"
    ds.save_as(planted)
    import_path(node, planted, "sr", ImportOptions(reader="bob", schema="liver"))
    out = export(node, "sr", ExportOptions(out=tmp_path / "again", reader="bob"))
    with node.catalog().session() as s:
        views = [store.view(s, a, r) for a, r in store.query(s, reader="bob")]
    assert {v["provenance"]["tracking_identifier"] for v in views} == {"lesion"}
    blobs = [repr(views).encode()]
    blobs += [p.read_bytes() for p in node.settings.home.glob("catalog.sqlite*")]
    blobs += [p.read_bytes() for p in out.files]
    for blob in blobs:
        for needle in (PHI["name"], "Wen-Hsiung", PHI["pid"], PHI["birth"]):
            assert needle.encode() not in blob


# ------------------------------------------------------------------ the shared corpus

def _ct_image(node: Node) -> str:
    src = shared(*HD, "ct_image.dcm")
    ingest(node, src)
    return Pseudonymizer(node.key()).uid(str(pydicom.dcmread(src).SOPInstanceUID))


@pytest.mark.shared_data
def test_sr_document_area_is_imported_in_mm2_on_its_image(node: Node) -> None:
    sop = _ct_image(node)
    res = import_path(node, shared(*HD, "sr_document.dcm"), "sr", ImportOptions(reader="hd"))
    assert len(res.created) == 1
    ((label, level, uid, value, unit, points),) = records(node, "hd")
    assert (label, level, uid) == ("area-of-defined-region", "instance", sop)
    assert (value, unit) == (pytest.approx(170.0), "mm2")  # 1.7 cm2 in the file
    assert points == [[58.0, 52.0], [58.0, 41.0]]  # the CIRCLE's centre and a point on it
    with node.catalog().session() as s:
        prov = store.latest(s, store.get(s, res.created[0])).provenance
    assert (prov["value_in_file"], prov["unit_in_file"], prov["graphic_type"]) == \
        (1.7, "cm2", "CIRCLE")
    assert prov["finding"] == "Spinal cord" and prov["file_sha256"] == res.file_sha256


@pytest.mark.shared_data
def test_multiple_groups_import_and_round_trip(node: Node, tmp_path: Path) -> None:
    sop = _ct_image(node)
    path = shared(*HD, "sr_document_with_multiple_groups.dcm")
    res = import_path(node, path, "sr", ImportOptions(reader="hd"))
    report = hd.sr.srread(path).content
    expected = sorted((m.name.meaning, round(float(m.value), 6), m.unit.value)
                      for kind in ("image", "planar_roi", "volumetric_roi")
                      for g in getattr(report, f"get_{kind}_measurement_groups")()
                      for m in g.get_measurements())
    assert len(expected) == 4
    with node.catalog().session() as s:
        _, schema = store.get_schema(s, res.schema)
        rows = store.query(s, reader="hd", kind="measurement")
        meaning = {lb.name: lb.concept.CodeMeaning for lb in schema.labels}
        got = sorted((meaning[a.label], round(r.data["value"], 6), r.data["unit"])
                     for a, r in rows)
        inst = s.scalars(select(Instance).where(Instance.SOPInstanceUID == sop)).one()
        assert {a.instance_id for a, _ in rows} == {inst.id}
    assert got == expected
    # qualitative evaluations come in as classifications of the same image
    evaluations = [r for r in records(node, "hd") if r[4] is None]
    assert ("level-of-significance", "instance", sop, "Not significant", None, None) in evaluations
    # round trip: export what was stored, validate, import as another reader: same records
    again = _export_one(node, tmp_path / "out", "hd")
    import_path(node, again, "sr", ImportOptions(reader="hd2", schema=res.schema))
    assert records(node, "hd2") == records(node, "hd")


@pytest.mark.shared_data
def test_schema_mismatches_are_named(node: Node) -> None:
    _ct_image(node)
    with node.catalog().session() as s:
        store.add_schema(s, parse_schema(SCHEMA))
    path = shared(*HD, "sr_document.dcm")
    with pytest.raises(SchemaError) as e:
        import_path(node, path, "sr", ImportOptions(reader="hd", schema="liver"))
    assert "'Area of defined region'" in str(e.value)
    code = parse_schema(SCHEMA).label("diameter").concept
    assert f"diameter ({code.CodeValue}, {code.CodingSchemeDesignator})" in str(e.value)
    with pytest.raises(SchemaError, match=r"measures area but label 'diameter'.* measures length"):
        import_path(node, path, "sr", ImportOptions(
            reader="hd", schema="liver", label_map={"Area of defined region": "diameter"}))
    with node.catalog().session() as s:
        assert s.scalars(select(Annotation)).first() is None


@pytest.mark.shared_data
def test_sr_citing_images_not_ingested_names_the_pseudonym(node: Node) -> None:
    path = shared(*HD, "sr_document.dcm")
    with pytest.raises(NotFoundError) as e:
        import_path(node, path, "sr", ImportOptions(reader="hd"))
    original = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
    assert Pseudonymizer(node.key()).uid(original) in str(e.value)
    assert original not in str(e.value)
    with node.catalog().session() as s:
        assert s.scalars(select(Series)).first() is None
