"""``mida users``, ``mida tokens`` and ``mida grants``: who may call this node, and on what.

Run at the node's console (with its files), so they need no token themselves;
each change is written to the audit trail. A token is printed once and only
its sha256 is kept.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mida.cli.common import JsonOpt, audit, handle_errors, node
from mida.cli.output import console, emit_json, table
from mida.sharing import identity

users_app = typer.Typer(no_args_is_help=True, help="Users of this node and their roles.")
tokens_app = typer.Typer(no_args_is_help=True, help="API tokens (Bearer) for users.")
grants_app = typer.Typer(no_args_is_help=True,
                         help="Users' rights to collections and releases.")

ROLE_HELP = "Role: " + ", ".join(f"{r} (up to {s}{', every collection' if every else ''})"
                                 for r, (s, every) in identity.ROLES.items())


@users_app.command("add")
@handle_errors
def users_add(name: Annotated[str, typer.Argument(help="User name.")],
              role: Annotated[str, typer.Option(help=ROLE_HELP)] = "researcher") -> None:
    """Add a user."""
    with node().catalog().session() as s:
        identity.add_user(s, name, role)
    audit("users.add", {"user": name, "role": role})
    console.print(f"user [bold]{name}[/bold] added with role {role}")


@users_app.command("ls")
@handle_errors
def users_ls(json_out: JsonOpt = False) -> None:
    """List users."""
    with node().catalog().session() as s:
        rows = identity.list_users(s)
    emit_json(rows) if json_out else table(rows, title="users")


@users_app.command("disable")
@handle_errors
def users_disable(name: str) -> None:
    """Disable a user: every token of theirs stops working at once."""
    with node().catalog().session() as s:
        identity.set_disabled(s, name, True)
    audit("users.disable", {"user": name})
    console.print(f"user {name} disabled")


@tokens_app.command("create")
@handle_errors
def tokens_create(
    user: Annotated[str, typer.Option(help="Whose token.")],
    scope: Annotated[str, typer.Option(help="read, write or admin.")] = "read",
    collection: Annotated[str | None, typer.Option(
        help="Limit the token to one collection.")] = None,
    expires: Annotated[str, typer.Option(help="Lifetime: 30d, 12h, 90m, 1w.")] = "30d",
    json_out: JsonOpt = False,
) -> None:
    """Create a token and print it once (it cannot be shown again)."""
    with node().catalog().session() as s:
        secret, row = identity.create_token(s, user, scope, collection=collection,
                                            expires_in=identity.parse_expiry(expires))
        info = {"id": row.id, "user": user, "scope": scope, "collection": collection or "*",
                "expires": row.expires.isoformat() if row.expires else None}
    audit("tokens.create", info)
    if json_out:
        emit_json({**info, "token": secret})
    else:
        console.print(f"token {info['id']} for {user} ({scope} on {info['collection']}, "
                      f"expires {info['expires']}); shown once:")
        typer.echo(secret)


@tokens_app.command("ls")
@handle_errors
def tokens_ls(user: Annotated[str | None, typer.Option(help="Only this user's.")] = None,
              json_out: JsonOpt = False) -> None:
    """List tokens (never their secrets)."""
    with node().catalog().session() as s:
        rows = identity.list_tokens(s, user)
    emit_json(rows) if json_out else table(rows, title="tokens")


@tokens_app.command("revoke")
@handle_errors
def tokens_revoke(token_id: Annotated[int, typer.Argument(help="Token id (tokens ls).")]) -> None:
    """Revoke a token; it stops working at once."""
    with node().catalog().session() as s:
        identity.revoke_token(s, token_id)
    audit("tokens.revoke", {"id": token_id})
    console.print(f"token {token_id} revoked")


@grants_app.command("add")
@handle_errors
def grants_add(
    user: Annotated[str, typer.Option(help="Who.")],
    scope: Annotated[str, typer.Option(help="read, write or admin.")] = "read",
    collection: Annotated[str | None, typer.Option(
        help="Which collection (default: every one).")] = None,
    release: Annotated[str | None, typer.Option(
        help="A release NAME@X.Y.Z instead of a collection: opens its summary, manifest, "
        "card and download only.")] = None,
    download: Annotated[bool, typer.Option(
        "--download/--view-only",
        help="--view-only: metadata, counts, rendered images and compute, but no raw data "
        "(WADO-RS retrieval, release download).")] = True,
    expires: Annotated[str | None, typer.Option(help="Lifetime: 30d, 12h, 1w.")] = None,
    purpose: Annotated[str, typer.Option(help="Why (recorded).")] = "",
) -> None:
    """Grant a user a scope on a collection, or read access to one release."""
    from mida.catalog.models import utcnow

    when = utcnow() + identity.parse_expiry(expires) if expires else None
    with node().catalog().session() as s:
        g = identity.add_grant(s, user, scope, collection, when, purpose, release=release,
                               download=download)
        gid = g.id
    target = f"release {release}" if release else collection or "every collection"
    audit("grants.add", {"id": gid, "user": user, "scope": scope,
                         "collection": None if release else collection or "*",
                         "release": release, "download": download, "purpose": purpose})
    console.print(f"grant {gid}: {user} may {scope} {target}"
                  + ("" if download else " (view only)"))


@grants_app.command("ls")
@handle_errors
def grants_ls(user: Annotated[str | None, typer.Option(help="Only this user's.")] = None,
              json_out: JsonOpt = False) -> None:
    """List grants."""
    with node().catalog().session() as s:
        rows = identity.list_grants(s, user)
    emit_json(rows) if json_out else table(rows, title="grants")


@grants_app.command("revoke")
@handle_errors
def grants_revoke(grant_id: Annotated[int, typer.Argument(help="Grant id (grants ls).")]) -> None:
    """Revoke a grant; it stops working at the next request."""
    with node().catalog().session() as s:
        g = identity.revoke_grant(s, grant_id)
        detail = {"id": grant_id, "user_id": g.user_id, "collection_id": g.collection_id,
                  "release_id": g.release_id, "request": g.request_id}
    audit("grants.revoke", detail)
    console.print(f"grant {grant_id} revoked")


def console_login(url_base: str) -> str:
    """A sign-in link for the node's operator (user ``operator``, created when absent).

    Like Jupyter's startup link: whoever runs ``mida serve`` at the node's
    console holds its files anyway; the token in the link is an admin token
    that expires in a day, and its creation is audited.
    """
    from sqlalchemy import select

    from mida.catalog.models import User

    with node().catalog().session() as s:
        if s.scalar(select(User.id).where(User.name == "operator")) is None:
            identity.add_user(s, "operator", "operator")
        secret, row = identity.create_token(s, "operator", "admin",
                                            expires_in=identity.parse_expiry("1d"))
        token_id = row.id
    audit("tokens.create", {"id": token_id, "user": "operator", "scope": "admin",
                            "collection": "*", "reason": "mida serve sign-in link"})
    return f"{url_base}/login?token={secret}"


__all__ = ["console_login", "grants_app", "tokens_app", "users_app"]
