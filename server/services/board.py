"""The 动态清零 board: every problem found, how long it has been open, and how it was cleared.

A failed 两不愁三保障 or 饮水安全 indicator is a problem of the household from the round whose
record showed it (DOMAIN.md, 问题动态清零). Each household's rounds are walked in the order they
began, each round's verdicts as the maintained indicator rows hold them (the round's own
records; a round that does not decide an indicator changes nothing):

- failing, nothing open → **open**, found on the day the round's first record reached the
  server;
- passing while open → **clearing**: the round's record of that indicator is the evidence
  (record id and date shown), but it is not cleared yet;
- the next round does not bring it back → **cleared** (solved on the evidence round's day);
- failing again while clearing (back in the next round) → **open** again, same day found,
  counted as **recurring**; failing again after it was cleared → a new open problem, recurring.

The board reads the maintained rows (five verdict columns per household and round, streamed)
and never recomputes a picture; :func:`recomputed_household_problems` is the reference from the
records that the tests hold it to.

Counts are per village or township (a reviewer sees only its townships); every number links to
the households behind it. The false-positive rate per department and rule comes from the
outcomes of closed verification tasks (:class:`TaskOutcome` rows, read through
:func:`server.services.task_hookup.task_outcomes`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from forms.indicators import PROBLEM_KINDS, MonitoringConfig
from server.errors import ValidationFailed
from server.services import indicators
from server.services.access import Principal
from server.services.monitoring import monitoring_config
from server.services.task_hookup import task_outcomes
from server.services.task_reasons import DEPARTMENTS, TaskOutcome
from server.storage import board as board_store
from server.storage.board import RoundVerdicts
from server.storage.indicators import HouseholdRecords

#: Levels the board rolls up to.
LEVELS = ("village", "township")
OPEN, CLEARING, CLEARED = "open", "clearing", "cleared"
#: The forms whose record decides each problem (the evidence a problem is solved).
EVIDENCE_FORMS: dict[str, tuple[str, ...]] = {
    "housing": ("housing_safety",),
    "water": ("drinking_water",),
    "education": ("compulsory_education",),
    "insurance": ("medical_insurance", "household_roster"),
    "income": ("monitoring_household",),
}
#: Task outcomes that say the signal was wrong (the household needed no help for that reason).
FALSE_POSITIVE_OUTCOMES = frozenset({"not_eligible", "data_error", "not_village_resident"})


@dataclass(frozen=True)
class Evidence:
    """The record that shows a problem solved."""

    record_id: str
    form_id: str
    round: str
    on: date

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "record_id": self.record_id,
            "form_id": self.form_id,
            "round": self.round,
            "date": self.on.isoformat(),
        }


@dataclass(frozen=True)
class RoundStep:
    """One household's verdicts in one round (True passes, False fails, None undecided) and
    the day the round's first record reached the server."""

    round: str
    started_on: date
    verdicts: Mapping[str, bool | None]


@dataclass
class BoardProblem:
    """One problem of one household as the board tracks it.

    ``solved_round``/``solved_on``: the round whose records show it solved (and the day that
    round began); ``evidence`` names the record, when looked up.
    """

    village_code: str
    household_no: str
    problem: str
    found_on: date
    found_round: str
    status: str = OPEN
    recurrences: int = 0
    solved_round: str | None = None
    solved_on: date | None = None
    evidence: Evidence | None = None

    def days_open(self, today: date) -> int:
        """Days from found to solved (once cleared) or to ``today``."""
        end = self.solved_on if self.status == CLEARED and self.solved_on else today
        return max(0, (end - self.found_on).days)

    def to_dict(self, today: date) -> dict[str, Any]:
        """JSON-able form with the age in days."""
        return {
            "village_code": self.village_code,
            "household_no": self.household_no,
            "problem": self.problem,
            "status": self.status,
            "found_on": self.found_on.isoformat(),
            "found_round": self.found_round,
            "days_open": self.days_open(today),
            "recurring": self.recurrences > 0,
            "recurrences": self.recurrences,
            "solved_round": self.solved_round,
            "solved_on": None if self.solved_on is None else self.solved_on.isoformat(),
            "evidence": None if self.evidence is None else self.evidence.to_dict(),
        }


def _china_date(moment: datetime) -> date:
    return moment.astimezone(indicators.CHINA_TIME).date()


