"""Conformance: XLSForms as the specification and ODK/Kobo users write them map onto our
definitions as stated in docs/xlsform.md (types, choices, relevance, constraints, languages).

The forms are in tests/forms/xlsform_corpus.py (Markdown tables, as pyxform's tests write them);
each is read the way an upload is (bytes + file name).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from pyxform.xls2json_backends import md_table_to_workbook

from forms.definition import FormDefinition
from forms.validation import validate_record
from forms.xlsform import XLSFormError, XLSFormImport, read_xlsform
from tests.forms.xlsform_corpus import ATTACHMENTS, CORPUS


def read(name: str) -> XLSFormImport:
    return read_xlsform(CORPUS[name].encode("utf-8"), f"{name}.md", ATTACHMENTS)


def fields(defn: FormDefinition) -> dict[str, Any]:
    return {path: f for path, f in defn.iter_fields()}


def codes(result: XLSFormImport) -> set[str]:
    return {w.code for w in result.warnings}


def refusal(name: str) -> list[tuple[Any, ...]]:
    with pytest.raises(XLSFormError) as info:
        read(name)
    return [(i.sheet, i.row, i.column, i.header, i.code) for i in info.value.issues]


def test_the_specification_question_types_map_one_to_one() -> None:
    result = read("spec_question_types")
    defn = result.definition
    assert defn.id == "spec_question_types"  # no settings sheet: the file name, as pyxform
    assert defn.version == 1
    types = {p: f.type.value for p, f in fields(defn).items()}
    assert types == {
        "age": "integer",
        "weight": "decimal",
        "full_name": "text",
        "likes_pizza": "select_one",
        "favourites": "select_multiple",
        "thanks": "note",
        "location": "geopoint",
        "photo": "image",
        "visit_date": "date",
        "age_months": "calculate",
    }
    assert fields(defn)["age_months"].calculate == "${age} * 12"
    assert [c.value for c in defn.choices_of(fields(defn)["favourites"])] == [
        "cheese",
        "pepperoni",
    ]
    # A plain label is Chinese here (DESIGN §1), whatever its script
    assert fields(defn)["age"].label.to_dict() == {"zh": "How old are you?"}
    assert codes(result) == {"id_from_file_name"}


def test_relevance_constraints_required_and_the_email_regex() -> None:
    result = read("spec_relevant_constraint_required")
    f = fields(result.definition)
    assert f["likes_pizza"].required is True
    assert f["slices"].relevant == "${likes_pizza} = 'yes'"
    assert f["slices"].constraint == ". >= 0 and . < 20"
    assert f["slices"].constraint_message.text("en") == "Between 0 and 19"
    assert f["email"].required is False
    assert f["email"].constraint == r"regex(., '^[^@\s]+@[^@\s]+\.[^@\s]+$')"
    # required_message is kept and is what the field worker reads when the answer is missing
    assert f["likes_pizza"].required_message.to_dict() == {"zh": "Please answer"}
    assert f["slices"].required_message is None
    ignored = [w.header for w in result.warnings if w.code == "ignored_column"]
    assert "required_message" not in ignored
    ok = validate_record(result.definition, {"likes_pizza": "no", "email": "li@example.cn"})
    bad = validate_record(result.definition, {"likes_pizza": "no", "email": "not-an-email"})
    assert not ok.errors and [e.path for e in bad.errors] == ["email"]
    missing = validate_record(result.definition, {"email": "li@example.cn"})
    assert [(e.code, e.path, e.message.to_dict()) for e in missing.errors] == [
        ("required", "likes_pizza", {"zh": "Please answer"})
    ]


def test_groups_flatten_and_repeats_keep_their_rows() -> None:
    result = read("spec_groups_and_repeats")
    f = fields(result.definition)
    assert set(f) == {"name", "age", "child", "child/child_name", "child/child_age"}
    assert f["child"].is_repeat and f["child"].relevant == "${age} > 18"
    # required=false on a group row is no problem; field-list only changes the drawing
    assert "ignored_appearance" in codes(result)
    assert "misplaced_value" not in codes(result)


def test_languages_as_odk_writes_them() -> None:
    result = read("spec_multiple_languages")
    defn = result.definition
    assert defn.id == "multi_lang" and defn.version == 2026112501
    f = fields(defn)
    assert f["age"].label.to_dict() == {"zh": "您多大年纪？", "en": "How old are you?"}
    assert f["age"].hint.to_dict() == {"zh": "周岁", "en": "In years"}
    assert f["age"].constraint_message.to_dict() == {"zh": "年龄过大", "en": "Too old"}
    assert [c.label.to_dict() for c in defn.choices_of(f["smoke"])] == [
        {"zh": "是", "en": "Yes"},
        {"zh": "否", "en": "No"},
    ]
    # default_language English: the plain form_title is English; no Chinese title → warned
    assert defn.title.to_dict() == {"zh": "Languages", "en": "Languages"}
    missing = [w for w in result.warnings if w.code == "missing_zh"]
    assert [(w.sheet, w.header) for w in missing] == [("settings", "form_title")]


def test_zh_cn_and_zh_hans_are_chinese_and_uyghur_and_single_colon_headers_are_read() -> None:
    zh = read("zh_variants")
    assert fields(zh.definition)["a"].label.to_dict() == {
        "zh": "户主姓名",
        "en": "Head of household",
    }
    assert "missing_zh" not in codes(zh)
    ug = read("uyghur_and_single_colon")
    assert fields(ug.definition)["a"].label.to_dict() == {"zh": "姓名", "en": "Name", "ug": "ئىسمى"}


def test_english_only_form_without_settings_imports_with_a_warning() -> None:
    md = CORPUS["no_settings_english_only"].replace("| label ", "| label::English (en) ")
    md = md.replace("| hint ", "| hint::English (en) ")
    result = read_xlsform(md.encode(), "no_settings_english_only.xlsx")
    assert result.definition.id == "no_settings_english_only"
    assert fields(result.definition)["head_name"].hint.to_dict() == {
        "zh": "As on the ID card",
        "en": "As on the ID card",
    }
    missing = {(w.sheet, w.row, w.header) for w in result.warnings if w.code == "missing_zh"}
    assert missing == {("survey", 1, "label::English (en)"), ("survey", 1, "hint::English (en)")}
    assert all(w.message_zh and w.message for w in result.warnings)


def test_metadata_rows_are_record_metadata_not_questions() -> None:
    result = read("spec_metadata")
    assert list(fields(result.definition)) == ["village"]
    mapped = [(w.row, w.column) for w in result.warnings if w.code == "metadata_mapped"]
    assert mapped == [(r, "A") for r in range(2, 9)]


def test_ids_versions_and_names_as_odk_users_write_them() -> None:
    result = read("ids_versions_and_names")
    defn = result.definition
    assert (defn.id, defn.version) == ("household_survey_v2", 3)
    f = fields(defn)
    assert set(f) == {"building_material", "hh_size", "q1_2"}
    assert f["building_material"].choices == "wall_type"
    assert f["q1_2"].relevant == "${hh_size} > 0"  # the reference is renamed with the name
    renamed = {(w.sheet, w.header) for w in result.warnings if w.code == "renamed"}
    assert renamed == {("settings", "form_id"), ("survey", "name")}
    assert "version_mapped" in codes(result)


def test_legacy_spellings_pyxform_still_accepts() -> None:
    f = fields(read("legacy_spellings").definition)
    assert {p: x.type.value for p, x in f.items()} == {
        "name": "text",
        "age": "integer",
        "place": "geopoint",
        "ok": "select_one",
        "crops": "select_multiple",
        "house": "image",
    }
    assert f["crops"].choices == "crops"


def test_presentation_columns_and_appearances_are_ignored_with_located_warnings() -> None:
    result = read("appearances_and_extra_columns")
    assert len(fields(result.definition)) == 5
    appearance = [(w.row, w.column) for w in result.warnings if w.code == "ignored_appearance"]
    assert appearance == [(2, "D"), (3, "D"), (4, "D"), (5, "D")]
    columns = {w.header for w in result.warnings if w.code == "ignored_column"}
    assert columns == {"notes", "media::image", "team_code"}
    assert fields(result.definition)["a"].guidance_hint.to_dict() == {"zh": "Ask slowly"}


def test_a_default_is_kept_with_the_required_message() -> None:
    result = read("default_and_required_message")
    people = fields(result.definition)["people"]
    assert (people.required, people.default) == (True, "1")
    assert not {w.header for w in result.warnings if w.code == "ignored_column"}
    assert people.required_message.to_dict() == {"zh": "Fill this in"}


def test_static_and_dynamic_defaults_prefill_a_new_record() -> None:
    from datetime import date

    from forms.expressions import EvaluationContext
    from forms.validation import prefill

    defn = read("defaults_static_and_dynamic").definition
    f = fields(defn)
    assert {name: f[name].default for name in f} == {
        "people": "1",
        "village": "'大寨'",
        "visited": "today()",
        "planned": "date('2026-12-01')",
        "adults": "${people} - 1",
        "batch": None,
    }
    # read_only with a default: the default is its value, nobody changes it
    assert f["batch"].calculate == "once('B-7')"
    context = EvaluationContext(today=date(2026, 11, 25))
    assert prefill(defn, {}, context) == {
        "people": 1,
        "village": "大寨",
        "visited": "2026-11-25",
        "planned": "2026-12-01",
        "adults": 0,
    }
    # what the field worker already typed is never replaced
    assert prefill(defn, {"people": 5}, context)["adults"] == 4
    assert prefill(defn, {"people": 5}, context)["people"] == 5
    assert not validate_record(defn, prefill(defn, {}, context), context).errors


def test_choice_filter_offers_and_accepts_only_the_filtered_choices() -> None:
    result = read("cascading_choice_filter")
    defn = result.definition
    f = fields(defn)
    assert f["town"].choice_filter == "choice('county')=${county}"
    assert f["crops"].choice_filter == (
        "selected(${county}, choice('region')) and choice('name') != 'none'"
    )
    assert [c.filters for c in defn.choice_lists["town"]] == [{"county": "c1"}, {"county": "c2"}]
    assert [c.filters for c in defn.choice_lists["crop"]] == [
        {"region": "c1"},
        {"region": "c2"},
        {"region": "c1"},
    ]
    # media::image is not a filter column: ignored with a warning, not kept on the choices
    assert {w.header for w in result.warnings if w.code == "ignored_column"} == {"media::image"}
    ok = validate_record(defn, {"county": "c1", "town": "t1", "crops": "rice"})
    assert not ok.errors, ok.errors
    wrong = validate_record(defn, {"county": "c1", "town": "t2", "crops": ["rice", "corn", "none"]})
    assert [(e.code, e.path) for e in wrong.errors] == [("choice", "town"), ("choice", "crops")]
    assert "corn" in wrong.errors[1].message["en"] and "none" in wrong.errors[1].message["en"]
    assert "rice" not in wrong.errors[1].message["en"]
    # unanswered county: no town passes the filter; nothing typed is lost
    assert [e.code for e in validate_record(defn, {"town": "t1"}).errors] == ["choice"]
    assert validate_record(defn, {"town": "t1"}).cleaned == {"town": "t1"}


def test_a_computed_repeat_count_asks_for_exactly_that_many_rows() -> None:
    defn = read("computed_repeat_count").definition
    member = fields(defn)["member"]
    assert (member.repeat_count, member.min_rows, member.max_rows) == ("${n}", None, None)
    rows = [{"_id": "r1", "mname": "甲"}, {"_id": "r2", "mname": "乙"}]
    assert not validate_record(defn, {"n": 2, "member": rows}).errors
    short = validate_record(defn, {"n": 3, "member": rows})
    assert [(e.code, e.path) for e in short.errors] == [("rows", "member")]
    assert "3" in short.errors[0].message["en"]
    assert not validate_record(defn, {"n": 0}).errors
    # an undetermined count (n is not a number) decides nothing: only n's own error
    assert [e.path for e in validate_record(defn, {"n": "x", "member": rows}).errors] == ["n"]


def test_required_message_and_guidance_hint_keep_every_language_and_round_trip(
    tmp_path: Path,
) -> None:
    from forms.definition import dump_definition, load_definition
    from forms.xlsform import export_xlsform

    result = read("texts_in_every_language")
    f = fields(result.definition)["people"]
    assert f.required_message.to_dict() == {
        "zh": "请填写人数",
        "en": "Fill this in",
        "ug": "تولدۇرۇڭ",
    }
    assert f.guidance_hint.to_dict() == {"zh": "含外出务工人员", "en": "Count migrant workers too"}
    document = dump_definition(result.definition)
    assert load_definition(document) == result.definition
    out = tmp_path / "texts.xlsx"
    out.write_bytes(export_xlsform(result.definition))
    again = read_xlsform(out.read_bytes(), "texts.xlsx").definition
    assert fields(again)["people"].required_message == f.required_message
    assert fields(again)["people"].guidance_hint == f.guidance_hint


def test_range_barcode_acknowledge_and_or_other_are_mapped() -> None:
    result = read("mapped_types")
    defn = result.definition
    f = fields(defn)
    assert (f["score"].type.value, f["score"].constraint) == ("integer", ". >= 1 and . <= 5")
    assert (f["ratio"].type.value, f["ratio"].constraint) == ("decimal", ". >= 0 and . <= 1")
    assert f["code"].type.value == "text"
    assert f["consent"].type.value == "boolean"
    assert [c.value for c in defn.choices_of(f["source"])] == ["well", "tap", "other"]
    assert f["source_other"].relevant == "selected(${source}, 'other')"
    assert [c.value for c in defn.choice_lists["source"]] == ["well", "tap"]
    mapped = [(w.row, w.code) for w in result.warnings if w.code == "type_mapped"]
    assert mapped == [
        (2, "type_mapped"),
        (3, "type_mapped"),
        (4, "type_mapped"),
        (5, "type_mapped"),
    ]
    assert not validate_record(defn, {"score": 3, "source": "other", "source_other": "泉水"}).errors
    assert [e.path for e in validate_record(defn, {"score": 9}).errors] == ["score"]


def test_our_domain_checks_stay_an_id_number_is_checked_and_sensitive() -> None:
    defn = read("id_number_domain_check").definition
    assert defn.sensitive_paths() == {"id_number"}
    assert defn.merge_policy("id_number") == "review"
    bad = validate_record(defn, {"id_number": "110101199003070000"})
    good = validate_record(defn, {"id_number": "11010519491231002X"})
    assert [e.path for e in bad.errors] == ["id_number"] and not good.errors


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("refused_entities", [("entities", None, None, None, "unsupported_sheet")]),
        (
            "refused_select_from_file_without_its_file",
            [("survey", 2, "A", "type", "missing_attachment")],
        ),
    ],
)
def test_what_would_lose_meaning_is_refused_at_its_cell(name: str, expected: list) -> None:
    assert refusal(name) == expected


def test_refusals_are_in_chinese_first_and_english() -> None:
    with pytest.raises(XLSFormError) as info:
        read("refused_entities")
    issue = info.value.issues[0]
    assert "暂不支持" in issue.message_zh and "not supported yet" in issue.message
    assert str(issue).index("暂不支持") < str(issue).index("not supported")


def test_the_same_form_reads_the_same_from_xlsx_as_from_markdown() -> None:
    for name in ("spec_multiple_languages", "ids_versions_and_names", "mapped_types"):
        buf = io.BytesIO()
        md_table_to_workbook(CORPUS[name]).save(buf)
        as_xlsx = read_xlsform(buf.getvalue(), f"{name}.xlsx")
        assert as_xlsx.document == read(name).document


@pytest.mark.parametrize(
    ("filename", "form_id"),
    [("housing_2026.xlsx", "housing_2026"), ("2026 Survey.md", "f_2026_survey"), (None, "form")],
)
def test_without_a_form_id_the_file_name_gives_it(filename: str | None, form_id: str) -> None:
    md = "| survey |\n|  | type | name | label |\n|  | text | a | 甲 |\n"
    assert read_xlsform(md.encode(), filename).definition.id == form_id


def test_a_file_name_without_latin_letters_is_refused_for_the_whole_file() -> None:
    md = "| survey |\n|  | type | name | label |\n|  | text | a | 甲 |\n"
    with pytest.raises(XLSFormError) as info:
        read_xlsform(md.encode(), "村表.md")
    [issue] = info.value.issues
    assert (issue.sheet, issue.code) == (None, "bad_name") and "settings" in issue.message_zh


def test_an_excel_97_xls_workbook_reads_like_the_xlsx() -> None:
    # tests/forms/fixtures/legacy_excel97.xls was written once with xlwt (Excel 97-2003 BIFF),
    # with a far cell (GS6) in its used range.
    data = (Path(__file__).parent / "fixtures" / "legacy_excel97.xls").read_bytes()
    result = read_xlsform(data, "legacy_excel97.xls")
    defn = result.definition
    assert (defn.id, defn.version, defn.title.zh) == ("legacy_xls", 3, "老式表格")
    f = fields(defn)
    assert f["rooms"].type.value == "integer" and f["rooms"].relevant == "${has_house} = 'yes'"
    assert f["has_house"].label.to_dict() == {"zh": "是否有自有住房", "en": "Owns a house?"}
    assert codes(result) == {"renamed", "metadata_mapped"}


def test_a_fixed_repeat_count_and_a_calculated_read_only_question_are_kept() -> None:
    md = """
