"""CSV labels: classifications, measurements and free-text findings by UID.

One row is one label on one target. Columns (header names are matched without
regard to case or surrounding spaces; comma, semicolon or tab separated, UTF-8
with or without a byte-order mark):

``SOPInstanceUID`` (+ ``frame``), ``SeriesInstanceUID``, ``StudyInstanceUID``, ``AccessionNumber``
    the target (``frame`` optional, from 1, for multi-frame instances); each
    row needs at least one. The most specific one given is used (instance,
    then series, then study, then accession). UIDs may be the
    hospital's (mapped through the node's keyed pseudonyms, the same mapping
    the images went through) or the catalog's.
``label``
    a label of the schema (``--schema``), or a name ``--label-map`` maps to one.
``value``
    a classification's value (one of the label's values, or ``present`` /
    ``absent`` when it lists none) or a measurement's number.
``unit``
    optional; a measurement's unit, which must be the label's (``mm``...).
``text``
    a text label's finding (``value`` is used when there is no ``text``
    column); it is de-identified before it is stored.
``reader``
    optional; who gave the label, instead of ``--reader``.

A label applies at its schema level: a study-level classification given on a
row that names an instance or series goes to that instance's study, a
series-level one to its series (so a per-image CSV can carry a per-study
diagnosis on every row). Rows that repeat the same label, value and reader for
the same target are one annotation; rows that give the same target different
values are an error. Box, polygon and mask labels are not CSV labels.

Accession numbers: mida's ``basic`` and ``default`` de-identification profiles
empty Accession Number (PS3.15 Basic Profile action Z), and the linkage vault
holds patient identifiers only, so an original accession cannot be mapped to a
stored study. An ``AccessionNumber`` value is matched as it is against the
catalog's Study.AccessionNumber, which only finds studies ingested with a
profile that keeps (or replaces) the element; otherwise the row is an error
that says to give the StudyInstanceUID instead.

Errors name the CSV line number and column and never repeat a cell's content
(a UID is shown only as its pseudonym); every problem of the file is listed
(up to 20) and nothing of the file is stored. The file itself is never stored:
records keep its sha256, the format, the tool and the line. Importing the same
file again creates nothing for readers that already imported it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mida import __version__
from mida.annotations import store
from mida.annotations.formats import ImportOptions, ImportResult, already_imported, file_sha256
from mida.annotations.schema import Label, Schema
from mida.catalog.models import Annotation, Study
from mida.deid.pseudonyms import Pseudonymizer
from mida.errors import AnnotationError, NotFoundError, SchemaError

FORMAT = "csv"
COLUMNS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "frame",
           "AccessionNumber", "label", "value", "unit", "text", "reader")
TARGET_COLUMNS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "AccessionNumber")
MAX_ERRORS = 20


@dataclass
class _Row:
    line: int
    label: Label
    target: store.Target
    data: dict[str, Any]
    reader: str


def _read(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AnnotationError(f"{path.name}: not UTF-8 text; save the CSV as UTF-8") from None
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise AnnotationError(f"{path.name}: the file is empty") from None
    canon = {c.lower(): c for c in COLUMNS}
    names = [canon.get(h.strip().lower(), "") for h in header]
    present = set(names) - {""}
    if "label" not in present:
        raise AnnotationError(f"{path.name}: the header has no 'label' column (columns: "
                              + ", ".join(COLUMNS) + ")")
    if not present & set(TARGET_COLUMNS):
        raise AnnotationError(f"{path.name}: the header names no target column: give one of "
                              + ", ".join(TARGET_COLUMNS))
    if not present & {"value", "text"}:
        raise AnnotationError(f"{path.name}: the header has neither a 'value' nor a 'text' column")
    dup = sorted({n for n in names if n and names.count(n) > 1})
    if dup:
        raise AnnotationError(f"{path.name}: columns repeat: {', '.join(dup)}")
    rows = []
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        rows.append((reader.line_num, {n: c.strip() for n, c in zip(names, cells, strict=False)
                                       if n}))
    return sorted(present), rows


def _by_accession(s: Session, value: str) -> Study:
    studies = list(s.scalars(select(Study).where(Study.AccessionNumber == value).limit(2)))
    if len(studies) == 1:
        return studies[0]
    if len(studies) > 1:
        raise NotFoundError("this accession number matches several studies (the "
                            "de-identification profile replaced it with one value): give "
                            "StudyInstanceUID")
    raise NotFoundError("no stored study has this accession number: mida's de-identification "
                        "profiles empty Accession Number on ingest and the linkage vault keeps "
                        "patient identifiers only, so an accession cannot be mapped to a study; "
                        "give StudyInstanceUID (the hospital's UID is mapped through the "
                        "node's pseudonyms)")


def _target(s: Session, mapper: store.UidMapper, cells: dict[str, str],
            column: str) -> store.Target:
    """The row's target from ``column`` (see :func:`_target_column`)."""
    if column == "SOPInstanceUID":
        frame_cell = cells.get("frame") or ""
        frame = None
        if frame_cell:
            if not frame_cell.isdigit() or int(frame_cell) < 1:
                raise AnnotationError("frame: a frame number is a whole number from 1")
            frame = int(frame_cell)
        return mapper.target(sop_instance_uid=cells[column], frame=frame)
    if column == "SeriesInstanceUID":
        return mapper.target(series_uid=cells[column])
    if column == "StudyInstanceUID":
        return mapper.target(study_uid=cells[column])
    return store.Target(study=_by_accession(s, cells[column]))


