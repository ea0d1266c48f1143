"""Output helpers shared by CLI commands: JSON for scripts, tables for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def table(rows: Sequence[dict[str, Any]], title: str | None = None,
          columns: Sequence[str] | None = None) -> None:
    if not rows:
        console.print(f"[dim]no {title or 'rows'}[/dim]")
        return
    cols = list(columns or rows[0].keys())
    t = Table(title=title, show_lines=False)
    for c in cols:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*("" if r.get(c) is None else str(r.get(c)) for c in cols))
    console.print(t)


def kv(data: dict[str, Any], title: str | None = None) -> None:
    t = Table(title=title, show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value", overflow="fold")
    for k, v in data.items():
        if isinstance(v, dict | list):
            v = json.dumps(v, ensure_ascii=False, default=str)
        t.add_row(str(k), "" if v is None else str(v))
    console.print(t)


__all__ = ["console", "emit_json", "err_console", "kv", "table"]
