"""DICOM SR TID 1500 measurement reports: import and export, with highdicom.

Export (``mida annotations export --format sr``)
------------------------------------------------
One Comprehensive 3D SR **per (study, reader)** holding a TID 1500 Imaging
Measurement Report: the reader is the observer (a person, or for a model
reader a device named after it with the model version as model name). Every
selected measurement or classification annotation is one measurement group
(TID 1501) whose Tracking Unique Identifier is the annotation's UID:

* a measurement is a TID 300 numeric measurement: the label's concept, the
  value and its UCUM unit; its ``points`` (pixel coordinates, the DICOM
  SCOORD convention: (0, 0) is the top-left corner of the image) are the
  measurement's source coordinates, a POLYLINE (or POINT for one point, or the
  graphic type it was imported with) on its image. ``stats`` are not exported;
* a classification is a qualitative evaluation: the label's concept, and as
  value SCT Present/Absent for labels without values, else a code of the local
  scheme ``99MIDA`` whose meaning is the value;
* the group names its image (instance targets), every image of its series
  (series targets) or none (study targets) as source images.

The evidence and the patient and study modules come from the de-identified
instances as stored, so the file names only pseudonymous UIDs.

Import (``mida annotations import FILE --format sr``)
-----------------------------------------------------
Every measurement group of the report (image, planar ROI and volumetric ROI
groups) is read with highdicom; each numeric measurement becomes a
**measurement annotation** (concept -> label, value, unit) and each
qualitative evaluation a **classification annotation**. A group's target is
found from the images it cites anywhere in its content (UIDs mapped through
the pseudonyms): one image -> that image (and its frame); several images of
one series -> the series; none -> the SR's study. A cited image that is not in
the catalog is an error naming its pseudonym. Points of a 2D region or of the
measurement's coordinates are kept for image targets.

Units: mida measures lengths in mm, areas in mm2, volumes in mm3 and
intensities in HU; values in cm, m, um, cm2, cm3, mL or L are converted (the
file's value and unit are kept in the provenance); a measurement in any other
unit is skipped with a line in ``skipped``, as is one without a value.

Labels: without ``--schema`` a schema ``sr-<12 hex of the sha256>`` is derived
from the measurement names (a measurement label whose measure follows the unit)
and the evaluation names (a classification label at the level of the target,
whose values are the meanings found). With ``--schema`` measurements are
matched like SEG segments (``--label-map`` by name, the concept, the name) and
an unmatched one is an error; a qualitative evaluation whose concept matches no
classification label is skipped with a line, and its value must be one of the
label's values (by meaning or code value; present/absent for labels without
values). A classification label's level decides its target: an image group's
evaluation of a study-level label annotates the study.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from mida.annotations import store
from mida.annotations.formats import (
    ExportOptions,
    ExportResult,
    ImportOptions,
    ImportResult,
    file_sha256,
    previous_import,
)
from mida.annotations.formats.seg import (
    FileItem,
    clean_text,
    code_of,
    file_name,
    known_values,
    match_label,
    person_name,
    provenance,
    quiet,
    ref_uid,
    resolve_labels,
    safe_error,
    select_annotations,
    stored_datasets,
)
from mida.annotations.geometry import NON_IMAGE_CLASSES
from mida.annotations.schema import Code, Label
from mida.catalog.models import Annotation, AnnotationRevision, Instance, Series, Study
from mida.deid.pseudonyms import Pseudonymizer
from mida.errors import AnnotationError, SchemaError
from mida.node import Node

#: UCUM unit -> (mida measure, factor to the measure's unit).
UNITS: dict[str, tuple[str, float]] = {
    "mm": ("length", 1.0), "cm": ("length", 10.0), "m": ("length", 1000.0),
    "um": ("length", 1e-3),
    "mm2": ("area", 1.0), "cm2": ("area", 100.0),
    "mm3": ("volume", 1.0), "cm3": ("volume", 1000.0), "ml": ("volume", 1000.0),
    "mL": ("volume", 1000.0), "l": ("volume", 1e6), "L": ("volume", 1e6),
    "[hnsf'U]": ("hu_stats", 1.0),
}
UNIT_MEANINGS = {"mm": "millimeter", "mm2": "square millimeter", "mm3": "cubic millimeter",
                 "[hnsf'U]": "Hounsfield unit"}
LOCAL_SCHEME = "99MIDA"
PRESENT = Code(CodeValue="52101004", CodingSchemeDesignator="SCT", CodeMeaning="Present")
ABSENT = Code(CodeValue="2667000", CodingSchemeDesignator="SCT", CodeMeaning="Absent")
PROCEDURE = hd.sr.CodedConcept(value="363679005", scheme_designator="SCT",
                               meaning="Imaging procedure")
_MIN_POINTS = {"POINT": (1, 1), "MULTIPOINT": (1, 10**6), "POLYLINE": (2, 10**6),
               "CIRCLE": (2, 2), "ELLIPSE": (4, 4)}


# ============================================================ import

def _walk(items: Sequence[Dataset] | None) -> Iterator[Dataset]:
    for it in items or []:
        yield it
        yield from _walk(it.get("ContentSequence"))


def _images(root: Sequence[Dataset]) -> list[tuple[str, list[int]]]:
    """(SOP Instance UID, frame numbers) of every IMAGE content item in ``root``'s tree."""
    out: list[tuple[str, list[int]]] = []
    for it in _walk(root):
        if it.get("ValueType") != "IMAGE" or not it.get("ReferencedSOPSequence"):
            continue
        ref = it.ReferencedSOPSequence[0]
        frames = ref.get("ReferencedFrameNumber")
        nums = [] if frames in (None, "") else [int(f) for f in (
            frames if isinstance(frames, Sequence) and not isinstance(frames, str)
            else [frames])]
        out.append((str(ref.ReferencedSOPInstanceUID), nums))
    return out


