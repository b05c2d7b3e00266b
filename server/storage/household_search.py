"""Finding households by number, member name or ID number, inside an area, in SQL.

Names and ID numbers live inside the roster record's JSON document. The query narrows the rows
in the database (area prefix, form, and a ``LIKE`` over the document's text), so only the few
candidate rosters reach Python, where the service confirms each match field by field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from server.storage.database import db
from server.storage.models import Record
from server.storage.scoping import under_prefix

#: The character that escapes ``%``, ``_`` and itself in the patterns below (not a backslash:
#: SQLite's JSON text holds ``\\uXXXX`` escapes the pattern must match literally).
_ESCAPE = "!"


@dataclass(frozen=True)
class RosterRow:
    """One live roster record of a household: where it is and its plain data."""

    village_code: str
    household_no: str
    round: str
    data: dict[str, Any]


def _escaped(text: str) -> str:
    return (
        text.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")
    )


def _spellings(text: str) -> tuple[str, ...]:
    """``text`` spelled as it may appear inside the stored JSON text of this engine.

    PostgreSQL's JSONB prints characters as they are. SQLite keeps the text as written: records
    stored before orjson became the JSON columns' encoder hold ASCII JSON (``\\u90ed``), newer
    ones the characters themselves (and the standard-library fallback writes ASCII again), so
    both spellings are searched.
    """
    plain = json.dumps(text, ensure_ascii=False)[1:-1]
    if db.session.get_bind().dialect.name == "postgresql":
        return (plain,)
    escaped = json.dumps(text, ensure_ascii=True)[1:-1]
    return (plain,) if escaped == plain else (plain, escaped)


def _document_text() -> sa.ColumnElement[str]:
    return sa.cast(Record.data, sa.Text)


def rosters_containing(
    area_prefix: str,
    form_id: str,
    *,
    fragment: str | None = None,
    characters: str | None = None,
    limit: int = 200,
) -> list[RosterRow]:
    """Live ``form_id`` records inside ``area_prefix`` whose document text contains
    ``fragment``, or ``characters`` in order with anything between them (how an ID number typed
    with spaces or dashes is still found by its normalised digits; case-insensitive for ``X``).

    A candidate list, at most ``limit`` rows, by village and household: the caller checks each.
    Raises ``ValueError`` for a prefix that is not digits.
    """
    query = sa.select(Record.village_code, Record.household_no, Record.round, Record.data).where(
        under_prefix(Record.village_code, area_prefix),
        Record.form_id == form_id,
        Record.deleted.is_(False),
    )
    if fragment:
        query = query.where(
            sa.or_(
                *(
                    _document_text().like("%" + _escaped(spelled) + "%", escape=_ESCAPE)
                    for spelled in _spellings(fragment)
                )
            )
        )
    if characters:
        # ID characters are digits and X: ASCII, spelled the same either way.
        pattern = "%" + "%".join(_escaped(_spellings(c)[0]) for c in characters) + "%"
        query = query.where(_document_text().ilike(pattern, escape=_ESCAPE))
    query = query.order_by(Record.village_code, Record.household_no, Record.round.desc())
    return [
        RosterRow(v, h, r, d if isinstance(d, dict) else {})
        for v, h, r, d in db.session.execute(query.limit(limit))
    ]


def households_numbered(
    area_prefix: str, number: str, *, limit: int = 200
) -> list[tuple[str, str]]:
    """(village code, household number) of the households with a live record inside
    ``area_prefix`` whose number is ``number`` or starts with it, by village and number."""
    query = (
        sa.select(Record.village_code, Record.household_no)
        .where(
            under_prefix(Record.village_code, area_prefix),
            Record.household_no.like(_escaped(number) + "%", escape=_ESCAPE),
            Record.deleted.is_(False),
        )
        .distinct()
        .order_by(Record.village_code, Record.household_no)
        .limit(limit)
    )
    return [(v, h) for v, h in db.session.execute(query)]
