"""Sample households are realistic, deterministic and validate cleanly against the built-ins."""

from __future__ import annotations

import json
from datetime import date

import pytest

from forms.expressions import EvaluationContext
from forms.household import check_household
from forms.identity import parse_id_number
from forms.indicators import MonitoringConfig, household_indicators
from forms.instruments import BUILTIN_IDS, load_builtin
from forms.instruments.samples import (
    DEFAULT_TODAY,
    PROBLEM_CASES,
    UnknownProblemCaseError,
    problem_household,
    sample_household,
)
from forms.validation import validate_record

CONFIG = MonitoringConfig(monitoring_lines={"53": {2025: 8700}})
VILLAGE = "530102001201"


def context(village: str = VILLAGE, today: date = DEFAULT_TODAY) -> EvaluationContext:
    return EvaluationContext(today=today, config=CONFIG.evaluation_config(village, today.year))


def assert_clean(household: dict, ctx: EvaluationContext) -> None:
    assert set(household) == set(BUILTIN_IDS)
    for form_id in BUILTIN_IDS:
        result = validate_record(load_builtin(form_id), household[form_id], ctx)
        issues = [i.to_dict() for i in result.errors + result.warnings]
        assert issues == [], (form_id, issues)


@pytest.mark.parametrize("chunk", range(4))
def test_many_sample_households_validate_clean(chunk: int) -> None:
    ctx = context()
    for seed in range(chunk * 50, chunk * 50 + 50):
        assert_clean(sample_household(seed), ctx)


def test_other_village_and_date() -> None:
    village, today = "620102201305", date(2027, 4, 10)
    ctx = EvaluationContext(today=today, config={"monitoring_line": 7600})
    for seed in range(20):
        household = sample_household(seed, village_code=village, today=today, monitoring_line=7600)
        assert household["household_roster"]["village_code"] == village
        assert_clean(household, ctx)


def test_deterministic_and_json_ready() -> None:
    assert sample_household(42) == sample_household(42)
    assert sample_household(42) != sample_household(43)
    text = json.dumps(sample_household(42), ensure_ascii=False)
    assert json.loads(text) == sample_household(42)


def test_ids_agree_with_the_roster() -> None:
    for seed in range(60):
        roster = sample_household(seed)["household_roster"]
        ids = [m["id_number"] for m in roster["members"]]
        assert len(set(ids)) == len(ids)
        for member in roster["members"]:
            info = parse_id_number(member["id_number"], today=DEFAULT_TODAY)
            assert info.region_code == VILLAGE[:6]
            assert {"male": "男", "female": "女"}[info.sex] == member["sex"]
        relations = [m["relation"] for m in roster["members"]]
        assert relations.count("户主") == 1


def test_households_vary() -> None:
    households = [sample_household(seed) for seed in range(120)]
    sizes = {len(h["household_roster"]["members"]) for h in households}
    grades = {h["housing_safety"]["appraisal_grade"] for h in households}
    supplies = {h["drinking_water"]["supply_type"] for h in households}
    categories = {h["monitoring_household"]["category"] for h in households}
    surnames = {h["household_roster"]["members"][0]["name"][0] for h in households}
    assert len(sizes) >= 4
    assert grades >= {"A", "B", "C"}
    assert supplies == {"集中供水入户", "集中供水点", "分散供水"}
    assert len(categories) >= 3
    assert len(surnames) >= 20
    assert any(h["compulsory_education"]["children"] for h in households)


def test_ordinary_households_are_above_the_line() -> None:
    for seed in range(100):
        household = sample_household(seed)
        result = household_indicators(household, VILLAGE, 2026, CONFIG, on=DEFAULT_TODAY)
        if result.monitoring_category == "无":
            assert result.income_below_line is False


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("dangerous_house", "housing"),
        ("no_house", "housing"),
        ("too_little_water", "water"),
        ("dropout", "education"),
        ("uninsured", "insurance"),
        ("below_line", "income"),
    ],
)
def test_problem_cases_validate_clean_and_show_their_problem(case: str, problem: str) -> None:
    assert case in PROBLEM_CASES
    for seed in range(5):
        household = problem_household(case, seed)
        assert_clean(household, context())
        result = household_indicators(household, VILLAGE, 2026, CONFIG, on=DEFAULT_TODAY)
        assert problem in result.open_problems


def test_unknown_problem_case() -> None:
    with pytest.raises(UnknownProblemCaseError) as err:
        problem_household("flood")
    assert err.value.code == "unknown_problem_case"


@pytest.mark.parametrize(
    "today",
    [date(2028, 2, 29), date(2026, 8, 31), date(2026, 9, 1), date(2027, 1, 1), date(2025, 12, 31)],
)
def test_clean_on_awkward_survey_dates(today: date) -> None:
    ctx = context(today=today)
    for seed in range(15):
        assert_clean(sample_household(seed, today=today), ctx)
        assert check_household(sample_household(seed, today=today), today=today) == []
    for case in PROBLEM_CASES:
        assert_clean(problem_household(case, 1, today=today), ctx)
