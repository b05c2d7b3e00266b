"""The 两不愁三保障 + 饮水安全 dashboard: household pictures rolled up by village, township, county.

Every household's picture is computed by the form engine (``forms.indicators.household_indicators``)
from its stored records and the county's monitoring configuration, exactly as a tablet computes
it; this module only chooses the records, counts and lists. Households stream from storage one
at a time, so a county of 100,000 households is summarised in bounded memory.

Rates are ``passing / decided``: households whose indicator the records decide (a missing
instrument or value leaves it undecided and counts in ``*_unknown``, never as safe).

Rounds: with ``round`` a household's picture comes from that round's records; without, from the
newest record of each form. Rounds are ordered by when their first record reached the server.
Every failed indicator is an open problem (动态清零) dated from the first round of its unbroken
failing run, so the county sees how long each has been open; a household whose per-capita income
fell, or whose rigid expenses rose, past the local thresholds since its previous monitoring
record is *newly at risk* (收入骤减、支出骤增, ``forms.indicators.round_change``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from forms.indicators import (
    AREA_DIGITS,
    AreaSummary,
    HouseholdIndicators,
    MonitoringConfig,
    RoundChange,
    household_indicators,
    round_change,
)
from server.errors import Forbidden, ValidationFailed
from server.services.access import Principal
from server.services.monitoring import monitoring_config
from server.storage import indicators as store
from server.storage.database import writing
from server.storage.indicators import (
    NEWEST,
    AreaCounts,
    HouseholdRecords,
    HouseholdSelection,
    StoredRecord,
)

#: Survey dates are Beijing time (a visit at 07:00 on the 1st is dated the 1st).
CHINA_TIME = timezone(timedelta(hours=8))
#: Levels the dashboard rolls up to.
LEVELS = ("village", "township", "county")
#: Problem names of ``HouseholdIndicators.open_problems`` a household list can filter on.
PROBLEMS = ("housing", "water", "education", "insurance", "income")
WATER_INDICATORS = ("quantity", "quality", "convenience", "reliability")
#: Monitoring categories that make a household a monitoring object (监测对象).
NOT_MONITORED = (None, "", "无")
_ROUND_YEAR = re.compile(r"^(\d{4})")


def china_today() -> date:
    """Today's date in Beijing time."""
    return datetime.now(UTC).astimezone(CHINA_TIME).date()


def effective_area(principal: Principal, area: str | None) -> str:
    """The area prefix a query covers: ``area`` narrowed to the principal's own area.

    A prefix wider than the principal's area (a reviewer asking for the whole county) is
    narrowed to the principal's area. Raises :class:`ValidationFailed` for a prefix that is not
    digits and :class:`Forbidden` (``outside_area``) for an area outside the principal's.
    """
    area = (area or "").strip()
    if area and not (area.isascii() and area.isdigit() and len(area) <= 12):
        raise ValidationFailed(
            en="an area is a code prefix of up to 12 digits",
            zh="地区应为不超过12位的行政区划代码前缀",
            details={"fields": {"area": ["up to 12 digits"]}},
        )
    own = principal.area_prefix
    if area.startswith(own):
        return area
    if own.startswith(area):
        return own
    raise Forbidden(
        en=f"{area} is outside your area {own}",
        zh=f"{area} 不在您的管辖范围 {own} 内",
        code="outside_area",
    )


def survey_year(round: str | None, today: date) -> int:
    """The year a round belongs to (``"2026-annual"`` → 2026); the current year without one."""
    match = _ROUND_YEAR.match(round or "")
    return int(match.group(1)) if match else today.year


@dataclass(frozen=True)
class OpenProblem:
    """A failed indicator of a household (动态清零): since when it has been failing.

    ``found_on`` is the date of the first record of the unbroken run of rounds in which the
    indicator failed (a later record showing it solved would have closed the problem).
    """

    problem: str
    found_on: date

    def to_dict(self, today: date) -> dict[str, Any]:
        """JSON-able form with the problem's age in days."""
        return {
            "problem": self.problem,
            "found_on": self.found_on.isoformat(),
            "days_open": (today - self.found_on).days,
        }


