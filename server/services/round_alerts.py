"""Round over round (收入骤减、支出骤增): each household of a round against its previous round.

For every household with records in the round, the run compares the round's picture with the
picture of the household's previous round (rounds in the order they began, as the dashboard
orders them): each 两不愁三保障 + 饮水安全 problem is *new*, *persisting*, *resolved* (failed
before, passes now) or *unchecked* (failed before, the round does not say); the newest
monitoring record is compared with the one before it (``forms.indicators.round_change``) under
the thresholds the configuration sets for the village's region and the round's year.

What becomes a task reason (a :class:`~server.services.task_reasons.HouseholdSignal`, source
``round``, codes in docs/round-alerts.md):

- ``income_drop`` / ``expense_rise`` for a household that is not a monitoring object;
- ``monitored_status_changed`` for a monitoring object whose category or risk removal changed,
  that has a new problem, or whose income fell / rigid expenses rose past the thresholds.

Runs are kept, never rewritten. A run is fingerprinted by the configuration it used and every
finding; running a round again with the same configuration over the same records finds the
stored run (nothing is sent twice), and anything else — a changed threshold, records that came
late — is stored as a new run beside the old one, whose findings stay as they were.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from forms.indicators import PROBLEM_KINDS, HouseholdIndicators, MonitoringConfig
from server.errors import NotFound, ValidationFailed
from server.services import indicators
from server.services.access import Actor
from server.services.context import ServiceContext
from server.services.monitoring import monitoring_config
from server.services.task_hookup import task_sink
from server.services.task_reasons import HouseholdKey, HouseholdSignal, TaskReason, TaskSink
from server.storage import indicators as records_store
from server.storage import round_alerts as store
from server.storage.database import writing
from server.storage.round_alerts import StoredFinding, StoredRun
from server.storage.types import utcnow

SOURCE = "round"
#: The reason codes a run can send (documented in docs/round-alerts.md). Never rename one.
INCOME_DROP = "income_drop"
EXPENSE_RISE = "expense_rise"
MONITORED_STATUS_CHANGED = "monitored_status_changed"
REASON_CODES = (INCOME_DROP, EXPENSE_RISE, MONITORED_STATUS_CHANGED)
#: How a problem of the previous round stands in this one.
CHANGE_KINDS = ("new", "persisting", "resolved", "unchecked")
PROBLEM_NAMES_ZH = {
    "housing": "住房安全",
    "water": "饮水安全",
    "education": "义务教育",
    "insurance": "基本医保",
    "income": "收入（监测线）",
}


def _passing(picture: HouseholdIndicators) -> set[str]:
    verdicts = {
        "housing": picture.housing_safe,
        "water": picture.water_safe,
        "education": None if picture.dropout_present is None else not picture.dropout_present,
        "insurance": picture.everyone_insured,
        "income": None if picture.income_below_line is None else not picture.income_below_line,
    }
    return {kind for kind, ok in verdicts.items() if ok is True}


def problem_changes(
    previous: HouseholdIndicators | None, current: HouseholdIndicators
) -> dict[str, list[str]]:
    """Problems new / persisting / resolved / unchecked in ``current`` against ``previous``
    (everything failing is new without a previous round); kinds in ``PROBLEM_KINDS`` order."""
    now = set(current.open_problems)
    before = set() if previous is None else set(previous.open_problems)
    passing = _passing(current)
    groups = {
        "new": now - before,
        "persisting": now & before,
        "resolved": (before - now) & passing,
        "unchecked": (before - now) - passing,
    }
    return {name: [k for k in PROBLEM_KINDS if k in kinds] for name, kinds in groups.items()}


def _round_label(round_: str | None) -> str:
    return round_ or "—"


def _reasons(
    *,
    round_: str,
    previous_round: str | None,
    before: indicators.HouseholdPicture | None,
    now: indicators.HouseholdPicture,
    changes: dict[str, list[str]],
    drop_percent: float | None,
    rise_percent: float | None,
) -> list[TaskReason]:
    change = now.change
    common = {"round": round_, "previous_round": previous_round}
    income = (
        {
            "income_change_percent": change.income_change_percent,
            "threshold_percent": drop_percent,
        }
        if change is not None and change.income_drop
        else None
    )
    expense = (
        {
            "expense_rise_percent": change.expense_rise_percent,
            "threshold_percent": rise_percent,
        }
        if change is not None and change.expense_rise
        else None
    )
    monitored = now.monitored or (before is not None and before.monitored)
    if not monitored:
        out = []
        if income is not None:
            out.append(
                TaskReason(
                    INCOME_DROP,
                    SOURCE,
                    f"收入骤减：人均纯收入比上一轮（{_round_label(previous_round)}）下降 "
                    f"{-change.income_change_percent:g}%，超过本地阈值 {drop_percent:g}%",  # type: ignore[union-attr]
                    f"Income drop: per-capita net income fell "
                    f"{-change.income_change_percent:g}% since round "  # type: ignore[union-attr]
                    f"{_round_label(previous_round)}, past the local {drop_percent:g}%",
                    {**common, **income},
                )
            )
        if expense is not None:
            out.append(
                TaskReason(
                    EXPENSE_RISE,
                    SOURCE,
                    f"支出骤增：刚性支出增加额达上一轮纯收入的 "
                    f"{change.expense_rise_percent:g}%，超过本地阈值 {rise_percent:g}%",  # type: ignore[union-attr]
                    f"Expense surge: rigid expenses rose by "
                    f"{change.expense_rise_percent:g}% of last round's net income, "  # type: ignore[union-attr]
                    f"past the local {rise_percent:g}%",
                    {**common, **expense},
                )
            )
        return out
    what: dict[str, Any] = {}
    zh: list[str] = []
    en: list[str] = []
    if before is not None:
        old, new = before.indicators, now.indicators
        if old.monitoring_category != new.monitoring_category:
            what["category"] = {"before": old.monitoring_category, "now": new.monitoring_category}
            zh.append(f"监测类别由“{old.monitoring_category}”变为“{new.monitoring_category}”")
            en.append("monitoring category changed")
        if old.risk_removed != new.risk_removed:
            what["risk_removed"] = {"before": old.risk_removed, "now": new.risk_removed}
            zh.append("风险消除状态改变")
            en.append("risk removal changed")
    if changes["new"] and before is not None:  # without a previous round nothing "changed"
        what["new_problems"] = changes["new"]
        zh.append("新增问题：" + "、".join(PROBLEM_NAMES_ZH[k] for k in changes["new"]))
        en.append("new problems: " + ", ".join(changes["new"]))
    if income is not None:
        what["income_drop"] = income
        zh.append(f"收入骤减 {-change.income_change_percent:g}%")  # type: ignore[union-attr]
        en.append("income drop")
    if expense is not None:
        what["expense_rise"] = expense
        zh.append(f"支出骤增 {change.expense_rise_percent:g}%")  # type: ignore[union-attr]
        en.append("expense surge")
    if not what:
        return []
    return [
        TaskReason(
            MONITORED_STATUS_CHANGED,
            SOURCE,
            "监测对象情况变化：" + "；".join(zh),
            "Monitoring object changed: " + "; ".join(en),
            {**common, "changes": what},
        )
    ]


@dataclass(frozen=True)
class _Finding:
    key: HouseholdKey
    previous_round: str | None
    monitored: bool
    income_change_percent: float | None
    expense_rise_percent: float | None
    changes: dict[str, list[str]]
    reasons: tuple[TaskReason, ...]

    @property
    def worth_keeping(self) -> bool:
        return bool(
            self.reasons
            or any(self.changes.values())
            or self.income_change_percent is not None
            or self.expense_rise_percent is not None
        )

    def row(self) -> dict[str, Any]:
        return {
            "village_code": self.key.village_code,
            "household_no": self.key.household_no,
            "previous_round": self.previous_round,
            "monitored": self.monitored,
            "income_change_percent": self.income_change_percent,
            "expense_rise_percent": self.expense_rise_percent,
            "problems": self.changes,
            "reasons": {"items": [r.to_dict() for r in self.reasons]},
        }


def _check_round(round_: object) -> str:
    if not isinstance(round_, str) or not round_.strip() or len(round_.strip()) > 40:
        raise ValidationFailed(
            en="round is the survey round's name (1-40 characters), e.g. 2026-11",
            zh="轮次应为1至40个字符的调查轮次名称，如 2026-11",
            details={"fields": {"round": ["1-40 characters"]}},
        )
    return round_.strip()


def _area_for(actor: Actor, area: str | None) -> str:
    area = (area or "").strip() or actor.area_prefix
    if not (area == "" or (area.isascii() and area.isdigit() and len(area) <= 12)):
        raise ValidationFailed(
            en="an area is a code prefix of up to 12 digits",
            zh="地区应为不超过12位的行政区划代码前缀",
            details={"fields": {"area": ["up to 12 digits"]}},
        )
    actor.require_area(area)
    return area


def _compare(
    round_: str, area: str, today: date, config: MonitoringConfig
) -> tuple[int, list[_Finding]]:
    seen = 0
    found: list[_Finding] = []
    year = indicators.survey_year(round_, today)
    for household in records_store.household_records(area):
        rounds = household.rounds()
        if round_ not in rounds:
            continue
        seen += 1
        index = rounds.index(round_)
        previous_round = rounds[index - 1] if index else None
        now = indicators.picture_of(household, round=round_, today=today, config=config)
        if now is None:  # cannot happen: the household has records in the round
            continue
        before = (
            None
            if previous_round is None
            else indicators.picture_of(household, round=previous_round, today=today, config=config)
        )
        changes = problem_changes(None if before is None else before.indicators, now.indicators)
        village = household.village_code
        reasons = _reasons(
            round_=round_,
            previous_round=previous_round,
            before=before,
            now=now,
            changes=changes,
            drop_percent=config.income_drop_percent(village, year),
            rise_percent=config.expense_rise_percent(village, year),
        )
        change = now.change
        found.append(
            _Finding(
                key=HouseholdKey(village, household.household_no),
                previous_round=previous_round,
                monitored=now.monitored or (before is not None and before.monitored),
                income_change_percent=None if change is None else change.income_change_percent,
                expense_rise_percent=None if change is None else change.expense_rise_percent,
                changes=changes,
                reasons=tuple(reasons),
            )
        )
    return seen, found


def _counts(seen: int, found: list[_Finding]) -> dict[str, Any]:
    problems = {kind: dict.fromkeys(CHANGE_KINDS, 0) for kind in PROBLEM_KINDS}
    reasons: Counter[str] = Counter()
    for finding in found:
        for name, kinds in finding.changes.items():
            for kind in kinds:
                problems[kind][name] += 1
        reasons.update(r.code for r in finding.reasons)
    return {
        "households": seen,
        "compared": sum(f.previous_round is not None for f in found),
        "problems": problems,
        "reasons": {code: reasons.get(code, 0) for code in REASON_CODES},
        "signals": sum(bool(f.reasons) for f in found),
    }


def _fingerprint(config_key: str, rows: list[dict[str, Any]]) -> str:
    text = json.dumps([config_key, rows], sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def run_to_dict(run: StoredRun) -> dict[str, Any]:
    """JSON-able form of a stored run: what it compared, under which thresholds, what it found."""
    return {
        "id": run.id,
        "round": run.round,
        "area": run.area_prefix,
        "config_key": run.config_key,
        "thresholds": {
            "income_drop_percents": run.config.get("income_drop_percents", {}),
            "expense_rise_percents": run.config.get("expense_rise_percents", {}),
        },
        "households": run.households,
        "signals": run.signals,
        "counts": run.counts,
        "run_by": run.run_by,
        "started_at": run.started_at.isoformat(),
    }


def finding_to_dict(finding: StoredFinding) -> dict[str, Any]:
    """JSON-able form of a stored finding."""
    return {
        "village_code": finding.village_code,
        "household_no": finding.household_no,
        "previous_round": finding.previous_round,
        "monitored": finding.monitored,
        "income_change_percent": finding.income_change_percent,
        "expense_rise_percent": finding.expense_rise_percent,
        "problems": finding.problems,
        "reasons": finding.reasons.get("items", []),
    }


def run_round_alerts(
    round: str,
    *,
    actor: Actor,
    area: str | None = None,
    sink: TaskSink | None = None,
    ctx: ServiceContext | None = None,
    today: date | None = None,
    config: MonitoringConfig | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Compare every household of ``round`` (under ``area``, default the actor's area) with its
    previous round; store the run and its findings and hand the signals to ``sink`` (default:
    the task service, :func:`server.services.task_hookup.task_sink`) in one transaction; audited.

    Returns ``{"created": bool, "run": {...}}``: ``created`` is False when the same round, area,
    configuration and findings were stored before (that run is returned, nothing is sent).
    Raises :class:`ValidationFailed` for a bad round or area, :class:`Forbidden` for an area
    outside the actor's and :class:`NotFound` (``round_not_found``) when no household of the
    area has a record in the round.
    """
    round_ = _check_round(round)
    scope = _area_for(actor, area)
    today = today or indicators.china_today()
    config = config or monitoring_config()
    key = indicators.config_key(config)
    with writing():
        seen, found = _compare(round_, scope, today, config)
        if not seen:
            raise NotFound(
                en=f"no household under {scope or 'the county'} has a record in round {round_}",
                zh=f"{scope or '本县'}没有轮次 {round_} 的记录",
                code="round_not_found",
            )
        kept = [f for f in found if f.worth_keeping]
        rows = [f.row() for f in kept]
        fingerprint = _fingerprint(key, rows)
        existing = store.find_run(round_, scope, fingerprint)
        if existing is not None:
            return {"created": False, "run": run_to_dict(existing)}
        signals = [HouseholdSignal(f.key, f.reasons) for f in found if f.reasons]
        counts = _counts(seen, found)
        stored = store.add_run(
            round=round_,
            area_prefix=scope,
            config_key=key,
            findings_key=fingerprint,
            config=config.to_mapping(),
            counts=counts,
            households=seen,
            signals=len(signals),
            run_by=actor.name,
            started_at=now or utcnow(),
            findings=rows,
        )
        if sink is None:
            if ctx is None:
                raise TypeError("run_round_alerts needs the service context or a sink")
            sink = task_sink(ctx, actor)
        sink(signals, origin=f"round:{round_}:run-{stored.id}")
        actor.audit(
            "round_alerts.run",
            target_type="round_alert_run",
            target_id=str(stored.id),
            area_code=scope,
            details={"round": round_, "config_key": key, "signals": len(signals)},
        )
    return {"created": True, "run": run_to_dict(stored)}


def list_runs(actor: Actor, *, round: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Stored runs over areas inside the actor's (newest first), of one ``round`` when given."""
    return [run_to_dict(r) for r in store.runs(actor.area_prefix, round, limit)]


def run_detail(actor: Actor, run_id: int) -> dict[str, Any]:
    """A stored run with its findings (those inside the actor's area).

    Raises :class:`NotFound` (``round_alert_run_not_found``) for an unknown run or one over an
    area outside the actor's.
    """
    found = store.run(run_id)
    if found is None or not (
        found.area_prefix.startswith(actor.area_prefix)
        or actor.area_prefix.startswith(found.area_prefix)
    ):
        raise NotFound(
            en=f"no round-alert run {run_id} in your area",
            zh=f"您的管辖范围内没有比对运行 {run_id}",
            code="round_alert_run_not_found",
        )
    area = max(found.area_prefix, actor.area_prefix, key=len)
    return {
        **run_to_dict(found),
        "findings": [finding_to_dict(f) for f in store.findings(run_id, area)],
    }
