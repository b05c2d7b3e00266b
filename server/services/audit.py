"""Reading the audit log: each admin sees the entries of their own area only."""

from __future__ import annotations

from server.services.access import Principal
from server.storage import audit as store
from server.storage.models import AuditEntry


def list_entries(
    principal: Principal,
    *,
    limit: int = 100,
    before_id: int | None = None,
    action: str | None = None,
) -> list[AuditEntry]:
    """Entries of the principal's area, newest first (the area filter is in the SQL query).

    A reviewer never sees area-less entries (logins of county-wide accounts, CLI actions).
    """
    return store.list_entries(
        principal.area_prefix, limit=limit, before_id=before_id, action=action
    )
