"""Inter-reader agreement: kappa for labels, overlap and surface distance for masks.

Definitions (what the numbers in ``mida annotations agreement`` mean):

* **Cohen's kappa** of two readers over the cases both rated:
  ``kappa = (po - pe) / (1 - pe)`` with ``po`` the observed proportion of
  agreement and ``pe = sum_k pa(k) * pb(k)`` the agreement expected from each
  reader's own category frequencies. When ``pe == 1`` (both readers gave one
  and the same category to every case) kappa is 0/0: reported as ``None``.
* **Fleiss' kappa** over ``N`` cases each rated by the same number ``n >= 2``
  of readers (Fleiss 1971): ``P_i = (sum_j n_ij^2 - n) / (n (n - 1))``,
  ``P = mean(P_i)``, ``p_j = sum_i n_ij / (N n)``, ``Pe = sum_j p_j^2``,
  ``kappa = (P - Pe) / (1 - Pe)``; ``None`` when ``Pe == 1``.
* **Dice** ``2|A∩B| / (|A| + |B|)`` and **IoU** ``|A∩B| / |A∪B|``. Two empty
  masks agree perfectly: Dice and IoU are 1 by convention. An empty and a
  non-empty mask have Dice and IoU 0.
* **HD95** (mm): the 95th percentile (numpy's linear interpolation) of the
  symmetric surface distances, as MedPy's ``hd95`` defines it. A mask's surface
  is its voxels that have a face neighbour outside the mask (the mask minus
  its binary erosion with the 6-connected structuring element; voxels on the
  array border count as surface). For every surface voxel of A the distance
  to the nearest surface voxel of B, and for every surface voxel of B the
  distance to the nearest of A, are computed with
  :func:`scipy.ndimage.distance_transform_edt` with ``sampling`` = the
  series' ``(slice, row, column)`` spacing, so distances are in mm between
  voxel centres; HD95 is the 95th percentile of both sets together. It is
  undefined (``None``) when either mask is empty.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

# ----------------------------------------------------------------- labels

def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two equally long rating sequences (see the module docstring)."""
    if len(a) != len(b):
        raise ValueError("both readers need a rating for the same cases")
    n = len(a)
    if n == 0:
        return None
    po = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[k] * cb[k] for k in ca) / (n * n)
    if pe >= 1.0:
        return None
    return (po - pe) / (1.0 - pe)


def fleiss_kappa(table: Sequence[Sequence[int]] | np.ndarray) -> float | None:
    """Fleiss' kappa of a cases x categories count table (each row sums to the same n)."""
    t = np.asarray(table, dtype=float)
    if t.ndim != 2 or t.shape[0] == 0:
        return None
    n_per = t.sum(axis=1)
    n = float(n_per[0])
    if not np.allclose(n_per, n):
        raise ValueError("Fleiss' kappa needs the same number of ratings for every case")
    if n < 2:
        return None
    p_i = ((t * t).sum(axis=1) - n) / (n * (n - 1))
    p_bar = float(p_i.mean())
    p_j = t.sum(axis=0) / (t.shape[0] * n)
    pe = float((p_j * p_j).sum())
    if pe >= 1.0:
        return None
    return (p_bar - pe) / (1.0 - pe)


def ratings_table(ratings: Sequence[Sequence[Hashable]],
                  categories: Sequence[Hashable] | None = None) -> np.ndarray:
    """Per-case lists of ratings as a cases x categories count table."""
    cats = list(categories) if categories is not None else sorted(
        {r for case in ratings for r in case}, key=str)
    index = {c: j for j, c in enumerate(cats)}
    out = np.zeros((len(ratings), len(cats)), dtype=int)
    for i, case in enumerate(ratings):
        for r in case:
            out[i, index[r]] += 1
    return out


# ----------------------------------------------------------------- masks

def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient; 1.0 for two empty masks (see the module docstring)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union (Jaccard); 1.0 for two empty masks."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    union = int(np.logical_or(a, b).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(a, b).sum()) / union


def surface(mask: np.ndarray) -> np.ndarray:
    """The mask's voxels with a face neighbour outside it (array border counts as outside)."""
    m = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(m.ndim, 1)
    return m & ~ndimage.binary_erosion(m, structure=structure, border_value=0)


def surface_distances(a: np.ndarray, b: np.ndarray,
                      spacing: Sequence[float]) -> np.ndarray:
    """Distances (mm) from each surface voxel of ``a`` to the nearest surface voxel of ``b``."""
    sa, sb = surface(a), surface(b)
    dist_to_b = ndimage.distance_transform_edt(~sb, sampling=tuple(float(x) for x in spacing))
    return np.asarray(dist_to_b[sa], dtype=float)


