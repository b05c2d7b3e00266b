"""Derived indicators, on the cases DOMAIN.md describes."""

from __future__ import annotations

import copy
import subprocess
import sys
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forms.expressions import EvaluationContext
from forms.identity import id_check_char
from forms.indicators import (
    HouseholdIndicators,
    IndicatorLevelError,
    MonitoringConfig,
    MonitoringConfigError,
    RoundChange,
    education_indicator,
    household_indicators,
    housing_indicator,
    income_indicator,
    insurance_indicator,
    monitoring_consistency,
    problem_spans,
    round_change,
    summarize,
    water_indicator,
)
from forms.instruments import BUILTIN_IDS, load_builtin
from forms.instruments.samples import DEFAULT_TODAY, problem_household, sample_household
from forms.validation import validate_record

VILLAGE = "530102001201"


def make_id(birth: date, sequence: int = 11, region: str = "530102") -> str:
    first17 = f"{region}{birth:%Y%m%d}{sequence:03d}"
    return first17 + id_check_char(first17)


# --- configuration --------------------------------------------------------------------------------


def test_longest_prefix_wins_and_latest_earlier_year_stands_in() -> None:
    config = MonitoringConfig(
        monitoring_lines={"53": {2024: 8300, 2025: 8700}, "530102": {2025: 9200}},
        water_region_types={"53": "water_rich", "5301": "water_short"},
    )
    assert config.monitoring_line(VILLAGE, 2025) == 9200
    assert config.monitoring_line("530302001201", 2025) == 8700
    assert config.monitoring_line("530302001201", 2024) == 8300
    # 2026's line not published yet: 2025's applies until it is.
    assert config.monitoring_line("530302001201", 2026) == 8700
    # The county has nothing for 2024: fall back to the province.
    assert config.monitoring_line(VILLAGE, 2024) == 8300
    assert config.monitoring_line("110105001201", 2025) is None
    assert config.water_region_type(VILLAGE) == "water_short"
    assert config.water_region_type("532301001201") == "water_rich"
    assert config.water_region_type("110105001201") == "water_rich"
    assert config.evaluation_config(VILLAGE, 2025) == {
        "monitoring_line": 9200,
        "water_region_type": "water_short",
    }
    assert config.evaluation_config("110105001201", 2025) == {"water_region_type": "water_rich"}


def test_config_mapping_round_trip() -> None:
    raw = {
        "monitoring_lines": {"53": {"2025": 8700}, "62": {"2025": 7600.5}},
        "income_drop_percents": {"53": {"2025": 30}},
        "expense_rise_percents": {"53": {"2024": 50}, "530102": {"2025": 40}},
        "water_region_types": {"62": "water_short"},
        "default_monitoring_line": 7000,
        "default_water_region_type": "water_rich",
    }
    config = MonitoringConfig.from_mapping(raw)
    assert config.monitoring_line("620102001201", 2025) == 7600.5
    assert config.monitoring_line("110105001201", 2025) == 7000
    assert MonitoringConfig.from_mapping(config.to_mapping()) == config
    assert config.to_mapping()["monitoring_lines"]["53"] == {"2025": 8700.0}
    assert config.income_drop_percent(VILLAGE, 2026) == 30
    assert config.expense_rise_percent(VILLAGE, 2026) == 40
    assert config.expense_rise_percent("530302001201", 2026) == 50
    assert config.income_drop_percent("620102001201", 2026) is None


@pytest.mark.parametrize(
    "raw",
    [
        {"monitoring_lines": {"5a": {2025: 8700}}},
        {"monitoring_lines": {"53": {1890: 8700}}},
        {"monitoring_lines": {"53": {2025: -1}}},
        {"monitoring_lines": {"53": 8700}},
        {"water_region_types": {"53": "dry"}},
        {"monitoring_line": 8700},
        {"income_drop_percents": {"53": {2025: 0}}},
        {"expense_rise_percents": {"53": [50]}},
    ],
)
def test_bad_config_is_refused(raw: dict) -> None:
    with pytest.raises(MonitoringConfigError) as err:
        MonitoringConfig.from_mapping(raw)
    assert err.value.code == "monitoring_config_invalid"
    assert err.value.message_zh


