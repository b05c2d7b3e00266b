"""What the 动态清零 board reads: each household's verdicts round by round, from the maintained
indicator rows (``household_indicators``, one per household and round), and the records that
show a problem solved.

The board never recomputes a picture and never reads the rows of households that never failed
an indicator: one statement joins the rows to the households that failed something and
streams their five verdict columns per round.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from server.storage.database import db
from server.storage.indicators import NEWEST, PROBLEM_COLUMNS
from server.storage.models import HouseholdIndicatorRow as Row
from server.storage.models import Record, VillageIndicatorCounts
from server.storage.scoping import under_prefix

#: Rows fetched at a time from the streamed result.
ROWS_PER_FETCH = 2000
#: Row keys per statement when evidence is looked up.
KEYS_PER_STATEMENT = 400


@dataclass(frozen=True)
class RoundVerdicts:
    """One household's indicators in one round: problem → True (passes), False (fails) or None
    (the round's records do not decide it)."""

    round: str
    started_at: datetime | None
    verdicts: dict[str, bool | None]


def _verdict(value: bool | None, fails: bool) -> bool | None:
    return None if value is None else value is not fails


def _began(verdicts: RoundVerdicts) -> tuple[bool, float, str]:
    """Rounds in the order they began (undated last, then by name)."""
    started = verdicts.started_at
    return (started is None, 0.0 if started is None else started.timestamp(), verdicts.round)


def household_rounds(
    area_prefix: str, *, rows_per_fetch: int = ROWS_PER_FETCH
) -> Iterator[tuple[str, str, list[RoundVerdicts]]]:
    """Yield (village code, household number, its rounds in the order they began) for every
    household under ``area_prefix`` that failed an indicator in some round, village code then
    household number order.

    The households that never failed (most of a county) are never read: the rows are joined
    to the households that failed something, in one statement whose result is streamed
    ``rows_per_fetch`` at a time (memory: one fetch plus one household).
    """
    columns = [column for column, _, _ in PROBLEM_COLUMNS.values()]
    failed = sa.orm.aliased(Row)
    with_problem = (
        sa.select(failed.village_code, failed.household_no)
        .where(
            failed.round_key != NEWEST,
            under_prefix(failed.village_code, area_prefix),
            sa.or_(
                *(
                    getattr(failed, column.key).is_(fails)
                    for column, fails, _ in PROBLEM_COLUMNS.values()
                )
            ),
        )
        .distinct()
        .subquery()
    )
    query = (
        sa.select(Row.village_code, Row.household_no, Row.round_key, Row.round_started_at, *columns)
        .join(
            with_problem,
            sa.and_(
                with_problem.c.village_code == Row.village_code,
                with_problem.c.household_no == Row.household_no,
            ),
        )
        .where(Row.round_key != NEWEST)
        .order_by(Row.village_code, Row.household_no)
    )
    result = db.session.execute(query, execution_options={"yield_per": rows_per_fetch})
    current: tuple[str, str] | None = None
    rounds: list[RoundVerdicts] = []
    for village, number, round_key, started, *values in result:
        if current != (village, number):
            if current is not None:
                yield (*current, sorted(rounds, key=_began))
            current, rounds = (village, number), []
        verdicts = {
            name: _verdict(value, fails)
            for (name, (_, fails, _)), value in zip(PROBLEM_COLUMNS.items(), values, strict=True)
        }
        rounds.append(RoundVerdicts(round_key, started, verdicts))
    if current is not None:
        yield (*current, sorted(rounds, key=_began))


@dataclass(frozen=True)
class RoundRecord:
    """A record of one household's round: its id, form and when it reached the server."""

    record_id: str
    form_id: str
    created_at: datetime


def round_records(
    keys: Collection[tuple[str, str, str]],
) -> dict[tuple[str, str, str], list[RoundRecord]]:
    """(village code, household number, round) → the records its indicator row was computed
    from (live ones), for the problems the board shows with their evidence."""
    wanted = sorted(set(keys))
    ids: dict[str, tuple[tuple[str, str, str], str]] = {}
    for start in range(0, len(wanted), KEYS_PER_STATEMENT):
        chunk = wanted[start : start + KEYS_PER_STATEMENT]
        rows = db.session.execute(
            sa.select(Row.village_code, Row.household_no, Row.round_key, Row.picture).where(
                sa.tuple_(Row.village_code, Row.household_no, Row.round_key).in_(chunk)
            )
        ).all()
        for village, number, round_key, picture in rows:
            record_ids: dict[str, Any] = (picture or {}).get("record_ids") or {}
            for form_id, record_id in record_ids.items():
                ids[str(record_id)] = ((village, number, round_key), form_id)
    out: dict[tuple[str, str, str], list[RoundRecord]] = {}
    names = sorted(ids)
    for start in range(0, len(names), KEYS_PER_STATEMENT):
        chunk = names[start : start + KEYS_PER_STATEMENT]
        found = db.session.execute(
            sa.select(Record.record_id, Record.created_at).where(
                Record.record_id.in_(chunk), Record.deleted.is_(False)
            )
        ).all()
        for record_id, created in found:
            key, form_id = ids[record_id]
            out.setdefault(key, []).append(RoundRecord(record_id, form_id, created))
    return out


def village_households(area_prefix: str) -> dict[str, int]:
    """Village code → households with a picture (the dashboard's count) under ``area_prefix``."""
    rows = db.session.execute(
        sa.select(VillageIndicatorCounts.village_code, VillageIndicatorCounts.households).where(
            VillageIndicatorCounts.round_key == NEWEST,
            under_prefix(VillageIndicatorCounts.village_code, area_prefix),
        )
    ).all()
    return {village: int(count) for village, count in rows}
