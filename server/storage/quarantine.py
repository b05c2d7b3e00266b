"""Quarantine: ops the server refused, kept whole with their reasons so nothing typed is lost.

Kinds: ``invalid`` (the merged record failed validation, or the op could not be merged),
``out_of_scope`` (a record outside the device's villages) and ``unknown_form_version`` (a form
version the server has not published; an admin can map it to a published one and re-run it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from server.storage import models
from server.storage.database import db
from server.storage.scoping import under_prefix
from server.storage.types import plain, utcnow

#: The table; callers get :class:`QuarantinedOp` values, never its rows.
QuarantinedOpRow = models.QuarantinedOp

INVALID, OUT_OF_SCOPE, UNKNOWN_FORM_VERSION = "invalid", "out_of_scope", "unknown_form_version"
KINDS = (INVALID, OUT_OF_SCOPE, UNKNOWN_FORM_VERSION)
HELD, RELEASED = "held", "released"


@dataclass(frozen=True)
class QuarantinedOp:
    """A refused op kept whole: the op as sent, why it was refused, where it came from and
    whether it is still held."""

    id: int
    device_id: str | None
    op_seq: int | None
    kind: str
    op: dict[str, Any]
    #: ``{"issues": [...]}`` plus ``"resolution"`` once released.
    reasons: dict[str, Any]
    village_code: str
    status: str  # held | released
    received_at: datetime


def hold(
    *,
    kind: str,
    op: dict[str, Any],
    reasons: list[dict[str, Any]],
    device_id: str | None,
    op_seq: int | None,
    village_code: str,
    now: datetime | None = None,
) -> QuarantinedOp:
    """Keep a refused op (inside the caller's write transaction, with the batch it came in)."""
    row = QuarantinedOpRow(
        device_id=device_id,
        op_seq=op_seq,
        kind=kind,
        op=op,
        reasons={"issues": reasons},
        village_code=village_code[:12],
        status=HELD,
        received_at=now or utcnow(),
    )
    db.session.add(row)
    db.session.flush()
    return plain(QuarantinedOp, row)


def list_held(
    area_prefix: str,
    *,
    kind: str | None = None,
    status: str | None = HELD,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[QuarantinedOp], int]:
    """Quarantined ops inside ``area_prefix`` (newest first) and how many match in all.

    An unrestricted admin (empty prefix) also sees ops whose village is unknown (``""``).
    """
    query = sa.select(QuarantinedOpRow).where(
        under_prefix(QuarantinedOpRow.village_code, area_prefix)
    )
    if area_prefix:
        query = query.where(QuarantinedOpRow.village_code != "")
    if kind:
        query = query.where(QuarantinedOpRow.kind == kind)
    if status:
        query = query.where(QuarantinedOpRow.status == status)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
    rows = db.session.scalars(
        query.order_by(QuarantinedOpRow.id.desc()).limit(limit).offset(offset)
    )
    return list(rows), int(total)


def held_in_area(item_id: int, area_prefix: str, *, lock: bool = False) -> QuarantinedOp | None:
    """One quarantined op if its village lies under ``area_prefix`` (else None).

    With ``lock`` the row is locked for update (call inside a write transaction).
    """
    query = sa.select(QuarantinedOpRow).where(
        QuarantinedOpRow.id == item_id, under_prefix(QuarantinedOpRow.village_code, area_prefix)
    )
    if area_prefix:
        query = query.where(QuarantinedOpRow.village_code != "")
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    row = db.session.scalar(query)
    return None if row is None else plain(QuarantinedOp, row)


def release(item: QuarantinedOp, *, reasons: dict[str, Any]) -> QuarantinedOp:
    """Mark a quarantined op as released (it was re-run and applied); ``reasons`` records how.
    Returns the op as now stored."""
    _set(item.id, status=RELEASED, reasons=reasons)
    return replace(item, status=RELEASED, reasons=reasons)


def update_reasons(item: QuarantinedOp, reasons: list[dict[str, Any]]) -> QuarantinedOp:
    """Replace the reasons of a still-held op (after a re-run that failed again); returns the op
    as now stored."""
    merged = {**item.reasons, "issues": reasons}
    _set(item.id, reasons=merged)
    return replace(item, reasons=merged)


def _set(item_id: int, **values: Any) -> None:
    row = db.session.get(QuarantinedOpRow, item_id)
    if row is None:  # pragma: no cover - quarantine rows are never deleted
        raise ValueError(f"no quarantined op {item_id}")
    for name, value in values.items():
        setattr(row, name, value)
    db.session.flush()
