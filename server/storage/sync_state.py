"""Per-device sync bookkeeping: op high-water mark, envelope sequence, stored batch acks.

All writes here happen inside the caller's write transaction (``database.writing``), the same
one that commits the batch they describe, so a mark never runs ahead of the data it vouches for.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from server.storage.database import db
from server.storage.models import BatchAck, DeviceOpMark
from server.storage.types import utcnow


def _insert() -> Any:
    dialect = db.session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def lock_marks(device_id: str) -> DeviceOpMark:
    """The device's mark row, created if missing and locked until the transaction ends.

    Two exchanges of one device then take turns on their batches (PostgreSQL ``FOR UPDATE``;
    SQLite write transactions are serial anyway), so neither applies an op the other is applying.
    Call inside a write transaction.
    """
    db.session.execute(
        _insert()(DeviceOpMark)
        .values(device_id=device_id, high_water=0, envelope_seq=0, updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=[DeviceOpMark.device_id])
    )
    row = db.session.scalar(
        sa.select(DeviceOpMark)
        .where(DeviceOpMark.device_id == device_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if row is None:  # pragma: no cover - the upsert above always leaves a row
        raise LookupError(f"no op mark row for device {device_id}")
    return row


def claim_envelope(device_id: str, sequence: int) -> bool:
    """Record ``sequence`` as the device's newest envelope; False when it is not newer (replay).

    One conditional UPDATE, so two requests carrying the same envelope cannot both claim it.
    Call inside a write transaction; a rollback un-claims it.
    """
    db.session.execute(
        _insert()(DeviceOpMark)
        .values(device_id=device_id, high_water=0, envelope_seq=0, updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=[DeviceOpMark.device_id])
    )
    result = db.session.execute(
        sa.update(DeviceOpMark)
        .where(DeviceOpMark.device_id == device_id, DeviceOpMark.envelope_seq < sequence)
        .values(envelope_seq=sequence)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


def set_high_water(mark: DeviceOpMark, value: int, now: datetime | None = None) -> None:
    """Advance the locked mark row to ``value`` (never backwards)."""
    if value > mark.high_water:
        mark.high_water = value
        mark.updated_at = now or utcnow()
        db.session.flush()


def store_acks(device_id: str, acks: list[dict[str, Any]], now: datetime | None = None) -> None:
    """Keep the acks of the ops a batch processed (by seq) so a replay gets them verbatim.

    ``acks`` are contracts §7 dicts with consecutive ``seq``; nothing is stored for an empty list.
    """
    if not acks:
        return
    seqs = [int(a["seq"]) for a in acks]
    first, last = min(seqs), max(seqs)
    db.session.add(
        BatchAck(
            device_id=device_id,
            batch_key=f"{first}-{last}",
            first_seq=first,
            last_seq=last,
            acks={"acks": acks},
            created_at=now or utcnow(),
        )
    )
    db.session.flush()


def stored_acks(device_id: str, seqs: list[int]) -> dict[int, dict[str, Any]]:
    """The stored ack of each of ``seqs`` that has one, by seq (however the ops were batched)."""
    if not seqs:
        return {}
    low, high = min(seqs), max(seqs)
    wanted = set(seqs)
    found: dict[int, dict[str, Any]] = {}
    rows = db.session.scalars(
        sa.select(BatchAck).where(
            BatchAck.device_id == device_id,
            BatchAck.first_seq <= high,
            BatchAck.last_seq >= low,
        )
    )
    for row in rows:
        for ack in row.acks.get("acks", []):
            if ack["seq"] in wanted:
                found[ack["seq"]] = ack
    return found
