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
    "VILLAGE_OUTCOMES",
    "OutcomeError",
    "is_outcome_household_no",
    "outcome_data",
    "outcome_household_no",
    "outcome_record_id",
    "outcome_round",
    "outcomes_for",
]

FORM_ID: Final = VERIFICATION_OUTCOME
#: Coded outcomes (value → zh, en), as the form's ``outcome`` choice list holds them.
OUTCOMES: Final[dict[str, tuple[str, str]]] = {
    "start_identification": ("启动识别程序", "start identification"),
    "not_eligible": ("不符合纳入条件", "not eligible"),
    "data_error": ("数据错误", "data error"),
    "already_solved": ("问题已解决", "already solved"),
    "already_monitored": ("已纳入监测", "already monitored"),
    # A village-level task (someone on a department list whom the roster lacks): the person
    # turns out not to belong here, or does and is added to the roster. One who left is
    # ``data_error`` + ``moved``.
    "not_village_resident": ("非本村人员", "not a resident of this village"),
    "add_to_roster": ("确为本村人员，补录花名册", "lives here: add to the roster"),
}
#: Kinds of data error (outcome ``data_error``), as the form's ``data_error`` list holds them.
DATA_ERRORS: Final[dict[str, tuple[str, str]]] = {
    "death": ("人员已死亡", "person died"),
    "empty_household": ("空挂户", "registered but nobody lives here"),
    "duplicate": ("重复人员", "duplicate person"),
    "wrong_id": ("证件号码错误", "wrong ID number"),
    "moved": ("人员已迁出", "moved away"),
}
#: The outcomes that fit a village-level task (no household): who is this person to us?
VILLAGE_OUTCOMES: Final = ("not_village_resident", "add_to_roster", "data_error")
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


def outcomes_for(level: str) -> dict[str, tuple[str, str]]:
    """The coded outcomes that fit a task of ``level`` (``"village"``: a listed person with no
    household; anything else: a household's task)."""
    if level == "village":
        return {key: OUTCOMES[key] for key in VILLAGE_OUTCOMES}
    return {k: v for k, v in OUTCOMES.items() if k not in ("not_village_resident", "add_to_roster")}


def outcome_household_no(task_id: str, household_no: str | None = None) -> str:
    """The 户编号 the outcome record of task ``task_id`` is filed under: the task's household,
    or for a village-level task (``household_no`` empty: a listed person the roster lacks) a
    number of its own, ``task-<id>``, since every record belongs to a household and this one
    is about a person no household has yet. No roster record is ever filed under it."""
    if household_no:
        return household_no
    compact = "".join(ch for ch in task_id if ch.isalnum())[:40]
    return f"task-{compact}"


def is_outcome_household_no(household_no: str) -> bool:
    """True for the 户编号 of a village-level task's outcome record (not a real household)."""
    return household_no.startswith("task-")


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
