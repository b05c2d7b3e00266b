"""Monitoring-line configuration: yuan per person per year, by region code prefix and year."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from server.storage.database import db
from server.storage.models import MonitoringLine
from server.storage.types import utcnow


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
        insert(MonitoringLine)
        .values(region_code=region_code, year=year, **values)
        .on_conflict_do_update(index_elements=["region_code", "year"], set_=values)
    )
    row = get_line(region_code, year)
    if row is None:  # pragma: no cover - the upsert above always leaves the row
        raise LookupError("monitoring line vanished after upsert")
    db.session.refresh(row)
    return row


def get_line(region_code: str, year: int) -> MonitoringLine | None:
    """The line of exactly this region prefix and year, or None."""
    return db.session.scalar(
        sa.select(MonitoringLine).where(
            MonitoringLine.region_code == region_code, MonitoringLine.year == year
        )
    )


def delete_line(region_code: str, year: int) -> bool:
    """Remove a line; False when there was none."""
    return bool(
        db.session.execute(
            sa.delete(MonitoringLine).where(
                MonitoringLine.region_code == region_code, MonitoringLine.year == year
            )
        ).rowcount
    )


def list_lines() -> list[MonitoringLine]:
    """Every configured line, by region then year (the configuration is county-public)."""
    return list(
        db.session.scalars(
            sa.select(MonitoringLine).order_by(MonitoringLine.region_code, MonitoringLine.year)
        )
    )