def test_bad_config_is_refused_by_the_constructor_too() -> None:
    with pytest.raises(MonitoringConfigError):
        MonitoringConfig(monitoring_lines={"53": 8700})  # type: ignore[dict-item]
    with pytest.raises(MonitoringConfigError):
        MonitoringConfig(default_water_region_type="缺水")


# --- housing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "safe", "reason"),
    [
        ({"appraisal_grade": "A"}, True, "appraised_safe"),
        ({"appraisal_grade": "B"}, True, "appraised_safe"),
        ({"appraisal_grade": "C", "renovation_method": "维修加固"}, False, "dangerous_house"),
        (
            {"appraisal_grade": "D", "renovation_method": "拆除重建", "renovation_accepted": True},
            True,
            "renovated",
        ),
        ({"appraisal_grade": "无房"}, False, "no_house"),
        ({"appraisal_grade": "无房", "safety_basis": "保障安全"}, True, "public_housing"),
        ({"appraisal_grade": "未鉴定"}, None, "not_appraised"),
        ({}, None, "no_data"),
    ],
)
def test_housing(data: dict, safe: bool | None, reason: str) -> None:
    result = housing_indicator(data)
    assert (result.safe, result.reason) == (safe, reason)
    assert result.to_dict() == {"safe": safe, "reason": reason}


# --- drinking water -------------------------------------------------------------------------------

GOOD_WELL = {
    "supply_type": "分散供水",
    "source_type": "井",
    "litres_per_person_day": 40,
    "quality_method": "现场查看",
    "quality_ok": True,
    "carry_minutes": 10,
    "interruption_days": 5,
}


def test_15_litres_in_a_water_rich_area_fails_quantity() -> None:
    result = water_indicator({**GOOD_WELL, "litres_per_person_day": 15}, "water_rich")
    assert result.safe is False
    assert result.failed == ["quantity"]


def test_25_litres_in_a_water_short_area_is_safe() -> None:
    data = {**GOOD_WELL, "litres_per_person_day": 25}
    assert water_indicator(data, "water_short").safe is True
    # The same household in a water-rich area would not have enough.
    assert water_indicator(data, "water_rich").failed == ["quantity"]


@pytest.mark.parametrize("region", ["water-short", "", "WATER_SHORT"])
def test_unknown_region_type_uses_the_stricter_threshold_and_warns(region: str) -> None:
    data = {**GOOD_WELL, "litres_per_person_day": 25}
    result = water_indicator(data, region)
    assert (result.safe, result.failed) == (False, ["quantity"])
    assert result.warnings == ["region_type_unknown"]
    assert result.to_dict()["warnings"] == ["region_type_unknown"]
    assert water_indicator(data, "water_short").warnings == []
    # The instrument judges the same record the same way, and warns too.
    context = EvaluationContext(today=DEFAULT_TODAY, config={"water_region_type": region})
    checked = validate_record(load_builtin("drinking_water"), data, context)
    assert checked.ok
    assert [i.check_id for i in checked.warnings] == ["region_type_unknown"]
    assert checked.cleaned["region_type"] == "water_rich"
    assert checked.cleaned["quantity_ok"] is False and checked.cleaned["water_safe"] is False
    for known in ("water_rich", "water_short"):
        context = EvaluationContext(today=DEFAULT_TODAY, config={"water_region_type": known})
        checked = validate_record(load_builtin("drinking_water"), data, context)
        assert checked.warnings == [] and checked.cleaned["region_type"] == known
        assert checked.cleaned["water_safe"] is water_indicator(data, known).safe
    unconfigured = validate_record(load_builtin("drinking_water"), data, EvaluationContext())
    assert unconfigured.warnings == [] and unconfigured.cleaned["region_type"] == "water_rich"


def test_piped_into_home_skips_convenience() -> None:
    data = {
        "supply_type": "集中供水入户",
        "litres_per_person_day": 60,
        "quality_method": "检测报告",
        "quality_ok": True,
        "interruption_days": 0,
    }
    assert water_indicator(data, "water_rich").safe is True


def test_convenience_any_one_measure_within_limit_passes() -> None:
    far = {**GOOD_WELL, "carry_minutes": 45, "carry_distance_m": 1500, "carry_vertical_m": 60}
    assert water_indicator(far, "water_rich").safe is True
    farther = {**far, "carry_vertical_m": 120}
    assert water_indicator(farther, "water_rich").failed == ["convenience"]


