"""Who owns what: institutions, their collections' terms, and users' institutions.

Every collection belongs to one :class:`~mida.catalog.models.Institution`, the
data provider whose data access committee (DAC) decides on requests for it. A
hospital's own node holds one institution (made by ``mida init``); a hub node
hosts the collections of several, each added with :func:`add_institution` and
given its collections with :func:`create_collection` (ingest then fills a
collection it finds by name, keeping its owner).

A collection's **terms** are what a user must see before using its data:

``license``
    The licence identifier, preferably SPDX (``CC-BY-NC-4.0``) or the
    provider's own (``NTUH-DUA-1``); empty when none is set.
``terms_of_use``
    Free text: conditions beyond the licence (no re-identification attempts,
    publication review, ...).
``citation``
    How to cite the data (text, e.g. a reference with its DOI).
``contributors``
    The people and groups to credit, in order.
``handler_cap``
    The most named data handlers a request for this collection may list; empty
    means the node's ``MIDA_HANDLER_CAP`` (6, as the Health and Welfare Data
    Center allows). A request spanning several collections takes the smallest
    cap among them and the node's.

A user's institution (``institution_id``) says which DAC a ``dac-member``
sits on and where a researcher works; platform staff (admin, operator) have
none.

Examples
--------
>>> check_code("NTUH")
'NTUH'
>>> check_code("bad code")
Traceback (most recent call last):
...
mida.errors.MidaError: institution code 'bad code' must be 1-32 letters, digits, - or _
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mida.catalog.models import Collection, Institution, User
from mida.catalog.service import get_collection
from mida.deid.profile import get_profile
from mida.errors import ConflictError, MidaError, NotFoundError

_CODE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
#: The longest licence identifier the catalog keeps.
LICENSE_MAX = 128


def check_code(code: str) -> str:
    """An institution code as ``mida init`` accepts it (letters, digits, ``-``, ``_``)."""
    if not _CODE.match(code or ""):
        raise MidaError(f"institution code {code!r} must be 1-32 letters, digits, - or _")
    return code


# ----------------------------------------------------------------- institutions

def add_institution(s: Session, code: str, name: str, *, key_id: str = "") -> Institution:
    """Add a data provider hosted on this node (a hub hosts several).

    Parameters
    ----------
    code, name
        The short code (``CGMH``) and full name of the provider.
    key_id
        The id of the de-identification key its data is pseudonymised with,
        when it is not this node's (data de-identified at the provider's own
        node arrives already pseudonymous); empty when unknown.
    """
    check_code(code)
    if not name or not name.strip() or len(name) > 256:
        raise MidaError("an institution needs a name of 1-256 characters (--name)")
    if s.scalar(select(Institution.id).where(Institution.code == code)) is not None:
        raise ConflictError(f"an institution with code {code!r} already exists")
    row = Institution(code=code, name=name.strip(), key_id=key_id)
    s.add(row)
    s.flush()
    return row


def get_institution(s: Session, code: str) -> Institution:
    row = s.scalar(select(Institution).where(Institution.code == code))
    if row is None:
        known = ", ".join(s.scalars(select(Institution.code).order_by(Institution.code)))
        raise NotFoundError(f"no institution with code {code!r} (known: {known or 'none'}); "
                            "add one with 'mida institutions add CODE --name NAME'")
    return row


def list_institutions(s: Session) -> list[dict[str, Any]]:
    """Every institution with how many collections and users it has."""
    n_coll = {i: int(n) for i, n in s.execute(
        select(Collection.institution_id, func.count(Collection.id))
        .group_by(Collection.institution_id))}
    n_user = {i: int(n) for i, n in s.execute(
        select(User.institution_id, func.count(User.id)).group_by(User.institution_id))}
    return [{"code": i.code, "name": i.name, "collections": n_coll.get(i.id, 0),
             "users": n_user.get(i.id, 0), "created": i.created.isoformat()}
            for i in s.scalars(select(Institution).order_by(Institution.code))]


def set_institution(s: Session, user: str, institution_code: str | None) -> User:
    """Say where ``user`` works (``None``: no institution, as for platform staff)."""
    row = s.scalar(select(User).where(User.name == user))
    if row is None:
        raise NotFoundError(f"no user named {user!r}: add one with 'mida users add NAME --role R'")
    row.institution_id = (None if institution_code is None
                          else get_institution(s, institution_code).id)
    s.flush()
    return row


def institution_of(s: Session, user: User) -> Institution | None:
    return None if user.institution_id is None else s.get(Institution, user.institution_id)


# ----------------------------------------------------------------- collections

def create_collection(s: Session, name: str, institution_code: str, profile: str, *,
                      home: Path | None = None, description: str = "") -> Collection:
    """An empty collection owned by ``institution_code``, de-identified with ``profile``.

    Ingest into it later with ``mida ingest --collection NAME``: an existing
    collection keeps its owner and profile. A collection of that name already
    owned by the same institution is returned unchanged; one owned by another
    institution is refused (a collection has one owner).
    """
    inst = get_institution(s, institution_code)
    get_profile(profile, home)  # an unknown profile fails before any row
    if not name or len(name) > 128 or any(c in name for c in "/\\\x00"):
        raise MidaError(f"collection name {name!r} must be 1-128 characters without / or \\")
    row = s.scalar(select(Collection).where(Collection.name == name))
    if row is not None:
        if row.institution_id != inst.id:
            owner = s.get(Institution, row.institution_id)
            raise ConflictError(f"collection {name!r} already exists and belongs to "
                                f"{owner.code if owner else '?'}: a collection has one owner")
        return row
    row = Collection(name=name, institution_id=inst.id, deid_profile=profile,
                     description=description)
    s.add(row)
    s.flush()
    return row


def set_terms(s: Session, collection: str, *, license: str | None = None,
              terms_of_use: str | None = None, citation: str | None = None,
              contributors: list[str] | None = None,
              handler_cap: int | None = None) -> dict[str, Any]:
    """Change a collection's terms; a field left ``None`` keeps its value.

    ``license=""`` clears the licence; ``handler_cap=0`` clears the cap (the
    node's ``MIDA_HANDLER_CAP`` applies again). Returns :func:`terms`.
    """
    row = get_collection(s, collection)
    if license is not None:
        if len(license) > LICENSE_MAX:
            raise MidaError(f"a licence identifier is at most {LICENSE_MAX} characters: put "
                            "the licence text in the terms of use (--terms-file)")
        row.license = license.strip() or None
    if terms_of_use is not None:
        row.terms_of_use = terms_of_use
    if citation is not None:
        row.citation = citation
    if contributors is not None:
        names = [c.strip() for c in contributors]
        if any(not c for c in names):
            raise MidaError("a contributor's name cannot be empty")
        row.contributors = names
    if handler_cap is not None:
        if handler_cap < 0:
            raise MidaError(f"handler cap {handler_cap}: give a positive number "
                            "(0 clears the collection's cap)")
        row.handler_cap = handler_cap or None
    s.flush()
    return terms(s, collection)


def terms(s: Session, collection: str) -> dict[str, Any]:
    """A collection's owner and terms (see the module description for each field)."""
    row = get_collection(s, collection)
    inst = s.get(Institution, row.institution_id)
    return {"collection": row.name,
            "institution": {"code": inst.code, "name": inst.name} if inst else None,
            "license": row.license, "terms_of_use": row.terms_of_use,
            "citation": row.citation, "contributors": list(row.contributors or []),
            "handler_cap": row.handler_cap}


__all__ = [
    "LICENSE_MAX",
    "add_institution",
    "check_code",
    "create_collection",
    "get_institution",
    "institution_of",
    "list_institutions",
    "set_institution",
    "set_terms",
    "terms",
]
