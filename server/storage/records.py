"""Instrument records: merged state, change log, tombstones and the per-scope download cursor.

Revisions come from the county's counter (``server.storage.revisions``), taken in the writing
transaction, so a record's revision only goes up and a ``since`` cursor over one county never
skips or repeats a row. Deletion keeps the row as a tombstone (``deleted = true``, new revision).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from server.storage import models
from server.storage.conflicts import open_ids_for_record
from server.storage.database import db
from server.storage.indicators import HouseholdSelection
from server.storage.models import Household, RevisionCounter
from server.storage.revisions import current_revision, next_revision
from server.storage.scoping import prefix_range, under_prefix
from server.storage.types import plain, utcnow

#: The tables; callers get :class:`StoredRecord` and :class:`RecordChange` values, never rows.
Record = models.Record
RecordChangeRow = models.RecordChange

#: Digits of a village code, the narrowest scope.
VILLAGE_CODE_LENGTH = 12


class ScopeError(ValueError):
    """A download scope is not a code prefix of 6 to 12 digits (county, township or village)."""

    code = "invalid_scope"


def county_of(code: str) -> str:
    """The 6-digit county part of a village code or scope.

    Raises :class:`ScopeError` when ``code`` is not 6-12 digits.
    """
    if not (6 <= len(code) <= 12 and code.isascii() and code.isdigit()):
        raise ScopeError(f"a scope or village code is 6-12 digits, got {code!r}")
    return code[:6]


@dataclass(frozen=True)
class StoredRecord:
    """A record as stored: envelope, revision, tombstone flag, merged state and plain data."""

    record_id: str
    form_id: str
    form_version: int
    village_code: str
    county_code: str
    household_no: str
    round: str
    revision: int
    deleted: bool
    #: ``RecordState.to_dict()`` with ``revision`` set: what devices receive.
    state: dict[str, Any]
    #: The merged values as nested form data (``forms.unflatten`` of the winning writes).
    data: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RecordChange:
    """One entry of a record's change log: who changed what, at which revision, with which
    outcome per field (``changes`` is flat ``{path: value}``)."""

    id: int
    record_id: str
    revision: int
    kind: str  # put | delete | resolve | upgrade
    device_id: str | None
    op_seq: int | None
    user_id: int | None
    hlc: str | None
    changes: dict[str, Any]
    outcome: dict[str, Any]
    at: datetime


@dataclass(frozen=True)
class RecordDetail:
    """The admin read model of one record: the record, its change log (oldest first) and the
    ids of its open conflicts, read together so the view needs nothing else from storage."""

    record: StoredRecord
    history: list[RecordChange]
    open_conflicts: list[str]


def _plain(row: Record | None) -> StoredRecord | None:
    return None if row is None else plain(StoredRecord, row)


@dataclass(frozen=True)
class ChangedRecord:
    """A record as a download page sends it: id, village, county, revision, tombstone flag and
    merged state (none of the plain data, which a download does not send)."""

    record_id: str
    village_code: str
    county_code: str
    revision: int
    deleted: bool
    #: ``RecordState.to_dict()`` with ``revision`` set: what devices receive.
    state: dict[str, Any]


@dataclass(frozen=True)
class ChangePage:
    """One page of a download: records (tombstones included) in revision order, loaded with
    their id, village, county, revision, tombstone flag and merged state only (any other
    column raises rather than costing a query per record).

    ``next_since`` is the cursor for the next call; ``more`` says whether to call again now.
    """

    records: list[ChangedRecord]
    next_since: int
    more: bool


def touch_record(record_id: str) -> StoredRecord | None:
    """Give a record a new revision without changing its data; None if it does not exist.

    For a change devices must see that no op makes (an admin settled a duplicate-household
    conflict with ``keep_both``): the record travels again in the next download page. The
    state's ``revision`` follows. Call inside a write transaction.
    """
    record = db.session.get(Record, record_id)
    if record is None:
        return None
    record.revision = next_revision(record.county_code)
    if isinstance(record.state, dict) and "revision" in record.state:
        record.state = {**record.state, "revision": record.revision}
    record.updated_at = utcnow()
    db.session.flush()
    return plain(StoredRecord, record)


def get_record(record_id: str) -> StoredRecord | None:
    """A record (tombstone or not) by id, or None."""
    return _plain(db.session.get(Record, record_id))


def record_in_area(record_id: str, area_prefix: str) -> StoredRecord | None:
    """A record if its village lies under ``area_prefix``; out-of-area records look absent."""
    return _plain(
        db.session.scalar(
            sa.select(Record).where(
                Record.record_id == record_id, under_prefix(Record.village_code, area_prefix)
            )
        )
    )


def record_detail(record_id: str, area_prefix: str) -> RecordDetail | None:
    """The admin read model of one record of ``area_prefix`` (None when absent or out of area,
    which look alike): the record, its change log and its open conflict ids."""
    record = record_in_area(record_id, area_prefix)
    if record is None:
        return None
    return RecordDetail(record, history(record_id), sorted(open_ids_for_record(record_id)))


def changes_since(scope: str, since: int, limit: int = 200) -> ChangePage:
    """Records of villages under ``scope`` with revision > ``since``, oldest revision first.

    Exclusive cursor: feed ``next_since`` back to get the rest; pages never skip or repeat a row,
    whatever writers do meanwhile. The counter is read *before* the rows: every revision up to it
    is committed, so an empty tail can safely advance the cursor to it.
    Raises :class:`ScopeError` unless ``scope`` is 6-12 digits.
    """
    county = county_of(scope)
    high = current_revision(county)
    # A village (the scope of almost every device) walks its own revisions in
    # ix_records_village_revision: a page reads its own rows, however many other villages wrote
    # since. A township or county scope walks the county's (ix_records_county_revision).
    in_scope = (
        Record.village_code == scope
        if len(scope) == VILLAGE_CODE_LENGTH
        else prefix_range(Record.village_code, scope)
    )
    rows = list(
        db.session.execute(
            # Only the columns a page sends, as plain rows: decoding each row's plain data as
            # well was a third of a download page's server time, and building an ORM instance
            # per record (identity map, instance state) another tenth.
            sa.select(
                Record.record_id,
                Record.village_code,
                Record.county_code,
                Record.revision,
                Record.deleted,
                Record.state,
            )
            .where(
                Record.county_code == county,
                in_scope,
                Record.revision > since,
                Record.revision <= high,
            )
            .order_by(Record.revision)
            .limit(limit + 1)
        )
    )
    more = len(rows) > limit
    page = [ChangedRecord(*row) for row in rows[:limit]]
    if more:
        return ChangePage(page, page[-1].revision, True)
    return ChangePage(page, max(high, since), False)


def add_change(
    *,
    record_id: str,
    revision: int,
    kind: str,
    changes: dict[str, Any],
    outcome: dict[str, Any] | None = None,
    device_id: str | None = None,
    op_seq: int | None = None,
    user_id: int | None = None,
    hlc: str | None = None,
) -> RecordChange:
    """Append one entry to a record's change log (inside the write that made the change)."""
    entry = RecordChangeRow(
        record_id=record_id,
        revision=revision,
        kind=kind,
        changes=changes,
        outcome=outcome or {},
        device_id=device_id,
        op_seq=op_seq,
        user_id=user_id,
        hlc=hlc,
        at=utcnow(),
    )
    db.session.add(entry)
    db.session.flush()
    return plain(RecordChange, entry)


