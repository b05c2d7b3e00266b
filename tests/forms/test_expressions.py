"""The expression language: grammar, semantics, functions, limits, and a parser that never crashes."""

from __future__ import annotations

import time
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forms.errors import EvaluationError, ExpressionError
from forms.expressions import (
    FUNCTIONS,
    MAX_DEPTH,
    MAX_HEIGHT,
    MAX_LENGTH,
    MAX_REGEX_INPUT,
    REGEX_TIMEOUT_SECONDS,
    Environment,
    EvaluationContext,
    parse_expression,
)
from forms.identity import id_check_char

TODAY = date(2026, 11, 25)
CONTEXT = EvaluationContext(today=TODAY, config={"monitoring_line": 8700})


def make_id(birth: str, seq: str = "122") -> str:
    first17 = "530102" + birth.replace("-", "") + seq
    return first17 + id_check_char(first17)


def ev(text: str, values: dict[str, Any] | None = None, current: Any = None) -> Any:
    env = Environment(values=values or {}, current=current, context=CONTEXT)
    return parse_expression(text).evaluate(env)


def parse_error(text: str) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        parse_expression(text)
    return info.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("7 div 2", 3.5),
        ("8 / 2", 4),
        ("7 mod 3", 1),
        ("-7 mod 3", -1),
        ("-(2 + 3)", -5),
        ("1 < 2 and 2 < 3", True),
        ("1 > 2 or 3 = 3", True),
        ("1 = 1 and 2 = 3 or 4 = 4", True),
        ("'a' = \"a\"", True),
        ("'3' = 3", True),
        ("'x' = 3", False),
        ("'x' != 3", True),
        ("true() and not(false())", True),
        ("2.5 * 2", 5.0),
        (".5 + .5", 1.0),
    ],
)
def test_operators(text: str, expected: Any) -> None:
    assert ev(text) == expected


def test_money_arithmetic_is_decimal_faithful() -> None:
    assert ev("0.1 + 0.2") == 0.3
    assert ev("3 * 1.1") == 3.3
    assert ev("round(43720.3 div 4, 2)") == 10930.08  # binary floats would give 10930.07
    assert (
        ev("sum(${rows}, ${v})", {"rows": [{"_id": "a", "v": 0.1}, {"_id": "b", "v": 0.2}]}) == 0.3
    )
    assert ev("7.5 mod 2") == 1.5 and ev("-7.5 mod 2") == -1.5
    assert ev("1 div 3") == pytest.approx(1 / 3)


def test_field_references_and_current() -> None:
    values = {"a": 3, "b": "C", "d": "2020-05-01", "empty": "", "none": None}
    assert ev("${a} + 1", values) == 4
    assert ev("${b} = 'C'", values)
    assert ev(". >= 1900 and . <= year(today())", values, current=1990)
    assert not ev(". >= 1900 and . <= year(today())", values, current=2027)
    assert ev("${d} < today()", values)
    assert ev("${missing}", values) is None


def test_empty_values() -> None:
    values = {"empty": "", "none": None, "multi": []}
    assert ev("${none} = ''", values)
    assert ev("${empty} = ''", values)
    assert ev("${multi} = ''", values)
    assert not ev("${none} != ''", values)
    assert not ev("${none} = 'C'", values)
    assert not ev("${none} != 'C'", values)
    assert not ev("${none} < 3", values)
    assert not ev("${none} = ${empty}", values)
    assert ev("${none} + 1", values) is None
    assert ev("-${none}", values) is None
    assert ev("'x' != ''", values)


def test_contract_check_example() -> None:
    rule = "not(${appraisal_grade} = 'C' and ${renovation_method} != '维修加固')"
    assert ev(rule, {"appraisal_grade": "C", "renovation_method": "维修加固"})
    assert not ev(rule, {"appraisal_grade": "C", "renovation_method": "拆除重建"})
    assert ev(rule, {"appraisal_grade": "D", "renovation_method": "拆除重建"})
    assert ev(rule, {})


ROWS = {
    "income": 1000,
    "members": [
        {"_id": "a", "name": "甲", "age": 40, "income": 20000, "tags": ["x"]},
        {"_id": "b", "name": "乙", "age": 12, "income": None},
        {"_id": "c", "name": "丙", "age": 9, "income": 5000.5},
    ],
}