@dataclass(frozen=True)
class HouseholdPicture:
    """One household's indicators plus what the dashboard lists about it."""

    household_no: str
    indicators: HouseholdIndicators
    record_ids: dict[str, str]
    identified_on: date | None
    problems: tuple[OpenProblem, ...] = ()
    change: RoundChange | None = None

    def days_since_identification(self, today: date) -> int | None:
        """Days since the household became a monitoring object, or None (not one, or no date)."""
        return None if self.identified_on is None else (today - self.identified_on).days

    @property
    def monitored(self) -> bool:
        """True for a monitoring object (监测对象) whose risk is not yet removed."""
        ind = self.indicators
        return ind.monitoring_category not in NOT_MONITORED and ind.risk_removed is not True

    @property
    def newly_at_risk(self) -> bool:
        """True when income fell or rigid expenses rose past the local thresholds since the
        household's previous monitoring record (收入骤减、支出骤增)."""
        return self.change is not None and self.change.flagged

    def to_dict(self, today: date) -> dict[str, Any]:
        """JSON-able form: the engine's picture plus household number, records and dates."""
        return {
            "household_no": self.household_no,
            **self.indicators.to_dict(),
            "record_ids": dict(sorted(self.record_ids.items())),
            "identified_on": None if self.identified_on is None else self.identified_on.isoformat(),
            "days_since_identification": self.days_since_identification(today),
            "problems": [p.to_dict(today) for p in self.problems],
            "round_change": None if self.change is None else self.change.to_dict(),
        }


