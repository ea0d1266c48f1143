"""``mida catalog`` and ``mida sql``: a Parquet snapshot of the catalog queried with DuckDB."""

from __future__ import annotations

import csv
import datetime as dt
import enum
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mida.cli.common import JsonOpt, audit, handle_errors, node, settings
from mida.cli.output import console, emit_json, err_console, kv, table

catalog_app = typer.Typer(no_args_is_help=True,
                          help="The catalog as Parquet files, for offline analytics.")


class OutputFormat(enum.StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _export(out: Path, collections: list[str] | None) -> dict[str, Any]:
    from mida.datasets.analytics import export_parquet

    with node().catalog().session() as s:
        result = export_parquet(s, out, collections=collections)
    data = result.as_dict()
    audit("catalog.export_parquet", {"path": data["path"], "collections": collections,
                                     "rows": data["rows"]})
    return data


@catalog_app.command("export-parquet")
@handle_errors
def export_parquet_command(
    out: Annotated[Path, typer.Argument(help="Snapshot folder (replaced if it holds one).")],
    collection: Annotated[list[str] | None, typer.Option(
        "--collection", help="Only this collection (repeat for more).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Write the catalog as Parquet files (one wide row per instance) for 'mida sql'."""
    data = _export(out, collection or None)
    if json_out:
        emit_json(data)
        return
    table([{"table": t, "rows": n, "columns": data["columns"][t]}
           for t, n in data["rows"].items()], title=f"snapshot {data['path']}")
    console.print(f"written in {data['seconds']:.1f}s; query it with "
                  f"mida sql \"SELECT ...\" --snapshot {data['path']}", soft_wrap=True)


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, list | dict):
        return json.dumps(v, ensure_ascii=False, default=str)
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    return str(v)


def _print_table(columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    if len(columns) > 12 and len(rows) == 1:
        kv({c: _text(v) for c, v in zip(columns, rows[0], strict=True)})
        return  # one wide row (SELECT * ... LIMIT 1) reads better down the page
    t = Table(show_lines=False)
    for c in columns:  # not a dict: two result columns may share a name
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*(_text(v) for v in r))
    console.print(t)


@handle_errors
def sql_command(
    query: Annotated[str, typer.Argument(help="One SELECT (or WITH, DESCRIBE, SHOW, EXPLAIN).")],
    snapshot: Annotated[Path | None, typer.Option(
        help="Snapshot folder (default <MIDA_HOME>/snapshots/latest).")] = None,
    refresh: Annotated[bool, typer.Option(
        "--refresh", help="Export the catalog again before the query.")] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="table, csv or json.")]
    = OutputFormat.table,
    limit: Annotated[int, typer.Option(help="Most rows to print; 0 for all.")] = 1000,
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """Query a Parquet snapshot of the catalog with DuckDB (read-only).

    Tables: instances (one row per instance, every retained DICOM attribute as a
    column named by its keyword), series, studies, patients, collections,
    features, annotations. The snapshot is exported first when it is missing or
    with --refresh. See docs/analytics.md for the columns and examples.
    """
    from mida.datasets.analytics import (
        MANIFEST,
        QueryError,
        check_query,
        default_snapshot_dir,
        read_manifest,
        sql,
    )

    if json_out:
        fmt = OutputFormat.json
    snap = snapshot or default_snapshot_dir(settings())
    try:
        check_query(query)  # a refused or broken query exports nothing
        if refresh or not (snap / MANIFEST).exists():
            err_console.print(f"exporting the catalog to {snap} first ...")
            data = _export(snap, None)
            err_console.print(f"snapshot written: {data['rows']['instances']} instances "
                              f"in {data['seconds']:.1f}s")
        else:
            made = read_manifest(snap).get("created", "?")
            err_console.print(f"[dim]snapshot of {made} (--refresh to export again)[/dim]")
        columns, rows = sql(query, snap, limit=limit + 1 if limit > 0 else None)
    except QueryError as exc:
        # DuckDB's message repeats the query with a caret under the position;
        # printed without markup so that brackets in the SQL survive.
        err_console.print("error:", str(exc), markup=False, highlight=False)
        raise typer.Exit(1) from None
    more = limit > 0 and len(rows) > limit
    rows = rows[:limit] if more else rows
    if fmt is OutputFormat.json:
        emit_json([dict(zip(columns, r, strict=True)) for r in rows])
    elif fmt is OutputFormat.csv:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(columns)
        w.writerows([_text(v) for v in r] for r in rows)
    else:
        _print_table(columns, rows)
    if more:
        err_console.print(f"[yellow]showing the first {limit} rows; --limit 0 prints all")
