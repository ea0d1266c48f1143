"""``mida features``: acquisition parameters, image QC and radiomics per series."""

from __future__ import annotations

import typer

features_app = typer.Typer(no_args_is_help=True,
                           help="Feature parameters: acquisition, quality control, radiomics.")
