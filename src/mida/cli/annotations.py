"""``mida labels`` and ``mida annotations``: label schemas, records, import and export.

The multi-reader commands (``mida tasks``, ``mida annotations agreement``) and
model pre-annotation (``mida annotations preannotate``, ``mida models``) are in
:mod:`mida.cli.tasks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mida.cli.common import JsonOpt, audit, handle_errors, node
from mida.cli.output import console, emit_json, kv, table
from mida.errors import NotFoundError

labels_app = typer.Typer(no_args_is_help=True, help="Label schemas (versioned label sets).")
annotations_app = typer.Typer(no_args_is_help=True,
                              help="Annotation records: list, show, import, export.")


@labels_app.command("add")
@handle_errors
def labels_add(path: Annotated[Path, typer.Argument(help="Schema file (.yaml or .json).")],
               json_out: JsonOpt = False) -> None:
    """Add a label schema version (identical content again is a no-op)."""
    from mida.annotations import store
    from mida.annotations.schema import load_schema_file

    schema = load_schema_file(path)
    with node().catalog().session() as s:
        row, created = store.add_schema(s, schema)
        out = {"schema": schema.ref, "labels": len(schema.labels), "sha256": row.sha256,
               "created": created}
    if created:
        audit("labels.add", {"schema": schema.ref})
    if json_out:
        emit_json(out)
    else:
        console.print(f"schema [bold]{schema.ref}[/bold] "
                      f"{'added' if created else 'already present (unchanged)'}: "
                      f"{len(schema.labels)} labels")


@labels_app.command("ls")
@handle_errors
def labels_ls(name: Annotated[str | None, typer.Argument(help="Show this schema's labels "
                                                         "(name or name@version).")] = None,
              json_out: JsonOpt = False) -> None:
    """List schemas, or the labels of one schema."""
    from mida.annotations import store

    with node().catalog().session() as s:
        if name is None:
            rows = [{"schema": f"{r.name}@{r.version}", "labels": len(r.body.get("labels", [])),
                     "description": r.body.get("description", ""),
                     "added": r.created.isoformat(timespec="seconds")}
                    for r in store.list_schemas(s)]
            title = "label schemas"
        else:
            _, schema = store.get_schema(s, name)
            rows = [{"label": lb.name, "type": lb.type,
                     "concept": f"({lb.concept.CodeValue}, {lb.concept.CodingSchemeDesignator}, "
                                f"\"{lb.concept.CodeMeaning}\")",
                     "values": ", ".join(lb.values), "colour": lb.colour, "key": lb.key}
                    for lb in schema.labels]
            title = schema.ref
    emit_json(rows) if json_out else table(rows, title=title)


@annotations_app.command("ls")
@handle_errors
def annotations_ls(
    series: Annotated[str | None, typer.Option(help="Series Instance UID.")] = None,
    study: Annotated[str | None, typer.Option(help="Study Instance UID.")] = None,
    reader: Annotated[str | None, typer.Option(help="Only this reader's.")] = None,
    status: Annotated[str | None, typer.Option(help="draft|submitted|reviewed|adjudicated")] = None,
    label: Annotated[str | None, typer.Option(help="Only this label.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List annotations (latest revision of each)."""
    from mida.annotations import store

    with node().catalog().session() as s:
        rows = [store.view(s, a, r) for a, r in store.query(
            s, series_uid=series, study_uid=study, reader=reader, status=status, label=label)]
    if json_out:
        emit_json(rows)
        return
    table([{"uid": r["uid"], "label": r["label"], "kind": r["kind"], "reader": r["reader"],
            "rev": r["revision"], "status": r["status"], "level": r["target"]["level"],
            "series": r["target"]["SeriesInstanceUID"]} for r in rows], title="annotations")


