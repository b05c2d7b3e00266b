"""Derived indicators of one household: 两不愁三保障 plus drinking water.

Pure functions over validated record data (contracts §3), so a tablet and the county server that
hold the same records compute the same picture. Nothing here reads a clock or the environment:
dates and the county's configuration come in as arguments.

Each indicator is three-valued where the data can be incomplete: ``True``/``False`` when the
criteria decide, ``None`` when a value the criteria need is missing (a county counts those as
"not yet surveyed", never as safe).

The criteria are DOMAIN.md's: housing (建村函〔2019〕200号 appraisal grades), drinking water
(T/CHES 18-2018: quantity, quality, convenience, reliability — safe only if all four pass),
compulsory education (ages 6-16 at 1 September of the school year), basic medical insurance
(exactly one of resident or employee insurance) and per-capita net income against the monitoring
line that each province sets every year.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from forms.errors import FormsError
from forms.expressions import EvaluationContext
from forms.household import check_household
from forms.housing import HousingResult, housing_indicator
from forms.identity import (
    IdNumberError,
    age_on,
    normalize_id_number,
    parse_id_number,
    school_year_reference,
)
from forms.instruments import (
    EDUCATION,
    HOUSING,
    INSURANCE,
    MONITORING,
    ROSTER,
    WATER,
    load_builtin,
)
from forms.validation import validate_record

__all__ = [
    "AREA_DIGITS",
    "DEFAULT_WATER_REGION_TYPE",
    "PROBLEM_KINDS",
    "RIGID_EXPENSE_FIELDS",
    "WATER_QUANTITY_THRESHOLDS",
    "WATER_REGION_TYPES",
    "AreaSummary",
    "Dropout",
    "EducationResult",
    "HouseholdIndicators",
    "HousingResult",
    "IncomeResult",
    "IndicatorLevelError",
    "InsuranceResult",
    "MonitoringConfig",
    "MonitoringConfigError",
    "ProblemSpan",
    "RoundChange",
    "UninsuredMember",
    "WaterResult",
    "education_indicator",
    "household_indicators",
    "housing_indicator",
    "income_indicator",
    "insurance_indicator",
    "monitoring_consistency",
    "problem_spans",
    "round_change",
    "summarize",
    "water_indicator",
]

WaterRegionType = Literal["water_rich", "water_short"]
#: Region types a county may configure; water-short means < 1,000 m³ water resources per person/year.
WATER_REGION_TYPES: tuple[str, ...] = ("water_rich", "water_short")
#: Without configuration a village is treated as water-rich: the stricter 35 L threshold, so a
#: missing setting can hide no problem.
DEFAULT_WATER_REGION_TYPE: WaterRegionType = "water_rich"
#: Litres per person per day that count as enough water (T/CHES 18-2018).
WATER_QUANTITY_THRESHOLDS: Mapping[str, int] = {"water_rich": 35, "water_short": 20}
CARRY_MINUTES_MAX = 20  # round trip
CARRY_DISTANCE_MAX_M = 800  # horizontal
CARRY_VERTICAL_MAX_M = 80
INTERRUPTION_DAYS_MAX = 36  # ≈ 90 % guarantee
SCHOOL_AGE_MIN, SCHOOL_AGE_MAX = 6, 16

PIPED_INTO_HOME = "集中供水入户"
INCOME_ITEMS = ("wage_income", "business_income", "property_income", "transfer_income")
CENT = Decimal("0.01")


class MonitoringConfigError(FormsError, ValueError):
    """A monitoring configuration that cannot be used (bad prefix, year, line or region type)."""

    code = "monitoring_config_invalid"
    default_message = "the monitoring configuration is invalid"
    default_message_zh = "监测配置无效"


def _config_error(message: str, message_zh: str) -> MonitoringConfigError:
    return MonitoringConfigError(message=message, message_zh=message_zh)


def _check_prefix(prefix: object) -> str:
    if not (
        isinstance(prefix, str) and 1 <= len(prefix) <= 12 and prefix.isascii() and prefix.isdigit()
    ):
        raise _config_error(
            f"a region prefix is 1-12 digits, got {prefix!r}",
            f"地区代码前缀应为1至12位数字：{prefix!r}",
        )
    return prefix


def _check_year(year: object) -> int:
    if isinstance(year, str) and year.isdigit():
        year = int(year)
    if not isinstance(year, int) or isinstance(year, bool) or not 2000 <= year <= 2100:
        raise _config_error(
            f"a year is 2000-2100, got {year!r}", f"年份应在2000至2100之间：{year!r}"
        )
    return year


def _check_line(line: object) -> float:
    if isinstance(line, bool) or not isinstance(line, int | float) or not 0 < line < 1_000_000:
        raise _config_error(
            f"a monitoring line is a positive amount in yuan, got {line!r}",
            f"监测收入标准应为正数（元）：{line!r}",
        )
    return float(line)


def _check_percent(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1000:
        raise _config_error(
            f"a threshold is a percentage above 0, got {value!r}",
            f"阈值应为大于0的百分比：{value!r}",
        )
    return float(value)


def _check_region_type(value: object) -> WaterRegionType:
    if value not in WATER_REGION_TYPES:
        raise _config_error(
            f"a water region type is one of {', '.join(WATER_REGION_TYPES)}, got {value!r}",
            f"水资源分区应为 water_rich（丰水）或 water_short（缺水）：{value!r}",
        )
    return value  # type: ignore[return-value]


def _year_table(
    name: str, raw: object, check: Callable[[object], float]
) -> dict[str, dict[int, float]]:
    """Check a ``{prefix: {year: value}}`` table (year keys may be strings, as in JSON)."""
    if not isinstance(raw, Mapping) or not all(isinstance(v, Mapping) for v in raw.values()):
        raise _config_error(
            f"{name} maps a region prefix to {{year: value}}",
            f"{name} 应为“地区前缀 → {{年份: 数值}}”",
        )
    return {
        _check_prefix(prefix): {_check_year(y): check(v) for y, v in years.items()}
        for prefix, years in raw.items()
    }


def _longest_prefix(code: str, prefixes: Iterable[str]) -> list[str]:
    """Prefixes of ``code`` among ``prefixes``, longest first (none for a missing code)."""
    if not isinstance(code, str):
        return []
    return sorted((p for p in prefixes if code.startswith(p)), key=len, reverse=True)


def _lookup(table: Mapping[str, Mapping[int, float]], code: str, year: int) -> float | None:
    """Longest matching prefix with a value for ``year`` or, failing that, an earlier year."""
    for prefix in _longest_prefix(code, table):
        years = [y for y in table[prefix] if y <= year]
        if years:
            return table[prefix][max(years)]
    return None


_YEAR_TABLES = ("monitoring_lines", "income_drop_percents", "expense_rise_percents")
#: Year tables of yuan amounts that department cross-checks compare with (issue 17).
_AMOUNT_TABLES = ("medical_out_of_pocket_yuan",)


@dataclass(frozen=True)
class MonitoringConfig:
    """The county's local settings the indicators depend on.

    ``monitoring_lines`` maps a region-code prefix to ``{year: yuan per person per year}``, e.g.
    ``{"53": {2025: 8700}}`` (Yunnan, 2025). The longest prefix of a village code that has a line
    for the year (or, until the new line is published, the latest earlier year) wins, so a county
    that uses twice its dibao line overrides its province. ``water_region_types`` maps a prefix
    to ``"water_rich"`` or ``"water_short"``, longest prefix wins. ``income_drop_percents`` and
    ``expense_rise_percents`` (same shape as the lines) are the local thresholds of the change
    between rounds (收入骤减、支出骤增, see ``round_change``). ``medical_out_of_pocket_yuan`` (same
    shape, yuan) is the medical out-of-pocket amount on the 医保 list above which an unmonitored
    household gets a home check (department cross-checks, ``docs/department-data.md``).

    Defaults: no monitoring line (income is then reported but never judged against a line), no
    change thresholds (changes are reported, never flagged) and ``water_rich`` (the stricter
    35 L/person/day) where no region type is configured.

    Raises ``MonitoringConfigError`` (from the constructor) for a bad prefix, year or value.
    """

    monitoring_lines: Mapping[str, Mapping[int, float]] = field(default_factory=dict)
    water_region_types: Mapping[str, str] = field(default_factory=dict)
    default_monitoring_line: float | None = None
    default_water_region_type: str = DEFAULT_WATER_REGION_TYPE
    income_drop_percents: Mapping[str, Mapping[int, float]] = field(default_factory=dict)
    expense_rise_percents: Mapping[str, Mapping[int, float]] = field(default_factory=dict)
    medical_out_of_pocket_yuan: Mapping[str, Mapping[int, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "monitoring_lines",
            _year_table("monitoring_lines", self.monitoring_lines, _check_line),
        )
        for name in _YEAR_TABLES[1:]:
            object.__setattr__(self, name, _year_table(name, getattr(self, name), _check_percent))
        for name in _AMOUNT_TABLES:
            object.__setattr__(self, name, _year_table(name, getattr(self, name), _check_line))
        if not isinstance(self.water_region_types, Mapping):
            raise _config_error(
                "water_region_types maps a region prefix to a region type",
                "water_region_types 应为“地区前缀 → 分区类型”",
            )
        regions = {
            _check_prefix(prefix): _check_region_type(kind)
            for prefix, kind in self.water_region_types.items()
        }
        object.__setattr__(self, "water_region_types", regions)
        if self.default_monitoring_line is not None:
            object.__setattr__(
                self, "default_monitoring_line", _check_line(self.default_monitoring_line)
            )
        _check_region_type(self.default_water_region_type)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> MonitoringConfig:
        """Build from the JSON shape ``to_mapping`` writes (year keys may be strings).

        Raises ``MonitoringConfigError`` for an unknown key or a bad prefix, year, value or type.
        """
        if not isinstance(raw, Mapping):
            raise _config_error("the monitoring settings are an object", "监测配置应为对象")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise _config_error(
                f"unknown monitoring settings: {', '.join(sorted(unknown))}",
                f"未知的监测配置项：{', '.join(sorted(unknown))}",
            )
        return cls(
            **{
                name: raw.get(name) or {}
                for name in (*_YEAR_TABLES, *_AMOUNT_TABLES, "water_region_types")
            },
            default_monitoring_line=raw.get("default_monitoring_line"),
            default_water_region_type=raw.get(
                "default_water_region_type", DEFAULT_WATER_REGION_TYPE
            ),
        )

    def to_mapping(self) -> dict[str, Any]:
        """JSON-able form (year keys as strings); ``from_mapping`` reads it back unchanged."""
        out: dict[str, Any] = {
            name: {
                prefix: {str(year): value for year, value in sorted(years.items())}
                for prefix, years in sorted(getattr(self, name).items())
            }
            for name in _YEAR_TABLES
        }
        for name in _AMOUNT_TABLES:
            # Only when set: a configuration without it keeps the mapping (and its key) it had.
            if getattr(self, name):
                out[name] = {
                    prefix: {str(year): value for year, value in sorted(years.items())}
                    for prefix, years in sorted(getattr(self, name).items())
                }
        out["water_region_types"] = dict(sorted(self.water_region_types.items()))
        out["default_monitoring_line"] = self.default_monitoring_line
        out["default_water_region_type"] = self.default_water_region_type
        return out

    def monitoring_line(self, village_code: str, year: int) -> float | None:
        """The per-capita income line (yuan/year) for a village in a year, or None if unset."""
        line = _lookup(self.monitoring_lines, village_code, year)
        return self.default_monitoring_line if line is None else line

    def income_drop_percent(self, village_code: str, year: int) -> float | None:
        """The per-capita income fall (percent of last round) that flags a household, or None."""
        return _lookup(self.income_drop_percents, village_code, year)

    def expense_rise_percent(self, village_code: str, year: int) -> float | None:
        """The rigid-expense rise (percent of last round's net income) that flags, or None."""
        return _lookup(self.expense_rise_percents, village_code, year)

    def medical_out_of_pocket_threshold(self, village_code: str, year: int) -> float | None:
        """The 医保 out-of-pocket amount (yuan) above which an unmonitored household is checked."""
        return _lookup(self.medical_out_of_pocket_yuan, village_code, year)

    def water_region_type(self, village_code: str) -> str:
        """``"water_rich"`` or ``"water_short"`` for a village (longest prefix, else the default)."""
        for prefix in _longest_prefix(village_code, self.water_region_types):
            return self.water_region_types[prefix]
        return self.default_water_region_type

    def evaluation_config(self, village_code: str, year: int) -> dict[str, Any]:
        """The values the instruments read through ``config('…')`` for one village and year.

        Keys: ``monitoring_line`` (omitted when unset) and ``water_region_type``.
        """
        values: dict[str, Any] = {"water_region_type": self.water_region_type(village_code)}
        line = self.monitoring_line(village_code, year)
        if line is not None:
            values["monitoring_line"] = line
        return values


# --- value helpers --------------------------------------------------------------------------------


#: Larger amounts are typing accidents, not money; treated as unknown rather than overflowing.
_MAX_AMOUNT = 1e12


def _number(value: Any) -> float | None:
    """A finite number within ±1e12 as float; anything else (text, NaN, 1e26) is unknown."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    # abs() first: math.isfinite() cannot even convert an int beyond the float range.
    if abs(value) > _MAX_AMOUNT or not math.isfinite(value):
        return None
    return float(value)


def _money(value: Any) -> Decimal | None:
    number = _number(value)
    return None if number is None else Decimal(repr(number))


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == []


def _rows(data: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    rows = data.get(name)
    if not isinstance(rows, list):
        return []
    return [row for row in rows if isinstance(row, Mapping)]


def _three_valued(verdicts: Iterable[bool | None]) -> bool | None:
    """False if any verdict fails, else None if any is unknown, else True."""
    values = list(verdicts)
    if any(v is False for v in values):
        return False
    if any(v is None for v in values):
        return None
    return True


# --- drinking water -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WaterResult:
    """Drinking-water safety: safe only if all four indicators pass.

    ``failed`` lists the failed indicators in the fixed order quantity, quality, convenience,
    reliability; ``unknown`` those the record cannot decide (a value missing). ``warnings``:
    ``region_type_unknown`` when the region type was neither ``water_rich`` nor ``water_short``
    (the stricter water-rich threshold was used, as the instrument does).
    """

    safe: bool | None
    failed: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "safe": self.safe,
            "failed": list(self.failed),
            "unknown": list(self.unknown),
            "warnings": list(self.warnings),
        }


def _at_most(value: Any, limit: float) -> bool | None:
    number = _number(value)
    return None if number is None else number <= limit


def water_indicator(data: Mapping[str, Any] | None, region_type: str) -> WaterResult:
    """Judge a ``drinking_water`` record against T/CHES 18-2018 for the village's region type.

    Quantity: litres per person per day ≥ 35 (``water_rich``) or ≥ 20 (``water_short``).
    Quality: the recorded pass/fail. Convenience: passes when piped into the home, else when the
    round trip takes ≤ 20 min, or the water is ≤ 800 m away horizontally or ≤ 80 m vertically.
    Reliability: ≤ 36 days of interruption or shortage a year.

    Any other region type (a configuration typo such as ``water-short``) is judged with the
    stricter water-rich threshold and reported in ``warnings`` — the same rule as the
    ``drinking_water`` instrument, whose check ``region_type_unknown`` warns on the record.
    """
    warnings: list[str] = []
    if region_type not in WATER_REGION_TYPES:
        warnings.append("region_type_unknown")
        region_type = "water_rich"
    threshold = WATER_QUANTITY_THRESHOLDS[region_type]  # type: ignore[index]
    if not data:
        return WaterResult(
            None, [], ["quantity", "quality", "convenience", "reliability"], warnings
        )
    litres = _number(data.get("litres_per_person_day"))
    quality = data.get("quality_ok")
    if data.get("supply_type") == PIPED_INTO_HOME:
        convenience: bool | None = True
    else:
        measures = [
            _at_most(data.get("carry_minutes"), CARRY_MINUTES_MAX),
            _at_most(data.get("carry_distance_m"), CARRY_DISTANCE_MAX_M),
            _at_most(data.get("carry_vertical_m"), CARRY_VERTICAL_MAX_M),
        ]
        # Any one measure within its limit is enough (the criteria say "or").
        if any(m is True for m in measures):
            convenience = True
        elif any(m is False for m in measures):
            convenience = False
        else:
            convenience = None
    verdicts: dict[str, bool | None] = {
        "quantity": None if litres is None else litres >= threshold,
        "quality": quality if isinstance(quality, bool) else None,
        "convenience": convenience,
        "reliability": _at_most(data.get("interruption_days"), INTERRUPTION_DAYS_MAX),
    }
    return WaterResult(
        safe=_three_valued(verdicts.values()),
        failed=[name for name, ok in verdicts.items() if ok is False],
        unknown=[name for name, ok in verdicts.items() if ok is None],
        warnings=warnings,
    )


# --- compulsory education -------------------------------------------------------------------------


@dataclass(frozen=True)
class Dropout:
    """A school-age child not in school (row id and name identify them; no ID number)."""

    row_id: str | None
    name: str | None
    age: int
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EducationResult:
    """Whether any child aged 6-16 (at 1 September of the school year) is out of school.

    ``unknown_age`` counts rows whose age cannot be computed (invalid or missing ID number).
    ``dropout_present`` is ``None`` (unknown, never counted as safe) when no dropout was found
    but some child's age is unknown: that child may be of school age and out of school.
    """

    dropout_present: bool | None
    dropouts: list[Dropout] = field(default_factory=list)
    school_age_children: int = 0
    unknown_age: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "dropout_present": self.dropout_present,
            "dropouts": [d.to_dict() for d in self.dropouts],
            "school_age_children": self.school_age_children,
            "unknown_age": self.unknown_age,
        }


def school_age(id_number: Any, on: date) -> int | None:
    """Age on 1 September of the school year containing ``on``, from an ID number; None if invalid."""
    if not isinstance(id_number, str | int):
        return None
    try:
        info = parse_id_number(id_number, today=on)
    except IdNumberError:
        return None
    return age_on(info.birth_date, school_year_reference(on))


def _iso_date(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def education_indicator(data: Mapping[str, Any] | None, on: date) -> EducationResult:
    """Find the dropouts of a ``compulsory_education`` record.

    A child counts when their age at 1 September of the school year is 6-16; such a child with no
    current schooling has dropped out. The school year is the one containing the record's
    ``survey_date`` — the form computes ages the same way — or, for a record without one, ``on``.
    """
    if not data:
        return EducationResult(False)
    on = _iso_date(data.get("survey_date")) or on
    dropouts: list[Dropout] = []
    in_school_age = unknown = 0
    for row in _rows(data, "children"):
        age = school_age(row.get("id_number"), on)
        if age is None:
            unknown += 1
            continue
        if not SCHOOL_AGE_MIN <= age <= SCHOOL_AGE_MAX:
            continue
        in_school_age += 1
        if _empty(row.get("schooling")):
            dropouts.append(
                Dropout(row.get("_id"), row.get("name"), age, row.get("dropout_reason"))
            )
    present: bool | None = True if dropouts else (None if unknown else False)
    return EducationResult(present, dropouts, in_school_age, unknown)


# --- medical insurance ----------------------------------------------------------------------------


@dataclass(frozen=True)
class UninsuredMember:
    """A member without exactly one basic medical insurance.

    ``problem``: ``uninsured`` (neither), ``insured_twice`` (both) or ``not_listed`` (in the
    roster but absent from the insurance record).
    """

    row_id: str | None
    name: str | None
    problem: Literal["uninsured", "insured_twice", "not_listed"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class InsuranceResult:
    """Whether every member has basic medical insurance.

    ``uninsured`` lists members with no basic insurance or not listed at all; members insured
    twice are covered (``everyone_insured`` is about coverage) but listed for correction.
    """

    everyone_insured: bool
    uninsured: list[UninsuredMember] = field(default_factory=list)
    insured_twice: list[UninsuredMember] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "everyone_insured": self.everyone_insured,
            "uninsured": [m.to_dict() for m in self.uninsured],
            "insured_twice": [m.to_dict() for m in self.insured_twice],
        }


def insurance_indicator(data: Mapping[str, Any] | None) -> InsuranceResult:
    """Judge a ``medical_insurance`` record: each member in resident or employee insurance."""
    uninsured: list[UninsuredMember] = []
    twice: list[UninsuredMember] = []
    for row in _rows(data or {}, "members"):
        resident = row.get("resident_insurance") is True
        employee = row.get("employee_insurance") is True
        if resident and employee:
            twice.append(UninsuredMember(row.get("_id"), row.get("name"), "insured_twice"))
        elif not (resident or employee):
            uninsured.append(UninsuredMember(row.get("_id"), row.get("name"), "uninsured"))
    return InsuranceResult(not uninsured, uninsured, twice)


# --- income ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IncomeResult:
    """Net and per-capita net income (yuan/year, 2 decimals) and whether it is below the line.

    ``below_line`` is None when the line or the per-capita income is unknown.
    """

    net: float | None
    per_capita: float | None
    below_line: bool | None
    line: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return dataclasses.asdict(self)


def income_indicator(
    data: Mapping[str, Any] | None, line: float | None, *, members: int | None = None
) -> IncomeResult:
    """Net income = wages + business + property + transfers − production costs (DOMAIN.md §5);
    per capita = net ÷ ``member_count`` (or ``members`` when the record has none).

    Money is summed in decimal and rounded half-up to the fen, so every device agrees to the fen.
    Net is None when no income item is recorded; missing items among recorded ones count as 0.
    """
    if not data:
        return IncomeResult(None, None, None, line)
    items = [_money(data.get(name)) for name in INCOME_ITEMS]
    if all(item is None for item in items):
        return IncomeResult(None, None, None, line)
    costs = _money(data.get("production_costs")) or Decimal(0)
    net = sum((item for item in items if item is not None), Decimal(0)) - costs
    count = data.get("member_count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        count = members if members and members > 0 else None
    per_capita = None if count is None else (net / count).quantize(CENT, ROUND_HALF_UP)
    below = None if per_capita is None or line is None else per_capita < Decimal(repr(line))
    return IncomeResult(
        float(net.quantize(CENT, ROUND_HALF_UP)),
        None if per_capita is None else float(per_capita),
        below,
        line,
    )


# --- the household picture ------------------------------------------------------------------------


@dataclass(frozen=True)
class HouseholdIndicators:
    """两不愁三保障 + drinking water of one household in one year.

    A field is None when the instrument it comes from is missing (or cannot decide).
    ``open_problems`` names the failed indicators (``housing``, ``water``, ``education``,
    ``insurance``, ``income``), the list a county drives to zero; ``all_assured`` is True only
    when every indicator is known and passes.
    """

    village_code: str
    year: int
    housing_safe: bool | None
    housing_reason: str | None
    water_safe: bool | None
    water_failed: list[str]
    water_region_type: str
    dropout_present: bool | None
    dropouts: list[Dropout]
    everyone_insured: bool | None
    uninsured: list[UninsuredMember]
    net_income: float | None
    per_capita_income: float | None
    monitoring_line: float | None
    income_below_line: bool | None
    monitoring_category: str | None
    risk_removed: bool | None
    open_problems: list[str]
    all_assured: bool | None
    #: Children of the education record whose age cannot be computed (empty or invalid ID).
    unknown_age: int = 0
    #: Whether the monitoring category, risks and removal agree with the household's other
    #: records and the monitoring rules (None without a monitoring record with a category);
    #: ``category_reasons`` names the failed rules (see :func:`monitoring_consistency`).
    category_consistent: bool | None = None
    category_reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (dates none; lists of plain dicts)."""
        out = dataclasses.asdict(self)
        out["dropouts"] = [d.to_dict() for d in self.dropouts]
        out["uninsured"] = [m.to_dict() for m in self.uninsured]
        return out


def _roster_members(roster: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    return _rows(roster or {}, "members")


def _canonical_id(value: Any) -> str | None:
    """The ID number as normalised text (first 18 characters), None when empty or unreadable.

    Only the spelling is normalised (no date check), so no clock is read.
    """
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    try:
        return normalize_id_number(value)[:18]
    except IdNumberError:
        return None


def household_indicators(
    records: Mapping[str, Mapping[str, Any] | None],
    village_code: str,
    year: int,
    config: MonitoringConfig,
    *,
    on: date | None = None,
) -> HouseholdIndicators:
    """Compute the household's picture from its records, keyed by form id.

    ``on`` dates the education check of a record without a ``survey_date`` (school age at
    1 September of the school year containing it); the default, 1 September of ``year``, fits an
    annual check made in the autumn.
    The roster, when present, completes the others: members absent from the insurance record
    count as uninsured, and its member count stands in for a monitoring record without one.
    A record that is not an object (text, a number, a list) counts as absent; a ``village_code``
    of None matches no configured prefix, so the defaults apply.
    """
    records = {k: v for k, v in records.items() if isinstance(v, Mapping)}
    roster = records.get(ROSTER)
    housing_data = records.get(HOUSING)
    water_data = records.get(WATER)
    education_data = records.get(EDUCATION)
    insurance_data = records.get(INSURANCE)
    monitoring = records.get(MONITORING)

    housing = housing_indicator(housing_data) if housing_data else None
    region = config.water_region_type(village_code)
    water = water_indicator(water_data, region) if water_data else None
    education = (
        education_indicator(education_data, on or date(year, 9, 1)) if education_data else None
    )

    insurance: InsuranceResult | None = None
    if insurance_data:
        insurance = insurance_indicator(insurance_data)
        listed = {_canonical_id(r.get("id_number")) for r in _rows(insurance_data, "members")}
        missing = [
            UninsuredMember(r.get("_id"), r.get("name"), "not_listed")
            for r in _roster_members(roster)
            if _canonical_id(r.get("id_number")) not in listed
        ]
        if missing:
            insurance = InsuranceResult(
                False, [*insurance.uninsured, *missing], insurance.insured_twice
            )

    line = config.monitoring_line(village_code, year)
    roster_size = len(_roster_members(roster)) or None
    income = income_indicator(monitoring, line, members=roster_size) if monitoring else None

    consistent, reasons = monitoring_consistency(records, village_code, year, config, on=on)
    verdicts = {
        "housing": None if housing is None else housing.safe,
        "water": None if water is None else water.safe,
        "education": (
            None
            if education is None or education.dropout_present is None
            else not education.dropout_present
        ),
        "insurance": None if insurance is None else insurance.everyone_insured,
        "income": None if income is None or income.below_line is None else not income.below_line,
    }
    return HouseholdIndicators(
        village_code=village_code,
        year=year,
        housing_safe=verdicts["housing"],
        housing_reason=None if housing is None else housing.reason,
        water_safe=verdicts["water"],
        water_failed=[] if water is None else list(water.failed),
        water_region_type=region,
        dropout_present=None if education is None else education.dropout_present,
        dropouts=[] if education is None else list(education.dropouts),
        everyone_insured=verdicts["insurance"],
        uninsured=[] if insurance is None else list(insurance.uninsured),
        net_income=None if income is None else income.net,
        per_capita_income=None if income is None else income.per_capita,
        monitoring_line=line,
        income_below_line=None if income is None else income.below_line,
        monitoring_category=(monitoring or {}).get("category"),
        risk_removed=(monitoring or {}).get("risk_removed"),
        open_problems=[name for name, ok in verdicts.items() if ok is False],
        all_assured=_three_valued(verdicts.values()),
        unknown_age=0 if education is None else education.unknown_age,
        category_consistent=consistent,
        category_reasons=reasons,
    )


def monitoring_consistency(
    records: Mapping[str, Mapping[str, Any] | None],
    village_code: str,
    year: int,
    config: MonitoringConfig,
    *,
    on: date | None = None,
) -> tuple[bool | None, list[str]]:
    """Whether a household's monitoring category is consistent, and the rules it breaks.

    Not a second set of rules: the verdict is made of the *errors* of the rules that already
    guard the monitoring record — the household cross-checks of ``forms.household`` that point
    at it (缺劳动力 while members can work, 务工就业不稳 while nobody can, a household unable to
    work marked removed, 脱贫不稳定户 of a household the roster calls 普通农户) and the checks of
    the built-in ``monitoring_household`` instrument (e.g. 帮扶消除 below the monitoring line of
    ``config`` for the village and year). Returns ``(None, [])`` without a monitoring record
    that names a category, else ``(True, [])`` or ``(False, [rule ids])``. ``on`` dates the
    checks (default: 1 September of ``year``).
    """
    monitoring = records.get(MONITORING)
    if not isinstance(monitoring, Mapping) or _empty(monitoring.get("category")):
        return None, []
    when = on or date(year, 9, 1)
    reasons = [
        issue.check_id or issue.code
        for issue in check_household(records, village_code=village_code, today=when)
        if issue.form_id == MONITORING and issue.severity == "error"
    ]
    context = EvaluationContext(today=when, config=config.evaluation_config(village_code, year))
    checked = validate_record(load_builtin(MONITORING), monitoring, context)
    reasons += [i.check_id for i in checked.errors if i.code == "check" and i.check_id]
    return not reasons, reasons


# --- change between rounds (收入骤减、支出骤增) -------------------------------------------------------

#: Rigid expenses the monitoring instrument records. Schooling costs and disaster repair join
#: this tuple when a later version of the instrument records them as fields.
RIGID_EXPENSE_FIELDS: tuple[str, ...] = ("medical_out_of_pocket",)


@dataclass(frozen=True)
class RoundChange:
    """How a household changed since its previous monitoring round.

    ``income_change_percent``: per-capita net income now against last round (negative = fall).
    ``expense_rise_percent``: the rise of rigid expenses as a percentage of last round's net
    income. ``income_drop`` / ``expense_rise`` say whether the local threshold is reached; None
    when a threshold or a figure is missing.
    """

    income_change_percent: float | None
    expense_rise_percent: float | None
    income_drop: bool | None
    expense_rise: bool | None

    @property
    def flagged(self) -> bool:
        """True when either change calls for a home check."""
        return bool(self.income_drop or self.expense_rise)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {**dataclasses.asdict(self), "flagged": self.flagged}


def _rigid_expenses(data: Mapping[str, Any]) -> Decimal | None:
    amounts = [_money(data.get(name)) for name in RIGID_EXPENSE_FIELDS]
    if all(a is None for a in amounts):
        return None
    return sum((a for a in amounts if a is not None), Decimal(0))


def _percent(part: Decimal, whole: Decimal) -> float:
    return float((part * 100 / whole).quantize(CENT, ROUND_HALF_UP))


def round_change(
    previous: Mapping[str, Any] | None,
    current: Mapping[str, Any] | None,
    *,
    income_drop_percent: float | None,
    expense_rise_percent: float | None,
) -> RoundChange:
    """Compare two ``monitoring_household`` records of one household (DOMAIN.md, 收入骤减、支出骤增).

    Per-capita net income falling by at least ``income_drop_percent`` of last round's, or rigid
    expenses rising by at least ``expense_rise_percent`` of last round's net income, flags the
    household for a home check. Both thresholds are local: look them up with
    ``MonitoringConfig.income_drop_percent`` / ``expense_rise_percent``.
    """
    if not previous or not current:
        return RoundChange(None, None, None, None)
    before, after = income_indicator(previous, None), income_indicator(current, None)
    income_change: float | None = None
    if before.per_capita is not None and after.per_capita is not None and before.per_capita > 0:
        old = Decimal(repr(before.per_capita))
        income_change = _percent(Decimal(repr(after.per_capita)) - old, old)
    expense_change: float | None = None
    old_rigid, new_rigid = _rigid_expenses(previous), _rigid_expenses(current)
    if before.net is not None and before.net > 0 and new_rigid is not None:
        expense_change = _percent(new_rigid - (old_rigid or Decimal(0)), Decimal(repr(before.net)))
    return RoundChange(
        income_change_percent=income_change,
        expense_rise_percent=expense_change,
        income_drop=None
        if income_change is None or income_drop_percent is None
        else -income_change >= income_drop_percent,
        expense_rise=None
        if expense_change is None or expense_rise_percent is None
        else expense_change >= expense_rise_percent,
    )


# --- roll-up by area ------------------------------------------------------------------------------

#: Code-prefix lengths of the administrative levels a county rolls up to.
AREA_DIGITS: Mapping[str, int] = {
    "province": 2,
    "prefecture": 4,
    "county": 6,
    "township": 9,
    "village": 12,
}


class IndicatorLevelError(FormsError, ValueError):
    """``summarize`` was asked for a level that is not an administrative level."""

    code = "indicator_level_invalid"
    default_message = "unknown administrative level"
    default_message_zh = "未知的行政层级"


@dataclass
class AreaSummary:
    """Household counts of one area (a village-code prefix) for the 两不愁三保障 dashboard.

    ``*_unsafe``/``dropout``/``not_all_insured``/``below_line`` count households whose indicator
    failed; ``incomplete`` those for which some indicator is still unknown; ``all_assured``
    those with every indicator known and passing.
    """

    area: str
    households: int = 0
    housing_unsafe: int = 0
    water_unsafe: int = 0
    dropout: int = 0
    not_all_insured: int = 0
    below_line: int = 0
    all_assured: int = 0
    incomplete: int = 0
    monitored: int = 0
    risk_removed: int = 0
    open_problems: int = 0

    def add(self, picture: HouseholdIndicators) -> None:
        """Count one household in."""
        self.households += 1
        self.housing_unsafe += picture.housing_safe is False
        self.water_unsafe += picture.water_safe is False
        self.dropout += picture.dropout_present is True
        self.not_all_insured += picture.everyone_insured is False
        self.below_line += picture.income_below_line is True
        self.all_assured += picture.all_assured is True
        self.incomplete += picture.all_assured is None
        self.monitored += picture.monitoring_category not in (None, "", "无")
        self.risk_removed += picture.risk_removed is True
        self.open_problems += len(picture.open_problems)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return dataclasses.asdict(self)


def summarize(
    pictures: Iterable[HouseholdIndicators], *, level: str = "village"
) -> dict[str, AreaSummary]:
    """Roll household pictures up to ``level`` (village, township, county, prefecture, province).

    Returns area code prefix → summary, sorted by code. Raises ``IndicatorLevelError`` for an
    unknown level.
    """
    digits = AREA_DIGITS.get(level)
    if digits is None:
        raise IndicatorLevelError(
            message=f"level must be one of {', '.join(AREA_DIGITS)}, got {level!r}",
            message_zh=f"层级应为村、乡镇、县、市或省：{level!r}",
        )
    areas: dict[str, AreaSummary] = {}
    for picture in pictures:
        area = picture.village_code[:digits]
        areas.setdefault(area, AreaSummary(area)).add(picture)
    return dict(sorted(areas.items()))


# --- problems found and cleared (动态清零) -----------------------------------------------------------

PROBLEM_KINDS: tuple[str, ...] = ("housing", "water", "education", "insurance", "income")


def _verdicts(picture: HouseholdIndicators) -> dict[str, bool | None]:
    """Per problem kind: True = passes, False = problem, None = not known from this picture."""
    return {
        "housing": picture.housing_safe,
        "water": picture.water_safe,
        "education": None if picture.dropout_present is None else not picture.dropout_present,
        "insurance": picture.everyone_insured,
        "income": None if picture.income_below_line is None else not picture.income_below_line,
    }


@dataclass(frozen=True)
class ProblemSpan:
    """One problem of a household from the day a record showed it to the day one showed it solved.

    ``cleared`` is None while the problem is open.
    """

    problem: str
    found: date
    cleared: date | None = None

    def open_days(self, on: date) -> int:
        """Days the problem has been (or was) open as of ``on``."""
        end = self.cleared if self.cleared is not None and self.cleared <= on else on
        return max(0, (end - self.found).days)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (ISO dates)."""
        return {
            "problem": self.problem,
            "found": self.found.isoformat(),
            "cleared": None if self.cleared is None else self.cleared.isoformat(),
        }


def problem_spans(observations: Iterable[tuple[date, HouseholdIndicators]]) -> list[ProblemSpan]:
    """Turn dated pictures of one household into the spans of its problems (动态清零).

    A problem opens on the date of the first picture that shows it failed and closes on the date
    of the first later picture that shows it passing; a picture that cannot tell (the instrument
    missing) changes nothing. Pictures may come in any order. Returns spans ordered by the date
    found, then kind.
    """
    spans: list[ProblemSpan] = []
    open_since: dict[str, date] = {}
    for when, picture in sorted(observations, key=lambda item: item[0]):
        for kind, ok in _verdicts(picture).items():
            if ok is False and kind not in open_since:
                open_since[kind] = when
            elif ok is True and kind in open_since:
                spans.append(ProblemSpan(kind, open_since.pop(kind), when))
    spans.extend(ProblemSpan(kind, found) for kind, found in open_since.items())
    return sorted(spans, key=lambda s: (s.found, PROBLEM_KINDS.index(s.problem)))