def _date(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _china_date(moment: datetime) -> date:
    return moment.astimezone(CHINA_TIME).date()


def _identified_on(monitoring: StoredRecord | None) -> date | None:
    if monitoring is None:
        return None
    data = monitoring.data
    # County approval makes a household a monitoring object; the home check is the fallback
    # for records still in procedure.
    return _date(data.get("county_approval_date")) or _date(data.get("home_check_date"))


def picture_of(
    household: HouseholdRecords,
    *,
    round: str | None,
    today: date,
    config: MonitoringConfig,
) -> HouseholdPicture | None:
    """The picture of one household, or None when it has no record in ``round``.

    With a ``round`` the picture comes from that round's records; without one from the newest
    record of each form. Open problems are dated by walking back through the earlier rounds
    (each with the newest record of every form so far) while the indicator kept failing, and
    the newest monitoring record is compared with the one before it for sharp changes.
    """
    rounds = household.rounds()
    if round is not None:
        if round not in rounds:
            return None
        rounds = rounds[: rounds.index(round) + 1]
        current = household.newest_by_form({round})
    else:
        current = household.newest_by_form()
    village = household.village_code
    year = survey_year(round, today)
    picture = household_indicators(
        {form: rec.data for form, rec in current.items()}, village, year, config
    )
    problems = _dated_problems(household, rounds, picture, today, config)
    monitoring = current.get("monitoring_household")
    return HouseholdPicture(
        household_no=household.household_no,
        indicators=picture,
        record_ids={form: rec.record_id for form, rec in current.items()},
        identified_on=_identified_on(monitoring),
        problems=problems,
        change=_change(household, monitoring, village, year, config),
    )


def _dated_problems(
    household: HouseholdRecords,
    rounds: list[str],
    picture: HouseholdIndicators,
    today: date,
    config: MonitoringConfig,
) -> tuple[OpenProblem, ...]:
    if not picture.open_problems:
        return ()
    found: dict[str, date] = {}
    still_failing = set(picture.open_problems)
    # Walk back: the state at each earlier round is the newest record of every form so far.
    for index in range(len(rounds) - 1, -1, -1):
        so_far = household.newest_by_form(set(rounds[: index + 1]))
        step = rounds[index]
        step_records = [r for r in so_far.values() if r.round == step]
        if not step_records:
            continue
        earlier = household_indicators(
            {form: rec.data for form, rec in so_far.items()},
            household.village_code,
            survey_year(step, today),
            config,
        )
        for name in list(still_failing):
            if name in earlier.open_problems:
                found[name] = _china_date(min(r.created_at for r in step_records))
            else:
                still_failing.discard(name)
        if not still_failing:
            break
    fallback = _china_date(min(r.created_at for r in household.records))
    return tuple(OpenProblem(name, found.get(name, fallback)) for name in picture.open_problems)


def _change(
    household: HouseholdRecords,
    monitoring: StoredRecord | None,
    village: str,
    year: int,
    config: MonitoringConfig,
) -> RoundChange | None:
    if monitoring is None:
        return None
    earlier = [
        r
        for r in household.records
        if r.form_id == "monitoring_household"
        and r.round != monitoring.round
        and r.created_at < monitoring.created_at
    ]
    if not earlier:
        return None
    previous = max(earlier, key=lambda r: (r.created_at, r.updated_at))
    return round_change(
        previous.data,
        monitoring.data,
        income_drop_percent=config.income_drop_percent(village, year),
        expense_rise_percent=config.expense_rise_percent(village, year),
    )


def iter_pictures(
    area: str, *, round: str | None, today: date, config: MonitoringConfig
) -> Iterator[HouseholdPicture]:
    """Yield the picture of every household under ``area`` (streamed, village code order)."""
    for household in store.household_records(area):
        picture = picture_of(household, round=round, today=today, config=config)
        if picture is not None:
            yield picture


#: Whether a household's indicator is decided by its records (``HouseholdIndicators`` field).
_DECIDED_BY: dict[str, str] = {
    "housing": "housing_safe",
    "water": "water_safe",
    "education": "dropout_present",
    "insurance": "everyone_insured",
    "income": "income_below_line",
}


def household_selection(
    principal: Principal,
    indicator: str,
    *,
    failing: bool | None,
    area: str | None = None,
    round: str | None = None,
    today: date | None = None,
    config: MonitoringConfig | None = None,
) -> HouseholdSelection:
    """The households of the caller's area whose ``indicator`` (one of :data:`PROBLEMS`) fails
    (``failing=True``), passes (``False``) or is decided either way (None), as the dashboard
    computes it — a selection a records query joins, however many households it holds.

    Raises :class:`ValidationFailed` for an unknown indicator or bad area and
    :class:`Forbidden` for an area outside the caller's.
    """
    if indicator not in PROBLEMS:
        raise ValidationFailed(
            en=f"indicator must be one of {', '.join(PROBLEMS)}",
            zh="指标无效",
            details={"fields": {"indicator": [f"one of {', '.join(PROBLEMS)}"]}},
        )
    scope = effective_area(principal, area)
    _fresh_rows(scope, today or china_today(), config or monitoring_config())
    return HouseholdSelection(scope, round or NEWEST, indicator, failing)


def households_with(
    principal: Principal,
    indicator: str,
    *,
    failing: bool | None,
    area: str | None = None,
    round: str | None = None,
    today: date | None = None,
    config: MonitoringConfig | None = None,
) -> set[tuple[str, str]]:
    """(village code, household number) of :func:`household_selection`'s households."""
    return household_selection(
        principal, indicator, failing=failing, area=area, round=round, today=today, config=config
    ).pairs()


def _rate(passing: int, decided: int) -> float | None:
    return None if decided == 0 else round(passing / decided, 4)


@dataclass
class AreaTally:
    """Counts of one area: the engine's ``AreaSummary`` plus safe/unknown counts and water detail."""

    summary: AreaSummary
    housing_safe: int = 0
    water_safe: int = 0
    no_dropout: int = 0
    everyone_insured: int = 0
    above_line: int = 0
    water_failed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WATER_INDICATORS, 0))
    problems: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROBLEMS, 0))
    oldest_problem: date | None = None
    newly_at_risk: int = 0
    open_conflicts: int = 0
    oldest_conflict: datetime | None = None

    def add(self, household: HouseholdPicture) -> None:
        """Count one household in."""
        picture = household.indicators
        self.summary.add(picture)
        self.newly_at_risk += household.newly_at_risk
        for problem in household.problems:
            self.problems[problem.problem] = self.problems.get(problem.problem, 0) + 1
            if self.oldest_problem is None or problem.found_on < self.oldest_problem:
                self.oldest_problem = problem.found_on
        self.housing_safe += picture.housing_safe is True
        self.water_safe += picture.water_safe is True
        self.no_dropout += picture.dropout_present is False
        self.everyone_insured += picture.everyone_insured is True
        self.above_line += picture.income_below_line is False
        for name in picture.water_failed:
            self.water_failed[name] = self.water_failed.get(name, 0) + 1

    def add_conflicts(self, count: int, oldest: datetime) -> None:
        """Count open conflicts of a village of this area."""
        self.open_conflicts += count
        if self.oldest_conflict is None or oldest < self.oldest_conflict:
            self.oldest_conflict = oldest

    def counts(self) -> AreaCounts:
        """The tally as the storage's :class:`AreaCounts` (what the maintained rows give)."""
        s = self.summary
        return AreaCounts(
            area=s.area,
            households=s.households,
            passing={
                "housing": self.housing_safe,
                "water": self.water_safe,
                "education": self.no_dropout,
                "insurance": self.everyone_insured,
                "income": self.above_line,
            },
            failing={
                "housing": s.housing_unsafe,
                "water": s.water_unsafe,
                "education": s.dropout,
                "insurance": s.not_all_insured,
                "income": s.below_line,
            },
            water_failed=dict(self.water_failed),
            all_assured=s.all_assured,
            incomplete=s.incomplete,
            with_category=s.monitored,
            risk_removed=s.risk_removed,
            open_problems=s.open_problems,
            problems=dict(self.problems),
            oldest_problem=self.oldest_problem,
            newly_at_risk=self.newly_at_risk,
        )


