"""XLSForm import/export: the supported subset, located refusals, round trips.

Workbooks are built with openpyxl inside the tests, cell by cell, the way county staff fill them.
"""

from __future__ import annotations

import copy
import io
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from forms.definition import FormDefinition, FormDefinitionError, dump_definition, load_definition
from forms.instruments import BUILTIN_IDS, builtin_json, load_builtin
from forms.xlsform import (
    MAX_WORKBOOK_BYTES,
    XLSFormError,
    XLSFormIssue,
    export_xlsform,
    import_xlsform,
    load_xlsform,
    read_xlsform,
)
from tests.forms.conftest import HOUSING_V1

Rows = list[list[Any]]

SETTINGS: Rows = [
    ["form_id", "version", "form_title", "form_title::en"],
    ["housing_check", 1, "住房安全核查", "Housing check"],
]
CHOICES: Rows = [
    ["list_name", "name", "label", "label::en", "label::ug"],
    ["yes_no", "yes", "是", "Yes", "ھەئە"],
    ["yes_no", "no", "否", "No", "ياق"],
    ["grade", "A", "A级", "Grade A", None],
    ["grade", "B", "B级", "Grade B", None],
    ["grade", "C", "C级", "Grade C", None],
    ["grade", "D", "D级", "Grade D", None],
    ["structure", 1, "土坯房", "Adobe", None],
    ["structure", 2, "砖混", "Brick-concrete", None],
    ["health", "healthy", "健康", "Healthy", None],
    ["health", "chronic", "长期慢性病", "Chronic illness", None],
]


def workbook(
    survey: Rows,
    *,
    choices: Rows | None = CHOICES,
    settings_rows: Rows | None = SETTINGS,
    checks: Rows | None = None,
    upgrade: Rows | None = None,
    extra: dict[str, Rows] | None = None,
) -> io.BytesIO:
    """Build an .xlsx in memory from rows of cells (None = empty cell)."""
    wb = openpyxl.Workbook()
    first = wb.worksheets[0]
    first.title = "survey"
    sheets: dict[str, Rows | None] = {
        "choices": choices,
        "settings": settings_rows,
        "checks": checks,
        "upgrade": upgrade,
    }
    for row in survey:
        first.append(row)
    for title, rows in {**sheets, **(extra or {})}.items():
        if rows is None:
            continue
        ws = wb.create_sheet(title)
        for row in rows:
            ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    buf.seek(0)
    return buf


def refusal(source: io.BytesIO | Path) -> list[XLSFormIssue]:
    with pytest.raises(XLSFormError) as info:
        import_xlsform(source)
    assert info.value.issues, "an XLSFormError always carries at least one issue"
    return info.value.issues


def only_issue(source: io.BytesIO | Path) -> XLSFormIssue:
    issues = refusal(source)
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


HEAD = ["type", "name", "label", "label::en"]


# --------------------------------------------------------------------------------------------
# A realistic hand-made form


def realistic_form() -> io.BytesIO:
    survey: Rows = [
        [
            "type",
            "name",
            "label",
            "label::en",
            "label::ug",
            "hint",
            "required",
            "relevant",
            "constraint",
            "constraint_message",
            "constraint_message::en",
            "calculation",
            "appearance",
            "unit",
            "merge",
            "sensitive",
            "min_rows",
            "max_rows",
            "$kuid",
        ],
        ["boolean", "has_house", "是否有自有住房", "Owns a house", "ئۆيى بارمۇ", None, True],
        [
            "select_one grade",
            "appraisal_grade",
            "鉴定等级",
            "Appraisal grade",
            None,
            "按农村住房安全性鉴定技术导则",
            "yes",
            "${has_house} = true()",
            None,
            None,
            None,
            None,
            "minimal",
            None,
            "review",
        ],
        [
            "begin_group",
            "renovation",
            "改造情况",
            "Renovation",
            None,
            None,
            None,
            "${appraisal_grade} = 'C' or ${appraisal_grade} = 'D'",
        ],
        [
            "integer",
            "renovation_year",
            "改造年份",
            "Year",
            None,
            None,
            "true()",
            None,
            ". >= 2013",
            "改造年份不早于2013年",
            "Not before 2013",
        ],
        [
            "decimal",
            "subsidy",
            "补助资金",
            "Subsidy",
            None,
            None,
            None,
            "${renovation_year} > 0",
            ". >= 0",
            None,
            None,
            None,
            None,
            "元",
        ],
        ["end_group"],
        ["select_multiple structure", "structure", "结构类型", "Structure"],
        ["date", "visit_date", "走访日期", "Visit date"],
        ["geopoint", "location", "房屋位置", "Location"],
        ["image", "house_photo", "房屋照片", "House photo"],
        ["note", "members_note", "以下填写家庭成员", "Members follow"],
        [
            "begin repeat",
            "members",
            "家庭成员",
            "Members",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            1,
            20,
        ],
        ["text", "name", "姓名", "Name", "ئىسمى", None, "yes"],
        [
            "text",
            "id_number",
            "身份证号",
            "ID number",
            None,
            "18位",
            "yes",
            None,
            "string-length(.) = 18",
            None,
            None,
            None,
            None,
            None,
            None,
            "yes",
        ],
        [
            "select_multiple health",
            "health",
            "健康状况",
            "Health",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            True,
        ],
        ["end repeat", "members"],
        [
            "calculate",
            "member_count",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            "count(${members})",
        ],
        [None],
        [
            "text",
            "remark",
            "备注",
            "Remark",
            None,
            None,
            "no",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            "lww",
            "no",
            None,
            None,
            "x1y2",
        ],
    ]
    checks: Rows = [
        ["id", "severity", "field", "rule", "message", "message::en"],
        [
            "c_photo_for_danger",
            "warning",
            "house_photo",
            "not(${appraisal_grade} = 'D' and ${house_photo} = '')",
            "D级危房应拍照留证",
            "A D-grade house should be photographed",
        ],
        [
            "c_member_id",
            "error",
            "members/id_number",
            "string-length(${id_number}) = 18",
            "身份证号应为18位",
            "ID must be 18 characters",
        ],
    ]
    return workbook(survey, checks=checks)


