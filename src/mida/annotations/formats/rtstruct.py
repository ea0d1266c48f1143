"""RT Structure Set (RTSTRUCT) import: contours rasterised onto the referenced series.

Each ROI with CLOSED_PLANAR contours becomes one **mask annotation** on the
grid of the series it was drawn on: the series of its Contour Image Sequence
images, else the series its Referenced Frame of Reference Sequence lists (UIDs
mapped through the node's pseudonyms; a missing series is an error naming its
pseudonym). The ROI's frame of reference must be the series'.

Rasterisation, per contour:

* the contour must lie on one slice of the series: every point within 0.05 mm
  of the slice's plane along the slice normal; a contour anywhere else is an
  error giving its position and the series' slice range;
* its points are projected onto that slice's row and column directions
  (pixel-centre coordinates), rounded to the nearest voxel centre, and filled
  with PIL's polygon fill, outline included: a voxel is in when its centre lies
  inside the (rounded) contour or on it;
* several contours on one slice are combined by exclusive or, so a contour
  inside another is a hole (the usual RTSTRUCT convention).

Not imported, each with a line in ``skipped``: POINT ROIs (isocentres, marker
points: a point is not a region), ROIs with only OPEN_PLANAR/OPEN_NONPLANAR
contours, ROIs without contours, and ROIs whose contours fill no voxel.

Labels: without ``--schema`` a schema ``rtstruct-<12 hex of the file's sha256>``
version 1.0.0 is derived: one mask label per ROI name (cleaned of identifying
text), with the ROI's RT ROI Identification Code when the file has one and the
generic (SCT 123037004, "Anatomical Structure") otherwise, and the ROI display
colour. With ``--schema``, ROIs are matched like SEG segments (``--label-map``
by ROI name or number, then the identification code, then the name); an ROI
matching no label is an error listing them and the schema's mask labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from mida.annotations import store
from mida.annotations.formats import ImportOptions, ImportResult, file_sha256, previous_import
from mida.annotations.formats.seg import (
    FileItem,
    clean_text,
    code_of,
    generic_code,
    known_values,
    provenance,
    quiet,
    resolve_labels,
    safe_error,
)
from mida.annotations.geometry import TOLERANCE_MM, SeriesGeometry, geometry_of_series
from mida.catalog.models import Annotation, Instance, Series, Study
from mida.deid.pseudonyms import Pseudonymizer
from mida.errors import AnnotationError, GeometryMismatchError, NotFoundError
from mida.node import Node

RTSTRUCT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
RASTERISATION = ("PIL polygon fill on the slice of the contour, vertices rounded to voxel "
                 "centres, outline included; contours of one slice combined by exclusive or")


def _read(path: Path) -> Dataset:
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:
        raise AnnotationError(f"{path.name} is not a DICOM file that can be read "
                              f"({safe_error(exc)})") from None
    if str(ds.get("SOPClassUID", "")) != RTSTRUCT_CLASS or "StructureSetROISequence" not in ds:
        raise AnnotationError(f"{path.name} is not an RT Structure Set (SOP Class "
                              f"{RTSTRUCT_CLASS} with a Structure Set ROI Sequence)")
    return ds


def _for_series(ds: Dataset) -> dict[str, list[str]]:
    """Original Frame of Reference UID -> the series UIDs the file lists under it."""
    out: dict[str, list[str]] = {}
    for fr in ds.get("ReferencedFrameOfReferenceSequence") or []:
        uids = out.setdefault(str(fr.get("FrameOfReferenceUID", "")), [])
        for study in fr.get("RTReferencedStudySequence") or []:
            for series in study.get("RTReferencedSeriesSequence") or []:
                if series.get("SeriesInstanceUID"):
                    uids.append(str(series.SeriesInstanceUID))
    return out


def _series_of(s: Session, mapper: store.UidMapper, contours: Sequence[Dataset], for_uid: str,
               listed: dict[str, list[str]], options: ImportOptions, key: str) -> Series:
    if options.series_uid:
        return mapper.series(options.series_uid)
    for ct in contours:
        for img in ct.get("ContourImageSequence") or []:
            uid = str(img.get("ReferencedSOPInstanceUID", ""))
            if not uid:
                continue
            sid = s.scalars(select(Instance.series_id).where(
                Instance.SOPInstanceUID.in_([uid, mapper.pseudonym(uid)]))).first()
            if sid is None:
                raise NotFoundError(
                    f"{key}: its contours were drawn on instance {mapper.pseudonym(uid)} "
                    "(pseudonym), which is not in the catalog: ingest the images first")
            series = s.get(Series, sid)
            assert series is not None
            return series
    candidates = listed.get(for_uid) or [u for uids in listed.values() for u in uids]
    if not candidates:
        raise AnnotationError(f"{key}: the file names no series for its frame of reference; "
                              "give the series it was drawn on with --series")
    first_error: NotFoundError | None = None
    for uid in candidates:
        try:
            return mapper.series(uid)
        except NotFoundError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise NotFoundError(f"{key}: {first_error}")


def rasterise(contours: Sequence[Dataset], geom: SeriesGeometry, key: str) -> np.ndarray:
    """The mask of an ROI's closed planar contours on ``geom`` (see the module docstring)."""
    if not geom.has_patient_frame:
        raise GeometryMismatchError(
            f"{key}: series {geom.series_uid} has no patient coordinates (image position and "
            "orientation), so contours in patient coordinates cannot be placed on it")
    normal = np.asarray(geom.direction[2], dtype=float)
    row_cos = np.asarray(geom.direction[0], dtype=float)
    col_cos = np.asarray(geom.direction[1], dtype=float)
    positions = np.asarray(geom.positions, dtype=float)
    zs = positions @ normal
    n_slices, rows, cols = geom.shape
    mask = np.zeros(geom.shape, dtype=bool)
    for ct in contours:
        pts = np.asarray([float(v) for v in ct.ContourData], dtype=float).reshape(-1, 3)
        if len(pts) < 3:
            continue  # a degenerate contour fills nothing
        z = pts @ normal
        k = int(np.argmin(np.abs(zs - float(np.mean(z)))))
        if float(np.max(np.abs(z - zs[k]))) > TOLERANCE_MM:
            raise GeometryMismatchError(
                f"{key}: a contour lies at {float(np.mean(z)):.3f} mm along the slice normal, "
                f"which is no slice of series {geom.series_uid} (its {n_slices} slice(s) lie "
                f"from {float(zs.min()):.3f} to {float(zs.max()):.3f} mm, every "
                f"{geom.spacing[0]:.3f} mm); import it onto the series it was drawn on")
        rel = pts - positions[k]
        # PIL truncates float vertices; round them to the nearest voxel centre first
        xy = [(int(c), int(r)) for c, r in zip(np.rint(rel @ row_cos / geom.spacing[2]),
                                               np.rint(rel @ col_cos / geom.spacing[1]),
                                               strict=True)]
        img = Image.new("1", (cols, rows), 0)
        ImageDraw.Draw(img).polygon(xy, fill=1, outline=1)
        mask[k] ^= np.asarray(img, dtype=bool)
    return mask


