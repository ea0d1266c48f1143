"""The command-line face (Typer + rich): parse input, call a service, format output."""

from mida.cli.main import app

__all__ = ["app"]