def test_realistic_form_imports_to_the_contract_document() -> None:
    doc = import_xlsform(realistic_form())

    assert doc["id"] == "housing_check"
    assert doc["version"] == 1
    assert doc["title"] == {"zh": "住房安全核查", "en": "Housing check"}
    assert doc["subject"] == "household"
    names = [f["name"] for f in doc["fields"]]
    # The group is flattened away: its questions sit at the top level in sheet order.
    assert names == [
        "has_house",
        "appraisal_grade",
        "renovation_year",
        "subsidy",
        "structure",
        "visit_date",
        "location",
        "house_photo",
        "members_note",
        "members",
        "member_count",
        "remark",
    ]
    by_name = {f["name"]: f for f in doc["fields"]}
    assert by_name["has_house"] == {
        "name": "has_house",
        "type": "boolean",
        "label": {"zh": "是否有自有住房", "en": "Owns a house", "ug": "ئۆيى بارمۇ"},
        "required": True,
    }
    grade = by_name["appraisal_grade"]
    assert grade["type"] == "select_one"
    assert grade["choices"] == "grade"
    assert grade["merge"] == "review"
    assert grade["hint"] == {"zh": "按农村住房安全性鉴定技术导则"}
    assert grade["relevant"] == "${has_house} = true()"
    assert "appearance" not in grade
    group_rule = "${appraisal_grade} = 'C' or ${appraisal_grade} = 'D'"
    assert by_name["renovation_year"]["relevant"] == group_rule
    assert by_name["renovation_year"]["required"] is True  # true() reads as required
    assert by_name["renovation_year"]["constraint_message"] == {
        "zh": "改造年份不早于2013年",
        "en": "Not before 2013",
    }
    assert by_name["subsidy"]["relevant"] == f"({group_rule}) and (${{renovation_year}} > 0)"
    assert by_name["subsidy"]["unit"] == "元"
    assert by_name["structure"]["type"] == "select_multiple"
    members = by_name["members"]
    assert members["type"] == "repeat"
    assert members["min_rows"] == 1 and members["max_rows"] == 20
    assert [f["name"] for f in members["fields"]] == ["name", "id_number", "health"]
    assert members["fields"][1]["sensitive"] is True
    assert members["fields"][2]["sensitive"] is True  # Excel TRUE reads as yes
    assert members["fields"][0]["label"]["ug"] == "ئىسمى"
    assert by_name["member_count"] == {
        "name": "member_count",
        "type": "calculate",
        "calculate": "count(${members})",
    }
    assert by_name["remark"] == {
        "name": "remark",
        "type": "text",
        "label": {"zh": "备注", "en": "Remark"},
        "merge": "lww",
    }
    # Choice names Excel stored as numbers come back as the text people typed.
    assert [c["value"] for c in doc["choice_lists"]["structure"]] == ["1", "2"]
    assert doc["choice_lists"]["yes_no"][0]["label"] == {"zh": "是", "en": "Yes", "ug": "ھەئە"}
    assert doc["choice_lists"]["grade"][0]["label"] == {"zh": "A级", "en": "Grade A"}
    assert doc["checks"][1] == {
        "id": "c_member_id",
        "severity": "error",
        "field": "members/id_number",
        "rule": "string-length(${id_number}) = 18",
        "message": {"zh": "身份证号应为18位", "en": "ID must be 18 characters"},
    }
    assert "upgrade" not in doc


def test_load_xlsform_gives_the_same_definition_as_the_document() -> None:
    defn = load_xlsform(realistic_form())
    assert isinstance(defn, FormDefinition)
    assert defn == load_definition(import_xlsform(realistic_form()))
    assert defn.merge_policy("appraisal_grade") == "review"
    assert defn.sensitive_paths() == {"members/id_number", "members/health"}


def test_import_reads_bytes_or_a_stream_and_never_a_path(tmp_path: Path) -> None:
    target = tmp_path / "housing.xlsx"
    target.write_bytes(realistic_form().getvalue())
    with target.open("rb") as stream:
        assert import_xlsform(stream) == import_xlsform(target.read_bytes())
    # the form engine does no file I/O: the CLI (or the server's upload) reads the file
    with pytest.raises(TypeError):
        import_xlsform(target)  # type: ignore[arg-type]


def test_label_languages_ug_bo_and_odk_bracket_style() -> None:
    survey: Rows = [
        ["type", "name", "label::zh", "label::ug", "label::Tibetan (bo)", "hint::zh", "hint::ug"],
        ["text", "head_name", "户主姓名", "ئائىلە باشلىقى", "ཁྱིམ་བདག", "填写全名", "تولۇق ئىسىم"],
    ]
    field = import_xlsform(workbook(survey))["fields"][0]
    assert field["label"] == {"zh": "户主姓名", "ug": "ئائىلە باشلىقى", "bo": "ཁྱིམ་བདག"}
    assert field["hint"] == {"zh": "填写全名", "ug": "تولۇق ئىسىم"}


def test_settings_cells_that_excel_made_numbers_are_read_as_text() -> None:
    settings_rows: Rows = [["form_id", "version", "form_title"], ["water", 3.0, "饮水安全"]]
    choices: Rows = [
        ["list_name", "name", "label"],
        ["source", 1.0, "自来水"],
        ["source", 2, "井水"],
    ]
    survey: Rows = [["type", "name", "label"], ["select_one source", "source", "水源"]]
    doc = import_xlsform(workbook(survey, choices=choices, settings_rows=settings_rows))
    assert doc["version"] == 3
    assert [c["value"] for c in doc["choice_lists"]["source"]] == ["1", "2"]


def test_nested_repeats_and_a_group_inside_a_repeat() -> None:
    survey: Rows = [
        ["type", "name", "label", "relevant"],
        ["begin_repeat", "members", "成员"],
        ["text", "name", "姓名"],
        ["begin_group", "schooling", "上学", "${age} < 17"],
        ["integer", "age", "年龄"],
        ["begin_repeat", "visits", "劝返记录"],
        ["date", "visit_date", "日期"],
        ["end_repeat", "visits"],
        ["end_group", "schooling"],
        ["end_repeat"],
        ["text", "name", "与成员同名的顶层题目"],
    ]
    doc = import_xlsform(workbook(survey))
    members = doc["fields"][0]
    assert [f["name"] for f in members["fields"]] == ["name", "age", "visits"]
    assert members["fields"][1]["relevant"] == "${age} < 17"
    visits = members["fields"][2]
    assert visits["relevant"] == "${age} < 17"
    assert visits["fields"] == [{"name": "visit_date", "type": "date", "label": {"zh": "日期"}}]
    # Names are unique per level: a top-level "name" next to members/name is fine.
    assert doc["fields"][1]["name"] == "name"