def track(village_code: str, household_no: str, steps: Iterable[RoundStep]) -> list[BoardProblem]:
    """Every problem a household's rounds (in the order they began) show, with its state now
    (the rules of the module doc). A round that does not decide an indicator changes nothing,
    except that it counts as the next round for a problem awaiting confirmation."""
    current: dict[str, BoardProblem] = {}
    done: list[BoardProblem] = []
    for step in steps:
        for kind in PROBLEM_KINDS:
            verdict = step.verdicts.get(kind)
            problem = current.get(kind)
            if verdict is False:
                if problem is None or problem.status == CLEARED:
                    if problem is not None:
                        done.append(problem)
                    current[kind] = BoardProblem(
                        village_code,
                        household_no,
                        kind,
                        step.started_on,
                        step.round,
                        recurrences=0 if problem is None else problem.recurrences + 1,
                    )
                elif problem.status == CLEARING:  # back in the next round: reopened
                    problem.status, problem.solved_round, problem.solved_on = OPEN, None, None
                    problem.recurrences += 1
            elif problem is not None and problem.status == CLEARING:
                problem.status = CLEARED  # the next round did not bring it back
            elif problem is not None and problem.status == OPEN and verdict is True:
                problem.status = CLEARING
                problem.solved_round, problem.solved_on = step.round, step.started_on
    return [*done, *current.values()]


def _verdicts(picture: Any) -> dict[str, bool | None]:
    return {
        "housing": picture.housing_safe,
        "water": picture.water_safe,
        "education": None if picture.dropout_present is None else not picture.dropout_present,
        "insurance": picture.everyone_insured,
        "income": None if picture.income_below_line is None else not picture.income_below_line,
    }


def recomputed_household_problems(
    household: HouseholdRecords, *, today: date, config: MonitoringConfig
) -> list[BoardProblem]:
    """The household's problems computed from its records (each round's picture from that
    round's records, as the maintained rows hold it) — the reference the board is checked
    against."""
    steps = []
    for round_ in household.rounds():
        picture = indicators.picture_of(household, round=round_, today=today, config=config)
        if picture is None:
            continue
        started = min(r.created_at for r in household.records if r.round == round_)
        steps.append(RoundStep(round_, _china_date(started), _verdicts(picture.indicators)))
    return track(household.village_code, household.household_no, steps)


def _steps(rounds: list[RoundVerdicts]) -> list[RoundStep]:
    return [
        RoundStep(r.round, _china_date(r.started_at), r.verdicts)
        for r in rounds
        if r.started_at is not None
    ]


def _add_evidence(problems: list[BoardProblem]) -> None:
    """Name the record that shows each solved problem solved (the listed ones only)."""
    keys = {(p.village_code, p.household_no, p.solved_round) for p in problems if p.solved_round}
    found = board_store.round_records(keys)  # type: ignore[arg-type]
    for problem in problems:
        if problem.solved_round is None:
            continue
        records = {
            r.form_id: r
            for r in found.get(
                (problem.village_code, problem.household_no, problem.solved_round), []
            )
        }
        for form_id in EVIDENCE_FORMS[problem.problem]:
            record = records.get(form_id)
            if record is not None:
                problem.evidence = Evidence(
                    record.record_id, form_id, problem.solved_round, _china_date(record.created_at)
                )
                break


@dataclass
class AreaBoard:
    """The board counts of one area."""

    area: str
    households: int = 0
    open: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROBLEM_KINDS, 0))
    recurring: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROBLEM_KINDS, 0))
    clearing: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROBLEM_KINDS, 0))
    cleared: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROBLEM_KINDS, 0))
    oldest: dict[str, date | None] = field(
        default_factory=lambda: dict.fromkeys(PROBLEM_KINDS, None)
    )

    def add(self, problem: BoardProblem) -> None:
        """Count one problem in."""
        kind = problem.problem
        if problem.status == OPEN:
            self.open[kind] += 1
            self.recurring[kind] += problem.recurrences > 0
            oldest = self.oldest[kind]
            if oldest is None or problem.found_on < oldest:
                self.oldest[kind] = problem.found_on
        elif problem.status == CLEARING:
            self.clearing[kind] += 1
        else:
            self.cleared[kind] += 1

    def to_dict(self, today: date) -> dict[str, Any]:
        """JSON-able form with the oldest open problem's age per kind."""
        dated = [d for d in self.oldest.values() if d is not None]
        oldest = min(dated) if dated else None
        return {
            "area": self.area,
            "households": self.households,
            "open": dict(self.open),
            "open_total": sum(self.open.values()),
            "recurring": dict(self.recurring),
            "recurring_total": sum(self.recurring.values()),
            "clearing": dict(self.clearing),
            "clearing_total": sum(self.clearing.values()),
            "cleared": dict(self.cleared),
            "cleared_total": sum(self.cleared.values()),
            "oldest_days": {
                k: None if d is None else (today - d).days for k, d in self.oldest.items()
            },
            "oldest_found_on": None if oldest is None else oldest.isoformat(),
            "oldest_open_days": None if oldest is None else (today - oldest).days,
        }


