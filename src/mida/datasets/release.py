"""Releases: immutable, versioned datasets frozen from a cohort.

``create`` evaluates a cohort, leaves out whatever a release restriction
flags (:mod:`mida.sharing.restrictions`), pins the latest revision of every
annotation on what is left, splits the patients, and writes a **manifest**:
every file with its sha256, the pinned annotation revisions, the
de-identification profiles and key ids, the code version and how much was
left out and why. The manifest is a canonical JSON blob in the node's
content-addressed store; the release row keeps its sha256. Nothing about a
release changes afterwards: editing an annotation makes a new revision, which
only a new release version picks up, and exports read the manifest, never
the live catalog.

Splits are **by patient** (all series of a patient land in one split). Each
patient gets a key ``sha256(seed, institution/PatientID)``; within each
stratum, patients are ordered by that key and the i-th of n goes to the split
whose cumulative share contains ``(i + 0.5) / n``. The same seed therefore
reproduces a split exactly, another seed reshuffles it, and a patient's key
does not depend on who else is in the release.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

import mida
from mida.annotations.store import latest_revisions
from mida.catalog.models import (
    Annotation,
    AnnotationRevision,
    Cohort,
    Collection,
    DatasetRelease,
    Instance,
    Institution,
    LabelSchema,
    Patient,
    Provenance,
    ReleaseAnnotation,
    ReleaseSeries,
    Series,
    Study,
)
from mida.datasets import cohort as cohorts
from mida.errors import ConflictError, DatasetError, NotFoundError
from mida.sharing import restrictions
from mida.storage.blobstore import BlobStore

MANIFEST_FORMAT = 1
SPLIT_NAMES = ("train", "val", "test")
DEFAULT_STATUSES = ("submitted", "reviewed", "adjudicated")
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


@dataclass(frozen=True)
class SplitSpec:
    """Split shares (percent, summing to 100), the stratifying label and the seed."""

    shares: tuple[tuple[str, float], ...] = (("train", 70.0), ("val", 15.0), ("test", 15.0))
    stratify: str | None = None
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"shares": [[n, v] for n, v in self.shares], "stratify": self.stratify,
                "seed": self.seed, "unit": "patient",
                "method": "sha256(seed, institution/PatientID) order within each stratum; "
                          "the i-th of n goes to the split holding (i + 0.5) / n"}


def parse_split(text: str, *, stratify: str | None = None, seed: int = 0) -> SplitSpec:
    """``"70/15/15"`` (train/val/test), ``"80/20"`` (train/test) or ``"100"``."""
    parts = text.split("/")
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        raise DatasetError(f"--split {text!r}: give percentages like 70/15/15") from None
    names = {1: ("train",), 2: ("train", "test"), 3: SPLIT_NAMES}.get(len(nums))
    if names is None or any(n < 0 for n in nums) or abs(sum(nums) - 100.0) > 1e-6:
        raise DatasetError(f"--split {text!r}: one to three non-negative percentages "
                           "that sum to 100 (train/val/test), e.g. 70/15/15")
    return SplitSpec(tuple(zip(names, nums, strict=True)), stratify, seed)


def patient_order_key(seed: int, patient_key: str) -> str:
    return hashlib.sha256(f"{seed}\0{patient_key}".encode()).hexdigest()


def assign_splits(strata: dict[str, str], spec: SplitSpec) -> dict[str, str]:
    """Map each patient key to a split; ``strata`` maps patient key -> stratum."""
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for key, stratum in strata.items():
        by_stratum[stratum].append(key)
    bounds: list[tuple[float, str]] = []
    acc = 0.0
    for name, share in spec.shares:
        acc += share / 100.0
        bounds.append((acc, name))
    out: dict[str, str] = {}
    for stratum in sorted(by_stratum):
        keys = sorted(by_stratum[stratum], key=lambda k: patient_order_key(spec.seed, k))
        n = len(keys)
        for i, key in enumerate(keys):
            pos = (i + 0.5) / n
            out[key] = next((nm for b, nm in bounds if pos < b), bounds[-1][1])
    return out


def check_version(version: str) -> tuple[int, int, int]:
    m = _VERSION.match(version)
    if not m:
        raise DatasetError(f"version {version!r}: use semantic versioning X.Y.Z, e.g. 1.0.0")
    return int(m[1]), int(m[2]), int(m[3])


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME@X.Y.Z`` -> (name, version); ``NAME`` -> (name, None) meaning the latest."""
    name, _, version = ref.partition("@")
    return name, (version or None)