def _scoord(root: Sequence[Dataset]) -> tuple[str, list[list[float]]] | None:
    """The first 2D spatial coordinates in ``root``'s tree: (graphic type, [[x, y], ...])."""
    for it in _walk(root):
        if it.get("ValueType") == "SCOORD" and it.get("GraphicData"):
            data = [float(v) for v in it.GraphicData]
            pts = [[round(data[i], 3), round(data[i + 1], 3)] for i in range(0, len(data) - 1, 2)]
            return str(it.get("GraphicType", "")), pts
    return None


def _report(path: Path) -> tuple[Any, hd.sr.MeasurementReport]:
    try:
        sr = hd.sr.srread(path)
    except Exception as exc:
        raise AnnotationError(f"{path.name} is not a DICOM SR document that can be read "
                              f"({safe_error(exc)})") from None
    report = sr.content if isinstance(sr.content, hd.sr.MeasurementReport) else None
    if report is None:
        try:
            report = hd.sr.MeasurementReport.from_sequence(sr.ContentSequence)
        except Exception:
            report = None
    if report is None:
        raise AnnotationError(f"{path.name} is not a TID 1500 measurement report (its root "
                              "container is not an Imaging Measurement Report)")
    return sr, report


@dataclass
class _Record:
    item: FileItem
    target: store.Target
    data: dict[str, Any]
    extra: dict[str, Any]


def _group_target(s: Session, mapper: store.UidMapper, sr: Dataset, group: Sequence[Dataset]
                  ) -> store.Target:
    refs = _images(group)
    if not refs:
        return store.Target(study=mapper.study(str(sr.StudyInstanceUID)))
    sops = list(dict.fromkeys(uid for uid, _ in refs))
    if len(sops) == 1:
        frames = sorted({f for _, fs in refs for f in fs})
        return mapper.target(sop_instance_uid=sops[0],
                             frame=frames[0] if len(frames) == 1 else None)
    instances = [mapper.instance(uid) for uid in sops]
    series_ids = {i.series_id for i in instances}
    series = s.get(Series, series_ids.pop()) if len(series_ids) == 1 else None
    if series is not None:
        study = s.get(Study, series.study_id)
        assert study is not None
        return store.Target(study=study, series=series)
    study = s.get(Study, s.get(Series, instances[0].series_id).study_id)  # type: ignore[union-attr]
    assert study is not None
    return store.Target(study=study)


def _level(target: store.Target) -> str:
    return {"frame": "image", "instance": "image"}.get(target.level, target.level)


def _lift(s: Session, target: store.Target, level: str) -> store.Target | None:
    """The target at a classification label's level (None: the group is too coarse)."""
    have = _level(target)
    if have == level:
        return target
    if level == "study":
        return store.Target(study=target.study)
    if level == "series" and have == "image" and target.instance is not None:
        series = s.get(Series, target.instance.series_id)
        return store.Target(study=target.study, series=series)
    return None


