"""Cohort expressions: what users write, what it selects, and how errors point at the text."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mida.catalog.models import Feature, Series, Study
from mida.datasets import cohort
from mida.errors import CohortSyntaxError, ConflictError, NotFoundError
from tests.datasets.conftest import Cohort


def _uids(c: Cohort, expr: str) -> set[str]:
    with c.node.catalog().session() as s:
        ids = cohort.series_ids(s, expr, store=c.node.store())
        return set(s.scalars(select(Series.SeriesInstanceUID).where(Series.id.in_(ids))))


def _of(c: Cohort, *pids: str, first_only: bool = False) -> set[str]:
    return {u for p in pids for u in (c.series[p][:1] if first_only else c.series[p])}


@pytest.mark.parametrize(("expr", "column", "words"), [
    ("modality == 'CT'", 11, "expected a value"),
    ("modality = 'CT' and", 20, "found the end of the expression"),
    ("modality = 'CT' and (age > 3", 29, "')' to close the '(' at column 21"),
    ("modalty = 'CT'", 1, "unknown field 'modalty'"),
    ("modality = 'CT' or ctx.kvp > 3", 20, "unknown feature family 'ctx'"),
    ("has_lable('x')", 1, "unknown function 'has_lable'"),
    ("modality = 'CT", 12, "close the quote"),
    ("age > 'old'", 1, "holds a number"),
    ("study_date > 2023-02-30", 14, "not a calendar date"),
    ("has_label('lesion') > 2", 21, "a condition on its own"),
    ("readers('lesion')", 18, "a comparison after readers"),
    ("has_label('lesion', state='final')", 21, "not state="),
    ("modality = 'CT' age > 3", 17, "'and', 'or' or the end"),
    ("", 1, "a condition"),
    ("age ~ 3", 5, "glob"),
])
def test_syntax_errors_point_at_the_offending_column(expr: str, column: int, words: str,
                                                     node: object) -> None:
    with pytest.raises(CohortSyntaxError) as e:
        if column and "holds a number" in words:
            from mida.node import Node

            assert isinstance(node, Node)
            with node.catalog().session() as s:
                cohort.series_ids(s, expr)
        else:
            cohort.parse(expr)
    assert e.value.column == column, str(e.value)
    assert words in str(e.value)
    # the message shows the expression and a caret under the column
    lines = str(e.value).splitlines()
    assert lines[1].strip() == expr.strip() and lines[2].index("^") - 2 == column - 1


def test_fields_and_boolean_logic_select_the_right_series(cohort_node: Cohort) -> None:
    c = cohort_node
    assert _uids(c, "modality = 'CT'") == _of(c, *(f"P{i}" for i in range(1, 8)))
    assert _uids(c, "MODALITY = 'ct'") == _uids(c, "modality = 'CT'")  # case-insensitive
    assert _uids(c, "sex = 'f' and age >= 50") == _of(c, "P2", "P6")
    assert _uids(c, "collection in ['liver-b'] and not modality = 'MR'") == _of(c, "P5", "P6",
                                                                               "P7")
    assert _uids(c, "age < 18 or age >= 75") == _of(c, "P5", "P7")
    assert _uids(c, "modality ~ 'm?'") == _of(c, "P8")
    assert _uids(c, "modality ~ '%'") == _uids(c, "modality ~ '_t'") == set()  # SQL's are data
    assert _uids(c, f"patient = '{c.patient['P3']}'") == _of(c, "P3")
    assert _uids(c, "instances = 4") == _uids(c, "modality ~ '*'")
    # a quote inside a value is data, not SQL
    assert _uids(c, "modality = \"CT' or 1=1 --\"") == set()


def test_study_date_compares_the_catalogued_de_identified_date(cohort_node: Cohort) -> None:
    c = cohort_node
    with c.node.catalog().session() as s:
        rows = s.execute(select(Series.SeriesInstanceUID, Study.StudyDate)
                         .join(Study, Study.id == Series.study_id)).all()
    dates = sorted(d for _, d in rows)
    mid = dates[len(dates) // 2]
    want = {u for u, d in rows if d >= mid}
    assert _uids(c, f"study_date >= {mid.isoformat()}") == want
    assert _uids(c, f"study_date >= '{mid.isoformat()}'") == want


def test_annotation_functions(cohort_node: Cohort) -> None:
    c = cohort_node
    lesion = _of(c, "P1", "P2", "P3", "P4", first_only=True)
    assert _uids(c, "has_label('lesion')") == lesion
    assert _uids(c, "has_label('lesion', status='adjudicated')") == set()
    assert _uids(c, "has_label('lesion', status=['submitted', 'reviewed'])") == lesion
    assert _uids(c, "has_label('lesion', reader='bob', reader_kind='person')") == lesion
    # a study-level classification selects every series of its study
    assert _uids(c, "has_label('lirads', value='LR-3')") == _of(c, "P5", "P6", "P7")
    assert _uids(c, "readers('lesion') >= 2") == lesion
    assert _uids(c, "readers('lesion') = 0 and modality = 'CT'") == (
        _of(c, *(f"P{i}" for i in range(1, 8))) - lesion)
    # bob's mask on P4 is shifted one column: the only disagreement
    assert _uids(c, "agreement('lesion') < 1") == _of(c, "P4", first_only=True)
    assert _uids(c, "agreement('lesion') = 1") == lesion - _of(c, "P4")
    assert _uids(c, "agreement('lirads') >= 0") == set()  # one reader: no agreement value


def test_feature_conditions(cohort_node: Cohort) -> None:
    c = cohort_node
    with c.node.catalog().session() as s:
        for pid, kvp in (("P1", 120.0), ("P2", 100.0)):
            sid = s.scalar(select(Series.id).where(Series.SeriesInstanceUID == c.series[pid][0]))
            s.add(Feature(series_id=sid, family="acq", name="kvp", value_num=kvp,
                          extractor="test"))
            s.add(Feature(series_id=sid, family="acq", name="reconstruction_kernel",
                          value_text="B30f" if pid == "P1" else "FC13", extractor="test"))
            s.add(Feature(series_id=sid, family="radiomics", region="lesion:x@1",
                          name="original_shape_MeshVolume", value_num=500.0 if pid == "P1"
                          else 50.0, extractor="test"))
        s.commit()
    assert _uids(c, "acq.kvp >= 110") == _of(c, "P1", first_only=True)
    assert _uids(c, "acq.kvp in [100, 120]") == _of(c, "P1", "P2", first_only=True)
    assert _uids(c, "acq.reconstruction_kernel ~ 'b*'") == _of(c, "P1", first_only=True)
    assert _uids(c, "radiomics.original_shape_MeshVolume > 100") == _of(c, "P1",
                                                                       first_only=True)
    # a series without the feature fails the test both ways
    assert _uids(c, "not acq.kvp >= 0 and modality = 'CT'") == (
        _of(c, *(f"P{i}" for i in range(1, 8))) - _of(c, "P1", "P2", first_only=True))


def test_counts_break_down_by_collection_modality_sex_and_age(cohort_node: Cohort) -> None:
    with cohort_node.node.catalog().session() as s:
        n = cohort.count(s, "modality = 'CT'").as_dict()
    assert (n["patients"], n["studies"], n["series"], n["instances"]) == (7, 9, 9, 36)
    assert n["bytes"] > 0
    assert n["by"]["collection"] == {
        "liver-a": {"patients": 4, "studies": 6, "series": 6, "instances": 24},
        "liver-b": {"patients": 3, "studies": 3, "series": 3, "instances": 12}}
    assert n["by"]["sex"]["F"]["patients"] == 3 and n["by"]["sex"]["M"]["patients"] == 4
    assert {k: v["patients"] for k, v in n["by"]["age_band"].items()} == {
        "0-17": 1, "18-39": 1, "40-64": 3, "65+": 2}
    assert n["by"]["modality"] == {"CT": {"patients": 7, "studies": 9, "series": 9,
                                          "instances": 36}}


def test_save_show_and_replace(cohort_node: Cohort) -> None:
    with cohort_node.node.catalog().session() as s:
        row, counts = cohort.save(s, "liver-lesions", "has_label('lesion')", by="alice")
        assert row.counts["series"] == counts.series == 4
        same, _ = cohort.save(s, "liver-lesions", "has_label('lesion')")
        assert same.id == row.id
        with pytest.raises(ConflictError, match="--replace"):
            cohort.save(s, "liver-lesions", "modality = 'CT'")
        row2, _ = cohort.save(s, "liver-lesions", "modality = 'CT'", replace=True)
        assert row2.id == row.id and row2.counts["series"] == 9
        with pytest.raises(NotFoundError, match="liver-lesions"):
            cohort.get(s, "nope")


def test_the_language_on_both_catalog_backends(cohort_any: Cohort) -> None:
    c = cohort_any
    expr = ("modality = 'CT' and (sex = 'f' or age >= 70) and not has_label('lirads', "
            "value='LR-3') and readers('lesion') >= 2 and patient ~ '*'")
    assert _uids(c, expr) == _of(c, "P2", "P3", "P4", first_only=True)
    with c.node.catalog().session() as s:
        n = cohort.count(s, "modality in ['CT', 'MR']")
    assert (n.patients, n.series) == (8, 10)
