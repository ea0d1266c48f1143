"""Server-rendered pages (Jinja2 templates) and the static files they load (``/static``)."""

from pathlib import Path

from fastapi.templating import Jinja2Templates

TEMPLATE_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
templates = Jinja2Templates(directory=str(TEMPLATE_DIR))

__all__ = ["STATIC_DIR", "TEMPLATE_DIR", "templates"]
