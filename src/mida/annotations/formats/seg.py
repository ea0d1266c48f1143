"""DICOM Segmentation (SEG) import and export, with highdicom.

Import (``mida annotations import FILE --format seg``)
------------------------------------------------------
Every segment of the file becomes one **mask annotation** on the grid of the
series its frames were derived from. A frame is placed on a slice by the SOP
Instance UID (and frame number) its Derivation Image Sequence names, mapped
through the node's pseudonyms (a UID already in the catalog, e.g. from a file
mida exported, is used as is). A frame that names no source image, or whose
source is not a slice of the series, or a file whose Spatial Locations
Preserved is NO, is placed by its Plane Position (Patient) instead, which then
must lie on a slice of the series (0.05 mm) on the same in-plane grid. A frame
that can be placed neither way is an error naming the source's pseudonym.

* BINARY segments are kept as they are; FRACTIONAL ones are thresholded at half
  the Maximum Fractional Value (``value >= 0.5 * max``), recorded in the
  provenance; LABELMAP segments are the pixels equal to the segment number.
* A segment that is empty (after thresholding) is not imported: it gets a line
  in ``skipped`` (a file of empty segments imports nothing, and says why).
* Tiled whole-slide microscopy segmentations are refused with an error: a slide
  pyramid has no slice grid, which is what mida ties masks to.

Labels: without ``--schema``, a schema ``seg-<12 hex of the file's sha256>``
version 1.0.0 is derived from the file: one mask label per distinct segment
(label text as a slug, else its property type's meaning), with the
Segmented Property Type as concept, the Category, and the recommended display
colour. With ``--schema`` each segment is matched to a mask label, in this
order: ``--label-map`` (segment label, its slug, or its number), the property
type concept (CodeValue + CodingSchemeDesignator), then the label name. A
segment that matches no label is an error that lists the unmatched segments
and the schema's mask labels: nothing of the file is imported.

Export (``mida annotations export --format seg``)
-------------------------------------------------
One BINARY SEG **per (series, reader)**: every selected mask annotation of that
reader on that series is one segment (latest revision), with its label's
concept, category and colour (CIELab), algorithm type MANUAL for a person
reader and AUTOMATIC (the reader as algorithm name, the model version) for a
model reader, the reader as Content Creator, Manufacturer ``mida``. The source
images are the de-identified instances of the series as stored in the blob
store, so the file names only pseudonymous UIDs and the de-identified patient
module. Files are named ``<series UID>_<reader>.seg.dcm``.
"""

from __future__ import annotations

import functools
import io
import re
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from mida import __version__
from mida.annotations import store
from mida.annotations.formats import (
    ExportOptions,
    ExportResult,
    ImportOptions,
    ImportResult,
    file_sha256,
    previous_import,
)
from mida.annotations.geometry import TOLERANCE_MM, SeriesGeometry, geometry_of_series
from mida.annotations.schema import Code, Label, Schema
from mida.catalog.models import Annotation, AnnotationRevision, Instance, LabelSchema, Series
from mida.deid.freetext import FreeTextCleaner
from mida.deid.pseudonyms import Pseudonymizer
from mida.errors import AnnotationError, GeometryMismatchError, NotFoundError, SchemaError
from mida.node import Node

TOOL = f"mida {__version__}"
FRACTIONAL_THRESHOLD = 0.5  # of MaximumFractionalValue
_cleaner = FreeTextCleaner()
_UID_RE = re.compile(r"\d+(?:\.\d+){3,}")


# ============================================================ shared helpers
# (used by the RTSTRUCT and SR modules as well)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def quiet(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Silence library UserWarnings: highdicom's quote values of the file (person names)."""
    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return fn(*args, **kwargs)
    return wrapper


def safe_error(exc: BaseException) -> str:
    """A library's error text with any UID in it blanked (it may be an original UID)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return _UID_RE.sub("<uid>", text)[:200]


def known_values(ds: Dataset) -> list[str]:
    """Identifying values of a file's header, removed wherever they appear in its free text."""
    out: list[str] = []
    for kw in ("PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate",
               "AccessionNumber", "ReferringPhysicianName", "PatientAddress",
               "PatientTelephoneNumbers", "OperatorsName", "PerformingPhysicianName",
               "InstitutionName", "StudyID"):
        v = ds.get(kw)
        if v is None or v == "":
            continue
        values = list(v) if isinstance(v, pydicom.multival.MultiValue) else [v]
        for x in values:
            text = str(x).strip()
            if text:
                out.append(text)
                out.extend(p for p in re.split(r"[\^=\s]+", text) if len(p) >= 3)
    return out