def history(record_id: str) -> list[RecordChange]:
    """A record's change log, oldest first."""
    rows = db.session.scalars(
        sa.select(RecordChangeRow)
        .where(RecordChangeRow.record_id == record_id)
        .order_by(RecordChangeRow.revision, RecordChangeRow.id)
    )
    return [plain(RecordChange, row) for row in rows]


# --- sync writes and admin queries (used by server.services.record_ops / records) ----------


#: Columns of a record that the merge reads and writes (everything but the plain data).
_STATE_COLUMNS = (
    Record.record_id,
    Record.form_id,
    Record.form_version,
    Record.village_code,
    Record.county_code,
    Record.household_no,
    Record.round,
    Record.revision,
    Record.deleted,
    Record.state,
)


def lock_record(record_id: str) -> StoredRecord | None:
    """A record locked for update until the transaction ends (call inside a write), or None."""
    return _plain(
        db.session.scalar(
            sa.select(Record)
            .where(Record.record_id == record_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )


def lock_states(record_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The merge columns of the existing records among ``record_ids``, locked for update.

    One statement for a whole batch. Two batches touching one record then merge one after the
    other on PostgreSQL (SQLite write transactions are serial anyway), so neither overwrites the
    other's merged state. Call inside a write transaction.
    """
    if not record_ids:
        return {}
    rows = db.session.execute(
        sa.select(*_STATE_COLUMNS)
        .where(Record.record_id.in_(sorted(set(record_ids))))
        .order_by(Record.record_id)  # one lock order for every writer: no deadlock
        .with_for_update()
    ).mappings()
    return {row["record_id"]: dict(row) for row in rows}


def live_household_records(pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Live records (merge columns) of the households ``(village_code, household_no)``."""
    if not pairs:
        return []
    rows = db.session.execute(
        sa.select(*_STATE_COLUMNS).where(
            sa.tuple_(Record.village_code, Record.household_no).in_(sorted(set(pairs))),
            Record.deleted.is_(False),
        )
    ).mappings()
    return [dict(row) for row in rows]


def reserve_revisions(scope: str, count: int) -> int:
    """Take ``count`` consecutive revisions of ``scope`` at once; returns the first.

    Same promise as :func:`server.storage.revisions.next_revision` (the counter row stays locked
    until commit, so revisions become visible in order), for a whole batch in one statement.
    """
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    last = db.session.execute(
        insert(RevisionCounter)
        .values(scope=scope, value=count)
        .on_conflict_do_update(
            index_elements=[RevisionCounter.scope],
            set_={"value": RevisionCounter.value + count},
        )
        .returning(RevisionCounter.value)
    ).scalar_one()
    return int(last) - count + 1


def add_households(rows: list[dict[str, Any]]) -> None:
    """Insert households (``village_code``, ``household_no``, ``county_code``, ``revision``,
    ``created_by_device``) that do not exist yet; existing ones are left as they are."""
    if not rows:
        return
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    # executemany keeps one cached statement whatever the batch size (a multi-VALUES literal
    # would be compiled afresh for every size).
    db.session.execute(
        insert(Household).on_conflict_do_nothing(
            index_elements=[Household.village_code, Household.household_no]
        ),
        [{**row, "created_at": now} for row in rows],
    )


def write_records(new: list[dict[str, Any]], changed: list[dict[str, Any]]) -> None:
    """Insert ``new`` records and update ``changed`` ones (every column of :data:`Record` but
    ``created_at`` given per row) in two executemany statements. Call inside a write."""
    now = utcnow()
    table = Record.__table__
    if new:
        db.session.execute(
            sa.insert(table), [{**row, "created_at": now, "updated_at": now} for row in new]
        )
    if changed:
        db.session.execute(
            sa.update(table)
            .where(table.c.record_id == sa.bindparam("b_record_id"))
            .values(
                form_id=sa.bindparam("form_id"),
                form_version=sa.bindparam("form_version"),
                revision=sa.bindparam("revision"),
                deleted=sa.bindparam("deleted"),
                state=sa.bindparam("state"),
                data=sa.bindparam("data"),
                updated_at=sa.bindparam("updated_at"),
            ),
            [
                {
                    "b_record_id": row["record_id"],
                    "form_id": row["form_id"],
                    "form_version": row["form_version"],
                    "revision": row["revision"],
                    "deleted": row["deleted"],
                    "state": row["state"],
                    "data": row["data"],
                    "updated_at": now,
                }
                for row in changed
            ],
        )


def add_changes(rows: list[dict[str, Any]]) -> None:
    """Append change-log entries (the keyword arguments of :func:`add_change`) in one statement."""
    if not rows:
        return
    now = utcnow()
    db.session.execute(
        sa.insert(RecordChangeRow.__table__),
        [
            {
                "device_id": None,
                "op_seq": None,
                "user_id": None,
                "hlc": None,
                "outcome": {},
                **row,
                "at": now,
            }
            for row in rows
        ],
    )


def list_records(
    area_prefix: str,
    *,
    village_prefix: str | None = None,
    form_id: str | None = None,
    round: str | None = None,
    household_no: str | None = None,
    include_deleted: bool = False,
    households: HouseholdSelection | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[StoredRecord], int]:
    """Records inside ``area_prefix`` matching the filters (by village, household, form) and
    how many match in all, in (village, household, form, record id) order. ``households`` keeps
    only records of the households it selects (a join on the maintained indicator rows: the
    selection may hold tens of thousands). Raises ``ValueError`` for a prefix that is not
    digits.

    Every filter is an index walk (``ix_records_household_order``, ``ix_records_household_no``,
    the selection's ``ix_household_indicators_<problem>_open``): the page comes out of the index
    in its order, so a page reads ``limit + offset`` index entries and ``limit`` rows, and the
    count reads the indexes alone — no sort of the matching rows, whatever their number.
    """
    where = [prefix_range(Record.village_code, area_prefix)]
    if village_prefix:
        where.append(prefix_range(Record.village_code, village_prefix))
    if form_id:
        where.append(Record.form_id == form_id)
    if round:
        where.append(Record.round == round)
    if household_no:
        where.append(Record.household_no == household_no)
    if not include_deleted:
        where.append(Record.deleted.is_(False))
    count = sa.select(sa.func.count()).select_from(Record)
    page = sa.select(Record)
    if households is not None:
        count = households.join(count, Record.village_code, Record.household_no)
        page = households.join(page, Record.village_code, Record.household_no)
    total = db.session.scalar(count.where(*where)) or 0
    if offset >= total:
        return [], int(total)
    households_order = (
        households.order if households is not None else (Record.village_code, Record.household_no)
    )
    order = (*households_order, Record.form_id, Record.record_id)
    rows = db.session.scalars(page.where(*where).order_by(*order).limit(limit).offset(offset))
    return [plain(StoredRecord, row) for row in rows], int(total)
