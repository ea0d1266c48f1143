"""Cohorts: a small expression language over the catalog, counted before any data moves.

A cohort is the set of **series** an expression selects. The language, in full::

    expr     := term ("or" term)*
    term     := factor ("and" factor)*
    factor   := "not" factor | "(" expr ")" | test
    test     := operand OP literal | operand "in" "[" literal ("," literal)* "]" | call
    operand  := FIELD | call
    call     := NAME "(" [arg ("," arg)*] ")"        arg := literal | NAME "=" literal-or-list
    OP       := "=" | "!=" | "<" | "<=" | ">" | ">=" | "~"      ("~" matches a glob: * and ?)
    literal  := 'text' | "text" | number | YYYY-MM-DD | true | false

Keywords (``and or not in true false``) are case-insensitive. Text compares
case-insensitively. A comparison with a missing value is false (also ``!=``).

Fields
    ``collection``, ``institution`` (its code), ``patient`` (pseudonymous
    PatientID), ``sex`` (M/F/O), ``age`` (years at the study, from PatientAge;
    under one year counts as 0), ``study_date`` (the de-identified, possibly
    shifted date: see the collection's profile), ``modality``, ``body_part``,
    ``manufacturer``, ``series_description``, ``study_description``,
    ``series_uid``, ``study_uid``, ``instances`` (number of instances in the series).
Features (``mida features extract``)
    ``acq.<name>``, ``qc.<name>``, ``radiomics.<name>``: true when the series has
    such a feature whose value passes the test (for radiomics: any region).
    Numbers compare with numbers, text with text; ``true``/``false`` are 1/0.
Annotations (the latest revision of each annotation)
    ``has_label("lesion")`` the series (or its study, for study-level labels)
    has that label; optional ``status=`` (draft, submitted, reviewed,
    adjudicated, or a list), ``reader=``, ``reader_kind=`` (person, model),
    ``value=`` (a classification value). ``readers("lesion")`` is the number of
    distinct readers of that label; ``agreement("lesion")`` their mean pairwise
    agreement: Dice for masks, the share of agreeing pairs for classifications
    (no value, so false, with fewer than two readers).

Examples
--------
>>> parse('modality = "CT" and not (age < 18 or sex = "F")').kind
'and'
>>> parse("modality == 'CT'")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
mida.errors.CohortSyntaxError: column 11: expected a value (text, number, ...), found '='
  modality == 'CT'
            ^
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import itertools
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, and_, case, cast, exists, false, func, not_, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from mida.annotations.store import latest_revisions
from mida.catalog.dicomquery import like_pattern
from mida.catalog.models import (
    Annotation,
    AnnotationRevision,
    Cohort,
    Collection,
    Feature,
    Instance,
    Institution,
    Patient,
    Series,
    Study,
)
from mida.errors import CohortSyntaxError, ConflictError, DatasetError, NotFoundError

Literal = str | float | bool | dt.date
KEYWORDS = {"and", "or", "not", "in", "true", "false"}
OPERATORS = ("<=", ">=", "!=", "=", "<", ">", "~")
FEATURE_FAMILIES = ("acq", "qc", "radiomics")
STATUSES = ("draft", "submitted", "reviewed", "adjudicated")
FUNCTIONS = {"has_label": "boolean", "readers": "number", "agreement": "number"}
AGE_BANDS = ((0, 17, "0-17"), (18, 39, "18-39"), (40, 64, "40-64"), (65, 200, "65+"))

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\w.]))
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.]))
  | (?P<string>'[^']*'|"[^"]*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
  | (?P<op><=|>=|!=|=|<|>|~)
  | (?P<punct>[()\[\],])
""", re.VERBOSE)


@dataclass(frozen=True)
class Token:
    kind: str  # date number string name op punct end
    text: str
    column: int  # 1-based

    @property
    def word(self) -> str:
        return self.text.lower() if self.kind == "name" else ""


def tokenize(expr: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            ch = expr[pos]
            hint = " (close the quote)" if ch in "'\"" else ""
            raise CohortSyntaxError(f"unexpected character {ch!r}{hint}", expr, pos + 1)
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append(Token(kind, m.group(), pos + 1))
        pos = m.end()
    out.append(Token("end", "", len(expr) + 1))
    return out


@dataclass(frozen=True)
class Node:
    """A parsed expression: ``and``/``or`` (children), ``not``, ``cmp``, ``in``, ``call``."""

    kind: str
    column: int
    children: tuple[Node, ...] = ()
    field: str = ""
    op: str = ""
    values: tuple[Literal, ...] = ()
    call: Call | None = None


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Literal, ...]
    kwargs: tuple[tuple[str, Literal | tuple[Literal, ...]], ...]
    column: int