def test_every_failure_is_listed_in_order() -> None:
    bad = {
        "supply_type": "集中供水点",
        "litres_per_person_day": 10,
        "quality_ok": False,
        "carry_minutes": 40,
        "interruption_days": 60,
    }
    result = water_indicator(bad, "water_short")
    assert result.safe is False
    assert result.failed == ["quantity", "quality", "convenience", "reliability"]


def test_reliability_limit_is_36_days() -> None:
    assert water_indicator({**GOOD_WELL, "interruption_days": 36}, "water_rich").safe is True
    assert water_indicator({**GOOD_WELL, "interruption_days": 37}, "water_rich").failed == [
        "reliability"
    ]


def test_missing_value_is_unknown_not_safe() -> None:
    data = {k: v for k, v in GOOD_WELL.items() if k != "quality_ok"}
    result = water_indicator(data, "water_rich")
    assert result.safe is None
    assert result.unknown == ["quality"]
    assert water_indicator({**data, "litres_per_person_day": 5}, "water_rich").safe is False


def test_unknown_region_type_refused_in_config_judged_strictly_by_indicator() -> None:
    # A county's configuration is checked when it is loaded ...
    with pytest.raises(MonitoringConfigError):
        MonitoringConfig.from_mapping({"water_region_types": {"53": "丰水"}})
    # ... while a record judged with an unrecognised value gets the stricter threshold.
    result = water_indicator({**GOOD_WELL, "litres_per_person_day": 30}, "丰水")
    assert (result.failed, result.warnings) == (["quantity"], ["region_type_unknown"])


# --- education ------------------------------------------------------------------------------------


def test_twelve_year_old_without_schooling_is_a_dropout() -> None:
    data = {
        "children": [
            {"_id": "r1", "name": "张小梅", "id_number": make_id(date(2014, 3, 2), 22)},
            {
                "_id": "r2",
                "name": "张小军",
                "id_number": make_id(date(2016, 5, 1), 31),
                "schooling": "小学",
            },
        ]
    }
    result = education_indicator(data, date(2026, 11, 25))
    assert result.dropout_present is True
    assert [(d.row_id, d.name, d.age) for d in result.dropouts] == [("r1", "张小梅", 12)]
    assert result.school_age_children == 2


def test_school_age_is_counted_on_1_september() -> None:
    # Born 2020-09-02: 5 on 2026-09-01, so not yet of school age for the 2026/27 school year.
    young = {"children": [{"_id": "r1", "name": "李乐", "id_number": make_id(date(2020, 9, 2))}]}
    assert education_indicator(young, date(2027, 3, 1)).dropout_present is False
    # Born 2009-09-01: 17 on 2026-09-01, beyond compulsory age.
    old = {"children": [{"_id": "r1", "name": "李强", "id_number": make_id(date(2009, 9, 1))}]}
    assert education_indicator(old, date(2026, 11, 1)).school_age_children == 0
    # Born 2010-09-01: 16 on 2026-09-01, still counted.
    sixteen = {"children": [{"_id": "r1", "name": "李壮", "id_number": make_id(date(2010, 9, 1))}]}
    assert education_indicator(sixteen, date(2026, 11, 1)).dropout_present is True


def test_invalid_id_is_counted_as_unknown_age() -> None:
    good = make_id(date(2014, 1, 1), 20)
    wrong_check = good[:17] + ("1" if good[17] != "1" else "2")
    data = {"children": [{"_id": "r1", "name": "王芳", "id_number": wrong_check}]}
    result = education_indicator(data, date(2026, 11, 1))
    # The child may be 12 and out of school: unknown, never counted as "no dropout".
    assert (result.dropout_present, result.unknown_age) == (None, 1)
    data["children"].append({"_id": "r2", "name": "王明", "id_number": good})
    result = education_indicator(data, date(2026, 11, 1))
    assert (result.dropout_present, result.unknown_age) == (True, 1)
    data["children"][1]["schooling"] = "小学"
    assert education_indicator(data, date(2026, 11, 1)).dropout_present is None
    data["children"].pop(0)
    assert education_indicator(data, date(2026, 11, 1)).dropout_present is False


