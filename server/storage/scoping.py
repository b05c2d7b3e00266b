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
