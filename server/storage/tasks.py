"""Verification tasks (issue 17): rows, the per-county ``tasks`` download cursor, area queries.

Revisions come from the county's ``task:<county>`` counter (``server.storage.revisions``), taken
in the writing transaction, so the ``tasks`` stream's exclusive cursor never skips a task
committed later with a smaller number — the same promise the records stream keeps.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from server.storage.database import db
from server.storage.models import VerificationTask
from server.storage.revisions import current_revision, next_revision, reserve_revisions
from server.storage.scoping import under_prefix
from server.storage.types import utcnow


@dataclass(frozen=True)
class TaskRow:
    """One task as the service hands it on (``reasons`` are ``TaskReason.to_dict()`` dicts plus
    the ``origin`` that found each)."""

    id: str
    village_code: str
    county_code: str
    household_no: str | None  # None: a village-level task (``subject`` names its person)
    status: str
    reasons: list[dict[str, Any]]
    reason_keys: list[str]
    origins: list[str]
    outcome: dict[str, Any] | None
    deadline: date
    escalated: bool
    escalated_at: datetime | None
    revision: int
    created_at: datetime
    updated_at: datetime
    worked_at: datetime | None
    closed_at: datetime | None
    closed_by: str | None
    subject: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        """(village, household number or "", subject or ""): what one open task is per."""
        return (self.village_code, self.household_no or "", self.subject or "")


@dataclass(frozen=True)
class TaskPage:
    """One page of the ``tasks`` stream: tasks in revision order, the next cursor, more?"""

    tasks: list[TaskRow]
    next_since: int
    more: bool


def _row(task: VerificationTask) -> TaskRow:
    return TaskRow(
        id=task.id,
        village_code=task.village_code,
        county_code=task.county_code,
        household_no=task.household_no,
        status=task.status,
        reasons=list(task.reasons or []),
        reason_keys=list(task.reason_keys or []),
        origins=list(task.origins or []),
        outcome=None if task.outcome is None else dict(task.outcome),
        deadline=task.deadline,
        escalated=task.escalated,
        escalated_at=task.escalated_at,
        revision=task.revision,
        created_at=task.created_at,
        updated_at=task.updated_at,
        worked_at=task.worked_at,
        closed_at=task.closed_at,
        closed_by=task.closed_by,
        subject=task.subject,
    )


_COLUMNS = tuple(TaskRow.__dataclass_fields__)


def _plain_row(found: Any) -> TaskRow:
    values = {name: found[name] for name in _COLUMNS}
    for name in ("reasons", "reason_keys", "origins"):
        values[name] = list(values[name] or [])
    if values["outcome"] is not None:
        values["outcome"] = dict(values["outcome"])
    return TaskRow(**values)


def counter_scope(county_code: str) -> str:
    """The revision counter of a county's tasks (12 characters at most, like every scope)."""
    return f"task:{county_code}"


def _lock(statement: sa.Select[Any]) -> sa.Select[Any]:
    # PostgreSQL: writers of one household's task queue on the row; SQLite's write transaction
    # (BEGIN IMMEDIATE) already serialises them.
    if db.session.get_bind().dialect.name == "postgresql":
        return statement.with_for_update()
    return statement


def tasks_of_keys(
    keys: Iterable[tuple[str, str, str]],
) -> dict[tuple[str, str, str], list[TaskRow]]:
    """Every task (any status) of the given keys, oldest first, locked for the rest of the
    write transaction. A key is (village, household number, "") for a household's tasks and
    (village, "", subject) for a village-level task's person (:attr:`TaskRow.key`)."""
    wanted = sorted(set(keys))
    out: dict[tuple[str, str, str], list[TaskRow]] = {}
    households = [(v, h) for v, h, _ in wanted if h]
    subjects = [(v, s) for v, h, s in wanted if not h and s]
    columns = [getattr(VerificationTask, name) for name in _COLUMNS]
    for pairs, column in (
        (households, VerificationTask.household_no),
        (subjects, VerificationTask.subject),
    ):
        for start in range(0, len(pairs), 500):
            chunk = pairs[start : start + 500]
            # Plain columns, not ORM objects: a department run reads thousands of households.
            statement = (
                sa.select(*columns)
                .where(sa.tuple_(VerificationTask.village_code, column).in_(chunk))
                .order_by(VerificationTask.created_at, VerificationTask.id)
            )
            for found in db.session.execute(_lock(statement)):
                row = _plain_row(found._mapping)
                if column is VerificationTask.subject and row.household_no:
                    continue  # a household's task that happens to carry a subject
                out.setdefault(row.key, []).append(row)
    return out


def tasks_of_households(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list[TaskRow]]:
    """Every task (any status) of the given (village, household) pairs, oldest first, locked
    for the rest of the write transaction."""
    found = tasks_of_keys((village, number, "") for village, number in pairs)
    return {(village, number): rows for (village, number, _), rows in found.items()}


def add_tasks(new: list[dict[str, Any]]) -> list[str]:
    """Insert open tasks in one statement per county (a signal run opens thousands at once).

    Each dict has ``task_id``, ``village_code``, ``household_no`` (None for a village-level
    task, which has a ``subject``), ``reasons``, ``reason_keys``, ``origins`` and ``deadline``;
    revisions are reserved per county in one counter update.
    Returns the ids in order. Call inside a write transaction.
    """
    now = utcnow()
    by_county: dict[str, list[dict[str, Any]]] = {}
    for row in new:
        by_county.setdefault(row["village_code"][:6], []).append(row)
    for county, rows in by_county.items():
        revisions = reserve_revisions(counter_scope(county), len(rows))
        db.session.execute(
            sa.insert(VerificationTask),
            [
                {
                    "id": row["task_id"],
                    "village_code": row["village_code"],
                    "county_code": county,
                    "household_no": row["household_no"] or None,
                    "subject": row.get("subject") or None,
                    "status": "open",
                    "reasons": row["reasons"],
                    "reason_keys": row["reason_keys"],
                    "origins": row["origins"],
                    "outcome": None,
                    "deadline": row["deadline"],
                    "escalated": False,
                    "revision": revision,
                    "created_at": now,
                    "updated_at": now,
                }
                for row, revision in zip(rows, revisions, strict=True)
            ],
        )
    return [row["task_id"] for row in new]


