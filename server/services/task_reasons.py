"""Why a household needs a home check: the contract between the signals and the task service.

Issue 17 makes one verification task per household carry every reason found for it. Several
producers find reasons — the department cross-checks (``server.services.department_lists``), the
round-over-round alerts (``server.services.round_alerts``) — and one consumer turns them into
tasks (``server.services.tasks``). They meet here, so a producer never imports the task service's
storage and the task service never knows how a reason was found.

A reason is plain data with a stable ``code`` (the rule that fired, listed in docs), the
``source`` it came from (``dept:<department>`` or ``round``), a bilingual message a village team
reads on the tablet, and ``details`` that say what was compared (no ID number in clear: the
details are shown on tablets and pages; use the masked form of ``server.services.masking``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

#: The departments whose lists a county imports (DOMAIN.md, 部门数据比对).
DEPARTMENTS: dict[str, tuple[str, str]] = {
    "medical_insurance": ("医保", "medical insurance"),
    "civil_affairs": ("民政", "civil affairs"),
    "education": ("教育", "education"),
    "disability": ("残联", "disabled persons' federation"),
    "human_resources": ("人社", "human resources and social security"),
    "housing": ("住建", "housing and construction"),
    "public_security": ("公安", "public security"),
    "emergency": ("应急", "emergency management"),
}


@dataclass(frozen=True)
class HouseholdKey:
    """A household as the server knows it: its village and its 户编号."""

    village_code: str
    household_no: str


@dataclass(frozen=True)
class TaskReason:
    """One finding that makes a household worth a visit."""

    code: str
    source: str
    message_zh: str
    message_en: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "source": self.source,
            "message": {"zh": self.message_zh, "en": self.message_en},
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class HouseholdSignal:
    """Every reason one producer found for one household in one run.

    A **village-level** signal is about a person no household of the roster has (on a
    department list, not in the roster): ``household.household_no`` is ``""`` and ``subject``
    names the person (a stable key made of what the reasons already show, never an ID number
    in clear). The task service keeps one open task per (village, subject), as it keeps one
    per household; the village team finds out who the person is.
    """

    household: HouseholdKey
    reasons: tuple[TaskReason, ...]
    subject: str = ""

    @property
    def village_level(self) -> bool:
        """True for a signal about a person with no household (``subject`` set)."""
        return not self.household.household_no


@dataclass(frozen=True)
class TaskOutcome:
    """One reason of one closed verification task and how the visit ended — the read interface
    the task service fills (:func:`server.services.tasks.board_outcomes`) and the 动态清零 board
    reads for its false-positive rates.

    ``source`` is the reason's source (``dept:<department>`` or ``round``), ``code`` its rule,
    ``outcome`` the coded outcome of the task (``start_identification``, ``not_eligible``,
    ``data_error``, ``already_solved``, ``already_monitored``).
    """

    source: str
    code: str
    outcome: str
    village_code: str


class TaskSink(Protocol):
    """What a producer hands its signals to (``server.services.tasks.open_tasks`` is the real one).

    ``origin`` names the run that found them (a department list import, a round), so the task
    service can tell a re-run of the same import (nothing new) from a new finding.
    """

    def __call__(self, signals: Iterable[HouseholdSignal], *, origin: str) -> Any: ...
