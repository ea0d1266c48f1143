"""``python -m mida``: the same as the ``mida`` command."""

from mida.cli.main import app

app()