def _colour(value: Any) -> str | None:
    try:
        r, g, b = (max(0, min(255, int(v))) for v in value)
    except (TypeError, ValueError):
        return None
    return f"#{r:02x}{g:02x}{b:02x}"


@quiet
def import_path(node: Node, path: Path, options: ImportOptions) -> ImportResult:
    """Import an RT Structure Set: one mask annotation per closed-contour ROI."""
    sha = file_sha256(path)
    ds = _read(path)
    known = known_values(ds)
    contours = {int(c.ReferencedROINumber): c for c in ds.get("ROIContourSequence") or []
                if c.get("ReferencedROINumber") is not None}
    observations = {int(o.ReferencedROINumber): o for o in ds.get("RTROIObservationsSequence")
                    or [] if o.get("ReferencedROINumber") is not None}
    listed = _for_series(ds)
    result = ImportResult(file_sha256=sha)
    with node.catalog().session() as s:
        done = previous_import(s, sha, options, path.name)
        if done is not None:
            return done
        mapper = store.UidMapper(s, Pseudonymizer(node.key()))
        geoms: dict[int, SeriesGeometry] = {}
        found: list[tuple[FileItem, Series, np.ndarray, dict[str, Any]]] = []
        for roi in ds.StructureSetROISequence:
            num = int(roi.ROINumber)
            name = clean_text(roi.get("ROIName"), known)
            key = f"ROI {num} {name or '(unnamed)'!r}"
            obs = observations.get(num, Dataset())
            interpreted = str(obs.get("RTROIInterpretedType") or "").upper()
            roi_contours = list((contours.get(num) or Dataset()).get("ContourSequence") or [])
            kinds = sorted({str(c.get("ContourGeometricType", "")).upper() for c in roi_contours})
            closed = [c for c in roi_contours
                      if str(c.get("ContourGeometricType", "")).upper() == "CLOSED_PLANAR"]
            if not roi_contours:
                result.skipped.append(f"{key} has no contours: nothing to import")
                continue
            if not closed:
                what = ("a point" if kinds == ["POINT"] else "not a closed region") + \
                    f" ({', '.join(kinds)}" + (f", {interpreted}" if interpreted else "") + ")"
                result.skipped.append(f"{key} is {what}: only CLOSED_PLANAR contours make a mask")
                continue
            if len(closed) < len(roi_contours):
                result.skipped.append(f"{key}: {len(roi_contours) - len(closed)} contour(s) "
                                      "that are not CLOSED_PLANAR were left out")
            series = _series_of(s, mapper, closed, str(roi.get("ReferencedFrameOfReferenceUID",
                                                               "")), listed, options, key)
            if series.id not in geoms:
                geoms[series.id] = geometry_of_series(s, series)
            geom = geoms[series.id]
            roi_for = str(roi.get("ReferencedFrameOfReferenceUID") or "")
            if roi_for and geom.frame_of_reference_uid and geom.frame_of_reference_uid not in (
                    roi_for, mapper.pseudonym(roi_for)):
                raise GeometryMismatchError(
                    f"{key} is in frame of reference {mapper.pseudonym(roi_for)} (pseudonym) but "
                    f"series {geom.series_uid} is in {geom.frame_of_reference_uid}: the "
                    "contours' coordinates do not apply to it")
            mask = rasterise(closed, geom, key)
            if not mask.any():
                result.skipped.append(f"{key}: its contours fill no voxel of the series")
                continue
            ident = obs.get("RTROIIdentificationCodeSequence")
            concept = code_of(ident[0], known) if ident else None
            item = FileItem(key=key, name=name, type="mask", concept=concept or generic_code(),
                            generic_concept=concept is None,
                            colour=_colour((contours.get(num) or Dataset()).get(
                                "ROIDisplayColor")),
                            description=f"RT structure set ROI ({interpreted or 'unspecified'})",
                            aliases=(str(num),))
            extra = {"roi_number": num, "roi_name": name or None,
                     "interpreted_type": interpreted or None, "contours": len(closed),
                     "generation_algorithm": str(roi.get("ROIGenerationAlgorithm") or "") or None,
                     "rasterisation": RASTERISATION}
            found.append((item, series, mask, extra))
        if not found:
            return result
        row, schema, names = resolve_labels(
            s, [f[0] for f in found], options, sha=sha, prefix="rtstruct",
            description="Derived from the ROIs of an imported RT Structure Set")
        for (_, series, mask, extra), label in zip(found, names, strict=True):
            study = s.get(Study, series.study_id)
            assert study is not None
            rev = store.create(
                s, node.store(), target=store.Target(study=study, series=series), schema=row,
                label=label, reader=options.reader, reader_kind=options.reader_kind,
                status=options.status, mask=mask, geometry=geoms[series.id],
                author=options.author, model_version=options.model_version,
                provenance=provenance("rtstruct", sha,
                                      sop_instance_uid=mapper.pseudonym(str(ds.SOPInstanceUID)),
                                      **extra))
            ann = s.get(Annotation, rev.annotation_id)
            assert ann is not None
            result.created.append(ann.uid)
        result.schema = schema.ref
    return result