def clean_text(text: Any, known: Iterable[str] = ()) -> str:
    """Free text from a file, de-identified (see :mod:`mida.deid.freetext`)."""
    if text is None:
        return ""
    return _cleaner.clean(str(text), known=list(known)).text.strip()


def slug(text: str) -> str:
    """A label name: lower case ``[a-z0-9_.-]``, at most 64 characters ('' when nothing is left)."""
    s = re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-_.")
    return s[:64].rstrip("-_.")


def code_of(item: Any, known: Iterable[str] = ()) -> Code | None:
    """A pydicom Code Sequence item or highdicom CodedConcept as a schema :class:`Code`."""
    if item is None:
        return None
    value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue")
    scheme = item.get("CodingSchemeDesignator") or ""
    if not value or not scheme:
        return None
    meaning = clean_text(item.get("CodeMeaning"), known) or str(value)
    return Code(CodeValue=str(value)[:64], CodingSchemeDesignator=str(scheme)[:16],
                CodeMeaning=meaning[:64])


def provenance(fmt: str, sha: str, **extra: Any) -> dict[str, Any]:
    return {"format": fmt, "file_sha256": sha, "tool": TOOL,
            **{k: v for k, v in extra.items() if v is not None}}


@dataclass
class FileItem:
    """Something in an imported file that becomes annotations of one label."""

    key: str  # how messages name it, e.g. "segment 2 'liver'"
    name: str  # cleaned text from the file
    type: str  # mask | measurement | classification
    concept: Code | None
    category: Code | None = None
    colour: str | None = None
    description: str = ""
    measure: str | None = None
    level: str | None = None
    values: list[str] = field(default_factory=list)
    aliases: tuple[str, ...] = ()  # further keys --label-map may use (e.g. the segment number)
    generic_concept: bool = False  # the concept says nothing specific: match by name only


def _same_code(a: Code | None, b: Code | None) -> bool:
    return (a is not None and b is not None and a.CodeValue == b.CodeValue
            and a.CodingSchemeDesignator.upper() == b.CodingSchemeDesignator.upper())


def _derive(items: Sequence[FileItem], name: str, description: str) -> tuple[Schema, list[str]]:
    labels: dict[str, dict[str, Any]] = {}
    assigned: list[str] = []
    for i, it in enumerate(items, 1):
        base = (slug(it.name) or (slug(it.concept.CodeMeaning) if it.concept else "")
                or f"{it.type}-{i}")
        candidate, n = base, 2
        while candidate in labels:
            lb = labels[candidate]
            concept = (it.concept or generic_code()).model_dump()
            if (lb["type"] == it.type and lb["concept"] == concept
                    and lb.get("level") == it.level and lb.get("measure") == it.measure):
                break
            candidate = f"{base[:60]}-{n}"
            n += 1
        if candidate not in labels:
            body: dict[str, Any] = {"name": candidate, "type": it.type,
                                    "concept": (it.concept or generic_code()).model_dump(),
                                    "description": it.description[:200]}
            if it.category is not None:
                body["category"] = it.category.model_dump()
            if it.colour:
                body["colour"] = it.colour
            if it.type == "measurement":
                body["measure"] = it.measure
            if it.type == "classification":
                body["level"] = it.level or "study"
                body["values"] = []
            labels[candidate] = body
        if it.type == "classification":
            for v in it.values:
                if v not in labels[candidate]["values"]:
                    labels[candidate]["values"].append(v)
        assigned.append(candidate)
    try:
        schema = Schema.model_validate({"name": name, "version": "1.0.0",
                                        "description": description,
                                        "labels": list(labels.values())})
    except Exception as exc:  # pragma: no cover - the body is built to be valid
        raise SchemaError(f"cannot derive a label schema from the file: {safe_error(exc)}; "
                          "give one with --schema") from None
    return schema, assigned


def generic_code() -> Code:
    return Code(CodeValue="123037004", CodingSchemeDesignator="SCT",
                CodeMeaning="Anatomical Structure")


def _describe(it: FileItem) -> str:
    c = it.concept
    code = (f" ({c.CodeValue}, {c.CodingSchemeDesignator}, \"{c.CodeMeaning}\")"
            if c is not None and not it.generic_concept else "")
    return f"{it.key}{code}"