def test_row_functions() -> None:
    assert ev("count(${members})", ROWS) == 3
    assert ev("count(${nothing})", ROWS) == 0
    assert ev("count-if(${members}, ${age} >= 6 and ${age} <= 16)", ROWS) == 2
    assert ev("sum(${members}, ${income})", ROWS) == 25000.5
    assert ev("any(${members}, ${age} > 30)", ROWS)
    assert not ev("all(${members}, ${age} > 30)", ROWS)
    assert ev("all(${nothing}, false())", ROWS)
    # Inside a row the row's field wins over the top-level one of the same name.
    assert ev("sum(${members}, ${income}) > ${income}", ROWS)
    # With level names, a row that leaves a field empty does not fall back to the top level.
    env = Environment(
        values=ROWS,
        context=CONTEXT,
        level_names={"": frozenset({"income", "members"}), "members": frozenset({"income", "age"})},
    )
    assert parse_expression("count-if(${members}, ${income} = '')").evaluate(env) == 1


def test_select_functions() -> None:
    values = {"risks": ["因病", "因学"], "odk": "a b", "one": "a"}
    assert ev("selected(${risks}, '因病')", values)
    assert not ev("selected(${risks}, '因残')", values)
    assert ev("selected(${odk}, 'b')", values)
    assert ev("count-selected(${risks})", values) == 2
    assert ev("count-selected(${none})", values) == 0
    assert ev("selected(${one}, 'a')", values)


def test_text_and_number_functions() -> None:
    assert ev("string-length('身份证')") == 3
    assert ev("string-length(${x})", {}) == 0
    assert ev("regex('13800138000', '^1[0-9]{10}$')")
    assert not ev("regex('1380013800', '^1[0-9]{10}$')")
    assert not ev("regex(${x}, 'a')", {})
    assert ev("number('12')") == 12
    assert ev("number(' 1.5 ')") == 1.5
    assert ev("number('abc')") is None
    assert ev("number(true())") == 1
    assert ev("int(7.9)") == 7
    assert ev("string(3.0)") == "3"
    assert ev("string(true())") == "true"
    assert ev("string(date('2026-01-02'))") == "2026-01-02"
    assert ev("round(2.345, 2)") == 2.35
    assert ev("round(2.5)") == 3
    assert ev("round(-2.5)") == -3
    assert ev("round(1234, -2)") == 1200
    assert ev("min(3, ${x}, 1)") == 1
    assert ev("max(3, ${x}, 1)") == 3
    assert ev("max(${x})") is None
    assert ev("max(date('2020-01-01'), '2021-01-01')") == date(2021, 1, 1)
    assert ev("coalesce(${x}, ${y}, 'z')") == "z"
    assert ev("if(1 > 2, 'a', 'b')") == "b"
    assert ev("if(true(), 1, 1 div 0)") == 1  # only the chosen side is evaluated
    assert ev("concat('a', 1, ${x}, true())") == "a1true"
    assert ev("contains('维修加固', '加固')")
    assert ev("starts-with('530102', '53')")
    assert ev("config('monitoring_line')") == 8700
    assert ev("config('nope')") is None
    assert ev("config('nope', 5)") == 5
    assert ev("boolean('x')") and not ev("boolean('')")


def test_date_functions() -> None:
    assert ev("today()") == TODAY
    assert ev("date('2024-02-29')") == date(2024, 2, 29)
    assert ev("year(date('2024-02-29'))") == 2024
    assert ev("month('2024-02-29')") == 2
    assert ev("day(${d})", {"d": date(2024, 2, 29)}) == 29
    assert ev("school-age-date('2027-03-01')") == date(2026, 9, 1)
    assert ev("school-age-date('2026-09-01')") == date(2026, 9, 1)
    assert ev("days-between('2026-01-01', '2026-03-01')") == 59
    assert ev("date('2026-01-01') + 31") == date(2026, 2, 1)
    assert ev("date('2026-03-01') - date('2026-01-01')") == 59
    assert ev("date('2026-03-01') - 1") == date(2026, 2, 28)


