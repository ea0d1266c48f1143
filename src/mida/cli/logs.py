"""Logging set-up for the CLI: a file under MIDA_HOME/logs and warnings on stderr.

Log records come from services that never put identified data in a message;
this set-up adds nothing but time, level and logger name.
"""

from __future__ import annotations

import logging
import logging.handlers

from mida.config import Settings


class _NodeLog(logging.handlers.RotatingFileHandler):
    """The node's log file (one per MIDA_HOME; replaced when the home changes)."""


def configure(settings: Settings) -> None:
    root = logging.getLogger("mida")
    root.setLevel(settings.log_level)
    if not settings.home.exists():
        return
    path = settings.log_dir / "mida.log"
    for h in list(root.handlers):
        if isinstance(h, _NodeLog):
            if h.baseFilename == str(path.absolute()):
                return
            root.removeHandler(h)
            h.close()
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    fh = _NodeLog(path, maxBytes=20 * 1024 * 1024, backupCount=5, encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(fh)


__all__ = ["configure"]