def match_label(schema: Schema, it: FileItem, label_map: dict[str, str]) -> Label | None:
    """The label of ``schema`` an item maps to: --label-map, then concept, then name (or None)."""
    for k in (it.name, slug(it.name), *it.aliases):
        if k and k in label_map:
            lb = schema.label(label_map[k])
            if lb.type != it.type:
                raise SchemaError(f"--label-map sends {it.key} to label {lb.name!r}, a {lb.type} "
                                  f"label; it needs a {it.type} label")
            return lb
    cands = [lb for lb in schema.labels if lb.type == it.type]
    if it.concept is not None and not it.generic_concept:
        by_code = [lb for lb in cands if _same_code(lb.concept, it.concept)]
        if len(by_code) == 1:
            return by_code[0]
        if len(by_code) > 1:
            named = [lb for lb in by_code if lb.name == slug(it.name)]
            if len(named) == 1:
                return named[0]
            raise SchemaError(
                f"{_describe(it)} matches several labels of schema {schema.ref} by concept ("
                + ", ".join(lb.name for lb in by_code) + "): choose one with --label-map "
                f"'{it.name or it.aliases[0]}=LABEL'")
    named = [lb for lb in cands if lb.name == slug(it.name)]
    return named[0] if named else None


def resolve_labels(s: Session, items: Sequence[FileItem], options: ImportOptions, *, sha: str,
                   prefix: str, description: str) -> tuple[LabelSchema, Schema, list[str]]:
    """The schema row and, for each item, its label name.

    Without ``options.schema`` a schema ``<prefix>-<sha[:12]>`` is derived from
    the items and added (the same file gives the same schema again: a no-op).
    """
    if options.schema is None:
        schema, assigned = _derive(items, f"{prefix}-{sha[:12]}", description)
        row, _ = store.add_schema(s, schema)
        return row, schema, assigned
    row, schema = store.get_schema(s, options.schema)
    out: list[str] = []
    unmatched: list[FileItem] = []
    for it in items:
        lb = match_label(schema, it, options.label_map)
        if lb is None:
            unmatched.append(it)
        else:
            out.append(lb.name)
    if unmatched:
        kinds = sorted({it.type for it in unmatched})
        labels = [f"{lb.name} ({lb.concept.CodeValue}, {lb.concept.CodingSchemeDesignator})"
                  for lb in schema.labels if lb.type in kinds]
        raise SchemaError(
            f"{len(unmatched)} item(s) of the file match no {'/'.join(kinds)} label of schema "
            f"{schema.ref}: " + "; ".join(_describe(it) for it in unmatched)
            + f". The schema's {'/'.join(kinds)} labels: " + (", ".join(labels) or "none")
            + ". Map them with --label-map NAME=LABEL, or import without --schema to derive "
            "one from the file; nothing was imported")
    return row, schema, out


def ref_uid(s: Session, mapper: store.UidMapper, uid: str) -> str:
    """A file's UID for provenance: as is when a mida annotation has it, else its pseudonym."""
    if s.scalars(select(Annotation.id).where(Annotation.uid == uid)).first() is not None:
        return uid
    return mapper.pseudonym(uid)



def schema_ids(s: Session, ref: str | None) -> set[int] | None:
    """Ids of the schema versions an export filter names (``name``: every version)."""
    if not ref:
        return None
    name, _, version = ref.partition("@")
    q = select(LabelSchema.id).where(LabelSchema.name == name)
    if version:
        q = q.where(LabelSchema.version == version)
    ids = set(s.scalars(q))
    if not ids:
        store.get_schema(s, ref)  # raises NotFoundError listing the known schemas
    return ids


def select_annotations(s: Session, options: ExportOptions, kinds: Sequence[str]
                       ) -> list[tuple[Annotation, AnnotationRevision]]:
    """The latest revisions the export options select, of the given label types, oldest first."""
    ids = schema_ids(s, options.schema)
    rows: list[tuple[Annotation, AnnotationRevision]] = []
    for kind in kinds:
        rows += store.query(s, collection_ids=options.collection_ids, status=options.status,
                            reader=options.reader, series_uid=options.series_uid,
                            task_id=options.task_id, kind=kind)
    if ids is not None:
        rows = [(a, r) for a, r in rows if a.schema_id in ids]
    return sorted(rows, key=lambda ar: ar[0].id)


