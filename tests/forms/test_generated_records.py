"""Records generated from any form definition, generically, by walking its fields.

``records_for(defn)`` builds a hypothesis strategy from a ``FormDefinition`` alone: each field's
type gives its values (choices from its choice list, rows with unique ids for a repeat, nested
repeats likewise), a value that fails the field's own constraint is left out, and in ``wild``
mode any value may be replaced by one of the wrong type, rows may lose their ids or not be
objects, and unknown keys appear. The properties hold for every definition:

* ``validate_record`` never raises, whatever it is given;
* a record that validates is stable: validating its cleaned form gives no error, the same
  warnings and the same cleaned record;
* cleaning is a fixpoint for every record, valid or not: nothing typed is lost or changed by
  validating again.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forms import load_definition
from forms.definition import Field, FieldType, FormDefinition
from forms.errors import EvaluationError
from forms.expressions import Environment, EvaluationContext, parse_expression
from forms.identity import id_check_char
from forms.instruments import load_builtin
from forms.validation import validate_record
from tests.forms.conftest import HOUSING_V1

TODAY = date(2026, 11, 25)
CONTEXT = EvaluationContext(today=TODAY, config={"monitoring_line": 8700})

#: Valid ID numbers (and a disability card) mixed into text answers, so id-valid(.) passes.
IDS = [
    p + id_check_char(p) for p in ("53010219800101123", "53010220140302221", "11010519491231002")
]
IDS.append(IDS[0] + "12")

GARBAGE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _passes_own_constraint(fld: Field, value: Any) -> bool:
    """The field's constraint with ``.`` bound to the value and nothing else known."""
    if fld.constraint is None:
        return True
    typed = date.fromisoformat(value) if fld.type is FieldType.DATE else value
    env = Environment({}, current=typed, context=CONTEXT)
    try:
        return parse_expression(fld.constraint).is_true(env)
    except EvaluationError:
        return False


def _value(defn: FormDefinition, fld: Field, wild: bool) -> st.SearchStrategy[Any]:
    kind = fld.type
    if kind is FieldType.REPEAT:
        return _rows(defn, fld, wild)
    if kind in (FieldType.SELECT_ONE, FieldType.SELECT_MULTIPLE):
        values = [c.value for c in defn.choices_of(fld)]
        if kind is FieldType.SELECT_ONE:
            plain: st.SearchStrategy[Any] = st.sampled_from(values)
        else:
            plain = st.lists(st.sampled_from(values), unique=True, min_size=1, max_size=3)
    elif kind is FieldType.TEXT:
        plain = st.one_of(st.text(min_size=1, max_size=12), st.sampled_from(IDS))
    elif kind is FieldType.INTEGER:
        plain = st.one_of(st.integers(0, 40), st.integers(1895, 2030), st.integers(-(10**6), 10**6))
    elif kind is FieldType.DECIMAL:
        plain = st.one_of(
            st.integers(0, 100),
            st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x, 2)),
        )
    elif kind is FieldType.DATE:
        plain = st.dates(date(1895, 1, 1), date(2030, 12, 31)).map(date.isoformat)
    elif kind is FieldType.BOOLEAN:
        plain = st.booleans()
    elif kind is FieldType.GEOPOINT:
        plain = st.fixed_dictionaries(
            {"lat": st.floats(-90, 90), "lon": st.floats(-180, 180)},
            optional={"accuracy": st.floats(0, 100)},
        )
    elif kind is FieldType.IMAGE:
        plain = st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex())
    else:  # note, calculate: nothing to answer
        return st.nothing()
    # A value that breaks the field's own constraint is left out rather than filtered away.
    plain = plain.map(lambda v: v if _passes_own_constraint(fld, v) else None)
    return st.one_of(plain, GARBAGE) if wild else plain


def _row(defn: FormDefinition, fld: Field, wild: bool) -> st.SearchStrategy[dict[str, Any]]:
    return _object(defn, fld.fields, wild)


def _rows(defn: FormDefinition, fld: Field, wild: bool) -> st.SearchStrategy[Any]:
    @st.composite
    def build(draw: st.DrawFn) -> list[Any]:
        rows: list[Any] = draw(st.lists(_row(defn, fld, wild), max_size=3))
        out: list[Any] = []
        for number, row in enumerate(rows):
            out.append({"_id": f"{fld.name}-{number}", **row})
        if wild and out and draw(st.booleans()):
            damage = draw(st.sampled_from(["no_id", "duplicate_id", "not_an_object", "bad_id"]))
            if damage == "no_id":
                del out[-1]["_id"]
            elif damage == "duplicate_id":
                out.append(dict(out[0]))
            elif damage == "bad_id":
                out[-1]["_id"] = draw(st.sampled_from([7, "a/b", "", None]))
            else:
                out.insert(0, draw(GARBAGE))
        return out

    return build()


