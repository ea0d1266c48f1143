"""The figures of a dataset card, computed from a release manifest.

Everything here is a pure function of the manifest (and of the catalog's
names for its sources, passed in as :class:`SourceInfo`): the programme
table, the composition charts, the per-label annotation items and the two
CSV tables that the Croissant record sets describe. Definitions are in
:mod:`mida.datasets.card` and ``docs/dataset-cards.md``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mida.deid.profile import Profile
from mida.deid.table import Option

LICENSE_NOT_SET = "not set: no licence is recorded for this release's collections"
"""Placeholder written where a licence belongs and none is known."""

AGE_BANDS = ("0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80-89",
             "90+")

# The columns of series.csv: name, Croissant data type, definition.
SERIES_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("SeriesInstanceUID", "sc:Text", "Series Instance UID (a pseudonym made at ingest)"),
    ("StudyInstanceUID", "sc:Text", "Study Instance UID (a pseudonym made at ingest)"),
    ("patient", "sc:Text", "Patient key: institution code / pseudonymous PatientID"),
    ("institution", "sc:Text", "Code of the institution (site) that provided the series"),
    ("collection", "sc:Text", "Collection the series was ingested into"),
    ("split", "sc:Text", "Split of the patient (train, val, test): all of a patient's "
                         "series are in one split"),
    ("Modality", "sc:Text", "DICOM Modality (0008,0060)"),
    ("BodyPartExamined", "sc:Text", "DICOM Body Part Examined (0018,0015)"),
    ("Manufacturer", "sc:Text", "DICOM Manufacturer (0008,0070)"),
    ("SeriesDescription", "sc:Text", "DICOM Series Description (0008,103E), cleaned of "
                                     "identifiers at ingest"),
    ("PatientSex", "sc:Text", "DICOM Patient's Sex (0010,0040): M, F or O"),
    ("PatientAge", "sc:Text", "DICOM Patient's Age (0010,1010), e.g. 045Y"),
    ("StudyDate", "sc:Text", "Study date as de-identified (YYYY-MM-DD; shifted per patient "
                             "when the profile shifts dates)"),
    ("instances", "sc:Integer", "Number of DICOM instances (files) in the series"),
    ("bytes", "sc:Integer", "Total size of the series' files in bytes"),
)

# The columns of annotations.csv.
ANNOTATION_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("uid", "sc:Text", "Annotation UID (stable across revisions)"),
    ("revision", "sc:Integer", "Pinned revision number of the annotation"),
    ("label", "sc:Text", "Label name in the label schema"),
    ("kind", "sc:Text", "Label type: mask, bbox, polygon, classification, measurement, text"),
    ("level", "sc:Text", "What is annotated: study, series, instance or frame"),
    ("status", "sc:Text", "Review status of the pinned revision"),
    ("reader", "sc:Text", "Reader (person or model) who made the annotation"),
    ("reader_kind", "sc:Text", "person or model"),
    ("model_version", "sc:Text", "Model version, for model readers"),
    ("schema", "sc:Text", "Label schema name@version"),
    ("StudyInstanceUID", "sc:Text", "Annotated study (pseudonymous UID)"),
    ("SeriesInstanceUID", "sc:Text", "Annotated series (pseudonymous UID), if any"),
    ("SOPInstanceUID", "sc:Text", "Annotated instance (pseudonymous UID), if any"),
    ("frame", "sc:Text", "Annotated frame number, if any"),
    ("value", "sc:Text", "Classification value or text, if any"),
    ("mask_sha256", "sc:Text", "sha256 of the mask blob (mask labels)"),
)


@dataclass(frozen=True)
class Chart:
    """One composition chart: counts of ``unit`` per group, in display order."""

    key: str
    title: str
    unit: str
    counts: tuple[tuple[str, int], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "unit": self.unit, "counts": [list(c) for c in self.counts]}


@dataclass(frozen=True)
class SourceInfo:
    """Catalog metadata of a release's sources: institutions and collections."""

    institutions: dict[str, str]  # code -> name
    collections: dict[str, dict[str, Any]]  # name -> description, institution, deid_profile
    licenses: tuple[str, ...] = ()


# ----------------------------------------------------------------- statistics

