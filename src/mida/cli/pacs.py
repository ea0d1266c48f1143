"""``mida pacs``: hospital PACS this node pulls from (C-FIND, then C-MOVE or C-GET).

``mida pacs add|ls|rm`` keep the PACS (AE title, address, method, bandwidth
cap, allowed hours) in the catalog; ``mida pacs pull`` fetches the studies that
match a query into a collection, de-identified on arrival. A pull is resumable:
run the same command again after an interruption and it carries on where it
stopped; run it after it finished and nothing changes.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mida.cli.common import JsonOpt, audit, handle_errors, node
from mida.cli.output import console, emit_json, err_console, table
from mida.errors import MidaError

pacs_app = typer.Typer(no_args_is_help=True, help="Hospital PACS to pull studies from.")

METHOD_HELP = "get: C-GET (default); move: C-MOVE to a temporary storage SCP of mida's."


@pacs_app.command("add")
@handle_errors
def pacs_add(
    name: Annotated[str, typer.Argument(help="A name for this PACS.")],
    aet: Annotated[str, typer.Option("--aet", help="The PACS's AE title.")],
    host: Annotated[str, typer.Option(help="The PACS's host name or address.")],
    port: Annotated[int, typer.Option(help="The PACS's DICOM port.")],
    method: Annotated[str | None, typer.Option(help=METHOD_HELP)] = None,
    move_dest_aet: Annotated[str | None, typer.Option(
        help="AE title the PACS moves to (configured on the PACS); "
             "MIDA_DICOM_AE_TITLE when omitted.")] = None,
    move_host: Annotated[str | None, typer.Option(
        help="Address the C-MOVE destination listens on (default 127.0.0.1).")] = None,
    move_port: Annotated[int | None, typer.Option(
        help="Port the C-MOVE destination listens on, as configured on the PACS "
             "(default: any free port).")] = None,
    max_mbps: Annotated[float | None, typer.Option(
        help="Bandwidth cap on received data, in megabits per second.")] = None,
    hours: Annotated[str | None, typer.Option(
        help="Hours pulls may run, local time, e.g. 20-06 (studies wait for them).")] = None,
) -> None:
    """Add a PACS to pull from."""
    from mida.net.pull import add_pacs

    with node().catalog().session() as s:
        add_pacs(s, name, aet, host, port, method=method, move_dest_aet=move_dest_aet,
                 move_host=move_host, move_port=move_port, max_mbps=max_mbps, hours=hours)
    audit("pacs.add", {"pacs": name, "ae_title": aet, "host": host, "port": port,
                       "method": method or "get"})
    console.print(f"PACS [bold]{name}[/bold] added ({aet} at {host}:{port})")


@pacs_app.command("ls")
@handle_errors
def pacs_ls(json_out: JsonOpt = False) -> None:
    """List the PACS this node pulls from."""
    from mida.net.pull import list_pacs

    with node().catalog().session() as s:
        rows = list_pacs(s)
    emit_json(rows) if json_out else table(rows, title="PACS")


@pacs_app.command("rm")
@handle_errors
def pacs_rm(name: str) -> None:
    """Remove a PACS (and its pull records; pulled studies stay)."""
    from mida.net.pull import remove_pacs

    with node().catalog().session() as s:
        remove_pacs(s, name)
    audit("pacs.rm", {"pacs": name})
    console.print(f"PACS {name} removed")


def _print_summary(d: dict[str, Any]) -> None:
    console.print(
        f"job {d['job_id']} {d['status']}: {d['studies']} studies matched, "
        f"{d['pulled']} pulled, {d['skipped']} done before, "
        f"[red]{d['failed_studies']} failed[/red]; {d['instances']} instances: "
        f"[green]{d['stored']} stored[/green], {d['duplicates']} already present, "
        f"[yellow]{d['quarantined']} quarantined[/yellow] in {d.get('seconds', 0):.1f}s"
    )
    if d.get("by_reason"):
        table([{"reason": k, "count": v} for k, v in sorted(d["by_reason"].items())],
              title="quarantined by reason")


@pacs_app.command("pull")
@handle_errors
def pacs_pull(
    name: Annotated[str, typer.Argument(help="A PACS added with 'mida pacs add'.")],
    collection: Annotated[str, typer.Option(help="Collection to pull into.")],
    query: Annotated[str, typer.Option(
        help="KEY=VALUE pairs of DICOM keywords and matching values, e.g. "
             "'Modality=CT StudyDate=20240101-20241231'; empty matches every study.")] = "",
    method: Annotated[str | None, typer.Option(
        help=METHOD_HELP + " The PACS's configured method when omitted.")] = None,
    refresh: Annotated[bool, typer.Option(
        help="Fetch again the studies an earlier run finished.")] = False,
    wait: Annotated[bool, typer.Option(
        "--wait/--no-wait", help="Run here with a progress bar, or queue a job and return.")
    ] = True,
    json_out: JsonOpt = False,
) -> None:
    """Pull the studies that match a query from a PACS (resumable, idempotent)."""
    from mida.net.pull import METHODS, PullSummary, parse_query, pull
    from mida.sharing.identity import get_peer

    parse_query(query)  # a bad key fails here, before any network or job
    if method is not None and method not in METHODS:
        raise MidaError(f"unknown method {method!r}: choose get or move")
    n = node()
    with n.catalog().session() as s:
        get_peer(s, name, role="pacs")
    detail = {"pacs": name, "collection": collection, "method": method, "refresh": refresh}
    if not wait:
        from mida.cli.jobs import queue_and_spawn

        job_id = queue_and_spawn("pull", {"pacs": name, "query": query,
                                          "collection": collection, "method": method,
                                          "refresh": refresh, "owner": "console"})
        audit("pacs.pull", {**detail, "job": job_id})
        if json_out:
            emit_json({"job_id": job_id, "status": "queued"})
        else:
            console.print(f"job {job_id} queued: follow it with 'mida jobs wait {job_id}'")
        return

    progress = Progress(
        TextColumn("[bold]pull[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("[yellow]{task.fields[note]}"), TimeElapsedColumn(),
        console=err_console, disable=json_out, transient=False,
    )
    studies = progress.add_task("studies", total=None, note="")
    instances = progress.add_task("instances", total=None, note="")

    def on_progress(p: PullSummary) -> None:
        failed = f"{p.failed_studies} failed" if p.failed_studies else ""
        progress.update(studies, completed=p.studies_done, total=p.studies, note=failed)
        progress.update(instances, completed=p.instances, total=p.instances_expected or None,
                        note=f"{p.quarantined} quarantined" if p.quarantined else "")

    with progress:
        summary = pull(n, name, query, collection, method=method, refresh=refresh,
                       owner="console", on_progress=on_progress)
    audit("pacs.pull", {**detail, "job": summary.job_id, "status": summary.status,
                        "studies": summary.studies, "stored": summary.stored})
    d = summary.as_dict()
    emit_json(d) if json_out else _print_summary(d)
    if summary.status != "done" or summary.failed_studies:
        raise typer.Exit(1)


__all__ = ["pacs_app"]
