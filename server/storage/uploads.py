"""Attachment upload rows: one per (content address, device), ``received_bytes`` confirmed so far.

The bytes live in files (``server.services.uploads``); a row says how many of them are
confirmed. Every change to a row happens under its row lock (``FOR UPDATE`` on PostgreSQL;
SQLite write transactions are serial), so two requests for one upload take turns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from server.storage import models
from server.storage.database import db
from server.storage.types import plain, utcnow

#: The table; callers get :class:`Attachment` values, never its rows.
AttachmentRow = models.Attachment


@dataclass(frozen=True)
class Attachment:
    """One device's upload of a content-addressed file; ``received_bytes`` < ``size`` while
    it is resuming, ``completed_at`` set once the whole file is verified."""

    sha256: str
    device_id: str
    size: int
    received_bytes: int
    content_type: str
    village_code: str
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


def _plain(row: AttachmentRow | None) -> Attachment | None:
    return None if row is None else plain(Attachment, row)


def get_upload(sha256: str, device_id: str) -> Attachment | None:
    """The device's upload of this content address, or None."""
    return _plain(db.session.get(AttachmentRow, (sha256, device_id)))


def completed_in_area(sha256: str, area_prefix: str) -> Attachment | None:
    """A completed upload of ``sha256`` by a device whose scope lies in ``area_prefix``."""
    return _plain(
        db.session.scalar(
            sa.select(AttachmentRow)
            .where(
                AttachmentRow.sha256 == sha256,
                AttachmentRow.completed_at.is_not(None),
                AttachmentRow.village_code.startswith(area_prefix, autoescape=True),
            )
            .limit(1)
        )
    )


def create_upload(
    *, sha256: str, size: int, content_type: str, device_id: str, village_code: str
) -> tuple[Attachment, bool]:
    """The device's upload row for ``sha256``, created if new: ``(row, created)``.

    Two requests of one device starting the same photo at once both end with the one row (the
    insert that loses the race does nothing). Call inside a write transaction.
    """
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    inserted = db.session.execute(
        insert(AttachmentRow)
        .values(
            sha256=sha256,
            size=size,
            received_bytes=0,
            content_type=content_type,
            device_id=device_id,
            village_code=village_code,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=[AttachmentRow.sha256, AttachmentRow.device_id])
        .returning(AttachmentRow.sha256)
    ).scalar_one_or_none()
    row = lock_upload(sha256, device_id)
    if row is None:  # pragma: no cover - the insert or a committed twin always leaves a row
        raise LookupError("upload row vanished after insert")
    return row, inserted is not None


def lock_upload(sha256: str, device_id: str) -> Attachment | None:
    """The device's upload row locked until the transaction ends (call inside a write), or None."""
    return _plain(
        db.session.scalar(
            sa.select(AttachmentRow)
            .where(AttachmentRow.sha256 == sha256, AttachmentRow.device_id == device_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )


def set_received(upload: Attachment, received: int, *, complete: bool = False) -> Attachment:
    """Confirm ``received`` bytes of a locked upload (and mark it complete); returns it as now
    stored."""
    now = utcnow()
    changed = {
        "received_bytes": received,
        "updated_at": now,
        "completed_at": now if complete else None,
    }
    db.session.execute(
        sa.update(AttachmentRow)
        .where(AttachmentRow.sha256 == upload.sha256, AttachmentRow.device_id == upload.device_id)
        .values(**changed)
    )
    return dataclasses.replace(upload, **changed)


def abandoned(before: datetime, limit: int = 1000) -> list[Attachment]:
    """Unfinished uploads last touched before ``before``, oldest first."""
    rows = db.session.scalars(
        sa.select(AttachmentRow)
        .where(AttachmentRow.completed_at.is_(None), AttachmentRow.updated_at < before)
        .order_by(AttachmentRow.updated_at)
        .limit(limit)
    )
    return [plain(Attachment, row) for row in rows]


def delete_if_abandoned(sha256: str, device_id: str, before: datetime) -> bool:
    """Delete an upload that is still unfinished and untouched since ``before``.

    One conditional DELETE, so an upload resumed meanwhile is kept. Returns whether it went.
    """
    return bool(
        db.session.execute(
            sa.delete(AttachmentRow).where(
                AttachmentRow.sha256 == sha256,
                AttachmentRow.device_id == device_id,
                AttachmentRow.completed_at.is_(None),
                AttachmentRow.updated_at < before,
            )
        ).rowcount
    )
