"""Extract feature families for series and store them in the catalog; query them back.

:func:`extract` runs the extractors on each selected series and writes
:class:`~mida.catalog.models.Feature` rows: family ``acq``
(:mod:`mida.features.acquisition`), ``qc`` (:mod:`mida.features.qc`) and, on
request, ``radiomics`` (:mod:`mida.features.radiomics`).

Extracting again *replaces* a series' rows of each family it runs (a value
the data no longer supports disappears; a family that now skips the series
leaves no rows). Each series is one transaction: the session is committed
after every series, so an interrupted run leaves every series with either
its old or its new set of values, never a mix.

:func:`features_of` and :func:`list_features` read the values back; the
cohort language reads the same table (``family``, ``name``, ``value_num``,
``value_text``, ``region``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from mida.catalog.models import Collection, Feature, Instance, Series, Study
from mida.errors import MidaError, NotFoundError
from mida.features.acquisition import acquisition_features
from mida.features.models import (
    EXTRACTORS,
    FAMILIES,
    ExtractResult,
    FamilyResult,
    FeatureSummary,
    Skip,
    StoredInstance,
)
from mida.features.qc import qc_features
from mida.storage.blobstore import BlobStore

#: ``progress(done, total, series_uid)`` is called after each series.
Progress = Callable[[int, int, str], None]


def select_series(s: Session, *, collection: str | None = None,
                  series_uids: Sequence[str] | None = None) -> list[Series]:
    """The series of a collection, the given series, or (neither given) every series.

    Raises
    ------
    NotFoundError
        The collection does not exist, or a given series is not in the
        catalog (or not in the given collection).
    """
    q = select(Series).order_by(Series.id)
    if collection is not None:
        coll = s.scalars(select(Collection).where(Collection.name == collection)).first()
        if coll is None:
            known = sorted(s.scalars(select(Collection.name)))
            raise NotFoundError(f"no collection {collection!r}; known: "
                                f"{', '.join(known) or 'none'} (see 'mida ls studies')")
        q = q.join(Study, Study.id == Series.study_id).where(Study.collection_id == coll.id)
    if series_uids:
        wanted = list(dict.fromkeys(series_uids))
        q = q.where(Series.SeriesInstanceUID.in_(wanted))
        rows = list(s.scalars(q))
        missing = set(wanted) - {r.SeriesInstanceUID for r in rows}
        if missing:
            where = f" in collection {collection!r}" if collection is not None else ""
            raise NotFoundError(f"series {sorted(missing)[0]} is not in the catalog{where}; "
                                "series UIDs are the catalog's pseudonyms ('mida ls series')")
        return rows
    return list(s.scalars(q))


def _instances(s: Session, series: Series) -> list[StoredInstance]:
    rows = s.execute(select(Instance.SOPClassUID, Instance.blob_sha256, Instance.dataset)
                     .where(Instance.series_id == series.id).order_by(Instance.id)).all()
    return [StoredInstance(c, b, js or {}) for c, b, js in rows]


def _run_family(family: str, s: Session, store: BlobStore, series: Series,
                instances: list[StoredInstance]) -> FamilyResult:
    try:
        if family == "acq":
            return acquisition_features([i.dataset for i in instances],
                                        series.SeriesInstanceUID)
        if family == "qc":
            return qc_features(store, instances, series.SeriesInstanceUID)
        from mida.features.radiomics import radiomics_features

        return radiomics_features(s, store, series)
    except MidaError as exc:
        return FamilyResult(skipped=str(exc))


def replace_family(s: Session, series: Series, family: str, result: FamilyResult,
                   extractor: str) -> int:
    """Replace the series' rows of ``family`` with ``result``'s values (no commit)."""
    s.execute(delete(Feature).where(Feature.series_id == series.id, Feature.family == family))
    for v in result.values:
        s.add(Feature(series_id=series.id, family=family, region=v.region, name=v.name,
                      value_num=v.value_num, value_text=v.value_text,
                      annotation_revision_id=v.annotation_revision_id, extractor=extractor))
    return len(result.values)


def extract(s: Session, store: BlobStore, *, collection: str | None = None,
            series_uids: list[str] | None = None, radiomics: bool = False, qc: bool = True,
            progress: Progress | None = None) -> ExtractResult:
    """Extract and store feature values of the selected series.

    Parameters
    ----------
    s
        A catalog session. It is **committed after each series** (one
        transaction per series); pass a session with no other pending work.
    store
        The node's blob store (QC and radiomics read pixels and masks).
    collection, series_uids
        Which series: a collection's, the listed ones (within ``collection``
        when both are given), or every series when neither is given.
    radiomics
        Also compute pyradiomics features per mask annotation.
    qc
        Compute the pixel QC family (reads every frame; the slow part).
    progress
        Called as ``progress(done, total, series_uid)`` after each series.

    Returns
    -------
    ExtractResult
        Counts, rows written per family, and every skip with its reason.

    Examples
    --------
    >>> from mida.features import extract, features_of  # doctest: +SKIP
    >>> with node.catalog().session() as s:  # doctest: +SKIP
    ...     r = extract(s, node.store(), collection="liver-ct", radiomics=True)
    ...     features_of(s, uid)["acq"][""]["kvp"]
    120.0
    """
    t0 = time.perf_counter()
    targets = select_series(s, collection=collection, series_uids=series_uids)
    families = [f for f in FAMILIES if (f != "qc" or qc) and (f != "radiomics" or radiomics)]
    extractors = dict(EXTRACTORS)
    if radiomics:
        from mida.features.radiomics import extractor_name

        extractors["radiomics"] = extractor_name()
    res = ExtractResult(series=len(targets), by_family=dict.fromkeys(families, 0))
    ids = [t.id for t in targets]
    s.commit()  # nothing of the caller's may ride in a series' transaction
    for n, series_id in enumerate(ids, 1):
        series = s.get(Series, series_id)
        assert series is not None
        uid = series.SeriesInstanceUID
        instances = _instances(s, series)
        wrote = 0
        try:
            for family in families:
                fr = _run_family(family, s, store, series, instances)
                if fr.skipped:
                    res.skipped.append(Skip(uid, family, fr.skipped))
                res.notes += [Skip(uid, family, note) for note in fr.notes]
                k = replace_family(s, series, family, fr, extractors[family])
                res.by_family[family] += k
                wrote += k
            s.commit()
        except BaseException:
            s.rollback()
            raise
        res.rows += wrote
        res.done += wrote > 0
        if progress is not None:
            progress(n, len(ids), uid)
    res.seconds = time.perf_counter() - t0
    return res


# ----------------------------------------------------------------- queries

def features_of(s: Session, series_uid: str, *,
                family: str | None = None) -> dict[str, dict[str, dict[str, float | str]]]:
    """A series' stored values as ``{family: {region: {name: value}}}``.

    Whole-series families (``acq``, ``qc``) have the one region ``""``;
    radiomics has one region per annotated mask revision. A value is a float
    (``value_num``) or a string (``value_text``).

    Raises
    ------
    NotFoundError
        The series is not in the catalog.
    """
    out: dict[str, dict[str, dict[str, float | str]]] = {}
    for f in _stored(s, series_uid, family):
        value: float | str | None = f.value_num if f.value_num is not None else f.value_text
        if value is not None:
            out.setdefault(f.family, {}).setdefault(f.region, {})[f.name] = value
    return out


def feature_rows(s: Session, series_uid: str, *, family: str | None = None) -> list[dict[str, Any]]:
    """A series' stored values as flat rows (family, region, name, value, extractor)."""
    return [{"family": f.family, "region": f.region, "name": f.name,
             "value": f.value_num if f.value_num is not None else f.value_text,
             "extractor": f.extractor}
            for f in _stored(s, series_uid, family)]


