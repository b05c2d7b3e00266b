"""Stored record states and conflicts read back strictly: devices read them from server replies.

``RecordState.from_dict`` and ``Conflict.from_dict`` either rebuild exactly what ``to_dict``
wrote or raise their module's typed error (``StateFormatError`` / ``ConflictFormatError``),
whatever a damaged or hostile reply holds.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_protocol.conflicts import Conflict, ConflictFormatError, detect_duplicate_household
from sync_protocol.merge import RecordState, StateFormatError, current_values, device_view
from tests.sync_protocol.test_merge import HOUSEHOLD, REF, Device, apply, apply_all


def _rich_state() -> RecordState:
    """Conflicts of every merge kind, a suspect write, a row tombstone, a resolution."""
    a, b = Device("dev-a"), Device("dev-b")
    c = Device("dev-c", wall_ms=REF + 10_000_000)  # a suspect clock
    state = apply(
        None, a.create({"head_name": "张三", "members/r1/name": "王五", "phone": "1"})
    ).state
    raced = apply_all(
        [
            a.put(state, {"income": 1, "appraisal_grade": "B"}),
            b.put(state, {"income": 2, "appraisal_grade": "C", "phone": "2"}),
            c.put(state, {"phone": "4"}),
        ],
        state,
    )
    raced = apply_all(
        [a.delete_row(raced, "members/r1"), b.put(raced, {"members/r1/name": "X"})], raced
    )
    field = next(k for k in raced.conflicts if k.kind == "field" and k.path == "income")
    resolved = apply(raced, a.resolve(raced, field.conflict_id, {"income": 3})).state
    resolved.revision = 9
    return resolved


RICH = _rich_state()
RICH_DICT = json.loads(json.dumps(RICH.to_dict(), ensure_ascii=False))
RICH_CONFLICTS = [json.loads(json.dumps(k.to_dict())) for k in RICH.conflicts]


def test_the_rich_state_covers_what_it_claims() -> None:
    kinds = {k.kind for k in RICH.conflicts}
    assert {"row_delete_edit", "field"} <= kinds
    assert {k.reason for k in RICH.conflicts} == {"delete", "review", "suspect_clock"}
    assert any(row.get("x") for row in RICH_DICT["ops"]) and any("c" in r for r in RICH_DICT["ops"])
    assert RecordState.from_dict(RICH_DICT).to_dict() == RICH_DICT


def test_a_household_with_extra_keys_reads_back_like_an_op_carries_it() -> None:
    # Op accepts extra household keys (only the two are required), so a stored state must too.
    extra = RICH_DICT | {"household": {**HOUSEHOLD, "note": "东厢", "size": 4}}
    assert RecordState.from_dict(extra).to_dict() == extra


def test_extra_keys_the_server_adds_are_ignored() -> None:
    warned = RICH_DICT | {"warnings": [{"code": "range", "path": "income"}]}
    assert RecordState.from_dict(warned).to_dict() == RICH_DICT


def _at(path: str) -> Any:
    return lambda d: d["paths"][path][0]


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda d: d.update(household="530102001201:0001"), "household"),
        (lambda d: d.update(household={"village_code": "530102001201"}), "household.household_no"),
        (lambda d: d.update(household={**HOUSEHOLD, "x": float("inf")}), "household.x"),
        (lambda d: d.update(household={**HOUSEHOLD, "household_no": 7}), "household.household_no"),
        (lambda d: d.update(record_id=7), "record_id"),
        (lambda d: d.update(record_id=""), "record_id"),
        (lambda d: d.update(form_id="Roster"), "form_id"),
        (lambda d: d.update(form_version=True), "form_version"),
        (lambda d: d.update(round=3), "round"),
        (lambda d: d.update(revision=-1), "revision"),
        (lambda d: d.update(envelope_stamp="yesterday"), "envelope_stamp"),
        (lambda d: d["paths"]["phone"][0].__setitem__(0, -1), "[0]"),
        (lambda d: d["paths"]["phone"][0].__setitem__(0, True), "[0]"),
        (lambda d: d["paths"]["phone"].append(d["paths"]["phone"][0]), "oldest first"),
        (lambda d: d["paths"]["phone"].__setitem__(1, [1, "x", "019ab697e800-0000-dev-a"]), "[2]"),
        (lambda d: d["paths"]["phone"][1].__setitem__(2, ["nope"]), "[2][0]"),
        (lambda d: d["paths"]["phone"][0].append("019ab697e800-0000-dev-a"), "[2]"),
        (lambda d: d["paths"]["phone"][0].extend([[], {}, 1]), "paths['phone'][0]"),
        (lambda d: d["paths"]["phone"][1].append({"a": []}), "only a tombstone"),
        (lambda d: d["paths"]["members/r1"][-1].__setitem__(3, []), "[3]"),
        (lambda d: d["paths"].__setitem__("phone", []), "paths['phone']"),
        (lambda d: d["paths"].__setitem__("/phone", d["paths"]["phone"]), "paths key"),
        (lambda d: d["ops"].reverse(), "sorted by stamp"),
        (lambda d: d["ops"][0].update(q=0), "ops[0].q"),
        (lambda d: d["ops"][0].update(d=""), "ops[0].d"),
        (lambda d: d["ops"][0].update(x="yes"), "ops[0].x"),
        (lambda d: d["ops"][0].update(c=5), "ops[0].c"),
        (lambda d: d["ops"][0].update(z=5), "unknown keys"),
        (lambda d: d["ops"].__setitem__(0, "019ab697e800-0000-dev-a"), "ops[0]"),
        (lambda d: d.update(ops={}), "ops"),
        (lambda d: d.update(policies=[]), "policies"),
        (lambda d: d.update(policies={"income": "maybe"}), "policies"),
        (lambda d: d.pop("paths"), "paths: missing"),
    ],
)
def test_each_malformed_part_is_a_state_format_error_naming_it(damage: Any, named: str) -> None:
    data = copy.deepcopy(RICH_DICT)
    damage(data)
    with pytest.raises(StateFormatError) as info:
        RecordState.from_dict(data)
    assert info.value.code == "record_state_invalid"
    assert named in info.value.message, info.value.message


def test_a_state_that_is_not_an_object_is_a_state_format_error() -> None:
    for value in ("x", 1, None, [], [RICH_DICT]):
        with pytest.raises(StateFormatError):
            RecordState.from_dict(value)  # type: ignore[arg-type]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 40) | st.text(max_size=4) | st.floats(),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
    max_leaves=8,
)


def _locations(value: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place inside a JSON value (as key/index paths), the root excluded."""
    found: list[tuple[Any, ...]] = []
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        found.append((*here, key))
        found.extend(_locations(item, (*here, key)))
    return found