def age_years(text: str | None) -> int | None:
    """Whole years from a DICOM Age String (``045Y`` -> 45, ``006M`` -> 0); else None.

    Examples
    --------
    >>> age_years("045Y"), age_years("011M"), age_years(None), age_years("45")
    (45, 0, None, None)
    """
    if text and len(text) == 4 and text[:3].isdigit() and text[3] in "DWMY":
        return int(text[:3]) if text[3] == "Y" else 0
    return None


def age_band(years: int) -> str:
    """The ten-year band of an age; 90 and over are one band (ages are capped at 90)."""
    return AGE_BANDS[min(years // 10, 9)]


@dataclass
class PatientSummary:
    key: str
    institution: str
    collection: set[str] = field(default_factory=set)
    sex: str | None = None
    first_date: str | None = None
    age: int | None = None
    split: str = ""


def patients_of(series: list[dict[str, Any]]) -> dict[str, PatientSummary]:
    out: dict[str, PatientSummary] = {}
    # earliest study first, so the age kept is the one at the first study
    for x in sorted(series, key=lambda x: (x["StudyDate"] or "9999", x["SeriesInstanceUID"])):
        p = out.setdefault(x["patient"], PatientSummary(x["patient"], x["institution"]))
        p.collection.add(x["collection"])
        p.split = x["split"]
        if p.sex is None and x.get("PatientSex"):
            p.sex = x["PatientSex"]
        a = age_years(x.get("PatientAge"))
        if p.age is None and a is not None:
            p.age = a
        if p.first_date is None and x.get("StudyDate"):
            p.first_date = x["StudyDate"]
    return out


def _studies(series: list[dict[str, Any]]) -> dict[str, str | None]:
    """StudyInstanceUID -> de-identified StudyDate."""
    out: dict[str, str | None] = {}
    for x in series:
        if out.get(x["StudyInstanceUID"]) is None:
            out[x["StudyInstanceUID"]] = x.get("StudyDate")
    return out


def _ordered(c: Counter[str], order: Iterable[str] | None = None) -> tuple[tuple[str, int], ...]:
    if order is not None:
        keys = [k for k in order if c.get(k)] + sorted(k for k in c if k not in set(order))
        return tuple((k, c[k]) for k in keys)
    return tuple(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def charts(manifest: dict[str, Any]) -> dict[str, Chart]:
    """The composition charts of a manifest (see :class:`Card`)."""
    series = manifest["series"]
    pats = patients_of(series)
    unknown = "unknown"
    sex_names = {"M": "M (male)", "F": "F (female)", "O": "O (other)"}
    sex = Counter(sex_names.get(p.sex or "", unknown) for p in pats.values())
    age = Counter(age_band(p.age) if p.age is not None else unknown for p in pats.values())
    years = Counter((d or "")[:4] or unknown for d in _studies(series).values())
    splits = Counter(p.split for p in pats.values())
    split_order = [nm for nm, _ in manifest.get("split", {}).get("shares", [])]
    for nm in split_order:
        splits.setdefault(nm, 0)
    out = [
        Chart("modality", "Series by modality", "series",
              _ordered(Counter(x["Modality"] or unknown for x in series))),
        Chart("sex", "Patients by sex", "patients",
              _ordered(sex, [*sex_names.values(), unknown])),
        Chart("age", "Patients by age at first study (years)", "patients",
              _ordered(age, [*AGE_BANDS, unknown])),
        Chart("labels", "Annotations by label", "annotations",
              _ordered(Counter(a["label"] for a in manifest["annotations"]))),
        Chart("institution", "Patients by site (institution)", "patients",
              _ordered(Counter(p.institution for p in pats.values()))),
        Chart("collection", "Series by collection", "series",
              _ordered(Counter(x["collection"] for x in series))),
        Chart("study_year", "Studies by year (de-identified dates)", "studies",
              _ordered(years, sorted(years))),
        Chart("split", "Patients by split", "patients",
              tuple((k, splits[k]) for k in split_order) if split_order
              else _ordered(splits)),
    ]
    return {c.key: c for c in out}


def _months(start: dt.date, end: dt.date) -> int:
    return (end.year - start.year) * 12 + end.month - start.month + 1


def _value(a: dict[str, Any]) -> str | None:
    d = a.get("data")
    if isinstance(d, dict):
        for k in ("value", "text"):
            if isinstance(d.get(k), str | int | float):
                return str(d[k])
    return None


def _date_note(profiles: list[Profile | None]) -> str:
    opts = [p.options for p in profiles if p is not None]
    if len(opts) != len(profiles):
        return ("dates as de-identified; a profile of this release is unknown to this node, so "
                "whether they were shifted is not known")
    if all(Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in o for o in opts):
        return ("dates are shifted by a per-patient offset at de-identification: intervals within "
                "a patient are true, calendar dates are not")
    if all(Option.RETAIN_LONGITUDINAL_FULL_DATES in o for o in opts):
        return "dates are kept as acquired (the profile retains full dates)"
    if not any(Option.RETAIN_LONGITUDINAL_FULL_DATES in o
               or Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in o for o in opts):
        return "dates are removed or replaced at de-identification: they carry no timing"
    return "dates are kept, shifted or removed depending on the collection's profile"


def _completeness(series: list[dict[str, Any]], name: str) -> tuple[int, float]:
    filled = sum(1 for x in series if x.get(name) not in (None, ""))
    return filled, (filled / len(series) if series else 0.0)


def programme_table(manifest: dict[str, Any], src: SourceInfo,
                    profiles: list[Profile | None]) -> dict[str, Any]:
    """The programme's dataset description, computed from the manifest.

    Fields: ``name``, ``source``, ``time_range``, ``frequency``, ``volume``,
    ``main_variables``, ``format``, ``annotation_items`` (plus ``splits`` and
    ``excluded``). ``volume`` repeats the manifest's counts; the rest are
    derived from its series and annotation items (see the module docstring).
    """
    series = manifest["series"]
    counts = manifest["counts"]
    pats = patients_of(series)
    studies = _studies(series)
    dates = sorted(d for d in studies.values() if d)
    by_year = Counter(d[:4] for d in dates)
    by_month = Counter(d[:7] for d in dates)
    time_range: dict[str, Any] = {
        "start": dates[0] if dates else None, "end": dates[-1] if dates else None,
        "studies_with_date": len(dates), "studies_without_date": len(studies) - len(dates),
        "note": _date_note(profiles)}
    months = (_months(dt.date.fromisoformat(dates[0]), dt.date.fromisoformat(dates[-1]))
              if dates else 0)
    frequency = {"studies_per_year": dict(sorted(by_year.items())),
                 "studies_per_month": dict(sorted(by_month.items())),
                 "months_spanned": months,
                 "mean_studies_per_month": round(len(dates) / months, 3) if months else None}
    inst_series = Counter(x["institution"] for x in series)
    coll_series = Counter(x["collection"] for x in series)
    source = {
        "institutions": [{"code": c, "name": src.institutions.get(c, c),
                          "patients": sum(1 for p in pats.values() if p.institution == c),
                          "series": n} for c, n in sorted(inst_series.items())],
        "collections": [{"name": c, "description": src.collections.get(c, {}).get("description",
                                                                                 ""),
                         "institution": src.collections.get(c, {}).get("institution"),
                         "deid_profile": src.collections.get(c, {}).get("deid_profile"),
                         "patients": sum(1 for p in pats.values() if c in p.collection),
                         "series": n} for c, n in sorted(coll_series.items())],
    }
    volume = {k: counts[k] for k in ("patients", "studies", "series", "instances", "bytes",
                                     "annotations")}
    volume["records"] = (f"{counts['patients']} patients, {counts['studies']} studies, "
                         f"{counts['series']} series, {counts['instances']} instances")
    volume["size"] = human_bytes(counts["bytes"])
    variables = []
    for name, dtype, desc in SERIES_COLUMNS:
        distinct: int | None = None
        if name in ("instances", "bytes"):  # computed from the file list: always there
            filled, share = len(series), 1.0
        else:
            filled, share = _completeness(series, name)
            distinct = len({x.get(name) for x in series if x.get(name) not in (None, "")})
        variables.append({"name": name, "type": dtype.removeprefix("sc:"), "description": desc,
                          "filled": filled, "completeness": round(share, 4),
                          "distinct": distinct})
    sop = Counter(i["SOPClassUID"] for x in series for i in x["instances"])
    fmt = {
        "images": "DICOM Part 10 files (PS3.10), de-identified at ingest, as stored",
        "sop_classes": [{"SOPClassUID": u, "name": sop_class_name(u), "instances": n}
                        for u, n in sorted(sop.items())],
        "annotations": ("JSON items in manifest.json (pinned revisions; masks as blobs named by "
                        "sha256) and annotations.csv; mida exports NIfTI, nnU-Net, MONAI, "
                        "COCO and Hugging Face layouts (mida release export)"),
        "tables": "series.csv and annotations.csv (UTF-8, comma-separated, header row)",
        "metadata": "Croissant 1.1 JSON-LD with RAI fields; DCAT-AP JSON-LD",
    }
    return {
        "name": f"{manifest['name']}@{manifest['version']}",
        "title": manifest["name"], "version": manifest["version"],
        "description": manifest.get("description") or "",
        "created": manifest["created"],
        "source": source, "time_range": time_range, "frequency": frequency, "volume": volume,
        "main_variables": variables, "format": fmt,
        "annotation_items": annotation_items(manifest),
        "splits": counts.get("splits", {}), "excluded": counts.get("excluded", {}),
        "cohort": {"name": manifest.get("cohort"), "expression": manifest.get("expression"),
                   "annotation_statuses": manifest.get("annotation_statuses", [])},
    }


def annotation_items(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Per label: kind, schema, coded concept, counts by status, readers and values."""
    concepts: dict[tuple[str, str], dict[str, Any]] = {}
    for ref, body in manifest.get("schemas", {}).items():
        for lb in body.get("labels", []):
            concepts[(ref, lb["name"])] = lb
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for a in manifest["annotations"]:
        groups[(a["label"], a["kind"], a["schema"])].append(a)
    out = []
    for (label, kind, schema), items in sorted(groups.items()):
        lb = concepts.get((schema, label), {})
        c = lb.get("concept") or {}
        values = Counter(v for v in (_value(a) for a in items) if v is not None)
        targets = {a.get("SeriesInstanceUID") or a.get("StudyInstanceUID") for a in items}
        readers = {a["reader"] for a in items}
        out.append({
            "label": label, "kind": kind, "schema": schema,
            "concept": (f"{c.get('CodeMeaning')} ({c.get('CodingSchemeDesignator')} "
                        f"{c.get('CodeValue')})" if c else None),
            "annotations": len(items), "items_annotated": len(targets),
            "readers": len(readers),
            "model_readers": len({a["reader"] for a in items if a.get("reader_kind") == "model"}),
            "statuses": dict(sorted(Counter(a["status"] for a in items).items())),
            "values": dict(sorted(values.items())) if kind == "classification" else {},
            "levels": sorted({a["level"] for a in items}),
        })
    return out


def human_bytes(n: int) -> str:
    """``1536`` -> ``'1.5 KiB'``.

    Examples
    --------
    >>> human_bytes(512), human_bytes(1536), human_bytes(3 * 1024 ** 3)
    ('512 B', '1.5 KiB', '3.0 GiB')
    """
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def sop_class_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name != uid else "unknown SOP class"


# ----------------------------------------------------------------- tables

def _csv(columns: tuple[tuple[str, str, str], ...], rows: Iterable[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c for c, _, _ in columns])
    for r in rows:
        w.writerow(["" if r.get(c) is None else r[c] for c, _, _ in columns])
    return buf.getvalue()


def series_csv(manifest: dict[str, Any]) -> str:
    rows = ({**x, "instances": len(x["instances"]), "bytes": sum(i["size"] for i in x["instances"])}
            for x in manifest["series"])
    return _csv(SERIES_COLUMNS, rows)


def annotations_csv(manifest: dict[str, Any]) -> str:
    return _csv(ANNOTATION_COLUMNS, ({**a, "value": _value(a)} for a in manifest["annotations"]))


__all__ = ["AGE_BANDS", "ANNOTATION_COLUMNS", "LICENSE_NOT_SET", "SERIES_COLUMNS", "Chart",
           "PatientSummary", "SourceInfo", "age_band", "age_years", "annotation_items",
           "annotations_csv", "charts", "human_bytes", "patients_of", "programme_table",
           "series_csv", "sop_class_name"]
