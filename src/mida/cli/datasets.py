"""``mida cohort`` and ``mida release``: cohort queries and immutable dataset releases."""

from __future__ import annotations

import typer

cohort_app = typer.Typer(no_args_is_help=True,
                         help="Cohorts: count and save expressions over the catalog.")
release_app = typer.Typer(no_args_is_help=True,
                          help="Releases: immutable, versioned datasets; export, card, package.")
