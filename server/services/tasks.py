"""Verification tasks (issue 17): the consumer of ``server.services.task_reasons``.

Producers (department cross-checks, round-over-round alerts) hand :class:`HouseholdSignal`\\ s to
a :class:`~server.services.task_reasons.TaskSink`; :func:`task_sink` returns the real one, bound
to a service context and an actor. The rules:

* **one open task per household** carrying every reason: a signal for a household with an open
  task adds its new reasons to that task (its deadline stays);
* **a re-run adds nothing**: a reason is identified by its origin (the run that found it), source,
  code and details; one already taken by any task of the household is skipped;
* status ``open`` → ``worked`` (the outcome record came back from a tablet, in the transaction
  that applied it: :func:`record_outcomes`) → ``closed`` (a reviewer accepted it);
* the **deadline** is ``TASK_DEADLINE_WORKING_DAYS`` working days after the day the task opened
  (Beijing time; weekends and ``TASK_HOLIDAYS`` skipped); :func:`escalate_overdue` (a scheduled
  job, run once across processes) flags open tasks past it, files a ``task.escalated`` audit row
  under the township and gives the task a new revision so the tablets see the flag.

Every change gives the task a new revision of its county's ``task:<county>`` counter: that is the
cursor of the devices' ``tasks`` download stream (:func:`download_page`).
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Final

from forms.identity import is_valid_id_number
from forms.verification import (
    FORM_ID,
    OUTCOMES,
    outcome_household_no,
    outcome_label,
    outcome_record_id,
    outcome_round,
)
from server.errors import Conflict, NotFound, ValidationFailed
from server.services.access import CLI_ACTOR, Actor, Principal
from server.services.context import ServiceContext
from server.services.exports import _inert
from server.services.masking import mask
from server.services.task_reasons import DEPARTMENTS, HouseholdSignal, TaskOutcome, TaskSink
from server.storage import tasks as store
from server.storage.database import writing
from server.storage.tasks import TaskRow

__all__ = [
    "STATUSES",
    "TASKS_STREAM",
    "OpenResult",
    "close_task",
    "download_page",
    "escalate_overdue",
    "export_outcomes",
    "list_tasks",
    "open_tasks",
    "record_outcomes",
    "show_task",
    "task_sink",
    "working_deadline",
]

STATUSES: Final = ("open", "worked", "closed")
#: Download stream name of the tasks (a key of the hello's ``cursors``, a page's ``scope``).
TASKS_STREAM: Final = "tasks"
TASKS_PER_PAGE: Final = 200
#: Task deadlines and "today" are Beijing dates (a village team's working day).
CHINA_TIME: Final = timezone(timedelta(hours=8))


@dataclass
class OpenResult:
    """What one :func:`open_tasks` call did: tasks created, tasks that got new reasons, and the
    signals that brought nothing new (a re-run of the same origin)."""

    created: list[str] = field(default_factory=list)
    extended: list[str] = field(default_factory=list)
    unchanged: int = 0


# --- deadlines ---------------------------------------------------------------------------------


def holidays(ctx: ServiceContext) -> frozenset[date]:
    """The ``TASK_HOLIDAYS`` setting as dates.

    Raises :class:`ValidationFailed` naming the entry that is not a date.
    """
    out = set()
    for entry in str(ctx.settings.get("TASK_HOLIDAYS") or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            out.add(date.fromisoformat(entry))
        except ValueError:
            raise ValidationFailed(
                en=f"TASK_HOLIDAYS: {entry!r} is not a date (YYYY-MM-DD)",
                zh=f"节假日设置中的 {entry!r} 不是日期（应为 YYYY-MM-DD）",
            ) from None
    return frozenset(out)


def working_deadline(start: date, working_days: int, days_off: Iterable[date] = ()) -> date:
    """The day ``working_days`` working days after ``start`` (Saturdays, Sundays and
    ``days_off`` do not count; ``start`` itself does not either). 0 days: ``start``."""
    off = frozenset(days_off)
    day, left = start, max(0, int(working_days))
    while left:
        day += timedelta(days=1)
        if day.weekday() < 5 and day not in off:
            left -= 1
    return day


def china_today(ctx: ServiceContext, now: datetime | None = None) -> date:
    """Today's date in Beijing time by the context's clock (or ``now``)."""
    return (now or ctx.now()).astimezone(CHINA_TIME).date()


def deadline_from(ctx: ServiceContext, opened: date) -> date:
    """The deadline of a task opened on ``opened`` under the current settings."""
    return working_deadline(opened, int(ctx.settings["TASK_DEADLINE_WORKING_DAYS"]), holidays(ctx))


# --- opening tasks -----------------------------------------------------------------------------


#: What an ID number looks like, check digit right or not (a mistyped one is still personal).
_ID_SHAPE: Final = re.compile(r"[0-9]{17}[0-9Xx]|[0-9]{15}")


def _masked_details(value: Any) -> Any:
    # The contract asks producers for masked details; an ID number that slipped through is
    # masked here too, since details are shown on tablets and pages.
    if isinstance(value, Mapping):
        return {str(k): _masked_details(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked_details(v) for v in value]
    if (
        isinstance(value, str)
        and 15 <= len(value) <= 18
        and (_ID_SHAPE.fullmatch(value) or is_valid_id_number(value))
    ):
        return mask(value)
    return value


def _reason_key(origin: str, reason: Mapping[str, Any]) -> str:
    details = json.dumps(reason.get("details") or {}, sort_keys=True, ensure_ascii=False)
    return f"{origin}|{reason['source']}|{reason['code']}|{details}"


def open_tasks(
    ctx: ServiceContext,
    actor: Actor,
    signals: Iterable[HouseholdSignal],
    *,
    origin: str,
) -> OpenResult:
    """Turn signals into tasks (the rules in the module doc), in one write transaction (joined
    when the producer already holds one). Audited once per call when anything changed.

    Raises :class:`ValidationFailed` for an empty ``origin`` or a signal whose household is not
    a 12-digit village code and a household number.
    """
    origin = (origin or "").strip()
    if not origin or len(origin) > 200:
        raise ValidationFailed(
            en="a task origin names the run that found the reasons (1-200 characters)",
            zh="任务来源须写明发现问题的批次（1至200个字符）",
            details={"fields": {"origin": ["1-200 characters"]}},
        )
    # Keyed (village, household, subject): a household's task has no subject, a village-level
    # task (a listed person the roster lacks) no household.
    by_household: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for signal in signals:
        village, number = signal.household.village_code, signal.household.household_no
        subject = "" if number else (signal.subject or "").strip()
        if not (len(village) == 12 and village.isdigit() and (number or subject)):
            raise ValidationFailed(
                en="a task's household is a 12-digit village code and a number (or, for a "
                f"village-level task, a subject), got {(village, number)}",
                zh="任务的农户应为12位村代码加户编号（村级任务须注明核实对象）",
                details={"household": [village, number]},
            )
        if len(subject) > 64:
            raise ValidationFailed(
                en="a village-level task's subject is at most 64 characters",
                zh="村级任务的核实对象标识最长64个字符",
                details={"subject": subject[:80]},
            )
        reasons = by_household.setdefault((village, number, subject), [])
        for reason in signal.reasons:
            plain = reason.to_dict()
            plain["details"] = _masked_details(plain["details"])
            reasons.append(plain)
    result = OpenResult()
    if not by_household:
        return result
    now = ctx.now()
    deadline = deadline_from(ctx, china_today(ctx, now))
    new: list[dict[str, Any]] = []
    with writing():
        held = store.tasks_of_keys(by_household)
        for (village, number, subject), reasons in sorted(by_household.items()):
            tasks = held.get((village, number, subject), [])
            taken = {key for task in tasks for key in task.reason_keys}
            fresh: list[dict[str, Any]] = []
            fresh_keys: list[str] = []
            for reason in reasons:
                key = _reason_key(origin, reason)
                if key in taken or key in fresh_keys:
                    continue
                fresh_keys.append(key)
                fresh.append({**reason, "origin": origin, "found_at": now.isoformat()})
            if not fresh:
                result.unchanged += 1
                continue
            open_task = next((t for t in tasks if t.status == "open"), None)
            if open_task is None:
                new.append(
                    {
                        "task_id": str(uuid.uuid4()),
                        "village_code": village,
                        "household_no": number or None,
                        "subject": subject or None,
                        "reasons": fresh,
                        "reason_keys": fresh_keys,
                        "origins": [origin],
                        "deadline": deadline,
                    }
                )
            else:
                origins = open_task.origins + ([origin] if origin not in open_task.origins else [])
                store.update_task(
                    open_task.id,
                    reasons=[*open_task.reasons, *fresh],
                    reason_keys=[*open_task.reason_keys, *fresh_keys],
                    origins=origins,
                )
                result.extended.append(open_task.id)
        result.created.extend(store.add_tasks(new))
        if result.created or result.extended:
            actor.audit(
                "task.open",
                target_type="task_origin",
                target_id=origin[:120],
                details={
                    "created": len(result.created),
                    "extended": len(result.extended),
                    "unchanged": result.unchanged,
                },
            )
    return result


def task_sink(ctx: ServiceContext, actor: Actor = CLI_ACTOR) -> TaskSink:
    """The :class:`TaskSink` producers call: :func:`open_tasks` bound to ``ctx`` and ``actor``."""

    def sink(signals: Iterable[HouseholdSignal], *, origin: str) -> OpenResult:
        return open_tasks(ctx, actor, signals, origin=origin)

    return sink


# --- outcomes coming back from the tablets -----------------------------------------------------


def record_outcomes(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Fold ``verification_outcome`` records just written into their tasks (status ``worked``,
    the outcome kept), in the caller's write transaction — the one that applied the ops.

    ``rows`` are written record rows (``record_id``, ``form_id``, ``village_code``,
    ``household_no``, ``deleted``, ``data``); others are ignored, and so is an outcome whose
    record id is not the one derived from its task (a forged or mistyped task id) or whose task
    belongs to another household. A closed task is left as it is. Returns the task ids changed.
    """
    changed = []
    for row in rows:
        if row.get("form_id") != FORM_ID or row.get("deleted"):
            continue
        data = row.get("data") or {}
        task_id = str(data.get("task_id") or "")
        if not task_id or outcome_record_id(task_id) != row.get("record_id"):
            continue
        task = store.lock_task(task_id)
        if task is None or task.status == "closed":
            continue
        if (task.village_code, outcome_household_no(task.id, task.household_no)) != (
            row["village_code"],
            row["household_no"],
        ):
            continue
        if data.get("outcome") not in OUTCOMES:
            continue
        outcome = {
            "outcome": data.get("outcome"),
            "data_error": data.get("data_error"),
            "note": data.get("note") or "",
            "photo": data.get("photo"),
            "record_id": row["record_id"],
        }
        if task.outcome == outcome and task.status == "worked":
            continue
        store.update_task(task_id, status="worked", outcome=outcome, worked_at=_utcnow())
        changed.append(task_id)
    return changed