def test_nested_groups_combine_their_relevance() -> None:
    survey: Rows = [
        ["type", "name", "label", "relevant"],
        ["boolean", "a", "甲"],
        ["boolean", "b", "乙"],
        ["begin group", "outer", "外", "${a} = true()"],
        ["begin_group", "inner", None, "${b} = true()"],
        ["text", "deep", "内层题"],
        ["end_group"],
        ["end group"],
    ]
    deep = import_xlsform(workbook(survey))["fields"][2]
    assert deep["relevant"] == "(${a} = true()) and (${b} = true())"


def test_upgrade_sheet_reads_renames_and_drops() -> None:
    settings_rows: Rows = [["form_id", "version", "form_title"], ["housing_check", 2, "住房"]]
    survey: Rows = [
        ["type", "name", "label"],
        ["integer", "build_year", "建房年份"],
        ["begin_repeat", "members", "成员"],
        ["text", "full_name", "姓名"],
        ["end_repeat"],
    ]
    upgrade: Rows = [
        ["from_version", "action", "field", "new_name"],
        [1, "rename", "year_built", "build_year"],
        [1, "rename", "members/name", "members/full_name"],
        [1, "drop", "old_note", None],
    ]
    doc = import_xlsform(workbook(survey, settings_rows=settings_rows, upgrade=upgrade))
    assert doc["upgrade"] == {
        "from_version": 1,
        "renames": {"year_built": "build_year", "members/name": "members/full_name"},
        "drops": ["old_note"],
    }


def test_upgrade_sheet_with_only_from_version() -> None:
    settings_rows: Rows = [["form_id", "version", "form_title"], ["housing_check", 2, "住房"]]
    survey: Rows = [["type", "name", "label"], ["integer", "build_year", "建房年份"]]
    upgrade: Rows = [["from_version", "action", "field", "new_name"], [1]]
    doc = import_xlsform(workbook(survey, settings_rows=settings_rows, upgrade=upgrade))
    assert doc["upgrade"] == {"from_version": 1, "renames": {}, "drops": []}


# --------------------------------------------------------------------------------------------
# Refusals: each names sheet, row, column and header


def located(issue: XLSFormIssue) -> tuple[str | None, int | None, str | None, str | None, str]:
    return (issue.sheet, issue.row, issue.column, issue.header, issue.code)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param(
            [HEAD, ["slider", "score", "评分"]],
            ("survey", 2, "A", "type", "unknown_type"),
            id="unknown-type",
        ),
        pytest.param(
            [HEAD, ["select_one villages", "village", "村"]],
            ("survey", 2, "A", "type", "missing_choice_list"),
            id="missing-choice-list",
        ),
        pytest.param(
            [HEAD, ["text", "a", "甲"], ["begin_repeat", "members", "成员"], ["text", "n", "名"]],
            ("survey", 3, "A", "type", "unclosed_block"),
            id="unclosed-repeat",
        ),
        pytest.param(
            [HEAD, ["text", "a", "甲"], ["end_repeat"]],
            ("survey", 3, "A", "type", "unbalanced_block"),
            id="end-without-begin",
        ),
        pytest.param(
            [
                HEAD,
                ["begin_repeat", "m", "成员"],
                ["text", "n", "名"],
                ["end_group"],
                ["end_repeat"],
            ],
            ("survey", 4, "A", "type", "unbalanced_block"),
            id="end-group-closes-repeat",
        ),
        pytest.param(
            [HEAD, ["begin_repeat", "m", "成员"], ["text", "n", "名"], ["end_repeat", "x"]],
            ("survey", 4, "B", "name", "unbalanced_block"),
            id="end-repeat-wrong-name",
        ),
        pytest.param(
            [HEAD, ["text", "a", "甲"], ["integer", "a", "乙"]],
            ("survey", 3, "B", "name", "duplicate_name"),
            id="duplicate-name",
        ),
        pytest.param(
            [
                HEAD,
                ["text", "a", "甲"],
                ["begin_group", "g", "组"],
                ["text", "a", "乙"],
                ["end_group"],
            ],
            ("survey", 4, "B", "name", "duplicate_name"),
            id="duplicate-name-across-group",
        ),
        pytest.param(
            [HEAD, ["text", None, "甲"]],
            ("survey", 2, "B", "name", "empty_required"),
            id="empty-name",
        ),
        pytest.param(
            [HEAD, ["text", "a", None, None]],
            ("survey", 2, "C", "label", "empty_required"),
            id="empty-label",
        ),
        pytest.param(
            [HEAD, [None, "a", "甲"]],
            ("survey", 2, "A", "type", "empty_required"),
            id="empty-type",
        ),
        pytest.param(
            [["type", "name", "label", "label::zh"], ["text", "a", "甲", "甲"]],
            ("survey", 1, "D", "label::zh", "duplicate_column"),
            id="label-and-label-zh",
        ),
        pytest.param(
            [["type", "name", "label", "choice_filter"], ["text", "a", "甲", "x = 1"]],
            ("survey", 2, "D", "choice_filter", "misplaced_value"),
            id="choice-filter-on-text",
        ),
        pytest.param(
            [["type", "name", "label", "label::Chinese"], ["text", "a", "甲", "甲"]],
            ("survey", 1, "D", "label::Chinese", "duplicate_column"),
            id="language-name-not-code",
        ),
        pytest.param(
            [["type", "name", "label", "min_rows"], ["text", "a", "甲", 2]],
            ("survey", 2, "D", "min_rows", "misplaced_value"),
            id="min-rows-on-text",
        ),
        pytest.param(
            [["type", "name", "label", "merge"], ["text", "a", "甲", "maybe"]],
            ("survey", 2, "D", "merge", "bad_merge"),
            id="bad-merge",
        ),
        pytest.param(
            [["type", "name", "label", "sensitive"], ["text", "a", "甲", "sometimes"]],
            ("survey", 2, "D", "sensitive", "bad_flag"),
            id="bad-sensitive",
        ),
        pytest.param(
            [["type", "name", "label", "calculation"], ["calculate", "c", None, None]],
            ("survey", 2, "D", "calculation", "empty_required"),
            id="calculate-without-calculation",
        ),
        pytest.param(
            [
                ["type", "name", "label", "max_rows"],
                ["begin_repeat", "m", "成员", "many"],
                ["text", "n", "名"],
                ["end_repeat"],
            ],
            ("survey", 2, "D", "max_rows", "bad_number"),
            id="max-rows-not-a-number",
        ),
    ],
)
def test_survey_refusals_are_located(rows: Rows, expected: tuple[Any, ...]) -> None:
    issue = only_issue(workbook(rows))
    assert located(issue) == expected
    assert issue.message and issue.message_zh


