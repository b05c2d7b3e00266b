"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

_Plain = TypeVar("_Plain")

#: JSON documents: JSONB on PostgreSQL (indexable), JSON text on SQLite.
JsonDocument = sa.JSON().with_variant(JSONB(), "postgresql")

#: 64-bit surrogate keys; SQLite only auto-increments a column declared INTEGER.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC.

    SQLite has no time zones and returns naive datetimes; storing UTC and re-attaching the zone
    on the way out lets comparisons with ``datetime.now(UTC)`` work on both engines.
    Raises ``ValueError`` when given a naive datetime, so local times never slip in.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time, aware, in UTC (the only clock storage uses)."""
    return datetime.now(UTC)


def plain(cls: type[_Plain], row: Any) -> _Plain:
    """The dataclass ``cls`` filled from the same-named attributes of an ORM ``row``: what
    storage hands out instead of the row, so no caller depends on a session being open."""
    return cls(**{item.name: getattr(row, item.name) for item in fields(cls)})
