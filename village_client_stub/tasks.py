"""Verification tasks on the device (issue 17): list them, record an outcome.

Tasks arrive in the ``tasks`` download stream (``sync_protocol.device.DeviceEngine.apply_task``
stores them). Working one writes the task's ``verification_outcome`` record — its id and round
derived from the task (``forms.verification``), so every device edits the same record — and
queues its op in the outbox like any other edit; the next sync sends it, and the server marks
the task worked when it applies the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forms.verification import (
    DATA_ERRORS,
    FORM_ID,
    OUTCOMES,
    OutcomeError,
    outcome_data,
    outcome_label,
    outcome_record_id,
    outcome_round,
    outcomes_for,
)
from village_client_stub.errors import BadInput, UnknownForm, UnknownRecord
from village_client_stub.records import EditResult, RecordEditor
from village_client_stub.store import DeviceStore

__all__ = ["TaskOutcome", "outcome_choices", "task_lines", "work_task"]

_STATUS_ZH = {"open": "待核查", "worked": "已核查", "closed": "已关闭"}


@dataclass(frozen=True)
class TaskOutcome:
    """What :func:`work_task` queued: the task, its outcome record and the op."""

    task_id: str
    result: EditResult

    def to_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, **self.result.to_dict()}


def local_status(store: DeviceStore, task: Mapping[str, Any]) -> str:
    """The task's status as the device sees it: ``worked`` once its outcome record is here
    (queued or synced) even before the server has said so."""
    if task.get("status") == "open":
        try:
            record = store.record(str(task["record_id"]))
        except UnknownRecord:
            return "open"
        if not record.deleted and record.data.get("outcome"):
            return "worked"
    return str(task.get("status", "open"))


def task_lines(store: DeviceStore, task: Mapping[str, Any], *, full: bool = False) -> list[str]:
    """Text lines for one task (Chinese first): household, status, deadline, reasons."""
    household = task.get("household") or {}
    status = local_status(store, task)
    if task.get("level") == "village":
        # No household: someone on a department list the roster lacks.
        where = f"村 {household.get('village_code')}（村级任务：核实名单人员是否为本村人员）"
    else:
        where = f"户 {household.get('village_code')}/{household.get('household_no')}"
    head = (
        f"任务 {task['task_id']}  {where}  {_STATUS_ZH.get(status, status)}  "
        f"截止 {task.get('deadline')}"
    )
    if task.get("escalated"):
        head += "  已逾期上报乡镇"
    lines = [head]
    for reason in task.get("reasons") or []:
        message = reason.get("message") or {}
        line = f"  · {message.get('zh') or reason.get('code')}"
        if full and message.get("en"):
            line += f"（{message['en']}）"
        if full and reason.get("details"):
            details = "，".join(f"{k}={v}" for k, v in sorted(reason["details"].items()))
            line += f"  [{details}]"
        lines.append(line)
    outcome = task.get("outcome")
    if full and outcome:
        lines.append(f"  结果：{outcome_label(outcome)[0]}  {outcome.get('note') or ''}".rstrip())
    return lines


def work_task(
    store: DeviceStore,
    task_prefix: str,
    outcome: str,
    *,
    detail: str | None = None,
    note: str = "",
    photo: str | Path | None = None,
) -> TaskOutcome:
    """Record the outcome of a task and queue it for the next sync.

    ``photo`` is a file path (registered as an attachment, uploaded by the next sync) or a
    ``sha256:`` address already on the device.

    Raises:
        UnknownRecord: no single task matches ``task_prefix``.
        BadInput: the outcome is not a coded value, or a closed task.
        UnknownForm: the ``verification_outcome`` form is not on the device yet (sync first).
        RecordInvalid: the outcome record fails validation (kept as a draft).
    """
    task = store.task(task_prefix)
    task_id = str(task["task_id"])
    if task.get("status") == "closed":
        raise BadInput(
            f"task {task_id} is closed; its outcome can no longer change",
            message_zh="该任务已关闭，不能再修改核查结果",
        )
    photo_ref = None
    if photo:
        text = str(photo)
        photo_ref = text if text.startswith("sha256:") else None
    level = str(task.get("level") or "household")
    fitting = outcomes_for(level)
    if outcome not in fitting:
        raise BadInput(
            f"a {level}-level task's outcome is one of {', '.join(fitting)}, got {outcome!r}",
            message_zh=("村级任务的核查结果应为：" if level == "village" else "核查结果应为：")
            + "、".join(zh for zh, _ in fitting.values()),
        )
    try:
        data = outcome_data(task_id, outcome, detail=detail, note=note)
    except OutcomeError as exc:
        raise BadInput(exc.message, message_zh=exc.message_zh) from None
    try:
        store.form(FORM_ID)
    except UnknownForm:
        raise UnknownForm(
            f"the form {FORM_ID} is not on this device yet; sync first",
            message_zh="设备上还没有核查结果表单，请先同步",
        ) from None
    record_id = outcome_record_id(task_id)
    # Not one transaction: a photo registered stays registered, and an outcome that fails
    # validation is kept as a draft (nothing a person entered is lost).
    if photo and photo_ref is None:
        photo_ref = store.add_attachment(Path(str(photo)), record_id)
    if photo_ref:
        data["photo"] = photo_ref
    editor = RecordEditor(store)
    try:
        store.record(record_id)
    except UnknownRecord:
        household = dict(task.get("household") or {})
        result = editor.fill(
            FORM_ID,
            data,
            household=household,
            round=str(task.get("round") or outcome_round(task_id)),
            record_id=record_id,
        )
    else:
        result = editor.replace_data(record_id, data)
    return TaskOutcome(task_id, result)


def outcome_choices(task: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """The coded outcomes that fit ``task`` (a village-level task has its own)."""
    return outcomes_for(str(task.get("level") or "household"))


OUTCOME_CHOICES = tuple(OUTCOMES)
DETAIL_CHOICES = tuple(DATA_ERRORS)
