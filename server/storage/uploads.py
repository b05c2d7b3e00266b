"""Attachment upload rows: one per content address (SHA-256), ``received_bytes`` confirmed so far.

The bytes live in files (``server.services.uploads``); a row says how many of them are
confirmed. Every change to a row happens under its row lock (``FOR UPDATE`` on PostgreSQL;
SQLite write transactions are serial), so two requests for one upload take turns.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from server.storage.database import db
from server.storage.models import Attachment
from server.storage.types import utcnow


def get_upload(sha256: str) -> Attachment | None:
    """The upload with this content address, or None."""
    return db.session.get(Attachment, sha256)


def create_upload(
    *, sha256: str, size: int, content_type: str, device_id: str, village_code: str
) -> tuple[Attachment, bool]:
    """The upload row for ``sha256``, created if new: ``(row, created)``.

    Two devices starting the same photo at once both end with the one row (the insert that
    loses the race does nothing). Call inside a write transaction.
    """
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    inserted = db.session.execute(
        insert(Attachment)
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
        .on_conflict_do_nothing(index_elements=[Attachment.sha256])
        .returning(Attachment.sha256)
    ).scalar_one_or_none()
    row = lock_upload(sha256)
    if row is None:  # pragma: no cover - the insert or a committed twin always leaves a row
        raise LookupError("upload row vanished after insert")
    return row, inserted is not None


def lock_upload(sha256: str) -> Attachment | None:
    """The upload row locked until the transaction ends (call inside a write), or None."""
    return db.session.scalar(
        sa.select(Attachment)
        .where(Attachment.sha256 == sha256)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def set_received(row: Attachment, received: int, *, complete: bool = False) -> None:
    """Confirm ``received`` bytes of a locked row (and mark it complete)."""
    now = utcnow()
    row.received_bytes = received
    row.updated_at = now
    row.completed_at = now if complete else None
    db.session.flush()


def abandoned(before: datetime, limit: int = 1000) -> list[Attachment]:
    """Unfinished uploads last touched before ``before``, oldest first."""
    return list(
        db.session.scalars(
            sa.select(Attachment)
            .where(Attachment.completed_at.is_(None), Attachment.updated_at < before)
            .order_by(Attachment.updated_at)
            .limit(limit)
        )
    )


def delete_if_abandoned(sha256: str, before: datetime) -> bool:
    """Delete an upload that is still unfinished and untouched since ``before``.

    One conditional DELETE, so an upload resumed meanwhile is kept. Returns whether it went.
    """
    return bool(
        db.session.execute(
            sa.delete(Attachment).where(
                Attachment.sha256 == sha256,
                Attachment.completed_at.is_(None),
                Attachment.updated_at < before,
            )
        ).rowcount
    )
