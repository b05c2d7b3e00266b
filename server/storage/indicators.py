"""The indicators dashboard's storage: household records, the maintained indicator rows, conflicts.

A county holds some 100,000 households and 400,000 records, so nothing here loads them all:
:func:`household_records` pages through the records table with a keyset cursor (village code,
household number, record id) and yields one household at a time, and the dashboard itself reads
the maintained per-household rows (``household_indicators``, one per household and round plus
one, ``round_key = ''``, for its newest records) with ``GROUP BY`` and indexed filters:
:func:`area_counts`, :func:`round_counts`, :func:`listed_pictures`, :func:`picture_page` and
:class:`HouseholdSelection`. The rows are written by :func:`replace_rows` in the transaction of
the record batch that changed the household. Every query is scoped by a village-code prefix in
SQL.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from forms.verification import FORM_ID as VERIFICATION_FORM
from server.storage.database import db
from server.storage.models import (
    ConflictItem,
    HouseholdIndicatorRow,
    Record,
    VillageIndicatorCounts,
)
from server.storage.scoping import prefix_range, under_prefix

#: Rows fetched per round trip; bounds memory whatever the size of the county.
CHUNK_ROWS = 2000
#: Conflict status of the review queue that still awaits a reviewer.
OPEN_CONFLICT = "open"


@dataclass(frozen=True)
class StoredRecord:
    """The parts of a stored record the indicators read."""

    record_id: str
    form_id: str
    round: str
    created_at: datetime
    updated_at: datetime
    data: dict[str, Any]


@dataclass
class HouseholdRecords:
    """The live records of one household, every round."""

    village_code: str
    household_no: str
    records: list[StoredRecord] = field(default_factory=list)

    def rounds(self) -> list[str]:
        """The household's survey rounds in the order they were made (first record of each)."""
        first: dict[str, datetime] = {}
        for record in self.records:
            if record.round not in first or record.created_at < first[record.round]:
                first[record.round] = record.created_at
        return sorted(first, key=lambda r: (first[r], r))

    def newest_by_form(self, rounds: set[str] | None = None) -> dict[str, StoredRecord]:
        """Form id → the newest record (made last, then edited last) among ``rounds`` (all)."""
        out: dict[str, StoredRecord] = {}
        for record in self.records:
            if rounds is not None and record.round not in rounds:
                continue
            current = out.get(record.form_id)
            if current is None or (record.created_at, record.updated_at) > (
                current.created_at,
                current.updated_at,
            ):
                out[record.form_id] = record
        return out

    def data_by_form(self, rounds: set[str] | None = None) -> dict[str, dict[str, Any]]:
        """Form id → newest record data, the shape ``household_indicators`` takes."""
        return {form: record.data for form, record in self.newest_by_form(rounds).items()}