def get(s: Session, ref: str) -> DatasetRelease:
    """The release ``NAME@X.Y.Z`` (or the latest ready version of ``NAME``)."""
    name, version = parse_ref(ref)
    rows = list(s.scalars(select(DatasetRelease).where(DatasetRelease.name == name,
                                                       DatasetRelease.status == "ready")))
    if not rows:
        raise NotFoundError(f"no release named {name!r}: see `mida release ls`")
    if version is None:
        return max(rows, key=lambda r: check_version(r.version))
    for r in rows:
        if r.version == version:
            return r
    have = ", ".join(sorted((r.version for r in rows), key=check_version))
    raise NotFoundError(f"release {name!r} has no version {version}: it has {have}")


def list_all(s: Session, name: str | None = None) -> list[DatasetRelease]:
    q = select(DatasetRelease).where(DatasetRelease.status == "ready")
    if name:
        q = q.where(DatasetRelease.name == name)
    rows = list(s.scalars(q))
    return sorted(rows, key=lambda r: (r.name, check_version(r.version)))


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def load_manifest(store: BlobStore, row: DatasetRelease) -> dict[str, Any]:
    """The release's manifest, checked against the sha256 the release row keeps."""
    if not row.manifest_sha256:
        raise DatasetError(f"release {row.name}@{row.version} has no manifest (not ready)")
    data = store.get(row.manifest_sha256, verify=True)
    out: dict[str, Any] = json.loads(data)
    return out


def _stratum(label: str, anns: list[dict[str, Any]]) -> str:
    values = [a for a in anns if a["label"] == label]
    if not values:
        return "negative"
    vals = [str(a["data"]["value"]) for a in values
            if isinstance(a.get("data"), dict) and "value" in a["data"]]
    if vals:
        c = Counter(vals)
        top = max(c.values())
        return sorted(k for k, v in c.items() if v == top)[0]
    return "positive"


def _annotations(s: Session, series_ids: list[int], study_ids: set[int],
                 statuses: Sequence[str]) -> list[tuple[Annotation, AnnotationRevision]]:
    out: list[tuple[Annotation, AnnotationRevision]] = []
    sids, stids = list(series_ids), list(study_ids)
    for i in range(0, max(len(sids), len(stids), 1), 500):
        a, b = sids[i:i + 500], stids[i:i + 500]
        if not a and not b:
            break
        q = (latest_revisions()
             .where(AnnotationRevision.status.in_(statuses),
                    or_(Annotation.series_id.in_(a),
                        and_(Annotation.series_id.is_(None), Annotation.study_id.in_(b)))))
        out += [(x, y) for x, y in s.execute(q)]
    seen: set[int] = set()
    uniq = []
    for ann, rev in sorted(out, key=lambda t: t[0].uid):
        if ann.id not in seen:
            seen.add(ann.id)
            uniq.append((ann, rev))
    return uniq


def _age(text: str | None) -> int | None:
    if text and len(text) == 4 and text[:3].isdigit():
        return int(text[:3]) if text[3] == "Y" else 0
    return None


