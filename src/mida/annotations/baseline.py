"""The baseline pre-annotation model: an intensity threshold and its largest component.

Registered as ``threshold`` in the ``mida.models`` entry point group. It marks
the voxels whose modality value (HU on CT) lies in ``[threshold, upper]``
(``upper`` unbounded by default) and keeps the largest 6-connected component
(:func:`scipy.ndimage.label`; on equal sizes the one met first in
``[slice, row, column]`` order). A volume with no voxel in range, or whose
largest component has fewer than ``min_voxels`` voxels, gives no prediction.
The score is the share of the in-range voxels that the kept component holds.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mida.annotations.geometry import SeriesGeometry
from mida.annotations.models import Prediction


class ThresholdModel:
    """Threshold + largest connected component, producing one mask."""

    name = "threshold"
    version = "1"
    labels = ("mask",)

    def __init__(self, threshold: float = 100.0, upper: float | None = None,
                 min_voxels: int = 1) -> None:
        self.threshold = float(threshold)
        self.upper = None if upper is None else float(upper)
        self.min_voxels = int(min_voxels)
        if self.upper is not None and self.upper < self.threshold:
            raise ValueError(f"upper ({self.upper:g}) is below threshold ({self.threshold:g})")

    def params(self) -> dict[str, float | int | None]:
        return {"threshold": self.threshold, "upper": self.upper, "min_voxels": self.min_voxels}

    def predict(self, volume: np.ndarray, geometry: SeriesGeometry) -> list[Prediction]:
        inside = volume >= self.threshold
        if self.upper is not None:
            inside &= volume <= self.upper
        labelled, n = ndimage.label(inside, structure=ndimage.generate_binary_structure(3, 1))
        if n == 0:
            return []
        sizes = np.bincount(labelled.ravel())[1:]
        best = int(np.argmax(sizes)) + 1
        if int(sizes[best - 1]) < self.min_voxels:
            return []
        mask = labelled == best
        return [Prediction(mask=mask, score=float(sizes[best - 1]) / float(inside.sum()))]
