"""Verification tasks worked on the tablet (issue 17): the coded outcomes and the outcome record.

A verification task asks a village team to visit one household and settle every reason found for
it (a department list disagrees with the roster, a round-over-round alert …). The team's answer
is an ordinary record of the built-in form ``verification_outcome``, so it travels as ops and is
merged, acknowledged and kept in history like any record. Its identity is derived from the task:
every device (and the server) computes the same record id and round for one task, so two tablets
working the same task edit one record (their edits merge or conflict field by field) instead of
making two.

Pure: no I/O; the tablet, the browser app and the server use the same rules.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final

from forms.instruments import VERIFICATION_OUTCOME

__all__ = [
    "DATA_ERRORS",
    "FORM_ID",
    "OUTCOMES",
    "TASK_STATUSES",
    "OutcomeError",
    "outcome_data",
    "outcome_record_id",
    "outcome_round",
]

FORM_ID: Final = VERIFICATION_OUTCOME
#: Coded outcomes (value → zh, en), as the form's ``outcome`` choice list holds them.
OUTCOMES: Final[dict[str, tuple[str, str]]] = {
    "start_identification": ("启动识别程序", "start identification"),
    "not_eligible": ("不符合纳入条件", "not eligible"),
    "data_error": ("数据错误", "data error"),
    "already_solved": ("问题已解决", "already solved"),
    "already_monitored": ("已纳入监测", "already monitored"),
}
#: Kinds of data error (outcome ``data_error``), as the form's ``data_error`` list holds them.
DATA_ERRORS: Final[dict[str, tuple[str, str]]] = {
    "death": ("人员已死亡", "person died"),
    "empty_household": ("空挂户", "registered but nobody lives here"),
    "duplicate": ("重复人员", "duplicate person"),
    "wrong_id": ("证件号码错误", "wrong ID number"),
    "moved": ("人员已迁出", "moved away"),
}
#: open → worked (an outcome came back) → closed (a reviewer accepted it).
TASK_STATUSES: Final = ("open", "worked", "closed")

# Fixed forever: changing it would give the same task another record id on new devices.
_NAMESPACE: Final = uuid.UUID("6f0d6a52-2c1e-5b8e-9a43-17a1d0c0f317")


class OutcomeError(ValueError):
    """An outcome that is not one of the coded values (or a data error without its kind)."""

    code = "task_outcome_invalid"

    def __init__(self, message: str, message_zh: str) -> None:
        super().__init__(message)
        self.message = message
        self.message_zh = message_zh


def outcome_record_id(task_id: str) -> str:
    """The id of the ``verification_outcome`` record of task ``task_id`` (a UUID, 36 chars)."""
    return str(uuid.uuid5(_NAMESPACE, f"{FORM_ID}:{task_id}"))


def outcome_round(task_id: str) -> str:
    """The survey round of the outcome record: one per task, so a household's later task gets a
    record of its own rather than a duplicate-household conflict with the earlier one."""
    compact = "".join(ch for ch in task_id if ch.isalnum())[:35]
    return f"task-{compact}"


def outcome_data(
    task_id: str,
    outcome: str,
    *,
    detail: str | None = None,
    note: str = "",
    photo: str | None = None,
) -> dict[str, Any]:
    """The record data of an outcome, checked against the coded values.

    Raises :class:`OutcomeError` for an unknown outcome, a ``data_error`` without a known
    ``detail``, or a ``detail`` given for another outcome.
    """
    if outcome not in OUTCOMES:
        raise OutcomeError(
            f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}",
            f"核查结果应为以下之一：{'、'.join(zh for zh, _ in OUTCOMES.values())}",
        )
    data: dict[str, Any] = {"task_id": task_id, "outcome": outcome}
    if outcome == "data_error":
        if detail not in DATA_ERRORS:
            raise OutcomeError(
                f"a data error names its kind: one of {', '.join(DATA_ERRORS)}",
                f"数据错误须写明类型：{'、'.join(zh for zh, _ in DATA_ERRORS.values())}",
            )
        data["data_error"] = detail
    elif detail:
        raise OutcomeError(
            "a detail is given only for the outcome data_error", "只有“数据错误”需要填写错误类型"
        )
    if note:
        data["note"] = note
    if photo:
        data["photo"] = photo
    return data


def outcome_label(data: Mapping[str, Any]) -> tuple[str, str]:
    """(zh, en) text of a stored outcome, e.g. ``数据错误：人员已死亡``."""
    zh, en = OUTCOMES.get(str(data.get("outcome")), (str(data.get("outcome")), ""))
    kind = DATA_ERRORS.get(str(data.get("data_error")))
    if kind is not None:
        return f"{zh}：{kind[0]}", f"{en}: {kind[1]}"
    return zh, en
