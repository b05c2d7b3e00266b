"""validate_record: types, required, relevance, constraints, repeats, checks, cleaned output."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forms import load_definition
from forms.definition import FormDefinition
from forms.expressions import EvaluationContext
from forms.identity import id_check_char
from forms.validation import Issue, validate_record
from tests.forms.conftest import HOUSING_V1

CONTEXT = EvaluationContext(today=date(2026, 11, 25), config={"monitoring_line": 8700})
HASH = "sha256:" + "ab" * 32
HOUSING_DEFN = load_definition(HOUSING_V1)


@pytest.fixture
def defn(housing_doc: dict[str, Any]) -> FormDefinition:
    return load_definition(housing_doc)


def good_record() -> dict[str, Any]:
    return {
        "head_name": "张三",
        "build_year": 1998,
        "has_house": True,
        "grade": "C",
        "method": "维修加固",
        "subsidy": 12000.5,
        "visited": "2026-11-20",
        "photo": HASH,
        "location": {"lat": 25.04, "lon": 102.71, "accuracy": 5},
        "issues": ["roof", "wall"],
        "members": [
            {"_id": "m1", "name": "张三", "age": 50},
            {"_id": "m2", "name": "张小", "age": 12, "schooling": "在校"},
        ],
    }


def codes(issues: list[Issue]) -> set[tuple[str, str]]:
    return {(i.code, i.path) for i in issues}


def test_a_good_record_validates_and_is_cleaned(defn: FormDefinition) -> None:
    result = validate_record(defn, good_record(), CONTEXT)
    assert result.ok, result.errors
    assert result.warnings == []
    expected = good_record()
    expected["member_count"] = 2
    assert result.cleaned == expected


def test_lossless_coercion(defn: FormDefinition) -> None:
    record = good_record()
    record.update(
        build_year="1998",
        subsidy="12000.50",
        has_house="true",
        issues="roof wall roof",
        photo=HASH.upper().replace("SHA256", "sha256"),
        location="25.04 102.71",
    )
    record["members"][0]["age"] = 50.0
    result = validate_record(defn, record, CONTEXT)
    assert result.ok, result.errors
    assert result.cleaned["build_year"] == 1998
    assert result.cleaned["subsidy"] == 12000.5
    assert result.cleaned["has_house"] is True
    assert result.cleaned["issues"] == ["roof", "wall"]
    assert result.cleaned["photo"] == HASH
    assert result.cleaned["location"] == {"lat": 25.04, "lon": 102.71}
    assert result.cleaned["members"][0]["age"] == 50


@pytest.mark.parametrize(
    ("field", "typed", "expected"),
    [
        ("build_year", "１９９８", 1998),
        ("build_year", " １９９８　", 1998),
        ("subsidy", "１２０００．５", 12000.5),
        ("subsidy", "－３", -3),
        ("subsidy", "１２", 12),
    ],
)
def test_full_width_numbers_are_read_like_id_numbers(
    defn: FormDefinition, field: str, typed: str, expected: float
) -> None:
    record = good_record() | {field: typed}
    result = validate_record(defn, record, CONTEXT)
    assert result.cleaned[field] == expected and type(result.cleaned[field]) is type(expected)
    assert not [i for i in result.errors if i.field == field]


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("build_year", "1998.5", "type"),
        ("build_year", True, "type"),
        ("subsidy", "12,000", "type"),
        ("visited", "2026-02-30", "type"),
        ("visited", "20/11/2026", "type"),
        ("grade", "E", "choice"),
        ("issues", ["roof", "sky"], "choice"),
        ("issues", {"roof": True}, "type"),
        ("has_house", "yes", "type"),
        ("location", {"lat": 95, "lon": 10}, "range"),
        ("location", {"lat": 25, "lon": 10, "accuracy": -1}, "range"),
        ("location", {"lat": 25}, "type"),
        ("location", {"lat": 25, "lon": 10, "x": 1}, "type"),
        ("photo", "sha256:abc", "type"),
        ("head_name", ["张三"], "type"),
        ("members", {"_id": "m1"}, "type"),
    ],
)
def test_type_errors(defn: FormDefinition, field: str, value: Any, code: str) -> None:
    record = good_record()
    record[field] = value
    result = validate_record(defn, record, CONTEXT)
    found = [i for i in result.errors if i.path == field and i.code != "check"]
    assert [i.code for i in found] == [code]
    issue = found[0]
    assert issue.field == field and issue.row is None and issue.severity == "error"
    assert issue.message["zh"] and issue.message["en"]
    assert result.cleaned[field] == value  # what was typed is kept for correction


def test_required_and_required_expression(housing_doc: dict[str, Any]) -> None:
    housing_doc["fields"][5]["required"] = "${grade} = 'D'"
    defn = load_definition(housing_doc)
    record = good_record()
    del record["has_house"]
    del record["members"][0]["name"]
    result = validate_record(defn, record, CONTEXT)
    assert codes(result.errors) == {("required", "has_house"), ("required", "members/m1/name")}
    row_issue = next(i for i in result.errors if i.path == "members/m1/name")
    assert (row_issue.row, row_issue.field) == (1, "name")
    record = good_record()
    record.update(grade="D", method="拆除重建", subsidy="")
    assert codes(validate_record(defn, record, CONTEXT).errors) == {("required", "subsidy")}


def test_relevance_drops_hidden_values_and_skips_required(defn: FormDefinition) -> None:
    record = good_record()
    record["has_house"] = False  # grade (required) and method become hidden
    record["members"][0]["schooling"] = "已毕业"  # age 50: not asked
    result = validate_record(defn, record, CONTEXT)
    assert result.ok, result.errors
    assert "grade" not in result.cleaned and "method" not in result.cleaned
    assert "schooling" not in result.cleaned["members"][0]
    assert result.cleaned["members"][1]["schooling"] == "在校"


def test_hidden_field_with_a_bad_value_is_dropped_not_reported(defn: FormDefinition) -> None:
    record = good_record()
    record["has_house"] = False
    record["grade"] = "not-a-choice"
    result = validate_record(defn, record, CONTEXT)
    assert result.ok, result.errors
    assert "grade" not in result.cleaned


def test_constraints_with_the_field_message(defn: FormDefinition) -> None:
    record = good_record()
    record["build_year"] = 2027
    record["members"][1]["age"] = 140
    result = validate_record(defn, record, CONTEXT)
    assert codes(result.errors) == {("constraint", "build_year"), ("constraint", "members/m2/age")}
    year = next(i for i in result.errors if i.path == "build_year")
    assert year.message["zh"] == "年份应在1900年至今年之间"
    age = next(i for i in result.errors if i.field == "age")
    assert age.row == 2 and age.message["en"]


def test_repeat_rows_limits_and_ids(defn: FormDefinition) -> None:
    record = good_record()
    record["members"] = []
    result = validate_record(defn, record, CONTEXT)
    assert ("rows", "members") in codes(result.errors)
    assert ("check", "members") in codes(result.errors)  # c_one_head
    record["members"] = [{"_id": f"r{i}", "name": "x"} for i in range(21)]
    assert ("rows", "members") in codes(validate_record(defn, record, CONTEXT).errors)
    record["members"] = [{"name": "a"}, {"_id": "x", "name": "b"}, {"_id": "x", "name": "c"}, 7]
    result = validate_record(defn, record, CONTEXT)
    found = codes(result.errors)
    assert ("row_id", "members/#1") in found
    assert ("row_id", "members/#3") in found
    assert ("type", "members/#4") in found


def test_unknown_fields_are_warnings_and_kept(defn: FormDefinition) -> None:
    record = good_record()
    record["phone"] = "13800138000"
    record["members"][0]["nickname"] = "老张"
    result = validate_record(defn, record, CONTEXT)
    assert result.ok
    assert codes(result.warnings) == {
        ("unknown_field", "phone"),
        ("unknown_field", "members/m1/nickname"),
    }
    assert result.cleaned["phone"] == "13800138000"
    assert result.cleaned["members"][0]["nickname"] == "老张"


def test_checks_error_and_warning(defn: FormDefinition) -> None:
    record = good_record()
    record["method"] = "拆除重建"
    result = validate_record(defn, record, CONTEXT)
    assert result.ok
    [warning] = result.warnings
    assert (warning.code, warning.path, warning.check_id) == ("check", "method", "c_grade_method")
    assert warning.message["zh"] == "C级危房一般应维修加固"
    assert warning.to_dict() == {
        "code": "check",
        "path": "method",
        "row": None,
        "field": "method",
        "message": {"zh": "C级危房一般应维修加固", "en": "A C-grade house is normally repaired"},
        "severity": "warning",
        "check": "c_grade_method",
    }


def test_checks_inside_a_repeat_run_per_row(housing_doc: dict[str, Any]) -> None:
    housing_doc["checks"].append(
        {
            "id": "c_school_age",
            "severity": "error",
            "field": "members/schooling",
            "rule": "${schooling} != '辍学' or ${has_house}",
            "message": {"zh": "辍学需核实", "en": "Dropout needs a check"},
        }
    )
    defn = load_definition(housing_doc)
    record = good_record()
    record["has_house"] = False
    record["members"].append({"_id": "m3", "name": "小李", "age": 10, "schooling": "辍学"})
    record["members"].append({"_id": "m4", "name": "老李", "age": 70, "schooling": "辍学"})
    result = validate_record(defn, record, CONTEXT)
    # m4 is 70: schooling is hidden there, so the check does not run for that row.
    assert codes(result.errors) == {("check", "members/m3/schooling")}
    assert result.errors[0].row == 3


def test_calculations_and_config(housing_doc: dict[str, Any]) -> None:
    housing_doc["fields"].append(
        {
            "name": "below_line",
            "type": "calculate",
            "calculate": "${subsidy} div count(${members}) < config('monitoring_line')",
        }
    )
    housing_doc["fields"].append(
        {"name": "next_visit", "type": "date", "label": "下次", "calculate": "${visited} + 30"}
    )
    defn = load_definition(housing_doc)
    record = good_record()
    record["member_count"] = 99  # a stale computed value is replaced
    result = validate_record(defn, record, CONTEXT)
    assert result.ok, result.errors
    assert result.cleaned["member_count"] == 2
    assert result.cleaned["below_line"] is True
    assert result.cleaned["next_visit"] == "2026-12-20"
    high = EvaluationContext(today=CONTEXT.today, config={"monitoring_line": 1000})
    assert validate_record(defn, record, high).cleaned["below_line"] is False


def test_expression_failures_are_warnings_not_crashes(housing_doc: dict[str, Any]) -> None:
    housing_doc["fields"][0]["constraint"] = ". + 1 > 0"  # text + number: an authoring mistake
    defn = load_definition(housing_doc)
    result = validate_record(defn, good_record(), CONTEXT)
    assert result.ok
    assert codes(result.warnings) == {("evaluation", "head_name")}


def test_not_an_object(defn: FormDefinition) -> None:
    result = validate_record(defn, ["x"], CONTEXT)  # type: ignore[arg-type]
    assert [i.code for i in result.errors] == ["type"]


def test_old_version_record_validates_against_its_own_version(
    housing_doc: dict[str, Any],
) -> None:
    v1 = load_definition(housing_doc)
    v2_doc = copy.deepcopy(housing_doc)
    v2_doc["version"] = 2
    v2_doc["fields"][0]["name"] = "householder"
    v2_doc["upgrade"] = {"from_version": 1, "renames": {"head_name": "householder"}}
    v2 = load_definition(v2_doc)
    record = good_record()
    assert validate_record(v1, record, CONTEXT).warnings == []
    assert ("unknown_field", "head_name") in codes(validate_record(v2, record, CONTEXT).warnings)


# --- property: records generated to satisfy the definition validate -----------------------------

SMALL = {
    "id": "small",
    "version": 1,
    "title": "小表",
    "fields": [
        {"name": "name", "type": "text", "label": "姓名", "required": True},
        {
            "name": "age",
            "type": "integer",
            "label": "年龄",
            "constraint": ". >= 0 and . <= 120",
            "required": True,
        },
        {
            "name": "school",
            "type": "select_one",
            "label": "在校",
            "choices": "yn",
            "relevant": "${age} >= 6 and ${age} <= 16",
            "required": True,
        },
        {"name": "income", "type": "decimal", "label": "收入", "constraint": ". >= 0"},
        {"name": "born", "type": "date", "label": "出生", "constraint": ". <= today()"},
        {"name": "risks", "type": "select_multiple", "label": "风险", "choices": "risk"},
        {
            "name": "visits",
            "type": "repeat",
            "label": "走访",
            "max_rows": 3,
            "fields": [
                {"name": "on", "type": "date", "label": "日期", "required": True},
                {"name": "ok", "type": "boolean", "label": "完成"},
            ],
        },
    ],
    "choice_lists": {
        "yn": [{"value": "yes", "label": "是"}, {"value": "no", "label": "否"}],
        "risk": [{"value": v, "label": v} for v in ("因病", "因学", "因残")],
    },
    "checks": [
        {
            "id": "c_income",
            "severity": "error",
            "field": "income",
            "rule": "${income} = '' or ${income} < 10000000",
            "message": "收入过高",
        }
    ],
}
SMALL_DEFN = load_definition(SMALL)


@st.composite
def small_records(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": draw(st.text(min_size=1, max_size=10).filter(str.strip)),
        "age": draw(st.integers(0, 120)),
    }
    if 6 <= record["age"] <= 16:
        record["school"] = draw(st.sampled_from(["yes", "no"]))
    if draw(st.booleans()):
        record["income"] = draw(st.one_of(st.integers(0, 9_999_999), st.floats(0, 9_999_999)))
    if draw(st.booleans()):
        record["born"] = draw(st.dates(date(1900, 1, 1), date(2026, 11, 25))).isoformat()
    if draw(st.booleans()):
        record["risks"] = draw(st.lists(st.sampled_from(["因病", "因学", "因残"]), unique=True))
    visits = draw(st.lists(st.dates(), max_size=3))
    if visits:
        record["visits"] = [
            {"_id": f"v{i}", "on": d.isoformat(), "ok": draw(st.booleans())}
            for i, d in enumerate(visits)
        ]
    return record


@settings(max_examples=150, deadline=None)
@given(small_records())
def test_records_meeting_the_constraints_validate(record: dict[str, Any]) -> None:
    result = validate_record(SMALL_DEFN, record, CONTEXT)
    assert result.ok, [i.to_dict() for i in result.errors]
    assert result.warnings == []
    expected = {k: v for k, v in record.items() if v != []}
    assert result.cleaned == expected
    # Validating the cleaned record again changes nothing.
    assert validate_record(SMALL_DEFN, result.cleaned, CONTEXT).cleaned == result.cleaned


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["name", "age", "school", "visits", "x"]),
        st.from_type(object).filter(lambda v: not callable(v))
        | st.none()
        | st.integers()
        | st.text(max_size=5)
        | st.lists(
            st.dictionaries(st.text(max_size=3), st.integers() | st.text(max_size=3)), max_size=2
        ),
    )
)
def test_any_json_like_record_gives_issues_not_exceptions(record: dict[str, Any]) -> None:
    result = validate_record(SMALL_DEFN, record, CONTEXT)
    assert all(i.code and i.message["zh"] for i in result.issues)


def test_messages_name_the_field_by_its_label(defn: FormDefinition) -> None:
    record = good_record()
    del record["has_house"]
    record["members"][0]["age"] = -1
    result = validate_record(defn, record, CONTEXT)
    required = next(i for i in result.errors if i.code == "required")
    assert required.message == {"zh": "“是否有房”为必填项", "en": "has_house is required"}
    constraint = next(i for i in result.errors if i.code == "constraint")
    assert constraint.message["zh"] == "“年龄”填写的值不符合要求"


def test_a_calculation_below_is_done_before_the_question_that_reads_it() -> None:
    doc = {
        "id": "order",
        "version": 1,
        "title": "顺序",
        "fields": [
            {
                "name": "why_poor",
                "type": "text",
                "label": "原因",
                "relevant": "${per_capita} < 5000",
                "required": True,
            },
            {
                "name": "members",
                "type": "repeat",
                "label": "成员",
                "fields": [
                    {"name": "note", "type": "text", "label": "说明", "relevant": "${share} > 0"},
                    {"name": "share", "type": "calculate", "calculate": "${income} div 2"},
                ],
            },
            {"name": "income", "type": "decimal", "label": "收入"},
            {
                "name": "per_capita",
                "type": "calculate",
                "calculate": "${income} div count(${members})",
            },
            {"name": "a", "type": "calculate", "calculate": "${b}"},
            {"name": "b", "type": "calculate", "calculate": "coalesce(${a}, 1)"},
        ],
    }
    defn = load_definition(doc)
    assert [f.name for f in defn.evaluation_order()] == [
        "income",
        "members",
        "per_capita",
        "why_poor",
        "a",
        "b",
    ]
    assert [f.name for f in defn.evaluation_order("members")] == ["share", "note"]
    record = {"income": 6000, "members": [{"_id": "m1", "note": "x"}, {"_id": "m2"}]}
    result = validate_record(defn, record, CONTEXT)
    assert codes(result.errors) == {("required", "why_poor")}
    assert result.cleaned["per_capita"] == 3000
    assert result.cleaned["members"][0] == {"_id": "m1", "note": "x", "share": 3000}
    assert "a" not in result.cleaned  # the a <-> b cycle runs in document order: b is empty then
    assert result.cleaned["b"] == 1
    record["income"] = 0  # share 0: note is hidden in every row and dropped
    result = validate_record(defn, record, CONTEXT)
    assert result.cleaned["members"][0] == {"_id": "m1", "share": 0}


def test_a_bad_row_does_not_stop_the_other_rows_being_checked(defn: FormDefinition) -> None:
    record = good_record()
    record["members"] = [{"name": "无编号"}, {"_id": "m2", "age": 30}]
    found = codes(validate_record(defn, record, CONTEXT).errors)
    assert found == {("row_id", "members/#1"), ("required", "members/m2/name")}


def test_a_hidden_repeat_drops_its_rows_without_reporting_them(
    housing_doc: dict[str, Any],
) -> None:
    housing_doc["fields"][10]["relevant"] = "${has_house}"
    housing_doc["checks"] = []
    defn = load_definition(housing_doc)
    record = good_record()
    record["has_house"] = False
    record["members"] = [{"name": "无编号", "age": "很老"}, 7]
    result = validate_record(defn, record, CONTEXT)
    assert result.ok, result.errors
    assert "members" not in result.cleaned


VALUE_BY_FIELD: dict[str, st.SearchStrategy[Any]] = {
    "head_name": st.text(max_size=4),
    "build_year": st.one_of(st.integers(1800, 2030), st.sampled_from(["1990", "x"])),
    "has_house": st.one_of(st.booleans(), st.just("true"), st.none()),
    "grade": st.sampled_from(["A", "B", "C", "D", "E", ""]),
    "method": st.sampled_from(["维修加固", "拆除重建", "x"]),
    "subsidy": st.one_of(st.floats(0, 1e6), st.integers(0, 10**6), st.just("12.5")),
    "visited": st.one_of(st.dates().map(date.isoformat), st.just("2026-02-30")),
    "photo": st.sampled_from([HASH, HASH.upper().replace("SHA256", "sha256"), "bad"]),
    "location": st.one_of(
        st.fixed_dictionaries({"lat": st.floats(-100, 100), "lon": st.floats(-200, 200)}),
        st.just("25 102"),
    ),
    "issues": st.lists(st.sampled_from(["roof", "wall", "base", "sky"]), max_size=4),
    "extra": st.integers(),
}
ROW_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "name": st.text(max_size=3),
    "id_number": st.text(max_size=3),
    "age": st.one_of(st.integers(-5, 140), st.just("12")),
    "schooling": st.text(max_size=3),
}


@st.composite
def housing_records(draw: st.DrawFn) -> dict[str, Any]:
    record = {name: draw(values) for name, values in VALUE_BY_FIELD.items() if draw(st.booleans())}
    if draw(st.booleans()):
        ids = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=4, unique=True))
        record["members"] = [
            {"_id": i, **{k: draw(v) for k, v in ROW_VALUES.items() if draw(st.booleans())}}
            for i in ids
        ]
    return record


@settings(max_examples=150, deadline=None)
@given(housing_records())
def test_cleaning_is_idempotent(record: dict[str, Any]) -> None:
    first = validate_record(HOUSING_DEFN, record, CONTEXT)
    second = validate_record(HOUSING_DEFN, first.cleaned, CONTEXT)
    assert second.cleaned == first.cleaned
    assert [i.to_dict() for i in second.issues] == [i.to_dict() for i in first.issues]


UNKNOWN_DOC: dict[str, Any] = {
    "id": "unknown_mini",
    "version": 1,
    "title": "未知",
    "fields": [
        {"name": "count", "type": "integer", "label": "人数", "constraint": ". >= 0"},
        {"name": "code", "type": "integer", "label": "代码"},
        {"name": "double", "type": "calculate", "calculate": "${count} * 2"},
        {
            "name": "big",
            "type": "text",
            "label": "大",
            "relevant": "${double} > 4",
            "required": True,
        },
        {"name": "also", "type": "text", "label": "也", "relevant": "${code} = 1"},
        {"name": "needs", "type": "text", "label": "需", "required": "${double} > 4"},
        {
            "name": "rows",
            "type": "repeat",
            "label": "行",
            "relevant": "${double} > 4",
            "min_rows": 1,
            "fields": [{"name": "x", "type": "text", "label": "X"}],
        },
    ],
}


@pytest.mark.parametrize("count", [-1, "many"])
def test_relevance_reading_an_undetermined_value_keeps_the_answers(count: Any) -> None:
    defn = load_definition(UNKNOWN_DOC)
    data = {"count": count, "big": "typed", "rows": [{"_id": "r1", "x": "y"}]}
    result = validate_record(defn, data, CONTEXT)
    assert [i.path for i in result.errors] == ["count"]
    assert result.cleaned["big"] == "typed"
    assert result.cleaned["rows"] == [{"_id": "r1", "x": "y"}]
    # Empty answers under an unknown relevance or requirement are not demanded.
    result = validate_record(defn, {"count": count}, CONTEXT)
    assert [i.path for i in result.errors] == ["count"]


def test_relevance_false_on_determined_values_still_drops() -> None:
    defn = load_definition(UNKNOWN_DOC)
    # An optional value left empty is a determined empty: the answers it governs are stale.
    result = validate_record(defn, {"big": "stale", "also": "stale"}, CONTEXT)
    assert result.ok and result.cleaned == {}
    result = validate_record(defn, {"count": 1, "code": 2, "big": "x", "also": "y"}, CONTEXT)
    assert result.ok and result.cleaned == {"count": 1, "code": 2, "double": 2}
    result = validate_record(defn, {"count": 3}, CONTEXT)
    assert {(i.code, i.path) for i in result.errors} == {
        ("required", "big"),
        ("required", "needs"),
        ("rows", "rows"),
    }


def test_rows_after_a_bad_row_keep_their_numbers_and_duplicates_get_hash_paths() -> None:
    defn = load_definition(
        {
            "id": "rows_mini",
            "version": 1,
            "title": "行",
            "fields": [
                {
                    "name": "members",
                    "type": "repeat",
                    "label": "成员",
                    "fields": [
                        {"name": "name", "type": "text", "label": "姓名", "required": True},
                        {
                            "name": "age",
                            "type": "integer",
                            "label": "年龄",
                            "constraint": ". < 150",
                        },
                        {"name": "note", "type": "integer", "label": "备注"},
                    ],
                }
            ],
            "checks": [
                {
                    "id": "c1",
                    "severity": "warning",
                    "field": "members/age",
                    "rule": "${age} < 100",
                    "message": "老",
                }
            ],
        }
    )
    data = {
        "members": [
            "garbage",
            {"_id": "r2", "age": 120},
            {"_id": "r2", "age": 200, "note": "x"},
        ]
    }
    result = validate_record(defn, data, CONTEXT)
    found = sorted((i.code, i.path, i.row) for i in result.issues)
    assert found == [
        ("check", "members/#3/age", 3),
        ("check", "members/r2/age", 2),
        ("constraint", "members/#3/age", 3),
        ("required", "members/#3/name", 3),
        ("required", "members/r2/name", 2),
        ("row_id", "members/#3", 3),
        ("type", "members/#1", 1),
        ("type", "members/#3/note", 3),
    ]
    assert result.cleaned["members"] == [
        "garbage",
        {"_id": "r2", "age": 120},
        {"_id": "r2", "age": 200, "note": "x"},
    ]


def test_a_failed_id_valid_constraint_keeps_its_own_message_when_the_id_is_valid() -> None:
    defn = load_definition(
        {
            "id": "id_mini",
            "version": 1,
            "title": "证件",
            "fields": [
                {"name": "born_1990s", "type": "boolean", "label": "九十年代出生"},
                {
                    "name": "id_number",
                    "type": "text",
                    "label": "身份证号",
                    "constraint": "id-valid(.) and (not(${born_1990s}) or "
                    "year(id-birth-date(.)) >= 1990)",
                    "constraint_message": {"zh": "与出生年代不符", "en": "birth decade differs"},
                },
            ],
        }
    )
    first17 = "53010219800101123"
    valid = first17 + id_check_char(first17)
    result = validate_record(defn, {"born_1990s": True, "id_number": valid}, CONTEXT)
    assert [i.message.zh for i in result.errors] == ["与出生年代不符"]
    wrong = first17 + ("0" if valid[17] != "0" else "1")
    result = validate_record(defn, {"born_1990s": True, "id_number": wrong}, CONTEXT)
    assert [i.message.zh for i in result.errors] == [
        f"身份证号无效：校验位错误（应为{valid[17]}），请核对是否录错"
    ]
