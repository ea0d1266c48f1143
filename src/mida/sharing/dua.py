"""Data use agreements: versioned texts that every named handler accepts.

A template is a ``name`` (``mida-standard``), a ``version`` (``1.0.0``), a
title and a body (Markdown). A version, once added, never changes: adding the
same content again is a no-op, and other content under the same name and
version is refused, so an acceptance recorded against ``name@version`` and its
``sha256`` always names the exact text that was accepted. Change the text by
adding a new version.

The ``sha256`` is taken over the canonical form of the template: the title and
the body, each with line endings normalised to ``\\n`` and trailing
whitespace removed from the end, joined by a blank line and encoded as UTF-8.

Examples
--------
>>> template_sha256("Title", "Body\\r\\n") == template_sha256("Title", "Body")
True
>>> version_key("1.10.0") > version_key("1.9.2")
True
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mida.catalog.models import DuaTemplate
from mida.errors import ConflictError, MidaError, NotFoundError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")
#: The longest agreement body accepted (characters).
BODY_MAX = 200_000


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def _canonical(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip()


def template_sha256(title: str, body: str) -> str:
    """The sha256 of a template's canonical text (see the module description)."""
    text = _canonical(title) + "\n\n" + _canonical(body) + "\n"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def add_template(s: Session, name: str, version: str, title: str,
                 body: str) -> tuple[DuaTemplate, bool]:
    """Store a DUA version; ``(row, created)``. The same content again is a no-op."""
    if not _NAME.match(name or ""):
        raise MidaError(f"DUA name {name!r}: 1-64 letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit")
    if not _VERSION.match(version or ""):
        raise MidaError(f"DUA version {version!r}: use numbers separated by dots, e.g. 1.0.0")
    if not title or not title.strip() or len(title) > 256:
        raise MidaError("a DUA needs a title of 1-256 characters (--title)")
    if not body or not body.strip():
        raise MidaError("the DUA text is empty: give the agreement's text")
    if len(body) > BODY_MAX:
        raise MidaError(f"the DUA text has {len(body)} characters; at most {BODY_MAX} are kept")
    sha = template_sha256(title, body)
    row = s.scalar(select(DuaTemplate).where(DuaTemplate.name == name,
                                             DuaTemplate.version == version))
    if row is not None:
        if row.sha256 != sha:
            raise ConflictError(
                f"DUA {name}@{version} already exists with different text; a DUA version is "
                "immutable (handlers accepted its exact text): add it as a new version")
        return row, False
    row = DuaTemplate(name=name, version=version, title=_canonical(title),
                      body=_canonical(body) + "\n", sha256=sha)
    s.add(row)
    s.flush()
    return row, True


def get_template(s: Session, ref: str) -> DuaTemplate:
    """``name@version``, or ``name`` for its newest version."""
    name, _, version = (ref or "").partition("@")
    rows = list(s.scalars(select(DuaTemplate).where(DuaTemplate.name == name)))
    if version:
        rows = [r for r in rows if r.version == version]
    if not rows:
        known = sorted(f"{r.name}@{r.version}" for r in s.scalars(select(DuaTemplate)))
        raise NotFoundError(f"no data use agreement {ref!r}; known: {', '.join(known) or 'none'}"
                            " (add one with 'mida dua add FILE --name N --version V --title T')")
    return max(rows, key=lambda r: version_key(r.version))


def list_templates(s: Session) -> list[DuaTemplate]:
    """Every template version, by name then version."""
    rows = list(s.scalars(select(DuaTemplate)))
    return sorted(rows, key=lambda r: (r.name, version_key(r.version)))


def view(row: DuaTemplate, *, body: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"ref": f"{row.name}@{row.version}", "name": row.name,
                           "version": row.version, "title": row.title, "sha256": row.sha256,
                           "created": row.created.isoformat()}
    if body:
        out["body"] = row.body
    return out


__all__ = [
    "BODY_MAX",
    "add_template",
    "get_template",
    "list_templates",
    "template_sha256",
    "version_key",
    "view",
]
