"""Sliding-window attempt counters kept in the database, so every app process agrees."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from server.storage.database import db
from server.storage.models import RateLimitHit


def hits_since(key: str, since: datetime) -> tuple[int, datetime | None]:
    """How many hits ``key`` has after ``since``, and the oldest of them (None when none)."""
    count, oldest = db.session.execute(
        sa.select(sa.func.count(), sa.func.min(RateLimitHit.at)).where(
            RateLimitHit.key == key, RateLimitHit.at > since
        )
    ).one()
    return int(count), oldest


def add_hit(key: str, at: datetime) -> None:
    """Count one attempt for ``key`` at ``at``."""
    db.session.add(RateLimitHit(key=key, at=at))
    db.session.flush()


def purge_before(key: str, before: datetime) -> None:
    """Forget ``key``'s hits older than ``before`` (they can no longer count)."""
    db.session.execute(
        sa.delete(RateLimitHit).where(RateLimitHit.key == key, RateLimitHit.at <= before)
    )


def purge_all_before(before: datetime) -> int:
    """Forget every hit older than ``before``; returns how many rows went (for a cleanup job)."""
    return db.session.execute(sa.delete(RateLimitHit).where(RateLimitHit.at <= before)).rowcount


def window_start(now: datetime, seconds: int) -> datetime:
    """The start of a window of ``seconds`` ending at ``now``."""
    return now - timedelta(seconds=seconds)
