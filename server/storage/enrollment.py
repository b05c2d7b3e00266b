"""Enrollment codes: stored as SHA-256 only, single use enforced by a conditional UPDATE."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from server.storage import models
from server.storage.database import db
from server.storage.scoping import under_prefix
from server.storage.types import plain, utcnow

#: The table; callers get :class:`EnrollmentCode` values, never its rows.
CodeRow = models.EnrollmentCode


@dataclass(frozen=True)
class EnrollmentCode:
    """A one-time code as stored: its hash (never the code), scope, expiry and use."""

    id: int
    code_hash: str
    scope: str
    label: str
    created_at: datetime
    created_by: str
    expires_at: datetime
    used_at: datetime | None
    device_id: str | None


def add_code(
    *, code_hash: str, scope: str, expires_at: datetime, created_by: str, label: str = ""
) -> EnrollmentCode:
    """Store a new code's hash for ``scope``; the plain code is never stored."""
    row = CodeRow(
        code_hash=code_hash,
        scope=scope,
        label=label,
        created_at=utcnow(),
        created_by=created_by,
        expires_at=expires_at,
    )
    db.session.add(row)
    db.session.flush()
    return plain(EnrollmentCode, row)


def code_by_hash(code_hash: str) -> EnrollmentCode | None:
    """The code with this hash (used or not, expired or not), or None."""
    row = db.session.scalar(sa.select(CodeRow).where(CodeRow.code_hash == code_hash))
    return None if row is None else plain(EnrollmentCode, row)


def claim(code_id: int, device_id: str, now: datetime) -> bool:
    """Mark the code used by ``device_id`` if it is still unused and unexpired.

    One conditional UPDATE, so of two tablets racing with the same code exactly one wins
    (False for the loser), on both engines.
    """
    return bool(
        db.session.execute(
            sa.update(CodeRow)
            .where(
                CodeRow.id == code_id,
                CodeRow.used_at.is_(None),
                CodeRow.expires_at > now,
            )
            .values(used_at=now, device_id=device_id)
        ).rowcount
    )


def list_codes(area_prefix: str, *, include_used: bool = False) -> list[EnrollmentCode]:
    """Codes for scopes under ``area_prefix``, newest first."""
    query = sa.select(CodeRow).where(under_prefix(CodeRow.scope, area_prefix))
    if not include_used:
        query = query.where(CodeRow.used_at.is_(None))
    return [
        plain(EnrollmentCode, row) for row in db.session.scalars(query.order_by(CodeRow.id.desc()))
    ]


def purge_expired(now: datetime) -> int:
    """Delete unused codes that expired before ``now``; returns how many (for the cleanup job)."""
    return db.session.execute(
        sa.delete(CodeRow).where(CodeRow.used_at.is_(None), CodeRow.expires_at <= now)
    ).rowcount