def create(s: Session, store: BlobStore, name: str, version: str, *,
           cohort: str | None = None, expression: str | None = None,
           split: SplitSpec | None = None, statuses: Sequence[str] = DEFAULT_STATUSES,
           description: str = "", by: str | None = None,
           today: dt.date | None = None) -> DatasetRelease:
    """Freeze a cohort (saved ``cohort`` or an ``expression``) into ``name@version``.

    Returns the ready release row; the caller commits the session. The whole
    release is one transaction: a crash leaves either no release or all of it
    (an orphan manifest blob at worst, which ``mida fsck --repair`` removes).
    """
    cohorts.check_name(name, "release")
    new_v = check_version(version)
    split = split or SplitSpec()
    existing = list(s.scalars(select(DatasetRelease).where(DatasetRelease.name == name)))
    for r in existing:
        if r.version == version:
            raise ConflictError(f"release {name}@{version} exists and releases are immutable: "
                                "create a new version")
    later = [r.version for r in existing if check_version(r.version) > new_v]
    if later:
        raise ConflictError(f"release {name} already has version {max(later, key=check_version)}"
                            f": a new version must be higher than {version}")
    if (cohort is None) == (expression is None):
        raise DatasetError("give a saved cohort (--cohort NAME) or an expression (--where)")
    cohort_row: Cohort | None = None
    if cohort is not None:
        cohort_row = cohorts.get(s, cohort)
        expression = cohort_row.expression
    assert expression is not None
    candidates = cohorts.series_ids(s, expression, store=store)
    if not candidates:
        raise DatasetError(f"the cohort selects no series ({expression!r}): nothing to release")
    reasons = restrictions.reasons_by_series(s, candidates, today)
    members = [i for i in candidates if i not in reasons]

    # ---- series, studies, patients, instances
    rows = []
    for i in range(0, len(members), 500):
        rows += list(s.execute(
            select(Series, Study, Patient, Collection.name, Institution.code)
            .join(Study, Study.id == Series.study_id)
            .join(Patient, Patient.id == Study.patient_id)
            .join(Collection, Collection.id == Study.collection_id)
            .join(Institution, Institution.id == Collection.institution_id)
            .where(Series.id.in_(members[i:i + 500]))))
    if not rows:
        raise DatasetError(f"all {len(candidates)} series of the cohort are restricted "
                           f"({_reason_summary(reasons)}): nothing to release")
    rows.sort(key=lambda r: (r[4], r[2].PatientID, r[1].StudyInstanceUID,
                             r[0].SeriesInstanceUID))
    inst_by_series: dict[int, list[Instance]] = defaultdict(list)
    for i in range(0, len(members), 500):
        for inst in s.scalars(select(Instance).where(Instance.series_id.in_(members[i:i + 500]))):
            inst_by_series[inst.series_id].append(inst)
    instance_ids = [x.id for v in inst_by_series.values() for x in v]
    deid: set[tuple[str, str, str]] = set()
    for i in range(0, len(instance_ids), 500):
        deid |= {(a, b, c) for a, b, c in s.execute(
            select(Provenance.deid_profile, Provenance.deid_profile_version, Provenance.key_id)
            .where(Provenance.instance_id.in_(instance_ids[i:i + 500])).distinct())}

    # ---- annotations, pinned
    study_ids = {r[1].id for r in rows}
    anns = _annotations(s, members, study_ids, statuses)
    schema_ids = sorted({a.schema_id for a, _ in anns})
    schema_rows = list(s.scalars(select(LabelSchema).where(LabelSchema.id.in_(schema_ids))))
    schemas = {f"{x.name}@{x.version}": x.body for x in schema_rows}
    schema_ref = {x.id: f"{x.name}@{x.version}" for x in schema_rows}
    series_uid = {r[0].id: r[0].SeriesInstanceUID for r in rows}
    study_uid = {r[1].id: r[1].StudyInstanceUID for r in rows}
    ann_list: list[dict[str, Any]] = []
    anns_by_patient: dict[str, list[dict[str, Any]]] = defaultdict(list)
    patient_of_study = {r[1].id: f"{r[4]}/{r[2].PatientID}" for r in rows}
    for ann, rev in anns:
        item = {"uid": ann.uid, "revision": rev.revision, "label": ann.label, "kind": ann.kind,
                "level": ann.level, "schema": schema_ref[ann.schema_id], "reader": ann.reader,
                "reader_kind": ann.reader_kind, "status": rev.status,
                "model_version": rev.model_version,
                "StudyInstanceUID": study_uid.get(ann.study_id),
                "SeriesInstanceUID": series_uid.get(ann.series_id) if ann.series_id else None,
                "frame": ann.frame, "data": rev.data, "mask_sha256": rev.mask_sha256,
                "geometry": rev.geometry}
        if ann.instance_id is not None:
            item["SOPInstanceUID"] = s.scalar(select(Instance.SOPInstanceUID)
                                              .where(Instance.id == ann.instance_id))
        ann_list.append(item)
        anns_by_patient[patient_of_study[ann.study_id]].append(item)

    # ---- splits by patient
    patients = sorted({f"{r[4]}/{r[2].PatientID}" for r in rows})
    strata = {p: (_stratum(split.stratify, anns_by_patient[p]) if split.stratify else "all")
              for p in patients}
    if split.stratify and not any(a["label"] == split.stratify for a in ann_list):
        raise DatasetError(f"--stratify {split.stratify}: no pinned annotation has that label "
                           "(check the label name and the statuses included)")
    assignment = assign_splits(strata, split)

    # ---- manifest
    series_items = []
    total_bytes = 0
    for ser, st, pat, coll, inst_code in rows:
        pkey = f"{inst_code}/{pat.PatientID}"
        insts = sorted(inst_by_series[ser.id],
                       key=lambda x: (x.InstanceNumber or 0, x.SOPInstanceUID))
        total_bytes += sum(x.size for x in insts)
        series_items.append({
            "SeriesInstanceUID": ser.SeriesInstanceUID, "StudyInstanceUID": st.StudyInstanceUID,
            "PatientID": pat.PatientID, "patient": pkey, "institution": inst_code,
            "collection": coll, "split": assignment[pkey], "Modality": ser.Modality,
            "BodyPartExamined": ser.BodyPartExamined, "Manufacturer": ser.Manufacturer,
            "SeriesDescription": ser.SeriesDescription, "PatientSex": pat.PatientSex,
            "PatientAge": pat.PatientAge,
            "StudyDate": st.StudyDate.isoformat() if st.StudyDate else None,
            "stratum": strata[pkey],
            "instances": [{"SOPInstanceUID": x.SOPInstanceUID, "SOPClassUID": x.SOPClassUID,
                           "sha256": x.blob_sha256, "size": x.size,
                           "InstanceNumber": x.InstanceNumber} for x in insts]})
    excluded = _excluded(s, reasons)
    split_counts: dict[str, dict[str, int]] = {}
    for nm, _ in split.shares:
        its = [x for x in series_items if x["split"] == nm]
        split_counts[nm] = {"patients": len({x["patient"] for x in its}), "series": len(its)}
    counts = {"patients": len(patients), "studies": len(study_ids), "series": len(rows),
              "instances": len(instance_ids), "bytes": total_bytes,
              "annotations": len(ann_list), "splits": split_counts,
              "excluded": excluded, "candidates": len(candidates)}
    created = dt.datetime.now(dt.UTC).replace(microsecond=0)
    manifest = {
        "mida_manifest": MANIFEST_FORMAT, "name": name, "version": version,
        "created": created.isoformat(), "created_by": by, "description": description,
        "code_version": mida.__version__, "cohort": cohort, "expression": expression,
        "split": split.as_dict(), "annotation_statuses": sorted(statuses),
        "deid": [{"profile": a, "profile_version": b, "key_id": c}
                 for a, b, c in sorted(deid)],
        "counts": counts, "series": series_items, "annotations": ann_list,
        "schemas": schemas,
    }
    digest = store.put(canonical_json(manifest)).digest
    row = DatasetRelease(name=name, version=version,
                         cohort_id=cohort_row.id if cohort_row else None,
                         expression=expression, status="building", split=split.as_dict(),
                         counts=counts, manifest_sha256=digest,
                         code_version=mida.__version__, description=description,
                         created_by=by, created=created)
    s.add(row)
    s.flush()
    s.add_all(ReleaseSeries(release_id=row.id, series_id=ser.id, patient_id=pat.id,
                            split=assignment[f"{code}/{pat.PatientID}"])
              for ser, _st, pat, _c, code in rows)
    s.add_all(ReleaseAnnotation(release_id=row.id, revision_id=rev.id) for _a, rev in anns)
    row.status = "ready"
    s.flush()
    return row