def test_unknown_age_makes_the_household_picture_unknown_not_assured() -> None:
    records = {
        "compulsory_education": {
            "survey_date": "2026-11-25",
            "children": [{"_id": "c1", "name": "小红", "id_number": "53010220140101123Z"}],
        }
    }
    config = MonitoringConfig.from_mapping({"monitoring_lines": {"53": {"2025": 8700}}})
    picture = household_indicators(records, VILLAGE, 2026, config)
    assert picture.dropout_present is None
    assert "education" not in picture.open_problems
    assert picture.all_assured is None
    assert picture.unknown_age == 1 and picture.to_dict()["unknown_age"] == 1


# --- insurance ------------------------------------------------------------------------------------


def test_both_no_is_uninsured_and_both_yes_is_insured_twice() -> None:
    data = {
        "members": [
            {"_id": "a", "name": "赵一", "resident_insurance": True, "employee_insurance": False},
            {"_id": "b", "name": "赵二", "resident_insurance": False, "employee_insurance": False},
            {"_id": "c", "name": "赵三", "resident_insurance": True, "employee_insurance": True},
        ]
    }
    result = insurance_indicator(data)
    assert result.everyone_insured is False
    assert [(m.row_id, m.problem) for m in result.uninsured] == [("b", "uninsured")]
    assert [(m.row_id, m.problem) for m in result.insured_twice] == [("c", "insured_twice")]


# --- income ---------------------------------------------------------------------------------------

MONITORING = {
    "category": "边缘易致贫户",
    "member_count": 4,
    "wage_income": 18000,
    "business_income": 9000.5,
    "property_income": 300,
    "transfer_income": 4200,
    "production_costs": 3500.25,
}


def test_net_and_per_capita_income() -> None:
    result = income_indicator(MONITORING, 8700)
    assert result.net == 28000.25
    assert result.per_capita == 7000.06
    assert result.below_line is True
    assert income_indicator(MONITORING, 6000).below_line is False
    assert income_indicator(MONITORING, None).below_line is None


def test_income_is_exact_to_the_fen() -> None:
    data = {"member_count": 3, "wage_income": 0.1, "business_income": 0.2, "property_income": 0}
    assert income_indicator(data, None).net == 0.3


@settings(max_examples=100, deadline=None)
@given(
    items=st.lists(
        st.decimals(min_value=0, max_value=200000, places=2), min_size=5, max_size=5
    ).map(lambda xs: [float(x) for x in xs]),
    members=st.integers(min_value=1, max_value=12),
)
def test_income_matches_the_definition(items: list[float], members: int) -> None:
    data = dict(zip([*MONITORING][2:], items, strict=False)) | {"member_count": members}
    data["production_costs"] = items[4]
    result = income_indicator(data, 8700)
    net = sum(items[:4]) - items[4]
    assert abs(result.net - net) < 0.006
    assert abs(result.per_capita - net / members) < 0.006
    assert result.below_line == (result.per_capita < 8700)


def test_income_without_items_is_unknown() -> None:
    assert income_indicator({"member_count": 3}, 8700) == income_indicator(None, 8700)
    assert income_indicator({"member_count": 3}, 8700).net is None


# --- the household picture ------------------------------------------------------------------------


def test_household_indicators_combine_the_instruments() -> None:
    head_id = make_id(date(1978, 4, 5), 13)
    child_id = make_id(date(2013, 6, 1), 24)
    records = {
        "household_roster": {
            "members": [
                {"_id": "m1", "name": "杨建国", "id_number": head_id},
                {"_id": "m2", "name": "杨小花", "id_number": child_id},
            ]
        },
        "housing_safety": {"appraisal_grade": "C", "renovation_method": "维修加固"},
        "drinking_water": {**GOOD_WELL, "litres_per_person_day": 25},
        "compulsory_education": {
            "children": [
                {"_id": "c1", "name": "杨小花", "id_number": child_id, "schooling": "初中"}
            ]
        },
        "medical_insurance": {
            "members": [
                {
                    "_id": "i1",
                    "name": "杨建国",
                    "id_number": head_id.lower(),
                    "resident_insurance": True,
                    "employee_insurance": False,
                }
            ]
        },
        "monitoring_household": {**MONITORING, "member_count": None},
    }
    config = MonitoringConfig(
        monitoring_lines={"53": {2025: 8700}}, water_region_types={"5301": "water_short"}
    )
    result = household_indicators(records, VILLAGE, 2026, config)
    assert result.housing_safe is False and result.housing_reason == "dangerous_house"
    assert result.water_safe is True and result.water_region_type == "water_short"
    assert result.dropout_present is False
    # 杨小花 is in the roster but not in the insurance record.
    assert result.everyone_insured is False
    assert [(m.name, m.problem) for m in result.uninsured] == [("杨小花", "not_listed")]
    # No member count on the monitoring record: the roster's two members stand in.
    assert result.per_capita_income == 14000.13
    assert result.monitoring_line == 8700 and result.income_below_line is False
    assert result.open_problems == ["housing", "insurance"]
    assert result.all_assured is False
    as_dict = result.to_dict()
    assert as_dict["uninsured"] == [{"row_id": "m2", "name": "杨小花", "problem": "not_listed"}]
    assert as_dict["open_problems"] == ["housing", "insurance"]