SURVEY_ONE: Rows = [["type", "name", "label"], ["text", "a", "甲"]]


def warnings_of(source: io.BytesIO, filename: str | None = "housing.xlsx") -> list[XLSFormIssue]:
    return list(read_xlsform(source.getvalue(), filename).warnings)


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        pytest.param(
            lambda: workbook([HEAD, ["text", "a", "甲"], ["range", "score", "评分"]]),
            ("survey", 3, "A", "type", "type_mapped"),
            id="range",
        ),
        pytest.param(
            lambda: workbook([HEAD, ["start", "started"], ["text", "a", "甲"]]),
            ("survey", 2, "A", "type", "metadata_mapped"),
            id="metadata",
        ),
        pytest.param(
            lambda: workbook([HEAD, ["text", "Head-Name", "户主"]]),
            ("survey", 2, "B", "name", "renamed"),
            id="bad-name",
        ),
        pytest.param(
            lambda: workbook([HEAD, ["text", "a", None, "Only English"]]),
            ("survey", 1, "D", "label::en", "missing_zh"),
            id="label-without-zh",
        ),
        pytest.param(
            lambda: workbook(
                [["type", "name", "label", "bind::jr:preload"], ["text", "a", "甲", "x"]]
            ),
            ("survey", 1, "D", "bind::jr:preload", "ignored_column"),
            id="unknown-column",
        ),
        pytest.param(
            lambda: workbook([["type", "name", "label", "default"], ["note", "a", "甲", "x"]]),
            ("survey", 2, "D", "default", "ignored_column"),
            id="default-on-a-note",
        ),
        pytest.param(
            lambda: workbook(
                [["type", "name", "label", "appearance"], ["date", "d", "日期", "month-year"]]
            ),
            ("survey", 2, "D", "appearance", "ignored_appearance"),
            id="appearance-month-year",
        ),
        pytest.param(
            lambda: workbook(
                [
                    ["type", "name", "label", "required"],
                    ["begin_group", "g", "组", "yes"],
                    ["text", "n", "名"],
                    ["end_group"],
                ]
            ),
            ("survey", 2, "D", "required", "ignored_column"),
            id="required-on-group",
        ),
        pytest.param(
            lambda: workbook(
                SURVEY_ONE,
                choices=[["list_name", "name", "label", "filter"], ["grade", "A", "A级", "x"]],
            ),
            ("choices", 1, "D", "filter", "ignored_column"),
            id="choice-filter-column",
        ),
        pytest.param(
            lambda: workbook(
                SURVEY_ONE, settings_rows=[["form_id", "version", "form_title"], [None, 1, "住房"]]
            ),
            ("settings", 2, None, None, "id_from_file_name"),
            id="no-form-id",
        ),
        pytest.param(
            lambda: workbook(
                SURVEY_ONE,
                settings_rows=[["form_id", "version", "form_title"], ["Housing", 1, "住房"]],
            ),
            ("settings", 2, "A", "form_id", "renamed"),
            id="bad-form-id",
        ),
        pytest.param(
            lambda: workbook(
                SURVEY_ONE,
                settings_rows=[["form_id", "version", "form_title"], ["housing", "1.5", "住房"]],
            ),
            ("settings", 2, "B", "version", "version_mapped"),
            id="version-not-integer",
        ),
        pytest.param(
            lambda: workbook(
                SURVEY_ONE,
                settings_rows=[["form_id", "version", "form_title::en"], ["housing", 1, "Housing"]],
            ),
            ("settings", 1, "C", "form_title::en", "missing_zh"),
            id="title-without-zh",
        ),
        pytest.param(
            lambda: workbook(
                SURVEY_ONE,
                settings_rows=[
                    ["form_id", "version", "form_title"],
                    ["housing", 1, "住房"],
                    ["again", 2, "再来"],
                ],
            ),
            ("settings", 3, None, None, "extra_row"),
            id="two-settings-rows",
        ),
        pytest.param(
            lambda: workbook(
                SURVEY_ONE,
                choices=None,
                settings_rows=[
                    ["form_id", "version", "form_title", "default_language"],
                    ["housing", 1, "住房", "English (en)"],
                ],
            ),
            ("settings", 1, "C", "form_title", "missing_zh"),
            id="default-language",
        ),
        pytest.param(
            lambda: workbook(
                SURVEY_ONE,
                checks=[
                    ["id", "severity", "field", "rule", "message::en"],
                    ["c1", "error", "a", "${a} != ''", "A needed"],
                ],
            ),
            ("checks", 1, "E", "message::en", "missing_zh"),
            id="message-without-zh",
        ),
    ],
)
def test_what_odk_accepts_imports_with_a_located_warning(build: Any, expected: tuple) -> None:
    found = [located(w) for w in warnings_of(build())]
    assert expected in found
    assert all(w.message and w.message_zh for w in warnings_of(build()))


def test_formula_and_error_cells_read_as_pyxform_reads_them() -> None:
    # A formula is read as the value Excel last computed (a workbook written by a program has
    # none, so the cell is empty); an Excel error shows no value at all.
    issue = only_issue(workbook([HEAD, ["text", "a", '=CONCAT("户","主")']]))
    assert located(issue) == ("survey", 2, "C", "label", "empty_required")
    issue = only_issue(workbook([HEAD, ["text", "a", "#N/A"]]))
    assert located(issue) == ("survey", 2, "C", "label", "empty_required")


def test_duplicate_columns_explain_plain_label_only_when_it_matters() -> None:
    both = only_issue(workbook([["type", "name", "label", "label::zh"], ["text", "a", "甲", "甲"]]))
    assert "plain label means label::zh" in both.message
    twice = only_issue(workbook([["type", "name", "label", "name"], ["text", "a", "甲", "b"]]))
    assert located(twice) == ("survey", 1, "D", "name", "duplicate_column")
    assert "plain" not in twice.message


def test_empty_unknown_columns_and_staff_sheets_are_ignored() -> None:
    survey: Rows = [
        ["type", "name", "label", "media::image", "remarks_for_staff"],
        ["text", "a", "甲"],
    ]
    doc = import_xlsform(workbook(survey, extra={"说明": [["请按要求填写"]]}))
    assert doc["fields"] == [{"name": "a", "type": "text", "label": {"zh": "甲"}}]


def test_presentational_appearance_is_accepted_and_dropped() -> None:
    survey: Rows = [["type", "name", "label", "appearance"], ["text", "a", "甲", "multiline"]]
    assert import_xlsform(workbook(survey))["fields"][0] == {
        "name": "a",
        "type": "text",
        "label": {"zh": "甲"},
    }