# --- false positives per department and rule ----------------------------------------------------


def _source_name(source: str) -> str:
    if source == "round":
        return "轮次比对"
    if source.startswith("dept:"):
        name = DEPARTMENTS.get(source[5:])
        return name[0] if name else source[5:]
    return source


def false_positive_rates(outcomes: Iterable[TaskOutcome], area: str = "") -> list[dict[str, Any]]:
    """Per source (department) and rule: closed tasks, false positives (``not_eligible`` or
    ``data_error``) and their share, under ``area``; highest rate first."""
    tally: dict[tuple[str, str], list[int]] = {}
    for outcome in outcomes:
        if not outcome.village_code.startswith(area):
            continue
        counts = tally.setdefault((outcome.source, outcome.code), [0, 0])
        counts[0] += 1
        counts[1] += outcome.outcome in FALSE_POSITIVE_OUTCOMES
    rows = [
        {
            "source": source,
            "source_name": _source_name(source),
            "code": code,
            "closed": closed,
            "false_positives": false,
            "rate": round(false / closed, 4) if closed else None,
        }
        for (source, code), (closed, false) in tally.items()
    ]
    return sorted(rows, key=lambda r: (-(r["rate"] or 0), r["source"], r["code"]))


# --- the board --------------------------------------------------------------------------------


def _check_level(level: str) -> str:
    if level not in LEVELS:
        raise ValidationFailed(
            en=f"level must be one of {', '.join(LEVELS)}",
            zh="层级应为村（village）或乡镇（township）",
            details={"fields": {"level": [f"one of {', '.join(LEVELS)}"]}},
        )
    return level


def board(
    principal: Principal,
    *,
    area: str | None = None,
    level: str = "village",
    limit: int = 100,
    today: date | None = None,
    config: MonitoringConfig | None = None,
    outcomes: Callable[[str], Iterable[TaskOutcome]] | None = None,
) -> dict[str, Any]:
    """The 动态清零 board of the caller's area (or the part ``area`` names) by ``level``.

    Returns ``{"area", "level", "today", "total", "areas": [...], "open_problems": {"total",
    "items"}, "clearing": {...}, "cleared": {...}, "false_positives": [...]}``: open problems
    oldest first (recurring ones marked), problems awaiting the next round with their evidence,
    cleared ones most recent first; each list at most ``limit`` items. Raises
    :class:`ValidationFailed` for a bad level or area and :class:`Forbidden` for an area
    outside the caller's.
    """
    scope = indicators.effective_area(principal, area)
    digits = {"village": 12, "township": 9}[_check_level(level)]
    today = today or indicators.china_today()
    config = config or monitoring_config()
    areas: dict[str, AreaBoard] = {}
    total = AreaBoard(scope)
    problems: list[BoardProblem] = []
    indicators.ensure_fresh(scope, today=today, config=config)
    for village, count in sorted(board_store.village_households(scope).items()):
        key = village[:digits]
        areas.setdefault(key, AreaBoard(key)).households += count
        total.households += count
    for village, number, rounds in board_store.household_rounds(scope):
        key = village[:digits]
        tally = areas.setdefault(key, AreaBoard(key))
        for problem in track(village, number, _steps(rounds)):
            tally.add(problem)
            total.add(problem)
            problems.append(problem)

    def listed(status: str, order: Callable[[BoardProblem], Any]) -> dict[str, Any]:
        chosen = sorted((p for p in problems if p.status == status), key=order)[:limit]
        _add_evidence(chosen)
        total_of = sum(1 for p in problems if p.status == status)
        return {"total": total_of, "items": [p.to_dict(today) for p in chosen]}

    def by_evidence(p: BoardProblem) -> tuple[int, str, str, str]:
        on = p.solved_on.toordinal() if p.solved_on else 0
        return (-on, p.village_code, p.household_no, p.problem)

    read = outcomes or task_outcomes
    return {
        "area": scope,
        "level": level,
        "today": today.isoformat(),
        "total": total.to_dict(today),
        "areas": [areas[k].to_dict(today) for k in sorted(areas)],
        "open_problems": listed(
            OPEN, lambda p: (p.found_on, p.village_code, p.household_no, p.problem)
        ),
        "clearing": listed(CLEARING, by_evidence),
        "cleared": listed(CLEARED, by_evidence),
        "false_positives": false_positive_rates(read(scope), scope),
    }