def _reason_summary(reasons: dict[int, list[str]]) -> str:
    c = Counter(r for v in reasons.values() for r in v)
    return ", ".join(f"{k}: {n} series" for k, n in sorted(c.items()))


def _excluded(s: Session, reasons: dict[int, list[str]]) -> dict[str, Any]:
    """How much each reason kept out (a series flagged twice counts under both reasons)."""
    if not reasons:
        return {"total": {"patients": 0, "studies": 0, "series": 0, "instances": 0},
                "by_reason": {}}
    ids = list(reasons)
    info: dict[int, tuple[int, int, int]] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        n_inst = {sid: int(n) for sid, n in s.execute(
            select(Instance.series_id, func.count(Instance.id))
            .where(Instance.series_id.in_(chunk)).group_by(Instance.series_id))}
        for sid, study_id, patient_id in s.execute(
                select(Series.id, Study.id, Study.patient_id)
                .join(Study, Study.id == Series.study_id).where(Series.id.in_(chunk))):
            info[sid] = (study_id, patient_id, int(n_inst.get(sid, 0)))

    def summary(sids: list[int]) -> dict[str, int]:
        return {"patients": len({info[x][1] for x in sids}),
                "studies": len({info[x][0] for x in sids}), "series": len(sids),
                "instances": sum(info[x][2] for x in sids)}

    by_reason: dict[str, list[int]] = defaultdict(list)
    for sid, rs in reasons.items():
        for r in rs:
            by_reason[r].append(sid)
    return {"total": summary(ids),
            "by_reason": {r: summary(v) for r, v in sorted(by_reason.items())}}


