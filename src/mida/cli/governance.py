"""``mida requests``, ``mida dua``, ``mida collections``, ``mida institutions``: data governance.

The request commands act **as a named user** (``--as USER``): the node's
operator, at its console, acting on behalf of a researcher, a DAC member or a
handler. That is how small sites without the web pages, and the tests, drive
the workflow; the normal path is the user's own token on the API
(``/api/requests``), where the caller is the token's user. Every step is
written to the audit trail, with the console's operating-system user as the
actor and the user acted for in the entry. Read commands without ``--as``
show everything, as the console sees it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer

from mida.cli.access import users_app
from mida.cli.common import JsonOpt, audit, handle_errors, node
from mida.cli.output import console, emit_json, kv, table
from mida.errors import MidaError

requests_app = typer.Typer(no_args_is_help=True,
                           help="Access requests: submit, decide (DAC), accept the DUA.")
dua_app = typer.Typer(no_args_is_help=True, help="Data use agreement templates (versioned).")
collections_app = typer.Typer(no_args_is_help=True,
                              help="Collections: create one for an institution; terms.")
institutions_app = typer.Typer(no_args_is_help=True,
                               help="Institutions (data providers) hosted on this node.")

AsUser = Annotated[str, typer.Option("--as", help="Act as this user (see the module help).")]
AsViewer = Annotated[str | None, typer.Option(
    "--as", help="See what this user sees (default: everything, as the console).")]


def _date(text: str | None) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise MidaError(f"bad date {text!r}: use YYYY-MM-DD") from None


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise MidaError(f"no such file: {path}")
    return path.read_bytes()


# ----------------------------------------------------------------- requests

@requests_app.command("submit")
@handle_errors
def requests_submit(
    as_user: AsUser,
    title: Annotated[str, typer.Option(help="A short title.")],
    purpose: Annotated[str, typer.Option(help="What the data is for (the DACs read it).")],
    irb_number: Annotated[str, typer.Option(help="The IRB approval number.")],
    irb_body: Annotated[str, typer.Option(help="The IRB that approved the study.")],
    irb_expiry: Annotated[str, typer.Option(help="When the IRB approval expires (YYYY-MM-DD).")],
    irb_document: Annotated[Path, typer.Option(help="The approval letter (PDF).")],
    dua: Annotated[str, typer.Option(help="The DUA: name@version (or name: its newest).")],
    cohort: Annotated[str | None, typer.Option(help="A saved cohort.")] = None,
    release: Annotated[str | None, typer.Option(help="A release NAME@X.Y.Z.")] = None,
    handler: Annotated[list[str] | None, typer.Option(
        help="A named data handler (repeat); you are one whether named or not.")] = None,
    download: Annotated[bool, typer.Option(
        help="Handlers need to download the data (--no-download: view and compute on the "
             "node only).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Submit an access request; it goes to the DAC of each institution owning the data."""
    from mida.datasets import access
    from mida.sharing import requests as rq

    n = node()
    with rq.AuditBuffer(audit) as trail, n.catalog().session() as s:
        row = access.submit(
            s, n.store(), as_user, title=title, purpose=purpose, cohort=cohort,
            release=release, handlers=handler or [], irb_number=irb_number, irb_body=irb_body,
            irb_expiry=_date(irb_expiry), irb_document=_read(irb_document),
            irb_document_name=irb_document.name, download=download, dua=dua,
            node_cap=n.settings.handler_cap, audit=trail)
        out = rq.summary(s, row)
    if json_out:
        emit_json(out)
    else:
        console.print(f"request [bold]{out['id']}[/bold] submitted to the DAC of "
                      f"{', '.join(out['institutions'])}")


@requests_app.command("ls")
@handle_errors
def requests_ls(
    as_user: AsViewer = None,
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    queue: Annotated[bool, typer.Option(
        "--queue", help="The DAC queue of --as: what their institution has yet to decide.")]
    = False,
    json_out: JsonOpt = False,
) -> None:
    """List the requests a user may see (or the DAC queue of a DAC member)."""
    from mida.sharing import requests as rq

    if queue and as_user is None:
        raise MidaError("--queue shows a DAC member's queue: name them with --as USER")
    with node().catalog().session() as s:
        rows = (rq.pending_for(s, as_user) if queue and as_user is not None
                else rq.list_requests(s, as_user, status))
        out = [rq.summary(s, r) for r in rows]
    if json_out:
        emit_json(out)
    else:
        table(out, title="DAC queue" if queue else "access requests",
              columns=["id", "title", "researcher", "data", "status", "revision",
                       "institutions", "updated"])