def _area_dict(
    counts: AreaCounts, conflicts: tuple[int, datetime | None], now: datetime, today: date
) -> dict[str, Any]:
    """One area of the dashboard: counts, rates (passing / decided) and unknowns, JSON-able."""
    indicators = {
        name: {
            "passing": counts.passing[name],
            "failing": counts.failing[name],
            "unknown": counts.households - counts.passing[name] - counts.failing[name],
            "rate": _rate(counts.passing[name], counts.passing[name] + counts.failing[name]),
        }
        for name in PROBLEMS
    }
    indicators["water"]["failed_by_indicator"] = dict(counts.water_failed)
    open_conflicts, oldest_conflict = conflicts
    return {
        "area": counts.area,
        "households": counts.households,
        "indicators": indicators,
        "all_assured": counts.all_assured,
        "incomplete": counts.incomplete,
        "open_problems": counts.open_problems,
        "open_problems_by_indicator": dict(counts.problems),
        "oldest_open_problem_days": None
        if counts.oldest_problem is None
        else (today - counts.oldest_problem).days,
        "newly_at_risk": counts.newly_at_risk,
        "monitoring_objects": counts.with_category,
        "risk_removed": counts.risk_removed,
        "open_conflicts": open_conflicts,
        "oldest_conflict_days": None if oldest_conflict is None else (now - oldest_conflict).days,
    }


def _no_counts(area: str) -> AreaCounts:
    return AreaTally(AreaSummary(area)).counts()


def _sum_counts(area: str, parts: Iterable[AreaCounts]) -> AreaCounts:
    """The counts of an area made of ``parts`` (sums; the oldest problem is the oldest)."""
    total = _no_counts(area)
    for part in parts:
        oldest = [d for d in (total.oldest_problem, part.oldest_problem) if d is not None]
        total = AreaCounts(
            area=area,
            households=total.households + part.households,
            passing={k: total.passing[k] + part.passing.get(k, 0) for k in total.passing},
            failing={k: total.failing[k] + part.failing.get(k, 0) for k in total.failing},
            water_failed={
                k: total.water_failed.get(k, 0) + part.water_failed.get(k, 0)
                for k in {**total.water_failed, **part.water_failed}
            },
            all_assured=total.all_assured + part.all_assured,
            incomplete=total.incomplete + part.incomplete,
            with_category=total.with_category + part.with_category,
            risk_removed=total.risk_removed + part.risk_removed,
            open_problems=total.open_problems + part.open_problems,
            problems={k: total.problems.get(k, 0) + part.problems.get(k, 0) for k in PROBLEMS},
            oldest_problem=min(oldest) if oldest else None,
            newly_at_risk=total.newly_at_risk + part.newly_at_risk,
            monitored=total.monitored + part.monitored,
        )
    return total


@dataclass(frozen=True)
class IndicatorQuery:
    """What a dashboard request asks for (already checked against the caller's area)."""

    area: str
    level: str = "village"
    round: str | None = None
    limit: int = 200


def _check_level(level: str) -> str:
    if level not in LEVELS:
        raise ValidationFailed(
            en=f"level must be one of {', '.join(LEVELS)}",
            zh="层级应为村（village）、乡镇（township）或县（county）",
            details={"fields": {"level": [f"one of {', '.join(LEVELS)}"]}},
        )
    return level