class _Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.toks = tokenize(expr)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def fail(self, expected: str, tok: Token | None = None) -> CohortSyntaxError:
        tok = tok or self.tok
        found = "the end of the expression" if tok.kind == "end" else repr(tok.text)
        return CohortSyntaxError(f"expected {expected}, found {found}", self.expr, tok.column)

    def take(self) -> Token:
        t = self.tok
        self.i += 1
        return t

    def expect_punct(self, ch: str, what: str) -> Token:
        if self.tok.kind == "punct" and self.tok.text == ch:
            return self.take()
        raise self.fail(what)

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise self.fail("a condition, e.g. modality = 'CT'")
        node = self.or_()
        if self.tok.kind != "end":
            raise self.fail("'and', 'or' or the end of the expression")
        return node

    def or_(self) -> Node:
        col = self.tok.column
        items = [self.and_()]
        while self.tok.word == "or":
            self.take()
            items.append(self.and_())
        return items[0] if len(items) == 1 else Node("or", col, tuple(items))

    def and_(self) -> Node:
        col = self.tok.column
        items = [self.factor()]
        while self.tok.word == "and":
            self.take()
            items.append(self.factor())
        return items[0] if len(items) == 1 else Node("and", col, tuple(items))

    def factor(self) -> Node:
        t = self.tok
        if t.word == "not":
            self.take()
            return Node("not", t.column, (self.factor(),))
        if t.kind == "punct" and t.text == "(":
            self.take()
            inner = self.or_()
            self.expect_punct(")", "')' to close the '(' at column " + str(t.column))
            return inner
        return self.test()

    def test(self) -> Node:
        t = self.tok
        if t.kind != "name" or t.word in KEYWORDS:
            raise self.fail("a field (e.g. modality), a feature (e.g. acq.kvp) or a function "
                            "(e.g. has_label('lesion'))")
        self.take()
        call: Call | None = None
        if self.tok.kind == "punct" and self.tok.text == "(":
            call = self.call(t)
        else:
            _check_field(t, self.expr)
        if self.tok.kind == "op":
            op = self.take()
            if call is not None and FUNCTIONS[call.name] != "number":
                raise CohortSyntaxError(f"{call.name}() is a condition on its own; it cannot be "
                                        f"compared with {op.text!r}", self.expr, op.column)
            value = self.literal()
            if op.text == "~" and not isinstance(value, str):
                raise CohortSyntaxError("'~' matches text against a glob: give a quoted pattern",
                                        self.expr, op.column)
            return Node("cmp", t.column, field=_field_name(t) if call is None else "",
                        op=op.text, values=(value,), call=call)
        if self.tok.word == "in":
            if call is not None:
                raise self.fail("a comparison")
            self.take()
            return Node("in", t.column, field=_field_name(t), values=self.list_())
        if call is not None:
            if FUNCTIONS[call.name] == "number":
                raise self.fail(f"a comparison after {call.name}(...), e.g. >= 2")
            return Node("call", t.column, call=call)
        raise self.fail("an operator (= != < <= > >= ~) or 'in'")

    def call(self, name_tok: Token) -> Call:
        name = name_tok.text.lower()
        if name not in FUNCTIONS:
            raise CohortSyntaxError(f"unknown function {name_tok.text!r}: the functions are "
                                    f"{', '.join(sorted(FUNCTIONS))}", self.expr, name_tok.column)
        self.take()  # (
        args: list[Literal] = []
        kwargs: list[tuple[str, Literal | tuple[Literal, ...]]] = []
        if not (self.tok.kind == "punct" and self.tok.text == ")"):
            while True:
                if self.tok.kind == "name" and self.toks[self.i + 1].text == "=":
                    key = self.take()
                    self.take()
                    if key.text not in ("status", "reader", "reader_kind", "value"):
                        raise CohortSyntaxError(
                            f"{name}() takes status=, reader=, reader_kind= or value=, "
                            f"not {key.text}=", self.expr, key.column)
                    val: Literal | tuple[Literal, ...] = (
                        self.list_() if self.tok.text == "[" else self.literal())
                    kwargs.append((key.text, val))
                else:
                    args.append(self.literal())
                if self.tok.kind == "punct" and self.tok.text == ",":
                    self.take()
                    continue
                break
        self.expect_punct(")", f"')' to close {name}(")
        if len(args) != 1 or not isinstance(args[0], str):
            raise CohortSyntaxError(f"{name}() takes one label name in quotes, e.g. "
                                    f"{name}('lesion')", self.expr, name_tok.column)
        if name != "has_label" and kwargs:
            raise CohortSyntaxError(f"{name}() takes only the label", self.expr, name_tok.column)
        return Call(name, tuple(args), tuple(kwargs), name_tok.column)

    def list_(self) -> tuple[Literal, ...]:
        self.expect_punct("[", "'[' to start a list, e.g. ['CT', 'MR']")
        items = [self.literal()]
        while self.tok.kind == "punct" and self.tok.text == ",":
            self.take()
            items.append(self.literal())
        self.expect_punct("]", "',' or ']' to close the list")
        return tuple(items)

    def literal(self) -> Literal:
        t = self.tok
        if t.kind == "string":
            self.take()
            return t.text[1:-1]
        if t.kind == "number":
            self.take()
            return float(t.text)
        if t.kind == "date":
            self.take()
            try:
                return dt.date.fromisoformat(t.text)
            except ValueError:
                raise CohortSyntaxError(f"{t.text} is not a calendar date", self.expr,
                                        t.column) from None
        if t.word in ("true", "false"):
            self.take()
            return t.word == "true"
        raise self.fail("a value (text, number, date, true or false)")