def board_outcomes(area_prefix: str) -> list[TaskOutcome]:
    """Every reason of every worked task under ``area_prefix`` with the outcome the village team
    recorded, for the 动态清零 board's false-positive rate per department and rule."""
    found: list[TaskOutcome] = []
    for task in store.iter_tasks(area_prefix):
        outcome = (task.outcome or {}).get("outcome")
        if not outcome:
            continue
        for reason in task.reasons:
            found.append(
                TaskOutcome(
                    source=str(reason.get("source") or ""),
                    code=str(reason.get("code") or ""),
                    outcome=str(outcome),
                    village_code=task.village_code,
                )
            )
    return found


def _utcnow() -> datetime:
    return datetime.now(tz=UTC)


def close_task(actor: Actor, task_id: str, *, note: str = "") -> TaskRow:
    """Close a worked task (a reviewer accepted its outcome); audited.

    Raises :class:`NotFound` (outside the actor's area too) and :class:`Conflict`
    (``task_not_worked``) for a task without an outcome yet or already closed.
    """
    with writing():
        task = store.lock_task(task_id)
        if task is None or not task.village_code.startswith(actor.area_prefix):
            raise NotFound(en=f"no task {task_id}", zh="没有该核查任务", code="task_not_found")
        if task.status != "worked":
            raise Conflict(
                en=f"task {task_id} is {task.status}: only a worked task can be closed",
                zh="只有已核查的任务才能关闭",
                code="task_not_worked",
                details={"status": task.status},
            )
        row = store.update_task(task_id, status="closed", closed_at=_utcnow(), closed_by=actor.name)
        actor.audit(
            "task.close",
            target_type="task",
            target_id=task_id,
            area_code=task.village_code,
            details={"note": note[:500]} if note else None,
        )
    return row