def _measurements(group: Any, known: list[str], target: store.Target, base: dict[str, Any],
                  skipped: list[str], where: str) -> list[_Record]:
    out = []
    group_points = _scoord(group)
    for m in group.get_measurements():
        name = code_of(m.name, known)
        if name is None:
            continue
        shown = f"{where}: measurement {name.CodeMeaning!r}"
        value = m.value
        unit = str(m.unit.value) if m.unit is not None else ""
        if value is None:
            skipped.append(f"{shown} has no value")
            continue
        if unit not in UNITS:
            skipped.append(f"{shown} is in {unit or 'no unit'}, which mida has no measure for "
                           "(mm, mm2, mm3, HU and their multiples)")
            continue
        measure, factor = UNITS[unit]
        v = float(f"{float(value) * factor:.12g}")
        data: dict[str, Any] = {"value": v}
        extra = dict(base)
        if factor != 1.0:
            extra.update(value_in_file=float(value), unit_in_file=unit)
        pts = _scoord(m) or group_points
        if pts is not None and target.instance is not None:
            data["points"] = pts[1]
            extra["graphic_type"] = pts[0]
        item = FileItem(key=shown, name=name.CodeMeaning, type="measurement", concept=name,
                        measure=measure, description="Measurement of an imported SR TID 1500")
        out.append(_Record(item, target, data, extra))
    return out


def _evaluations(group: Any, known: list[str], target: store.Target, base: dict[str, Any],
                 where: str) -> list[_Record]:
    out = []
    for q in group.get_qualitative_evaluations():
        name = code_of(q.name, known)
        value = code_of(q.value, known)
        if name is None or value is None:
            continue
        item = FileItem(key=f"{where}: evaluation {name.CodeMeaning!r}", name=name.CodeMeaning,
                        type="classification", concept=name, level=_level(target),
                        values=[value.CodeMeaning],
                        description="Qualitative evaluation of an imported SR TID 1500")
        out.append(_Record(item, target, {"value": value}, dict(base)))
    return out


def _value_for(label: Label, code: Code) -> str | None:
    if not label.values:
        if (code.CodeValue, code.CodingSchemeDesignator) == (PRESENT.CodeValue, "SCT") or \
                code.CodeMeaning.lower() == "present":
            return "present"
        if (code.CodeValue, code.CodingSchemeDesignator) == (ABSENT.CodeValue, "SCT") or \
                code.CodeMeaning.lower() == "absent":
            return "absent"
        return None
    for v in label.values:
        if v.lower() in (code.CodeMeaning.lower(), code.CodeValue.lower()):
            return v
    return None


@quiet
def import_path(node: Node, path: Path, options: ImportOptions) -> ImportResult:
    """Import a TID 1500 report's measurements and evaluations (see the module docstring)."""
    sha = file_sha256(path)
    sr, report = _report(path)
    known = known_values(sr)
    result = ImportResult(file_sha256=sha)
    with node.catalog().session() as s:
        done = previous_import(s, sha, options, path.name)
        if done is not None:
            return done
        mapper = store.UidMapper(s, Pseudonymizer(node.key()))
        records: list[_Record] = []
        groups = ([("image", g) for g in report.get_image_measurement_groups()]
                  + [("planar", g) for g in report.get_planar_roi_measurement_groups()]
                  + [("volumetric", g) for g in report.get_volumetric_roi_measurement_groups()])
        for n, (kind, g) in enumerate(groups, 1):
            ident = clean_text(g.tracking_identifier, known) if g.tracking_identifier else ""
            where = f"group {n}" + (f" {ident!r}" if ident else "")
            group_target = _group_target(s, mapper, sr, g)
            finding = code_of(g.finding_type, known) if g.finding_type is not None else None
            base = {"group": n, "group_type": kind, "tracking_identifier": ident or None,
                    "tracking_uid": ref_uid(s, mapper, g.tracking_uid) if g.tracking_uid
                    else None,
                    "finding": finding.CodeMeaning if finding else None,
                    "sop_instance_uid": mapper.pseudonym(str(sr.SOPInstanceUID))}
            records += _measurements(g, known, group_target, base, result.skipped, where)
            records += _evaluations(g, known, group_target, base, where)
        if options.schema is not None:
            _, schema = store.get_schema(s, options.schema)
            kept = []
            for r in records:
                if r.item.type == "classification" and \
                        match_label(schema, r.item, options.label_map) is None:
                    result.skipped.append(f"{r.item.key} matches no classification label of "
                                          f"schema {schema.ref}")
                    continue
                kept.append(r)
            records = kept
        if not records:
            return result
        row, schema, names = resolve_labels(
            s, [r.item for r in records], options, sha=sha, prefix="sr",
            description="Derived from the measurements of an imported SR TID 1500")
        schema_labels = {lb.name: lb for lb in schema.labels}
        for r, name in zip(records, names, strict=True):
            lb = schema_labels[name]
            data = dict(r.data)
            target = r.target
            if lb.type == "measurement":
                measure = r.item.measure
                if lb.measure != measure:
                    raise SchemaError(
                        f"{r.item.key} measures {measure} but label {lb.name!r} of schema "
                        f"{schema.ref} measures {lb.measure}: map it to another label with "
                        "--label-map")
                data["unit"] = lb.unit
            else:
                value = _value_for(lb, data["value"])
                if value is None:
                    raise SchemaError(
                        f"{r.item.key}: value {data['value'].CodeMeaning!r} is not one of label "
                        f"{lb.name!r}'s values (" + ", ".join(lb.values or ["present", "absent"])
                        + "); nothing was imported")
                data["value"] = value
                lifted = _lift(s, r.target, lb.level or "study")
                if lifted is None:
                    result.skipped.append(f"{r.item.key}: label {lb.name!r} classifies a "
                                          f"{lb.level}, but the group cites a whole "
                                          f"{_level(r.target)}")
                    continue
                target = lifted
            rev = store.create(
                s, node.store(), target=target, schema=row, label=name, reader=options.reader,
                reader_kind=options.reader_kind, status=options.status, data=data,
                author=options.author, model_version=options.model_version,
                provenance=provenance("sr", sha, **r.extra))
            ann = s.get(Annotation, rev.annotation_id)
            assert ann is not None
            result.created.append(ann.uid)
        result.schema = schema.ref
    return result