def _field_name(t: Token) -> str:
    """Fields are case-insensitive; feature names keep their case (original_shape_MeshVolume)."""
    if "." in t.text:
        fam, name = t.text.split(".", 1)
        return f"{fam.lower()}.{name}"
    return t.text.lower()


def _check_field(t: Token, expr: str) -> None:
    name = t.text.lower()
    if "." in name:
        fam = name.split(".", 1)[0]
        if fam not in FEATURE_FAMILIES:
            raise CohortSyntaxError(f"unknown feature family {fam!r}: use "
                                    f"{', '.join(f + '.<name>' for f in FEATURE_FAMILIES)}",
                                    expr, t.column)
        return
    if name not in FIELDS:
        raise CohortSyntaxError(f"unknown field {t.text!r}: the fields are "
                                f"{', '.join(sorted(FIELDS))}", expr, t.column)


def parse(expr: str) -> Node:
    """Parse a cohort expression; :class:`CohortSyntaxError` points at the offending column."""
    return _Parser(expr).parse()


# ----------------------------------------------------------------- compile to SQL

def _age_years() -> ColumnElement[Any]:
    a = Patient.PatientAge
    return case((a.like("%Y"), cast(func.substr(a, 1, 3), Integer)),
                (or_(a.like("%M"), a.like("%W"), a.like("%D")), 0), else_=None)


_instances = (select(func.count(Instance.id)).where(Instance.series_id == Series.id)
              .correlate(Series).scalar_subquery())

FIELDS: dict[str, tuple[Any, str]] = {
    "collection": (Collection.name, "text"),
    "institution": (Institution.code, "text"),
    "patient": (Patient.PatientID, "text"),
    "sex": (Patient.PatientSex, "text"),
    "age": (_age_years(), "number"),
    "study_date": (Study.StudyDate, "date"),
    "modality": (Series.Modality, "text"),
    "body_part": (Series.BodyPartExamined, "text"),
    "manufacturer": (Series.Manufacturer, "text"),
    "series_description": (Series.SeriesDescription, "text"),
    "study_description": (Study.StudyDescription, "text"),
    "series_uid": (Series.SeriesInstanceUID, "text"),
    "study_uid": (Study.StudyInstanceUID, "text"),
    "instances": (_instances, "number"),
}