# --- escalation --------------------------------------------------------------------------------


def escalate_overdue(
    ctx: ServiceContext, actor: Actor, now: datetime | None = None
) -> dict[str, Any]:
    """Escalate every open task past its deadline to its township: the ``escalated`` flag (the
    township reviewer's list filters on it), a new revision (the tablets see it) and one
    ``task.escalated`` audit row per township (filed under the township, so its reviewer sees it).
    """
    today = china_today(ctx, now)
    stamp = now or ctx.now()
    townships: dict[str, list[str]] = {}
    with writing():
        for task in store.overdue_unescalated(today):
            store.update_task(task.id, escalated=True, escalated_at=stamp)
            townships.setdefault(task.village_code[:9], []).append(task.id)
        for township, ids in sorted(townships.items()):
            actor.audit(
                "task.escalated",
                target_type="township",
                target_id=township,
                area_code=township,
                details={"tasks": len(ids), "task_ids": ids[:50], "as_of": today.isoformat()},
            )
    return {
        "escalated": sum(len(ids) for ids in townships.values()),
        "townships": sorted(townships),
    }


# --- reading -----------------------------------------------------------------------------------


def task_view(task: TaskRow, today: date | None = None) -> dict[str, Any]:
    """A task as the API and the pages show it (reasons carry masked details only)."""
    view: dict[str, Any] = {
        "id": task.id,
        "village_code": task.village_code,
        "household_no": task.household_no,
        "level": "household" if task.household_no else "village",
        "status": task.status,
        "reasons": task.reasons,
        "origins": task.origins,
        "outcome": task.outcome,
        "deadline": task.deadline,
        "escalated": task.escalated,
        "escalated_at": task.escalated_at,
        "overdue": today is not None and task.status == "open" and task.deadline < today,
        "record_id": outcome_record_id(task.id),
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "worked_at": task.worked_at,
        "closed_at": task.closed_at,
        "closed_by": task.closed_by,
    }
    if task.outcome:
        zh, en = outcome_label(task.outcome)
        view["outcome_label"] = {"zh": zh, "en": en}
    return view


