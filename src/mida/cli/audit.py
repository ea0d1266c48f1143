"""``mida audit``, ``mida reports``, ``mida consent`` and ``mida vault``.

The audit trail (verify, export for regulators, anchors to keep elsewhere),
usage and attribution reports, consent withdrawal, and the honest broker's
two-person resolution of a pseudonym through the linkage vault. Commands
that act as a person (``vault``) take ``--as USER``: the node's user
recorded as requester or approver (default: your login name); the console
runs with the node's files, so the audit entry records the login name as
well.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mida.cli.common import JsonOpt, audit, handle_errors, node, settings
from mida.cli.output import console, emit_json, err_console, kv, table
from mida.errors import MidaError

audit_app = typer.Typer(no_args_is_help=True,
                        help="The audit trail: verify it, export it, keep its anchor elsewhere.")
reports_app = typer.Typer(no_args_is_help=True,
                          help="Usage per collection and attribution per release.")
consent_app = typer.Typer(no_args_is_help=True,
                          help="Consent withdrawal: keep a patient out of future releases.")
vault_app = typer.Typer(
    no_args_is_help=True,
    help="The linkage vault: two-person resolution of a pseudonym (honest broker).")

SinceOpt = Annotated[str | None, typer.Option(
    help="From this day (YYYY-MM-DD, UTC) or ISO time, inclusive.")]
UntilOpt = Annotated[str | None, typer.Option(
    help="Up to this day (YYYY-MM-DD, inclusive) or ISO time (exclusive).")]
AsOpt = Annotated[str | None, typer.Option(
    "--as", help="The node user you act as (default: your login name).")]
AnchorOpt = Annotated[list[Path] | None, typer.Option(
    "--anchor", help="An anchor saved with `mida audit anchor` (repeatable): the log must "
                     "still hold it.")]


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _log() -> Any:
    from mida.sharing.audit import AuditLog

    s = settings()
    return AuditLog(s.audit_file, fsync=s.audit_fsync)


def _anchors(paths: list[Path] | None) -> list[dict[str, Any]]:
    out = []
    for p in paths or []:
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise MidaError(f"cannot read the anchor {p}: {exc}") from None
        if not isinstance(data, dict):
            raise MidaError(f"{p} is not an anchor (a JSON object from `mida audit anchor`)")
        out.append(data)
    return out


# ------------------------------------------------------------------ audit

@audit_app.command("verify")
@handle_errors
def audit_verify(
    anchor: AnchorOpt = None,
    log_file: Annotated[Path | None, typer.Option(
        "--log", help="Verify this file instead (e.g. a jsonl export): an excerpt may "
                      "start anywhere and has no anchor.")] = None,
    limit: Annotated[int, typer.Option(help="Most problems to list (all with --json).")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """Check the audit trail; exit 1 and list the problems if anything was tampered with.

    Finds edited, forged, deleted, reordered and duplicated entries, and a
    truncated log (its anchor records more entries than it holds).
    """
    from mida.sharing.audit import AuditLog

    if log_file is not None:
        if not log_file.is_file():
            raise MidaError(f"no such file: {log_file}")
        from mida.node.service import read_audit_key

        key = read_audit_key(settings().home)
        rep = AuditLog(log_file, key=key).report(_anchors(anchor), fragment=True)
    else:
        rep = _log().report(_anchors(anchor))
    data = rep.as_dict()
    if json_out:
        emit_json(data)
    else:
        kv({k: v for k, v in data.items() if k not in ("problems", "anchor")}, title="audit")
        if rep.problems:
            table([p.as_dict() for p in rep.problems[:limit]],
                  title=f"{len(rep.problems)} problems", columns=["line", "seq", "kind",
                                                                   "message"])
            if len(rep.problems) > limit:
                console.print(f"... and {len(rep.problems) - limit} more (--json lists all)")
        if not rep.macs_checked:
            err_console.print("[yellow]MACs not checked: this node's audit key is not "
                              "available[/yellow]")
    if not rep.intact:
        raise typer.Exit(1)


@audit_app.command("export")
@handle_errors
def audit_export(
    out: Annotated[Path, typer.Option(help="File to write (the report goes to "
                                           "FILE.verification.json).")],
    since: SinceOpt = None,
    until: UntilOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl (lines as stored, verifiable) "
                                                      "or csv.")] = "jsonl",
    anchor: AnchorOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write the entries of a period and a verification report, e.g. for a regulator."""
    from mida.sharing.audit import export, parse_when

    log = _log()
    rep = export(log, out, since=parse_when(since), until=parse_when(until, end=True),
                 fmt=fmt, anchors=_anchors(anchor))
    audit("audit.export", {"file": out.name, "format": fmt, "entries": rep["entries"],
                           "since": rep["period"]["since"], "until": rep["period"]["until"],
                           "sha256": rep["sha256"], "intact": rep["verification"]["intact"]})
    summary = {"out": str(out), "report": f"{out}.verification.json", "format": fmt,
               "entries": rep["entries"], "sha256": rep["sha256"],
               "log_intact": rep["verification"]["intact"],
               "problems": len(rep["verification"]["problems"])}
    if json_out:
        emit_json(summary)
    else:
        kv(summary, title="audit export")
    if not rep["verification"]["intact"]:
        err_console.print("[bold red]warning:[/bold red] the audit trail is not intact; the "
                          "report lists the problems (`mida audit verify`)")


