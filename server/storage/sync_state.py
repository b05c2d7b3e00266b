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


_MARKS: sa.Table = DeviceOpMark.__table__  # type: ignore[assignment]
# Every exchange claims an envelope sequence once per frame: the conditional UPDATE is built
# once (a statement built per call cost its compile and cache-key walk each time, ``bench
# peak``), and the creating INSERT runs only for a device's first exchange.
_CLAIM = (
    sa.update(_MARKS)
    .where(
        _MARKS.c.device_id == sa.bindparam("device"),
        _MARKS.c.envelope_seq < sa.bindparam("sequence"),
    )
    .values(envelope_seq=sa.bindparam("new_sequence"))
)


def _create_mark(device_id: str) -> None:
    db.session.execute(
        _insert()(DeviceOpMark)
        .values(device_id=device_id, high_water=0, envelope_seq=0, updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=[DeviceOpMark.device_id])
    )


def _locked_mark(device_id: str) -> DeviceOpMark | None:
    return db.session.scalar(
        sa.select(DeviceOpMark)
        .where(DeviceOpMark.device_id == device_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def lock_marks(device_id: str) -> DeviceOpMark:
    """The device's mark row, created if missing and locked until the transaction ends.

    Two exchanges of one device then take turns on their batches (PostgreSQL ``FOR UPDATE``;
    SQLite write transactions are serial anyway), so neither applies an op the other is applying.
    Call inside a write transaction.
    """
    row = _locked_mark(device_id)
    if row is None:
        # The device's first batch: create the row (a concurrent creator wins harmlessly).
        _create_mark(device_id)
        row = _locked_mark(device_id)
    if row is None:  # pragma: no cover - the upsert above always leaves a row
        raise LookupError(f"no op mark row for device {device_id}")
    return row


def claim_envelope(device_id: str, sequence: int) -> bool:
    """Record ``sequence`` as the device's newest envelope; False when it is not newer (replay).

    One conditional UPDATE, so two requests carrying the same envelope cannot both claim it.
    Call inside a write transaction; a rollback un-claims it.
    """
    params = {"device": device_id, "sequence": sequence, "new_sequence": sequence}
    if db.session.execute(_CLAIM, params).rowcount:
        return True
    # Nothing updated: a replay, or the device's first exchange (no mark row yet).
    _create_mark(device_id)
    return bool(db.session.execute(_CLAIM, params).rowcount)


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
