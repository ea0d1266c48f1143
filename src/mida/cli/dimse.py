"""``mida aes`` and ``mida scp``: the DICOM network node's peers and the node itself.

A peer (role ``peer``) is a DICOM application allowed to call this node: its
calling AE title, and the host it must call from (an IP address, a name, or
``*`` for any). Its scope (read: C-FIND, C-MOVE, C-GET; write: C-STORE too)
applies to one collection or to every one. The same entry is the address a
C-MOVE to that AE title sends to. Changes are written to the audit trail.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mida.cli.common import JsonOpt, audit, handle_errors, node
from mida.cli.output import console, emit_json, table
from mida.sharing import identity

aes_app = typer.Typer(no_args_is_help=True, help="DICOM peers (AEs) allowed to call this node.")


@aes_app.command("add")
@handle_errors
def aes_add(
    name: Annotated[str, typer.Argument(help="A name for the peer, e.g. ct-scanner-3.")],
    aet: Annotated[str, typer.Option("--aet", help="Its calling AE title (1-16 characters).")],
    host: Annotated[str, typer.Option(
        help="Where it calls from and listens (C-MOVE destination): IP address or host "
             "name; '*' accepts calls from any address.")],
    port: Annotated[int, typer.Option(help="Its listening port (C-MOVE destination).")],
    scope: Annotated[str, typer.Option(
        help="read (C-FIND, C-MOVE, C-GET), write (also C-STORE) or admin.")] = "read",
    collection: Annotated[str | None, typer.Option(
        help="Limit it to one collection (default: every collection).")] = None,
) -> None:
    """Allow a DICOM peer to call this node."""
    with node().catalog().session() as s:
        peer = identity.add_peer(s, name, aet, host, port, role="peer", scope=scope,
                                 collection=collection)
        info = {"name": peer.name, "ae_title": peer.ae_title, "host": host, "port": port,
                "scope": scope, "collection": collection or "*"}
    audit("aes.add", info)
    console.print(f"AE [bold]{name}[/bold] ({info['ae_title']} at {host}:{port}) may {scope} "
                  f"{collection or 'every collection'}")


@aes_app.command("ls")
@handle_errors
def aes_ls(json_out: JsonOpt = False) -> None:
    """List the DICOM peers allowed to call this node."""
    with node().catalog().session() as s:
        rows = identity.list_peers(s, role="peer")
    if json_out:
        emit_json(rows)
    else:
        table(rows, title="DICOM peers",
              columns=["name", "ae_title", "host", "port", "scope", "collection"])


@aes_app.command("rm")
@handle_errors
def aes_rm(name: Annotated[str, typer.Argument(help="The peer's name (aes ls).")]) -> None:
    """Remove a DICOM peer: its new associations are rejected."""
    with node().catalog().session() as s:
        identity.remove_peer(s, name, role="peer")
    audit("aes.rm", {"name": name})
    console.print(f"AE {name} removed")


@handle_errors
def scp_command(
    port: Annotated[int | None, typer.Option(
        help="DICOM port (default MIDA_DICOM_PORT, 11112).")] = None,
    aet: Annotated[str | None, typer.Option(
        "--aet", help="This node's AE title (default MIDA_DICOM_AE_TITLE).")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default MIDA_HOST).")] = None,
) -> None:
    """Run the DICOM node only (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET); Ctrl-C stops it."""
    from mida.net.scp import DicomNode

    dicom = DicomNode(node(), port=port, ae_title=aet, host=host).start()
    console.print(f"DICOM node [bold]{dicom.ae_title}[/bold] listening on "
                  f"{dicom.host}:{dicom.port} (Ctrl-C stops it)")
    dicom.serve_forever()
    console.print("DICOM node stopped")


__all__ = ["aes_app", "scp_command"]