def test_identity_functions() -> None:
    pid = make_id("2014-09-02")
    bad = pid[:17] + ("0" if pid[17] != "0" else "1")
    values = {"id": pid, "bad": bad}
    assert ev("id-valid(${id})", values)
    assert not ev("id-valid(${bad})", values)
    assert not ev("id-valid(${none})", values)
    assert ev("age-at(${id}, '2026-09-01')", values) == 11
    assert ev("age-at(${id}, '2026-09-02')", values) == 12
    assert ev("age-at(${id}, school-age-date(today()))", values) == 11
    assert ev("age-at(${bad}, today())", values) is None
    assert ev("id-birth-date(${id})", values) == date(2014, 9, 2)
    assert ev("id-sex(${id})", values) == "female"
    assert ev("id-sex(${id})", {"id": make_id("1980-01-01", "131")}) == "male"
    assert ev("id-kind(${id})", values) == "resident"
    assert ev("id-kind(${card})", {"card": f"{pid[:6]} {pid[6:]} 52"}) == "disability_card"
    assert ev("id-kind(${bad})", values) is None
    assert ev("id-kind(${card})", {"card": pid + "82"}) is None  # category 8 does not exist


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("'a' + 1", "type"),
        ("1 div 0", "division_by_zero"),
        ("3 mod 0", "division_by_zero"),
        ("date('2026-02-30')", None),
        ("year('2026-13-01')", "bad_date"),
        ("date(${s})", "bad_date"),
        ("'a' < 1", "type"),
        ("year(3)", "type"),
        ("round(1.5, 0.5)", "bad_argument"),
        ("sum(${s}, 1)", "type"),
        ("count(3)", "type"),
        ("-'a'", "type"),
        ("999999999999999999999999999 * 1.0e0", None),
    ],
)
def test_evaluation_errors_are_named(text: str, code: str | None) -> None:
    if code is None:
        with pytest.raises((ExpressionError, EvaluationError)):
            ev(text, {"s": "not-a-date"})
        return
    with pytest.raises(EvaluationError) as info:
        ev(text, {"s": "not-a-date"})
    assert info.value.code == code
    assert info.value.messages()["zh"]


def test_float_overflow_is_an_evaluation_error() -> None:
    big = "9" * 25
    text = " * ".join([big + ".0"] * 14)
    with pytest.raises(EvaluationError) as info:
        ev(text)
    assert info.value.code == "arithmetic"


@pytest.mark.parametrize(
    ("text", "code", "position"),
    [
        ("", "empty", 0),
        ("1 +", "unexpected_end", 3),
        ("(1 + 2", "unexpected_end", 6),
        ("1 2", "unexpected_token", 2),
        ("${a", "bad_field_reference", 0),
        ("$a", "bad_field_reference", 0),
        ("'abc", "unterminated_string", 0),
        ("1 # 2", "unexpected_character", 2),
        ("frobnicate(1)", "unknown_function", 0),
        ("x = 1", "unexpected_token", 0),
        ("not 1", "unexpected_token", 4),
        ("${a} = selected(${b})", "arity", 7),
        ("if(1, 2)", "arity", 0),
        ("today(1)", "arity", 0),
        ("count-if('x', 1)", "bad_argument", 0),
        ("regex(${a}, ${b})", "bad_argument", 0),
        ("regex(${a}, '(')", "bad_regex", 12),
        ("regex(${a}, '[a-')", "bad_regex", 12),
        ("date('2026-02-30')", "bad_argument", 5),
        ("date('26-1-1')", "bad_argument", 5),
        ("1" * 31, "bad_number", 0),
        ("a" * 5000, "too_long", MAX_LENGTH),
        ("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), "too_deep", MAX_DEPTH),
        ("-" * (MAX_DEPTH + 2) + "1", "too_deep", MAX_DEPTH),
    ],
)
def test_parse_errors_have_code_and_position(text: str, code: str, position: int) -> None:
    error = parse_error(text)
    assert (error.code, error.position) == (code, position)
    assert str(position) in error.message
    assert f"第 {position + 1} 个字符处" in error.message_zh
    if code != "unexpected_token":  # every other code has its own Chinese text
        assert not error.message_zh.startswith("表达式格式错误")


@pytest.mark.parametrize("op", ["+", "*", " and ", " or ", " = ", " div "])
def test_long_flat_chains_are_refused_not_a_recursion_error(op: str) -> None:
    assert parse_error(op.join(["1"] * 1500)[:MAX_LENGTH]).code == "too_deep"
    short = parse_expression(op.join(["1"] * (MAX_HEIGHT - 1)))
    short.evaluate({})
    assert len(short.references()) == 0 and not short.uses_current()


def test_regex_pattern_length_limit() -> None:
    assert parse_error("regex(., '" + "a" * 201 + "')").code == "bad_regex"
    assert parse_expression("regex(., '(?:ab)+')").evaluate(Environment({}, current="abab"))


@pytest.mark.parametrize(
    "pattern",
    [
        r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        "^.*.*.*x$",
        ".*-.*",
        "(ab)+",
        "^(a|b)" * 25,
        r"^[0-9]{6}(19|20)[0-9]{2}(0[1-9]|1[0-2])[0-9]{5}[0-9Xx]$",
    ],
)
def test_ordinary_regex_patterns_are_accepted_whatever_their_shape(pattern: str) -> None:
    parse_expression(f"regex(., '{pattern}')")


def test_the_common_email_check_works() -> None:
    check = parse_expression(r"regex(., '^[^@\s]+@[^@\s]+\.[^@\s]+$')")
    assert check.evaluate(Environment({}, current="li.wei@example.cn")) is True
    assert check.evaluate(Environment({}, current="li.wei@example")) is False


@pytest.mark.parametrize("pattern", ["^(a|a)*$", r"^(\w|\w\w)*$"])
def test_a_backtracking_regex_is_stopped_after_its_time_limit(pattern: str) -> None:
    check = parse_expression(f"regex(., '{pattern}')")
    # CPU time, not wall time: on a loaded machine the stopped match can wait for a core well
    # past its limit, but it must not keep computing (unstopped, these patterns never finish).
    started = time.process_time()
    with pytest.raises(EvaluationError) as info:
        check.evaluate(Environment({}, current="a" * (MAX_REGEX_INPUT - 1) + "!"))
    assert info.value.code == "regex_timeout"
    assert "秒" in info.value.message_zh
    assert time.process_time() - started < REGEX_TIMEOUT_SECONDS + 1.0


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        ("^[0-9]{11}$", "13800138000", "1380013800"),
        ("^1[3-9][0-9]{9}$", "13800138000", "12800138000"),
        ("^-?[0-9]+(\\.[0-9]{1,2})?$", "-12.5", "12.555"),
        ("^(男|女)$", "女", "男女"),
        ("^(ab)+$", "abab", "aba"),
        ("^.*-.*$", "a-b", "ab"),
        ("^[(|)]+\\(*$", "(|)((", "x"),
    ],
)
def test_benign_regex_patterns_work(pattern: str, good: str, bad: str) -> None:
    expr = parse_expression(f"regex(., '{pattern}')")
    assert expr.evaluate(Environment({}, current=good)) is True
    assert expr.evaluate(Environment({}, current=bad)) is False


