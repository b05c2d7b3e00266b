"""Monitoring-line configuration: yuan per person per year, by region code prefix and year."""

from __future__ import annotations

import dataclasses
import threading
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


#: The lines last read, per database, with the stamp they were read at (see :func:`list_lines`).
_CACHE: dict[str, tuple[tuple[Any, ...], tuple[MonitoringLine, ...]]] = {}
_CACHE_LOCK = threading.Lock()


def _stamp() -> tuple[Any, ...]:
    """A cheap fingerprint of the table: any insert, update or delete changes it.

    An upsert sets ``updated_at``; an insert raises the row count or (after a delete) brings the
    newest ``updated_at``; a delete lowers the count.
    """
    row = db.session.execute(_STAMP).one()
    return tuple(row)


_LINES: sa.Table = LineRow.__table__  # type: ignore[assignment]
# Built once: every sync exchange runs it, and a statement built per call cost its compile and
# cache-key walk each time (py-spy, ``bench peak``: most of the fingerprint's cost).
_STAMP = sa.select(sa.func.count(), sa.func.max(_LINES.c.updated_at), sa.func.max(_LINES.c.id))
_ALL_LINES = sa.select(*(_LINES.c[f.name] for f in dataclasses.fields(MonitoringLine))).order_by(
    _LINES.c.region_code, _LINES.c.year
)


def list_lines() -> tuple[MonitoringLine, ...]:
    """Every configured line, by region then year (the configuration is county-public).

    Every sync exchange reads the configuration two or three times (validation, indicator rows,
    the manifest page): with one line per village that was 16 % of the server's time at the
    evening peak (py-spy, ``bench peak``), loading the same rows again and again. The lines are
    kept per database and read again only when the table's fingerprint changes; the fingerprint
    is read in the caller's transaction, so a writer sees its own change, and several server
    processes never serve each other's stale copy. The lines are frozen: callers share them.
    """
    key = str(db.session.get_bind().url)
    stamp = _stamp()
    cached = _CACHE.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    # One thread reads the changed table, the others of the process wait and take its copy:
    # after a change every serving thread missed at once and each loaded every line.
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        rows = db.session.execute(_ALL_LINES)
        lines = tuple(plain(MonitoringLine, row) for row in rows)
        _CACHE[key] = (stamp, lines)
    return lines
