"""Consensus of several readers: majority vote for labels, STAPLE for masks.

* :func:`majority_vote` — the value most readers gave; a tie for the top is
  *no consensus* (``value`` is None, ``tie`` lists the tied values), never a
  silent pick.
* :func:`staple` — SimpleITK's :class:`~SimpleITK.STAPLEImageFilter`
  (Warfield et al. 2004) estimates each voxel's probability of being in the
  true segmentation and each reader's sensitivity and specificity. The
  consensus mask is the voxels whose probability is at least 0.5. Degenerate
  inputs where STAPLE's estimate is undefined are answered without it: when
  every reader drew the same mask (all empty included) that mask is the
  consensus, and a reader's sensitivity (specificity) is 1, or ``None`` when
  the consensus has no foreground (background) voxel to measure it on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from mida.errors import AnnotationError

#: A voxel joins the STAPLE consensus when its probability is at least this.
STAPLE_THRESHOLD = 0.5


@dataclass(frozen=True)
class Vote:
    """A majority vote: the winning value, or None with the tied values."""

    value: Hashable | None
    counts: dict[Hashable, int]
    tie: tuple[Hashable, ...] = ()

    @property
    def agreed(self) -> bool:
        return self.value is not None

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "counts": {str(k): v for k, v in self.counts.items()},
                "tie": list(self.tie)}


def majority_vote(values: Mapping[str, Hashable]) -> Vote:
    """The value given by the most readers (``values`` maps reader -> value)."""
    counts = Counter(values.values())
    if not counts:
        return Vote(None, {})
    top = max(counts.values())
    winners = sorted((v for v, c in counts.items() if c == top), key=str)
    ordered = dict(sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))))
    if len(winners) > 1:
        return Vote(None, ordered, tuple(winners))
    return Vote(winners[0], ordered)


@dataclass
class Staple:
    """A STAPLE consensus: mask, voxel probabilities, per-reader performance."""

    mask: np.ndarray
    probability: np.ndarray
    sensitivity: dict[str, float | None] = field(default_factory=dict)
    specificity: dict[str, float | None] = field(default_factory=dict)
    iterations: int = 0
    method: str = "staple"

    def performance(self) -> dict[str, dict[str, float | None]]:
        return {r: {"sensitivity": _r(self.sensitivity[r]),
                    "specificity": _r(self.specificity[r])} for r in sorted(self.sensitivity)}


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 6)


def staple(masks: Mapping[str, np.ndarray], *, threshold: float = STAPLE_THRESHOLD) -> Staple:
    """STAPLE consensus of boolean masks on one grid (``masks`` maps reader -> mask)."""
    if not masks:
        raise AnnotationError("a consensus needs at least one reader's mask")
    readers = sorted(masks)
    arrays = [np.asarray(masks[r], dtype=bool) for r in readers]
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays):
        raise AnnotationError("the readers' masks are on different grids: "
                              + ", ".join(f"{r} {a.shape}" for r, a in zip(readers, arrays,
                                                                           strict=True)))
    if all(np.array_equal(arrays[0], a) for a in arrays[1:]):
        m = arrays[0].copy()
        fg, bg = bool(m.any()), bool((~m).any())
        return Staple(mask=m, probability=m.astype(np.float64),
                      sensitivity={r: 1.0 if fg else None for r in readers},
                      specificity={r: 1.0 if bg else None for r in readers},
                      method="identical")
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1.0)
    prob_img = f.Execute([sitk.GetImageFromArray(a.astype(np.uint8)) for a in arrays])
    prob = sitk.GetArrayFromImage(prob_img).astype(np.float64)
    if not np.isfinite(prob).all():
        raise AnnotationError("STAPLE did not converge on these masks; adjudicate by "
                              "accepting one reader's annotation instead")
    sens = dict(zip(readers, (float(x) for x in f.GetSensitivity()), strict=True))
    spec = dict(zip(readers, (float(x) for x in f.GetSpecificity()), strict=True))
    return Staple(mask=prob >= threshold, probability=prob,
                  sensitivity=sens, specificity=spec,  # type: ignore[arg-type]
                  iterations=int(f.GetElapsedIterations()))