def _stored(s: Session, series_uid: str, family: str | None) -> list[Feature]:
    """A series' feature rows in (family, region, name) order; NotFoundError without it."""
    series = s.scalars(select(Series).where(Series.SeriesInstanceUID == series_uid)).first()
    if series is None:
        raise NotFoundError(f"no series {series_uid} in the catalog; series UIDs are the "
                            "catalog's pseudonyms ('mida ls series')")
    q = select(Feature).where(Feature.series_id == series.id)
    if family is not None:
        q = q.where(Feature.family == family)
    return list(s.scalars(q.order_by(Feature.family, Feature.region, Feature.name)))


def list_features(s: Session, family: str | None = None, *,
                  top_values: int = 10) -> list[FeatureSummary]:
    """Every feature name in the catalog with how many series have it and its range.

    Numbers get ``min`` and ``max``; words get their ``top_values`` most
    common values with counts. Sorted by family (acq, qc, radiomics), then name.
    """
    q = (select(Feature.family, Feature.name, func.count(),
                func.count(Feature.series_id.distinct()), func.min(Feature.value_num),
                func.max(Feature.value_num), func.count(Feature.value_num))
         .group_by(Feature.family, Feature.name))
    if family is not None:
        q = q.where(Feature.family == family)
    text_counts: dict[tuple[str, str], dict[str, int]] = {}
    tq = (select(Feature.family, Feature.name, Feature.value_text, func.count())
          .where(Feature.value_text.is_not(None))
          .group_by(Feature.family, Feature.name, Feature.value_text))
    if family is not None:
        tq = tq.where(Feature.family == family)
    for fam, name, value, n in s.execute(tq).all():
        text_counts.setdefault((fam, name), {})[str(value)] = int(n)
    order = {f: i for i, f in enumerate(FAMILIES)}
    out = []
    for fam, name, rows, series, lo, hi, nnum in s.execute(q).all():
        words = text_counts.get((fam, name), {})
        top = dict(sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:top_values])
        out.append(FeatureSummary(
            family=fam, name=name, type="num" if nnum else "text", series=int(series),
            rows=int(rows), min=float(lo) if lo is not None else None,
            max=float(hi) if hi is not None else None, values=top))
    return sorted(out, key=lambda f: (order.get(f.family, 99), f.family, f.name))


__all__ = ["Progress", "extract", "feature_rows", "features_of", "list_features",
           "replace_family", "select_series"]