@requests_app.command("show")
@handle_errors
def requests_show(request_id: Annotated[int, typer.Argument(help="Request id.")],
                  as_user: AsViewer = None, json_out: JsonOpt = False) -> None:
    """Show a request: decisions per institution, handlers and their DUA, grants."""
    from mida.sharing import requests as rq

    with node().catalog().session() as s:
        out = rq.show(s, request_id, as_user)
    if json_out:
        emit_json(out)
        return
    kv({k: v for k, v in out.items() if k not in ("history", "handlers", "grants")},
       title=f"request {request_id}")
    table(out["history"], title="decisions")
    table(out["handlers"], title="handlers")
    if out["grants"]:
        table(out["grants"], title="grants")


@requests_app.command("irb")
@handle_errors
def requests_irb(request_id: Annotated[int, typer.Argument(help="Request id.")],
                 out: Annotated[Path, typer.Option(help="Write the document here.")],
                 as_user: AsViewer = None) -> None:
    """Save a request's IRB approval document (for the DAC's review)."""
    from mida.sharing import requests as rq

    n = node()
    with n.catalog().session() as s:
        name, data = rq.irb_document(s, n.store(), request_id, as_user)
    out.write_bytes(data)
    console.print(f"{name} ({len(data)} bytes) written to {out}")