def _compare(col: Any, op: str, value: Literal, kind: str, expr: str,
             column: int) -> ColumnElement[bool]:
    if kind == "text":
        if not isinstance(value, str):
            raise CohortSyntaxError("this field holds text: quote the value", expr, column)
        lc = func.lower(col)
        v = value.lower()
        if op == "~":
            return lc.like(like_pattern(value.lower()), escape="!")
        ops = {"=": lc == v, "!=": lc != v, "<": lc < v, "<=": lc <= v, ">": lc > v,
               ">=": lc >= v}
        return ops[op]
    if kind == "date":
        if isinstance(value, str):
            try:
                value = dt.date.fromisoformat(value)
            except ValueError:
                raise CohortSyntaxError("a date is written YYYY-MM-DD", expr, column) from None
        if not isinstance(value, dt.date):
            raise CohortSyntaxError("this field holds a date: write YYYY-MM-DD", expr, column)
    elif kind == "number" and (isinstance(value, bool) or not isinstance(value, float)):
        raise CohortSyntaxError("this field holds a number", expr, column)
    if op == "~":
        raise CohortSyntaxError("'~' works on text fields only", expr, column)
    ops2 = {"=": col == value, "!=": col != value, "<": col < value, "<=": col <= value,
            ">": col > value, ">=": col >= value}
    return ops2[op]


def _feature_test(name: str, op: str, values: tuple[Literal, ...], expr: str,
                  column: int) -> ColumnElement[bool]:
    family, fname = name.split(".", 1)
    conds: list[ColumnElement[bool]] = []
    for v in values:
        if isinstance(v, bool):
            v = 1.0 if v else 0.0
        if isinstance(v, dt.date):
            raise CohortSyntaxError("features hold numbers or text, not dates", expr, column)
        col: Any = Feature.value_num if isinstance(v, float) else Feature.value_text
        conds.append(_compare(col, op, v, "number" if isinstance(v, float) else "text",
                              expr, column))
    return exists(select(Feature.id).where(
        Feature.series_id == Series.id, Feature.family == family, Feature.name == fname,
        or_(*conds)))


def _ann_where(label: str) -> list[ColumnElement[bool]]:
    return [Annotation.label == label,
            or_(Annotation.series_id == Series.id,
                and_(Annotation.series_id.is_(None), Annotation.study_id == Study.id))]


