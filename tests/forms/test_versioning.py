"""upgrade_record: renames (also inside and of repeats), drops, chains, nothing lost."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forms import load_definition
from forms.definition import FormDefinition
from forms.errors import UpgradeError
from forms.expressions import EvaluationContext
from forms.paths import unflatten
from forms.validation import validate_record
from forms.versioning import upgrade_chain, upgrade_record

CONTEXT = EvaluationContext(today=date(2026, 11, 25))

V1: dict[str, Any] = {
    "id": "roster",
    "version": 1,
    "title": "花名册",
    "fields": [
        {"name": "owner", "type": "text", "label": "户主"},
        {"name": "phone", "type": "text", "label": "电话", "sensitive": True},
        {"name": "note", "type": "text", "label": "备注"},
        {
            "name": "people",
            "type": "repeat",
            "label": "成员",
            "fields": [
                {"name": "full_name", "type": "text", "label": "姓名"},
                {"name": "age", "type": "integer", "label": "年龄"},
                {"name": "old_code", "type": "text", "label": "旧编码"},
                {
                    "name": "visits",
                    "type": "repeat",
                    "label": "走访",
                    "fields": [{"name": "day", "type": "date", "label": "日期"}],
                },
            ],
        },
    ],
}


def v2_doc() -> dict[str, Any]:
    doc = copy.deepcopy(V1)
    doc["version"] = 2
    fields = doc["fields"]
    fields[0]["name"] = "head_name"
    people = fields[3]
    people["name"] = "members"
    people["fields"][0]["name"] = "name"
    del people["fields"][2]  # old_code dropped
    doc["upgrade"] = {
        "from_version": 1,
        "renames": {"owner": "head_name", "people": "members", "people/full_name": "members/name"},
        "drops": ["people/old_code"],
    }
    return doc


def v3_doc() -> dict[str, Any]:
    doc = v2_doc()
    doc["version"] = 3
    fields = doc["fields"]
    del fields[2]  # note removed without a declaration
    fields[2]["fields"][2]["fields"][0]["name"] = "visited_on"
    fields.append({"name": "income", "type": "decimal", "label": "收入"})
    doc["upgrade"] = {
        "from_version": 2,
        "renames": {"members/visits/day": "members/visits/visited_on"},
        "drops": ["phone"],
    }
    return doc


DV1, DV2, DV3 = load_definition(V1), load_definition(v2_doc()), load_definition(v3_doc())

RECORD = {
    "owner": "张三",
    "phone": "13800138000",
    "note": "无",
    "people": [
        {
            "_id": "p2",
            "full_name": "李四",
            "age": 30,
            "old_code": "X1",
            "visits": [{"_id": "v1", "day": "2026-01-02"}],
        },
        {"_id": "p1", "full_name": "王五"},
    ],
}


def test_one_step_renames_and_drops() -> None:
    result = upgrade_record(RECORD, DV1, DV2)
    assert result.data == {
        "head_name": "张三",
        "phone": "13800138000",
        "note": "无",
        "members": [
            {
                "_id": "p2",
                "name": "李四",
                "age": 30,
                "visits": [{"_id": "v1", "day": "2026-01-02"}],
            },
            {"_id": "p1", "name": "王五"},
        ],
    }
    assert result.kept_aside == {"people/p2/old_code": "X1", "people/p2/_order": 0}
    assert (result.from_version, result.to_version) == (1, 2)
    assert validate_record(DV2, result.data, CONTEXT).issues == []


def test_chain_across_versions_keeps_everything() -> None:
    result = upgrade_record(RECORD, DV1, DV3, versions=[DV2])
    assert result.data["members"][0]["visits"] == [{"_id": "v1", "visited_on": "2026-01-02"}]
    assert [r["_id"] for r in result.data["members"]] == ["p2", "p1"]
    assert "note" not in result.data and "phone" not in result.data
    assert result.kept_aside == {
        "people/p2/old_code": "X1",
        "people/p2/_order": 0,
        "phone": "13800138000",
        "note": "无",
    }
    assert unflatten(result.kept_aside)["people"] == [{"_id": "p2", "old_code": "X1"}]
    assert validate_record(DV3, result.data, CONTEXT).issues == []
    assert RECORD["owner"] == "张三" and "full_name" in RECORD["people"][0]  # input untouched


def test_kept_aside_rows_keep_their_order() -> None:
    # Row ids that sort the other way round from the rows: only _order can keep them in place.
    people = [
        {"_id": "z9", "full_name": "甲", "old_code": "A"},
        {"_id": "b2", "full_name": "乙", "old_code": "B"},
        {"_id": "m5", "full_name": "丙", "old_code": "C"},
    ]
    result = upgrade_record({"people": people}, DV1, DV3, versions=[DV2])
    assert [r["_id"] for r in result.data["members"]] == ["z9", "b2", "m5"]
    aside = unflatten(result.kept_aside)["people"]
    assert [(r["_id"], r["old_code"]) for r in aside] == [("z9", "A"), ("b2", "B"), ("m5", "C")]
    assert not [k for k in result.kept_aside if "@v" in k]


@pytest.mark.parametrize("data", [None, [], [{"owner": "甲"}], "owner", 3])
def test_data_that_is_not_an_object_is_an_upgrade_error(data: Any) -> None:
    with pytest.raises(UpgradeError) as info:
        upgrade_record(data, DV1, DV2)
    assert info.value.code == "bad_data"
    assert "对象" in info.value.message_zh


def test_an_old_record_still_validates_against_its_own_version() -> None:
    assert validate_record(DV1, RECORD, CONTEXT).issues == []


def test_unknown_keys_and_collisions_are_set_aside() -> None:
    record = {"owner": "甲", "head_name": "乙", "mystery": 1}
    result = upgrade_record(record, DV1, DV2)
    assert result.data == {"head_name": "甲"}
    assert result.kept_aside == {"head_name": "乙", "mystery": 1}


def test_same_version_is_a_copy() -> None:
    result = upgrade_record(RECORD, DV1, DV1)
    assert result.data == RECORD and result.kept_aside == {}


@pytest.mark.parametrize(
    ("source", "target", "versions", "code"),
    [
        (DV1, DV3, [], "missing_version"),
        (DV2, DV1, [], "downgrade"),
        (DV1, load_definition({**V1, "version": 2}), [], "no_upgrade_path"),
        (DV1, load_definition({**V1, "id": "other", "version": 2}), [], "form_mismatch"),
    ],
)
def test_impossible_upgrades(
    source: FormDefinition, target: FormDefinition, versions: list[FormDefinition], code: str
) -> None:
    with pytest.raises(UpgradeError) as info:
        upgrade_record(RECORD, source, target, versions)
    assert info.value.code == code
    assert info.value.messages()["zh"]


def test_upgrade_chain_order() -> None:
    steps = upgrade_chain(DV1, DV3, [DV3, DV2, DV1])
    assert [(a.version, b.version) for a, b in steps] == [(1, 2), (2, 3)]


texts = st.text(min_size=1, max_size=6).filter(str.strip)


@st.composite
def v1_records(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name in ("owner", "phone", "note"):
        if draw(st.booleans()):
            record[name] = draw(texts)
    ids = draw(st.lists(st.uuids().map(str), max_size=3, unique=True))
    rows = []
    for row_id in ids:
        row: dict[str, Any] = {"_id": row_id}
        if draw(st.booleans()):
            row["full_name"] = draw(texts)
        if draw(st.booleans()):
            row["age"] = draw(st.integers(0, 120))
        if draw(st.booleans()):
            row["old_code"] = draw(texts)
        visits = draw(st.lists(st.dates(), max_size=2))
        if visits:
            row["visits"] = [{"_id": f"v{i}", "day": d.isoformat()} for i, d in enumerate(visits)]
        rows.append(row)
    if rows:
        record["people"] = rows
    return record


@settings(max_examples=100, deadline=None)
@given(v1_records())
def test_upgrade_then_validate_keeps_every_mapped_value(record: dict[str, Any]) -> None:
    assert validate_record(DV1, record, CONTEXT).ok
    result = upgrade_record(record, DV1, DV3, versions=[DV2])
    checked = validate_record(DV3, result.data, CONTEXT)
    assert checked.ok and checked.warnings == []
    assert checked.cleaned == result.data
    if "owner" in record:
        assert result.data["head_name"] == record["owner"]
    for old_row, new_row in zip(
        record.get("people", []), result.data.get("members", []), strict=True
    ):
        assert new_row["_id"] == old_row["_id"]
        assert new_row.get("name") == old_row.get("full_name")
        assert new_row.get("age") == old_row.get("age")
        assert [v.get("visited_on") for v in new_row.get("visits", [])] == [
            v["day"] for v in old_row.get("visits", [])
        ]
        if "old_code" in old_row:
            assert result.kept_aside[f"people/{old_row['_id']}/old_code"] == old_row["old_code"]
    for name in ("phone", "note"):
        if name in record:
            assert result.kept_aside[name] == record[name]
