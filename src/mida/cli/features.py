"""``mida features``: acquisition parameters, image QC and radiomics per series."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mida.cli.common import JsonOpt, audit, handle_errors, node
from mida.cli.output import console, emit_json, err_console, table
from mida.errors import MidaError

features_app = typer.Typer(no_args_is_help=True,
                           help="Feature parameters: acquisition, quality control, radiomics.")

FamilyOpt = Annotated[str | None, typer.Option(
    "--family", help="Only this family: acq, qc or radiomics.")]


def _check_family(family: str | None) -> None:
    from mida.features import FAMILIES

    if family is not None and family not in FAMILIES:
        raise MidaError(f"unknown family {family!r}: choose one of {', '.join(FAMILIES)}")


@features_app.command("extract")
@handle_errors
def extract_cmd(
    collection: Annotated[str | None, typer.Option(help="Every series of this collection.")] = None,
    series: Annotated[list[str] | None, typer.Option(
        "--series", help="This series (repeatable; within --collection when both are given).")
    ] = None,
    radiomics: Annotated[bool, typer.Option(
        "--radiomics", help="Also compute pyradiomics features of every mask annotation.")] = False,
    qc: Annotated[bool, typer.Option(
        "--qc/--no-qc", help="Compute the pixel QC metrics (reads every frame).")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Extract feature values and store them in the catalog (re-running replaces them)."""
    from mida.features import extract

    if collection is None and not series:
        raise MidaError("say which series: --collection NAME and/or --series UID")
    n = node()
    progress = Progress(TextColumn("[bold]features[/bold]"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err_console, disable=json_out)
    task = progress.add_task("features", total=None)

    def on_series(done: int, total: int, _uid: str) -> None:
        progress.update(task, completed=done, total=total)

    with progress, n.catalog().session() as s:
        result = extract(s, n.store(), collection=collection, series_uids=series,
                         radiomics=radiomics, qc=qc, progress=on_series)
    out = result.as_dict()
    audit("features.extract", {"collection": collection, "series": len(series or []),
                               "radiomics": radiomics, "qc": qc, "done": result.done,
                               "rows": result.rows})
    if json_out:
        emit_json(out)
        return
    fam = ", ".join(f"{k} {v}" for k, v in out["by_family"].items())
    console.print(f"{result.series} series: [green]{result.done} with values[/green], "
                  f"{result.rows} values ({fam}) in {result.seconds:.1f}s")
    if result.skipped:
        table([{"series": k.series_uid, "family": k.family, "skipped because": k.reason}
               for k in result.skipped], title="skipped")
    if result.notes:
        table([{"series": k.series_uid, "family": k.family, "note": k.reason}
               for k in result.notes], title="notes")


@features_app.command("show")
@handle_errors
def show_cmd(
    series_uid: Annotated[str, typer.Argument(help="Series Instance UID (the catalog's).")],
    family: FamilyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a series' stored feature values."""
    from mida.features import feature_rows, features_of

    _check_family(family)
    with node().catalog().session() as s:
        if json_out:
            emit_json(features_of(s, series_uid, family=family))
            return
        rows = feature_rows(s, series_uid, family=family)
    if not rows:
        console.print(f"[dim]no feature values for series {series_uid}: run "
                      "'mida features extract --series UID'[/dim]")
        return
    console.print(f"series [bold]{series_uid}[/bold]")
    groups: dict[tuple[str, str], list[dict[str, object]]] = {}
    for r in rows:
        groups.setdefault((r["family"], r["region"]), []).append(
            {"name": r["name"], "value": r["value"]})
    for (fam, region), values in groups.items():
        table(values, title=f"{fam} {region}".strip())


@features_app.command("ls")
@handle_errors
def ls_cmd(family: FamilyOpt = None, json_out: JsonOpt = False) -> None:
    """List the feature names stored, with how many series have each and their range."""
    from mida.features import list_features

    _check_family(family)
    with node().catalog().session() as s:
        rows = [f.as_dict() for f in list_features(s, family)]
    if json_out:
        emit_json(rows)
        return
    table([{"feature": f"{r['family']}.{r['name']}", "type": r["type"], "series": r["series"],
            "range": (f"{r['min']:g} .. {r['max']:g}" if r["type"] == "num"
                      else ", ".join(f"{k} ({v})" for k, v in r["values"].items()))}
           for r in rows], title="feature values in the catalog")