def test_missing_instruments_are_none() -> None:
    result = household_indicators({}, VILLAGE, 2026, MonitoringConfig())
    assert result.housing_safe is None
    assert result.water_safe is None
    assert result.dropout_present is None
    assert result.everyone_insured is None
    assert result.income_below_line is None
    assert result.open_problems == []
    assert result.all_assured is None


# --- the record's own calculations agree with the library ----------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=10_000),
    litres=st.integers(min_value=0, max_value=80),
    days=st.integers(min_value=0, max_value=60),
    quality=st.booleans(),
    region=st.sampled_from(["water_rich", "water_short"]),
)
def test_water_calculation_in_the_record_matches_the_indicator(
    seed: int, litres: int, days: int, quality: bool, region: str
) -> None:
    water = sample_household(seed)["drinking_water"] | {
        "litres_per_person_day": litres,
        "interruption_days": days,
        "quality_ok": quality,
    }
    context = EvaluationContext(today=DEFAULT_TODAY, config={"water_region_type": region})
    result = validate_record(load_builtin("drinking_water"), water, context)
    assert result.ok
    assert result.cleaned["water_safe"] == water_indicator(water, region).safe


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(min_value=0, max_value=10_000))
def test_income_calculation_in_the_record_matches_the_indicator(seed: int) -> None:
    monitoring = sample_household(seed)["monitoring_household"]
    context = EvaluationContext(today=DEFAULT_TODAY, config={"monitoring_line": 8700})
    result = validate_record(load_builtin("monitoring_household"), monitoring, context)
    assert result.ok
    income = income_indicator(monitoring, 8700)
    # Equal to the fen, not approximately: the form rounds net income to the fen and divides
    # whole fen, so float arithmetic on the tablet cannot drift from the library's decimals.
    assert result.cleaned["net_income"] == income.net
    assert result.cleaned["per_capita_income"] == income.per_capita
    assert (result.cleaned["per_capita_income"] < 8700) == income.below_line


def test_dropout_in_the_record_matches_the_indicator() -> None:
    household = problem_household("dropout", 3)
    education = household["compulsory_education"]
    context = EvaluationContext(today=DEFAULT_TODAY)
    cleaned = validate_record(load_builtin("compulsory_education"), education, context).cleaned
    ages = {row["_id"]: row["age"] for row in cleaned["children"]}
    for dropout in education_indicator(education, DEFAULT_TODAY).dropouts:
        assert ages[dropout.row_id] == dropout.age


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "appraisal_grade",
                "renovation_accepted",
                "litres_per_person_day",
                "supply_type",
                "children",
                "members",
                "member_count",
                "wage_income",
                "category",
            ]
        ),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.sampled_from(["_id", "id_number", "schooling"]), inner)
            ),
            max_leaves=8,
        ),
    )
)
def test_indicators_never_crash_on_odd_data(data: dict) -> None:
    records = {form_id: data for form_id in BUILTIN_IDS}
    result = household_indicators(records, VILLAGE, 2026, MonitoringConfig())
    assert isinstance(result.to_dict(), dict)


