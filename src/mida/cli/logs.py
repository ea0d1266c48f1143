"""Logging set-up for the CLI: a file under MIDA_HOME/logs and warnings on stderr.

Log records come from services that never put identified data in a message;
this set-up adds nothing but time, level and logger name.
"""

from __future__ import annotations

import logging
import logging.handlers

from mida.config import Settings


def configure(settings: Settings) -> None:
    root = logging.getLogger("mida")
    if getattr(root, "_mida_configured", False):
        return
    root.setLevel(settings.log_level)
    if settings.home.exists():
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        fh = logging.handlers.RotatingFileHandler(
            settings.log_dir / "mida.log", maxBytes=20 * 1024 * 1024, backupCount=5,
            encoding="utf-8",
        )
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)
    root._mida_configured = True  # type: ignore[attr-defined]


__all__ = ["configure"]