@pytest.mark.parametrize(
    ("choices", "expected"),
    [
        pytest.param(
            [["list_name", "name", "label"], ["grade", "A", "A级"], ["grade", "A", "又一个A"]],
            ("choices", 3, "B", "name", "duplicate_choice"),
            id="duplicate-choice",
        ),
        pytest.param(
            [["list_name", "name", "label"], ["grade", "A", None]],
            ("choices", 2, "C", "label", "empty_required"),
            id="choice-without-label",
        ),
        pytest.param(
            [["list_name", "name", "label"], ["grade", None, "A级"]],
            ("choices", 2, "B", "name", "empty_required"),
            id="choice-without-name",
        ),
        pytest.param(
            [["list_name", "name", "label"], ["grade", "A", "A级"], [None, "B", "B级"]],
            ("choices", 3, "A", "list_name", "empty_required"),
            id="choice-without-list",
        ),
        pytest.param(
            [["list_name", "name", "label"], ["grade", "A 级", "A级"]],
            ("choices", 2, "B", "name", "schema"),
            id="choice-value-with-space",
        ),
    ],
)
def test_choices_refusals_are_located(choices: Rows, expected: tuple[Any, ...]) -> None:
    survey: Rows = [HEAD, ["select_one grade", "grade", "等级"]]
    issue = only_issue(workbook(survey, choices=choices))
    assert located(issue) == expected


@pytest.mark.parametrize(
    ("settings_rows", "expected"),
    [
        pytest.param(
            [["form_id", "version", "form_title"], ["住房", 1, "住房"]],
            ("settings", 2, "A", "form_id", "bad_name"),
            id="form-id-without-latin-letters",
        ),
    ],
)
def test_settings_refusals_are_located(settings_rows: Rows, expected: tuple[Any, ...]) -> None:
    issue = only_issue(workbook([HEAD, ["text", "a", "甲"]], settings_rows=settings_rows))
    assert located(issue) == expected


@pytest.mark.parametrize(
    ("kwargs", "expected_sheet", "expected_words"),
    [
        ({"survey": [["type", "label"], ["text", "甲"], ["integer", "乙"]]}, "survey", "name"),
        ({"survey": [["label"], ["甲"]]}, "survey", "type, name"),
        ({"choices": [["list", "name", "label"], ["grade", "A", "A级"]]}, "choices", "list_name"),
        ({"checks": [["id", "severity", "message"], ["c1", "error", "甲"]]}, "checks", "rule"),
    ],
)
def test_a_missing_column_is_reported_once(
    kwargs: dict[str, Any], expected_sheet: str, expected_words: str
) -> None:
    survey = kwargs.pop("survey", [HEAD, ["select_one grade", "g", "等级"]])
    issues = refusal(workbook(survey, **kwargs))
    missing = [i for i in issues if i.code == "missing_column"]
    assert len(missing) == 1
    assert (missing[0].sheet, missing[0].row) == (expected_sheet, 1)
    assert missing[0].message.endswith(f"lacks the column(s): {expected_words}")


def test_missing_sheets_are_named() -> None:
    wb = openpyxl.Workbook()
    wb.worksheets[0].title = "notes"
    wb.create_sheet("settings").append(["form_id"])
    buf = io.BytesIO()
    wb.save(buf)
    buf.seek(0)
    issues = refusal(buf)
    assert [(i.sheet, i.code) for i in issues] == [(None, "missing_sheet")]
    assert "survey" in issues[0].message


def test_odk_sheets_we_cannot_honour_are_refused() -> None:
    extra = {"external_choices": [["list_name", "name", "label"], ["village", "v1", "一村"]]}
    issue = only_issue(workbook([HEAD, ["text", "a", "甲"]], extra=extra))
    assert (issue.sheet, issue.row, issue.code) == ("external_choices", None, "unsupported_sheet")


@pytest.mark.parametrize(
    ("checks", "expected"),
    [
        pytest.param(
            [
                ["id", "severity", "field", "rule", "message"],
                ["c1", "fatal", "a", "${a} != ''", "甲必填"],
            ],
            ("checks", 2, "B", "severity", "bad_severity"),
            id="bad-severity",
        ),
        pytest.param(
            [
                ["id", "severity", "field", "rule", "message"],
                ["c1", "error", "nope", "${a} != ''", "甲必填"],
            ],
            ("checks", 2, "C", "field", "unknown_field"),
            id="unknown-field",
        ),
        pytest.param(
            [["id", "severity", "field", "rule", "message"], ["c1", "error", "a", None, "甲必填"]],
            ("checks", 2, "D", "rule", "empty_required"),
            id="empty-rule",
        ),
        pytest.param(
            [
                ["id", "severity", "field", "rule", "message"],
                ["c1", "error", "a", "1 = 1", "甲"],
                ["c1", "warning", "a", "1 = 1", "乙"],
            ],
            ("checks", 3, "A", "id", "duplicate_name"),
            id="duplicate-check-id",
        ),
    ],
)
def test_checks_refusals_are_located(checks: Rows, expected: tuple[Any, ...]) -> None:
    issue = only_issue(workbook([HEAD, ["text", "a", "甲"]], checks=checks))
    assert located(issue) == expected


V2: Rows = [["form_id", "version", "form_title"], ["housing", 2, "住房"]]


@pytest.mark.parametrize(
    ("settings_rows", "upgrade", "expected"),
    [
        pytest.param(
            V2,
            [["from_version", "action", "field", "new_name"], [1, "rename", "old", None]],
            ("upgrade", 2, "D", "new_name", "bad_name"),
            id="rename-without-new-name",
        ),
        pytest.param(
            V2,
            [["from_version", "action", "field", "new_name"], [1, "merge", "old", "a"]],
            ("upgrade", 2, "B", "action", "bad_action"),
            id="unknown-action",
        ),
        pytest.param(
            V2,
            [
                ["from_version", "action", "field", "new_name"],
                [1, "drop", "x", None],
                [0, "drop", "y", None],
            ],
            ("upgrade", 3, "A", "from_version", "bad_version"),
            id="from-version-zero",
        ),
        pytest.param(
            V2,
            [
                ["from_version", "action", "field", "new_name"],
                [1, "drop", "x", None],
                [2, "drop", "y", None],
            ],
            ("upgrade", 3, "A", "from_version", "bad_version"),
            id="mixed-from-versions",
        ),
        pytest.param(
            [["form_id", "version", "form_title"], ["housing", 1, "住房"]],
            [["from_version", "action", "field", "new_name"], [1, "drop", "x", None]],
            ("upgrade", 2, "A", "from_version", "bad_version"),
            id="version-one",
        ),
        pytest.param(
            V2,
            [["from_version", "action", "field", "new_name"], [1, "rename", "old", "missing"]],
            ("upgrade", 2, "D", "new_name", "bad_upgrade"),
            id="rename-target-missing",
        ),
    ],
)
def test_upgrade_refusals_are_located(
    settings_rows: Rows, upgrade: Rows, expected: tuple[Any, ...]
) -> None:
    issues = refusal(
        workbook([HEAD, ["text", "a", "甲"]], settings_rows=settings_rows, upgrade=upgrade)
    )
    assert located(issues[0]) == expected


