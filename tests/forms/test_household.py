"""Household cross-checks that span instruments (DOMAIN.md §3-5 and the household core)."""

from __future__ import annotations

import copy
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forms.household import (
    DepartmentListError,
    DepartmentLists,
    HouseholdIssue,
    check_household,
    compare_with_departments,
)
from forms.identity import id_check_char
from forms.instruments.samples import DEFAULT_TODAY, problem_household, sample_household

TODAY = DEFAULT_TODAY
VILLAGE = "530102001201"


def make_id(birth: date, sequence: int) -> str:
    first17 = f"530102{birth:%Y%m%d}{sequence:03d}"
    return first17 + id_check_char(first17)


def member(row_id: str, name: str, labour: str, *, birth: date, sequence: int) -> dict:
    return {
        "_id": row_id,
        "name": name,
        "id_type": "resident_id",
        "id_number": make_id(birth, sequence),
        "relation": "户主" if row_id == "m1" else "配偶",
        "sex": "男" if sequence % 2 else "女",
        "health": ["健康"],
        "labour_capacity": labour,
        "education_level": "初中",
    }


def household(*labours: str) -> dict[str, dict]:
    members = [
        member(f"m{i}", name, labour, birth=date(1960 + i, 3, 1), sequence=10 + i)
        for i, (name, labour) in enumerate(zip(["王大山", "李秀英"], labours, strict=False), 1)
    ]
    return {
        "household_roster": {
            "village_code": VILLAGE,
            "household_no": "H1",
            "household_type": "普通农户",
            "members": members,
        },
        "monitoring_household": {
            "category": "边缘易致贫户",
            "household_type": "普通农户",
            "member_count": len(members),
            "risks": [],
        },
    }


def rules(records: dict, **kwargs: object) -> dict[str, HouseholdIssue]:
    found = check_household(records, village_code=VILLAGE, today=TODAY, **kwargs)
    return {i.check_id: i for i in found}


def test_samples_raise_nothing() -> None:
    for seed in range(80):
        assert check_household(sample_household(seed), village_code=VILLAGE, today=TODAY) == []


def test_lack_of_labour_when_members_can_work_is_an_error() -> None:
    records = household("普通劳动力", "丧失劳动力")
    records["monitoring_household"]["risks"] = ["缺劳动力"]
    issue = rules(records)["lack_of_labour_but_can_work"]
    assert issue.severity == "error"
    assert issue.form_id == "monitoring_household"
    assert issue.to_dict() == {
        "code": "household",
        "path": "risks",
        "row": None,
        "field": "risks",
        "message": {
            "zh": "风险类型为缺劳动力，但家庭成员中有普通劳动力或技能劳动力",
            "en": "the risk is lack of labour, but the roster has members with ordinary or "
            "skilled labour",
        },
        "severity": "error",
        "check": "lack_of_labour_but_can_work",
        "form_id": "monitoring_household",
    }
    # Weak labour only: lacking labour is plausible.
    weak = household("弱劳动力或半劳动力", "丧失劳动力")
    weak["monitoring_household"]["risks"] = ["缺劳动力"]
    assert "lack_of_labour_but_can_work" not in rules(weak)


def test_unstable_work_when_nobody_can_work_is_an_error() -> None:
    records = household("丧失劳动力", "无劳动力")
    records["monitoring_household"]["risks"] = ["因务工就业不稳"]
    assert rules(records)["unstable_work_but_nobody_can_work"].severity == "error"
    able = household("弱劳动力或半劳动力", "无劳动力")
    able["monitoring_household"]["risks"] = ["因务工就业不稳"]
    assert "unstable_work_but_nobody_can_work" not in rules(able)


def test_household_unable_to_work_is_not_removed() -> None:
    records = household("丧失劳动力", "无劳动力")
    records["monitoring_household"].update(risk_removed=True, removal_method="帮扶消除")
    assert rules(records)["removed_without_labour"].severity == "error"


def test_unstable_lifted_out_household_must_be_lifted_out_in_the_roster() -> None:
    records = household("普通劳动力", "普通劳动力")
    records["monitoring_household"].update(category="脱贫不稳定户", household_type="脱贫户")
    found = rules(records)
    assert found["unstable_needs_lifted_out_household"].severity == "error"
    assert found["household_type_differs_from_roster"].severity == "warning"
    records["household_roster"]["household_type"] = "脱贫户"
    assert rules(records) == {}


def test_member_count_differs_from_roster() -> None:
    records = household("普通劳动力", "普通劳动力")
    records["monitoring_household"]["member_count"] = 3
    assert rules(records)["member_count_differs_from_roster"].severity == "warning"