def test_pure_modules_load_without_flask_or_a_database() -> None:
    code = (
        "import sys, forms.identity, forms.indicators, forms.household, "
        "forms.instruments.samples; "
        "print(sorted(m for m in ('flask', 'sqlalchemy', 'server') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("items", "members", "per_capita"),
    [
        # 21,860.15 / 2 = 10,930.075: float arithmetic gives 10,930.0749…; half-up gives .08.
        ((0.0, 19897.98, 0.0, 2811.0, 848.83), 2, 10930.08),
        ((0.1, 0.2, 0.0, 0.0, 0.0), 1, 0.3),
        ((100.0, 0.0, 0.0, 0.0, 0.01), 3, 33.33),
        ((0.0, 0.0, 0.0, 0.05, 0.0), 2, 0.03),
    ],
)
def test_record_and_library_round_ties_alike(
    items: tuple[float, ...], members: int, per_capita: float
) -> None:
    names = ["wage_income", "business_income", "property_income", "transfer_income"]
    data = dict(zip(names, items[:4], strict=True)) | {
        "production_costs": items[4],
        "member_count": members,
        "category": "无",
        "household_type": "普通农户",
    }
    cleaned = validate_record(
        load_builtin("monitoring_household"), data, EvaluationContext(today=DEFAULT_TODAY)
    ).cleaned
    assert income_indicator(data, None).per_capita == per_capita
    assert cleaned["per_capita_income"] == per_capita


# --- change between rounds and roll-up ----------------------------------------------------------


def test_sharp_income_fall_flags_a_home_check() -> None:
    last_year = MONITORING | {"medical_out_of_pocket": 1000}
    this_year = last_year | {"wage_income": 6000}
    change = round_change(last_year, this_year, income_drop_percent=30, expense_rise_percent=50)
    # 7,000.06 → 4,000.06 per person: a 42.86 % fall.
    assert change.income_change_percent == -42.86
    assert change.income_drop is True
    assert change.expense_rise is False
    assert change.flagged
    assert change.to_dict()["flagged"] is True


def test_rigid_expense_rise_against_last_net_income() -> None:
    last_year = MONITORING | {"medical_out_of_pocket": 1000}
    this_year = last_year | {"medical_out_of_pocket": 15000}
    change = round_change(last_year, this_year, income_drop_percent=30, expense_rise_percent=40)
    # (15,000 − 1,000) / 28,000.25 = 50 %.
    assert change.expense_rise_percent == 50.0
    assert change.expense_rise is True
    assert change.income_drop is False


def test_change_without_thresholds_is_reported_not_judged() -> None:
    change = round_change(
        MONITORING,
        MONITORING | {"wage_income": 0},
        income_drop_percent=None,
        expense_rise_percent=None,
    )
    assert change.income_change_percent is not None and change.income_change_percent < 0
    assert change.income_drop is None and not change.flagged
    assert round_change(None, MONITORING, income_drop_percent=30, expense_rise_percent=30) == (
        RoundChange(None, None, None, None)
    )


def test_summarize_by_village_and_township() -> None:
    config = MonitoringConfig(monitoring_lines={"53": {2025: 8700}})
    pictures = []
    for seed, village in [(1, "530102001201"), (2, "530102001201"), (3, "530102001202")]:
        pictures.append(household_indicators(sample_household(seed), village, 2026, config))
    pictures.append(
        household_indicators(problem_household("dangerous_house"), "530102002201", 2026, config)
    )
    villages = summarize(pictures, level="village")
    assert list(villages) == ["530102001201", "530102001202", "530102002201"]
    assert villages["530102001201"].households == 2
    assert villages["530102002201"].housing_unsafe == 1
    townships = summarize(pictures, level="township")
    assert {k: v.households for k, v in townships.items()} == {"530102001": 3, "530102002": 1}
    county = summarize(pictures, level="county")["530102"]
    assert county.households == 4
    assert (
        county.all_assured + county.incomplete + sum(1 for p in pictures if p.all_assured is False)
        == 4
    )
    assert county.to_dict()["area"] == "530102"
    with pytest.raises(IndicatorLevelError):
        summarize(pictures, level="street")