def test_loader_issues_are_mapped_back_to_their_cell() -> None:
    rows: Rows = [
        ["type", "name", "label", "constraint", "min_rows", "max_rows"],
        ["text", "a", "甲"],
        ["note", "n", "说明", ". > 1"],
        ["begin_repeat", "m", "成员", None, 5, 2],
        ["text", "x", "名"],
        ["end_repeat"],
    ]
    issues = refusal(workbook(rows))
    assert [located(i) for i in issues] == [
        ("survey", 3, "D", "constraint", "unexpected_attribute"),
        ("survey", 4, "E", "min_rows", "bad_rows"),
    ]
    assert "fields/n/constraint" in issues[0].message


def test_malformed_expressions_are_located_with_their_position() -> None:
    rows: Rows = [
        ["type", "name", "label", "relevant", "constraint"],
        ["integer", "a", "甲"],
        ["integer", "b", "乙", "${a} = = 1"],
        ["integer", "c", "丙", None, ". > ${nope}"],
    ]
    issues = refusal(workbook(rows))
    assert [(located(i), i.position) for i in issues] == [
        (("survey", 3, "D", "relevant", "unexpected_token"), 7),
        (("survey", 4, "E", "constraint", "unknown_reference"), 4),
    ]
    assert "${a} = = 1" in issues[0].message
    assert issues[0].message_zh.startswith("表达式格式错误：")


def test_a_bad_group_relevance_is_reported_on_the_group_row() -> None:
    rows: Rows = [
        ["type", "name", "label", "relevant"],
        ["boolean", "a", "甲"],
        ["begin_group", "g", "组", "${a} = tru()"],
        ["text", "b", "乙", "${a} = true()"],
        ["text", "c", "丙", "${missing} = 1"],
        ["end_group"],
    ]
    issue = only_issue(workbook(rows))
    # The group's mistake reaches both questions but is reported once, at the group's row,
    # with the position inside the group's own cell.
    assert (located(issue), issue.position) == (
        ("survey", 3, "D", "relevant", "unknown_function"),
        7,
    )

    rows[2][3] = "${a} = true()"
    issue = only_issue(workbook(rows))
    assert (located(issue), issue.position) == (
        ("survey", 5, "D", "relevant", "unknown_reference"),
        0,
    )


def test_check_rule_problems_are_located() -> None:
    checks: Rows = [
        ["id", "severity", "field", "rule", "message"],
        ["c_ok", "error", "a", "${a} != ''", "甲必填"],
        ["c_bad", "warning", "a", "${a} != ${zzz}", "乙"],
    ]
    issue = only_issue(workbook([HEAD, ["text", "a", "甲"]], checks=checks))
    assert (located(issue), issue.position) == (("checks", 3, "D", "rule", "unknown_reference"), 8)


def test_every_problem_is_reported_at_once() -> None:
    rows: Rows = [HEAD, ["osm", "r", "地图"], ["text", "a", None], ["text", "a", "重复"]]
    issues = refusal(workbook(rows))
    assert [(i.row, i.code) for i in issues] == [
        (2, "unsupported_type"),
        (3, "empty_required"),
        (4, "duplicate_name"),
    ]


def test_issue_text_names_the_cell_in_both_languages() -> None:
    issue = only_issue(workbook([HEAD, ["osm", "score", "地图"]]))
    assert issue.location() == "survey!A2 (type)"
    text = str(issue)
    assert text.startswith("survey!A2 (type): ")
    assert "无法保留题型" in text and "cannot be kept" in text
    as_dict = issue.to_dict()
    assert as_dict["message"]["zh"] == issue.message_zh
    assert (as_dict["sheet"], as_dict["row"], as_dict["column"]) == ("survey", 2, "A")


def test_a_file_that_is_not_xlsx_is_refused_cleanly(tmp_path: Path) -> None:
    fake = tmp_path / "form.xlsx"
    fake.write_text("type,name,label\ntext,a,甲\n", encoding="utf-8")
    issue = only_issue(io.BytesIO(fake.read_bytes()))
    assert (issue.sheet, issue.code) == (None, "not_xlsx")
    upload = io.BytesIO(b"not a workbook")
    upload.filename = "村表.xlsx"  # type: ignore[attr-defined]  # like werkzeug's FileStorage
    assert only_issue(upload).message_zh.startswith("村表.xlsx 不是可读取的 .xlsx 表格")


def with_sheet_xml_patch(source: io.BytesIO, old: bytes, new: bytes) -> io.BytesIO:
    """Rewrite the first worksheet's XML inside an .xlsx (what Excel/WPS write that openpyxl
    does not)."""
    out = io.BytesIO()
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                assert old in data
                data = data.replace(old, new)
            zout.writestr(item, data)
    out.seek(0)
    return out


def test_excel_extensions_openpyxl_drops_do_not_disturb_the_import() -> None:
    # An x14 data-validation list, as Excel writes for a drop-down: openpyxl warns and drops it.
    extension = (
        b'<extLst><ext uri="{CCE6A557-97BC-4b89-ADB6-D9C93CAAB3DF}" '
        b'xmlns:x14="http://schemas.microsoft.com/office/spreadsheetml/2009/9/main"/></extLst>'
        b"</worksheet>"
    )
    patched = with_sheet_xml_patch(
        workbook([HEAD, ["text", "a", "甲"]]), b"</worksheet>", extension
    )
    assert import_xlsform(patched)["fields"] == [
        {"name": "a", "type": "text", "label": {"zh": "甲"}}
    ]


