"""Area scoping in SQL: a row is visible when its area code starts with the caller's prefix."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement


def under_prefix(
    column: sa.ColumnElement[str] | sa.orm.InstrumentedAttribute[str], prefix: str
) -> ColumnElement[bool]:
    """SQL condition: ``column`` starts with ``prefix`` (always true for the empty prefix).

    Prefixes are digits only (checked by the service layer), so no LIKE escaping is needed; a
    non-digit prefix is refused here too rather than risk a wildcard.
    Raises ``ValueError`` for a prefix that is not digits.
    """
    if not prefix:
        return sa.true()
    if not (prefix.isascii() and prefix.isdigit()):
        raise ValueError(f"area prefix must be digits, got {prefix!r}")
    return column.like(prefix + "%")


def prefix_covers(outer: str, inner: str) -> bool:
    """True when the area ``inner`` lies inside ``outer`` (the empty prefix covers everything)."""
    return inner.startswith(outer)


def prefix_range(
    column: sa.ColumnElement[str] | sa.orm.InstrumentedAttribute[str], prefix: str
) -> ColumnElement[bool]:
    """:func:`under_prefix` written as a range (``prefix <= column < prefix + 1``), which an index
    on ``column`` serves on SQLite and PostgreSQL alike (SQLite's LIKE is case-insensitive and
    never uses an index; PostgreSQL's needs a ``text_pattern_ops`` one). Codes are digits, so
    every code starting with ``prefix`` lies in the range and nothing else does.

    Raises ``ValueError`` for a prefix that is not digits.
    """
    if not prefix:
        return sa.true()
    under_prefix(column, prefix)  # the same check of the prefix
    upper = str(int(prefix) + 1).zfill(len(prefix))
    if len(upper) > len(prefix):  # all nines: no upper bound
        return column >= prefix
    return sa.and_(column >= prefix, column < upper)