def test_problem_spans_follow_the_household_over_time() -> None:
    config = MonitoringConfig(monitoring_lines={"53": {2025: 8700}})

    def picture(case: str | None) -> HouseholdIndicators:
        records = problem_household(case, 4) if case else sample_household(4)
        return household_indicators(records, VILLAGE, 2026, config)

    d1, d2, d3, d4 = date(2026, 3, 1), date(2026, 6, 1), date(2026, 9, 1), date(2026, 11, 1)
    observations = [
        (d3, picture(None)),  # everything solved
        (d1, picture("dangerous_house")),
        (d2, picture("dangerous_house")),
        (d4, picture("too_little_water")),
        # A visit that recorded nothing decides nothing.
        (d4, household_indicators({}, VILLAGE, 2026, config)),
    ]
    spans = problem_spans(observations)
    assert [s.to_dict() for s in spans] == [
        {"problem": "housing", "found": "2026-03-01", "cleared": "2026-09-01"},
        {"problem": "water", "found": "2026-11-01", "cleared": None},
    ]
    assert spans[0].open_days(date(2026, 12, 1)) == 184
    assert spans[1].open_days(date(2026, 12, 1)) == 30


def test_category_consistency_uses_the_monitoring_rules() -> None:
    config = MonitoringConfig.from_mapping({"monitoring_lines": {"53": {"2025": 8700}}})
    records = copy.deepcopy(sample_household(1))
    picture = household_indicators(records, VILLAGE, 2026, config)
    assert (picture.category_consistent, picture.category_reasons) == (True, [])
    assert monitoring_consistency(records, VILLAGE, 2026, config) == (True, [])
    # 缺劳动力 while a member can work: the household cross-check of forms.household.
    records["household_roster"]["members"][0]["labour_capacity"] = "普通劳动力"
    records["monitoring_household"]["risks"] = ["缺劳动力"]
    picture = household_indicators(records, VILLAGE, 2026, config)
    assert (picture.category_consistent, picture.category_reasons) == (
        False,
        ["lack_of_labour_but_can_work"],
    )
    assert picture.to_dict()["category_reasons"] == ["lack_of_labour_but_can_work"]
    # 帮扶消除 below the configured line: the instrument's own check.
    records = copy.deepcopy(sample_household(1))
    records["monitoring_household"] |= {
        "risk_removed": True,
        "removal_method": "帮扶消除",
        "removal_date": "2026-06-01",
        "business_income": 5000,
    }
    consistent, reasons = monitoring_consistency(records, VILLAGE, 2026, config)
    # The only member cannot work, so the household may not be removed at all (forms.household).
    assert (consistent, reasons) == (False, ["removed_without_labour", "removal_below_line"])
    records["household_roster"]["members"][0]["labour_capacity"] = "普通劳动力"
    consistent, reasons = monitoring_consistency(records, VILLAGE, 2026, config)
    assert (consistent, reasons) == (False, ["removal_below_line"])
    # The same household in a county with a lower line is consistent.
    lower = MonitoringConfig.from_mapping({"monitoring_lines": {"53": {"2025": 3000}}})
    assert monitoring_consistency(records, VILLAGE, 2026, lower) == (True, [])
    # No monitoring record, or one without a category: not judged.
    del records["monitoring_household"]
    picture = household_indicators(records, VILLAGE, 2026, config)
    assert (picture.category_consistent, picture.category_reasons) == (None, [])
    records["monitoring_household"] = {"member_count": 2}
    assert monitoring_consistency(records, VILLAGE, 2026, config) == (None, [])


@pytest.mark.parametrize("bad", ["text", 3, ["a"], True])
def test_household_indicators_treat_a_record_that_is_not_an_object_as_absent(bad) -> None:
    config = MonitoringConfig(water_region_types={"5301": "water_short"})
    good = sample_household(seed=3)
    expected = household_indicators(
        {k: v for k, v in good.items() if k != "housing_safety"}, "530102001001", 2026, config
    )
    records = {**good, "housing_safety": bad}
    assert household_indicators(records, "530102001001", 2026, config) == expected
    every = {form_id: bad for form_id in good}
    picture = household_indicators(every, "530102001001", 2026, config)
    assert picture.housing_safe is None and picture.all_assured is None


def test_household_indicators_without_a_village_code() -> None:
    config = MonitoringConfig(
        water_region_types={"5301": "water_short"}, monitoring_lines={"5301": {2026: 7000.0}}
    )
    picture = household_indicators(sample_household(seed=3), None, 2026, config)
    assert picture.village_code is None
    assert picture.water_region_type == config.default_water_region_type
    assert picture.monitoring_line == config.default_monitoring_line
