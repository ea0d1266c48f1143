"""``mida aes`` and ``mida scp``: the DICOM network node's peers and the node itself."""

from __future__ import annotations

import typer

aes_app = typer.Typer(no_args_is_help=True, help="DICOM peers (AEs) allowed to call this node.")

__all__ = ["aes_app"]