def _mutate(document: Any, data: st.DataObject) -> Any:
    document = copy.deepcopy(document)
    for _ in range(data.draw(st.integers(1, 3))):
        places = _locations(document)
        place = data.draw(st.sampled_from(places))
        parent = document
        for key in place[:-1]:
            parent = parent[key]
        action = data.draw(st.sampled_from(["replace", "delete", "insert"]))
        if action == "replace":
            parent[place[-1]] = data.draw(_JSON)
        elif action == "delete":
            del parent[place[-1]]
        elif isinstance(parent, list):
            parent.insert(place[-1], data.draw(_JSON))
        else:
            parent[data.draw(st.text(max_size=4))] = data.draw(_JSON)
    return document


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_states_raise_only_state_format_error(data: st.DataObject) -> None:
    mutated = _mutate(RICH_DICT, data)
    try:
        state = RecordState.from_dict(mutated)
    except StateFormatError as exc:
        assert exc.code == "record_state_invalid" and exc.message
        return
    # Accepted: then it is a usable state, every view computes and it reads back the same.
    dumped = json.loads(json.dumps(state.to_dict(), ensure_ascii=False))
    assert RecordState.from_dict(dumped).to_dict() == dumped
    current_values(state)
    device_view(state)
    for conflict in state.conflicts:
        assert Conflict.from_dict(json.loads(json.dumps(conflict.to_dict()))) == conflict


def _duplicate_conflict() -> dict[str, Any]:
    a = Device("dev-a")
    mine = a.create({"head_name": "张三"})
    existing = [
        ("7d0d3d7e-0000-4000-8000-000000000001", HOUSEHOLD, mine.form_id, "2026-annual", "")
    ]
    conflict = detect_duplicate_household(existing, mine)
    assert conflict is not None
    return json.loads(json.dumps(conflict.to_dict()))


CONFLICTS = [*RICH_CONFLICTS, _duplicate_conflict()]


def test_every_conflict_kind_reads_back() -> None:
    kinds = {c["kind"] for c in CONFLICTS}
    assert {"field", "row_delete_edit", "duplicate_household"} <= kinds
    for plain in CONFLICTS:
        assert Conflict.from_dict(plain).to_dict() == plain


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda d: d.update(candidates="x"), "candidates"),
        (lambda d: d.update(candidates=["x"]), "candidates[0]"),
        (lambda d: d.update(candidates=[{1: 2}]), "candidates[0]"),
        (lambda d: d.update(stamps="019ab697e800-0000-dev-a"), "stamps"),
        (lambda d: d.update(stamps=["nope"]), "stamps"),
        (lambda d: d.update(conflict_id="c-1"), "conflict_id"),
        (lambda d: d.update(record_id=5), "record_id"),
        (lambda d: d.update(path=None), "path"),
        (lambda d: d.update(reason="because"), "reason"),
        (lambda d: d.update(kind=["field"]), "kind"),
        (lambda d: d.update(mine=float("nan")), "mine"),
        (lambda d: d.pop("theirs"), "theirs"),
    ],
)
def test_each_malformed_conflict_part_is_named(damage: Any, named: str) -> None:
    data = copy.deepcopy(CONFLICTS[0])
    damage(data)
    with pytest.raises(ConflictFormatError) as info:
        Conflict.from_dict(data)
    assert info.value.code == "conflict_invalid"
    assert named in info.value.message, info.value.message


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from(range(len(CONFLICTS))), data=st.data())
def test_mutated_conflicts_raise_only_conflict_format_error(
    which: int, data: st.DataObject
) -> None:
    mutated = _mutate(CONFLICTS[which], data)
    try:
        conflict = Conflict.from_dict(mutated)
    except ConflictFormatError as exc:
        assert exc.code == "conflict_invalid" and exc.message
        return
    plain = json.loads(json.dumps(conflict.to_dict()))
    assert Conflict.from_dict(plain) == conflict
