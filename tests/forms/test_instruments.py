"""The built-in instruments load, are bilingual, mark sensitive and review fields, and check what
DOMAIN.md says they check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forms import FieldType, load_definition
from forms.instruments import (
    BUILTIN_IDS,
    UnknownInstrumentError,
    builtin_definitions,
    builtin_json,
    load_builtin,
)

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
    assert sorted(p.stem for p in INSTRUMENT_DIR.glob("*.json")) == sorted(BUILTIN_IDS)


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