def test_oversized_and_garbled_files_are_refused_cleanly(tmp_path: Path) -> None:
    big = tmp_path / "big.xlsx"
    big.write_bytes(b"\0" * (MAX_WORKBOOK_BYTES + 1))
    with big.open("rb") as stream:
        assert only_issue(stream).code == "too_large"
    garbled = with_sheet_xml_patch(
        workbook([HEAD, ["text", "a", "甲"]]), b"</worksheet>", b"</worksheet"
    )
    issue = only_issue(garbled)
    assert (issue.sheet, issue.code) == (None, "not_xlsx")
    assert "WPS" in issue.message_zh


cell_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(
        [
            "text",
            "integer",
            "begin_repeat",
            "end_repeat",
            "begin_group",
            "end_group",
            "select_one grade",
            "select_multiple nope",
            "calculate",
            "range",
            "a",
            "b",
            "${a} > 1",
            "((",
            "yes",
            "甲",
        ]
    ),
    # Excel cannot store control characters at all, so the strategy leaves them out.
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=8),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(cell_values, min_size=0, max_size=5), min_size=0, max_size=6))
def test_no_survey_content_crashes_the_importer(body: Rows) -> None:
    rows: Rows = [["type", "name", "label", "relevant", "required"], *body]
    try:
        doc = import_xlsform(workbook(rows))
    except XLSFormError as exc:
        assert exc.issues
        assert all(isinstance(i, XLSFormIssue) for i in exc.issues)
    else:
        load_definition(doc)


# --------------------------------------------------------------------------------------------
# Export


def test_a_check_without_field_belongs_to_the_record() -> None:
    checks: Rows = [
        ["id", "severity", "field", "rule", "message"],
        ["c_any", "warning", None, "${a} != ''", "甲最好填写"],
    ]
    doc = import_xlsform(workbook([HEAD, ["text", "a", "甲"]], checks=checks))
    assert doc["checks"] == [
        {
            "id": "c_any",
            "severity": "warning",
            "rule": "${a} != ''",
            "message": {"zh": "甲最好填写"},
        }
    ]
    buf = io.BytesIO()
    export_xlsform(doc, buf)
    buf.seek(0)
    assert load_xlsform(buf) == load_definition(doc)


def test_export_then_import_gives_the_same_definition(tmp_path: Path) -> None:
    target = tmp_path / "housing.xlsx"
    target.write_bytes(export_xlsform(HOUSING_V1))
    assert dump_definition(load_xlsform(target.read_bytes())) == dump_definition(
        load_definition(HOUSING_V1)
    )


def test_export_writes_every_language_as_its_own_column() -> None:
    doc = copy.deepcopy(HOUSING_V1)
    doc["fields"][0]["label"]["ug"] = "ئائىلە باشلىقى"
    buf = io.BytesIO()
    export_xlsform(load_definition(doc), buf)
    buf.seek(0)
    wb = openpyxl.load_workbook(buf)
    headers = [c.value for c in wb["survey"][1]]
    assert headers[:5] == ["type", "name", "label::zh", "label::en", "label::ug"]
    assert wb.sheetnames == ["survey", "choices", "settings", "checks"]
    buf.seek(0)
    assert import_xlsform(buf)["fields"][0]["label"]["ug"] == "ئائىلە باشلىقى"


def test_export_of_an_upgrade_round_trips() -> None:
    doc = copy.deepcopy(HOUSING_V1)
    doc["version"] = 3
    doc["upgrade"] = {
        "from_version": 2,
        "renames": {"members/full_name": "members/name"},
        "drops": ["old"],
    }
    buf = io.BytesIO()
    export_xlsform(doc, buf)
    buf.seek(0)
    assert load_xlsform(buf) == load_definition(doc)

    doc["upgrade"] = {"from_version": 2}
    buf = io.BytesIO()
    export_xlsform(doc, buf)
    buf.seek(0)
    assert load_xlsform(buf).upgrade == load_definition(doc).upgrade


def test_exported_cells_are_text_so_excel_keeps_them() -> None:
    doc = copy.deepcopy(HOUSING_V1)
    doc["choice_lists"]["grade"].append({"value": "007", "label": "零零七"})
    buf = io.BytesIO()
    export_xlsform(doc, buf)
    buf.seek(0)
    wb = openpyxl.load_workbook(buf)
    values = [row[1].value for row in wb["choices"].iter_rows(min_row=2)]
    assert "007" in values
    assert wb["settings"]["B2"].value == "1"


# --------------------------------------------------------------------------------------------
# The built-in instruments as XLSForm


@pytest.mark.parametrize("form_id", BUILTIN_IDS)
def test_every_builtin_round_trips_through_xlsform(form_id: str, tmp_path: Path) -> None:
    target = tmp_path / f"{form_id}.xlsx"
    target.write_bytes(export_xlsform(builtin_json(form_id)))
    assert dump_definition(load_xlsform(target.read_bytes())) == dump_definition(
        load_builtin(form_id)
    )


@pytest.mark.parametrize("form_id", BUILTIN_IDS)
def test_shipped_xlsx_files_match_the_json_instruments(form_id: str) -> None:
    shipped = resources.files("forms.instruments").joinpath("xlsx", f"{form_id}.xlsx")
    with shipped.open("rb") as handle:
        imported = dump_definition(load_xlsform(handle))
    assert imported == dump_definition(load_builtin(form_id)), (
        f"forms/instruments/xlsx/{form_id}.xlsx is stale: run "
        "`village-forms export-xlsform --builtin all --out forms/instruments/xlsx`"
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["settings", "choices", "checks", "upgrade"]),
    st.lists(st.lists(cell_values, min_size=0, max_size=6), min_size=0, max_size=4),
)
def test_no_content_of_the_other_sheets_crashes_the_importer(sheet: str, body: Rows) -> None:
    headers = {
        "settings": ["form_id", "version", "form_title", "form_title::en", "subject"],
        "choices": ["list_name", "name", "label", "label::ug"],
        "checks": ["id", "severity", "field", "rule", "message", "message::en"],
        "upgrade": ["from_version", "action", "field", "new_name"],
    }
    sheets: dict[str, Any] = {sheet: [headers[sheet], *body]}
    survey: Rows = [HEAD, ["text", "a", "甲"], ["select_one grade", "b", "乙"]]
    try:
        doc = import_xlsform(workbook(survey, **{_SHEET_ARGS[k]: v for k, v in sheets.items()}))
    except XLSFormError as exc:
        assert exc.issues
        assert all(i.sheet is not None and i.message_zh for i in exc.issues)
    else:
        load_definition(doc)


_SHEET_ARGS = {
    "settings": "settings_rows",
    "choices": "choices",
    "checks": "checks",
    "upgrade": "upgrade",
}