def test_education_and_insurance_rows_not_in_roster_warn() -> None:
    records = copy.deepcopy(sample_household(3))
    stranger = make_id(date(2014, 5, 6), 44)
    records["compulsory_education"]["children"].append(
        {
            "_id": "x1",
            "name": "外人",
            "id_number": stranger,
            "health": ["健康"],
            "schooling": "小学",
        }
    )
    insured = records["medical_insurance"]["members"]
    insured[0] = {**insured[0], "id_number": make_id(date(1970, 1, 1), 99)}
    found = check_household(records, village_code=VILLAGE, today=TODAY)
    by_form = {(i.form_id, i.check_id): i for i in found}
    education = by_form[("compulsory_education", "not_in_roster")]
    assert education.severity == "warning"
    assert education.path == "children/x1/id_number"
    assert education.row == len(records["compulsory_education"]["children"])
    assert by_form[("medical_insurance", "not_in_roster")].row == 1


def test_same_person_spelled_differently_is_in_the_roster() -> None:
    records = copy.deepcopy(sample_household(5))
    row = records["medical_insurance"]["members"][0]
    # Full-width digits and a lower-case x, as typed on a phone keyboard.
    row["id_number"] = row["id_number"].translate(
        str.maketrans("0123456789X", "０１２３４５６７８９ｘ")
    )
    assert check_household(records, village_code=VILLAGE, today=TODAY) == []


def test_school_age_member_missing_from_education() -> None:
    records = problem_household("dropout")
    records["compulsory_education"]["children"] = []
    found = rules(records)
    assert found["school_age_member_missing"].form_id == "compulsory_education"
    assert found["school_age_member_missing"].severity == "warning"


def test_dropout_for_illness_but_roster_says_healthy() -> None:
    records = problem_household("dropout")
    for row in records["compulsory_education"]["children"]:
        if "dropout_reason" in row:
            row["dropout_reason"] = "因病"
    assert rules(records)["dropout_illness_but_roster_healthy"].severity == "warning"


def test_duplicate_id_in_roster_is_an_error() -> None:
    records = household("普通劳动力", "普通劳动力")
    members = records["household_roster"]["members"]
    members[1]["id_number"] = members[0]["id_number"].lower()
    issue = rules(records)["duplicate_id_number"]
    assert (issue.severity, issue.row, issue.path) == ("error", 2, "members/m2/id_number")


def test_village_code_warnings_and_mismatch() -> None:
    records = household("普通劳动力", "普通劳动力")
    records["household_roster"]["village_code"] = "530102450201"
    found = rules(records)
    assert found["township_range"].severity == "warning"
    assert found["village_code_mismatch"].severity == "error"


def test_illness_risk_needs_household_medical_cost() -> None:
    records = copy.deepcopy(sample_household(11))
    records["monitoring_household"]["risks"] = ["因病"]
    records["medical_insurance"]["eligible_out_of_pocket"] = 0
    issue = rules(records)["illness_risk_needs_medical_cost"]
    assert (issue.form_id, issue.severity) == ("medical_insurance", "error")
    # Left empty is not "above 0" either (DOMAIN §4: must be > 0 when a risk is 因病).
    for empty in (None, ""):
        records["medical_insurance"]["eligible_out_of_pocket"] = empty
        issue = rules(records)["illness_risk_needs_medical_cost"]
        assert (issue.severity, issue.path) == ("error", "eligible_out_of_pocket")
        assert "应填写" in issue.message.zh
    del records["medical_insurance"]["eligible_out_of_pocket"]
    assert "illness_risk_needs_medical_cost" in rules(records)
    records["medical_insurance"]["eligible_out_of_pocket"] = 1200.5
    assert "illness_risk_needs_medical_cost" not in rules(records)


def test_housing_risk_but_safe_house_warns() -> None:
    records = household("普通劳动力", "普通劳动力")
    records["monitoring_household"]["risks"] = ["因安全住房"]
    records["housing_safety"] = {"appraisal_grade": "A"}
    assert rules(records)["housing_risk_but_house_appraised_safe"].severity == "warning"


@pytest.mark.parametrize("missing", ["household_roster", "monitoring_household"])
def test_missing_instruments_skip_their_rules(missing: str) -> None:
    records = household("丧失劳动力", "无劳动力")
    records["monitoring_household"]["risks"] = ["因务工就业不稳"]
    del records[missing]
    assert check_household(records, today=TODAY) == []


