"""The audit log: one row per admin action, listed newest first within an area."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from server.storage import models
from server.storage.database import db
from server.storage.scoping import under_prefix
from server.storage.types import plain, utcnow

#: The table; callers get :class:`AuditEntry` values, never its rows.
EntryRow = models.AuditEntry


@dataclass(frozen=True)
class AuditEntry:
    """One admin action as logged: who, what, on which object, in which area, when."""

    id: int
    at: datetime
    actor_user_id: int | None
    actor: str
    action: str
    target_type: str
    target_id: str
    area_code: str
    ip: str
    details: dict[str, Any]


def add_entry(
    *,
    actor: str,
    action: str,
    actor_user_id: int | None = None,
    target_type: str = "",
    target_id: str = "",
    area_code: str = "",
    ip: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append an entry inside the caller's write transaction (so it commits with the action)."""
    entry = EntryRow(
        at=utcnow(),
        actor=actor,
        actor_user_id=actor_user_id,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        area_code=area_code,
        ip=ip,
        details=details or {},
    )
    db.session.add(entry)
    db.session.flush()
    return plain(AuditEntry, entry)


def add_refusal(
    *,
    actor: str,
    action: str,
    code: str,
    ip: str,
    area_code: str = "",
    details: dict[str, Any] | None = None,
    window_seconds: int = 60,
) -> AuditEntry:
    """Record a refused request inside the caller's write transaction, coalescing a flood.

    The same refusal (``action``, ``code``, ``ip`` and ``actor``) within ``window_seconds`` of
    an entry for it adds to that entry's ``details.count`` (and sets ``last_at``) instead of a new
    row, so a thousand identical refusals are one entry. ``details`` gets ``code`` and ``count``.
    """
    now = utcnow()
    query = (
        sa.select(EntryRow)
        .where(
            EntryRow.action == action,
            EntryRow.target_type == "refusal",
            EntryRow.target_id == code,
            EntryRow.ip == ip,
            EntryRow.actor == actor,
            EntryRow.at >= now - timedelta(seconds=window_seconds),
        )
        .order_by(EntryRow.id.desc())
        .limit(1)
        .with_for_update()  # PostgreSQL: parallel identical refusals count one after the other
    )
    entry = db.session.scalars(query).first()
    if entry is not None:
        count = int(entry.details.get("count", 1)) + 1
        entry.details = {**entry.details, "count": count, "last_at": now.isoformat()}
        db.session.flush()
        return plain(AuditEntry, entry)
    return add_entry(
        actor=actor,
        action=action,
        target_type="refusal",
        target_id=code,
        area_code=area_code,
        ip=ip,
        details={**(details or {}), "code": code, "count": 1},
    )


def list_entries(
    area_prefix: str,
    *,
    limit: int = 100,
    before_id: int | None = None,
    action: str | None = None,
    actor: str | None = None,
    area: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[AuditEntry]:
    """Entries whose area lies under ``area_prefix``, newest first, at most ``limit``.

    An empty prefix (an unrestricted county admin) sees everything, including area-less entries
    such as form publication; a reviewer sees only entries tagged with an area inside theirs.
    ``before_id`` pages backwards (exclusive). ``actor`` and ``action`` match exactly, ``area``
    is a further code prefix (digits), ``since``/``until`` bound the time (inclusive/exclusive).
    """
    query = sa.select(EntryRow).where(under_prefix(EntryRow.area_code, area_prefix))
    if area_prefix or area:
        query = query.where(EntryRow.area_code != "")
    if area:
        query = query.where(under_prefix(EntryRow.area_code, area))
    if before_id is not None:
        query = query.where(EntryRow.id < before_id)
    if action:
        query = query.where(EntryRow.action == action)
    if actor:
        query = query.where(EntryRow.actor == actor)
    if since is not None:
        query = query.where(EntryRow.at >= since)
    if until is not None:
        query = query.where(EntryRow.at < until)
    rows = db.session.scalars(query.order_by(EntryRow.id.desc()).limit(limit))
    return [plain(AuditEntry, row) for row in rows]