def _target_column(cells: dict[str, str]) -> str:
    """The most specific target column the row fills."""
    for column in TARGET_COLUMNS:
        if cells.get(column):
            return column
    raise AnnotationError("no target: the row has no " + ", ".join(TARGET_COLUMNS) + " value")


def _lift(label: Label, target: store.Target) -> store.Target:
    """The target at the label's level (a study label on an image row goes to the study)."""
    level = label.level if label.type in ("classification", "text") else None
    if level == "study":
        return store.Target(study=target.study)
    if level == "series" and target.series is not None:
        return store.Target(study=target.study, series=target.series)
    if level == "series" and target.series is None:
        raise AnnotationError(f"label {label.name!r} classifies a series: give SeriesInstanceUID "
                              "or SOPInstanceUID")
    return target


def _data(label: Label, cells: dict[str, str]) -> tuple[dict[str, Any], str]:
    """The annotation's content from the row, and the column it came from."""
    if label.type == "classification":
        value = cells.get("value", "")
        allowed = label.values or ["present", "absent"]
        if value not in allowed:
            raise AnnotationError(f"value: label {label.name!r} takes one of "
                                  + ", ".join(allowed))
        return {"value": value}, "value"
    if label.type == "measurement":
        try:
            number = float(cells.get("value", ""))
        except ValueError:
            raise AnnotationError(f"value: label {label.name!r} is a measurement: give a "
                                  "number") from None
        unit = cells.get("unit") or label.unit or ""
        if label.unit and unit != label.unit:
            raise AnnotationError(f"unit: label {label.name!r} is measured in {label.unit}")
        return {"value": number, "unit": unit}, "value"
    if label.type == "text":
        column = "text" if cells.get("text") else "value"
        return {"text": cells.get(column, "")}, column
    raise AnnotationError(f"label: {label.name!r} is a {label.type} label; a CSV gives "
                          "classifications, measurements and text only")


def _key(target: store.Target) -> tuple[int, int | None, int | None, int | None]:
    return (target.study.id, target.series.id if target.series else None,
            target.instance.id if target.instance else None, target.frame)


def _schema(s: Session, path: Path, options: ImportOptions) -> tuple[Any, Schema]:
    if not options.schema:
        raise SchemaError(f"{path.name}: a CSV names labels, not their schema: give "
                          "--schema NAME[@VERSION]")
    return store.get_schema(s, options.schema)


def import_path(node: Any, path: Path, options: ImportOptions) -> ImportResult:
    """Import a CSV of labels (see the module docstring)."""
    sha = file_sha256(path)
    _, lines = _read(path)
    result = ImportResult(file_sha256=sha)
    with node.catalog().session() as s:
        row, schema = _schema(s, path, options)
        result.schema = schema.ref
        readers = {cells.get("reader") or options.reader for _, cells in lines}
        done = {r: already_imported(s, sha, r) for r in sorted(readers)}
        if any(done.values()):
            result.skipped.append("already imported by reader(s) "
                                  + ", ".join(r for r, uids in done.items() if uids)
                                  + "; nothing created")
            return result
        mapper = store.UidMapper(s, Pseudonymizer(node.key()))
        errors: list[str] = []
        todo: dict[tuple[Any, ...], _Row] = {}
        for line, cells in lines:
            column = "label"
            try:
                name = cells.get("label", "")
                if not name:
                    raise AnnotationError("label: empty")
                label = next((lb for lb in schema.labels
                              if lb.name == options.label_map.get(name, name)), None)
                if label is None:
                    raise AnnotationError(
                        f"label: not a label of {schema.ref} (its labels: "
                        + ", ".join(lb.name for lb in schema.labels) + "; map others with "
                        "--label-map NAME=LABEL)")
                data, _ = _data(label, cells)
                column = _target_column(cells)
                target = _target(s, mapper, cells, column)
                target = _lift(label, target)
                reader = cells.get("reader") or options.reader
                if not 1 <= len(reader) <= 64:
                    raise AnnotationError("reader: a reader name has 1 to 64 characters")
            except (AnnotationError, NotFoundError) as exc:
                msg = str(exc)
                where, sep, rest = msg.partition(": ")
                if sep and where in ("label", "value", "unit", "text", "reader", "frame"):
                    errors.append(f"line {line}, column {where}: {rest}")
                else:
                    errors.append(f"line {line}, column {column}: {msg}")
                continue
            key = (reader, label.name, *_key(target))
            if key in todo:
                first = todo[key]
                if first.data != data:
                    errors.append(f"line {line}: label {label.name!r} of reader {reader} for "
                                  f"this {target.level} was given another value on line "
                                  f"{first.line}")
                continue
            todo[key] = _Row(line, label, target, data, reader)
        for item in todo.values():
            if len(errors) >= MAX_ERRORS:
                break
            try:
                rev = store.create(
                    s, node.store(), target=item.target, schema=row, label=item.label.name,
                    reader=item.reader, reader_kind=options.reader_kind, status=options.status,
                    data=item.data, author=options.author, model_version=options.model_version,
                    provenance={"format": FORMAT, "file_sha256": sha,
                                "tool": f"mida {__version__}", "line": item.line})
            except AnnotationError as exc:
                errors.append(f"line {item.line}: {exc}")
                continue
            ann = s.get(Annotation, rev.annotation_id)
            assert ann is not None
            result.created.append(ann.uid)
        if errors:
            more = f" (and {len(errors) - MAX_ERRORS} more)" if len(errors) > MAX_ERRORS else ""
            raise AnnotationError(f"{path.name}: {len(errors)} problem(s), nothing imported"
                                  f"{more}:\n  " + "\n  ".join(errors[:MAX_ERRORS]))
    return result