def recomputed_rollup(
    principal: Principal,
    *,
    area: str | None = None,
    level: str = "village",
    round: str | None = None,
    limit: int = 200,
    today: date | None = None,
    config: MonitoringConfig | None = None,
) -> dict[str, Any]:
    """The dashboard of the caller's area (or the part ``area`` names), rolled up by ``level``.

    Returns ``{"area", "level", "round", "year", "total", "areas": [...], "below_line":
    {"total", "households": [...]}, "monitoring_objects": {...}, "newly_at_risk": {...}}``;
    the lists hold at most ``limit`` households each (their totals count all): below-line
    households lowest income first, monitoring objects longest identified first, newly at-risk
    households (收入骤减、支出骤增 against the local thresholds) steepest income fall first.
    Each area also counts open problems by indicator and the age of the oldest. ``config``
    defaults to the stored monitoring configuration. Raises :class:`ValidationFailed` for a
    bad level or area and :class:`Forbidden` for an area outside the caller's.

    Computed from scratch over every record of the area (linear in the county's size): the
    reference :func:`rollup` (which reads the maintained rows) is checked against.
    """
    query = IndicatorQuery(effective_area(principal, area), _check_level(level), round, limit)
    today = today or china_today()
    now = datetime.now(UTC)
    year = survey_year(query.round, today)
    config = config or monitoring_config()
    digits = min(AREA_DIGITS[query.level], 12)
    total = AreaTally(AreaSummary(query.area))
    areas: dict[str, AreaTally] = {}
    below: list[dict[str, Any]] = []
    below_total = 0
    monitored: list[dict[str, Any]] = []
    monitored_total = 0
    at_risk: list[dict[str, Any]] = []
    at_risk_total = 0
    for picture in iter_pictures(query.area, round=query.round, today=today, config=config):
        ind = picture.indicators
        key = ind.village_code[:digits]
        areas.setdefault(key, AreaTally(AreaSummary(key))).add(picture)
        total.add(picture)
        if picture.newly_at_risk:
            at_risk_total += 1
            at_risk.append(_listed(picture, today))
            if len(at_risk) > 2 * query.limit:
                at_risk = _steepest(at_risk, query.limit)
        if ind.income_below_line is True:
            below_total += 1
            below.append(_listed(picture, today))
            # Keep the lowest incomes: sort and trim as the list grows past twice the limit.
            if len(below) > 2 * query.limit:
                below = _lowest(below, query.limit)
        if picture.monitored:
            monitored_total += 1
            monitored.append(_listed(picture, today))
            if len(monitored) > 2 * query.limit:
                monitored = _longest(monitored, query.limit)
    for village, tally in store.open_conflicts_by_village(query.area).items():
        areas.setdefault(village[:digits], AreaTally(AreaSummary(village[:digits]))).add_conflicts(
            tally.count, tally.oldest
        )
        total.add_conflicts(tally.count, tally.oldest)

    def shown(tally: AreaTally) -> dict[str, Any]:
        conflicts = (tally.open_conflicts, tally.oldest_conflict)
        return _area_dict(tally.counts(), conflicts, now, today)

    return {
        "area": query.area,
        "level": query.level,
        "round": query.round,
        "year": year,
        "total": shown(total),
        "areas": [shown(areas[key]) for key in sorted(areas)],
        "below_line": {"total": below_total, "households": _lowest(below, query.limit)},
        "monitoring_objects": {
            "total": monitored_total,
            "households": _longest(monitored, query.limit),
        },
        "newly_at_risk": {"total": at_risk_total, "households": _steepest(at_risk, query.limit)},
    }


def _listed(picture: HouseholdPicture, today: date) -> dict[str, Any]:
    ind = picture.indicators
    return {
        "village_code": ind.village_code,
        "household_no": picture.household_no,
        "per_capita_income": ind.per_capita_income,
        "monitoring_line": ind.monitoring_line,
        "monitoring_category": ind.monitoring_category,
        "risk_removed": ind.risk_removed,
        "identified_on": None
        if picture.identified_on is None
        else picture.identified_on.isoformat(),
        "days_since_identification": picture.days_since_identification(today),
        "open_problems": list(ind.open_problems),
        "round_change": None if picture.change is None else picture.change.to_dict(),
    }


