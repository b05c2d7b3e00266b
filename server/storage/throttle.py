"""Sliding-window attempt counters kept in the database, so every app process agrees."""

from __future__ import annotations

import hashlib
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


def add_hit(key: str, at: datetime) -> int:
    """Count one attempt for ``key`` at ``at``; returns the hit's id."""
    hit = RateLimitHit(key=key, at=at)
    db.session.add(hit)
    db.session.flush()
    return int(hit.id)


def delete_hits(ids: list[int]) -> None:
    """Forget the hits ``ids`` (attempts that turned out not to count)."""
    if ids:
        db.session.execute(sa.delete(RateLimitHit).where(RateLimitHit.id.in_(ids)))


def lock_keys(keys: list[str]) -> None:
    """Serialise counting for ``keys`` until the write transaction ends.

    SQLite's write transaction (``BEGIN IMMEDIATE``) already admits one writer at a time; on
    PostgreSQL a transaction-scoped advisory lock per key (taken in sorted order, so two
    requests never deadlock) keeps two concurrent attempts from both counting below the limit.
    """
    if db.session.get_bind().dialect.name != "postgresql":
        return
    for key in sorted(set(keys)):
        lock_id = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        db.session.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_id)))


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
