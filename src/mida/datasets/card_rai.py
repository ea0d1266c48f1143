"""The accountability parts of a dataset card: de-identification report and RAI fields.

:func:`deid_report` states how the release's images were de-identified (the
profiles and their versions, what each option does, the key ids, never a
key) and what release restrictions kept out. :func:`rai_fields` fills the
`Croissant RAI 1.0 <http://mlcommons.org/croissant/RAI/1.0>`_ vocabulary from
the manifest: data biases and limitations are computed with the rules given
in :func:`biases` and :func:`limitations`, and what mida cannot know (the
annotators' demographics) is said to be unknown rather than left out.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from mida.datasets.card_data import (
    Chart,
    SourceInfo,
    age_band,
    annotation_items,
    patients_of,
)
from mida.deid.profile import OPTION_CODES, Profile
from mida.deid.table import TABLE_EDITION, Option

_OPTION_EFFECTS = {
    Option.RETAIN_SAFE_PRIVATE: "private attributes listed as safe are kept; others removed",
    Option.RETAIN_UIDS: "UIDs are kept as acquired (not replaced by pseudonyms)",
    Option.RETAIN_DEVICE_IDENTITY: "device identity (serial numbers, station names) is kept",
    Option.RETAIN_INSTITUTION_IDENTITY: "institution names and addresses are kept",
    Option.RETAIN_PATIENT_CHARACTERISTICS: "patient sex, age (capped at 90 years), size and "
                                           "weight are kept",
    Option.RETAIN_LONGITUDINAL_FULL_DATES: "dates and times are kept as acquired",
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: "dates and times are shifted by a per-patient "
                                               "offset (intervals within a patient are kept)",
    Option.CLEAN_DESCRIPTORS: "descriptions and comments keep clinical words, lose names, IDs, "
                              "dates, phone numbers and addresses",
    Option.CLEAN_STRUCTURED_CONTENT: "structured report text is cleaned the same way",
    Option.CLEAN_GRAPHICS: "graphic annotation text is cleaned the same way",
}


def deid_report(manifest: dict[str, Any], src: SourceInfo,
                profiles: dict[tuple[str, str], Profile | None]) -> dict[str, Any]:
    """What de-identification the release's images went through, and what was left out.

    Key ids identify the node's pseudonymisation key; the key itself is never
    read here. A profile whose version differs from the one the node has now
    is reported with ``current_version`` so a reader sees the mismatch.
    """
    from pydicom.datadict import keyword_for_tag

    entries = []
    for d in manifest.get("deid", []):
        p = profiles.get((d["profile"], d["profile_version"]))
        entry: dict[str, Any] = {"profile": d["profile"], "profile_version": d["profile_version"],
                                 "key_id": d["key_id"], "table_edition": TABLE_EDITION}
        if p is None:
            entry["known"] = False
            entry["effects"] = ["profile not found on this node: its options are unknown"]
        else:
            entry["known"] = True
            entry["current_version"] = p.version
            entry["description"] = p.description
            entry["method_codes"] = [
                {"CodeValue": c.CodeValue, "CodeMeaning": c.CodeMeaning,
                 "CodingSchemeDesignator": c.CodingSchemeDesignator} for c in p.method_codes()]
            entry["options"] = sorted(p.options, key=lambda o: OPTION_CODES[o])
            entry["overrides"] = [
                {"tag": f"({t >> 16:04X},{t & 0xFFFF:04X})", "keyword": keyword_for_tag(t) or "",
                 "action": a} for t, a in sorted(p.overrides.items())]
            entry["effects"] = (
                [f"PS3.15 Basic Application Level Confidentiality Profile (Table E.1-1, edition "
                 f"{TABLE_EDITION}): names, identifiers, addresses, telephone numbers and other "
                 "identifying attributes are removed, emptied or replaced"]
                + ([] if Option.RETAIN_UIDS in p.options else
                   ["UIDs and PatientID are replaced by keyed pseudonyms (HMAC under the key "
                    f"{d['key_id']}; only the honest broker's vault maps them back)"])
                + [_OPTION_EFFECTS[Option(o)] for o in entry["options"]]
                + ([] if Option.RETAIN_LONGITUDINAL_FULL_DATES in p.options
                   or Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in p.options
                   else ["dates and times are removed or replaced"]))
        entries.append(entry)
    counts = manifest["counts"]
    excluded = counts.get("excluded", {"total": {}, "by_reason": {}})
    colls = {n: c.get("deid_profile") for n, c in sorted(src.collections.items())}
    return {
        "release": f"{manifest['name']}@{manifest['version']}",
        "profiles": entries,
        "collections": colls,
        "where": "at ingest, before anything was stored: the catalog and the release hold only "
                 "de-identified data",
        "pseudonymous_fields": ["PatientID", "StudyInstanceUID", "SeriesInstanceUID",
                                "SOPInstanceUID", "patient"],
        "restrictions": {
            "candidates": counts.get("candidates"), "released_series": counts["series"],
            "excluded": excluded,
            "note": "series flagged non-releasable (mida restrictions) at release time are "
                    "left out; a series flagged for two reasons counts under both",
        },
    }


# ----------------------------------------------------------------- responsible AI

def biases(manifest: dict[str, Any], cs: dict[str, Chart]) -> list[str]:
    """Skews computed from the composition, each with its figures.

    Rules: sex is flagged when one of M/F holds more than 60% of the patients
    of known sex; age when one ten-year band holds more than half the patients
    of known age; sites when one institution provides more than 70% of the
    patients (or is the only one); vendors when one manufacturer makes all
    series of known manufacturer; a classification label when one value holds
    more than 70% of its annotations; a split when it has no patient.
    """
    out: list[str] = []
    pats = patients_of(manifest["series"])
    n = len(pats)
    sexes = Counter(p.sex for p in pats.values() if p.sex in ("M", "F"))
    known = sum(sexes.values())
    if known:
        share = max(sexes.values()) / known
        desc = ", ".join(f"{s} {v} ({v / known:.0%})" for s, v in sorted(sexes.items()))
        if share > 0.6:
            out.append(f"sex imbalance: {desc} of {known} patients of known sex")
        else:
            out.append(f"sex balanced within 40-60%: {desc}")
    if known < n:
        out.append(f"sex unknown or other for {n - known} of {n} patients")
    ages = [p.age for p in pats.values() if p.age is not None]
    if ages:
        bands = Counter(age_band(a) for a in ages)
        top_band, k = max(bands.items(), key=lambda kv: (kv[1], kv[0]))
        med = statistics.median(ages)
        line = (f"age: median {med:g} years, range {min(ages)}-{max(ages)} "
                f"({len(ages)} patients of known age)")
        if k / len(ages) > 0.5 and len(ages) > 1:
            line += f"; concentrated: {k / len(ages):.0%} in {top_band}"
        if min(ages) >= 18:
            line += "; no patient under 18"
        out.append(line)
    else:
        out.append("age unknown for every patient")
    sites = Counter(p.institution for p in pats.values())
    if len(sites) == 1:
        out.append(f"single site: all {n} patients come from institution {next(iter(sites))}; "
                   "models may not generalise to other sites")
    else:
        top_site, k = max(sites.items(), key=lambda kv: (kv[1], kv[0]))
        if k / n > 0.7:
            out.append(f"site imbalance: {k / n:.0%} of patients from {top_site}")
    makers = Counter(x["Manufacturer"] for x in manifest["series"] if x.get("Manufacturer"))
    if len(makers) == 1:
        out.append(f"single vendor: every series of known manufacturer is from "
                   f"{next(iter(makers))}")
    for item in annotation_items(manifest):
        vals = item["values"]
        if item["kind"] == "classification" and vals:
            total = sum(vals.values())
            top_v, k = max(vals.items(), key=lambda kv: (kv[1], kv[0]))
            if k / total > 0.7:
                out.append(f"label imbalance: {item['label']} = {top_v} in {k / total:.0%} of "
                           f"{total} annotations")
    for name, k in cs["split"].counts:
        if k == 0:
            out.append(f"split {name} has no patient (too few patients for the requested shares)")
    return out


def limitations(manifest: dict[str, Any], table: dict[str, Any],
                report: dict[str, Any]) -> list[str]:
    """Known limits, computed: size, dates, label review, missing values, exclusions."""
    counts = manifest["counts"]
    out: list[str] = []
    if counts["patients"] < 100:
        out.append(f"small: {counts['patients']} patients; estimates from it are imprecise")
    out.append(f"dates: {table['time_range']['note']}")
    statuses = Counter(a["status"] for a in manifest["annotations"])
    if not manifest["annotations"]:
        out.append("no annotation: the release carries images only")
    elif "adjudicated" not in statuses:
        out.append("labels are not adjudicated: statuses "
                   + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    for item in table["annotation_items"]:
        if item["readers"] == 1:
            out.append(f"label {item['label']}: one reader, so no inter-reader agreement")
    missing = [f"{v['name']} {1 - v['completeness']:.0%}" for v in table["main_variables"]
               if v["completeness"] < 1]
    if missing:
        out.append("missing values (share of series): " + ", ".join(missing))
    ex = counts.get("excluded", {}).get("total", {})
    if ex.get("series"):
        reasons = ", ".join(f"{r} {v['series']} series"
                            for r, v in sorted(counts["excluded"]["by_reason"].items()))
        out.append(f"{ex['series']} series of {ex.get('patients', 0)} patients were left out by "
                   f"release restrictions ({reasons}): the composition may differ from the "
                   "source collections")
    if any(not p.get("known") for p in report["profiles"]):
        out.append("a de-identification profile of this release is unknown to this node")
    out.append("not validated for clinical use: for research and development of methods")
    return out


def _item(a: dict[str, Any]) -> str | None:
    """What an annotation is counted on: its series, or its study for study-level labels."""
    return a.get("SeriesInstanceUID") or a.get("StudyInstanceUID")


def rai_fields(manifest: dict[str, Any], table: dict[str, Any], cs: dict[str, Chart],
               report: dict[str, Any]) -> dict[str, Any]:
    """The Croissant RAI fields, each computed from the manifest and the reports."""
    anns = manifest["annotations"]
    items = table["annotation_items"]
    src = table["source"]
    sites = ", ".join(f"{i['name']} ({i['code']})" for i in src["institutions"])
    colls = ", ".join(c["name"] for c in src["collections"])
    tr = table["time_range"]
    per_item = Counter(_item(a) for a in anns)
    readers_by: dict[tuple[str, str | None], set[str]] = defaultdict(set)
    for a in anns:
        readers_by[(a["label"], _item(a))].add(a["reader"])
    readers_per = [len(v) for v in readers_by.values()]
    persons = sorted({a["reader"] for a in anns if a.get("reader_kind") != "model"})
    models = sorted({f"{a['reader']} {a.get('model_version') or ''}".strip()
                     for a in anns if a.get("reader_kind") == "model"})
    uses = []
    kinds = defaultdict(list)
    for it in items:
        kinds[it["kind"]].append(it["label"])
    verbs = {"mask": "segmentation", "bbox": "detection", "polygon": "outlining",
             "classification": "classification", "measurement": "measurement",
             "text": "report text"}
    for kind, labels in sorted(kinds.items()):
        uses.append(f"{verbs.get(kind, kind)} ({', '.join(sorted(labels))})")
    preprocessing = [f"de-identification at ingest with profile {p['profile']} version "
                     f"{p['profile_version']} (key id {p['key_id']}): " + "; ".join(p["effects"])
                     for p in report["profiles"]]
    preprocessing.append("pixel data and transfer syntax as stored at ingest; no resampling")
    preprocessing.append(f"selection: cohort expression {manifest.get('expression')!r}; "
                         "series flagged by release restrictions left out")
    split = manifest.get("split", {})
    statuses = ", ".join(manifest.get("annotation_statuses", []))
    return {
        "dataCollection": (
            f"DICOM images ingested into a mida node from {sites}, collections {colls}; the "
            f"release selects {manifest['counts']['series']} series of "
            f"{manifest['counts']['patients']} patients"),
        "dataCollectionType": ["secondary use of stored medical images (DICOM)"],
        "dataCollectionTimeframe": [x for x in (tr["start"], tr["end"]) if x],
        "dataCollectionMissingData": "; ".join(
            f"{v['name']} {v['completeness']:.0%} complete" for v in table["main_variables"]
            if v["completeness"] < 1) or "every listed variable is filled for every series",
        "dataCollectionRawData": ("the source DICOM files are not in the release: only their "
                                  "de-identified versions (sha256 in manifest.json)"),
        "dataPreprocessingProtocol": preprocessing,
        "dataAnnotationProtocol": [
            f"labels defined by schema {ref}: " + ", ".join(
                f"{lb['name']} ({lb['type']})" for lb in body.get("labels", []))
            for ref, body in sorted(manifest.get("schemas", {}).items())
        ] + [f"each annotation is pinned at its latest revision with status in {{{statuses}}}; "
             f"{len(anns)} annotations by {len(persons)} person reader(s) and {len(models)} "
             "model(s)"],
        "dataAnnotationPlatform": ["mida (annotation store, tasks and annotator)"],
        "annotationsPerItem": (
            f"{len(anns) / len(per_item):.2f} annotations per annotated item on average "
            f"({len(per_item)} items: series, or studies for study-level labels); readers per "
            f"item and label: min {min(readers_per)}, max {max(readers_per)}"
            if per_item else "no annotation"),
        "annotatorDemographics": [
            f"unknown: mida records {len(persons)} person reader(s) by name and no demographic "
            "attribute"],
        "machineAnnotationTools": models or ["none"],
        "dataBiases": biases(manifest, cs),
        "dataUseCases": ([f"training and evaluating models for {', '.join(uses)}"] if uses
                         else ["unlabelled imaging research"])
        + ["research use; not validated for clinical decision-making"],
        "dataLimitations": limitations(manifest, table, report),
        "personalSensitiveInformation": [
            "health data: medical images of patients (special category personal data)",
            *(["retained patient characteristics: sex and age (capped at 90 years)"]
              if any(Option.RETAIN_PATIENT_CHARACTERISTICS in p.get("options", [])
                     for p in report["profiles"]) else []),
            "pseudonymous identifiers (keyed pseudonyms of PatientID and UIDs); no name, birth "
            "date, address or original identifier",
            f"dates: {table['time_range']['note']}",
        ],
        "dataSocialImpact": ("may support imaging AI research; models trained on it inherit the "
                             "skews listed under data biases"),
        "dataReleaseMaintenancePlan": (
            f"releases are immutable: {manifest['name']}@{manifest['version']} never changes "
            f"(manifest sha256 fixed); corrections come as a new version, listed by `mida "
            f"release diff`; split seed {split.get('seed')} reproduces the split"),
    }



__all__ = ["biases", "deid_report", "limitations", "rai_fields"]
