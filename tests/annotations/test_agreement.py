"""Agreement statistics against values worked out by hand (the issue's acceptance test)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import SimpleITK as sitk

from mida.annotations import agreement as agr

# Fleiss (1971) as tabulated on Wikipedia ("Fleiss' kappa", worked example):
# 10 subjects, 14 raters each, 5 categories; kappa = 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def _two_readers() -> tuple[list[str], list[str], float]:
    """10 cases as a 2x2 table: both yes 4, a yes/b no 2, a no/b yes 1, both no 3."""
    cells = {("yes", "yes"): 4, ("yes", "no"): 2, ("no", "yes"): 1, ("no", "no"): 3}
    a, b = [], []
    for (va, vb), n in cells.items():
        a += [va] * n
        b += [vb] * n
    n = sum(cells.values())
    po = (cells["yes", "yes"] + cells["no", "no"]) / n  # 7/10
    a_yes = (cells["yes", "yes"] + cells["yes", "no"]) / n  # 6/10
    b_yes = (cells["yes", "yes"] + cells["no", "yes"]) / n  # 5/10
    pe = a_yes * b_yes + (1 - a_yes) * (1 - b_yes)  # 0.5
    return a, b, (po - pe) / (1 - pe)  # 0.4


def test_cohen_kappa_matches_the_2x2_table_worked_by_hand() -> None:
    a, b, expected = _two_readers()
    assert expected == pytest.approx(0.4)
    assert agr.cohen_kappa(a, b) == pytest.approx(expected)
    assert agr.cohen_kappa(b, a) == pytest.approx(expected)
    assert agr.cohen_kappa(a, a) == pytest.approx(1.0)
    # both readers say "yes" to every case: chance agreement is 1, kappa is 0/0
    assert agr.cohen_kappa(["yes"] * 5, ["yes"] * 5) is None
    if importlib.util.find_spec("sklearn") is not None:  # pragma: no cover - not a dependency
        from sklearn.metrics import cohen_kappa_score

        assert agr.cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def test_fleiss_kappa_reproduces_the_textbook_value() -> None:
    assert agr.fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.210, abs=5e-4)
    with pytest.raises(ValueError, match="same number of ratings"):
        agr.fleiss_kappa([[1, 1], [3, 0]])


def test_label_report_pairs_readers_and_picks_cases_for_fleiss() -> None:
    # Rebuild the Fleiss table as 14 readers' ratings, plus an 11th case only two rated.
    ratings: dict[str, dict[int, str]] = {f"r{i:02d}": {} for i in range(14)}
    for case, row in enumerate(FLEISS_TABLE):
        raters = iter(sorted(ratings))
        for cat, n in enumerate(row):
            for _ in range(n):
                ratings[next(raters)][case] = f"c{cat}"
    ratings["r00"][10] = "c0"
    ratings["r01"][10] = "c1"
    rep = agr.label_agreement(ratings, [f"c{j}" for j in range(5)])
    assert rep["fleiss"]["cases"] == 10 and rep["fleiss"]["excluded"] == 1
    assert rep["fleiss"]["raters_per_case"] == 14
    assert rep["fleiss"]["kappa"] == pytest.approx(0.210, abs=5e-4)
    assert len(rep["pairs"]) == 14 * 13 // 2
    # the two-reader table through the report: cases both rated, kappa and agreement
    a, b, expected = _two_readers()
    two = agr.label_agreement({"ann": dict(enumerate(a)), "bob": dict(enumerate(b)),
                               "cat": {0: "yes"}})
    ab = next(p for p in two["pairs"] if p["readers"] == ["ann", "bob"])
    assert ab["cases"] == 10 and ab["kappa"] == pytest.approx(expected)
    assert ab["observed_agreement"] == pytest.approx(0.7)
    ac = next(p for p in two["pairs"] if p["readers"] == ["ann", "cat"])
    assert ac["cases"] == 1


def test_dice_and_iou_of_two_boxes_with_known_overlap() -> None:
    a = np.zeros((8, 20, 20), dtype=bool)
    b = np.zeros_like(a)
    a[0:4, 0:10, 0:10] = True  # 4 x 10 x 10 = 400 voxels
    b[2:6, 0:10, 5:15] = True  # 400 voxels; overlap: slices 2-3, all 10 rows, columns 5-9
    overlap = 2 * 10 * 5
    assert agr.dice(a, b) == pytest.approx(2 * overlap / (400 + 400))  # 0.25
    assert agr.iou(a, b) == pytest.approx(overlap / (400 + 400 - overlap))  # 1/7
    empty = np.zeros_like(a)
    assert agr.dice(empty, empty) == 1.0 and agr.iou(empty, empty) == 1.0  # convention
    assert agr.dice(a, empty) == 0.0 and agr.iou(empty, a) == 0.0
    assert agr.hd95(a, empty, (1, 1, 1)) is None and agr.hd95(empty, empty, (1, 1, 1)) is None


@pytest.mark.parametrize(("axis", "shift", "expected_mm"), [
    (0, 1, 2.5),  # one slice along the 2.5 mm slice axis
    (2, 2, 1.6),  # two columns of 0.8 mm
])
def test_hd95_of_shifted_cubes_is_the_shift_in_mm(axis: int, shift: int,
                                                  expected_mm: float) -> None:
    spacing = (2.5, 0.8, 0.8)
    a = np.zeros((12, 16, 16), dtype=bool)
    a[2:8, 4:10, 4:10] = True  # a 6-voxel cube: 152 surface voxels (216 - 4**3)
    b = np.roll(a, shift, axis=axis)
    # The face of A that B left behind (36 voxels) lies exactly `shift` voxels from B's
    # nearest voxel, and B's leading face likewise from A: 72 of the 304 symmetric surface
    # distances (24 % > 5 %) equal the shift, and every other one is smaller, so the 95th
    # percentile is the shift itself.
    assert int(agr.surface(a).sum()) == 152
    assert agr.hd95(a, b, spacing) == pytest.approx(expected_mm)
    assert agr.hd95(b, a, spacing) == pytest.approx(expected_mm)
    d = agr.surface_distances(a, b, spacing)
    assert d.max() == pytest.approx(expected_mm)
    assert int(np.isclose(d, expected_mm).sum()) >= 36
    # The maximum agrees with SimpleITK's Hausdorff distance on the same grid.
    imgs = []
    for m in (a, b):
        img = sitk.GetImageFromArray(m.astype(np.uint8))
        img.SetSpacing(spacing[::-1])  # SimpleITK spacing is (x, y, z) = (column, row, slice)
        imgs.append(img)
    h = sitk.HausdorffDistanceImageFilter()
    h.Execute(*imgs)
    assert h.GetHausdorffDistance() == pytest.approx(expected_mm)


def test_mask_report_per_pair_per_case_and_against_staple() -> None:
    truth = np.zeros((6, 12, 12), dtype=bool)
    truth[1:5, 2:10, 2:10] = True
    half = truth.copy()
    half[:, :, 6:] = False
    cases = {1: {"a": truth, "b": truth, "c": half},
             2: {"a": truth, "b": truth, "c": truth}}
    rep = agr.mask_agreement(cases, {1: (2.0, 1.0, 1.0), 2: (2.0, 1.0, 1.0)})
    by = {tuple(p["readers"]): p for p in rep["pairs"]}
    assert by["a", "b"]["dice_mean"] == 1.0 and by["a", "b"]["cases"] == 2
    d_ac = agr.dice(truth, half)  # 2 * 128 / (256 + 128) = 2/3
    assert d_ac == pytest.approx(2 / 3)
    assert by["a", "c"]["dice_mean"] == pytest.approx((d_ac + 1.0) / 2, abs=1e-6)
    case1 = next(c for c in rep["cases"] if c["case"] == 1)
    assert {tuple(p["readers"]): p["dice"] for p in case1["pairs"]}["b", "c"] == pytest.approx(
        d_ac, abs=1e-6)
    assert case1["consensus_voxels"] == int(truth.sum())
    vs = rep["vs_consensus"]
    assert vs["a"]["dice_mean"] == 1.0
    assert vs["c"]["dice_mean"] == pytest.approx((d_ac + 1.0) / 2, abs=1e-6)
    assert vs["c"]["sensitivity_mean"] < vs["a"]["sensitivity_mean"]
