"""``mida pacs``: hospital PACS this node pulls from (C-FIND, then C-MOVE or C-GET)."""

from __future__ import annotations

import typer

pacs_app = typer.Typer(no_args_is_help=True, help="Hospital PACS to pull studies from.")

__all__ = ["pacs_app"]
