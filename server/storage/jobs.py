"""Job locks (one run of a scheduled job across processes) and the reads the alert jobs make."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from server.storage.database import db
from server.storage.models import ConflictItem, Device, JobLock
from server.storage.scoping import under_prefix

_NEVER = datetime(2000, 1, 1, tzinfo=UTC)


def try_lock(name: str, holder: str, now: datetime, until: datetime) -> bool:
    """Take the lock of job ``name`` for ``holder`` until ``until`` if it is free at ``now``.

    The row is created on first use; then one conditional UPDATE (``locked_until <= now``)
    decides, so of several processes trying at once exactly one gets True. Call inside a write
    transaction and commit before running the job, so the others see the lock.
    """
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    db.session.execute(
        insert(JobLock)
        .values(name=name, holder="", locked_until=_NEVER, last_result={})
        .on_conflict_do_nothing(index_elements=[JobLock.name])
    )
    return bool(
        db.session.execute(
            sa.update(JobLock)
            .where(JobLock.name == name, JobLock.locked_until <= now)
            .values(holder=holder, locked_until=until, last_started_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
    )


def finish(name: str, holder: str, now: datetime, until: datetime, result: dict[str, Any]) -> bool:
    """Record the result of a run and keep the lock until ``until`` (``now`` frees it).

    Only the holder can do this; False when the lock passed to another process meanwhile
    (the run outlived its lock).
    """
    return bool(
        db.session.execute(
            sa.update(JobLock)
            .where(JobLock.name == name, JobLock.holder == holder)
            .values(locked_until=until, last_finished_at=now, last_result=result)
            .execution_options(synchronize_session=False)
        ).rowcount
    )


def get_lock(name: str) -> JobLock | None:
    """The lock row of a job (last start, finish and result), or None before its first run."""
    return db.session.get(JobLock, name)


@dataclass(frozen=True)
class SilentDevice:
    """An active device that has not synced for a while, as the stale-device alert reports it."""

    id: str
    scope: str
    label: str
    enrolled_at: datetime
    last_sync_at: datetime | None


def stale_devices(cutoff: datetime, *, area_prefix: str) -> list[SilentDevice]:
    """Active devices within ``area_prefix`` whose last sync (or enrollment, if they never
    synced) is before ``cutoff``, by scope then id.

    ``area_prefix`` is required so that no caller lists devices outside its area by forgetting
    it: a township reviewer passes its township, the county-wide job passes ``""`` on purpose.
    """
    last_seen = sa.func.coalesce(Device.last_sync_at, Device.enrolled_at)
    query = sa.select(
        Device.id, Device.scope, Device.label, Device.enrolled_at, Device.last_sync_at
    ).where(Device.status == "active", last_seen < cutoff, under_prefix(Device.scope, area_prefix))
    rows = db.session.execute(query.order_by(Device.scope, Device.id)).all()
    return [SilentDevice(*row) for row in rows]


def old_open_conflicts(cutoff: datetime, *, area_prefix: str) -> list[tuple[str, int, datetime]]:
    """Per village within ``area_prefix``, the open conflicts queued before ``cutoff``:
    (village, count, oldest). ``area_prefix`` is required, as for :func:`stale_devices`."""
    rows = db.session.execute(
        sa.select(ConflictItem.village_code, sa.func.count(), sa.func.min(ConflictItem.created_at))
        .where(
            ConflictItem.status == "open",
            ConflictItem.created_at < cutoff,
            under_prefix(ConflictItem.village_code, area_prefix),
        )
        .group_by(ConflictItem.village_code)
        .order_by(ConflictItem.village_code)
    ).all()
    return [(village, int(count), oldest) for village, count, oldest in rows]
