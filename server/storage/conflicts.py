"""The review queue: conflicts the merge could not settle, open until a reviewer resolves them.

A conflict's id is the merge's deterministic id (``sync_protocol.conflicts.conflict_id_for``), so
storing the same conflict twice (a replay, two racing batches) keeps one row. Rows are scoped by
the record's village code like everything else an admin sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from server.storage import models
from server.storage.database import db
from server.storage.models import Record
from server.storage.scoping import under_prefix
from server.storage.types import plain, utcnow

#: The table; callers get :class:`ConflictItem` values, never its rows.
ConflictItemRow = models.ConflictItem

OPEN, RESOLVED, SUPERSEDED = "open", "resolved", "superseded"
STATUSES = (OPEN, RESOLVED, SUPERSEDED)


@dataclass(frozen=True)
class ConflictItem:
    """A queued conflict as stored: the record and field it concerns, the values compared when
    it was queued, and how (and by whom) it was closed."""

    id: str
    record_id: str
    village_code: str
    kind: str  # review_field | delete_edit | row_delete_edit | duplicate_household | ...
    path: str
    base: Any
    mine: Any
    theirs: Any
    device_id: str | None
    status: str  # open | resolved | superseded
    resolution: dict[str, Any] | None
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None


@dataclass(frozen=True)
class ConflictRow:
    """A stored conflict with the envelope of its record (for lists and filters)."""

    item: ConflictItem
    form_id: str
    form_version: int
    household_no: str
    round: str


def open_conflict(
    *,
    conflict_id: str,
    record_id: str,
    village_code: str,
    kind: str,
    path: str,
    base: Any,
    mine: Any,
    theirs: Any,
    device_id: str | None,
    now: datetime | None = None,
) -> bool:
    """Queue a conflict unless a row with its id exists; True when a row was added.

    Call inside a write transaction, after the record row exists.
    """
    if db.session.get(ConflictItemRow, conflict_id) is not None:
        return False
    db.session.add(
        ConflictItemRow(
            id=conflict_id,
            record_id=record_id,
            village_code=village_code,
            kind=kind,
            path=path[:255],
            base=base,
            mine=mine,
            theirs=theirs,
            device_id=device_id,
            status=OPEN,
            created_at=now or utcnow(),
        )
    )
    db.session.flush()
    return True


def close_conflicts(
    conflict_ids: list[str],
    *,
    status: str,
    by: str,
    resolution: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> list[str]:
    """Set open conflicts to ``status`` (resolved or superseded); returns the ids it closed."""
    if not conflict_ids:
        return []
    rows = db.session.scalars(
        sa.select(ConflictItemRow).where(
            ConflictItemRow.id.in_(conflict_ids), ConflictItemRow.status == OPEN
        )
    )
    closed = []
    for row in rows:
        row.status = status
        row.resolved_at = now or utcnow()
        row.resolved_by = by
        row.resolution = resolution
        closed.append(row.id)
    db.session.flush()
    return sorted(closed)


def closed_ids_by_record(record_ids: list[str], kind: str) -> dict[str, list[str]]:
    """Ids of the closed (resolved or superseded) conflicts of ``kind`` per record id."""
    if not record_ids:
        return {}
    found: dict[str, list[str]] = {}
    for record_id, conflict_id in db.session.execute(
        sa.select(ConflictItemRow.record_id, ConflictItemRow.id)
        .where(
            ConflictItemRow.record_id.in_(record_ids),
            ConflictItemRow.kind == kind,
            ConflictItemRow.status != OPEN,
        )
        .order_by(ConflictItemRow.id)
    ):
        found.setdefault(record_id, []).append(conflict_id)
    return found


def open_ids_for_record(record_id: str) -> list[str]:
    """Ids of the open conflicts of one record."""
    return list(
        db.session.scalars(
            sa.select(ConflictItemRow.id).where(
                ConflictItemRow.record_id == record_id, ConflictItemRow.status == OPEN
            )
        )
    )


def _scoped(area_prefix: str) -> sa.Select[tuple[ConflictItemRow, str, int, str, str]]:
    return (
        sa.select(
            ConflictItemRow, Record.form_id, Record.form_version, Record.household_no, Record.round
        )
        .join(Record, Record.record_id == ConflictItemRow.record_id)
        .where(under_prefix(ConflictItemRow.village_code, area_prefix))
    )


def _with_envelope(row: sa.Row[Any]) -> ConflictRow:
    item, *envelope = row
    return ConflictRow(plain(ConflictItem, item), *envelope)


def list_conflicts(
    area_prefix: str,
    *,
    status: str | None = None,
    village_prefix: str | None = None,
    form_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[ConflictRow], int]:
    """Conflicts inside ``area_prefix`` (oldest first) and how many match in all.

    ``village_prefix`` narrows to a village (or township) code prefix; raises ``ValueError`` for
    a prefix that is not digits.
    """
    query = _scoped(area_prefix)
    if status:
        query = query.where(ConflictItemRow.status == status)
    if village_prefix:
        query = query.where(under_prefix(ConflictItemRow.village_code, village_prefix))
    if form_id:
        query = query.where(Record.form_id == form_id)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
    rows = db.session.execute(
        query.order_by(ConflictItemRow.created_at, ConflictItemRow.id).limit(limit).offset(offset)
    ).all()
    return [_with_envelope(row) for row in rows], int(total)


def conflict_in_area(conflict_id: str, area_prefix: str) -> ConflictRow | None:
    """One conflict if its village lies under ``area_prefix``; out-of-area ones look absent."""
    row = db.session.execute(_scoped(area_prefix).where(ConflictItemRow.id == conflict_id)).first()
    return _with_envelope(row) if row is not None else None


def lock_conflict(conflict_id: str) -> ConflictItem | None:
    """The conflict locked for update until the transaction ends (inside a write), or None."""
    row = db.session.scalar(
        sa.select(ConflictItemRow)
        .where(ConflictItemRow.id == conflict_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return None if row is None else plain(ConflictItem, row)


def open_counts_by_device(area_prefix: str) -> dict[str, int]:
    """Device id → how many open conflicts its edits are part of, under ``area_prefix``.

    Raises ``ValueError`` for a prefix that is not digits.
    """
    rows = db.session.execute(
        sa.select(ConflictItemRow.device_id, sa.func.count())
        .where(
            ConflictItemRow.status == OPEN,
            ConflictItemRow.device_id.is_not(None),
            under_prefix(ConflictItemRow.village_code, area_prefix),
        )
        .group_by(ConflictItemRow.device_id)
    ).all()
    return {str(device): int(count) for device, count in rows}
