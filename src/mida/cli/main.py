"""``mida``: the command line of a mida node.

Read commands take ``--json``. Exit codes: 0 success, 1 a mida error (the
message says how to fix it), 2 bad usage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from mida import __version__
from mida.cli import common
from mida.cli.access import grants_app, tokens_app, users_app
from mida.cli.analytics import catalog_app, sql_command
from mida.cli.annotations import annotations_app, labels_app
from mida.cli.audit import audit_app, consent_app, reports_app, vault_app
from mida.cli.datasets import cohort_app, release_app, restrictions_app
from mida.cli.deid import app as deid_app
from mida.cli.dimse import aes_app, scp_command
from mida.cli.features import features_app
from mida.cli.governance import collections_app, dua_app, institutions_app, requests_app
from mida.cli.jobs import jobs_app
from mida.cli.output import console, emit_json, err_console, kv, table
from mida.cli.pacs import pacs_app
from mida.cli.tasks import models_app, tasks_app
from mida.errors import MidaError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="mida: Medical Imaging Data for AI — a de-identified imaging archive node.")
quarantine_app = typer.Typer(no_args_is_help=True, help="Inspect and retry quarantined inputs.")
app.add_typer(quarantine_app, name="quarantine")
keys_app = typer.Typer(no_args_is_help=True, help="The de-identification key: show, rotate.")
app.add_typer(keys_app, name="keys")
app.add_typer(vault_app, name="vault")
app.add_typer(audit_app, name="audit")
app.add_typer(reports_app, name="reports")
app.add_typer(consent_app, name="consent")
app.add_typer(deid_app, name="deid")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
app.add_typer(grants_app, name="grants")
app.add_typer(jobs_app, name="jobs")
app.add_typer(aes_app, name="aes")
app.command("scp")(scp_command)
app.add_typer(pacs_app, name="pacs")
app.add_typer(labels_app, name="labels")
app.add_typer(annotations_app, name="annotations")
app.add_typer(tasks_app, name="tasks")
app.add_typer(models_app, name="models")
app.add_typer(features_app, name="features")
app.add_typer(cohort_app, name="cohort")
app.add_typer(release_app, name="release")
app.add_typer(restrictions_app, name="restrictions")
app.add_typer(catalog_app, name="catalog")
app.add_typer(requests_app, name="requests")
app.add_typer(dua_app, name="dua")
app.add_typer(collections_app, name="collections")
app.add_typer(institutions_app, name="institutions")
app.command("sql")(sql_command)

JsonOpt = common.JsonOpt
handle_errors = common.handle_errors
_settings = common.settings
_node = common.node


@app.command()
def version() -> None:
    """Print mida's version."""
    console.print(__version__)


@app.command()
@handle_errors
def init(
    institution: Annotated[str, typer.Option(help="Institution code, e.g. NTUH.")],
    name: Annotated[str, typer.Option(help="Institution name.")],
    exist_ok: Annotated[bool, typer.Option("--exist-ok", help="Succeed if it exists.")] = False,
    key_file: Annotated[Path | None, typer.Option(
        help="Use this project key (64 hex characters) so that sites sharing it produce the "
             "same pseudonyms; a fresh random key is generated otherwise.")] = None,
) -> None:
    """Create a node: folders, de-identification key (mode 0600) and catalog."""
    from mida.errors import AlreadyInitializedError, ConfigError
    from mida.node import init_node, load_node

    s = _settings()
    key = None
    if key_file is not None:
        try:
            key = bytes.fromhex(key_file.read_text().strip())
        except ValueError as exc:
            raise ConfigError(f"{key_file} must hold a key as hexadecimal text") from exc
        if len(key) < 32:
            raise ConfigError(f"the key in {key_file} is {len(key)} bytes; 32 or more are needed")
    try:
        node = init_node(s, institution, name, key=key)
    except AlreadyInitializedError:
        if not exist_ok:
            raise
        node = load_node(s)
        console.print(f"node already initialised at {s.home} (key id {node.key_id})")
        return
    console.print(f"initialised node [bold]{institution}[/bold] at {s.home}")
    console.print(f"de-identification key id {node.key_id} (key file {s.key_file}, mode 0600)")