def stored_datasets(s: Session, node: Node, sop_uids: Sequence[str], *,
                    pixels: bool = False) -> dict[str, Dataset]:
    """The de-identified stored instances (catalog UIDs) read from the blob store."""
    blobs = dict(s.execute(select(Instance.SOPInstanceUID, Instance.blob_sha256)
                           .where(Instance.SOPInstanceUID.in_(list(sop_uids)))).all())
    bs = node.store()
    out: dict[str, Dataset] = {}
    for uid in sop_uids:
        digest = blobs.get(uid)
        if digest is None:
            raise NotFoundError(f"instance {uid} is not in the catalog")
        ds = pydicom.dcmread(io.BytesIO(bs.get(digest)), stop_before_pixels=not pixels)
        for kw in _TYPE2_COPIED:  # de-identification may have removed them; they are type 2
            if kw not in ds:
                setattr(ds, kw, "")
        out[uid] = ds
    return out


#: Patient and study attributes highdicom copies from the source images (all type 2).
_TYPE2_COPIED = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                 "AccessionNumber", "StudyID", "StudyDate", "StudyTime",
                 "ReferringPhysicianName")


def person_name(reader: str) -> str:
    """A reader's name as a DICOM PN: one family-name component (``alice^``)."""
    return reader.replace("^", " ").replace("=", " ").replace("\\", " ")[:60] + "^"


