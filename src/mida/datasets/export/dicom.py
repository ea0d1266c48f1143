"""DICOM: the de-identified files exactly as stored, plus the masks as DICOM SEG.

Layout::

    DICOM/<split>/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm

Every image file is the stored blob byte for byte (its sha256 is the
manifest's). Each reader's pinned mask annotations on a series become one
BINARY DICOM Segmentation (highdicom, as ``mida annotations export --format
seg`` writes it: one segment per annotation, the label's concept, category and
colour, the reader as Content Creator, model readers as AUTOMATIC), stored as
its own series in the same study folder. A SEG's UIDs derive from the
annotations' UIDs and revisions, and its dates and times are the release's
creation time, so exporting a release twice gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import io
import warnings
from collections import defaultdict
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pydicom.valuerep import DA, DT, TM

from mida import __version__
from mida.annotations.geometry import SeriesGeometry
from mida.datasets.export.base import Exporter, Record, safe
from mida.datasets.export.reader import SeriesItem

#: Patient and study attributes highdicom copies from the source images (all type 2).
TYPE2_COPIED = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                "AccessionNumber", "StudyID", "StudyDate", "StudyTime",
                "ReferringPhysicianName")


class DicomExporter(Exporter):
    """The de-identified DICOM files and DICOM SEG of the masks (module docstring)."""

    name = "dicom"
    folder = "DICOM"
    modules = ("highdicom",)
    summary = ("the de-identified DICOM files as stored, DICOM/<split>/<patient>/<study>/"
               "<series>/, and the masks as DICOM SEG")

    def series(self, item: SeriesItem) -> Record:
        m = item.meta
        study = (safe(item.split), safe(m["PatientID"]), safe(m["StudyInstanceUID"]))
        for inst, data in item.blobs:
            self.ctx.writer.write(self.path(*study, safe(item.uid),
                                            safe(inst["SOPInstanceUID"]) + ".dcm"), data)
        by_reader: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for a in item.masks():
            by_reader[a["reader"] or "unknown"].append(a)
        segs = []
        for reader in sorted(by_reader):
            seg = self._seg(item, reader, by_reader[reader])
            if seg is None:
                continue
            rel = self.path(*study, safe(seg.SeriesInstanceUID),
                            safe(seg.SOPInstanceUID) + ".dcm")
            buf = io.BytesIO()
            seg.save_as(buf, enforce_file_format=True)
            self.ctx.writer.write(rel, buf.getvalue())
            segs.append({"file": rel, "reader": reader,
                         "annotations": [a["uid"] for a in by_reader[reader]]})
        return {"instances": len(item.blobs), "seg": segs}

    def _sources(self, item: SeriesItem) -> dict[str, Dataset]:
        """The stored headers (a fresh parse: the decoded datasets stay untouched)."""
        out: dict[str, Dataset] = {}
        for inst, data in item.blobs:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            for kw in TYPE2_COPIED:  # de-identification may have removed them
                if kw not in ds:
                    setattr(ds, kw, "")
            out[inst["SOPInstanceUID"]] = ds
        return out

    def _seg(self, item: SeriesItem, reader: str, anns: list[dict[str, Any]]) -> Any:
        import highdicom as hd
        import numpy as np

        from mida.annotations.formats.seg import hex_lab, person_name, safe_error

        geo = SeriesGeometry.from_json(anns[0]["geometry"])
        same = [a for a in anns if SeriesGeometry.from_json(a["geometry"]).slices == geo.slices]
        for a in anns:
            if a not in same:
                self.ctx.note(f"dicom: annotation {a['uid']} was drawn on another grid of "
                              f"series {item.uid} than reader {reader}'s others; not in the SEG")
        uids = list(dict.fromkeys(sl.sop_instance_uid for sl in geo.slices))
        if len(uids) != len(geo.slices):
            self.ctx.note(f"dicom: series {item.uid} is multi-frame; its masks are exported in "
                          "the other formats but not as SEG")
            return None
        sources = self._sources(item)
        if any(u not in sources for u in uids):
            self.ctx.note(f"dicom: reader {reader}'s masks on series {item.uid} name images "
                          "outside the release; not exported as SEG")
            return None
        arr = np.zeros((len(uids), *geo.shape[1:], len(same)), dtype=np.uint8)
        descriptions = []
        for j, a in enumerate(same):
            arr[..., j] = item.mask(a)
            info = next(x for x in self.ctx.labels.masks if x.name == a["label"])
            lb = info.label
            model = a.get("reader_kind") == "model"
            descriptions.append(hd.seg.SegmentDescription(
                segment_number=j + 1, segment_label=lb.name,
                segmented_property_category=_code(lb.category_code()),
                segmented_property_type=_code(lb.concept),
                algorithm_type="AUTOMATIC" if model else "MANUAL",
                algorithm_identification=hd.AlgorithmIdentificationSequence(
                    name=a["reader"], family=_ai_family(),
                    version=a.get("model_version") or "unknown") if model else None,
                tracking_uid=a["uid"], tracking_id=f"{lb.name} {a['uid']}"[:64],
                display_color=hex_lab(lb.colour)))
        entropy = [f"{a['uid']}:{a['revision']}" for a in same]
        when = dt.datetime.fromisoformat(self.ctx.manifest["created"]).replace(tzinfo=None)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                seg = hd.seg.Segmentation(
                    source_images=[sources[u] for u in uids], pixel_array=arr,
                    segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                    segment_descriptions=descriptions,
                    series_instance_uid=generate_uid(entropy_srcs=["series", *entropy]),
                    series_number=900,
                    sop_instance_uid=generate_uid(entropy_srcs=["sop", *entropy]),
                    instance_number=1, manufacturer="mida", manufacturer_model_name="mida",
                    software_versions=__version__,
                    device_serial_number=str(item.meta.get("institution") or "mida"),
                    content_description="mida release annotations",
                    content_label="MIDA", content_creator_name=person_name(reader),
                    series_description=f"mida annotations by {reader}"[:64],
                    content_date=when.date(), content_time=when.time())
        except (ValueError, TypeError) as exc:
            self.ctx.note(f"dicom: no SEG for reader {reader} on series {item.uid}: "
                          f"{safe_error(exc)}")
            return None
        if "PatientOrientation" not in seg and "FrameOfReferenceUID" not in seg:
            seg.PatientOrientation = sources[uids[0]].get("PatientOrientation") or ""
        # highdicom stamps the wall clock and a random dimension UID: fix both
        seg.InstanceCreationDate = DA(when.date())
        seg.InstanceCreationTime = TM(when.time())
        equipment = seg.get("ContributingEquipmentSequence") or []
        if equipment and "ContributionDateTime" in equipment[-1]:  # highdicom's own entry
            equipment[-1].ContributionDateTime = DT(when)
        dim = generate_uid(entropy_srcs=["dimension", *entropy])
        for seq in ("DimensionOrganizationSequence", "DimensionIndexSequence"):
            for it in seg.get(seq) or []:
                if "DimensionOrganizationUID" in it:
                    it.DimensionOrganizationUID = dim
        return seg


def _code(c: Any) -> Any:
    import highdicom as hd

    return hd.sr.CodedConcept(value=c.CodeValue, scheme_designator=c.CodingSchemeDesignator,
                              meaning=c.CodeMeaning)


def _ai_family() -> Any:
    from pydicom.sr.codedict import codes

    return codes.cid7162.ArtificialIntelligence


__all__ = ["DicomExporter"]