def list_tasks(
    ctx: ServiceContext,
    principal: Principal,
    *,
    village: str | None = None,
    status: str | None = None,
    overdue: bool = False,
    escalated: bool | None = None,
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    """Tasks of the caller's area (``village`` narrows it to a code prefix), oldest deadline
    first. ``overdue``: only open tasks past their deadline.

    Raises :class:`ValidationFailed` for a ``village`` that is not digits.
    """
    if village and not (village.isascii() and village.isdigit()):
        raise ValidationFailed(
            en="village is an area code prefix (digits)",
            zh="村代码应为数字",
            details={"fields": {"village": ["digits"]}},
        )
    today = china_today(ctx)
    rows, total = store.list_tasks(
        principal.area_prefix,
        village=village,
        status=status,
        overdue_before=today if overdue else None,
        escalated=escalated,
        limit=limit,
        offset=offset,
    )
    return {"items": [task_view(row, today) for row in rows], "total": total}


def show_task(ctx: ServiceContext, principal: Principal, task_id: str) -> dict[str, Any]:
    """One task of the caller's area. Raises :class:`NotFound` (``task_not_found``) otherwise."""
    row = store.get_task(task_id, principal.area_prefix)
    if row is None:
        raise NotFound(en=f"no task {task_id}", zh="没有该核查任务", code="task_not_found")
    return task_view(row, china_today(ctx))


# --- the devices' download stream -----------------------------------------------------------------


def device_entry(task: TaskRow) -> dict[str, Any]:
    """A task as it travels to a tablet: household key, reasons (masked details), deadline,
    status, escalation, outcome, and the id and round of its outcome record.

    A village-level task (no household) travels with ``level: "village"`` and the household
    key its outcome record is filed under (``forms.verification.outcome_household_no``), so a
    device that knows nothing of village tasks still works it as it works any other."""
    return {
        "task_id": task.id,
        "level": "household" if task.household_no else "village",
        "household": {
            "village_code": task.village_code,
            "household_no": outcome_household_no(task.id, task.household_no),
        },
        "status": task.status,
        "reasons": [
            {
                "code": r.get("code"),
                "source": r.get("source"),
                "message": r.get("message"),
                "details": r.get("details") or {},
            }
            for r in task.reasons
        ],
        "deadline": task.deadline.isoformat(),
        "escalated": task.escalated,
        "outcome": task.outcome,
        "record_id": outcome_record_id(task.id),
        "round": outcome_round(task.id),
        "revision": task.revision,
    }


@dataclass(frozen=True)
class TaskDownload:
    """One page of the ``tasks`` stream for a device scope."""

    after: int
    next_cursor: int
    more: bool
    tasks: list[dict[str, Any]]


def download_page(scope: str, after: int) -> TaskDownload:
    """The tasks of villages under the device's ``scope`` changed after cursor ``after``."""
    page = store.changes_since(scope, after, limit=TASKS_PER_PAGE)
    return TaskDownload(after, page.next_since, page.more, [device_entry(t) for t in page.tasks])


# --- outcomes back to the departments -------------------------------------------------------------

EXPORT_COLUMNS: Final = (
    ("task_id", "任务编号"),
    ("village_code", "行政区划代码"),
    ("household_no", "户编号"),
    ("reason_code", "问题代码"),
    ("reason", "问题"),
    ("details", "比对详情"),
    ("status", "任务状态"),
    ("outcome", "核查结果代码"),
    ("outcome_label", "核查结果"),
    ("data_error", "数据错误类型"),
    ("note", "核查说明"),
    ("worked_at", "核查时间"),
)


def export_outcomes(
    actor: Actor, department: str, *, area_prefix: str = "", fmt: str = "csv"
) -> bytes:
    """The outcomes of the tasks with reasons from ``department``, one row per such reason (its
    code and message, masked details, the task's status and outcome), as CSV (UTF-8 with BOM,
    so Excel reads the Chinese) or XLSX; audited.

    Raises :class:`ValidationFailed` for an unknown department or format.
    """
    if department not in DEPARTMENTS:
        raise ValidationFailed(
            en=f"department must be one of {', '.join(DEPARTMENTS)}",
            zh="部门代码无效",
            details={"fields": {"department": list(DEPARTMENTS)}},
        )
    if fmt not in ("csv", "xlsx"):
        raise ValidationFailed(
            en="format must be csv or xlsx",
            zh="导出格式应为 csv 或 xlsx",
            details={"fields": {"format": ["csv", "xlsx"]}},
        )
    source = f"dept:{department}"
    rows: list[list[Any]] = []
    for task in store.iter_tasks(area_prefix, source=source):
        outcome = task.outcome or {}
        label = outcome_label(outcome)[0] if outcome else ""
        for reason in task.reasons:
            if reason.get("source") != source:
                continue
            message = reason.get("message") or {}
            rows.append(
                [
                    task.id,
                    task.village_code,
                    task.household_no or "",
                    reason.get("code", ""),
                    message.get("zh", ""),
                    json.dumps(reason.get("details") or {}, ensure_ascii=False, sort_keys=True),
                    task.status,
                    outcome.get("outcome") or "",
                    label,
                    outcome.get("data_error") or "",
                    outcome.get("note") or "",
                    task.worked_at.isoformat() if task.worked_at else "",
                ]
            )
    with writing():
        actor.audit(
            "task.export_outcomes",
            target_type="department",
            target_id=department,
            area_code=area_prefix,
            details={"rows": len(rows), "format": fmt},
        )
    header = [zh for _, zh in EXPORT_COLUMNS]
    # A village team's note could start with "=": the records export's one rule makes it inert.
    rows = [_inert(row) for row in rows]
    return _csv(header, rows) if fmt == "csv" else _xlsx(department, header, rows)


def _csv(header: Sequence[str], rows: list[list[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return b"\xef\xbb\xbf" + out.getvalue().encode("utf-8")


def _xlsx(department: str, header: Sequence[str], rows: list[list[Any]]) -> bytes:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet(DEPARTMENTS[department][0])
    sheet.append(list(header))
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