def describe(row: DatasetRelease) -> dict[str, Any]:
    return {"release": f"{row.name}@{row.version}", "name": row.name, "version": row.version,
            "created": row.created.isoformat(), "created_by": row.created_by,
            "expression": row.expression, "split": row.split, "counts": row.counts,
            "manifest_sha256": row.manifest_sha256, "code_version": row.code_version,
            "description": row.description}


def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What changed from manifest ``a`` to manifest ``b``."""
    sa = {x["SeriesInstanceUID"]: x for x in a["series"]}
    sb = {x["SeriesInstanceUID"]: x for x in b["series"]}
    pa = {x["patient"]: x["split"] for x in a["series"]}
    pb = {x["patient"]: x["split"] for x in b["series"]}
    aa = {x["uid"]: x for x in a["annotations"]}
    ab = {x["uid"]: x for x in b["annotations"]}
    changed_files = sorted(
        u for u in set(sa) & set(sb)
        if [i["sha256"] for i in sa[u]["instances"]] != [i["sha256"] for i in sb[u]["instances"]])
    return {
        "from": f"{a['name']}@{a['version']}", "to": f"{b['name']}@{b['version']}",
        "series_added": sorted(set(sb) - set(sa)),
        "series_removed": sorted(set(sa) - set(sb)),
        "series_files_changed": changed_files,
        "patients_added": len(set(pb) - set(pa)),
        "patients_removed": len(set(pa) - set(pb)),
        "patients_moved": sorted([p, pa[p], pb[p]] for p in set(pa) & set(pb) if pa[p] != pb[p]),
        "annotations_added": sorted(set(ab) - set(aa)),
        "annotations_removed": sorted(set(aa) - set(ab)),
        "annotations_revised": sorted(
            [u, aa[u]["revision"], ab[u]["revision"]] for u in set(aa) & set(ab)
            if aa[u]["revision"] != ab[u]["revision"]),
        "expression_changed": a["expression"] != b["expression"],
        "split_changed": a["split"] != b["split"],
        "counts": {k: [a["counts"].get(k), b["counts"].get(k)]
                   for k in ("patients", "studies", "series", "instances", "bytes",
                             "annotations")},
        "excluded": [a["counts"]["excluded"]["total"], b["counts"]["excluded"]["total"]],
    }


__all__ = ["DEFAULT_STATUSES", "SPLIT_NAMES", "SplitSpec", "assign_splits", "canonical_json",
           "check_version", "create", "describe", "diff", "get", "list_all", "load_manifest",
           "parse_ref", "parse_split"]