@annotations_app.command("show")
@handle_errors
def annotations_show(
    uid: Annotated[str, typer.Argument(help="Annotation UID (annotations ls).")],
    revision: Annotated[int | None, typer.Option(help="This revision (default: latest).")] = None,
    history: Annotated[bool, typer.Option("--history", help="List every revision.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show one annotation (any revision stays readable)."""
    from mida.annotations import store

    with node().catalog().session() as s:
        ann = store.get(s, uid)
        if history:
            out: Any = [store.view(s, ann, r) for r in store.history(s, ann)]
        else:
            rev = store.revision(s, ann, revision) if revision else store.latest(s, ann)
            out = store.view(s, ann, rev)
    if json_out:
        emit_json(out)
    elif isinstance(out, list):
        table([{"revision": r["revision"], "status": r["status"], "author": r["author"],
                "created": r["created"], "comment": r["comment"]} for r in out], title=uid)
    else:
        kv(out, title=uid)


def _label_map(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for p in pairs or []:
        k, sep, v = p.partition("=")
        if not sep or not k or not v:
            raise typer.BadParameter(f"--label-map takes VALUE=LABEL, not {p!r}")
        out[k] = v
    return out


@annotations_app.command("import")
@handle_errors
def annotations_import(
    path: Annotated[Path, typer.Argument(help="The annotation file.")],
    fmt: Annotated[str, typer.Option("--format", help="seg|rtstruct|sr|nifti|coco|csv")],
    reader: Annotated[str, typer.Option(help="Who made these annotations.")] = "import",
    schema: Annotated[str | None, typer.Option(
        help="Label schema (name or name@version); default: derived from the file.")] = None,
    series: Annotated[str | None, typer.Option(
        help="Series the file annotates (NIfTI, COCO), as stored in mida.")] = None,
    status: Annotated[str, typer.Option(help="Status of the imported records.")] = "submitted",
    label_map: Annotated[list[str] | None, typer.Option(
        "--label-map", help="VALUE=LABEL: a file's label value or name to a schema label.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Import an annotation file; its UIDs are mapped through the node's pseudonyms."""
    from mida.annotations.formats import ImportOptions, import_path

    opts = ImportOptions(reader=reader, schema=schema, status=status, series_uid=series,
                         label_map=_label_map(label_map))
    result = import_path(node(), path, fmt, opts)
    audit("annotations.import", {"format": fmt, "file_sha256": result.file_sha256,
                                 "created": len(result.created), "reader": reader})
    if json_out:
        emit_json(result.as_dict())
        return
    console.print(f"{len(result.created)} annotation(s) imported from {path.name} "
                  f"(schema {result.schema})")
    for line in result.skipped:
        console.print(f"  [yellow]skipped:[/yellow] {line}")


@annotations_app.command("export")
@handle_errors
def annotations_export(
    fmt: Annotated[str, typer.Option("--format", help="seg|sr|nifti|coco")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    collection: Annotated[str | None, typer.Option(help="Only this collection.")] = None,
    status: Annotated[str | None, typer.Option(help="Only this status, e.g. adjudicated.")] = None,
    schema: Annotated[str | None, typer.Option(help="Only this schema.")] = None,
    reader: Annotated[str | None, typer.Option(help="Only this reader's.")] = None,
    series: Annotated[str | None, typer.Option(help="Only this series.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Export annotations (latest revisions) in a standard format."""
    from sqlalchemy import select

    from mida.annotations.formats import ExportOptions, export
    from mida.catalog.models import Collection

    n = node()
    ids = None
    if collection:
        with n.catalog().session() as s:
            cid = s.scalars(select(Collection.id).where(Collection.name == collection)).first()
        if cid is None:
            raise NotFoundError(f"no collection {collection!r}")
        ids = frozenset({cid})
    result = export(n, fmt, ExportOptions(out=out, collection_ids=ids, status=status,
                                          schema=schema, reader=reader, series_uid=series))
    audit("annotations.export", {"format": fmt, "annotations": result.annotations,
                                 "files": len(result.files)})
    if json_out:
        emit_json(result.as_dict())
        return
    console.print(f"{result.annotations} annotation(s) exported to {out} "
                  f"({len(result.files)} file(s))")
    for line in result.skipped:
        console.print(f"  [yellow]skipped:[/yellow] {line}")


@annotations_app.command("measure")
@handle_errors
def annotations_measure(
    uid: Annotated[str, typer.Argument(help="A mask annotation's UID.")],
    label: Annotated[str | None, typer.Option(
        help="Store the number as this measurement label (measure volume, area or hu_stats).")]
    = None,
    by: Annotated[str, typer.Option(help="Who records the measurement.")] = "operator",
    schema: Annotated[str | None, typer.Option(
        help="Schema of --label (default: the mask's).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Volume, largest slice area and HU statistics of a mask; optionally stored."""
    from mida.annotations import store
    from mida.annotations.measure import measure_mask, record_measurement

    n = node()
    with n.catalog().session() as s:
        ann = store.get(s, uid)
        out: dict[str, Any] = measure_mask(s, n.store(), ann, store.latest(s, ann))
        if label:
            rev = record_measurement(s, n.store(), uid, label=label, author=by, schema=schema)
            out["measurement"] = store.view(s, s.get(store.Annotation, rev.annotation_id), rev)
    if label:
        audit("annotations.measure", {"mask": uid, "label": label, "by": by})
    if json_out:
        emit_json(out)
    else:
        kv({k: v for k, v in out.items() if k != "measurement"}, title=uid)
        if label:
            console.print(f"stored as {label}: {out['measurement']['uid']}")