# Fixed-width patterns run on re (no timeout needed); everything else on the timed regex engine.
_ATOMS = [
    "a",
    "b",
    "1",
    "中",
    ".",
    r"\d",
    r"\w",
    r"\s",
    r"\.",
    r"\-",
    "[0-9]",
    "[^0-9]",
    "[a-c-]",
    "[Xx]",
]
_fixed_patterns = st.builds(
    lambda start, atoms, end: start + "".join(atoms) + end,
    st.sampled_from(["", "^"]),
    st.lists(
        st.builds(
            lambda atom, count: atom + count,
            st.sampled_from(_ATOMS),
            st.sampled_from(["", "{2}", "{0}"]),
        ),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from(["", "$"]),
)


@settings(max_examples=300, deadline=None)
@given(_fixed_patterns, st.text(alphabet="ab1 2.中-Xx\n", max_size=12))
def test_a_fixed_width_pattern_matches_on_re_as_on_regex(pattern: str, text: str) -> None:
    import re

    import regex

    expr = parse_expression(f"regex(., '{pattern}')")
    assert isinstance(expr.root.pattern, re.Pattern)
    timed = regex.compile(pattern, regex.V0).search(text, timeout=1) is not None
    # An empty answer matches nothing, on either engine (it reads as empty, not as '').
    assert expr.evaluate(Environment({}, current=text)) is (timed and text != "")


@pytest.mark.parametrize(
    ("pattern", "fixed"),
    [
        ("^[0-9]{12}$", True),
        ("^1[0-9]{10}$", True),
        (r"^[0-9]{17}[0-9Xx]$", True),
        ("^a+$", False),
        ("^(a|b)$", False),
        ("^[0-9]{1,3}$", False),
        ("^[[:digit:]]$", False),
        (r"^\p{Han}$", False),
        ("^[a&&b]$", False),
        ("a{2}?", False),
    ],
)
def test_only_fixed_width_patterns_leave_the_timed_engine(pattern: str, fixed: bool) -> None:
    import re

    assert isinstance(parse_expression(f"regex(., '{pattern}')").root.pattern, re.Pattern) is fixed


def test_regex_input_is_bounded_and_accepted_patterns_stay_fast() -> None:
    expr = parse_expression("regex(., '^.*.*x$')")
    started = time.monotonic()
    for hostile in ("a" * MAX_REGEX_INPUT, "1" * MAX_REGEX_INPUT, "ax" * (MAX_REGEX_INPUT // 2)):
        expr.evaluate(Environment({}, current=hostile + "y"[: MAX_REGEX_INPUT - len(hostile)]))
    assert time.monotonic() - started < 5
    with pytest.raises(EvaluationError) as info:
        expr.evaluate(Environment({}, current="a" * (MAX_REGEX_INPUT + 1)))
    assert info.value.code == "too_long"


def test_references_and_scope() -> None:
    expr = parse_expression(
        "${a} + count-if(${members}, ${age} > ${limit} and any(${visits}, ${ok}))"
    )
    refs = [(r.name, r.position, r.via) for r in expr.references()]
    assert refs == [
        ("a", 0, ()),
        ("members", 16, ()),
        ("age", 28, ("members",)),
        ("limit", 37, ("members",)),
        ("visits", 54, ("members",)),
        ("ok", 65, ("members", "visits")),
    ]
    assert parse_expression(". > 1").uses_current()
    assert not parse_expression("${a} > 1").uses_current()


def test_parse_is_cached_and_expressions_compare_by_text() -> None:
    assert parse_expression("1 + 1") is parse_expression("1 + 1")
    assert parse_expression("1 + 1") == parse_expression("1 + 1")
    assert parse_expression("1 + 1") != parse_expression("1+1")


def test_context_accepts_datetime_and_decimal_configuration() -> None:
    from datetime import datetime
    from decimal import Decimal

    context = EvaluationContext(
        today=datetime(2026, 11, 25, 9, 30),
        config={"line": Decimal("8700.00"), "r": Decimal("0.5")},
    )
    env = Environment({"d": "2026-11-25"}, context=context)
    assert parse_expression("today() = ${d}").evaluate(env)
    assert parse_expression("config('line')").evaluate(env) == 8700
    assert parse_expression("config('r') * 2").evaluate(env) == 1.0


def test_plain_mapping_environment() -> None:
    assert parse_expression("${a} * 2").evaluate({"a": 21}) == 42
    assert parse_expression("today()").evaluate({}) == date.today()


def test_every_function_is_documented() -> None:
    assert all(spec.summary for spec in FUNCTIONS.values())


ALPHABET = st.sampled_from(
    [
        *list("${}()'\". ,=!<>+-*/0123456789abcdefxyz_"),
        "and",
        "or",
        "div",
        "mod",
        "not(",
        "count-if(",
        "${a}",
        "sum(",
        "regex(",
        "date(",
        "\n",
        "中",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(ALPHABET, max_size=40).map("".join))
def test_parser_never_crashes_on_expression_like_text(text: str) -> None:
    try:
        expr = parse_expression(text)
    except ExpressionError as error:
        assert 0 <= error.position <= len(text)
        return
    try:
        expr.evaluate(Environment({"a": 1, "x": "2020-01-01"}, current=3, context=CONTEXT))
    except EvaluationError as error:
        assert error.code


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_parser_never_crashes_on_any_text(text: str) -> None:
    try:
        parse_expression(text)
    except ExpressionError as error:
        assert isinstance(error.code, str) and 0 <= error.position <= max(len(text), MAX_LENGTH)


def test_odk_time_functions_now_decimal_date_time_and_once() -> None:
    # now() is the evaluation context's moment (midnight of today when none is given).
    assert ev("now()") == "2026-11-25T00:00:00"
    moment = EvaluationContext(today=TODAY, now="2026-11-25T06:00:00+08:00")
    assert parse_expression("now()").evaluate(Environment({}, context=moment)) == (
        "2026-11-25T06:00:00+08:00"
    )
    # decimal-date-time: days since 1970-01-01, a fraction for the time of day (UTC).
    assert ev("decimal-date-time('1970-01-02')") == 1
    assert ev("decimal-date-time(date('2026-11-25'))") == 20782
    assert ev("decimal-date-time('1970-01-01T12:00:00')") == 0.5
    assert ev("decimal-date-time('1970-01-02T08:00:00+08:00')") == 1
    assert ev("decimal-date-time(${d})", {}) is None
    stamp = parse_expression("decimal-date-time(now())")
    assert stamp.evaluate(Environment({}, context=moment)) == pytest.approx(20781.916666667)
    with pytest.raises(EvaluationError) as bad:
        ev("decimal-date-time('2026-13-01T00:00')")
    assert bad.value.code == "bad_date"
    # once(x): the value already recorded (.) stands; without one, x is computed.
    once = parse_expression("once(${a} + 1)")
    assert once.evaluate(Environment({"a": 4})) == 5
    assert once.evaluate(Environment({"a": 4}, current=9)) == 9
    assert once.evaluate(Environment({"a": 4}, current="")) == 5
    assert {"now", "once", "decimal-date-time"} <= set(FUNCTIONS)
