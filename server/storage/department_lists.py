"""Department lists at rest: saved column mappings, one round per imported file, sealed rows.

The rows' cells (ID numbers, medical amounts, disability status) arrive here already sealed by
the service; storage keeps in clear only what scoping and counting need: the Excel row, the
village and household a row matched (or the village it names), how it matched and, for an
unmatched row, why. The roster index the matching needs is read here too, in one pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa

from server.storage.database import db
from server.storage.models import (
    DepartmentMapping,
    DepartmentRound,
    DepartmentRow,
    Record,
)
from server.storage.scoping import under_prefix
from server.storage.types import plain, utcnow

#: Rows inserted per statement (keeps one executemany's parameters bounded).
_INSERT_CHUNK = 2000


@dataclass(frozen=True)
class RoundView:
    """One imported department file, as storage hands it out."""

    id: int
    area: str
    department: str
    period: str
    as_of: date
    file_sha256: str
    file_name: str
    counts: dict[str, Any]
    signals: dict[str, Any]
    signals_delivered: bool
    created_at: Any
    created_by: str


@dataclass(frozen=True)
class StoredRow:
    """One department row: where it landed, and its sealed cells."""

    id: int
    round_id: int
    excel_row: int
    village_code: str
    household_no: str
    matched_by: str
    problem: str
    key_id: str
    sealed: bytes


# --- mappings ----------------------------------------------------------------------------------


def get_mapping(area: str, department: str) -> dict[str, str] | None:
    """The saved mapping (field → header) of ``department`` for ``area``, or None."""
    row = db.session.get(DepartmentMapping, (area, department))
    return dict(row.columns) if row is not None else None


def save_mapping(area: str, department: str, columns: Mapping[str, str], *, by: str) -> None:
    """Insert or replace the mapping of ``department`` for ``area`` (inside a write)."""
    row = db.session.get(DepartmentMapping, (area, department))
    if row is None:
        row = DepartmentMapping(area=area, department=department)
        db.session.add(row)
    row.columns = dict(columns)
    row.updated_at = utcnow()
    row.updated_by = by
    db.session.flush()


def mappings_for(area_prefixes: Iterable[str]) -> dict[tuple[str, str], dict[str, str]]:
    """Saved mappings of the given areas, by (area, department)."""
    query = sa.select(DepartmentMapping).where(DepartmentMapping.area.in_(list(area_prefixes)))
    return {(m.area, m.department): dict(m.columns) for m in db.session.scalars(query)}


# --- rounds ------------------------------------------------------------------------------------


def find_round(area: str, department: str, file_sha256: str) -> RoundView | None:
    """The round that imported this very file for ``department`` into ``area``, or None."""
    query = sa.select(DepartmentRound).where(
        DepartmentRound.area == area,
        DepartmentRound.department == department,
        DepartmentRound.file_sha256 == file_sha256,
    )
    row = db.session.scalars(query).first()
    return plain(RoundView, row) if row is not None else None


def add_round(
    *,
    area: str,
    department: str,
    period: str,
    as_of: date,
    file_sha256: str,
    file_name: str,
    created_by: str,
) -> int:
    """Insert a round (inside a write) and return its id; counts and signals come later."""
    row = DepartmentRound(
        area=area,
        department=department,
        period=period,
        as_of=as_of,
        file_sha256=file_sha256,
        file_name=file_name[:200],
        counts={},
        signals={},
        signals_delivered=False,
        created_at=utcnow(),
        created_by=created_by,
    )
    db.session.add(row)
    db.session.flush()
    return int(row.id)


def finish_round(
    round_id: int, *, counts: Mapping[str, Any], signals: Mapping[str, Any], delivered: bool
) -> None:
    """Record a round's counts and the signals found (inside a write)."""
    row = db.session.get(DepartmentRound, round_id)
    if row is None:  # pragma: no cover - the caller inserted it in the same transaction
        raise LookupError(round_id)
    row.counts = dict(counts)
    row.signals = dict(signals)
    row.signals_delivered = delivered


def mark_delivered(round_id: int) -> None:
    """The round's signals reached the task service (inside a write)."""
    row = db.session.get(DepartmentRound, round_id)
    if row is not None:
        row.signals_delivered = True


def get_round(round_id: int) -> RoundView | None:
    """One round by id, or None."""
    row = db.session.get(DepartmentRound, round_id)
    return plain(RoundView, row) if row is not None else None


