"""What every ``mida`` command module shares: error handling, settings, the node."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from mida.cli import logs
from mida.cli.output import err_console
from mida.config import Settings, get_settings
from mida.errors import MidaError

F = TypeVar("F", bound=Callable[..., Any])
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def handle_errors(fn: F) -> F:
    """Turn mida errors into a one-line message and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MidaError as exc:
            err_console.print(f"[bold red]error:[/bold red] {exc}")
            raise typer.Exit(1) from None
        except FileNotFoundError as exc:
            err_console.print(f"[bold red]error:[/bold red] {exc}")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def settings() -> Settings:
    s = get_settings()
    logs.configure(s)
    return s


def node() -> Any:
    from mida.node import load_node

    return load_node(settings())


def audit(action: str, detail: dict[str, Any]) -> None:
    """Record a console action in the node's audit trail."""
    from mida.sharing import AuditLog

    s = settings()
    AuditLog(s.audit_file, fsync=s.audit_fsync).append(action, detail)


__all__ = ["JsonOpt", "audit", "handle_errors", "node", "settings"]
