"""The built-in instruments load, are bilingual, mark sensitive and review fields, and check what
DOMAIN.md says they check."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from forms import FieldType, load_definition
from forms.expressions import EvaluationContext
from forms.identity import id_check_char
from forms.indicators import education_indicator
from forms.instruments import (
    BUILTIN_IDS,
    SYSTEM_IDS,
    UnknownInstrumentError,
    builtin_definitions,
    builtin_json,
    load_builtin,
)
from forms.validation import ValidationResult, validate_record

INSTRUMENT_DIR = Path(__file__).resolve().parents[2] / "forms" / "instruments"


def test_builtin_ids_in_order_and_each_has_a_file() -> None:
    assert BUILTIN_IDS == (
        "household_roster",
        "housing_safety",
        "drinking_water",
        "compulsory_education",
        "medical_insurance",
        "monitoring_household",
    )
    assert sorted(p.stem for p in INSTRUMENT_DIR.glob("*.json")) == sorted(
        (*BUILTIN_IDS, *SYSTEM_IDS)
    )


@pytest.mark.parametrize("form_id", BUILTIN_IDS)
def test_every_instrument_loads_with_the_definition_loader(form_id: str) -> None:
    document = json.loads((INSTRUMENT_DIR / f"{form_id}.json").read_text(encoding="utf-8"))
    defn = load_definition(document)
    assert defn.id == form_id
    assert defn.version == 1
    assert defn.subject == "household"
    assert load_builtin(form_id) == defn
    assert builtin_json(form_id) == document


def test_builtin_json_is_a_fresh_copy() -> None:
    first = builtin_json("housing_safety")
    first["fields"].clear()
    assert builtin_json("housing_safety")["fields"]


def test_unknown_instrument() -> None:
    with pytest.raises(UnknownInstrumentError) as err:
        load_builtin("census")
    assert err.value.code == "unknown_instrument"
    with pytest.raises(UnknownInstrumentError):
        builtin_json("census")


def test_builtin_definitions_in_order() -> None:
    assert [d.id for d in builtin_definitions()] == list(BUILTIN_IDS)


def _texts(document: dict) -> list[dict]:
    """Every human-facing text map in a definition document."""
    found = [document["title"]]

    def walk(fields: list[dict]) -> None:
        for fld in fields:
            found.extend(fld[key] for key in ("label", "constraint_message") if key in fld)
            walk(fld.get("fields", []))

    walk(document["fields"])
    found.extend(c["label"] for entries in document["choice_lists"].values() for c in entries)
    found.extend(check["message"] for check in document["checks"])
    return found


@pytest.mark.parametrize("form_id", BUILTIN_IDS)
def test_labels_are_chinese_with_english(form_id: str) -> None:
    for text in _texts(builtin_json(form_id)):
        assert set(text) == {"zh", "en"}, text
        assert any("\u4e00" <= ch <= "\u9fff" for ch in text["zh"]) or text["zh"] in "ABCD", text
        assert text["en"].isascii(), text


@pytest.mark.parametrize("form_id", BUILTIN_IDS)
def test_hints_are_chinese(form_id: str) -> None:
    defn = load_builtin(form_id)
    hints = [f.hint for _, f in defn.iter_fields() if f.hint is not None]
    assert hints, "every instrument guides the enumerator somewhere"
    for hint in hints:
        assert hint.to_dict()["zh"]


def test_sensitive_fields_are_marked() -> None:
    assert load_builtin("household_roster").sensitive_paths() == {
        "phone",
        "members/id_number",
        "members/health",
    }
    assert load_builtin("compulsory_education").sensitive_paths() == {
        "children/id_number",
        "children/health",
    }
    assert load_builtin("medical_insurance").sensitive_paths() == {"members/id_number"}


@pytest.mark.parametrize(
    ("form_id", "path"),
    [
        ("household_roster", "household_type"),
        ("housing_safety", "appraisal_grade"),
        ("housing_safety", "renovation_method"),
        ("compulsory_education", "children/row-1/schooling"),
        ("compulsory_education", "children/row-1/dropout_reason"),
        ("monitoring_household", "category"),
        ("monitoring_household", "wage_income"),
        ("monitoring_household", "production_costs"),
        ("monitoring_household", "risk_removed"),
        ("monitoring_household", "removal_method"),
        ("monitoring_household", "removal_date"),
    ],
)
def test_review_merge_where_a_silent_overwrite_would_be_wrong(form_id: str, path: str) -> None:
    assert load_builtin(form_id).merge_policy(path) == "review"


@pytest.mark.parametrize(
    ("form_id", "path"),
    [
        ("household_roster", "members/row-1/name"),
        ("household_roster", "phone"),
        ("housing_safety", "floor_area"),
        ("drinking_water", "litres_per_person_day"),
        ("monitoring_household", "measures"),
    ],
)
def test_lww_elsewhere(form_id: str, path: str) -> None:
    assert load_builtin(form_id).merge_policy(path) == "lww"


def test_official_code_lists() -> None:
    roster = load_builtin("household_roster")
    values = {k: [c.value for c in v] for k, v in roster.choice_lists.items()}
    assert values["labour_capacity"] == [
        "技能劳动力",
        "普通劳动力",
        "弱劳动力或半劳动力",
        "丧失劳动力",
        "无劳动力",
    ]
    assert values["health"] == ["健康", "长期慢性病", "患有大病", "残疾"]
    assert values["household_type"] == ["脱贫户", "普通农户"]
    housing = load_builtin("housing_safety")
    assert [c.value for c in housing.choice_lists["appraisal_grade"]] == [
        "A",
        "B",
        "C",
        "D",
        "未鉴定",
        "无房",
    ]
    assert len(housing.choice_lists["structure"]) == 11
    education = load_builtin("compulsory_education")
    assert [c.value for c in education.choice_lists["dropout_reason"]] == [
        "因病",
        "因残",
        "学习困难/厌学",
        "外出打工",
        "早婚早育",
        "家庭经济困难",
        "其他",
    ]
    monitoring = load_builtin("monitoring_household")
    assert len(monitoring.choice_lists["risk"]) == 11
    assert len(monitoring.choice_lists["measure"]) == 14


def test_field_types_cover_the_contract() -> None:
    used = {f.type for d in builtin_definitions() for _, f in d.iter_fields()}
    assert used >= {
        FieldType.TEXT,
        FieldType.INTEGER,
        FieldType.DECIMAL,
        FieldType.DATE,
        FieldType.SELECT_ONE,
        FieldType.SELECT_MULTIPLE,
        FieldType.BOOLEAN,
        FieldType.GEOPOINT,
        FieldType.IMAGE,
        FieldType.REPEAT,
        FieldType.CALCULATE,
    }


def test_units_on_quantities() -> None:
    water = load_builtin("drinking_water")
    assert water.field("litres_per_person_day").unit == "升/人·日"
    assert load_builtin("monitoring_household").field("wage_income").unit == "元"
    assert load_builtin("housing_safety").field("floor_area").unit == "平方米"


# --------------------------------------------------------------------------------------------
# The instruments' rules, run through the real validator on realistic records

TODAY = date(2026, 11, 25)
CONTEXT = EvaluationContext(
    today=TODAY, config={"monitoring_line": 8700, "water_region_type": "water_rich"}
)


def make_id(birth: date, sequence: int) -> str:
    first17 = f"530102{birth:%Y%m%d}{sequence:03d}"
    return first17 + id_check_char(first17)


def run(form_id: str, data: dict, context: EvaluationContext = CONTEXT) -> ValidationResult:
    return validate_record(load_builtin(form_id), data, context)


def codes(result: ValidationResult) -> dict[str, str]:
    """check id (or issue code@field) → severity."""
    return {(i.check_id or f"{i.code}@{i.field}"): i.severity for i in result.issues}


def roster_with(*members: dict) -> dict:
    return {
        "village_code": "530102001201",
        "household_no": "5301020012010001",
        "household_type": "脱贫户",
        "members": list(members),
    }


def person(
    row_id: str, relation: str, sex: str, birth: date, sequence: int, **extra: object
) -> dict:
    return {
        "_id": row_id,
        "name": "测试" + row_id,
        "id_type": "resident_id",
        "id_number": make_id(birth, sequence),
        "relation": relation,
        "sex": sex,
        "health": ["健康"],
        "labour_capacity": "普通劳动力",
        "education_level": "初中",
    } | extra


HEAD = person("m1", "户主", "男", date(1975, 2, 3), 11)
WIFE = person("m2", "配偶", "女", date(1977, 8, 9), 22)


def test_roster_clean_household() -> None:
    result = run("household_roster", roster_with(HEAD, WIFE))
    assert result.ok and not result.warnings


def test_roster_needs_exactly_one_head() -> None:
    no_head = person("m1", "之子", "男", date(1975, 2, 3), 11)
    assert codes(run("household_roster", roster_with(no_head, WIFE)))["one_head"] == "error"
    second = person("m3", "户主", "男", date(1950, 1, 1), 31)
    assert codes(run("household_roster", roster_with(HEAD, WIFE, second)))["one_head"] == "error"


def test_roster_spouse_at_most_one_and_of_the_other_sex() -> None:
    husband = person("m2", "配偶", "男", date(1977, 8, 9), 21)
    assert codes(run("household_roster", roster_with(HEAD, husband)))["spouse_other_sex"] == "error"
    second = person("m3", "配偶", "女", date(1980, 1, 1), 42)
    found = codes(run("household_roster", roster_with(HEAD, WIFE, second)))
    assert found["at_most_one_spouse"] == "error"


def test_roster_id_number_rules() -> None:
    good = HEAD["id_number"]
    wrong_check = good[:17] + ("0" if good[17] != "0" else "1")
    found = codes(run("household_roster", roster_with(HEAD | {"id_number": wrong_check}, WIFE)))
    assert found["constraint@id_number"] == "error"
    # Full-width digits and a lower-case x are what phones type; they are accepted.
    typed = good.translate(str.maketrans("0123456789X", "０１２３４５６７８９ｘ"))
    assert run("household_roster", roster_with(HEAD | {"id_number": typed}, WIFE)).ok
    # Digit 17 says male; the roster says female.
    found = codes(run("household_roster", roster_with(HEAD | {"sex": "女"}, WIFE)))
    assert found["sex_matches_id"] == "error"


@pytest.mark.parametrize("form_id", ["household_roster", "medical_insurance"])
def test_id_number_errors_say_exactly_what_is_wrong(form_id: str) -> None:
    good = HEAD["id_number"]
    expected = good[17]
    cases = {
        good[:17] + ("0" if expected != "0" else "1"): ("应为" + expected, "expected " + expected),
        5.301021950052392e17: ("重新录入", "re-type it"),
        "5.30102197502031E+17": ("重新录入", "re-type it"),
        int(good[:15] + "000"): ("重新录入", "re-type it"),
        good[:6] + "19751302" + good[14:]: ("出生日期", "birth date"),
        good[:16]: ("实际为16位", "got 16"),
    }
    for value, (zh, en) in cases.items():
        member = HEAD | {"id_number": value}
        if form_id == "medical_insurance":
            data = {"members": [{k: member[k] for k in ("_id", "name", "id_number")}]}
        else:
            data = roster_with(member, WIFE)
        result = run(form_id, data)
        [issue] = [i for i in result.errors if i.field == "id_number"]
        assert issue.code == "constraint"
        assert zh in issue.message.zh, (value, issue.message.zh)
        assert issue.message.zh.startswith("身份证号无效：")
        assert en in issue.message["en"], (value, issue.message["en"])


def test_roster_id_kind_matches_the_id_type() -> None:
    card = HEAD["id_number"] + "12"  # the 18 + category 1 + grade 2
    spaced = f"{card[:6]} {card[6:14]}-{card[14:18]} {card[18:]}"
    as_card = HEAD | {"id_type": "disability_card"}
    for number in (
        card,
        spaced,
        card.translate(str.maketrans("0123456789", "０１２３４５６７８９")),
    ):
        result = run("household_roster", roster_with(as_card | {"id_number": number}, WIFE))
        assert result.ok, (number, result.errors)
    # Typed as a disability card, but the number is the 18-character ID.
    found = codes(run("household_roster", roster_with(as_card, WIFE)))
    assert found == {"disability_card_length": "error"}
    # A 20-character card number under "resident ID" is the wrong kind.
    found = codes(run("household_roster", roster_with(HEAD | {"id_number": spaced}, WIFE)))
    assert found == {"resident_id_is_not_a_card": "error"}
    # An invalid number gets its one specific constraint error, not the kind checks on top.
    bad = card[:17] + ("0" if card[17] != "0" else "1") + card[18:]
    found = codes(run("household_roster", roster_with(as_card | {"id_number": bad}, WIFE)))
    assert found == {"constraint@id_number": "error"}


def test_roster_education_xor_schooling_and_work_both_or_neither() -> None:
    both = HEAD | {"schooling": "普通高中"}
    assert codes(run("household_roster", roster_with(both, WIFE)))["education_xor_schooling"] == (
        "error"
    )
    neither = {k: v for k, v in HEAD.items() if k != "education_level"}
    assert "education_xor_schooling" in codes(run("household_roster", roster_with(neither, WIFE)))
    months_only = HEAD | {"work_months": 6}
    found = codes(run("household_roster", roster_with(months_only, WIFE)))
    assert found["work_both_or_neither"] == "error"
    both_given = HEAD | {"work_months": 6, "work_location": "省外"}
    assert run("household_roster", roster_with(both_given, WIFE)).ok
    found = codes(
        run(
            "household_roster",
            roster_with(HEAD | {"work_months": 13, "work_location": "省外"}, WIFE),
        )
    )
    assert found["constraint@work_months"] == "error"


def test_roster_healthy_is_exclusive_and_phone_format() -> None:
    sick = HEAD | {"health": ["健康", "残疾"]}
    assert (
        codes(run("household_roster", roster_with(sick, WIFE)))["healthy_is_exclusive"] == "error"
    )
    bad_phone = roster_with(HEAD, WIFE) | {"phone": "2380013800"}
    assert codes(run("household_roster", bad_phone))["constraint@phone"] == "error"


def test_c_grade_house_rebuilt_is_a_warning_not_an_error() -> None:
    house = {
        "appraisal_grade": "C",
        "structure": "土坯/夯土房（无立柱）",
        "build_year": 1988,
        "storeys": 1,
        "renovation_method": "拆除重建",
    }
    result = run("housing_safety", house)
    assert result.ok
    assert codes(result) == {"c_grade_repair": "warning"}


def test_housing_rules() -> None:
    d_repaired = {"appraisal_grade": "D", "structure": "茅草房", "renovation_method": "维修加固"}
    assert codes(run("housing_safety", d_repaired)) == {"d_grade_rebuild": "warning"}
    no_house = {"appraisal_grade": "无房", "renovation_method": "维修加固"}
    assert codes(run("housing_safety", no_house)) == {"no_house_new_build": "warning"}
    tall = {"appraisal_grade": "A", "structure": "钢筋混凝土", "storeys": 3}
    assert codes(run("housing_safety", tall)) == {"many_storeys": "warning"}
    future = {"appraisal_grade": "A", "structure": "钢筋混凝土", "build_year": 2027}
    assert codes(run("housing_safety", future))["constraint@build_year"] == "error"
    wrong_basis = {"appraisal_grade": "C", "structure": "茅草房", "safety_basis": "鉴定安全"}
    found = codes(run("housing_safety", wrong_basis))
    assert found["basis_by_appraisal_needs_ab"] == "error"
    renovated = {"appraisal_grade": "C", "structure": "茅草房", "safety_basis": "改造安全"}
    found = codes(run("housing_safety", renovated))
    assert found["basis_by_renovation_needs_acceptance"] == "error"
    # The renovation block is skipped for a safe house: stale answers are dropped.
    result = run(
        "housing_safety",
        {"appraisal_grade": "A", "structure": "钢筋混凝土", "renovation_method": "维修加固"},
    )
    assert "renovation_method" not in result.cleaned


def test_water_record_computes_safety() -> None:
    short = {
        "supply_type": "分散供水",
        "source_type": "井",
        "litres_per_person_day": 15,
        "quality_method": "现场查看",
        "quality_ok": True,
        "carry_minutes": 10,
        "interruption_days": 3,
    }
    rich = run("drinking_water", short)
    assert rich.ok
    assert rich.cleaned["quantity_ok"] is False and rich.cleaned["water_safe"] is False
    dry = EvaluationContext(today=TODAY, config={"water_region_type": "water_short"})
    enough = run("drinking_water", short | {"litres_per_person_day": 25}, dry)
    assert enough.cleaned["region_type"] == "water_short"
    assert enough.cleaned["water_safe"] is True


def test_water_convenience_needs_a_measure_unless_piped() -> None:
    data = {
        "supply_type": "集中供水点",
        "litres_per_person_day": 40,
        "quality_method": "检测报告",
        "quality_ok": True,
        "interruption_days": 3,
    }
    assert codes(run("drinking_water", data)) == {"convenience_measured": "error"}
    piped = data | {"supply_type": "集中供水入户", "carry_minutes": 90}
    result = run("drinking_water", piped)
    assert result.ok and "carry_minutes" not in result.cleaned


def child(row_id: str, birth: date, sequence: int, **extra: object) -> dict:
    return {
        "_id": row_id,
        "name": "学生" + row_id,
        "id_number": make_id(birth, sequence),
        "health": ["健康"],
    } | extra


def test_twelve_year_old_without_schooling_needs_a_reason() -> None:
    twelve = child("c1", date(2014, 3, 2), 22)
    result = run("compulsory_education", {"children": [twelve]})
    assert codes(result) == {"required@dropout_reason": "error"}
    assert result.errors[0].path == "children/c1/dropout_reason"
    assert result.cleaned["children"][0]["age"] == 12
    explained = twelve | {"dropout_reason": "外出打工"}
    assert run("compulsory_education", {"children": [explained]}).ok


def test_survey_date_fixes_the_school_year_whoever_validates_later() -> None:
    # Surveyed in August 2026 (school year 2025/26): 16 on 2025-09-01, still of school age.
    row = child("c1", date(2009, 6, 1), 22, schooling="初中")
    record = {"survey_date": "2026-08-20", "children": [row]}
    august = EvaluationContext(today=date(2026, 8, 20))
    october = EvaluationContext(today=date(2026, 10, 5))
    for context in (august, october):
        result = run("compulsory_education", record, context)
        assert result.ok
        assert result.cleaned["children"][0]["age"] == 16
        assert result.cleaned["children"][0]["schooling"] == "初中"
    # Without the survey date the October validation moves the child to the next school year.
    undated = run("compulsory_education", {"children": [row]}, october)
    assert undated.cleaned["children"][0]["age"] == 17
    assert education_indicator(record, date(2026, 10, 5)).school_age_children == 1


def test_dropout_reason_illness_but_healthy_warns() -> None:
    sick_reason = child("c1", date(2014, 3, 2), 22, dropout_reason="因病")
    assert codes(run("compulsory_education", {"children": [sick_reason]})) == {
        "illness_reason_but_healthy": "warning"
    }


def test_out_of_school_age_rows_skip_the_school_questions() -> None:
    seventeen = child("c1", date(2009, 1, 5), 22, schooling="普通高中")
    result = run("compulsory_education", {"children": [seventeen]})
    assert result.ok and "schooling" not in result.cleaned["children"][0]


def test_persuade_back_log() -> None:
    visits = [
        {"_id": "v1", "visit_date": "2026-10-02", "visited_by": "村支书 李某", "result": "劝返中"},
        {"_id": "v2", "visit_date": "2026-11-20", "visited_by": "校长 王某", "result": "已复学"},
    ]
    data = {
        "children": [
            child("c1", date(2013, 4, 4), 22, dropout_reason="外出打工", persuasions=visits)
        ]
    }
    assert codes(run("compulsory_education", data)) == {
        "back_at_school_but_no_schooling": "warning"
    }
    future = [visits[0] | {"visit_date": "2026-12-01"}]
    data["children"][0]["persuasions"] = future
    assert codes(run("compulsory_education", data))["constraint@visit_date"] == "error"


@pytest.mark.parametrize("id_number", ["", "530102201401011231", "5301022014010112"])
def test_school_answers_kept_when_the_age_cannot_be_computed(id_number: str) -> None:
    # An empty, wrong-check-digit or short ID gives no age: whether the school questions apply
    # is unknown, so nothing typed is dropped and no school question is demanded.
    visit = {"_id": "p1", "visit_date": "2026-10-01", "visited_by": "王老师", "result": "劝返中"}
    row = {
        "_id": "c1",
        "name": "小红",
        "id_number": id_number,
        "health": ["健康"],
        "schooling": None,
        "dropout_reason": "外出打工",
        "persuasions": [visit],
    }
    result = run("compulsory_education", {"survey_date": "2026-11-25", "children": [row]})
    assert [(i.code, i.path) for i in result.errors] == [
        ("required" if not id_number else "constraint", "children/c1/id_number")
    ]
    kept = result.cleaned["children"][0]
    assert kept["dropout_reason"] == "外出打工"
    assert kept["persuasions"] == [visit]
    assert "age" not in kept
    # Nothing answered yet: the unknown relevance demands no reason either.
    bare = {"_id": "c1", "name": "小红", "id_number": id_number, "health": ["健康"]}
    result = run("compulsory_education", {"survey_date": "2026-11-25", "children": [bare]})
    assert {i.field for i in result.errors} == {"id_number"}
    # With a valid ID of a 17-year-old the school questions are really not asked: dropped.
    adult = row | {"id_number": make_id(date(2009, 1, 5), 22)}
    result = run("compulsory_education", {"survey_date": "2026-11-25", "children": [adult]})
    assert result.ok
    assert "dropout_reason" not in result.cleaned["children"][0]
    assert "persuasions" not in result.cleaned["children"][0]


def insured(row_id: str, resident: bool, employee: bool) -> dict:
    row = {
        "_id": row_id,
        "name": "参保" + row_id,
        "id_number": make_id(date(1980, 1, 1), 10 + len(row_id)),
        "resident_insurance": resident,
        "employee_insurance": employee,
        "critical_illness": True,
        "commercial_insurance": False,
        "medical_assistance": False,
    }
    if resident:
        row |= {"subsidy_category": "无", "personal_payment": 400, "premium_subsidy": 0}
    return row


def test_insurance_exactly_one_of_resident_and_employee() -> None:
    assert run("medical_insurance", {"members": [insured("a", True, False)]}).ok
    assert run("medical_insurance", {"members": [insured("a", False, True)]}).ok
    neither = codes(run("medical_insurance", {"members": [insured("a", False, False)]}))
    assert neither == {"not_uninsured": "error"}
    both = codes(run("medical_insurance", {"members": [insured("a", True, True)]}))
    assert both == {"not_insured_twice": "error"}


def test_full_subsidy_with_personal_payment_warns() -> None:
    row = insured("a", True, False) | {"subsidy_category": "特困", "personal_payment": 400}
    assert codes(run("medical_insurance", {"members": [row]})) == {
        "full_subsidy_no_payment": "warning"
    }


MONITORED = {
    "category": "边缘易致贫户",
    "household_type": "普通农户",
    "member_count": 4,
    "wage_income": 12000,
    "business_income": 8000,
    "property_income": 0,
    "transfer_income": 3000,
    "production_costs": 2000,
    "risks": ["因学"],
    "found_by": "干部排查",
    "home_check_date": "2026-01-05",
    "village_review_date": "2026-01-08",
    "notice_start_date": "2026-01-10",
    "notice_days": 5,
    "township_review_date": "2026-01-16",
    "county_approval_date": "2026-01-20",
    "measures": ["就业", "义务教育保障"],
    "risk_removed": False,
}


def test_monitoring_income_is_calculated() -> None:
    result = run("monitoring_household", MONITORED)
    assert result.ok and not result.warnings
    assert result.cleaned["net_income"] == 21000
    assert result.cleaned["per_capita_income"] == 5250


def test_removal_through_support_below_the_line_is_an_error() -> None:
    removed = MONITORED | {
        "risk_removed": True,
        "removal_method": "帮扶消除",
        "removal_date": "2026-10-01",
    }
    assert codes(run("monitoring_household", removed)) == {"removal_below_line": "error"}
    richer = removed | {"wage_income": 36000}
    assert run("monitoring_household", richer).ok
    # Natural removal is not judged against the line.
    assert run("monitoring_household", removed | {"removal_method": "自然消除"}).ok
    # No line configured: the removal cannot be checked, and that is said, never passed silently.
    unconfigured = EvaluationContext(today=CONTEXT.today)
    for data in (removed, richer):
        assert codes(run("monitoring_household", data, unconfigured)) == {
            "removal_line_not_configured": "warning"
        }
    assert run("monitoring_household", removed | {"removal_method": "自然消除"}, unconfigured).ok


def test_monitoring_warnings() -> None:
    soon = MONITORED | {
        "wage_income": 36000,
        "risk_removed": True,
        "removal_method": "帮扶消除",
        "removal_date": "2026-02-20",
    }
    assert codes(run("monitoring_household", soon)) == {
        "removal_soon_after_identification": "warning"
    }
    tiny = MONITORED | {"wage_income": 50}
    assert codes(run("monitoring_household", tiny)) == {"tiny_wages": "warning"}
    housing = MONITORED | {"risks": ["因安全住房", "因安全饮水"]}
    assert codes(run("monitoring_household", housing)) == {
        "housing_risk_needs_measure": "warning",
        "water_risk_needs_measure": "warning",
    }


def test_monitoring_errors() -> None:
    unstable = MONITORED | {"category": "脱贫不稳定户"}
    assert codes(run("monitoring_household", unstable)) == {"unstable_needs_lifted_out": "error"}
    ill = MONITORED | {"risks": ["因病"], "medical_out_of_pocket": 0}
    assert codes(run("monitoring_household", ill)) == {"illness_needs_medical_cost": "error"}
    too_many = MONITORED | {"risks": ["因病", "因学", "因残", "因意外事故", "因产业失败", "其他"]}
    assert "constraint@risks" in codes(run("monitoring_household", too_many))
    disaster = MONITORED | {"risks": ["因自然灾害"]}
    assert codes(run("monitoring_household", disaster)) == {"required@disaster_type": "error"}
    short_notice = MONITORED | {"township_review_date": "2026-01-13"}
    assert codes(run("monitoring_household", short_notice)) == {
        "township_review_after_notice": "error"
    }
    backwards = MONITORED | {"village_review_date": "2026-01-01"}
    assert codes(run("monitoring_household", backwards)) == {
        "village_review_after_home_check": "error"
    }


def test_not_monitored_household_skips_the_procedure() -> None:
    plain = {k: v for k, v in MONITORED.items() if k in INCOME_AND_CORE} | {"category": "无"}
    result = run("monitoring_household", plain | {"risks": ["因病"]})
    assert result.ok and "risks" not in result.cleaned


INCOME_AND_CORE = {
    "household_type",
    "member_count",
    "wage_income",
    "business_income",
    "property_income",
    "transfer_income",
    "production_costs",
}


def test_docs_describe_every_field_and_check() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "instruments.md").read_text("utf-8")
    for defn in builtin_definitions():
        assert f"`{defn.id}`" in docs
        for path, _ in defn.iter_fields():
            assert f"`{path}`" in docs, f"docs/instruments.md does not describe {defn.id}/{path}"
        for check in defn.checks:
            assert f"`{check.id}`" in docs, f"docs/instruments.md misses check {check.id}"


def test_verification_outcome_form_codes_match_the_pure_rules() -> None:
    from forms.instruments import VERIFICATION_OUTCOME, load_builtin
    from forms.verification import DATA_ERRORS, OUTCOMES, outcome_data, outcome_record_id

    defn = load_builtin(VERIFICATION_OUTCOME)
    lists = builtin_json(VERIFICATION_OUTCOME)["choice_lists"]
    assert [c["value"] for c in lists["outcome"]] == list(OUTCOMES)
    assert [c["value"] for c in lists["data_error"]] == list(DATA_ERRORS)
    assert all(c["label"]["zh"] and c["label"]["en"] for c in lists["outcome"])
    context = EvaluationContext(today=date(2026, 12, 3))
    death = outcome_data("t-1", "data_error", detail="death", note="户主已故")
    assert validate_record(defn, death, context).errors == []
    assert [
        i.code
        for i in validate_record(defn, {"task_id": "t-1", "outcome": "data_error"}, context).errors
    ] == ["required"]
    assert outcome_record_id("t-1") == outcome_record_id("t-1") != outcome_record_id("t-2")
    assert len(outcome_record_id("t-1")) == 36
