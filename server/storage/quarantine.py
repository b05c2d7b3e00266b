"""Quarantine: ops the server refused, kept whole with their reasons so nothing typed is lost.

Kinds: ``invalid`` (the merged record failed validation, or the op could not be merged),
``out_of_scope`` (a record outside the device's villages) and ``unknown_form_version`` (a form
version the server has not published; an admin can map it to a published one and re-run it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from server.storage.database import db
from server.storage.models import QuarantinedOp
from server.storage.scoping import under_prefix
from server.storage.types import utcnow

INVALID, OUT_OF_SCOPE, UNKNOWN_FORM_VERSION = "invalid", "out_of_scope", "unknown_form_version"
KINDS = (INVALID, OUT_OF_SCOPE, UNKNOWN_FORM_VERSION)
HELD, RELEASED = "held", "released"


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
    row = QuarantinedOp(
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
    return row


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
    query = sa.select(QuarantinedOp).where(under_prefix(QuarantinedOp.village_code, area_prefix))
    if area_prefix:
        query = query.where(QuarantinedOp.village_code != "")
    if kind:
        query = query.where(QuarantinedOp.kind == kind)
    if status:
        query = query.where(QuarantinedOp.status == status)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
    rows = db.session.scalars(query.order_by(QuarantinedOp.id.desc()).limit(limit).offset(offset))
    return list(rows), int(total)


def held_in_area(item_id: int, area_prefix: str, *, lock: bool = False) -> QuarantinedOp | None:
    """One quarantined op if its village lies under ``area_prefix`` (else None).

    With ``lock`` the row is locked for update (call inside a write transaction).
    """
    query = sa.select(QuarantinedOp).where(
        QuarantinedOp.id == item_id, under_prefix(QuarantinedOp.village_code, area_prefix)
    )
    if area_prefix:
        query = query.where(QuarantinedOp.village_code != "")
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return db.session.scalar(query)


def release(row: QuarantinedOp, *, reasons: dict[str, Any]) -> None:
    """Mark a quarantined op as released (it was re-run and applied); ``reasons`` records how."""
    row.status = RELEASED
    row.reasons = reasons
    db.session.flush()


def update_reasons(row: QuarantinedOp, reasons: list[dict[str, Any]]) -> None:
    """Replace the reasons of a still-held op (after a re-run that failed again)."""
    row.reasons = {**row.reasons, "issues": reasons}
    db.session.flush()