@dataclass
class _Compiler:
    s: Session
    expr: str
    store: Any = None
    scores: dict[str, dict[int, float]] = field(default_factory=dict)

    def compile(self, n: Node) -> ColumnElement[bool]:
        if n.kind == "and":
            return and_(*(self.compile(c) for c in n.children))
        if n.kind == "or":
            return or_(*(self.compile(c) for c in n.children))
        if n.kind == "not":
            return not_(self.compile(n.children[0]))
        if n.kind == "call":
            assert n.call is not None
            return self.has_label(n.call)
        if n.call is not None:  # readers(...) / agreement(...) compared
            return self.numeric_call(n)
        if "." in n.field:
            op = "=" if n.kind == "in" else n.op
            return _feature_test(n.field, op, n.values, self.expr, n.column)
        col, kind = FIELDS[n.field]
        if n.kind == "in":
            return or_(*(_compare(col, "=", v, kind, self.expr, n.column) for v in n.values))
        return _compare(col, n.op, n.values[0], kind, self.expr, n.column)

    def has_label(self, c: Call) -> ColumnElement[bool]:
        label = str(c.args[0])
        kw = dict(c.kwargs)
        if "value" in kw:
            ids = self._series_with_value(label, kw)
            return Series.id.in_(ids) if ids else false()
        q = latest_revisions().with_only_columns(Annotation.id).where(*_ann_where(label))
        q = self._filter_kw(q, kw, c)
        return exists(q)

    def _filter_kw(self, q: Any, kw: dict[str, Any], c: Call) -> Any:
        if "status" in kw:
            st = kw["status"] if isinstance(kw["status"], tuple) else (kw["status"],)
            bad = [x for x in st if x not in STATUSES]
            if bad:
                raise CohortSyntaxError(f"unknown status {bad[0]!r}: choose from "
                                        f"{', '.join(STATUSES)}", self.expr, c.column)
            q = q.where(AnnotationRevision.status.in_(st))
        if "reader" in kw:
            q = q.where(Annotation.reader == str(kw["reader"]))
        if "reader_kind" in kw:
            q = q.where(Annotation.reader_kind == str(kw["reader_kind"]))
        return q

    def _series_with_value(self, label: str, kw: dict[str, Any]) -> set[int]:
        want = kw["value"] if isinstance(kw["value"], tuple) else (kw["value"],)
        want_s = {str(w).lower() for w in want}
        out: set[int] = set()
        for _ann, rev, series_id in self._latest_of(label, kw):
            v = rev.data.get("value")
            if v is not None and str(v).lower() in want_s:
                out.add(series_id)
        return out

    def _latest_of(self, label: str, kw: dict[str, Any] | None = None
                   ) -> list[tuple[Annotation, AnnotationRevision, int]]:
        """Latest revisions of ``label`` with the series each counts for."""
        q = (latest_revisions().add_columns(Series.id)
             .join(Study, Study.id == Annotation.study_id)
             .join(Series, or_(Series.id == Annotation.series_id,
                               and_(Annotation.series_id.is_(None),
                                    Series.study_id == Study.id)))
             .where(Annotation.label == label))
        if kw:
            q = self._filter_kw(q, kw, Call("has_label", (label,), (), 1))
        return [(a, r, int(sid)) for a, r, sid in self.s.execute(q)]

    def numeric_call(self, n: Node) -> ColumnElement[bool]:
        c = n.call
        assert c is not None
        label = str(c.args[0])
        v = n.values[0]
        if isinstance(v, bool) or not isinstance(v, float):
            raise CohortSyntaxError(f"{c.name}() is a number: compare it with a number",
                                    self.expr, n.column)
        if c.name == "readers":
            cnt = (select(func.count(func.distinct(Annotation.reader)))
                   .where(*_ann_where(label)).correlate(Series, Study).scalar_subquery())
            return _compare(cnt, n.op, v, "number", self.expr, n.column)
        scores = self._agreement(label)
        op = n.op
        ok = {sid for sid, val in scores.items() if _num_op(val, op, v)}
        return Series.id.in_(ok) if ok else false()

    def _agreement(self, label: str) -> dict[int, float]:
        if label in self.scores:
            return self.scores[label]
        from mida.annotations import agreement
        from mida.annotations.store import load_mask

        by_series: dict[int, dict[str, AnnotationRevision]] = defaultdict(dict)
        for ann, rev, sid in self._latest_of(label):
            by_series[sid].setdefault(ann.reader, rev)
        scores: dict[int, float] = {}
        store = self.store
        for sid, revs in by_series.items():
            if len(revs) < 2:
                continue
            pairs = list(itertools.combinations(sorted(revs), 2))
            vals: list[float] = []
            for a, b in pairs:
                ra, rb = revs[a], revs[b]
                if ra.mask_sha256 and rb.mask_sha256:
                    if store is None:
                        raise DatasetError("agreement() on masks needs the node's store")
                    vals.append(agreement.dice(load_mask(store, ra), load_mask(store, rb)))
                else:
                    vals.append(1.0 if ra.data.get("value") == rb.data.get("value") else 0.0)
            scores[sid] = sum(vals) / len(vals)
        self.scores[label] = scores
        return scores


def _num_op(a: float, op: str, b: float) -> bool:
    return {"=": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b,
            ">=": a >= b}[op]


def _base() -> Any:
    return (select(Series.id).join(Study, Study.id == Series.study_id)
            .join(Patient, Patient.id == Study.patient_id)
            .join(Collection, Collection.id == Study.collection_id)
            .join(Institution, Institution.id == Collection.institution_id))


def series_ids(s: Session, expr: str, *, collection_ids: frozenset[int] | None = None,
               store: Any = None) -> list[int]:
    """The ids of the series ``expr`` selects, ascending (see the module docstring).

    ``collection_ids`` limits the search to those collections (a user's grants);
    ``store`` (the node's BlobStore) is needed only by ``agreement()`` on masks.
    """
    where = _Compiler(s, expr, store).compile(parse(expr))
    q = _base().where(where)
    if collection_ids is not None:
        q = q.where(Study.collection_id.in_(collection_ids) if collection_ids else false())
    return [int(i) for i in s.scalars(q.order_by(Series.id))]


def _band(age: int | None) -> str:
    if age is None:
        return "unknown"
    for lo, hi, name in AGE_BANDS:
        if lo <= age <= hi:
            return name
    return "unknown"


@dataclass
class CohortCounts:
    """How much a cohort holds, and its make-up; computed from the catalog only."""

    expression: str
    patients: int = 0
    studies: int = 0
    series: int = 0
    instances: int = 0
    bytes: int = 0
    by: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"expression": self.expression, "patients": self.patients,
                "studies": self.studies, "series": self.series, "instances": self.instances,
                "bytes": self.bytes, "by": self.by}


