"""Reading the audit log: each admin sees the entries of their own area only."""

from __future__ import annotations

from datetime import datetime

from server.services.access import Principal
from server.services.indicators import effective_area
from server.storage import audit as store
from server.storage.audit import AuditEntry


def list_entries(
    principal: Principal,
    *,
    limit: int = 100,
    before_id: int | None = None,
    action: str | None = None,
    actor: str | None = None,
    area: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[AuditEntry]:
    """Entries of the principal's area, newest first (the area filter is in the SQL query).

    A reviewer never sees area-less entries (logins of county-wide accounts, CLI actions).
    ``actor``, ``action``, ``area`` (a code prefix inside the principal's area) and the time
    range ``since``/``until`` narrow the list. Raises :class:`ValidationFailed` for an area that
    is not digits and :class:`Forbidden` (``outside_area``) for one outside the principal's.
    """
    narrowed = None
    if area:
        narrowed = effective_area(principal, area)
        narrowed = None if narrowed == principal.area_prefix else narrowed
    return store.list_entries(
        principal.area_prefix,
        limit=limit,
        before_id=before_id,
        action=action,
        actor=actor,
        area=narrowed,
        since=since,
        until=until,
    )