def _object(
    defn: FormDefinition, fields: tuple[Field, ...], wild: bool
) -> st.SearchStrategy[dict[str, Any]]:
    answerable = [f for f in fields if f.type not in (FieldType.NOTE, FieldType.CALCULATE)]

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for fld in answerable:
            if draw(st.integers(0, 9)) == 0:
                continue  # left unanswered
            value = draw(_value(defn, fld, wild))
            if value is not None:
                data[fld.name] = value
        if wild and draw(st.booleans()):
            data[draw(st.sampled_from(["zz_unknown", "Bad Key", "_order"]))] = draw(GARBAGE)
        if wild and fields and draw(st.booleans()):
            # A value sent for a calculation or a note: recomputed or ignored.
            data[draw(st.sampled_from([f.name for f in fields]))] = draw(GARBAGE)
        return data

    return build()


def records_for(defn: FormDefinition, *, wild: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """Records of ``defn``, built from its fields alone (see the module docstring)."""
    return _object(defn, defn.fields, wild)


NESTED = load_definition(
    {
        "id": "nested_mini",
        "version": 1,
        "title": "嵌套",
        "fields": [
            {"name": "kind", "type": "select_one", "label": "类别", "choices": "kind"},
            {"name": "survey", "type": "date", "label": "日期", "constraint": ". <= today()"},
            {
                "name": "people",
                "type": "repeat",
                "label": "人员",
                "max_rows": 2,
                "relevant": "${kind} != 'none'",
                "fields": [
                    {
                        "name": "id_number",
                        "type": "text",
                        "label": "证号",
                        "required": True,
                        "constraint": "id-valid(.)",
                    },
                    {
                        "name": "age",
                        "type": "calculate",
                        "calculate": "age-at(${id_number}, coalesce(${survey}, today()))",
                    },
                    {
                        "name": "school",
                        "type": "select_one",
                        "label": "在校",
                        "choices": "kind",
                        "relevant": "${age} >= 6 and ${age} <= 16",
                        "required": True,
                    },
                    {
                        "name": "visits",
                        "type": "repeat",
                        "label": "走访",
                        "relevant": "${school} = 'none'",
                        "fields": [
                            {"name": "on", "type": "date", "label": "日", "required": True},
                            {"name": "ok", "type": "boolean", "label": "好"},
                        ],
                    },
                ],
            },
            {
                "name": "children",
                "type": "calculate",
                "calculate": "count-if(${people}, ${age} <= 16)",
            },
        ],
        "choice_lists": {
            "kind": [{"value": "none", "label": "无"}, {"value": "some", "label": "有"}]
        },
        "checks": [
            {
                "id": "c_visit",
                "severity": "error",
                "field": "people/visits",
                "rule": "count(${visits}) <= 1",
                "message": "最多一次",
            },
            {
                "id": "c_rows",
                "severity": "warning",
                "field": "people",
                "rule": "all(${people}, ${id_number} != '')",
                "message": "证号",
            },
        ],
    }
)

DEFINITIONS = {
    "housing_mini": load_definition(HOUSING_V1),
    "nested_mini": NESTED,
    "housing_safety": load_builtin("housing_safety"),
    "drinking_water": load_builtin("drinking_water"),
    "compulsory_education": load_builtin("compulsory_education"),
}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _revalidate_is_a_fixpoint(defn: FormDefinition, cleaned: dict[str, Any]) -> None:
    again = validate_record(defn, cleaned, CONTEXT)
    assert again.cleaned == cleaned


@pytest.mark.parametrize("name", list(DEFINITIONS))
def test_generated_valid_records_are_stable(name: str) -> None:
    defn = DEFINITIONS[name]

    @SETTINGS
    @given(records_for(defn))
    def run(record: dict[str, Any]) -> None:
        result = validate_record(defn, record, CONTEXT)
        _revalidate_is_a_fixpoint(defn, result.cleaned)
        if result.ok:
            again = validate_record(defn, result.cleaned, CONTEXT)
            assert again.ok, again.errors
            assert [i.to_dict() for i in again.warnings] == [i.to_dict() for i in result.warnings]

    run()


@pytest.mark.parametrize("name", list(DEFINITIONS))
def test_validation_never_raises_on_generated_records(name: str) -> None:
    defn = DEFINITIONS[name]

    @SETTINGS
    @given(records_for(defn, wild=True))
    def run(record: dict[str, Any]) -> None:
        result = validate_record(defn, record, CONTEXT)
        assert all(i.severity in ("error", "warning") for i in result.issues)
        for issue in result.issues:
            assert issue.to_dict()["message"]["zh"]
        _revalidate_is_a_fixpoint(defn, result.cleaned)

    run()


@pytest.mark.parametrize("name", list(DEFINITIONS))
def test_the_generator_reaches_valid_records(name: str) -> None:
    """The strategy is useful: it produces records that validate (so stability is exercised)."""
    defn = DEFINITIONS[name]
    found: list[dict[str, Any]] = []

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(records_for(defn))
    def run(record: dict[str, Any]) -> None:
        if validate_record(defn, record, CONTEXT).ok:
            found.append(record)

    run()
    assert found, f"no generated {name} record validated"
