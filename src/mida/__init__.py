"""mida: Medical Imaging Data for AI.

A node that turns hospital imaging archives into a de-identified, indexed,
content-addressed store ready for AI training. See ``ARCHITECTURE.md`` for the
floors of the package; a module imports only from floors below it.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
