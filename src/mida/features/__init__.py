"""Feature parameters of series: acquisition parameters, image QC, radiomics.

Stored in the catalog's :class:`~mida.catalog.models.Feature` table, one row
per (series, family, region, name), and queried back with
:func:`features_of` and :func:`list_features`. See ``docs/features.md``.
"""

from mida.features.acquisition import acquisition_features
from mida.features.models import (
    FAMILIES,
    ExtractResult,
    FamilyResult,
    FeatureSummary,
    FeatureValue,
    Skip,
    StoredInstance,
)
from mida.features.qc import qc_features
from mida.features.service import (
    extract,
    feature_rows,
    features_of,
    list_features,
    select_series,
)

__all__ = [
    "FAMILIES",
    "ExtractResult",
    "FamilyResult",
    "FeatureSummary",
    "FeatureValue",
    "Skip",
    "StoredInstance",
    "acquisition_features",
    "extract",
    "feature_rows",
    "features_of",
    "list_features",
    "qc_features",
    "select_series",
]
