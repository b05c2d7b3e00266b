"""Enrollment codes: stored as SHA-256 only, single use enforced by a conditional UPDATE."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from server.storage.database import db
from server.storage.models import EnrollmentCode
from server.storage.scoping import under_prefix
from server.storage.types import utcnow


def add_code(
    *, code_hash: str, scope: str, expires_at: datetime, created_by: str, label: str = ""
) -> EnrollmentCode:
    """Store a new code's hash for ``scope``; the plain code is never stored."""
    row = EnrollmentCode(
        code_hash=code_hash,
        scope=scope,
        label=label,
        created_at=utcnow(),
        created_by=created_by,
        expires_at=expires_at,
    )
    db.session.add(row)
    db.session.flush()
    return row


def code_by_hash(code_hash: str) -> EnrollmentCode | None:
    """The code with this hash (used or not, expired or not), or None."""
    return db.session.scalar(sa.select(EnrollmentCode).where(EnrollmentCode.code_hash == code_hash))


def claim(code_id: int, device_id: str, now: datetime) -> bool:
    """Mark the code used by ``device_id`` if it is still unused and unexpired.

    One conditional UPDATE, so of two tablets racing with the same code exactly one wins
    (False for the loser), on both engines.
    """
    return bool(
        db.session.execute(
            sa.update(EnrollmentCode)
            .where(
                EnrollmentCode.id == code_id,
                EnrollmentCode.used_at.is_(None),
                EnrollmentCode.expires_at > now,
            )
            .values(used_at=now, device_id=device_id)
        ).rowcount
    )


def list_codes(area_prefix: str, *, include_used: bool = False) -> list[EnrollmentCode]:
    """Codes for scopes under ``area_prefix``, newest first."""
    query = sa.select(EnrollmentCode).where(under_prefix(EnrollmentCode.scope, area_prefix))
    if not include_used:
        query = query.where(EnrollmentCode.used_at.is_(None))
    return list(db.session.scalars(query.order_by(EnrollmentCode.id.desc())))


def purge_expired(now: datetime) -> int:
    """Delete unused codes that expired before ``now``; returns how many (for the cleanup job)."""
    return db.session.execute(
        sa.delete(EnrollmentCode).where(
            EnrollmentCode.used_at.is_(None), EnrollmentCode.expires_at <= now
        )
    ).rowcount
