"""ID numbers, village codes and phones as field staff and spreadsheets really type them."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forms.identity import (
    IdNumberError,
    VillageCodeError,
    age_on,
    id_check_char,
    is_valid_id_number,
    is_valid_phone,
    normalize_id_number,
    parse_id_number,
    parse_village_code,
    school_year_reference,
    scope_contains,
)

TODAY = date(2026, 11, 25)
# The GB 11643-1999 worked example: 11010519491231002X (a woman born 1949-12-31 in Beijing).
STANDARD_EXAMPLE = "11010519491231002X"


def make_id(region: str, birth: date, sequence: int) -> str:
    first17 = f"{region}{birth:%Y%m%d}{sequence:03d}"
    return first17 + id_check_char(first17)


def test_standard_example_parses() -> None:
    info = parse_id_number(STANDARD_EXAMPLE, today=TODAY)
    assert info.kind == "resident"
    assert info.birth_date == date(1949, 12, 31)
    assert info.sex == "female"
    assert info.region_code == "110105"
    assert info.disability_category is None


def test_odd_seventeenth_digit_is_male() -> None:
    number = make_id("530102", date(1990, 1, 1), 11)
    assert parse_id_number(number, today=TODAY).sex == "male"


def test_wrong_check_digit_is_rejected_with_the_expected_character() -> None:
    good = make_id("530102", date(1985, 6, 15), 123)
    wrong = good[:17] + ("0" if good[17] != "0" else "1")
    with pytest.raises(IdNumberError) as err:
        parse_id_number(wrong, today=TODAY)
    assert err.value.code == "check_digit"
    assert good[17] in err.value.message_zh
    assert "check character" in err.value.message_en


def test_full_width_digits_lower_case_x_and_spaces_are_normalised() -> None:
    typed = "１１０１０５ １９４９-１２３１ ００２ｘ"
    assert normalize_id_number(typed) == STANDARD_EXAMPLE
    assert parse_id_number(typed, today=TODAY).number == STANDARD_EXAMPLE
    assert normalize_id_number("11010519491231002x") == STANDARD_EXAMPLE
    assert normalize_id_number("'11010519491231002X") == STANDARD_EXAMPLE


def test_excel_integer_is_recovered_exactly() -> None:
    number = make_id("530102", date(1990, 10, 11), 101)
    if number.endswith("X"):
        number = make_id("530102", date(1990, 10, 11), 103)
    assert not number.endswith("X")
    assert parse_id_number(int(number), today=TODAY).number == number


def test_genuine_id_ending_in_000_is_accepted_as_text() -> None:
    # Sequence ..x00 with check character 0 happens; as text it is fine.
    for sequence in range(0, 1000, 100):
        number = make_id("530102", date(1990, 10, 11), sequence)
        if number.endswith("000"):
            assert parse_id_number(number, today=TODAY).number == number
            with pytest.raises(IdNumberError):
                normalize_id_number(int(number))
            return
    pytest.fail("no ID ending in 000 among the candidates")


@pytest.mark.parametrize(
    "excel_value",
    [5.30102199001011e17, "5.30102199001011E+17", "5.3E17", 530102199001011000],
)
def test_excel_float_cannot_be_recovered(excel_value: object) -> None:
    with pytest.raises(IdNumberError) as err:
        normalize_id_number(excel_value)  # type: ignore[arg-type]
    assert err.value.code == "lossy_number"
    assert "re-type" in err.value.message_en
    assert "重新录入" in err.value.message_zh


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("", "empty"),
        ("1101051949123100", "length"),
        ("11010519491231002X1", "length"),
        ("11010519491231A02X", "characters"),
        ("110105194912310X2X", "characters"),
        ("110105194913310021", "birth_date"),  # month 13
        ("110105189912310021", "birth_date"),  # before 1900
        ("110105203012310021", "birth_date"),  # in the future
    ],
)
def test_distinct_error_codes(raw: str, code: str) -> None:
    with pytest.raises(IdNumberError) as err:
        parse_id_number(raw, today=TODAY)
    assert err.value.code == code
    assert err.value.messages() == {"zh": err.value.message_zh, "en": err.value.message_en}
    assert err.value.message == err.value.message_en


def test_february_29_only_in_leap_years() -> None:
    assert parse_id_number(make_id("530102", date(2000, 2, 29), 2), today=TODAY)
    not_leap = "53010220010229002"
    with pytest.raises(IdNumberError) as err:
        parse_id_number(not_leap + id_check_char(not_leap), today=TODAY)
    assert err.value.code == "birth_date"


def test_disability_card_has_category_and_grade() -> None:
    base = make_id("530102", date(2008, 3, 4), 52)
    info = parse_id_number(base + "42", today=TODAY)
    assert info.kind == "disability_card"
    assert (info.disability_category, info.disability_grade) == (4, 2)
    assert info.resident_number == base
    for bad in ("82", "05", "45", "4X"):
        with pytest.raises(IdNumberError) as err:
            parse_id_number(base + bad, today=TODAY)
        assert err.value.code == "disability_suffix"


def test_is_valid_id_number_never_raises() -> None:
    assert is_valid_id_number(STANDARD_EXAMPLE, today=TODAY)
    assert not is_valid_id_number(None)
    assert not is_valid_id_number(["x"])
    assert not is_valid_id_number(True)
    assert not is_valid_id_number(1.5)


@settings(max_examples=150, deadline=None)
@given(
    birth=st.dates(min_value=date(1900, 1, 1), max_value=TODAY),
    sequence=st.integers(min_value=0, max_value=999),
    position=st.integers(min_value=0, max_value=16),
    delta=st.integers(min_value=1, max_value=9),
)
def test_any_single_digit_typo_is_caught(
    birth: date, sequence: int, position: int, delta: int
) -> None:
    number = make_id("530102", birth, sequence)
    info = parse_id_number(number, today=TODAY)
    assert info.birth_date == birth
    assert info.sex == ("male" if sequence % 2 else "female")
    typo = number[:position] + str((int(number[position]) + delta) % 10) + number[position + 1 :]
    # GB 11643's mod-11 check catches every single-character substitution.
    assert not is_valid_id_number(typo, today=TODAY)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=30))
def test_no_text_crashes_the_parser(text: str) -> None:
    try:
        parse_id_number(text, today=TODAY)
    except IdNumberError as err:
        assert err.code in {
            "empty",
            "lossy_number",
            "length",
            "characters",
            "birth_date",
            "check_digit",
            "disability_suffix",
        }


def test_age_on_counts_whole_years() -> None:
    assert age_on(date(2014, 9, 1), date(2020, 9, 1)) == 6
    assert age_on(date(2014, 9, 2), date(2020, 9, 1)) == 5
    assert age_on(date(2012, 2, 29), date(2016, 2, 28)) == 3
    assert age_on(date(2012, 2, 29), date(2016, 2, 29)) == 4
    assert age_on(date(2012, 2, 29), date(2017, 3, 1)) == 5


def test_school_year_reference() -> None:
    assert school_year_reference(date(2027, 3, 15)) == date(2026, 9, 1)
    assert school_year_reference(date(2026, 9, 1)) == date(2026, 9, 1)
    assert school_year_reference(date(2026, 8, 31)) == date(2025, 9, 1)
    assert school_year_reference(date(2026, 12, 31)) == date(2026, 9, 1)


def test_village_code_levels_and_kinds() -> None:
    code = parse_village_code("530102001201")
    assert (code.province, code.prefecture, code.county) == ("53", "01", "02")
    assert (code.township, code.village) == ("001", "201")
    assert code.township_kind == "sub_district"
    assert code.village_kind == "village_committee"
    assert code.county_code == "530102"
    assert code.township_code == "530102001"
    assert code.warnings == ()
    assert parse_village_code(530102150012).township_kind == "town"
    assert parse_village_code("５３０１０２２０１００１").township_kind == "township"


def test_out_of_range_village_code_warns_but_is_accepted() -> None:
    code = parse_village_code("530102450500")
    assert code.township_kind is None and code.village_kind is None
    assert {w.code for w in code.warnings} == {"township_range", "village_range"}
    assert all(w.message_zh and w.message_en for w in code.warnings)


@pytest.mark.parametrize("bad", ["53010200120", "5301020012011", "53010200120A", ""])
def test_malformed_village_code_is_an_error(bad: str) -> None:
    with pytest.raises(VillageCodeError) as err:
        parse_village_code(bad)
    assert err.value.code == "village_code_format"


def test_scope_contains() -> None:
    assert scope_contains("530102", "530102001201")
    assert scope_contains("530102001", "530102001201")
    assert scope_contains("530102001201", "530102001201")
    assert not scope_contains("530102002", "530102001201")
    assert not scope_contains("530102", "5301020012")
    for bad in ("", "53a", "5301020012011"):
        with pytest.raises(VillageCodeError):
            scope_contains(bad, "530102001201")


def test_phone() -> None:
    assert is_valid_phone("13800138000")
    assert not is_valid_phone("138 0013 8000")
    assert not is_valid_phone("１３８００１３８０００")
    assert not is_valid_phone("23800138000")
    assert not is_valid_phone("1380013800")
    assert not is_valid_phone(13800138000)
    assert not is_valid_phone(None)


@pytest.mark.parametrize(
    "phone",
    [
        "13800138000",
        "138 0013 8000",
        "138-0013-8000",
        "１３８００１３８０００",
        "23800138000",
        "1380013800",
        "138001380001",
        " 13800138000",
        "13800138000\n",
    ],
)
def test_phone_rule_is_the_roster_forms_rule(phone: str) -> None:
    """One rule: ``is_valid_phone`` and the roster's ``phone`` constraint give the same verdict."""
    from forms.expressions import EvaluationContext
    from forms.identity import PHONE_PATTERN
    from forms.instruments import load_builtin
    from forms.instruments.samples import sample_household
    from forms.validation import validate_record

    roster = load_builtin("household_roster")
    field = next(f for f in roster.fields if f.name == "phone")
    assert PHONE_PATTERN in field.constraint
    data = dict(sample_household(seed=1)["household_roster"], phone=phone)
    result = validate_record(roster, data, EvaluationContext())
    form_accepts = not [i for i in result.errors if i.path == "phone"]
    assert is_valid_phone(phone) is form_accepts