def _lowest(rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    return sorted(
        rows,
        key=lambda r: (r["per_capita_income"], r["village_code"], r["household_no"]),
    )[:limit]


def _steepest(rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    def key(row: dict[str, Any]) -> tuple[float, float, str, str]:
        change = row["round_change"] or {}
        income = change.get("income_change_percent")
        expense = change.get("expense_rise_percent")
        return (
            income if income is not None else 0.0,
            -(expense if expense is not None else 0.0),
            row["village_code"],
            row["household_no"],
        )

    return sorted(rows, key=key)[:limit]


def _longest(rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    def key(row: dict[str, Any]) -> tuple[bool, int, str, str]:
        # Undated households last (after any dated one, even one dated in the future).
        days = row["days_since_identification"]
        return (days is None, -(days or 0), row["village_code"], row["household_no"])

    return sorted(rows, key=key)[:limit]


def recomputed_household_list(
    principal: Principal,
    *,
    area: str | None = None,
    round: str | None = None,
    problem: str | None = None,
    limit: int = 100,
    offset: int = 0,
    today: date | None = None,
    config: MonitoringConfig | None = None,
) -> dict[str, Any]:
    """Per-household pictures of the caller's area, optionally only those with ``problem``.

    Returns ``{"total", "households": [...]}`` (a page of ``limit`` from ``offset``, village
    code then household number order). Raises :class:`ValidationFailed` for an unknown problem
    or bad area and :class:`Forbidden` for an area outside the caller's. Computed from scratch
    (the reference :func:`household_list` is checked against).
    """
    _check_problem(problem)
    scope = effective_area(principal, area)
    today = today or china_today()
    config = config or monitoring_config()
    page: list[dict[str, Any]] = []
    total = 0
    for picture in iter_pictures(scope, round=round, today=today, config=config):
        if problem is not None and problem not in picture.indicators.open_problems:
            continue
        if offset <= total < offset + limit:
            page.append(picture.to_dict(today))
        total += 1
    return {"total": total, "households": page}


def _check_problem(problem: str | None) -> None:
    if problem is not None and problem not in PROBLEMS:
        raise ValidationFailed(
            en=f"problem must be one of {', '.join(PROBLEMS)}",
            zh="问题类型无效",
            details={"fields": {"problem": [f"one of {', '.join(PROBLEMS)}"]}},
        )


# --- the maintained rows: what the dashboard reads -------------------------------------------


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return sorted([str(k), _canonical(v)] for k, v in value.items())
    return value


#: The last configuration fingerprinted and its key: ``monitoring_config()`` hands out the same
#: object while the lines are unchanged, so every batch after the first skips the hashing.
_LAST_KEY: list[tuple[MonitoringConfig, str]] = []


def config_key(config: MonitoringConfig) -> str:
    """A short fingerprint of ``config``: rows computed under another one are stale."""
    last = _LAST_KEY[0] if _LAST_KEY else None
    if last is not None and last[0] is config:
        return last[1]
    plain = {f.name: _canonical(getattr(config, f.name)) for f in dataclasses.fields(config)}
    text = json.dumps(plain, sort_keys=True, default=str)
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    _LAST_KEY[:] = [(config, key)]
    return key


def _stored_picture(picture: HouseholdPicture, today: date) -> dict[str, Any]:
    plain = picture.to_dict(today)
    plain.pop("days_since_identification")
    for problem in plain["problems"]:
        problem.pop("days_open")
    return plain


def _shown_picture(plain: dict[str, Any], today: date) -> dict[str, Any]:
    """A stored picture with its day counts as of ``today``."""
    identified = plain.get("identified_on")
    out = {
        **plain,
        "days_since_identification": None
        if identified is None
        else (today - date.fromisoformat(identified)).days,
        "problems": [
            {**p, "days_open": (today - date.fromisoformat(p["found_on"])).days}
            for p in plain.get("problems", [])
        ],
    }
    return out


def _row(
    household: HouseholdRecords,
    round_key: str,
    picture: HouseholdPicture,
    today: date,
    year: int,
    key: str,
) -> dict[str, Any]:
    ind = picture.indicators
    started = None
    if round_key != NEWEST:
        started = min(r.created_at for r in household.records if r.round == round_key)
    change = picture.change.to_dict() if picture.change is not None else {}
    open_problems = set(ind.open_problems)
    found = [p.found_on for p in picture.problems]
    return {
        "round_key": round_key,
        "village_code": household.village_code,
        "household_no": household.household_no,
        "round_started_at": started,
        "year": year,
        "year_floating": _ROUND_YEAR.match(round_key) is None,
        "config_key": key,
        "housing_safe": ind.housing_safe,
        "water_safe": ind.water_safe,
        "dropout_present": ind.dropout_present,
        "everyone_insured": ind.everyone_insured,
        "income_below_line": ind.income_below_line,
        **{f"water_{name}_failed": name in ind.water_failed for name in WATER_INDICATORS},
        "all_assured": ind.all_assured,
        "has_category": ind.monitoring_category not in NOT_MONITORED,
        "monitored": picture.monitored,
        "risk_removed": ind.risk_removed,
        "open_problems": len(ind.open_problems),
        **{f"{name}_open": name in open_problems for name in PROBLEMS},
        "oldest_problem_on": min(found) if found else None,
        "newly_at_risk": picture.newly_at_risk,
        "income_change_percent": change.get("income_change_percent"),
        "expense_rise_percent": change.get("expense_rise_percent"),
        "per_capita_income": ind.per_capita_income,
        "identified_on": picture.identified_on,
        "picture": _stored_picture(picture, today),
    }


def _rows_of(
    household: HouseholdRecords, today: date, config: MonitoringConfig, key: str
) -> list[dict[str, Any]]:
    """The household's rows: one per round it has records in, one for its newest records.

    Task outcomes are not among the records (``server.storage.indicators``): a village-level
    task's own 户编号 (``task-<id>``) has none, so no row and no picture on the dashboard."""
    rows = []
    rounds = household.rounds()
    pictures: dict[str | None, HouseholdPicture | None] = {}
    for round_ in [*rounds, None]:
        year = survey_year(round_, today)
        if round_ is None and len(rounds) == 1 and year == survey_year(rounds[0], today):
            # One round only: its newest records are that round's, so is the picture.
            picture = pictures[rounds[0]]
        else:
            picture = picture_of(household, round=round_, today=today, config=config)
        pictures[round_] = picture
        if picture is not None:
            rows.append(_row(household, round_ or NEWEST, picture, today, year, key))
    return rows


def refresh_households(
    households: Iterable[tuple[str, str]],
    *,
    today: date | None = None,
    config: MonitoringConfig | None = None,
) -> int:
    """Recompute the indicator rows of ``households`` (village code, household number) from
    their live records; returns how many households were recomputed.

    The one call every writer of records makes, once per batch, inside the batch's write
    transaction (so the dashboard never sees a record without its household's picture). The
    households are locked first, so two concurrent batches of one household do not each
    compute from the other's stale view. A sync exchange passes the ``today`` and ``config``
    its ops were checked against (``IngestContext``), read once per exchange; without them
    they are read here.
    """
    pairs = sorted(set(households))
    if not pairs:
        return 0
    today = today or china_today()
    config = config or monitoring_config()
    key = config_key(config)
    store.lock_villages({village for village, _ in pairs})
    rows: list[dict[str, Any]] = []
    for household in store.records_of_households(pairs):
        rows.extend(_rows_of(household, today, config, key))
    store.replace_rows(pairs, rows)
    return len(pairs)


#: Households recomputed per write transaction by a rebuild or a refresh of stale rows.
REBUILD_CHUNK = 500


def rebuild(*, chunk: int = REBUILD_CHUNK, progress: Callable[[int], None] | None = None) -> int:
    """Recompute every household's indicator rows (an existing database, a new monitoring
    configuration); one write transaction per ``chunk`` households. Returns the households."""
    today = china_today()
    config = monitoring_config()
    done = 0
    after: tuple[str, str] | None = None
    while True:
        keys = store.household_keys(after, chunk)
        if not keys:
            return done
        with writing():
            done += refresh_households(keys, today=today, config=config)
        after = keys[-1]
        if progress is not None:
            progress(done)


def _fresh_rows(scope: str, today: date, config: MonitoringConfig) -> None:
    """Recompute the rows under ``scope`` computed for another configuration or year.

    After a change of the monitoring configuration (or on New Year) the first reader pays for
    the recomputation; ``python -m server rebuild-indicators`` does it ahead.
    """
    key = config_key(config)
    while stale := store.stale_households(scope, key, today.year, REBUILD_CHUNK):
        with writing():
            refresh_households(stale, today=today, config=config)


def ensure_fresh(
    area: str, *, today: date | None = None, config: MonitoringConfig | None = None
) -> None:
    """Recompute the maintained rows under ``area`` that were computed for another monitoring
    configuration or year, before a reader (the 动态清零 board) uses them."""
    _fresh_rows(area, today or china_today(), config or monitoring_config())


def _conflicts_by_area(scope: str, digits: int) -> dict[str, tuple[int, datetime | None]]:
    out: dict[str, tuple[int, datetime | None]] = {}
    for village, tally in store.open_conflicts_by_village(scope).items():
        count, oldest = out.get(village[:digits], (0, None))
        out[village[:digits]] = (
            count + tally.count,
            tally.oldest if oldest is None or tally.oldest < oldest else oldest,
        )
    return out


def _merged_conflicts(parts: Iterable[tuple[int, datetime | None]]) -> tuple[int, datetime | None]:
    count, oldest = 0, None
    for part_count, part_oldest in parts:
        count += part_count
        if part_oldest is not None and (oldest is None or part_oldest < oldest):
            oldest = part_oldest
    return count, oldest


def rollup(
    principal: Principal,
    *,
    area: str | None = None,
    level: str = "village",
    round: str | None = None,
    limit: int = 200,
    today: date | None = None,
    config: MonitoringConfig | None = None,
) -> dict[str, Any]:
    """The dashboard of the caller's area (or the part ``area`` names), rolled up by ``level``.

    Returns ``{"area", "level", "round", "year", "total", "areas": [...], "below_line":
    {"total", "households": [...]}, "monitoring_objects": {...}, "newly_at_risk": {...}}``;
    the lists hold at most ``limit`` households each (their totals count all): below-line
    households lowest income first, monitoring objects longest identified first, newly at-risk
    households (收入骤减、支出骤增 against the local thresholds) steepest income fall first.
    Each area also counts open problems by indicator and the age of the oldest. ``config``
    defaults to the stored monitoring configuration.

    Read from the maintained household rows with one ``GROUP BY`` (the same figures as
    :func:`recomputed_rollup`). Raises :class:`ValidationFailed` for a bad level or area and
    :class:`Forbidden` for an area outside the caller's.
    """
    query = IndicatorQuery(effective_area(principal, area), _check_level(level), round, limit)
    today = today or china_today()
    now = datetime.now(UTC)
    config = config or monitoring_config()
    _fresh_rows(query.area, today, config)
    digits = min(AREA_DIGITS[query.level], 12)
    round_key = query.round or NEWEST
    villages = store.village_counts(query.area, round_key)
    by_area: dict[str, list[AreaCounts]] = {}
    for village in villages:
        by_area.setdefault(village.area[:digits], []).append(village)
    counts = {key: _sum_counts(key, parts) for key, parts in by_area.items()}
    conflicts = _conflicts_by_area(query.area, digits)
    keys = sorted({*counts, *conflicts})
    areas = [
        _area_dict(counts.get(k) or _no_counts(k), conflicts.get(k, (0, None)), now, today)
        for k in keys
    ]
    whole = _sum_counts(query.area, villages)
    total = _area_dict(whole, _merged_conflicts(conflicts.values()), now, today)
    totals = {
        "below_line": whole.failing["income"],
        "monitoring_objects": whole.monitored,
        "newly_at_risk": whole.newly_at_risk,
    }
    lists = {}
    for which in store.LISTS:
        pictures = store.listed_pictures(query.area, round_key, which, query.limit, today)
        lists[which] = {
            "total": totals[which],
            "households": [_listed_plain(_shown_picture(p, today)) for p in pictures],
        }
    return {
        "area": query.area,
        "level": query.level,
        "round": query.round,
        "year": survey_year(query.round, today),
        "total": total,
        "areas": areas,
        **lists,
    }


_LISTED_KEYS = (
    "village_code",
    "household_no",
    "per_capita_income",
    "monitoring_line",
    "monitoring_category",
    "risk_removed",
    "identified_on",
    "days_since_identification",
    "open_problems",
    "round_change",
)


def _listed_plain(picture: dict[str, Any]) -> dict[str, Any]:
    return {key: picture.get(key) for key in _LISTED_KEYS}


def household_list(
    principal: Principal,
    *,
    area: str | None = None,
    round: str | None = None,
    problem: str | None = None,
    limit: int = 100,
    offset: int = 0,
    today: date | None = None,
    config: MonitoringConfig | None = None,
) -> dict[str, Any]:
    """Per-household pictures of the caller's area, optionally only those with ``problem``.

    Returns ``{"total", "households": [...]}`` (a page of ``limit`` from ``offset``, village
    code then household number order), read from the maintained rows. Raises
    :class:`ValidationFailed` for an unknown problem or bad area and :class:`Forbidden` for an
    area outside the caller's.
    """
    _check_problem(problem)
    scope = effective_area(principal, area)
    today = today or china_today()
    _fresh_rows(scope, today, config or monitoring_config())
    total, pictures = store.picture_page(scope, round or NEWEST, problem, limit, offset)
    return {"total": total, "households": [_shown_picture(p, today) for p in pictures]}


def trend(principal: Principal, *, area: str | None = None) -> list[dict[str, Any]]:
    """The caller's area round by round (in the order the rounds began): households and the
    failing count of each indicator. Raises as :func:`effective_area`."""
    scope = effective_area(principal, area)
    _fresh_rows(scope, china_today(), monitoring_config())
    out = []
    for r in store.round_counts(scope):
        counts = _sum_counts(scope, r.villages)
        out.append(
            {
                "round": r.round,
                "households": counts.households,
                "failing": dict(counts.failing),
                "decided": {k: counts.failing[k] + counts.passing[k] for k in PROBLEMS},
            }
        )
    return out