@requests_app.command("review")
@handle_errors
def requests_review(
    request_id: Annotated[int, typer.Argument(help="Request id.")],
    decision: Annotated[str, typer.Argument(help="approve | reject | changes")],
    as_user: AsUser,
    reason: Annotated[str, typer.Option(
        help="Why (needed to reject or ask for changes; the researcher reads it).")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Decide on a request for the DAC member's institution (once per revision)."""
    from mida.sharing import requests as rq

    with rq.AuditBuffer(audit) as trail, node().catalog().session() as s:
        rq.review(s, request_id, as_user, decision, reason, audit=trail)
        out = rq.summary(s, rq.get_request(s, request_id))
    if json_out:
        emit_json(out)
    else:
        console.print(f"request {request_id}: {decision} recorded; it is now {out['status']}")


@requests_app.command("resubmit")
@handle_errors
def requests_resubmit(
    request_id: Annotated[int, typer.Argument(help="Request id.")],
    as_user: AsUser,
    title: Annotated[str | None, typer.Option(help="A new title.")] = None,
    purpose: Annotated[str | None, typer.Option(help="A new purpose.")] = None,
    cohort: Annotated[str | None, typer.Option(help="Another saved cohort.")] = None,
    release: Annotated[str | None, typer.Option(help="Another release NAME@X.Y.Z.")] = None,
    handler: Annotated[list[str] | None, typer.Option(
        help="The handlers, replacing the old list (repeat).")] = None,
    irb_number: Annotated[str | None, typer.Option()] = None,
    irb_body: Annotated[str | None, typer.Option()] = None,
    irb_expiry: Annotated[str | None, typer.Option(help="YYYY-MM-DD")] = None,
    irb_document: Annotated[Path | None, typer.Option(help="A new approval letter.")] = None,
    download: Annotated[bool | None, typer.Option("--download/--no-download")] = None,
    dua: Annotated[str | None, typer.Option(help="Another DUA name@version.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Answer a DAC's request for changes: change what they asked, submit again."""
    from mida.datasets import access
    from mida.sharing import requests as rq

    changes: dict[str, Any] = {k: v for k, v in {
        "title": title, "purpose": purpose, "cohort": cohort, "release": release,
        "handlers": handler, "irb_number": irb_number, "irb_body": irb_body,
        "irb_expiry": _date(irb_expiry), "download": download, "dua": dua}.items()
        if v is not None}
    if irb_document is not None:
        changes.update(irb_document=_read(irb_document), irb_document_name=irb_document.name)
    n = node()
    with rq.AuditBuffer(audit) as trail, n.catalog().session() as s:
        row = access.resubmit(s, n.store(), request_id, as_user, audit=trail,
                              node_cap=n.settings.handler_cap, **changes)
        out = rq.summary(s, row)
    if json_out:
        emit_json(out)
    else:
        console.print(f"request {request_id} resubmitted as revision {out['revision']}")


@requests_app.command("withdraw")
@handle_errors
def requests_withdraw(request_id: Annotated[int, typer.Argument(help="Request id.")],
                      as_user: AsUser) -> None:
    """Withdraw a request (its researcher, before it is granted)."""
    from mida.sharing import requests as rq

    with rq.AuditBuffer(audit) as trail, node().catalog().session() as s:
        rq.withdraw(s, request_id, as_user, audit=trail)
    console.print(f"request {request_id} withdrawn")


@requests_app.command("accept-dua")
@handle_errors
def requests_accept_dua(
    request_id: Annotated[int, typer.Argument(help="Request id.")],
    as_user: AsUser,
    yes: Annotated[bool, typer.Option(
        "--yes", help="Confirm that the handler has read and accepts the DUA "
                      "('mida dua show NAME@VERSION').")] = False,
    json_out: JsonOpt = False,
) -> None:
    """A named handler accepts the request's DUA; the last one to accept makes the grants."""
    from mida.datasets import access
    from mida.sharing import requests as rq

    if not yes:
        raise MidaError("accepting a data use agreement binds the handler: read it "
                        "('mida requests show ID' names it, 'mida dua show REF' prints it), "
                        "then run again with --yes")
    n = node()
    with rq.AuditBuffer(audit) as trail, n.catalog().session() as s:
        acc = access.accept_dua(s, n.store(), request_id, as_user, audit=trail,
                                within_irb=n.settings.grant_within_irb, tz=n.settings.tz)
        row = rq.get_request(s, request_id)
        out = {**rq.summary(s, row), "dua_sha256": acc.template_sha256}
        if row.status == "granted":
            out["grants"] = rq.show(s, request_id, None)["grants"]
            out["release"] = rq.show(s, request_id, None)["granted_release"]
    if json_out:
        emit_json(out)
    elif out["status"] == "granted":
        console.print(f"DUA accepted; every handler has: {len(out['grants'])} grants made on "
                      f"{out['release']}")
    else:
        console.print(f"DUA accepted by {as_user}; waiting for the other handlers")


# ----------------------------------------------------------------- DUA templates

@dua_app.command("add")
@handle_errors
def dua_add(path: Annotated[Path, typer.Argument(help="The agreement's text (Markdown).")],
            name: Annotated[str, typer.Option(help="Template name, e.g. hwdc-standard.")],
            version: Annotated[str, typer.Option(help="Version, e.g. 1.0.")],
            title: Annotated[str, typer.Option(help="Title shown to handlers.")],
            json_out: JsonOpt = False) -> None:
    """Add a DUA version (the same text again is a no-op; other text is refused)."""
    from mida.sharing import dua

    try:
        body = _read(path).decode("utf-8")
    except UnicodeDecodeError:
        raise MidaError(f"{path} is not UTF-8 text") from None
    with node().catalog().session() as s:
        row, created = dua.add_template(s, name, version, title, body)
        out = {**dua.view(row, body=False), "created": created}
    if created:
        audit("dua.add", {"dua": out["ref"], "sha256": out["sha256"]})
    if json_out:
        emit_json(out)
    else:
        console.print(f"DUA [bold]{out['ref']}[/bold] "
                      f"{'added' if created else 'already present (unchanged)'}")


@dua_app.command("ls")
@handle_errors
def dua_ls(json_out: JsonOpt = False) -> None:
    """List DUA templates (every version)."""
    from mida.sharing import dua

    with node().catalog().session() as s:
        rows = [dua.view(r, body=False) for r in dua.list_templates(s)]
    emit_json(rows) if json_out else table(rows, title="data use agreements",
                                           columns=["ref", "title", "sha256", "created"])


@dua_app.command("show")
@handle_errors
def dua_show(ref: Annotated[str, typer.Argument(help="name@version (or name: newest).")],
             json_out: JsonOpt = False) -> None:
    """Print a DUA's text."""
    from mida.sharing import dua

    with node().catalog().session() as s:
        out = dua.view(dua.get_template(s, ref))
    if json_out:
        emit_json(out)
    else:
        console.print(f"[bold]{out['title']}[/bold] ({out['ref']}, sha256 {out['sha256']})\n")
        typer.echo(out["body"])


# ----------------------------------------------------------------- collections, institutions

@collections_app.command("create")
@handle_errors
def collections_create(
    name: Annotated[str, typer.Argument(help="Collection name.")],
    institution: Annotated[str, typer.Option(help="The owning institution's code.")],
    profile: Annotated[str | None, typer.Option(
        help="De-identification profile (default MIDA_DEID_PROFILE).")] = None,
    description: Annotated[str, typer.Option(help="What the collection holds.")] = "",
) -> None:
    """Create an empty collection owned by an institution (ingest into it by name)."""
    from mida.sharing import governance

    n = node()
    with n.catalog().session() as s:
        row = governance.create_collection(s, name, institution,
                                           profile or n.settings.deid_profile,
                                           home=n.settings.home, description=description)
        prof = row.deid_profile
    audit("collections.create", {"collection": name, "institution": institution,
                                 "profile": prof})
    console.print(f"collection [bold]{name}[/bold] owned by {institution} (profile {prof})")


@collections_app.command("terms")
@handle_errors
def collections_terms(
    name: Annotated[str, typer.Argument(help="Collection name.")],
    license: Annotated[str | None, typer.Option(
        help="Licence id, e.g. CC-BY-NC-4.0 ('' clears it).")] = None,
    citation: Annotated[str | None, typer.Option(help="How to cite the data.")] = None,
    terms_file: Annotated[Path | None, typer.Option(
        help="A text file with the terms of use.")] = None,
    contributor: Annotated[list[str] | None, typer.Option(
        help="A contributor to credit (repeat; replaces the list).")] = None,
    handler_cap: Annotated[int | None, typer.Option(
        help="Most named handlers per request (0: the node's MIDA_HANDLER_CAP).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a collection's terms, or change those given."""
    from mida.sharing import governance

    terms_text = None
    if terms_file is not None:
        try:
            terms_text = _read(terms_file).decode("utf-8")
        except UnicodeDecodeError:
            raise MidaError(f"{terms_file} is not UTF-8 text") from None
    change = {"license": license, "citation": citation, "terms_of_use": terms_text,
              "contributors": contributor, "handler_cap": handler_cap}
    changed = sorted(k for k, v in change.items() if v is not None)
    with node().catalog().session() as s:
        out = (governance.set_terms(s, name, license=license, terms_of_use=terms_text,
                                    citation=citation, contributors=contributor,
                                    handler_cap=handler_cap) if changed
               else governance.terms(s, name))
    if changed:
        audit("collections.terms", {"collection": name, "changed": changed})
    if json_out:
        emit_json(out)
    else:
        kv(out, title=f"collection {name}")


@institutions_app.command("add")
@handle_errors
def institutions_add(code: Annotated[str, typer.Argument(help="Short code, e.g. CGMH.")],
                     name: Annotated[str, typer.Option(help="Full name.")]) -> None:
    """Add an institution whose collections this node hosts."""
    from mida.sharing import governance

    with node().catalog().session() as s:
        governance.add_institution(s, code, name)
    audit("institutions.add", {"institution": code})
    console.print(f"institution [bold]{code}[/bold] added")


@institutions_app.command("ls")
@handle_errors
def institutions_ls(json_out: JsonOpt = False) -> None:
    """List institutions with their numbers of collections and users."""
    from mida.sharing import governance

    with node().catalog().session() as s:
        rows = governance.list_institutions(s)
    emit_json(rows) if json_out else table(rows, title="institutions")


@users_app.command("institution")
@handle_errors
def users_institution(
    user: Annotated[str, typer.Argument(help="User name.")],
    code: Annotated[str | None, typer.Argument(help="Institution code.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="No institution (platform staff).")]
    = False,
) -> None:
    """Say which institution a user belongs to (a DAC member decides for it)."""
    from mida.sharing import governance

    if (code is None) == (not clear):
        raise MidaError("give an institution code, or --clear")
    with node().catalog().session() as s:
        governance.set_institution(s, user, code)
    audit("users.institution", {"user": user, "institution": code})
    console.print(f"user {user}: institution {code or 'none'}")


__all__ = ["collections_app", "dua_app", "institutions_app", "requests_app"]