def test_errors_come_before_warnings() -> None:
    records = household("普通劳动力", "普通劳动力")
    records["monitoring_household"].update(risks=["缺劳动力"], member_count=5)
    severities = [i.severity for i in check_household(records, today=TODAY)]
    assert severities == sorted(severities, key=lambda s: s != "error")
    assert "error" in severities and "warning" in severities


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["_id", "id_number", "labour_capacity", "health", "risks"]), inner
        )
    ),
    max_leaves=10,
)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "household_roster",
                "monitoring_household",
                "compulsory_education",
                "medical_insurance",
                "housing_safety",
            ]
        ),
        st.dictionaries(
            st.sampled_from(
                ["members", "children", "risks", "member_count", "village_code", "category"]
            ),
            _VALUES,
        )
        | _VALUES,
    )
)
def test_odd_data_never_crashes_the_cross_checks(records: dict) -> None:
    for issue in check_household(records, village_code=VILLAGE, today=TODAY):
        assert issue.to_dict()["code"] == "household"


# --- department data ------------------------------------------------------------------------------


def department_view(records: dict) -> DepartmentLists:
    """Department lists that agree with what the team recorded."""
    insured = {
        row["id_number"]: "resident" if row["resident_insurance"] else "employee"
        for row in records["medical_insurance"]["members"]
    }
    enrolled = {
        row["id_number"]: row["schooling"]
        for row in records["compulsory_education"]["children"]
        if row.get("schooling")
    }
    return DepartmentLists(insured=insured, enrolled=enrolled, disability_cards={})


def test_agreeing_department_data_raises_nothing() -> None:
    for seed in range(40):
        records = sample_household(seed)
        assert compare_with_departments(records, department_view(records), today=TODAY) == []


def test_department_insurance_mismatches_are_verification_tasks() -> None:
    records = copy.deepcopy(sample_household(8))
    lists = department_view(records)
    rows = records["medical_insurance"]["members"]
    first = rows[0]["id_number"]
    insured = dict(lists.insured or {})
    insured[first] = "employee" if insured[first] == "resident" else "resident"
    if len(rows) > 1:
        del insured[rows[1]["id_number"]]
    # A roster member the survey forgot, whom the department has insured.
    newborn = make_id(date(2026, 5, 1), 62)
    records["household_roster"]["members"].append(
        member("m9", "新生儿", "无劳动力", birth=date(2026, 5, 1), sequence=62)
    )
    insured[newborn] = "resident"
    tasks = compare_with_departments(records, DepartmentLists(insured=insured), today=TODAY)
    found = {t.check_id: t for t in tasks}
    assert all(t.severity == "warning" for t in tasks)
    assert found["department_insurance_differs"].row == 1
    assert found["department_insurance_differs"].form_id == "medical_insurance"
    assert "department_insured_not_listed" in found
    if len(rows) > 1:
        assert found["department_not_insured"].row == 2


def test_department_enrolment_mismatches() -> None:
    records = problem_household("dropout", 2)
    children = records["compulsory_education"]["children"]
    dropout = next(row for row in children if "dropout_reason" in row)
    # 教育 still has the dropout on its rolls; nobody else is enrolled.
    lists = DepartmentLists(enrolled={dropout["id_number"].lower(): "七年级"})
    found = {t.check_id: t for t in compare_with_departments(records, lists, today=TODAY)}
    assert found["department_enrolled_but_dropout"].path.endswith("/schooling")
    in_school = [row for row in children if row.get("schooling") in ("小学", "初中")]
    assert ("department_not_enrolled" in found) == bool(in_school)


def test_department_disability_assistance_and_housing() -> None:
    records = household("普通劳动力", "普通劳动力")
    head_id = records["household_roster"]["members"][0]["id_number"]
    wife_id = records["household_roster"]["members"][1]["id_number"]
    records["housing_safety"] = {"appraisal_grade": "B"}
    lists = DepartmentLists(
        disability_cards={wife_id: "53010219620301002242"},
        assistance={head_id: "低保", wife_id: "低保"},
        dangerous_houses={head_id: "D"},
    )
    found = {t.check_id: t for t in compare_with_departments(records, lists, today=TODAY)}
    assert found["department_disability_card"].row == 2
    assert found["department_assistance_flag_missing"].path == "low_income_flags"
    assert found["department_appraisal_differs"].form_id == "housing_safety"
    tasks = compare_with_departments(records, lists, today=TODAY)
    assert [t.check_id for t in tasks].count("department_assistance_flag_missing") == 1
    records["household_roster"]["low_income_flags"] = ["农村低保户"]
    records["household_roster"]["members"][1]["health"] = ["残疾"]
    records["housing_safety"] = {"appraisal_grade": "D"}
    assert compare_with_departments(records, lists, today=TODAY) == []


def test_missing_department_lists_compare_nothing() -> None:
    records = problem_household("dropout", 2)
    assert compare_with_departments(records, DepartmentLists(), today=TODAY) == []


def test_department_list_keys_must_be_id_numbers() -> None:
    with pytest.raises(DepartmentListError) as err:
        DepartmentLists(insured={"张三": "resident"})
    assert err.value.code == "department_list_invalid"