def update_task(task_id: str, **changes: Any) -> TaskRow:
    """Change a task's columns and give it a new revision (so devices get it again).

    Raises ``KeyError`` when the task does not exist. Call inside a write transaction.
    """
    task = db.session.get(VerificationTask, task_id)
    if task is None:
        raise KeyError(task_id)
    for name, value in changes.items():
        setattr(task, name, value)
    task.revision = next_revision(counter_scope(task.county_code))
    task.updated_at = utcnow()
    db.session.flush()
    return _row(task)


def get_task(task_id: str, area_prefix: str = "") -> TaskRow | None:
    """A task by id if its village lies under ``area_prefix``; out-of-area tasks look absent."""
    task = db.session.scalar(
        sa.select(VerificationTask).where(
            VerificationTask.id == task_id, under_prefix(VerificationTask.village_code, area_prefix)
        )
    )
    return None if task is None else _row(task)


def lock_task(task_id: str) -> TaskRow | None:
    """A task by id, locked for the rest of the write transaction (None if absent)."""
    task = db.session.scalar(
        _lock(sa.select(VerificationTask).where(VerificationTask.id == task_id))
    )
    return None if task is None else _row(task)


def list_tasks(
    area_prefix: str,
    *,
    village: str | None = None,
    status: str | None = None,
    overdue_before: date | None = None,
    escalated: bool | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[TaskRow], int]:
    """Tasks under ``area_prefix`` (and ``village`` prefix), oldest deadline first, and the
    total. ``overdue_before``: only open tasks whose deadline is before that day."""
    conditions = [under_prefix(VerificationTask.village_code, area_prefix)]
    if village:
        conditions.append(under_prefix(VerificationTask.village_code, village))
    if status:
        conditions.append(VerificationTask.status == status)
    if overdue_before is not None:
        conditions.append(VerificationTask.status == "open")
        conditions.append(VerificationTask.deadline < overdue_before)
    if escalated is not None:
        conditions.append(VerificationTask.escalated.is_(escalated))
    total = int(
        db.session.scalar(
            sa.select(sa.func.count()).select_from(VerificationTask).where(*conditions)
        )
        or 0
    )
    rows = db.session.scalars(
        sa.select(VerificationTask)
        .where(*conditions)
        .order_by(VerificationTask.deadline, VerificationTask.created_at, VerificationTask.id)
        .limit(limit)
        .offset(offset)
    )
    return [_row(task) for task in rows], total


def iter_tasks(area_prefix: str, *, source: str | None = None) -> Iterable[TaskRow]:
    """Every task under ``area_prefix`` in creation order (for exports), streamed in pages.

    ``source`` (e.g. ``dept:medical_insurance``) keeps the tasks with at least one reason from
    it; the filter runs here on the JSON list, which both engines store differently.
    """
    last: tuple[datetime, str] | None = None
    while True:
        statement = sa.select(VerificationTask).where(
            under_prefix(VerificationTask.village_code, area_prefix)
        )
        if last is not None:
            statement = statement.where(
                sa.tuple_(VerificationTask.created_at, VerificationTask.id) > sa.tuple_(*last)
            )
        page = list(
            db.session.scalars(
                statement.order_by(VerificationTask.created_at, VerificationTask.id).limit(500)
            )
        )
        if not page:
            return
        for task in page:
            if source is None or any(r.get("source") == source for r in task.reasons or []):
                yield _row(task)
        last = (page[-1].created_at, page[-1].id)


def changes_since(scope: str, since: int, limit: int = 200) -> TaskPage:
    """Tasks of villages under ``scope`` with revision > ``since``, oldest revision first.

    Same exclusive-cursor promise as ``records.changes_since``: the counter is read before the
    rows, so an empty tail may advance the cursor to it. ``scope`` is 6-12 digits.
    """
    county = scope[:6]
    high = current_revision(counter_scope(county))
    rows = list(
        db.session.scalars(
            sa.select(VerificationTask)
            .where(
                VerificationTask.county_code == county,
                under_prefix(VerificationTask.village_code, scope),
                VerificationTask.revision > since,
                VerificationTask.revision <= high,
            )
            .order_by(VerificationTask.revision)
            .limit(limit + 1)
        )
    )
    more = len(rows) > limit
    rows = rows[:limit]
    if more:
        return TaskPage([_row(t) for t in rows], rows[-1].revision, True)
    return TaskPage([_row(t) for t in rows], max(high, since), False)


def overdue_unescalated(today: date) -> list[TaskRow]:
    """Open tasks whose deadline is before ``today`` and that were not escalated yet."""
    rows = db.session.scalars(
        _lock(
            sa.select(VerificationTask)
            .where(
                VerificationTask.status == "open",
                VerificationTask.deadline < today,
                VerificationTask.escalated.is_(False),
            )
            .order_by(VerificationTask.deadline, VerificationTask.id)
        )
    )
    return [_row(task) for task in rows]
