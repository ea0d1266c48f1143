"""Consensus: majority vote with ties reported, STAPLE masks with reader performance."""

from __future__ import annotations

import numpy as np
import pytest

from mida.annotations.consensus import majority_vote, staple
from mida.errors import AnnotationError


def test_majority_vote_and_ties_are_no_consensus() -> None:
    v = majority_vote({"a": "LR-3", "b": "LR-3", "c": "LR-4"})
    assert v.agreed and v.value == "LR-3" and v.counts == {"LR-3": 2, "LR-4": 1}
    tie = majority_vote({"a": "LR-3", "b": "LR-4"})
    assert not tie.agreed and tie.value is None and tie.tie == ("LR-3", "LR-4")
    assert tie.as_dict()["tie"] == ["LR-3", "LR-4"]
    three_way = majority_vote({"a": "LR-2", "b": "LR-3", "c": "LR-4", "d": "LR-4"})
    assert three_way.value == "LR-4"
    assert majority_vote({}).value is None


def _rates(reader: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    sens = float((reader & truth).sum() / truth.sum())
    spec = float((~reader & ~truth).sum() / (~truth).sum())
    return sens, spec


def test_staple_recovers_the_consensus_and_each_readers_performance() -> None:
    truth = np.zeros((6, 12, 12), dtype=bool)
    truth[1:5, 2:10, 2:10] = True  # 256 voxels
    missed_half = truth.copy()
    missed_half[:, :, 6:] = False  # finds 128 of 256
    spill = truth.copy()
    spill[1:5, 10:12, 2:10] = True  # 64 false-positive voxels
    readers = {"a": truth, "b": spill, "c": missed_half, "d": truth}
    result = staple(readers)
    assert np.array_equal(result.mask, truth)
    assert result.method == "staple"
    for r, m in readers.items():
        sens, spec = _rates(m, truth)
        assert result.sensitivity[r] == pytest.approx(sens, abs=1e-3), r
        assert result.specificity[r] == pytest.approx(spec, abs=1e-3), r
    assert result.sensitivity["c"] == pytest.approx(0.5, abs=1e-3)
    assert result.specificity["b"] == pytest.approx(1 - 64 / (~truth).sum(), abs=1e-3)


def test_staple_threshold_is_inclusive_and_degenerate_inputs_have_answers() -> None:
    truth = np.zeros((4, 8, 8), dtype=bool)
    truth[1:3, 2:6, 2:6] = True
    empty = np.zeros_like(truth)
    split = staple({"a": truth, "b": empty})
    assert np.allclose(split.probability[truth], 0.5)  # one of two readers: p = 0.5
    assert np.array_equal(split.mask, truth)  # p >= 0.5 is in the consensus
    same = staple({"a": truth, "b": truth.copy()})
    assert np.array_equal(same.mask, truth) and same.sensitivity == {"a": 1.0, "b": 1.0}
    nothing = staple({"a": empty, "b": empty.copy()})
    assert not nothing.mask.any()
    assert nothing.sensitivity == {"a": None, "b": None}  # no foreground to measure on
    assert nothing.specificity == {"a": 1.0, "b": 1.0}
    with pytest.raises(AnnotationError, match="different grids"):
        staple({"a": truth, "b": np.zeros((4, 8, 9), dtype=bool)})