| survey |
|        | type         | name    | label   | repeat_count | read_only | calculation |
|        | begin repeat | visit   | Visit   | 3            |           |             |
|        | integer      | people  | People  |              |           |             |
|        | integer      | doubled | Doubled |              | yes       | ${people} * 2 |
|        | end repeat   |         |         |              |           |             |
"""
    result = read_xlsform(md.encode(), "visits.md")
    f = fields(result.definition)
    assert (f["visit"].min_rows, f["visit"].max_rows) == (3, 3)
    assert f["visit/doubled"].calculate == "${people} * 2"
    assert [(w.row, w.code) for w in result.warnings if w.header == "repeat_count"] == [
        (2, "type_mapped")
    ]


def test_odk_time_functions_import_and_compute() -> None:
    from datetime import date

    from forms.expressions import EvaluationContext

    result = read("odk_time_functions")
    defn = result.definition
    assert fields(defn)["stamp"].calculate == "once(decimal-date-time(now()))"
    assert fields(defn)["day_no"].calculate == "decimal-date-time(${visited})"
    context = EvaluationContext(today=date(2026, 11, 25), now="2026-11-25T12:00:00+00:00")
    checked = validate_record(defn, {"visited": "2026-11-24"}, context)
    assert not checked.errors, checked.errors
    assert checked.cleaned["day_no"] == 20781
    assert checked.cleaned["stamp"] == 20782.5
    # once(): the stamp the tablet computed when the record was made stands.
    recorded = validate_record(defn, {"visited": "2026-11-24", "stamp": 20000.25}, context)
    assert not recorded.errors and recorded.cleaned["stamp"] == 20000.25


def test_hidden_is_a_calculation_of_its_calculation_or_its_default() -> None:
    result = read("hidden_values")
    f = fields(result.definition)
    assert {name: (f[name].type.value, f[name].calculate) for name in f} == {
        "size": ("integer", None),
        "doubled": ("calculate", "${size} * 2"),
        "batch": ("calculate", "'B-7'"),
        "wave": ("calculate", "3"),
        "spare": ("calculate", "''"),
    }
    mapped = [(w.row, w.column) for w in result.warnings if w.code == "type_mapped"]
    assert mapped == [(3, "A"), (4, "A"), (5, "A"), (6, "A")]
    checked = validate_record(result.definition, {"size": 4})
    assert not checked.errors
    assert checked.cleaned == {"size": 4, "doubled": 8, "batch": "B-7", "wave": 3}


def test_a_trigger_keeps_the_value_the_tablet_computed() -> None:
    from datetime import date

    from forms.expressions import EvaluationContext

    result = read("trigger_calculation")
    weighed = fields(result.definition)["weighed"]
    assert (weighed.type.value, weighed.calculate) == (
        "decimal",
        "once(decimal-date-time(now()))",
    )
    mapped = [(w.row, w.column, w.header) for w in result.warnings if w.code == "trigger_mapped"]
    assert mapped == [(3, "E", "trigger")]
    context = EvaluationContext(today=date(2026, 11, 25), now="2026-11-25T12:00:00")
    recorded = validate_record(result.definition, {"weight": 61, "weighed": 20700.25}, context)
    assert not recorded.errors and recorded.cleaned["weighed"] == 20700.25
    fresh = validate_record(result.definition, {"weight": 61}, context)
    assert not fresh.errors and fresh.cleaned["weighed"] == 20782.5


@pytest.mark.parametrize(
    "name",
    [
        "cascading_choice_filter",
        "computed_repeat_count",
        "defaults_static_and_dynamic",
        "choices_from_attached_files",
        "time_media_traces_and_rank",
    ],
)
def test_choice_filters_repeat_counts_and_defaults_export_and_read_back(
    name: str, tmp_path: Path
) -> None:
    from pyxform.xls2xform import convert

    from forms.xlsform import export_xlsform

    defn = read(name).definition
    out = tmp_path / f"{name}.xlsx"
    out.write_bytes(export_xlsform(defn))
    assert read_xlsform(out.read_bytes(), out.name).definition == defn
    convert(xlsform=out.read_bytes(), file_type=".xlsx")  # still an ODK XLSForm


def test_select_from_file_takes_its_choices_from_the_attached_csv_or_xml() -> None:
    defn = read("choices_from_attached_files").definition
    f = fields(defn)
    assert (f["village"].type.value, f["village"].choices) == ("select_one", "villages_csv")
    assert (f["crops"].type.value, f["crops"].choices) == ("select_multiple", "crops_xml")
    villages = defn.choice_lists["villages_csv"]
    assert [(c.value, c.label.to_dict(), dict(c.filters)) for c in villages] == [
        ("v1", {"zh": "上寨", "en": "Upper"}, {"county": "c1"}),  # elevation: no filter reads it
        ("v2", {"zh": "下寨", "en": "Lower"}, {"county": "c2"}),
        ("v3", {"zh": "河边", "en": "River"}, {"county": "c1"}),
    ]
    assert [c.value for c in defn.choice_lists["crops_xml"]] == ["rice", "corn"]
    assert not validate_record(defn, {"county": "c1", "village": "v3", "crops": "rice"}).errors
    wrong = validate_record(defn, {"county": "c1", "village": "v2", "crops": "wheat"})
    assert sorted((e.code, e.path) for e in wrong.errors) == [
        ("choice", "crops"),  # not in the file
        ("choice", "village"),  # in the file, but not a village of c1
    ]


@pytest.mark.parametrize(
    ("files", "code"),
    [
        ({"villages.csv": b"label,county\nUpper,c1\n"}, "bad_attachment"),
        ({"villages.csv": b"name,label\nv1,A\nv1,B\n"}, "bad_attachment"),
        ({"villages.csv": b"\xff\xfe"}, "bad_attachment"),
        ({"villages.csv": b"name,label\n"}, "bad_attachment"),
        ({"crops.xml": b'<!DOCTYPE x [<!ENTITY a "aaaa">]><root/>'}, "bad_attachment"),
        ({"crops.xml": b"<root><item>"}, "bad_attachment"),
    ],
)
def test_a_broken_attachment_is_refused_at_the_question_that_names_it(
    files: dict[str, bytes], code: str
) -> None:
    with pytest.raises(XLSFormError) as info:
        read_xlsform(
            CORPUS["choices_from_attached_files"].encode(), "f.md", {**ATTACHMENTS, **files}
        )
    [issue] = info.value.issues
    assert (issue.sheet, issue.column, issue.code) == ("survey", "A", code)
    assert issue.row == (3 if "villages.csv" in files else 4)
    assert issue.message_zh and issue.message


def test_time_datetime_media_traces_shapes_and_rank_are_their_own_types() -> None:
    result = read("time_media_traces_and_rank")
    defn = result.definition
    assert {p: f.type.value for p, f in fields(defn).items()} == {
        "woke": "time",
        "visited": "datetime",
        "voice": "audio",
        "clip": "video",
        "letter": "file",
        "path": "geotrace",
        "field": "geoshape",
        "needs": "rank",
    }
    assert fields(defn)["needs"].choices == "need"
    sha = "sha256:" + "AB" * 32
    record = {
        "woke": "06:30",
        "visited": "2026-11-25T08:30:00+08:00",
        "voice": sha,
        "clip": sha,
        "letter": sha,
        "path": "25.1 102.7 1900 5;25.2 102.8 1910 5",
        "field": [
            {"lat": 25.1, "lon": 102.7},
            "25.2 102.7",
            "25.2 102.8",
            {"lat": 25.1, "lon": 102.7},
        ],
        "needs": "road water school",
    }
    checked = validate_record(defn, record)
    assert not checked.errors, checked.errors
    assert checked.cleaned["voice"] == "sha256:" + "ab" * 32
    assert checked.cleaned["path"] == [
        {"lat": 25.1, "lon": 102.7, "alt": 1900.0, "accuracy": 5.0},
        {"lat": 25.2, "lon": 102.8, "alt": 1910.0, "accuracy": 5.0},
    ]
    assert checked.cleaned["needs"] == ["road", "water", "school"]
    wrong = {
        "woke": "25:00",
        "visited": "2026-11-25",
        "voice": "hello.m4a",
        "path": "25.1 102.7",
        "field": ["25.1 102.7", "25.2 102.7", "25.2 102.8", "25.3 102.9"],
        "needs": "road road",
    }
    errors = validate_record(defn, wrong).errors
    assert sorted((e.path, e.code) for e in errors) == sorted((name, "type") for name in wrong), (
        errors
    )
    assert validate_record(defn, {"needs": "road bridge"}).errors[0].code == "choice"


def test_position_indexed_repeat_choice_name_and_node_set_sum_and_count() -> None:
    defn = read("odk_repeat_functions").definition
    f = fields(defn)
    assert f["member/row_no"].calculate == "position()"
    assert f["member/rel_name"].calculate == "jr:choice-name(${rel}, '${rel}')"
    assert f["first"].calculate == "indexed-repeat(${age}, ${member}, 1)"
    assert f["total"].calculate == "sum(${member}, ${age})"
    assert f["people"].calculate == "count(${member})"
    rows = [{"_id": "a", "age": 41, "rel": "head"}, {"_id": "b", "age": 9, "rel": "child"}]
    checked = validate_record(defn, {"member": rows})
    assert not checked.errors, checked.errors
    assert checked.cleaned == {
        "member": [
            {"_id": "a", "age": 41, "rel": "head", "row_no": 1, "rel_name": "户主"},
            {"_id": "b", "age": 9, "rel": "child", "row_no": 2, "rel_name": "子女"},
        ],
        "first": 41,
        "total": 50,
        "people": 2,
    }


def test_pulldata_reads_the_attached_csv_kept_in_the_definition() -> None:
    from forms.xlsform import export_xlsform

    defn = read("pulldata_from_attached_csv").definition
    assert defn.tables["prices"] == (
        {"crop": "rice", "yuan_per_kg": "3.2", "unit": "公斤"},
        {"crop": "corn", "yuan_per_kg": "2.45", "unit": "公斤"},
    )
    checked = validate_record(defn, {"crop": "corn"})
    assert not checked.errors
    assert checked.cleaned == {"crop": "corn", "price": 2.45, "unit": "公斤"}
    assert validate_record(defn, {"crop": "wheat"}).cleaned == {"crop": "wheat"}
    with pytest.raises(XLSFormError) as info:  # a workbook cannot carry the table itself
        export_xlsform(defn)
    assert info.value.code == "export_unsupported"
    with pytest.raises(XLSFormError) as missing:
        read_xlsform(CORPUS["pulldata_from_attached_csv"].encode(), "p.md", {})
    assert [(i.row, i.header, i.code) for i in missing.value.issues] == [
        (3, "calculation", "missing_attachment"),  # every cell that reads it
        (4, "calculation", "missing_attachment"),
    ]


def test_a_read_only_question_without_a_value_stays_empty_and_is_never_typed() -> None:
    result = read("read_only_without_value")
    (warning,) = [w for w in result.warnings if w.code == "read_only_empty"]
    assert (warning.sheet, warning.row, warning.column) == ("survey", 2, "D")
    assert "始终为空" in warning.message_zh
    code = fields(result.definition)["code"]
    assert code.calculate == "''"  # shown, never typed: a typed value is not kept
    assert not validate_record(result.definition, {}).errors
