"""Server-rendered pages (Jinja2 templates)."""

from pathlib import Path

from fastapi.templating import Jinja2Templates

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

__all__ = ["templates"]
