"""ID numbers are stored in standard form: validation cleans what people type (full-width
digits, a lower-case x, spaces) to ASCII digits and an upper-case X, on tablet and server alike."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

from forms.expressions import EvaluationContext
from forms.identity import id_check_char
from forms.instruments import load_builtin
from forms.instruments.samples import sample_household
from forms.validation import standard_changes, validate_record

TODAY = date(2026, 11, 25)
ROSTER = load_builtin("household_roster")


def _ending_in_x(first14: str, male: bool) -> str:
    """A valid ID of this region and birth date whose check character is X."""
    for sequence in range(100):
        first17 = f"{first14}{sequence:02d}{1 if male else 2}"
        if id_check_char(first17) == "X":
            return first17 + "X"
    raise AssertionError("no sequence gives a check character X")


def _roster_with(number: str, **member: Any) -> dict[str, Any]:
    data = copy.deepcopy(sample_household(1)["household_roster"])
    data["members"][0].update(id_number=number, **member)
    return data


def _cleaned_id(data: dict[str, Any]) -> Any:
    result = validate_record(ROSTER, data, EvaluationContext(today=TODAY))
    assert result.ok, [i.to_dict() for i in result.errors]
    return result.cleaned["members"][0]["id_number"]


def _full_width(text: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) if ch.isdigit() or ch == "X" else ch for ch in text)


def test_typed_spellings_are_cleaned_to_the_standard_form() -> None:
    head = sample_household(1)["household_roster"]["members"][0]
    standard = _ending_in_x(head["id_number"][:14], male=head["sex"] == "男")
    for typed in (
        standard,
        standard.lower(),
        _full_width(standard),
        _full_width(standard).replace("Ｘ", "ｘ"),
        f" {standard[:6]} {standard[6:14]} {standard[14:].lower()} ",
        standard[:6] + "-" + standard[6:],
    ):
        assert _cleaned_id(_roster_with(typed)) == standard, typed


def test_a_number_the_constraint_lets_through_for_another_reason_stays_as_typed() -> None:
    # id_type "other" (a passport, a foreign ID) is not checked against GB 11643: nothing to fix.
    assert _cleaned_id(_roster_with("e1234567x", id_type="other")) == "e1234567x"


def test_an_invalid_number_is_kept_as_typed_with_its_error() -> None:
    head = sample_household(1)["household_roster"]["members"][0]
    wrong = head["id_number"][:17] + ("0" if head["id_number"][17] != "0" else "1")
    typed = _full_width(wrong)
    result = validate_record(ROSTER, _roster_with(typed), EvaluationContext(today=TODAY))
    assert result.cleaned["members"][0]["id_number"] == typed
    (issue,) = [i for i in result.errors if i.field == "id_number"]
    assert issue.message.zh.startswith("身份证号无效：校验位错误")


def test_standard_changes_touch_only_valid_id_numbers() -> None:
    head = sample_household(1)["household_roster"]["members"][0]
    row = head["_id"]
    standard = _ending_in_x(head["id_number"][:14], male=True)
    changes = {
        f"members/{row}/id_number": standard.lower(),
        f"members/{row}/name": "ｘ",  # not an ID field: untouched
        "phone": "13800138000",
        "": {"$tombstone": True},
    }
    out = standard_changes(ROSTER, changes, TODAY)
    assert out == {**changes, f"members/{row}/id_number": standard}
    bad = {f"members/{row}/id_number": "53010219"}
    assert standard_changes(ROSTER, bad, TODAY) == bad


def test_calculations_read_the_standard_form() -> None:
    education = load_builtin("compulsory_education")
    original = sample_household(3)["compulsory_education"]
    record = copy.deepcopy(original)
    (child,) = record["children"]
    child["id_number"] = _full_width(child["id_number"]).lower()
    context = EvaluationContext(today=TODAY)
    result = validate_record(education, record, context)
    assert result.ok
    # The age and everything derived from it are what the standard spelling gives.
    assert result.cleaned == validate_record(education, original, context).cleaned