def file_name(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", p).strip("-") or "x" for p in parts)


# ============================================================ SEG import

def _rgb_hex(cielab: Sequence[int] | None) -> str | None:
    if not cielab:
        return None
    try:
        r, g, b = hd.color.CIELabColor.from_dicom_value([int(x) for x in cielab]).to_rgb(clip=True)
    except Exception:
        return None
    return f"#{r:02x}{g:02x}{b:02x}"


def hex_lab(colour: str) -> hd.color.CIELabColor:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return hd.color.CIELabColor.from_rgb(r, g, b)


def _read_seg(path: Path) -> hd.seg.Segmentation:
    try:
        return hd.seg.segread(path)
    except Exception as exc:
        raise AnnotationError(f"{path.name} is not a DICOM Segmentation that can be read "
                              f"({safe_error(exc)})") from None


def _fg_item(fg: Dataset | None, seq: str) -> Dataset | None:
    if fg is None or seq not in fg or not fg[seq].value:
        return None
    item: Dataset = fg[seq].value[0]
    return item


@dataclass
class _Frame:
    index: int  # 0-based frame of the SEG
    segment: int | None
    refs: list[tuple[str, int | None]]  # (referenced SOP Instance UID, frame number)
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None = None  # row cosines, column cosines
    spacing: tuple[float, float] | None = None  # between rows, between columns (mm)


def _frames(seg: hd.seg.Segmentation) -> list[_Frame]:
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg \
        else None
    per = seg.get("PerFrameFunctionalGroupsSequence") or []
    out = []
    for i in range(int(seg.get("NumberOfFrames", 1) or 1)):
        fg = per[i] if i < len(per) else None

        def item(name: str, fg: Dataset | None = fg) -> Dataset | None:
            return _fg_item(fg, name) or _fg_item(shared, name)

        ident = item("SegmentIdentificationSequence")
        segment = int(ident.ReferencedSegmentNumber) if ident is not None else None
        refs: list[tuple[str, int | None]] = []
        deriv = item("DerivationImageSequence")
        for src in (deriv.get("SourceImageSequence") or []) if deriv is not None else []:
            uid = src.get("ReferencedSOPInstanceUID")
            if not uid:
                continue
            frames = src.get("ReferencedFrameNumber")
            if frames is None or frames == "":
                refs.append((str(uid), None))
            else:
                nums = list(frames) if isinstance(frames, pydicom.multival.MultiValue) else [frames]
                refs.extend((str(uid), int(n)) for n in nums)
        pp = item("PlanePositionSequence")
        pos = None
        if pp is not None and pp.get("ImagePositionPatient"):
            pos = tuple(float(x) for x in pp.ImagePositionPatient[:3])
        po = item("PlaneOrientationSequence")
        ori = None
        if po is not None and po.get("ImageOrientationPatient"):
            ori = tuple(float(x) for x in po.ImageOrientationPatient[:6])
        pm = item("PixelMeasuresSequence")
        sp = None
        if pm is not None and pm.get("PixelSpacing"):
            sp = (float(pm.PixelSpacing[0]), float(pm.PixelSpacing[1]))
        out.append(_Frame(i, segment, refs, pos, ori, sp))  # type: ignore[arg-type]
    return out


def _target_series(s: Session, mapper: store.UidMapper, seg: Dataset, frames: list[_Frame],
                   options: ImportOptions) -> Series:
    if options.series_uid:
        return mapper.series(options.series_uid)
    counts: dict[int, int] = defaultdict(int)
    missing: list[str] = []
    series_of: dict[str, int | None] = {}
    for fr in frames:
        for uid, _ in fr.refs:
            if uid not in series_of:
                series_of[uid] = s.scalars(select(Instance.series_id).where(
                    Instance.SOPInstanceUID.in_([uid, mapper.pseudonym(uid)]))).first()
            sid = series_of[uid]
            if sid is None:
                missing.append(uid)
            else:
                counts[sid] += 1
    if counts:
        sid = max(counts, key=lambda k: counts[k])
        series = s.get(Series, sid)
        assert series is not None
        return series
    for item in seg.get("ReferencedSeriesSequence") or []:
        if item.get("SeriesInstanceUID"):
            return mapper.series(str(item.SeriesInstanceUID))
    if missing:
        raise NotFoundError(
            f"the segmentation's frames reference instance {mapper.pseudonym(missing[0])} "
            "(pseudonym), which is not in the catalog: ingest the images it was drawn on first")
    raise AnnotationError("the segmentation names no source images or series: give the series "
                          "it annotates with --series")


def _in_plane(px: np.ndarray, fr: _Frame, geom: SeriesGeometry, k: int) -> np.ndarray:
    """A SEG frame's pixels laid onto slice ``k`` of the series grid.

    A frame oriented like the series is taken as it is. A frame whose axes are
    the series' in-plane axes in another order or direction (dcmqi writes a
    label map's frames bottom-up, for instance) is mapped through patient
    space: frame pixel (r, c) lies at position + c x column spacing x row
    cosines + r x row spacing x column cosines, which must fall on a pixel of the
    slice. Anything else (oblique, other spacing) needs resampling: refused.
    """
    rows, cols = geom.shape[1:]
    same = fr.orientation is None or not geom.has_patient_frame or np.allclose(
        fr.orientation, np.r_[geom.direction[0], geom.direction[1]], atol=1e-3)
    if same:
        if px.shape != (rows, cols):
            raise GeometryMismatchError(
                f"the segmentation's frames are {px.shape[0]}x{px.shape[1]} (rows x columns) but "
                f"the images of series {geom.series_uid} are {rows}x{cols}: resample it onto "
                "the series grid first")
        return px
    assert fr.orientation is not None
    if fr.position is None:
        raise GeometryMismatchError(
            f"frame {fr.index + 1} of the segmentation is oriented unlike series "
            f"{geom.series_uid} and gives no position: it cannot be laid on the series grid")
    f_row, f_col = np.asarray(fr.orientation[:3]), np.asarray(fr.orientation[3:])
    s_row, s_col = np.asarray(geom.direction[0]), np.asarray(geom.direction[1])
    d_row, d_col = fr.spacing or (geom.spacing[1], geom.spacing[2])
    # series column index x and row index y of frame pixel (r, c): x = x0 + c*a + r*b, ...
    origin = np.asarray(fr.position) - np.asarray(geom.positions[k])
    x0, y0 = origin @ s_row / geom.spacing[2], origin @ s_col / geom.spacing[1]
    a, b = d_col * (f_row @ s_row) / geom.spacing[2], d_row * (f_col @ s_row) / geom.spacing[2]
    c_, d = d_col * (f_row @ s_col) / geom.spacing[1], d_row * (f_col @ s_col) / geom.spacing[1]
    steps = np.array([a, b, c_, d, x0, y0])
    if (not np.allclose(steps, np.round(steps), atol=0.01)
            or sorted(np.abs(np.round(steps[:4]))) != [0, 0, 1, 1]):
        raise GeometryMismatchError(
            f"the segmentation's frames are oriented {np.round(fr.orientation, 3).tolist()} "
            f"with pixel spacing {[d_row, d_col]} mm but series {geom.series_uid} is oriented "
            f"{np.round(np.r_[s_row, s_col], 3).tolist()} with {list(geom.spacing[1:])} mm: "
            "resample the segmentation onto the series grid first")
    a, b, c_, d, x0, y0 = (int(v) for v in np.round(steps))
    r, c = np.nonzero(px)
    x, y = x0 + c * a + r * b, y0 + c * c_ + r * d
    inside = (x >= 0) & (x < cols) & (y >= 0) & (y < rows)
    if not inside.all():
        raise GeometryMismatchError(
            f"frame {fr.index + 1} of the segmentation reaches outside the images of series "
            f"{geom.series_uid}: resample it onto the series grid first")
    out = np.zeros((rows, cols), dtype=px.dtype)
    out[y, x] = px[r, c]
    return out


def _place_frames(seg: Dataset, frames: list[_Frame], geom: SeriesGeometry,
                  mapper: store.UidMapper) -> list[int]:
    """The slice index of every SEG frame on the series grid."""
    index = {(sl.sop_instance_uid, sl.frame): k for k, sl in enumerate(geom.slices)}
    multi = {sl.sop_instance_uid for sl in geom.slices if sl.frame > 1}
    preserved = str(seg.get("SpatialLocationsPreserved", "YES") or "YES").upper() != "NO"
    normal = np.asarray(geom.direction[2])
    levels = np.asarray(geom.positions, dtype=float) @ normal
    out = []
    for fr in frames:
        k = None
        if preserved:
            for uid, num in fr.refs:
                for cand in (uid, mapper.pseudonym(uid)):
                    if num is None and cand in multi:
                        continue  # a whole multi-frame instance: place by position
                    k = index.get((cand, num or 1))
                    if k is not None:
                        break
                if k is not None:
                    break
        if k is None and fr.position is not None and geom.has_patient_frame:
            # along the slice normal: a frame described from another corner (rows or
            # columns reversed) has another in-plane origin; _in_plane checks the rest
            z = float(np.dot(normal, fr.position))
            d = np.abs(levels - z)
            best = int(np.argmin(d))
            if d[best] <= TOLERANCE_MM + 1e-3 * max(geom.spacing):
                k = best
            elif not fr.refs:
                raise GeometryMismatchError(
                    f"frame {fr.index + 1} of the segmentation lies at {z:.3f} mm along the slice "
                    f"normal, which is no slice of series {geom.series_uid} (nearest is "
                    f"{d[best]:.3f} mm away): resample the segmentation onto the series grid")
        if k is None:
            if fr.refs:
                raise NotFoundError(
                    f"frame {fr.index + 1} of the segmentation references instance "
                    f"{mapper.pseudonym(fr.refs[0][0])} (pseudonym), which is not a slice of "
                    f"series {geom.series_uid} in the catalog: ingest the images it was drawn "
                    "on first")
            raise AnnotationError(
                f"frame {fr.index + 1} of the segmentation names neither a source image nor a "
                "plane position: it cannot be placed on the series")
        out.append(k)
    return out


def _segment_items(seg: hd.seg.Segmentation, known: list[str]) -> list[tuple[int, FileItem,
                                                                             dict[str, Any]]]:
    out = []
    for desc in seg.SegmentSequence:
        num = int(desc.SegmentNumber)
        if num == 0:
            continue  # a label map's background
        label = clean_text(desc.get("SegmentLabel"), known)
        ptype = code_of(desc.SegmentedPropertyTypeCodeSequence[0], known) \
            if desc.get("SegmentedPropertyTypeCodeSequence") else None
        cat = code_of(desc.SegmentedPropertyCategoryCodeSequence[0], known) \
            if desc.get("SegmentedPropertyCategoryCodeSequence") else None
        colour = _rgb_hex(desc.get("RecommendedDisplayCIELabValue"))
        shown = label or (ptype.CodeMeaning if ptype else f"#{num}")
        item = FileItem(key=f"segment {num} {shown!r}", name=label or "", type="mask",
                        concept=ptype, category=cat, colour=colour,
                        description=f"Segment of an imported DICOM SEG ({shown})",
                        aliases=(str(num),))
        algo = desc.get("SegmentAlgorithmName")
        extra = {"segment_number": num, "segment_label": label or None,
                 "algorithm_type": str(desc.get("SegmentAlgorithmType") or "") or None,
                 "algorithm_name": clean_text(algo, known) or None,
                 "tracking_uid": str(desc.TrackingUID) if desc.get("TrackingUID") else None}
        out.append((num, item, extra))
    return out


@quiet
def import_path(node: Node, path: Path, options: ImportOptions) -> ImportResult:
    """Import a DICOM SEG: one mask annotation per segment (see the module docstring)."""
    sha = file_sha256(path)
    seg = _read_seg(path)
    if seg.is_tiled:
        raise AnnotationError(
            f"{path.name} is a tiled (whole-slide microscopy) segmentation: mida keeps masks on "
            "a series' slice grid, which a tiled slide pyramid does not have; it cannot be "
            "imported")
    known = known_values(seg)
    segments = _segment_items(seg, known)
    if not segments:
        raise AnnotationError(f"{path.name} describes no segments")
    frames = _frames(seg)
    seg_type = str(seg.SegmentationType).upper()
    max_frac = int(seg.get("MaximumFractionalValue") or 255)
    result = ImportResult(file_sha256=sha)
    with node.catalog().session() as s:
        mapper = store.UidMapper(s, Pseudonymizer(node.key()))
        done = previous_import(s, sha, options, path.name)
        if done is not None:
            return done
        series = _target_series(s, mapper, seg, frames, options)
        geom = geometry_of_series(s, series)
        slices = _place_frames(seg, frames, geom, mapper)
        masks = {num: np.zeros(geom.shape, dtype=bool) for num, _, _ in segments}
        for fr, k in zip(frames, slices, strict=True):
            px = _in_plane(np.asarray(seg.get_stored_frame(fr.index + 1)), fr, geom, k)
            if seg_type == "LABELMAP":
                for num in masks:
                    masks[num][k] |= px == num
                continue
            if fr.segment is None or fr.segment not in masks:
                continue
            if seg_type == "FRACTIONAL":
                masks[fr.segment][k] |= px >= FRACTIONAL_THRESHOLD * max_frac
            else:
                masks[fr.segment][k] |= px > 0
        kept = [(num, it, ex) for num, it, ex in segments if masks[num].any()]
        for num, it, _ in segments:
            if not masks[num].any():
                result.skipped.append(f"{it.key} is empty"
                                      + (" after thresholding" if seg_type == "FRACTIONAL"
                                         else "") + ": nothing to import")
        if not kept:
            return result  # every segment empty: the skipped lines say so
        row, schema, names = resolve_labels(
            s, [it for _, it, _ in kept], options, sha=sha, prefix="seg",
            description="Derived from the segments of an imported DICOM SEG")
        target = store.Target(study=s.get(store.Study, series.study_id),  # type: ignore[arg-type]
                              series=series)
        frac = ({"fractional_type": str(seg.get("SegmentationFractionalType") or ""),
                 "threshold": f">= {FRACTIONAL_THRESHOLD} x MaximumFractionalValue ({max_frac})"}
                if seg_type == "FRACTIONAL" else {})
        for (num, _, extra), label in zip(kept, names, strict=True):
            if extra.get("tracking_uid"):
                extra = {**extra, "tracking_uid": ref_uid(s, mapper, extra["tracking_uid"])}
            rev = store.create(
                s, node.store(), target=target, schema=row, label=label, reader=options.reader,
                reader_kind=options.reader_kind, status=options.status,
                data={"source_segment": num}, mask=masks[num], geometry=geom,
                author=options.author, model_version=options.model_version,
                provenance=provenance("seg", sha, segmentation_type=seg_type,
                                      sop_instance_uid=mapper.pseudonym(str(seg.SOPInstanceUID)),
                                      **extra, **frac))
            ann = s.get(Annotation, rev.annotation_id)
            assert ann is not None
            result.created.append(ann.uid)
        result.schema = schema.ref
    return result


# ============================================================ SEG export

def _algorithm(ann: Annotation, rev: AnnotationRevision) -> tuple[str, Any]:
    if ann.reader_kind == "model":
        return "AUTOMATIC", hd.AlgorithmIdentificationSequence(
            name=ann.reader, family=codes.cid7162.ArtificialIntelligence,
            version=rev.model_version or "unknown")
    return "MANUAL", None


def _hd_code(c: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=c.CodeValue, scheme_designator=c.CodingSchemeDesignator,
                              meaning=c.CodeMeaning)


def export_series(s: Session, node: Node, series: Series, reader: str,
                  rows: Sequence[tuple[Annotation, AnnotationRevision]], out: Path,
                  result: ExportResult) -> Path | None:
    """Write one BINARY SEG of ``rows`` (mask annotations of one reader on one series)."""
    geom = geometry_of_series(s, series)
    bs = node.store()
    segs: list[tuple[Annotation, AnnotationRevision, Label, np.ndarray]] = []
    schemas: dict[int, Schema] = {}
    for ann, rev in rows:
        if rev.geometry is None or rev.mask_sha256 is None:
            result.skipped.append(f"annotation {ann.uid}: revision {rev.revision} has no mask")
            continue
        saved = SeriesGeometry.from_json(rev.geometry)
        if saved.shape != geom.shape or saved.slices != geom.slices:
            result.skipped.append(
                f"annotation {ann.uid}: the series has changed since it was drawn (its grid was "
                f"{saved.shape}, now {geom.shape}); revise it on the current series first")
            continue
        mask = store.load_mask(bs, rev)
        if not mask.any():
            result.skipped.append(f"annotation {ann.uid}: the mask is empty")
            continue
        if ann.schema_id not in schemas:
            schemas[ann.schema_id] = store.schema_of(s, ann.schema_id)
        segs.append((ann, rev, schemas[ann.schema_id].label(ann.label), mask))
    if not segs:
        return None
    uids = list(dict.fromkeys(sl.sop_instance_uid for sl in geom.slices))
    sources = stored_datasets(s, node, uids)
    n_seg = len(segs)
    if len(uids) == len(geom.slices):  # single-frame images: one frame per slice, grid order
        source_images = [sources[sl.sop_instance_uid] for sl in geom.slices]
        arr = np.zeros((len(geom.slices), *geom.shape[1:], n_seg), dtype=np.uint8)
        for j, (_, _, _, mask) in enumerate(segs):
            arr[..., j] = mask
    elif len(uids) == 1:  # one multi-frame image: frames in their stored order
        source_images = [sources[uids[0]]]
        nframes = int(source_images[0].get("NumberOfFrames", 1) or 1)
        arr = np.zeros((nframes, *geom.shape[1:], n_seg), dtype=np.uint8)
        for j, (_, _, _, mask) in enumerate(segs):
            for k, sl in enumerate(geom.slices):
                arr[sl.frame - 1, ..., j] = mask[k]
    else:
        for ann, _, _, _ in segs:
            result.skipped.append(f"annotation {ann.uid}: series {series.SeriesInstanceUID} "
                                  "mixes several multi-frame images; SEG export needs "
                                  "single-frame images or one multi-frame image")
        return None
    descriptions = []
    for j, (ann, rev, lb, _) in enumerate(segs, 1):
        algo_type, algo_id = _algorithm(ann, rev)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=j, segment_label=lb.name,
            segmented_property_category=_hd_code(lb.category_code()),
            segmented_property_type=_hd_code(lb.concept),
            algorithm_type=algo_type, algorithm_identification=algo_id,
            tracking_uid=ann.uid, tracking_id=f"{lb.name} {ann.uid}"[:64],
            display_color=hex_lab(lb.colour)))
    entropy = [f"{a.uid}:{r.revision}" for a, r, _, _ in segs]
    try:
        seg = hd.seg.Segmentation(
            source_images=source_images, pixel_array=arr,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=generate_uid(entropy_srcs=["series", *entropy]),
            series_number=900, sop_instance_uid=generate_uid(entropy_srcs=["sop", *entropy]),
            instance_number=1, manufacturer="mida", manufacturer_model_name="mida",
            software_versions=__version__, device_serial_number=node.institution_code,
            content_description="mida annotations"[:64], content_label="MIDA",
            content_creator_name=person_name(reader),
            series_description=f"mida annotations by {reader}"[:64])
    except (ValueError, TypeError) as exc:
        raise AnnotationError(f"highdicom cannot build a SEG for series "
                              f"{series.SeriesInstanceUID}: {safe_error(exc)}") from None
    if "PatientOrientation" not in seg and "FrameOfReferenceUID" not in seg:
        # General Image: type 2C when the images have no patient frame (CR, DX...)
        seg.PatientOrientation = source_images[0].get("PatientOrientation") or ""
    path = out / (file_name(series.SeriesInstanceUID, reader) + ".seg.dcm")
    seg.save_as(path, enforce_file_format=True)
    result.annotations += n_seg
    return path


@quiet
def export(node: Node, options: ExportOptions) -> ExportResult:
    """One SEG per (series, reader) of the selected mask annotations (see the module docstring)."""
    result = ExportResult()
    with node.catalog().session() as s:
        rows = select_annotations(s, options, ["mask"])
        groups: dict[tuple[int, str], list[tuple[Annotation, AnnotationRevision]]] = \
            defaultdict(list)
        for ann, rev in rows:
            if ann.series_id is None:
                result.skipped.append(f"annotation {ann.uid}: a mask without a series")
                continue
            groups[(ann.series_id, ann.reader)].append((ann, rev))
        for (sid, reader), members in sorted(groups.items()):
            series = s.get(Series, sid)
            assert series is not None
            path = export_series(s, node, series, reader, members, options.out, result)
            if path is not None:
                result.files.append(path)
    return result
