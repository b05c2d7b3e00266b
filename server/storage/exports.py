"""Reads behind exports: one form's records streamed in keyset pages, scoped by area prefix."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from server.storage.database import db
from server.storage.models import Record
from server.storage.scoping import prefix_range

#: Rows fetched per round trip: an export of 100,000 records holds one page at a time.
CHUNK_ROWS = 1000


@dataclass(frozen=True)
class ExportedRecord:
    """The envelope and data of one live record, as an export row needs them."""

    record_id: str
    village_code: str
    household_no: str
    round: str
    form_version: int
    updated_at: datetime
    data: dict[str, Any]


def form_records(
    form_id: str,
    area_prefix: str,
    *,
    round: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[ExportedRecord]:
    """Yield the live records of ``form_id`` under ``area_prefix`` in (village, household,
    record id) order, fetched ``chunk_rows`` at a time with a keyset cursor (no OFFSET scans).

    Raises ``ValueError`` for an area prefix that is not digits.
    """
    query = sa.select(
        Record.record_id,
        Record.village_code,
        Record.household_no,
        Record.round,
        Record.form_version,
        Record.updated_at,
        Record.data,
    ).where(
        Record.form_id == form_id,
        Record.deleted.is_(False),
        prefix_range(Record.village_code, area_prefix),
    )
    if round:
        query = query.where(Record.round == round)
    order = (Record.village_code, Record.household_no, Record.record_id)
    last: tuple[str, str, str] | None = None
    while True:
        page = query
        if last is not None:
            page = page.where(sa.tuple_(*order) > sa.tuple_(*(sa.literal(v) for v in last)))
        rows = db.session.execute(page.order_by(*order).limit(chunk_rows)).all()
        for record_id, village, number, round_, version, updated_at, data in rows:
            yield ExportedRecord(
                record_id, village, number, round_, version, updated_at, data or {}
            )
        if len(rows) < chunk_rows:
            return
        last = (rows[-1][1], rows[-1][2], rows[-1][0])


def count_form_records(form_id: str, area_prefix: str, *, round: str | None = None) -> int:
    """How many live records of ``form_id`` under ``area_prefix`` an export would hold."""
    query = sa.select(sa.func.count()).where(
        Record.form_id == form_id,
        Record.deleted.is_(False),
        prefix_range(Record.village_code, area_prefix),
    )
    if round:
        query = query.where(Record.round == round)
    return int(db.session.scalar(query) or 0)