@audit_app.command("anchor")
@handle_errors
def audit_anchor(
    out: Annotated[Path | None, typer.Option(help="Write it to this file (default: print).")]
    = None,
) -> None:
    """Print the signed anchor (last sequence number and MAC) to keep somewhere else.

    Later, `mida audit verify --anchor FILE` checks that the log still holds
    that entry: this catches a log rolled back together with its local anchor.
    """
    head = _log().anchor()
    if head is None:
        raise MidaError("the audit trail has no anchor yet (no keyed entry was appended)")
    text = json.dumps(head, indent=2, sort_keys=True) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        console.print(f"anchor of entry {head['seq']} written to {out}")


# ------------------------------------------------------------------ reports

@reports_app.command("usage")
@handle_errors
def reports_usage(
    collection: Annotated[str | None, typer.Option(help="Only this collection.")] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Who used which collection, for which approved purpose, doing what, how often."""
    from mida.sharing.audit import parse_when
    from mida.sharing.reports import usage

    n = node()
    with n.catalog().session() as s:
        rep = usage(s, _log(), collection=collection, since=parse_when(since),
                    until=parse_when(until, end=True))
    audit("reports.usage", {"collection": collection, "since": rep["period"]["since"],
                            "until": rep["period"]["until"], "rows": len(rep["rows"])})
    if json_out:
        emit_json(rep)
        return
    table(rep["rows"], title="usage", columns=["collection", "user", "purpose", "request_id",
                                               "action", "count", "first", "last"])
    if rep["totals"]:
        table([{"collection": c, **t} for c, t in rep["totals"].items()], title="totals")


@reports_app.command("attribution")
@handle_errors
def reports_attribution(
    ref: Annotated[str, typer.Argument(help="NAME@X.Y.Z (or NAME: the latest version).")],
    json_out: JsonOpt = False,
) -> None:
    """Each institution's share of a release: patients, studies, series, annotations."""
    from mida.datasets.attribution import attribution

    n = node()
    with n.catalog().session() as s:
        rep = attribution(s, n.store(), ref)
    if json_out:
        emit_json(rep)
        return

    def cell(i: dict[str, Any], k: str) -> str:
        return f"{i[k]} ({i['share'][k] * 100:.1f}%)"

    table([{"institution": i["code"], "name": i["name"],
            **{k: cell(i, k) for k in ("patients", "studies", "series", "annotations")},
            "collections": ", ".join(c["name"] for c in i["collections"])}
           for i in rep["institutions"]], title=f"attribution of {rep['release']}")
    for i in rep["institutions"]:
        for c in i["collections"]:
            if c["citation"]:
                console.print(f"[bold]{c['name']}[/bold] ({i['code']}): {c['citation']}")


# ------------------------------------------------------------------ consent

@consent_app.command("withdraw")
@handle_errors
def consent_withdraw(
    patient: Annotated[str, typer.Argument(help="Pseudonymous PatientID.")],
    note: Annotated[str, typer.Option(help="Where the withdrawal is documented (no names).")]
    = "",
    json_out: JsonOpt = False,
) -> None:
    """Withdraw a patient: left out of every future release and export; lists past releases."""
    from mida.sharing import consent

    n = node()
    with n.catalog().session() as s:
        w = consent.withdraw(s, patient, by=_login(), note=note, audit=_log())
    data = w.as_dict()
    if json_out:
        emit_json(data)
        return
    console.print(f"consent of {patient} recorded as withdrawn (restriction "
                  f"{w.restriction_id}): future releases and every export leave them out")
    if w.releases:
        table(w.releases, title="past releases that contained the patient (tell their "
                                "recipients)", columns=["release", "series", "created"])
    else:
        console.print("no past release contained the patient")


@consent_app.command("releases")
@handle_errors
def consent_releases(
    patient: Annotated[str, typer.Argument(help="Pseudonymous PatientID.")],
    json_out: JsonOpt = False,
) -> None:
    """The releases that contain a patient, with their series counts."""
    from mida.sharing.consent import releases_with

    with node().catalog().session() as s:
        rows = releases_with(s, patient)
    emit_json(rows) if json_out else table(rows, title="releases",
                                           columns=["release", "series", "created"])


# ------------------------------------------------------------------ vault

def _need_vault() -> None:
    if not settings().vault_file.exists():
        raise MidaError("this node has no linkage vault: set MIDA_LINKAGE_VAULT=true before "
                        "ingest")


@vault_app.command("request")
@handle_errors
def vault_request(
    pseudonym: Annotated[str, typer.Argument(help="A PatientID pseudonym.")],
    justification: Annotated[str, typer.Option(
        help="Why the identity is needed (20+ characters; recorded and shown to the "
             "approver).")],
    as_user: AsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Step 1 (honest broker): ask to resolve a pseudonym; a second person must approve."""
    from mida.sharing import broker

    _need_vault()
    with node().catalog().session() as s:
        row = broker.request_resolution(s, pseudonym, justification, as_user or _login(),
                                        audit=_log())
        data = broker.describe(row)
    if json_out:
        emit_json(data)
    else:
        console.print(f"resolution {data['id']} requested: another honest broker or an admin "
                      f"approves it with `mida vault decide {data['id']} --approve --reason ...`")


@vault_app.command("decide")
@handle_errors
def vault_decide(
    resolution_id: Annotated[int, typer.Argument(help="Resolution id (`mida vault ls`).")],
    approve: Annotated[bool, typer.Option("--approve/--deny", help="Approve or deny.")],
    reason: Annotated[str, typer.Option(help="Why (recorded).")],
    as_user: AsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Step 2 (a second person: honest broker or admin, not the requester): approve or deny."""
    from mida.sharing import broker

    with node().catalog().session() as s:
        data = broker.describe(broker.decide(s, resolution_id, as_user or _login(), approve,
                                             reason, audit=_log()))
    if json_out:
        emit_json(data)
    else:
        console.print(f"resolution {resolution_id} {data['status']}")


@vault_app.command("resolve")
@handle_errors
def vault_resolve(
    resolution_id: Annotated[int, typer.Argument(help="An approved resolution of yours.")],
    as_user: AsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Step 3 (the requester, once, after approval): show the identity behind the pseudonym."""
    from mida.deid.vault import LinkageVault
    from mida.sharing import broker

    _need_vault()
    n = node()
    vault = LinkageVault(n.settings.vault_file, n.vault_key())
    try:
        with n.catalog().session() as s:
            data = broker.resolve(s, vault, resolution_id, as_user or _login(), audit=_log())
            pseudonym = broker.get(s, resolution_id).pseudonym
    finally:
        vault.close()
    # shown only once the resolution is committed as used
    if json_out:
        emit_json(data)
    else:
        kv(data, title=f"identity behind {pseudonym} (resolution {resolution_id}, audited)")


@vault_app.command("ls")
@handle_errors
def vault_ls(
    status: Annotated[str | None, typer.Option(
        help="pending | approved | denied | resolved")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List resolutions (never identities)."""
    from mida.sharing import broker

    with node().catalog().session() as s:
        rows = broker.list_all(s, status)
    emit_json(rows) if json_out else table(rows, title="vault resolutions", columns=[
        "id", "pseudonym", "status", "requested_by", "decided_by", "created", "justification"])


@vault_app.command("lookup", hidden=True)
@handle_errors
def vault_lookup(pseudonym: Annotated[str, typer.Argument()] = "") -> None:
    """Replaced by the two-person flow (request, decide, resolve)."""
    raise MidaError("one-person lookup was replaced by a two-person resolution: "
                    "`mida vault request PSEUDONYM --justification ...`, then a second "
                    "person runs `mida vault decide ID --approve --reason ...`, then "
                    "`mida vault resolve ID`")


__all__ = ["audit_app", "consent_app", "reports_app", "vault_app"]