# ============================================================ export

def _code(c: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=c.CodeValue, scheme_designator=c.CodingSchemeDesignator,
                              meaning=c.CodeMeaning)


def value_code(label: Label, value: str) -> hd.sr.CodedConcept:
    """The coded value of a classification (see the module docstring)."""
    if not label.values and value in ("present", "absent"):
        return _code(PRESENT if value == "present" else ABSENT)
    cv = value if len(value) <= 16 and "\\" not in value else \
        "h" + hashlib.sha256(value.encode()).hexdigest()[:15]
    return hd.sr.CodedConcept(value=cv, scheme_designator=LOCAL_SCHEME, meaning=value[:64])


def _graphic_type(rev: AnnotationRevision, n: int) -> str:
    given = str((rev.provenance or {}).get("graphic_type") or "")
    lo, hi = _MIN_POINTS.get(given, (0, -1))
    if lo <= n <= hi:
        return given
    return "POINT" if n == 1 else "POLYLINE"


def _series_images(s: Session, series_id: int) -> list[str]:
    rows = s.execute(select(Instance.SOPInstanceUID, Instance.SOPClassUID)
                     .where(Instance.series_id == series_id)
                     .order_by(Instance.InstanceNumber, Instance.SOPInstanceUID)).all()
    return [uid for uid, cls in rows if cls not in NON_IMAGE_CLASSES]


def _observer(ann: Annotation, rev: AnnotationRevision) -> hd.sr.ObservationContext:
    if ann.reader_kind == "model":
        device = hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["mida-model", ann.reader]), name=ann.reader,
            manufacturer_name="mida", model_name=rev.model_version or "unknown")
        return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device))
    person = hd.sr.PersonObserverIdentifyingAttributes(name=person_name(ann.reader))
    return hd.sr.ObservationContext(observer_person_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Person, observer_identifying_attributes=person))