def _enclosing(prefix: str) -> list[str]:
    """Every area a round may have been imported for that covers ``prefix`` (its prefixes)."""
    return [prefix[:n] for n in range(len(prefix) + 1)]


def list_rounds(area_prefix: str, *, department: str | None = None) -> list[RoundView]:
    """Rounds imported for an area inside ``area_prefix`` or one that covers it (a township
    reviewer sees the county's rounds, counted over its townships by the caller), newest first."""
    query = sa.select(DepartmentRound).where(
        sa.or_(
            under_prefix(DepartmentRound.area, area_prefix),
            DepartmentRound.area.in_(_enclosing(area_prefix)),
        )
    )
    if department:
        query = query.where(DepartmentRound.department == department)
    query = query.order_by(DepartmentRound.id.desc())
    return [plain(RoundView, row) for row in db.session.scalars(query)]


# --- rows --------------------------------------------------------------------------------------


def add_rows(round_id: int, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert a round's rows (dicts with the :class:`StoredRow` columns but ``id`` and
    ``round_id``) in chunks, inside the caller's write; returns how many."""
    total = 0
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append({**row, "round_id": round_id})
        if len(chunk) >= _INSERT_CHUNK:
            db.session.execute(sa.insert(DepartmentRow), chunk)
            total += len(chunk)
            chunk = []
    if chunk:
        db.session.execute(sa.insert(DepartmentRow), chunk)
        total += len(chunk)
    return total


def rows_of_round(
    round_id: int,
    area_prefix: str,
    *,
    problems_only: bool = False,
    include_unlocated: bool = False,
    limit: int = 1000,
    offset: int = 0,
) -> tuple[list[StoredRow], int]:
    """A page of a round's rows inside ``area_prefix`` (by Excel row) and how many there are.

    Rows whose village is unknown (``""``) are included only with ``include_unlocated`` — for
    callers whose area covers the whole round.
    """
    where = [DepartmentRow.round_id == round_id]
    located = under_prefix(DepartmentRow.village_code, area_prefix)
    if include_unlocated:
        located = sa.or_(located, DepartmentRow.village_code == "")
    else:
        located = sa.and_(located, DepartmentRow.village_code != "")
    where.append(located)
    if problems_only:
        where.append(DepartmentRow.problem != "")
    total = db.session.scalar(sa.select(sa.func.count()).select_from(DepartmentRow).where(*where))
    query = (
        sa.select(DepartmentRow)
        .where(*where)
        .order_by(DepartmentRow.excel_row)
        .limit(limit)
        .offset(offset)
    )
    return [plain(StoredRow, row) for row in db.session.scalars(query)], int(total or 0)


def round_counts(round_id: int, area_prefix: str, *, include_unlocated: bool) -> dict[str, int]:
    """Rows of a round inside ``area_prefix`` by outcome: ``matched`` and each problem code."""
    located = under_prefix(DepartmentRow.village_code, area_prefix)
    if include_unlocated:
        located = sa.or_(located, DepartmentRow.village_code == "")
    else:
        located = sa.and_(located, DepartmentRow.village_code != "")
    query = (
        sa.select(DepartmentRow.problem, sa.func.count())
        .where(DepartmentRow.round_id == round_id, located)
        .group_by(DepartmentRow.problem)
    )
    return {(problem or "matched"): int(n) for problem, n in db.session.execute(query)}


# --- the roster and records the cross-checks read ------------------------------------------------


def latest_records(
    area_prefix: str, form_ids: Iterable[str]
) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(village, household, form, data) of the newest live record of each form per household
    inside ``area_prefix`` (newest round, then last updated), streamed in household order."""
    forms = list(form_ids)
    if not forms:
        return
    query = (
        sa.select(Record.village_code, Record.household_no, Record.form_id, Record.data)
        .where(
            under_prefix(Record.village_code, area_prefix),
            Record.form_id.in_(forms),
            Record.deleted.is_(False),
        )
        .order_by(
            Record.village_code,
            Record.household_no,
            Record.form_id,
            Record.round.desc(),
            Record.updated_at.desc(),
        )
        .execution_options(yield_per=2000)
    )
    last: tuple[str, str, str] | None = None
    for village, household, form_id, data in db.session.execute(query):
        key = (village, household, form_id)
        if key == last:
            continue  # an older round of the same form
        last = key
        yield village, household, form_id, data if isinstance(data, dict) else {}
