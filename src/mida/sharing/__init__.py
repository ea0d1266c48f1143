"""Identity, grants, requests and audit (issue 7 builds most of it; the audit trail is here)."""

from mida.sharing.audit import AuditLog

__all__ = ["AuditLog"]