@app.command()
@handle_errors
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files, folders, zip or tar(.gz) archives.")],
    collection: Annotated[str, typer.Option(help="Collection to ingest into.")],
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    profile: Annotated[str | None, typer.Option(
        help="De-identification profile of a new collection (see `mida deid profiles`); "
             "MIDA_DEID_PROFILE when omitted. An existing collection keeps its own.")] = None,
    wait: Annotated[bool, typer.Option(
        help="Run here with a progress bar; --no-wait queues a job and prints its id "
             "(follow it with 'mida jobs wait ID').")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Ingest DICOM into the de-identified archive (idempotent; sources untouched)."""
    from mida.events import Event, FileDiscovered, FileProcessed
    from mida.ingest import Ingestor

    node = _node()
    for p in paths:
        if not p.exists():
            raise MidaError(f"no such file or folder: {p}")
    if not wait:
        from mida.cli.jobs import queue_and_spawn

        job_id = queue_and_spawn("ingest", {
            "paths": [str(p.absolute()) for p in paths], "collection": collection,
            "profile": profile, "owner": "local:console"})
        if json_out:
            emit_json({"job_id": job_id, "location": f"/jobs/{job_id}"})
        else:
            console.print(f"ingest job {job_id} queued: follow it with 'mida jobs wait {job_id}'")
        return
    ingestor = Ingestor(node, collection, workers=workers, profile=profile)
    progress = Progress(
        TextColumn("[bold]ingest[/bold]"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TextColumn("[yellow]{task.fields[q]} quarantined"),
        TimeElapsedColumn(), console=err_console, disable=json_out, transient=False,
    )
    state = {"n": 0, "bytes": 0, "q": 0}
    task = progress.add_task("ingest", total=None, rate="", q=0)
    import time

    t0 = time.perf_counter()

    def on_event(ev: Event) -> None:
        if isinstance(ev, FileDiscovered):
            progress.update(task, total=ev.total)
        elif isinstance(ev, FileProcessed):
            state["n"] += 1
            state["bytes"] += ev.nbytes
            state["q"] += ev.outcome == "quarantined"
            dt = max(time.perf_counter() - t0, 1e-6)
            rate = f"{state['n'] / dt:.0f} files/s {state['bytes'] / dt / 1e6:.1f} MB/s"
            progress.update(task, advance=1, rate=rate, q=state["q"])

    ingestor.bus.subscribe(on_event)
    with progress:
        summary = ingestor.run(paths)
    if json_out:
        emit_json(summary.as_dict())
        return
    d = summary.as_dict()
    console.print(
        f"job {d['job_id']}: {d['inputs']} inputs, [green]{d['stored']} stored[/green], "
        f"{d['duplicates']} already present, [yellow]{d['quarantined']} quarantined[/yellow] "
        f"in {d['seconds']:.1f}s"
    )
    if d["by_reason"]:
        table([{"reason": k, "count": v} for k, v in sorted(d["by_reason"].items())],
              title="quarantined by reason")


@app.command("ls")
@handle_errors
def ls_cmd(
    level: Annotated[str, typer.Argument(help="patients | studies | series | instances")],
    collection: Annotated[str | None, typer.Option(help="Collection name.")] = None,
    modality: Annotated[str | None, typer.Option(help="Modality, e.g. CT.")] = None,
    study_date: Annotated[str | None, typer.Option(
        help="Date or range FROM..TO (YYYY-MM-DD); dates are the shifted ones.")] = None,
    patient: Annotated[str | None, typer.Option(help="Pseudonymous PatientID.")] = None,
    study: Annotated[str | None, typer.Option(help="StudyInstanceUID.")] = None,
    series: Annotated[str | None, typer.Option(help="SeriesInstanceUID.")] = None,
    limit: Annotated[int, typer.Option(help="Most rows to show.")] = 1000,
    json_out: JsonOpt = False,
) -> None:
    """List patients, studies, series or instances."""
    from mida.catalog.query import list_level

    node = _node()
    with node.catalog().session() as s:
        rows = list_level(s, level, collection=collection, modality=modality,
                          study_date=study_date, patient_id=patient, study_uid=study,
                          series_uid=series, limit=limit)
    if json_out:
        emit_json(rows)
    else:
        table(rows, title=level)


@app.command()
@handle_errors
def show(uid: Annotated[str, typer.Argument(help="A study, series or instance UID.")],
         json_out: JsonOpt = False) -> None:
    """Show one study, series or instance."""
    from mida.catalog.query import show_uid

    node = _node()
    with node.catalog().session() as s:
        info = show_uid(s, uid)
    if json_out:
        emit_json(info)
        return
    children = info.pop("series", None) or info.pop("instances", None)
    dataset = info.pop("dataset", None)
    kv(info, title=info["level"])
    if children:
        table(children)
    if dataset:
        console.print(f"{len(dataset)} retained attributes (use --json to see them)")


@app.command()
@handle_errors
def stats(json_out: JsonOpt = False) -> None:
    """Counts: what arrived, what was quarantined and why."""
    from mida.catalog.service import stats as catalog_stats

    node = _node()
    with node.catalog().session() as s:
        data = catalog_stats(s)
    if json_out:
        emit_json(data)
        return
    kv({k: v for k, v in data.items()
        if k not in ("quarantine_by_reason", "by_collection", "modalities", "last_job")},
       title=f"node {node.institution_code}")
    table(data["by_collection"], title="collections")
    if data["quarantine_by_reason"]:
        table([{"reason": k, "open entries": v}
               for k, v in sorted(data["quarantine_by_reason"].items())], title="quarantine")


@app.command()
@handle_errors
def fsck(
    repair: Annotated[bool, typer.Option(help="Remove orphans; drop rows without blobs.")] = False,
    verify: Annotated[bool, typer.Option(help="Re-hash every blob.")] = False,
    grace: Annotated[float, typer.Option(help="Leave orphans younger than this (s).")] = 3600.0,
    json_out: JsonOpt = False,
) -> None:
    """Check that catalog and blob store agree; exit 1 when they do not."""
    from mida.node.fsck import fsck as run_fsck

    node = _node()
    rep = run_fsck(node, repair=repair, verify=verify, grace_seconds=grace)
    data = rep.as_dict()
    if json_out:
        emit_json(data)
    else:
        kv(data, title="fsck")
    if not rep.clean and not repair:
        raise typer.Exit(1)


@app.command()
@handle_errors
def sample(
    out: Annotated[Path, typer.Argument(help="Folder to write synthetic studies into.")],
    patients: Annotated[int, typer.Option(help="Number of patients.")] = 5,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
    ct_slices: Annotated[int, typer.Option(help="Slices per CT series.")] = 8,
    ct_size: Annotated[int, typer.Option(help="CT matrix size.")] = 512,
    json_out: JsonOpt = False,
) -> None:
    """Write synthetic CT/MR/CR/US studies that carry fake PHI (tests, demos)."""
    from mida.dicom.sample import generate

    manifest = generate(out, patients, seed=seed, ct_slices=ct_slices, ct_size=ct_size)
    counts = getattr(manifest, "counts", {})
    if json_out:
        emit_json({"out": str(out), "counts": counts})
    else:
        console.print(f"wrote synthetic studies to {out}: {counts}")
        console.print("[yellow]these files carry fake PHI on purpose; ingest de-identifies it")


@quarantine_app.command("list")
@handle_errors
def quarantine_list(
    reason: Annotated[str | None, typer.Option(help="Only this reason code.")] = None,
    status: Annotated[str, typer.Option(help="open | resolved | all")] = "open",
    json_out: JsonOpt = False,
) -> None:
    """List quarantine entries (reason codes and PHI-free messages)."""
    from mida.ingest.retry import list_entries

    rows = list_entries(_node(), reason=reason, status=None if status == "all" else status)
    if json_out:
        emit_json(rows)
    else:
        table(rows, title="quarantine",
              columns=["id", "reason", "status", "size", "source_kind", "collection", "message"])


@quarantine_app.command("show")
@handle_errors
def quarantine_show(entry_id: Annotated[int, typer.Argument(help="Entry id.")],
                    json_out: JsonOpt = False) -> None:
    """Show one entry, with the local path(s) its original came from."""
    from mida.ingest.retry import show_entry

    info = show_entry(_node(), entry_id)
    if json_out:
        emit_json(info)
    else:
        kv(info, title=f"quarantine entry {entry_id}")


@quarantine_app.command("retry")
@handle_errors
def quarantine_retry(
    entry_ids: Annotated[list[int] | None, typer.Argument(help="Entry ids (default: all open).")]
    = None,
    reason: Annotated[str | None, typer.Option(help="Only entries with this reason.")] = None,
    collection: Annotated[str | None, typer.Option(help="Ingest into this collection.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Ingest quarantined originals again (e.g. after changing a setting)."""
    from mida.ingest.retry import retry

    results = retry(_node(), entry_ids or None, reason=reason, collection=collection)
    rows = [r.__dict__ for r in results]
    if json_out:
        emit_json(rows)
    else:
        table(rows, title="retry")


@keys_app.command("show")
@handle_errors
def keys_show(json_out: JsonOpt = False) -> None:
    """The current key id and the retired ones (never the keys themselves)."""
    s = _settings()
    node = _node()
    info = json.loads(s.node_file.read_text())
    data = {"key_id": node.key_id, "retired_key_ids": info.get("retired_key_ids", []),
            "key_file": str(s.key_file), "vault_enabled": s.linkage_vault}
    if json_out:
        emit_json(data)
    else:
        kv(data, title="keys")


@keys_app.command("rotate")
@handle_errors
def keys_rotate(
    key_file: Annotated[Path | None, typer.Option(help="New key (hex); random if omitted.")]
    = None,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: new pseudonyms from now on.")]
    = False,
) -> None:
    """Replace the de-identification key (the old one is kept under keys/retired/)."""
    from mida.node import rotate_key
    from mida.sharing import AuditLog

    if not yes:
        raise MidaError(
            "rotating the key gives every patient new pseudonyms from now on; "
            "run again with --yes to confirm"
        )
    s = _settings()
    key = bytes.fromhex(key_file.read_text().strip()) if key_file else None
    old, new = rotate_key(s, key=key)
    AuditLog(s.audit_file).append("keys.rotate", {"old_key_id": old, "new_key_id": new})
    console.print(f"key rotated: {old} -> {new} (old key kept under keys/retired/)")


@app.command()
@handle_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default MIDA_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default MIDA_PORT).")] = None,
    dicom_port: Annotated[int | None, typer.Option(
        help="Also run the DICOM node (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET) on this "
             "port, e.g. 11112; it stops with the web server.")] = None,
    login: Annotated[bool, typer.Option(
        help="Print a sign-in link for the pages (an admin token of user 'operator', "
             "valid one day).")] = True,
) -> None:
    """Run the web UI and API (FastAPI) on 127.0.0.1:8000 by default."""
    import uvicorn

    from mida.api.app import create_app

    s = _settings()
    node = _node()
    dicom = None
    if dicom_port is not None:
        from mida.net.scp import start_dicom_node

        dicom = start_dicom_node(node, port=dicom_port, host=host or s.host)
        console.print(f"DICOM node {dicom.ae_title} listening on {dicom.host}:{dicom.port}")
    if login:
        from mida.cli.access import console_login

        base = s.public_url.rstrip("/") or f"http://{host or s.host}:{port or s.port}"
        console.print(f"mida on {base}: sign in with {console_login(base)}", soft_wrap=True)
    try:
        uvicorn.run(create_app(node), host=host or s.host, port=port or s.port,
                    log_level="warning")
    finally:
        if dicom is not None:
            dicom.stop()


@app.command("config")
@handle_errors
def config_cmd(json_out: JsonOpt = False) -> None:
    """Show the effective settings (secrets are not shown)."""
    s = _settings()
    data = json.loads(s.model_dump_json())
    data["storage_options"] = {k: "***" for k in data.get("storage_options", {})}
    if json_out:
        emit_json(data)
    else:
        kv(data, title="settings")


if __name__ == "__main__":  # pragma: no cover
    app()