def household_records(
    area_prefix: str,
    *,
    round: str | None = None,
    form_ids: tuple[str, ...] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[HouseholdRecords]:
    """Yield the households under ``area_prefix`` (village code, then household number order).

    Only live survey records count: no tombstones, and no verification-task outcome (its
    per-task round is no survey round — counted as one, it would stand as "the next round" that
    confirms a problem cleared). ``round`` keeps one survey round, ``form_ids``
    some forms. Memory stays at one chunk of rows plus one household. Raises ``ValueError`` for
    an area prefix that is not digits.
    """
    query = sa.select(
        Record.record_id,
        Record.village_code,
        Record.household_no,
        Record.form_id,
        Record.round,
        Record.created_at,
        Record.updated_at,
        Record.data,
    ).where(
        under_prefix(Record.village_code, area_prefix),
        Record.deleted.is_(False),
        Record.form_id != VERIFICATION_FORM,
    )
    if round:
        query = query.where(Record.round == round)
    if form_ids:
        query = query.where(Record.form_id.in_(form_ids))
    order = (Record.village_code, Record.household_no, Record.record_id)
    household: HouseholdRecords | None = None
    last: tuple[str, str, str] | None = None
    while True:
        page = query
        if last is not None:
            page = page.where(sa.tuple_(*order) > sa.tuple_(*(sa.literal(v) for v in last)))
        rows = db.session.execute(page.order_by(*order).limit(chunk_rows)).all()
        for record_id, village, number, form_id, round_, created, updated, data in rows:
            if household is None or (household.village_code, household.household_no) != (
                village,
                number,
            ):
                if household is not None:
                    yield household
                household = HouseholdRecords(village, number)
            household.records.append(
                StoredRecord(record_id, form_id, round_, created, updated, data or {})
            )
        if len(rows) < chunk_rows:
            break
        last = (rows[-1][1], rows[-1][2], rows[-1][0])
    if household is not None:
        yield household


@dataclass(frozen=True)
class ConflictTally:
    """Open conflicts of one village: how many, and when the oldest was queued."""

    count: int
    oldest: datetime


def open_conflicts_by_village(area_prefix: str) -> dict[str, ConflictTally]:
    """Village code → its open conflicts (count, oldest) under ``area_prefix``.

    Raises ``ValueError`` for a prefix that is not digits.
    """
    rows = db.session.execute(
        sa.select(
            ConflictItem.village_code,
            sa.func.count(),
            sa.func.min(ConflictItem.created_at),
        )
        .where(
            ConflictItem.status == OPEN_CONFLICT,
            under_prefix(ConflictItem.village_code, area_prefix),
        )
        .group_by(ConflictItem.village_code)
    ).all()
    return {village: ConflictTally(int(count), oldest) for village, count, oldest in rows}


# --- the maintained household indicator rows ---------------------------------------------------

Row = HouseholdIndicatorRow
_ROWS: sa.Table = Row.__table__  # type: ignore[assignment]
#: The ``round_key`` of a household's picture from its newest record of every form.
NEWEST = ""
#: Households per statement when a set of households is named (bounds the parameter count).
HOUSEHOLDS_PER_STATEMENT = 400
#: Problem name → (column deciding it, value of that column when it fails, ``*_open`` column).
PROBLEM_COLUMNS: dict[str, tuple[Any, bool, Any]] = {
    "housing": (Row.housing_safe, False, Row.housing_open),
    "water": (Row.water_safe, False, Row.water_open),
    "education": (Row.dropout_present, True, Row.education_open),
    "insurance": (Row.everyone_insured, False, Row.insurance_open),
    "income": (Row.income_below_line, True, Row.income_open),
}
WATER_COLUMNS = {
    "quantity": Row.water_quantity_failed,
    "quality": Row.water_quality_failed,
    "convenience": Row.water_convenience_failed,
    "reliability": Row.water_reliability_failed,
}


def _chunks(pairs: list[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
    for start in range(0, len(pairs), HOUSEHOLDS_PER_STATEMENT):
        yield pairs[start : start + HOUSEHOLDS_PER_STATEMENT]


def lock_villages(villages: Collection[str]) -> None:
    """Hold, until the transaction ends, the right to rewrite the rows of ``villages``.

    Two batches of one village (PostgreSQL writers run side by side) then compute its household
    rows and its sums one after the other, each seeing what the other committed: an advisory
    transaction lock per village, taken in code order. SQLite's writers are serial anyway.
    Call inside a write transaction.
    """
    if db.session.get_bind().dialect.name != "postgresql":
        return
    for village in sorted(set(villages)):
        db.session.execute(_LOCK_VILLAGE, {"village": village})


#: The first key of the village locks (any constant no other advisory lock of ours uses).
_LOCK_SPACE = 0x56494E44
_LOCK_VILLAGE = sa.select(
    sa.func.pg_advisory_xact_lock(_LOCK_SPACE, sa.func.hashtext(sa.bindparam("village")))
)


def records_of_households(pairs: Collection[tuple[str, str]]) -> list[HouseholdRecords]:
    """The live survey records of the households ``pairs`` (village code, household number
    order; no task outcomes, as in :func:`household_records`); households without one are left
    out."""
    found: dict[tuple[str, str], HouseholdRecords] = {}
    for chunk in _chunks(sorted(set(pairs))):
        rows = db.session.execute(_RECORDS_OF_HOUSEHOLDS, {"pairs": chunk}).all()
        for record_id, village, number, form_id, round_, created, updated, data in rows:
            household = found.get((village, number))
            if household is None:
                household = found[(village, number)] = HouseholdRecords(village, number)
            household.records.append(
                StoredRecord(record_id, form_id, round_, created, updated, data or {})
            )
    return [found[key] for key in sorted(found)]


def replace_rows(pairs: Collection[tuple[str, str]], rows: list[dict[str, Any]]) -> None:
    """Replace every indicator row of the households ``pairs`` by ``rows`` (column → value)
    and recompute the sums of their villages.

    Call inside the write transaction that changed the households' records. Every row of a
    household has to go (a round whose records were all deleted leaves no row), so this is one
    DELETE per :data:`HOUSEHOLDS_PER_STATEMENT` households and one executemany INSERT, through
    statements built once (see :data:`_DELETE_ROWS`).
    """
    ordered = sorted(set(pairs))
    for chunk in _chunks(ordered):
        db.session.execute(_DELETE_ROWS, {"pairs": chunk})
    if rows:
        db.session.execute(_INSERT_ROWS, rows)
    _sum_villages({village for village, _ in ordered})


def _sum_villages(villages: set[str]) -> None:
    """Recompute the sums of ``villages`` from their household rows (one INSERT … SELECT)."""
    codes = sorted(villages)
    if len(codes) == 1:
        # A tablet's batch: one village. ``=`` needs no expanding of the IN list per call (a
        # string rewrite of this long statement, which psycopg then converts uncached).
        db.session.execute(_DELETE_COUNTS_ONE, {"village": codes[0]})
        db.session.execute(_SUM_VILLAGES_ONE, {"village": codes[0]})
        return
    for start in range(0, len(codes), HOUSEHOLDS_PER_STATEMENT):
        chunk = codes[start : start + HOUSEHOLDS_PER_STATEMENT]
        db.session.execute(_DELETE_COUNTS, {"villages": chunk})
        db.session.execute(_SUM_VILLAGES, {"villages": chunk})


def household_keys(after: tuple[str, str] | None, limit: int) -> list[tuple[str, str]]:
    """The next ``limit`` households (village code, household number) with any record or
    indicator row, after ``after`` in that order — the walk of a rebuild."""
    keys = sa.union(
        sa.select(Record.village_code, Record.household_no),
        sa.select(Row.village_code, Row.household_no),
    ).subquery()
    query = sa.select(keys.c.village_code, keys.c.household_no)
    if after is not None:
        query = query.where(
            sa.tuple_(keys.c.village_code, keys.c.household_no)
            > sa.tuple_(sa.literal(after[0]), sa.literal(after[1]))
        )
    rows = db.session.execute(
        query.order_by(keys.c.village_code, keys.c.household_no).limit(limit)
    ).all()
    return [(v, h) for v, h in rows]


def stale_households(
    area_prefix: str, config_key: str, year: int, limit: int
) -> list[tuple[str, str]]:
    """Up to ``limit`` households under ``area_prefix`` with a row computed for another
    monitoring configuration than ``config_key``, or (rounds without a year) another year."""
    # Each arm is one index range (ix_household_indicators_config / _year), asked on its own:
    # when nothing is stale, as on almost every read, nothing else is read.
    arms = [
        Row.config_key < config_key,
        Row.config_key > config_key,
        sa.and_(Row.year_floating.is_(True), Row.year < year),
        sa.and_(Row.year_floating.is_(True), Row.year > year),
    ]
    found: list[tuple[str, str]] = []
    for arm in arms:
        if len(found) >= limit:
            break
        rows = db.session.execute(
            sa.select(Row.village_code, Row.household_no)
            .where(arm, under_prefix(Row.village_code, area_prefix))
            .limit(limit)
        ).all()
        found.extend((v, h) for v, h in rows)
    return sorted(set(found))[:limit]


def _count(condition: Any) -> Any:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


@dataclass(frozen=True)
class AreaCounts:
    """Household counts of one area (a village-code prefix) as the dashboard shows them.

    ``<problem>_passing``/``_failing`` count households whose indicator passes/fails (the rest
    are undecided); ``problems`` counts open problems by name, ``oldest_problem`` is the date
    the oldest of them was found.
    """

    area: str
    households: int
    passing: dict[str, int]
    failing: dict[str, int]
    water_failed: dict[str, int]
    all_assured: int
    incomplete: int
    with_category: int
    risk_removed: int
    open_problems: int
    problems: dict[str, int]
    oldest_problem: date | None
    newly_at_risk: int
    #: Monitoring objects whose risk is not removed (the dashboard's list of them).
    monitored: int = 0


def _count_columns() -> list[Any]:
    # Over the table's columns, not the ORM attributes: the statement is built once at import
    # (``_SUM_VILLAGES``) and runs as plain Core, without the ORM's compile step.
    c = _ROWS.c
    columns: list[Any] = [sa.func.count()]
    for column, fails, _ in PROBLEM_COLUMNS.values():
        columns += [_count(c[column.key].is_(not fails)), _count(c[column.key].is_(fails))]
    columns += [_count(c[column.key].is_(True)) for column in WATER_COLUMNS.values()]
    columns += [
        _count(c.all_assured.is_(True)),
        _count(c.all_assured.is_(None)),
        _count(c.has_category.is_(True)),
        _count(c.risk_removed.is_(True)),
        sa.func.coalesce(sa.func.sum(c.open_problems), 0),
    ]
    columns += [_count(c[open_.key].is_(True)) for _, _, open_ in PROBLEM_COLUMNS.values()]
    columns += [
        sa.func.min(c.oldest_problem_on),
        _count(c.newly_at_risk.is_(True)),
        _count(c.monitored.is_(True)),
    ]
    return columns


Counts = VillageIndicatorCounts
#: The columns of :class:`VillageIndicatorCounts` in the order of ``round_key, village_code,
#: round_started_at`` + :func:`_count_columns`.
COUNT_COLUMNS = [
    "round_key",
    "village_code",
    "round_started_at",
    "households",
    *(f"{name}_{side}" for name in PROBLEM_COLUMNS for side in ("passing", "failing")),
    *(f"water_{name}_failed" for name in WATER_COLUMNS),
    "all_assured",
    "incomplete",
    "with_category",
    "risk_removed",
    "open_problems",
    *(f"{name}_open" for name in PROBLEM_COLUMNS),
    "oldest_problem_on",
    "newly_at_risk",
    "monitored",
]

# The statements of the write path (every record batch runs them), built once: a statement
# object SQLAlchemy has seen before costs a cache lookup, where building one per call cost the
# ORM compile step and a cache key walk per batch (py-spy, ``bench peak``: 23 % of the server's
# time in the indicator refresh). The households and villages travel as expanding parameters.
_PAIRS = sa.bindparam("pairs", expanding=True)
_VILLAGES = sa.bindparam("villages", expanding=True)
_DELETE_ROWS = sa.delete(_ROWS).where(
    sa.tuple_(_ROWS.c.village_code, _ROWS.c.household_no).in_(_PAIRS)
)
_INSERT_ROWS = sa.insert(_ROWS)
_COUNTS = Counts.__table__


def _sum_statement(villages: Any) -> sa.Insert:
    return sa.insert(_COUNTS).from_select(
        COUNT_COLUMNS,
        sa.select(
            _ROWS.c.round_key,
            _ROWS.c.village_code,
            sa.func.min(_ROWS.c.round_started_at),
            *_count_columns(),
        )
        .where(villages(_ROWS.c.village_code))
        .group_by(_ROWS.c.round_key, _ROWS.c.village_code),
    )


_DELETE_COUNTS = sa.delete(_COUNTS).where(_COUNTS.c.village_code.in_(_VILLAGES))
_SUM_VILLAGES = _sum_statement(lambda column: column.in_(_VILLAGES))
_DELETE_COUNTS_ONE = sa.delete(_COUNTS).where(_COUNTS.c.village_code == sa.bindparam("village"))
_SUM_VILLAGES_ONE = _sum_statement(lambda column: column == sa.bindparam("village"))
_RECORDS = Record.__table__
_RECORDS_OF_HOUSEHOLDS = (
    sa.select(
        _RECORDS.c.record_id,
        _RECORDS.c.village_code,
        _RECORDS.c.household_no,
        _RECORDS.c.form_id,
        _RECORDS.c.round,
        _RECORDS.c.created_at,
        _RECORDS.c.updated_at,
        _RECORDS.c.data,
    )
    .where(
        sa.tuple_(_RECORDS.c.village_code, _RECORDS.c.household_no).in_(_PAIRS),
        _RECORDS.c.deleted.is_(False),
        _RECORDS.c.form_id != VERIFICATION_FORM,
    )
    .order_by(_RECORDS.c.village_code, _RECORDS.c.household_no, _RECORDS.c.record_id)
)


def _area_counts(area: str, values: Any) -> AreaCounts:
    values = list(values)
    households, values = int(values[0]), [v for v in values[1:]]
    passing, failing = {}, {}
    for index, name in enumerate(PROBLEM_COLUMNS):
        passing[name], failing[name] = int(values[2 * index]), int(values[2 * index + 1])
    values = values[2 * len(PROBLEM_COLUMNS) :]
    water = {name: int(v) for name, v in zip(WATER_COLUMNS, values, strict=False)}
    values = values[len(WATER_COLUMNS) :]
    assured, incomplete, with_category, removed, problems_total = (int(v) for v in values[:5])
    values = values[5:]
    problems = {name: int(v) for name, v in zip(PROBLEM_COLUMNS, values, strict=False)}
    oldest, at_risk, monitored = values[len(PROBLEM_COLUMNS) : len(PROBLEM_COLUMNS) + 3]
    return AreaCounts(
        area=area,
        households=households,
        passing=passing,
        failing=failing,
        water_failed=water,
        all_assured=assured,
        incomplete=incomplete,
        with_category=with_category,
        risk_removed=removed,
        open_problems=problems_total,
        problems=problems,
        oldest_problem=oldest,
        newly_at_risk=int(at_risk),
        monitored=int(monitored),
    )


def _in_area(column: Any, prefix: str) -> Any:
    """``column`` (digit codes) starts with ``prefix``, as a range an index can serve."""
    return prefix_range(column, prefix)


def _village_counts(where: list[Any]) -> list[tuple[str, datetime | None, AreaCounts]]:
    rows = db.session.execute(
        sa.select(*(getattr(Counts, name) for name in COUNT_COLUMNS))
        .where(*where)
        .order_by(Counts.round_key, Counts.village_code)
    ).all()
    return [(row[0], row[2], _area_counts(row[1], row[3:])) for row in rows]


def village_counts(area_prefix: str, round_key: str) -> list[AreaCounts]:
    """The counts of every village under ``area_prefix`` in ``round_key`` (:data:`NEWEST` for
    the newest records), village order — a few hundred rows for a county."""
    where = [Counts.round_key == round_key, _in_area(Counts.village_code, area_prefix)]
    return [counts for _, _, counts in _village_counts(where)]


@dataclass(frozen=True)
class RoundCounts:
    """Counts of the villages of one survey round, for the trend by round."""

    round: str
    started_at: datetime | None
    villages: list[AreaCounts]


def round_counts(area_prefix: str) -> list[RoundCounts]:
    """Village counts per survey round under ``area_prefix``, in the order the rounds began."""
    where = [Counts.round_key != NEWEST, _in_area(Counts.village_code, area_prefix)]
    rounds: dict[str, RoundCounts] = {}
    for round_key, started, counts in _village_counts(where):
        current = rounds.get(round_key)
        if current is None:
            current = rounds[round_key] = RoundCounts(round_key, started, [])
        elif started is not None and (current.started_at is None or started < current.started_at):
            current = rounds[round_key] = RoundCounts(round_key, started, current.villages)
        current.villages.append(counts)
    return sorted(
        rounds.values(),
        key=lambda r: (r.started_at is None, r.started_at or datetime.min, r.round),
    )


#: The household lists of the dashboard: which rows, and their order, given today.
LISTS = ("below_line", "monitoring_objects", "newly_at_risk")


def _list_query(which: str, today: date) -> tuple[Any, tuple[Any, ...]]:
    if which == "below_line":
        return Row.income_below_line.is_(True), (Row.per_capita_income,)
    if which == "monitoring_objects":
        # Longest identified first, undated last.
        return Row.monitored.is_(True), (Row.identified_on.is_(None), Row.identified_on)
    if which == "newly_at_risk":
        return Row.newly_at_risk.is_(True), (
            sa.func.coalesce(Row.income_change_percent, 0.0),
            sa.func.coalesce(Row.expense_rise_percent, 0.0).desc(),
        )
    raise ValueError(f"unknown list {which!r}")


def listed_pictures(
    area_prefix: str, round_key: str, which: str, limit: int, today: date
) -> list[dict[str, Any]]:
    """The first ``limit`` pictures of one of :data:`LISTS` under ``area_prefix`` (their
    number is in the village counts)."""
    if limit <= 0:
        return []
    condition, order = _list_query(which, today)
    where = [Row.round_key == round_key, _in_area(Row.village_code, area_prefix), condition]
    if which == "monitoring_objects":
        # Dated households in index order, then the undated: two index walks, no sort.
        dated = _pictures([*where, Row.identified_on.is_not(None)], (Row.identified_on,), limit)
        if len(dated) == limit:
            return dated
        return dated + _pictures([*where, Row.identified_on.is_(None)], (), limit - len(dated))
    return _pictures(where, order, limit)


def _pictures(where: list[Any], order: tuple[Any, ...], limit: int) -> list[dict[str, Any]]:
    pictures = db.session.scalars(
        sa.select(Row.picture)
        .where(*where)
        .order_by(*order, Row.village_code, Row.household_no)
        .limit(limit)
    ).all()
    return list(pictures)


def picture_page(
    area_prefix: str, round_key: str, problem: str | None, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    """(how many, one page of pictures) of the households under ``area_prefix``, those with the
    open ``problem`` only when given, village code then household number order."""
    where = [Row.round_key == round_key, _in_area(Row.village_code, area_prefix)]
    counted = Counts.households if problem is None else getattr(Counts, f"{problem}_open")
    total = db.session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(counted), 0)).where(
            Counts.round_key == round_key, _in_area(Counts.village_code, area_prefix)
        )
    )
    if problem is not None:
        where.append(PROBLEM_COLUMNS[problem][2].is_(True))
    pictures = db.session.scalars(
        sa.select(Row.picture)
        .where(*where)
        .order_by(Row.village_code, Row.household_no)
        .limit(limit)
        .offset(offset)
    ).all()
    return int(total), list(pictures)


@dataclass(frozen=True)
class HouseholdSelection:
    """The households under ``area_prefix`` whose ``problem`` is decided (and, with ``failing``,
    fails or passes) in ``round_key`` — applied to a records query as a join, never a list."""

    area_prefix: str
    round_key: str
    problem: str
    failing: bool | None

    def _conditions(self) -> list[Any]:
        column, _, open_ = PROBLEM_COLUMNS[self.problem]
        out = [
            Row.round_key == self.round_key,
            _in_area(Row.village_code, self.area_prefix),
            column.is_not(None),
        ]
        if self.failing is not None:
            out.append(open_.is_(self.failing))
        return out

    def join(self, query: sa.Select[Any], village: Any, household: Any) -> sa.Select[Any]:
        """``query`` kept to rows whose (``village``, ``household``) columns name a selected
        household."""
        return query.join(
            Row, sa.and_(Row.village_code == village, Row.household_no == household)
        ).where(*self._conditions())

    @property
    def order(self) -> tuple[Any, Any]:
        """The selected households' order (village code, household number) as the joined index
        gives it: a query ordered by these first reads the index in order, no sort."""
        return Row.village_code, Row.household_no

    def pairs(self) -> set[tuple[str, str]]:
        """The selected households (village code, household number)."""
        rows = db.session.execute(
            sa.select(Row.village_code, Row.household_no).where(*self._conditions())
        ).all()
        return {(v, h) for v, h in rows}