def counts_of(s: Session, ids: Iterable[int], expression: str = "") -> CohortCounts:
    """Totals and breakdowns (collection, modality, sex, age band) of a set of series."""
    ids = list(ids)
    out = CohortCounts(expression)
    patients: set[int] = set()
    studies: set[int] = set()
    sets: dict[tuple[str, str, str], set[int]] = defaultdict(set)
    nums: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        # instances and bytes of this chunk's series only (not a group-by of the whole table)
        inst = (select(Instance.series_id, func.count(Instance.id).label("n"),
                       func.coalesce(func.sum(Instance.size), 0).label("b"))
                .where(Instance.series_id.in_(chunk)).group_by(Instance.series_id).subquery())
        rows = s.execute(
            select(Series.id, Study.id, Patient.id, Collection.name, Series.Modality,
                   Patient.PatientSex, _age_years(), func.coalesce(inst.c.n, 0),
                   func.coalesce(inst.c.b, 0))
            .join(Study, Study.id == Series.study_id)
            .join(Patient, Patient.id == Study.patient_id)
            .join(Collection, Collection.id == Study.collection_id)
            .outerjoin(inst, inst.c.series_id == Series.id)
            .where(Series.id.in_(chunk)))
        for _sid, study_id, patient_id, coll, mod, sex, age, n, b in rows:
            out.series += 1
            out.instances += int(n)
            out.bytes += int(b)
            patients.add(patient_id)
            studies.add(study_id)
            keys = {"collection": coll or "unknown", "modality": mod or "unknown",
                    "sex": (sex or "").upper() or "unknown", "age_band": _band(age)}
            for dim, k in keys.items():
                sets[(dim, k, "patients")].add(patient_id)
                sets[(dim, k, "studies")].add(study_id)
                nums[(dim, k)]["series"] += 1
                nums[(dim, k)]["instances"] += int(n)
    out.patients, out.studies = len(patients), len(studies)
    by: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    for (dim, k), c in sorted(nums.items()):
        by[dim][k] = {"patients": len(sets[(dim, k, "patients")]),
                      "studies": len(sets[(dim, k, "studies")]),
                      "series": c["series"], "instances": c["instances"]}
    out.by = dict(by)
    return out


def count(s: Session, expr: str, *, collection_ids: frozenset[int] | None = None,
          store: Any = None) -> CohortCounts:
    """Count what ``expr`` selects, broken down, without moving any data."""
    return counts_of(s, series_ids(s, expr, collection_ids=collection_ids, store=store), expr)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(name: str, what: str = "cohort") -> str:
    if not _NAME.match(name):
        raise DatasetError(f"{what} name {name!r}: use letters, digits, '.', '_' or '-' "
                           "(up to 128, starting with a letter or digit)")
    return name


def save(s: Session, name: str, expr: str, *, description: str = "", by: str | None = None,
         replace: bool = False, store: Any = None) -> tuple[Cohort, CohortCounts]:
    """Save ``expr`` under ``name`` with its counts at saving time."""
    check_name(name)
    counts = count(s, expr, store=store)
    row = s.scalar(select(Cohort).where(Cohort.name == name))
    if row is not None:
        if row.expression == expr:
            return row, counts
        if not replace:
            raise ConflictError(f"cohort {name!r} exists with another expression "
                                f"({row.expression!r}); use --replace to change it")
        row.expression, row.description = expr, description or row.description
        row.counts = counts.as_dict()
    else:
        row = Cohort(name=name, expression=expr, description=description,
                     counts=counts.as_dict(), created_by=by)
        s.add(row)
    s.flush()
    return row, counts


def get(s: Session, name: str) -> Cohort:
    row = s.scalar(select(Cohort).where(Cohort.name == name))
    if row is None:
        names = list(s.scalars(select(Cohort.name).order_by(Cohort.name)))
        hint = f": saved cohorts are {', '.join(names)}" if names else ""
        raise NotFoundError(f"no cohort {name!r}{hint}")
    return row


def list_all(s: Session) -> list[Cohort]:
    return list(s.scalars(select(Cohort).order_by(Cohort.name)))


def matches_glob(value: str, pattern: str) -> bool:
    """The ``~`` operator on a Python string (same semantics as the SQL translation)."""
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


__all__ = ["FIELDS", "FUNCTIONS", "CohortCounts", "Node", "count", "counts_of", "get",
           "list_all", "matches_glob", "parse", "save", "series_ids", "tokenize"]
