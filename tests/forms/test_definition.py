"""The definition loader: shape and meaning checks, located issues, canonical dumps."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forms import (
    FieldType,
    FormDefinitionError,
    LocalizedText,
    UnknownFieldError,
    dump_definition,
    load_definition,
)
from forms.definition import Field
from forms.expressions import FUNCTIONS
from tests.forms.conftest import HOUSING_V1


def issues_of(doc: Any) -> list[tuple[str, str]]:
    with pytest.raises(FormDefinitionError) as info:
        load_definition(doc)
    assert info.value.code == "form_definition_invalid"
    return [(i.path, i.code) for i in info.value.issues]


def test_loads_the_model(housing_doc: dict[str, Any]) -> None:
    defn = load_definition(housing_doc)
    assert defn.id == "housing_mini" and defn.version == 1
    assert defn.title == LocalizedText({"zh": "住房安全（测试）", "en": "Housing (test)"})
    assert defn.field("grade").type is FieldType.SELECT_ONE
    assert defn.field("members/id_number").sensitive
    assert [c.value for c in defn.choices_of(defn.field("grade"))] == ["A", "B", "C", "D"]
    assert defn.choice_lists["grade"][1].label.zh == "B级"
    assert defn.field("member_count").label is None


def test_iter_fields_gives_schema_paths_in_document_order(housing_doc: dict[str, Any]) -> None:
    paths = [p for p, _ in load_definition(housing_doc).iter_fields()]
    assert paths[:3] == ["head_name", "build_year", "has_house"]
    i = paths.index("members")
    assert paths[i : i + 5] == [
        "members",
        "members/name",
        "members/id_number",
        "members/age",
        "members/schooling",
    ]


def test_field_accepts_row_ids_and_refuses_unknown(housing_doc: dict[str, Any]) -> None:
    defn = load_definition(housing_doc)
    row = "4f1c2a9e-0000-4000-8000-000000000001"
    assert defn.field(f"members/{row}/name").name == "name"
    assert defn.field(f"members/{row}").name == "members"
    assert defn.schema_path_of(f"members/{row}/id_number") == "members/id_number"
    with pytest.raises(UnknownFieldError) as info:
        defn.field("members/r1/nope")
    assert info.value.code == "unknown_field"
    with pytest.raises(KeyError):
        defn.field("nothing")
    assert defn.find_field("") is None


def test_merge_policy_by_path(housing_doc: dict[str, Any]) -> None:
    housing_doc["fields"][10]["fields"][0]["merge"] = "review"
    defn = load_definition(housing_doc)
    assert defn.merge_policy("grade") == "review"
    assert defn.merge_policy("head_name") == "lww"
    assert defn.merge_policy("members/r-1/name") == "review"
    assert defn.merge_policy("members/r-1/age") == "lww"
    assert defn.merge_policy("members/r-1") == "lww"
    assert defn.merge_policy("members/r-1/_order") == "lww"
    assert defn.merge_policy("not_a_field") == "lww"


def test_sensitive_paths(housing_doc: dict[str, Any]) -> None:
    defn = load_definition(housing_doc)
    assert defn.sensitive_paths() == frozenset({"members/id_number"})
    assert defn.is_sensitive("members/abc/id_number")
    assert not defn.is_sensitive("members/abc/name")


def test_dump_is_canonical_and_round_trips(housing_doc: dict[str, Any]) -> None:
    defn = load_definition(housing_doc)
    dumped = dump_definition(defn)
    assert load_definition(dumped) == defn
    assert dump_definition(load_definition(dumped)) == dumped
    # A plain-string label means zh; defaults written out or not give the same definition.
    housing_doc["fields"][0]["label"] = "户主姓名"
    housing_doc["fields"][0]["merge"] = "lww"
    housing_doc["fields"][0]["required"] = False
    other = load_definition(housing_doc)
    assert other.field("head_name").label == LocalizedText({"zh": "户主姓名"})
    assert dump_definition(other)["fields"][0] == {
        "name": "head_name",
        "type": "text",
        "label": {"zh": "户主姓名"},
    }


def test_definitions_are_immutable(housing_doc: dict[str, Any]) -> None:
    defn = load_definition(housing_doc)
    with pytest.raises(AttributeError):
        defn.version = 2  # type: ignore[misc]
    assert isinstance(defn.fields, tuple)
    assert isinstance(defn.field("members").fields[0], Field)


def test_shape_errors_are_located_by_name(housing_doc: dict[str, Any]) -> None:
    housing_doc["fields"][1]["type"] = "number"
    housing_doc["fields"][10]["fields"][1]["sensitive"] = "yes"
    housing_doc["fields"][2]["colour"] = "red"
    del housing_doc["title"]
    found = issues_of(housing_doc)
    assert ("fields/build_year/type", "schema") in found
    assert ("fields/members/fields/id_number/sensitive", "schema") in found
    assert ("fields/has_house/colour", "schema") in found
    assert ("title", "schema") in found


def test_shape_errors_fall_back_to_index(housing_doc: dict[str, Any]) -> None:
    housing_doc["fields"][3]["name"] = "Bad Name"
    found = issues_of(housing_doc)
    assert ("fields[3]/name", "schema") in found


def test_text_needs_zh(housing_doc: dict[str, Any]) -> None:
    housing_doc["fields"][0]["label"] = {"en": "Head"}
    housing_doc["choice_lists"]["grade"][0]["label"] = {"zh": "A", "EN!": "x"}
    found = issues_of(housing_doc)
    assert ("fields/head_name/label", "schema") in found
    assert ("choice_lists/grade/A/label", "schema") in found


def test_meaning_errors(housing_doc: dict[str, Any]) -> None:
    doc = copy.deepcopy(housing_doc)
    doc["fields"].append({"name": "head_name", "type": "text", "label": "x"})
    doc["fields"][3]["choices"] = "nope"
    doc["fields"][0]["choices"] = "grade"
    doc["fields"][1]["min_rows"] = 1
    doc["fields"][10]["min_rows"] = 5
    doc["fields"][10]["max_rows"] = 2
    doc["fields"][5].pop("label")
    doc["choice_lists"]["grade"].append({"value": "A", "label": "again"})
    doc["checks"].append(dict(doc["checks"][0]))
    doc["checks"].append({"id": "c_x", "field": "ghost", "rule": "true()", "message": "x"})
    found = issues_of(doc)
    assert ("fields/head_name", "duplicate_name") in found
    assert ("fields/grade/choices", "unknown_choice_list") in found
    assert ("fields/head_name/choices", "unexpected_attribute") in found
    assert ("fields/build_year/min_rows", "unexpected_attribute") in found
    assert ("fields/members/min_rows", "bad_rows") in found
    assert ("fields/subsidy/label", "missing_label") in found
    assert ("choice_lists/grade/A", "duplicate_choice") in found
    assert ("checks/c_grade_method", "duplicate_name") in found
    assert ("checks/c_x/field", "unknown_reference") in found


def test_repeat_needs_fields_and_selects_need_choices(housing_doc: dict[str, Any]) -> None:
    housing_doc["fields"].append(
        {"name": "visits", "type": "repeat", "label": "走访", "fields": []}
    )
    housing_doc["fields"].append({"name": "pick", "type": "select_one", "label": "选"})
    found = issues_of(housing_doc)
    assert ("fields/visits/fields", "empty_repeat") in found
    assert ("fields/pick/choices", "missing_choices") in found


def test_upgrade_block(housing_doc: dict[str, Any]) -> None:
    housing_doc["version"] = 2
    housing_doc["upgrade"] = {
        "from_version": 1,
        "renames": {"owner": "head_name", "members/full_name": "members/name"},
        "drops": ["old"],
    }
    defn = load_definition(housing_doc)
    assert defn.upgrade is not None
    assert defn.upgrade.renames["members/full_name"] == "members/name"
    assert load_definition(dump_definition(defn)) == defn
    housing_doc["upgrade"]["renames"] = {"owner": "nobody", "members/x": "head_name"}
    housing_doc["upgrade"]["from_version"] = 2
    found = issues_of(housing_doc)
    assert ("upgrade/from_version", "bad_upgrade") in found
    assert ("upgrade/renames/owner", "bad_upgrade") in found
    assert ("upgrade/renames/members/x", "bad_upgrade") in found


def test_not_a_mapping() -> None:
    assert issues_of(["x"]) == [("(document)", "schema")]


def test_malformed_expression_names_field_attribute_and_position(
    housing_doc: dict[str, Any],
) -> None:
    housing_doc["fields"][10]["fields"][2]["constraint"] = ". >= 0 and"
    housing_doc["fields"][3]["relevant"] = "${has_house} = tru()"
    housing_doc["checks"][0]["rule"] = "not(${grade} = 'C' and"
    with pytest.raises(FormDefinitionError) as info:
        load_definition(housing_doc)
    found = {(i.path, i.code, i.position) for i in info.value.issues}
    assert ("fields/members/fields/age/constraint", "unexpected_end", 10) in found
    assert ("fields/grade/relevant", "unknown_function", 15) in found
    assert ("checks/c_grade_method/rule", "unexpected_end", 22) in found
    message = next(i.message for i in info.value.issues if i.path.endswith("age/constraint"))
    assert "members/age" in message and "constraint" in message


def test_references_must_be_fields_in_scope(housing_doc: dict[str, Any]) -> None:
    fields = housing_doc["fields"]
    fields[1]["relevant"] = "${ghost} = 1"  # unknown
    fields[2]["relevant"] = "${age} > 3"  # a row field, not visible at the top level
    fields[10]["fields"][3]["relevant"] = "${age} >= 6 and ${has_house}"  # row, then top: fine
    fields[11]["calculate"] = "count-if(${members}, ${age} > ${build_year} and ${nope})"
    fields[5]["calculate"] = "sum(${grade}, 1)"
    with pytest.raises(FormDefinitionError) as info:
        load_definition(housing_doc)
    found = {(i.path, i.code, i.position) for i in info.value.issues}
    assert found == {
        ("fields/build_year/relevant", "unknown_reference", 0),
        ("fields/has_house/relevant", "unknown_reference", 0),
        ("fields/member_count/calculate", "unknown_reference", 48),
        ("fields/subsidy/calculate", "not_a_repeat", 4),
    }


def test_deep_nesting_is_refused_without_recursion_errors(housing_doc: dict[str, Any]) -> None:
    inner: dict[str, Any] = {"name": "leaf", "type": "text", "label": "x"}
    for level in range(300):
        inner = {"name": f"r{level}", "type": "repeat", "label": "x", "fields": [inner]}
    housing_doc["fields"].append(inner)
    found = issues_of(housing_doc)
    assert [code for _, code in found] == ["repeat_too_deep"]
    nested: dict[str, Any] = {"name": "leaf", "type": "text", "label": "x"}
    for level in range(3):
        nested = {"name": f"r{level}", "type": "repeat", "label": "x", "fields": [nested]}
    housing_doc["fields"][-1] = nested
    defn = load_definition(housing_doc)
    assert defn.field("r2/r1/r0/leaf").name == "leaf"
    assert defn.merge_policy("r2/a/r1/b/r0/c/leaf") == "lww"


def test_the_core_engine_imports_no_web_or_database_code() -> None:
    code = (
        "import sys, forms, forms.definition, forms.expressions, forms.validation, "
        "forms.paths, forms.versioning, forms.text, forms.errors\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'flask', 'sqlalchemy', 'flask_sqlalchemy', 'server', 'sync_protocol', 'sqlite3'})\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


names = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True)
texts = st.text(min_size=1, max_size=6).filter(str.strip)
localized = st.one_of(
    texts, st.fixed_dictionaries({"zh": texts}, optional={"en": texts, "ug": texts})
)
SIMPLE_TYPES = ["text", "integer", "decimal", "date", "boolean", "geopoint", "image", "note"]


@st.composite
def field_docs(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    kinds = [*SIMPLE_TYPES, "select_one", "select_multiple", "calculate"]
    if depth < 2:
        kinds.append("repeat")
    kind = draw(st.sampled_from(kinds))
    doc: dict[str, Any] = {"name": draw(names), "type": kind}
    if kind != "calculate" or draw(st.booleans()):
        doc["label"] = draw(localized)
    if draw(st.booleans()):
        doc["hint"] = draw(localized)
    if kind == "calculate":
        doc["calculate"] = draw(st.sampled_from(["1 + 1", "today()", "concat('a', 'b')"]))
    if kind in ("select_one", "select_multiple"):
        doc["choices"] = "yn"
    if kind not in ("repeat", "note", "calculate"):
        if draw(st.booleans()):
            doc["required"] = draw(st.sampled_from([True, False, "true()", "1 = 1"]))
        if draw(st.booleans()):
            doc["constraint"] = draw(st.sampled_from([". != ''", "string-length(string(.)) < 99"]))
            if draw(st.booleans()):
                doc["constraint_message"] = draw(localized)
    if draw(st.booleans()):
        doc["relevant"] = "true()"
    if draw(st.booleans()):
        doc["merge"] = draw(st.sampled_from(["lww", "review"]))
    if draw(st.booleans()):
        doc["sensitive"] = draw(st.booleans())
    if draw(st.booleans()):
        doc["unit"] = "元"
    if kind == "repeat":
        children = draw(
            st.lists(field_docs(depth + 1), min_size=1, max_size=3, unique_by=lambda f: f["name"])
        )
        doc["fields"] = children
        if draw(st.booleans()):
            doc["min_rows"] = draw(st.integers(0, 2))
            doc["max_rows"] = draw(st.integers(2, 9))
    return doc


@st.composite
def definition_docs(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": draw(names),
        "version": draw(st.integers(1, 5)),
        "title": draw(localized),
        "fields": draw(
            st.lists(field_docs(), min_size=1, max_size=5, unique_by=lambda f: f["name"])
        ),
        "choice_lists": {"yn": [{"value": "y", "label": "是"}, {"value": "n", "label": "否"}]},
    }
    if draw(st.booleans()):
        doc["checks"] = [{"id": "c1", "rule": "true()", "message": draw(localized)}]
    return doc


@settings(max_examples=100, deadline=None)
@given(definition_docs())
def test_load_dump_round_trip(doc: dict[str, Any]) -> None:
    defn = load_definition(doc)
    dumped = dump_definition(defn)
    assert load_definition(dumped) == defn
    assert dump_definition(load_definition(dumped)) == dumped
    assert json.loads(json.dumps(dumped)) == dumped
    assert {p for p, _ in defn.iter_fields()} == {
        p for p, _ in load_definition(dumped).iter_fields()
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _locations(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            found.extend(_locations(value, (*prefix, key)))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            found.extend(_locations(value, (*prefix, index)))
    return found


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_corruption_of_a_document_is_refused_cleanly(data: st.DataObject) -> None:
    doc = copy.deepcopy(HOUSING_V1)
    where = data.draw(st.sampled_from(_locations(doc)))
    parent: Any = doc
    for step in where[:-1]:
        parent = parent[step]
    parent[where[-1]] = data.draw(json_values)
    try:
        defn = load_definition(doc)
    except FormDefinitionError as error:
        assert error.issues and all(i.path and i.message for i in error.issues)
        return
    assert load_definition(dump_definition(defn)) == defn


DOCS = Path(__file__).resolve().parents[2] / "docs" / "forms.md"


def test_the_documented_example_loads_and_every_function_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    example = text.split("A small complete example", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    defn = load_definition(json.loads(example))
    assert defn.field("children/dropout_reason").merge == "review"
    for name in FUNCTIONS:
        assert f"`{name}(" in text, f"function {name} is missing from docs/forms.md"


def test_issues_have_a_chinese_text(housing_doc: dict[str, Any]) -> None:
    housing_doc["fields"][1]["constraint"] = ". >= 1900 and"
    housing_doc["fields"][2]["relevant"] = "${ghost}"
    with pytest.raises(FormDefinitionError) as info:
        load_definition(housing_doc)
    by_code = {i.code: i.to_dict() for i in info.value.issues}
    assert by_code["unexpected_end"]["message_zh"].startswith(
        "表达式不完整（fields/build_year/constraint，第 14 个字符处）"
    )
    assert by_code["unknown_reference"]["message_zh"].startswith("表达式引用了不存在")
    assert info.value.messages()["zh"].startswith("表单定义无效")
