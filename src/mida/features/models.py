"""The data of feature extraction: one value, one family's outcome, one run's summary.

Values are stored in :class:`mida.catalog.models.Feature` rows; these
dataclasses are what the extractors return before the service writes them.
Each feature name has one type: a number (``value_num``) or a word
(``value_text``), never both, so a query such as ``acq.kvp >= 100`` or
``acq.modality = 'CT'`` knows which column to read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

#: The feature families, in extraction order.
FAMILIES = ("acq", "qc", "radiomics")
#: What every stored row's ``extractor`` says, per family (radiomics adds pyradiomics' version).
EXTRACTORS = {"acq": "mida-acq 1", "qc": "mida-qc 1"}
#: A feature name: a stable identifier (lower-case words, or pyradiomics' CamelCase names).
NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,128}$")


class StoredInstance(NamedTuple):
    """What the extractors need of one catalogued instance."""

    SOPClassUID: str
    blob_sha256: str
    dataset: dict[str, Any]


@dataclass(frozen=True)
class FeatureValue:
    """One value to store: a number or a word, for the whole series or one region."""

    name: str
    value_num: float | None = None
    value_text: str | None = None
    region: str = ""
    annotation_revision_id: int | None = None

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise ValueError(f"feature name {self.name!r} is not an identifier")
        if (self.value_num is None) == (self.value_text is None):
            raise ValueError(f"feature {self.name!r} needs exactly one of a number or a word")

    @property
    def value(self) -> float | str:
        return self.value_num if self.value_num is not None else self.value_text  # type: ignore[return-value]


def num(name: str, value: float, **kw: Any) -> FeatureValue:
    return FeatureValue(name, value_num=float(value), **kw)


def text(name: str, value: str, **kw: Any) -> FeatureValue:
    return FeatureValue(name, value_text=value, **kw)


@dataclass
class FamilyResult:
    """What one extractor made of one series.

    ``skipped`` is set when the family does not apply or could not be computed
    (then ``values`` is empty and the series' old values of the family are
    removed, so the catalog never keeps values the data no longer supports);
    ``notes`` say what was left out of a partial result.
    """

    values: list[FeatureValue] = field(default_factory=list)
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Skip:
    """A series (or part of one) that a family left out, and why."""

    series_uid: str
    family: str
    reason: str


@dataclass
class ExtractResult:
    """The summary of one :func:`mida.features.extract` run."""

    series: int = 0
    done: int = 0
    rows: int = 0
    by_family: dict[str, int] = field(default_factory=dict)
    skipped: list[Skip] = field(default_factory=list)
    notes: list[Skip] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "series": self.series,
            "done": self.done,
            "rows": self.rows,
            "by_family": dict(self.by_family),
            "skipped": [vars(k) for k in self.skipped],
            "notes": [vars(k) for k in self.notes],
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class FeatureSummary:
    """One feature name across the catalog, for discovery (``mida features ls``)."""

    family: str
    name: str
    type: str  # "num" or "text"
    series: int
    rows: int
    min: float | None = None
    max: float | None = None
    values: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"family": self.family, "name": self.name, "type": self.type,
                "series": self.series, "rows": self.rows, "min": self.min, "max": self.max,
                "values": dict(self.values)}


__all__ = ["EXTRACTORS", "FAMILIES", "NAME_RE", "ExtractResult", "FamilyResult",
           "FeatureSummary", "FeatureValue", "Skip", "StoredInstance", "num", "text"]
