"""The honest broker: re-identification through the linkage vault, by two people.

The linkage vault (:mod:`mida.deid.vault`) is the one place that maps a
pseudonym back to a person. Opening it takes three steps by two people, each
recorded in the catalog (:class:`~mida.catalog.models.VaultResolution`) and
in the audit trail:

1. :func:`request_resolution` - an **honest broker** asks to resolve a
   pseudonym and says why (at least :data:`MIN_JUSTIFICATION` characters:
   "return an incidental finding to the treating team", not "check").
2. :func:`decide` - a **second person** (another honest broker, or an admin)
   approves or denies, with a reason. The requester can never decide their
   own request.
3. :func:`resolve` - the requester, and only they, opens the record, once.

The audit entries carry the resolution id, the pseudonym, the justification
and who did what, never the identity: the identity leaves the vault only as
the return value of :func:`resolve`, to the one person approved to see it.
A resolution moves ``pending`` -> ``approved`` | ``denied``, and
``approved`` -> ``resolved``; each move is one conditional ``UPDATE``, so
two concurrent decisions or resolutions cannot both succeed.

Examples
--------
``mida vault request PABC... --justification "..." --as broker1``, then
``mida vault decide 1 --approve --reason "..." --as broker2``, then
``mida vault resolve 1 --as broker1``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mida.catalog.models import User, VaultResolution, utcnow
from mida.errors import AccessDeniedError, ConflictError, MidaError, NotFoundError
from mida.sharing.audit import Auditor

MIN_JUSTIFICATION = 20
#: Who may ask (step 1) and who may approve (step 2).
REQUESTER_ROLES = ("honest-broker",)
APPROVER_ROLES = ("honest-broker", "admin")
STATUSES = ("pending", "approved", "denied", "resolved")


class Vault(Protocol):
    """What :func:`resolve` needs of :class:`mida.deid.vault.LinkageVault`."""

    def lookup(self, pseudonym: str) -> dict[str, Any]: ...


def _user(s: Session, name: str, roles: tuple[str, ...], step: str) -> User:
    user = s.scalar(select(User).where(User.name == name))
    if user is None or user.disabled:
        raise AccessDeniedError(f"{name!r} is not an active user of this node: only "
                                f"{' or '.join(roles)} users may {step}")
    if user.role not in roles:
        raise AccessDeniedError(f"user {name!r} has role {user.role}: only "
                                f"{' or '.join(roles)} users may {step}")
    return user


def get(s: Session, resolution_id: int) -> VaultResolution:
    row = s.get(VaultResolution, resolution_id)
    if row is None:
        raise NotFoundError(f"no vault resolution {resolution_id}: see `mida vault ls`")
    return row


def describe(row: VaultResolution) -> dict[str, Any]:
    """A resolution as a plain dict (never the identity: that is not stored)."""

    def iso(t: dt.datetime | None) -> str | None:
        return t.isoformat() if t else None

    return {"id": row.id, "pseudonym": row.pseudonym, "status": row.status,
            "requested_by": row.requested_by, "justification": row.justification,
            "decided_by": row.decided_by, "decision_reason": row.decision_reason,
            "created": iso(row.created), "decided": iso(row.decided),
            "resolved": iso(row.resolved)}


def list_all(s: Session, status: str | None = None) -> list[dict[str, Any]]:
    if status is not None and status not in STATUSES:
        raise MidaError(f"unknown status {status!r}: choose one of {', '.join(STATUSES)}")
    q = select(VaultResolution).order_by(VaultResolution.id)
    if status:
        q = q.where(VaultResolution.status == status)
    return [describe(r) for r in s.scalars(q)]


def _detail(row: VaultResolution, **extra: Any) -> dict[str, Any]:
    return {"resolution": row.id, "pseudonym": row.pseudonym,
            "justification": row.justification, "requested_by": row.requested_by, **extra}


def request_resolution(s: Session, pseudonym: str, justification: str, by: str, *,
                       audit: Auditor) -> VaultResolution:
    """Step 1: honest broker ``by`` asks to resolve ``pseudonym``, saying why.

    Raises
    ------
    AccessDeniedError
        ``by`` is not an active honest broker.
    MidaError
        The justification is shorter than :data:`MIN_JUSTIFICATION` characters.
    ConflictError
        ``by`` already has an open (pending or approved) request for it.
    """
    _user(s, by, REQUESTER_ROLES, "request a resolution")
    why = " ".join((justification or "").split())
    if len(why) < MIN_JUSTIFICATION:
        raise MidaError(f"a justification of {MIN_JUSTIFICATION} or more characters is "
                        "required (it is recorded and shown to the approver), e.g. "
                        "'return an incidental finding to the treating physician'")
    pseudonym = (pseudonym or "").strip()
    if not pseudonym:
        raise MidaError("give the pseudonym (a pseudonymous PatientID) to resolve")
    open_ = s.scalar(select(VaultResolution.id).where(
        VaultResolution.pseudonym == pseudonym, VaultResolution.requested_by == by,
        VaultResolution.status.in_(("pending", "approved"))))
    if open_ is not None:
        raise ConflictError(f"{by} already has resolution {open_} open for this pseudonym")
    row = VaultResolution(pseudonym=pseudonym, justification=why, requested_by=by,
                          status="pending")
    s.add(row)
    s.flush()
    audit.append("vault.request", _detail(row), actor=by)
    return row


def decide(s: Session, resolution_id: int, by: str, approve: bool, reason: str, *,
           audit: Auditor) -> VaultResolution:
    """Step 2: a second person approves or denies a pending request.

    ``by`` must be an active honest broker or admin other than the requester,
    and give a reason.
    """
    _user(s, by, APPROVER_ROLES, "approve or deny a resolution")
    row = get(s, resolution_id)
    if row.requested_by == by:
        raise AccessDeniedError(f"{by} requested resolution {resolution_id} and cannot decide "
                                "it: a second person (another honest broker or an admin) "
                                "must approve")
    why = " ".join((reason or "").split())
    if not why:
        raise MidaError("give a --reason for the decision (it is recorded)")
    status = "approved" if approve else "denied"
    now = utcnow()
    done = s.execute(update(VaultResolution)
                     .where(VaultResolution.id == resolution_id,
                            VaultResolution.status == "pending")
                     .values(status=status, decided_by=by, decision_reason=why, decided=now)
                     .execution_options(synchronize_session=False))
    if getattr(done, "rowcount", 0) != 1:
        s.refresh(row)
        raise ConflictError(f"resolution {resolution_id} is {row.status}, not pending: it "
                            "was decided already")
    s.refresh(row)
    audit.append("vault.approve" if approve else "vault.deny",
                 _detail(row, decided_by=by, reason=why), actor=by)
    return row


def resolve(s: Session, vault: Vault, resolution_id: int, by: str, *,
            audit: Auditor) -> dict[str, Any]:
    """Step 3: the requester opens the approved record, once; returns the identifiers.

    The audit entry is written before the identity is returned, and it holds
    no identifier. The caller commits the session before showing the result,
    so that a second call finds the resolution ``resolved`` and is refused.
    """
    row = get(s, resolution_id)
    if row.requested_by != by:
        raise AccessDeniedError(f"only {row.requested_by}, who requested resolution "
                                f"{resolution_id}, may resolve it")
    _user(s, by, REQUESTER_ROLES, "resolve a pseudonym")
    if row.status == "pending":
        raise ConflictError(f"resolution {resolution_id} is not approved yet: a second person "
                            "must approve it first (`mida vault decide`)")
    if row.status != "approved":
        raise ConflictError(f"resolution {resolution_id} is {row.status}: an approval opens "
                            "the vault once; request again if needed")
    identity = vault.lookup(row.pseudonym)  # before claiming: a missing record claims nothing
    done = s.execute(update(VaultResolution)
                     .where(VaultResolution.id == resolution_id,
                            VaultResolution.status == "approved")
                     .values(status="resolved", resolved=utcnow())
                     .execution_options(synchronize_session=False))
    if getattr(done, "rowcount", 0) != 1:
        raise ConflictError(f"resolution {resolution_id} was resolved already")
    s.refresh(row)
    audit.append("vault.resolve", _detail(row, decided_by=row.decided_by,
                                          fields=sorted(identity)), actor=by)
    return identity


__all__ = ["APPROVER_ROLES", "MIN_JUSTIFICATION", "REQUESTER_ROLES", "STATUSES", "Vault",
           "decide", "describe", "get", "list_all", "request_resolution", "resolve"]
