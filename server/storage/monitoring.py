"""Monitoring-line configuration: yuan per person per year, by region code prefix and year."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from server.storage import models
from server.storage.database import db
from server.storage.types import plain, utcnow

#: The table; callers get :class:`MonitoringLine` values, never its rows.
LineRow = models.MonitoringLine


@dataclass(frozen=True)
class MonitoringLine:
    """A region's monitoring income line (yuan per person per year) for a year, with its
    optional settings (thresholds, water region type). A candidate not yet stored has no
    ``updated_at``."""

    region_code: str
    year: int
    income_line: float
    settings: dict[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None
    updated_by: str = ""


def set_line(
    *, region_code: str, year: int, income_line: float, settings: dict[str, Any], updated_by: str
) -> MonitoringLine:
    """Create or replace the line of ``region_code`` for ``year`` (inside a write transaction)."""
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = {
        "income_line": income_line,
        "settings": settings,
        "updated_at": utcnow(),
        "updated_by": updated_by,
    }
    db.session.execute(
        insert(LineRow)
        .values(region_code=region_code, year=year, **values)
        .on_conflict_do_update(index_elements=["region_code", "year"], set_=values)
    )
    db.session.expire_all()  # the upsert bypassed the session: read the row as stored
    row = get_line(region_code, year)
    if row is None:  # pragma: no cover - the upsert above always leaves the row
        raise LookupError("monitoring line vanished after upsert")
    return row


def get_line(region_code: str, year: int) -> MonitoringLine | None:
    """The line of exactly this region prefix and year, or None."""
    row = db.session.scalar(
        sa.select(LineRow).where(LineRow.region_code == region_code, LineRow.year == year)
    )
    return None if row is None else plain(MonitoringLine, row)


def delete_line(region_code: str, year: int) -> bool:
    """Remove a line; False when there was none."""
    return bool(
        db.session.execute(
            sa.delete(LineRow).where(LineRow.region_code == region_code, LineRow.year == year)
        ).rowcount
    )


def list_lines() -> list[MonitoringLine]:
    """Every configured line, by region then year (the configuration is county-public)."""
    rows = db.session.scalars(sa.select(LineRow).order_by(LineRow.region_code, LineRow.year))
    return [plain(MonitoringLine, row) for row in rows]