def export_study(s: Session, node: Node, study: Study, reader: str,
                 rows: Sequence[tuple[Annotation, AnnotationRevision]], out: Path,
                 result: ExportResult) -> Path:
    """Write one Comprehensive 3D SR of ``rows`` (one reader's annotations of one study)."""
    cited: dict[int, list[str]] = {}  # annotation id -> source image UIDs
    for ann, _ in rows:
        if ann.instance_id is not None:
            inst = s.get(Instance, ann.instance_id)
            assert inst is not None
            cited[ann.id] = [inst.SOPInstanceUID]
        elif ann.series_id is not None:
            cited[ann.id] = _series_images(s, ann.series_id)
        else:
            cited[ann.id] = []
    uids = list(dict.fromkeys(u for us in cited.values() for u in us))
    if not uids:  # study-level only: the patient and study modules still come from an image
        first = s.scalars(select(Instance.SOPInstanceUID).join(Series)
                          .where(Series.study_id == study.id)
                          .order_by(Instance.id).limit(1)).first()
        if first is None:
            raise AnnotationError(f"study {study.StudyInstanceUID} has no stored instance to "
                                  "take its patient and study modules from")
        uids = [first]
    datasets = stored_datasets(s, node, uids)
    schemas: dict[int, Any] = {}
    groups: list[Any] = []
    local = False
    for ann, rev in rows:
        if ann.schema_id not in schemas:
            schemas[ann.schema_id] = store.schema_of(s, ann.schema_id)
        lb: Label = schemas[ann.schema_id].label(ann.label)
        tracking = hd.sr.TrackingIdentifier(uid=ann.uid, identifier=lb.name)
        frames = [ann.frame] if ann.frame else None
        sources = [hd.sr.SourceImageForMeasurementGroup.from_source_image(
            datasets[u], referenced_frame_numbers=frames) for u in cited[ann.id]]
        measurements, evaluations = [], []
        if ann.kind == "measurement":
            unit = str(rev.data.get("unit") or lb.unit or "1")
            coords = None
            pts = rev.data.get("points")
            if pts and ann.instance_id is not None:
                ds = datasets[cited[ann.id][0]]
                coords = [hd.sr.CoordinatesForMeasurement(
                    graphic_type=_graphic_type(rev, len(pts)),
                    graphic_data=np.asarray(pts, dtype=float),
                    source_image=hd.sr.SourceImageForRegion.from_source_image(
                        ds, referenced_frame_numbers=frames))]
            measurements.append(hd.sr.Measurement(
                name=_code(lb.concept), value=float(rev.data["value"]),
                unit=hd.sr.CodedConcept(value=unit, scheme_designator="UCUM",
                                        meaning=UNIT_MEANINGS.get(unit, unit)),
                referenced_coordinates=coords))
        else:
            code = value_code(lb, str(rev.data["value"]))
            local = local or code.scheme_designator == LOCAL_SCHEME
            evaluations.append(hd.sr.QualitativeEvaluation(name=_code(lb.concept), value=code))
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, measurements=measurements or None,
            qualitative_evaluations=evaluations or None, source_images=sources or None))
    ann0, rev0 = rows[0]
    report = hd.sr.MeasurementReport(
        observation_context=_observer(ann0, rev0), procedure_reported=PROCEDURE,
        imaging_measurements=groups, title=codes.cid7021.ImagingMeasurementReport)
    entropy = [f"{a.uid}:{r.revision}" for a, r in rows]
    schemes = [CodingSchemeIdentificationItem(designator=LOCAL_SCHEME,
                                              name="mida local label values",
                                              responsible_organization="mida")] if local else None
    try:
        sr = hd.sr.Comprehensive3DSR(
            evidence=[datasets[u] for u in uids], content=report,
            series_instance_uid=generate_uid(entropy_srcs=["sr-series", *entropy]),
            series_number=901, sop_instance_uid=generate_uid(entropy_srcs=["sr", *entropy]),
            instance_number=1, manufacturer="mida",
            series_description=f"mida measurements by {reader}"[:64],
            coding_schemes=schemes)
    except (ValueError, TypeError) as exc:
        raise AnnotationError(f"highdicom cannot build the SR of study "
                              f"{study.StudyInstanceUID}: {safe_error(exc)}") from None
    path = out / (file_name(study.StudyInstanceUID, reader) + ".sr.dcm")
    sr.save_as(path, enforce_file_format=True)
    result.annotations += len(rows)
    return path


@quiet
def export(node: Node, options: ExportOptions) -> ExportResult:
    """One SR per (study, reader) of the selected measurements and classifications."""
    result = ExportResult()
    with node.catalog().session() as s:
        rows = select_annotations(s, options, ["measurement", "classification"])
        groups: dict[tuple[int, str], list[tuple[Annotation, AnnotationRevision]]] = \
            defaultdict(list)
        for ann, rev in rows:
            groups[(ann.study_id, ann.reader)].append((ann, rev))
        for (study_id, reader), members in sorted(groups.items()):
            study = s.get(Study, study_id)
            assert study is not None
            result.files.append(export_study(s, node, study, reader, members, options.out,
                                             result))
    return result
