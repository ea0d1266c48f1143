"""``mida catalog`` and ``mida sql``: a Parquet snapshot of the catalog queried with DuckDB."""

from __future__ import annotations

import typer

catalog_app = typer.Typer(no_args_is_help=True,
                          help="The catalog as Parquet files, for offline analytics.")