def hd95(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> float | None:
    """95th percentile of the symmetric surface distances in mm; None if a mask is empty."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if not a.any() or not b.any():
        return None
    d = np.concatenate([surface_distances(a, b, spacing), surface_distances(b, a, spacing)])
    return float(np.percentile(d, 95))


@dataclass(frozen=True)
class Overlap:
    """Agreement of two masks."""

    dice: float
    iou: float
    hd95_mm: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"dice": round(self.dice, 6), "iou": round(self.iou, 6),
                "hd95_mm": None if self.hd95_mm is None else round(self.hd95_mm, 4)}


def overlap(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> Overlap:
    return Overlap(dice(a, b), iou(a, b), hd95(a, b, spacing))


def _mean(values: Sequence[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return round(float(np.mean(vs)), 6) if vs else None


# ----------------------------------------------------------------- reports

def label_agreement(ratings: Mapping[str, Mapping[Any, Hashable]],
                    categories: Sequence[Hashable] | None = None) -> dict[str, Any]:
    """Kappa for one classification label.

    ``ratings`` maps reader -> {case: value}. Cohen's kappa for every pair of
    readers over the cases both rated; Fleiss' kappa over the cases rated by
    the most common number of readers (``n``, at least 2; ties: the larger n),
    the other cases counted in ``excluded``.
    """
    readers = sorted(ratings)
    pairs = []
    for ra, rb in itertools.combinations(readers, 2):
        both = sorted(set(ratings[ra]) & set(ratings[rb]), key=str)
        a = [ratings[ra][c] for c in both]
        b = [ratings[rb][c] for c in both]
        k = cohen_kappa(a, b)
        po = sum(x == y for x, y in zip(a, b, strict=True)) / len(both) if both else None
        pairs.append({"readers": [ra, rb], "cases": len(both),
                      "kappa": None if k is None else round(k, 6),
                      "observed_agreement": None if po is None else round(po, 6)})
    per_case: dict[Any, list[Hashable]] = {}
    for r in readers:
        for case, value in ratings[r].items():
            per_case.setdefault(case, []).append(value)
    counts = Counter(len(v) for v in per_case.values() if len(v) >= 2)
    fleiss: dict[str, Any] = {"kappa": None, "cases": 0, "raters_per_case": None,
                              "excluded": len(per_case)}
    if counts:
        top = max(counts.values())
        n = max(k for k, c in counts.items() if c == top)
        used = [v for v in per_case.values() if len(v) == n]
        k = fleiss_kappa(ratings_table(used, categories))
        fleiss = {"kappa": None if k is None else round(k, 6), "cases": len(used),
                  "raters_per_case": n, "excluded": len(per_case) - len(used)}
    return {"pairs": pairs, "fleiss": fleiss}


def mask_agreement(cases: Mapping[Any, Mapping[str, np.ndarray]],
                   spacing: Mapping[Any, Sequence[float]]) -> dict[str, Any]:
    """Dice, IoU and HD95 for one mask label.

    ``cases`` maps case -> {reader: mask} (a reader who read the case and drew
    nothing gives an empty mask). Reports every reader pair per case, the pair
    means over cases, and each reader against the case's STAPLE consensus
    (:func:`mida.annotations.consensus.staple`) with STAPLE's sensitivity and
    specificity, averaged over the reader's cases.
    """
    from mida.annotations.consensus import staple

    per_case = []
    by_pair: dict[tuple[str, str], list[Overlap]] = {}
    vs: dict[str, dict[str, list[float | None]]] = {}
    for case in sorted(cases, key=str):
        masks = cases[case]
        readers = sorted(masks)
        sp = spacing[case]
        rows = []
        for ra, rb in itertools.combinations(readers, 2):
            o = overlap(masks[ra], masks[rb], sp)
            by_pair.setdefault((ra, rb), []).append(o)
            rows.append({"readers": [ra, rb], **o.as_dict()})
        entry: dict[str, Any] = {"case": case, "pairs": rows}
        if len(readers) >= 2:
            cons = staple(masks)
            entry["consensus_voxels"] = int(cons.mask.sum())
            for r in readers:
                o = overlap(masks[r], cons.mask, sp)
                acc = vs.setdefault(r, {"dice": [], "iou": [], "hd95_mm": [],
                                        "sensitivity": [], "specificity": []})
                acc["dice"].append(o.dice)
                acc["iou"].append(o.iou)
                acc["hd95_mm"].append(o.hd95_mm)
                acc["sensitivity"].append(cons.sensitivity.get(r))
                acc["specificity"].append(cons.specificity.get(r))
        per_case.append(entry)
    pairs = [{"readers": list(p), "cases": len(os_),
              "dice_mean": _mean([o.dice for o in os_]),
              "iou_mean": _mean([o.iou for o in os_]),
              "hd95_mm_mean": _mean([o.hd95_mm for o in os_]),
              "hd95_cases": sum(o.hd95_mm is not None for o in os_)}
             for p, os_ in sorted(by_pair.items())]
    consensus = {r: {"cases": len(acc["dice"]), **{f"{k}_mean": _mean(v)
                                                     for k, v in acc.items()}}
                 for r, acc in sorted(vs.items())}
    return {"pairs": pairs, "cases": per_case, "vs_consensus": consensus}