# --------------------------------------------------------------------------------------------
# Property: any definition survives export and import unchanged

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)
# Texts people write, including what Excel likes to misread: "=…", "#N/A", digits, quotes.
TEXTS = st.one_of(
    st.text(
        alphabet=st.sampled_from(list("户主姓名年份房屋 abcXYZ0179ئەبتཁྱིམ-=#'\"（）/.")),
        min_size=1,
        max_size=12,
    )
    .map(str.strip)
    .filter(bool),
    st.sampled_from(["=SUM(A1)", "#N/A", "007", "1.50", "TRUE", "yes"]),
)
LOCALIZED = st.fixed_dictionaries({"zh": TEXTS}, optional={"en": TEXTS, "ug": TEXTS, "bo": TEXTS})
PLAIN_TYPES = ["text", "integer", "decimal", "date", "boolean", "geopoint", "image", "note"]


@st.composite
def field_lists(
    draw: st.DrawFn, lists: list[str], depth: int, path: str = ""
) -> list[dict[str, Any]]:
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    fields: list[dict[str, Any]] = []
    for index, name in enumerate(names):
        kinds = PLAIN_TYPES + ["calculate"] + (["select"] if lists else [])
        kinds += ["repeat"] if depth < 2 else []
        kind = draw(st.sampled_from(kinds))
        item: dict[str, Any] = {"name": name}
        if kind == "select":
            item["type"] = draw(st.sampled_from(["select_one", "select_multiple"]))
            item["choices"] = draw(st.sampled_from(lists))
        else:
            item["type"] = kind
        if kind != "calculate" or draw(st.booleans()):
            item["label"] = draw(LOCALIZED)
        if draw(st.booleans()):
            item["hint"] = draw(LOCALIZED)
        if kind not in ("note", "calculate", "repeat"):
            item["required"] = draw(st.sampled_from([False, True, "1 = 1"]))
            if draw(st.booleans()):
                item["constraint"] = ". != ''"
                item["constraint_message"] = draw(LOCALIZED)
            item["merge"] = draw(st.sampled_from(["lww", "review"]))
            item["sensitive"] = draw(st.booleans())
            if draw(st.booleans()):
                item["unit"] = draw(TEXTS)
        if kind == "calculate":
            item["calculate"] = "1 + 1"
        if draw(st.booleans()):
            item["relevant"] = "true()"
        if kind == "repeat":
            # ODK (pyxform) wants a repeat's name unique in the whole form, at every level.
            item["name"] = f"{name}_rep{path}{index}"
            item["fields"] = draw(field_lists(lists, depth + 1, f"{path}{index}_"))
            low = draw(st.none() | st.integers(0, 3))
            if low is not None:
                item["min_rows"] = low
            if draw(st.booleans()):
                item["max_rows"] = (low or 0) + draw(st.integers(1, 30))
        fields.append(item)
    return fields


def _repeat_names(fields: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for item in fields:
        if item["type"] == "repeat":
            names.append(item["name"])
            names.extend(_repeat_names(item["fields"]))
    return names


def test_two_repeats_with_one_name_anywhere_in_the_form_are_refused() -> None:
    row = {"name": "visits", "type": "repeat", "label": {"zh": "走访"}, "fields": []}
    row["fields"] = [{"name": "note", "type": "text", "label": {"zh": "记录"}}]
    inner = dict(row, fields=[dict(row)])
    doc = {"id": "f", "version": 1, "title": {"zh": "表"}, "fields": [inner]}
    with pytest.raises(FormDefinitionError) as err:
        load_definition(doc)
    assert [i.code for i in err.value.issues] == ["duplicate_name"]
    assert "visits" in err.value.issues[0].message


@st.composite
def definition_documents(draw: st.DrawFn) -> dict[str, Any]:
    list_names = draw(st.lists(NAMES, max_size=2, unique=True))
    values = st.lists(TEXTS.map(lambda t: t.replace(" ", "_")), min_size=1, max_size=4, unique=True)
    choice_lists = {
        name: [{"value": v, "label": draw(LOCALIZED)} for v in draw(values)] for name in list_names
    }
    fields = draw(field_lists(list_names, 0))
    version = draw(st.integers(1, 3))
    doc: dict[str, Any] = {
        "id": draw(NAMES),
        "version": version,
        "title": draw(LOCALIZED),
        "fields": fields,
        "choice_lists": choice_lists,
        "checks": [
            {
                "id": check_id,
                "severity": draw(st.sampled_from(["error", "warning"])),
                **({"field": fields[0]["name"]} if draw(st.booleans()) else {}),
                "rule": "true()",
                "message": draw(LOCALIZED),
            }
            for check_id in draw(st.lists(NAMES, max_size=2, unique=True))
        ],
    }
    if version > 1 and draw(st.booleans()):
        doc["upgrade"] = {
            "from_version": version - 1,
            "renames": {"zz_old_name": fields[0]["name"]} if draw(st.booleans()) else {},
            "drops": draw(st.lists(NAMES.map(lambda n: f"zz_{n}"), max_size=2, unique=True)),
        }
    return doc


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(definition_documents())
def test_any_definition_round_trips_through_a_workbook(doc: dict[str, Any]) -> None:
    # Repeat names must be unique in the whole form (ODK's rule, refused by load_definition).
    repeat_names = _repeat_names(doc["fields"])
    assume(len(repeat_names) == len(set(repeat_names)))
    definition = load_definition(doc)
    buf = io.BytesIO()
    export_xlsform(definition, buf)
    buf.seek(0)
    assert dump_definition(load_xlsform(buf)) == dump_definition(definition)


@pytest.mark.parametrize("written", ["beta", "20261125103000", "2026-11-25 v3", "v3"])
def test_a_version_is_kept_as_odk_users_write_it(written: str) -> None:
    rows = [["form_id", "version", "form_title"], ["Housing-Check.v2", written, "住房"]]
    result = read_xlsform(workbook([HEAD, ["text", "a", "甲"]], settings_rows=rows).getvalue())
    defn = result.definition
    assert (defn.odk_version, defn.odk_form_id, defn.id) == (
        written,
        "Housing-Check.v2",
        "housing_check_v2",
    )
    # the internal number: the digits when they fit, else 1 until the server numbers it
    assert defn.version == {"v3": 3, "2026-11-25 v3": 202611253}.get(written, 1)
    assert [w.location() for w in result.warnings if w.code == "version_mapped"] == [
        "settings!B2 (version)"
    ]
    again = read_xlsform(export_xlsform(defn)).definition
    assert (again.odk_version, again.odk_form_id) == (written, "Housing-Check.v2")
