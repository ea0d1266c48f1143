"""The HTTP face (FastAPI): REST API and the web pages."""

from mida.api.app import create_app

__all__ = ["create_app"]
