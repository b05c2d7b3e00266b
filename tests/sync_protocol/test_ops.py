"""Sync ops: construction, validation with the offending field named, dict/JSON round trips."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sync_protocol.clock import Stamp
from sync_protocol.errors import ProtocolError
from sync_protocol.ops import (
    TOMBSTONE,
    Op,
    OpFormatError,
    base_stamps,
    delete_op,
    delete_row_op,
    is_tombstone,
    put_op,
    resolve_op,
)

S1 = Stamp(1_764_000_000_000, 0, "dev-a").to_text()
S2 = Stamp(1_764_000_000_500, 2, "dev-b").to_text()
HOUSEHOLD = {"village_code": "530102001201", "household_no": "5301020012010001"}


def a_put(**overrides: Any) -> Op:
    fields: dict[str, Any] = {
        "device_id": "dev-a",
        "seq": 1,
        "record_id": "6f1c9a52-61c9-4d7e-9a0b-0d6f4f1d2a11",
        "form_id": "housing_safety",
        "form_version": 2,
        "changes": {"appraisal_grade": "C", "members/r1/name": "李四"},
        "base": {"appraisal_grade": S1},
        "hlc": S2,
        "household": HOUSEHOLD,
        "round": "2026-annual",
    }
    fields.update(overrides)
    return put_op(**fields)


def test_put_round_trips_through_dict_and_json() -> None:
    op = a_put()
    assert op.kind == "put"
    assert op.stamp == Stamp.parse(S2)
    assert op.key == ("dev-a", 1)
    data = json.loads(op.to_json())
    assert data == op.to_dict()
    assert Op.from_dict(data) == op


def test_tombstone_is_a_read_only_json_marker() -> None:
    assert json.dumps(TOMBSTONE) == '{"$tombstone": true}'
    assert is_tombstone(TOMBSTONE)
    assert is_tombstone({"$tombstone": True})
    assert not is_tombstone({"$tombstone": 1})
    assert not is_tombstone({"$tombstone": True, "x": 1})
    assert not is_tombstone(None)
    with pytest.raises(TypeError):
        TOMBSTONE["x"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        TOMBSTONE.update(x=1)


def test_row_delete_carries_the_tombstone_and_survives_json() -> None:
    op = delete_row_op(
        device_id="dev-a",
        seq=3,
        record_id="r",
        form_id="household_roster",
        form_version=1,
        row_path="members/row-1",
        base={"members/row-1/name": S1},
        hlc=S2,
        base_revision=4,
    )
    assert op.changes == {"members/row-1": TOMBSTONE}
    back = Op.from_dict(json.loads(op.to_json()))
    assert back.changes["members/row-1"] is TOMBSTONE
    assert back == op


def test_delete_and_resolve_constructors() -> None:
    gone = delete_op(
        device_id="dev-a",
        seq=2,
        record_id="r",
        form_id="f",
        form_version=1,
        base={"a": S1, "b": None},
        hlc=Stamp.parse(S2),
        base_revision=3,
    )
    assert gone.kind == "delete" and gone.changes == {} and gone.hlc == S2
    fixed = resolve_op(
        device_id="server",
        seq=9,
        record_id="r",
        form_id="f",
        form_version=1,
        conflict_id="c-123",
        changes={"a": 5},
        base={"a": (S1, S2)},  # type: ignore[dict-item]
        hlc=S2,
        base_revision=3,
    )
    assert fixed.base == {"a": [S1, S2]}
    assert Op.from_dict(fixed.to_dict()) == fixed


def test_base_stamps_normalises_entries() -> None:
    assert base_stamps(None) == ()
    assert base_stamps(S1) == (S1,)
    assert base_stamps([S1, S2]) == (S1, S2)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"device_id": ""}, "device_id"),
        ({"seq": 0}, "seq"),
        ({"seq": True}, "seq"),
        ({"record_id": 5}, "record_id"),
        ({"form_id": "Housing"}, "form_id"),
        ({"form_version": 0}, "form_version"),
        ({"household": {"village_code": "530102001201"}}, "household.household_no"),
        ({"household": "x"}, "household"),
        ({"round": ""}, "round"),
        ({"changes": {}}, "changes"),
        ({"changes": {"a": float("nan")}}, "changes.a"),
        ({"changes": {"a": {1: 2}}}, "changes.a"),
        ({"changes": {"a": object()}}, "changes.a"),
        ({"changes": {"/a": 1}}, "changes"),
        ({"changes": {"a//b": 1}}, "changes"),
        ({"changes": {"": "alive"}}, "changes."),
        ({"base": {"a": "yesterday"}}, "base.a"),
        ({"base": {"a": []}}, "base.a"),
        ({"base": {"a": [S1, 7]}}, "base.a"),
        ({"base_revision": -1}, "base_revision"),
        ({"hlc": "now"}, "hlc"),
    ],
)
def test_malformed_op_names_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(OpFormatError) as info:
        a_put(**overrides)
    assert info.value.field == field
    assert info.value.code == "op_invalid"
    assert isinstance(info.value, ProtocolError)
    assert field in info.value.message
    assert "同步操作" in info.value.message_zh


def test_kind_rules() -> None:
    good = a_put().to_dict()
    with pytest.raises(OpFormatError) as info:
        Op.from_dict({**good, "kind": "patch"})
    assert info.value.field == "kind"
    with pytest.raises(OpFormatError) as info:
        Op.from_dict({**good, "kind": "delete"})  # a delete carries no changes
    assert info.value.field == "changes"
    with pytest.raises(OpFormatError) as info:
        Op.from_dict({**good, "kind": "resolve"})  # a resolve needs its conflict id
    assert info.value.field == "conflict_id"
    with pytest.raises(OpFormatError) as info:
        Op.from_dict({**good, "conflict_id": "c-1"})  # only resolves carry one
    assert info.value.field == "conflict_id"


def test_from_dict_reports_missing_and_unknown_fields() -> None:
    good = a_put().to_dict()
    missing = dict(good)
    del missing["hlc"]
    with pytest.raises(OpFormatError) as info:
        Op.from_dict(missing)
    assert info.value.field == "hlc"
    with pytest.raises(OpFormatError) as info:
        Op.from_dict({**good, "extra": 1})
    assert info.value.field == "extra"
    with pytest.raises(OpFormatError) as info:
        Op.from_dict(["not", "a", "dict"])  # type: ignore[arg-type]
    assert info.value.field == "op"
    optional_absent = {
        k: v for k, v in good.items() if k not in ("household", "round", "conflict_id")
    }
    assert Op.from_dict(optional_absent).household is None


def test_ops_are_immutable() -> None:
    op = a_put()
    with pytest.raises(AttributeError):
        op.seq = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "named", "scope"),
    [
        (
            {"members/r1": TOMBSTONE, "members/r1/name": "X"},
            "changes.members/r1/name",
            "members/r1",
        ),
        (
            {"members/r1": TOMBSTONE, "members/r1/visits/v2/date": "2026-11-25"},
            "changes.members/r1/visits/v2/date",
            "members/r1",
        ),
        (
            {"members/r1": TOMBSTONE, "members/r1/visits/v2": TOMBSTONE},
            "changes.members/r1/visits/v2",
            "members/r1",
        ),
        ({"": TOMBSTONE, "phone": "1"}, "changes.phone", ""),
        ({"": TOMBSTONE, "members/r1": TOMBSTONE}, "changes.members/r1", ""),
    ],
)
def test_an_op_never_tombstones_a_scope_and_edits_inside_it(
    changes: dict[str, Any], named: str, scope: str
) -> None:
    with pytest.raises(OpFormatError) as info:
        a_put(changes=changes, base={})
    assert info.value.field == named
    assert repr(scope) in info.value.message
    # The same through the wire form: the codec refuses it as a malformed op.
    good = a_put().to_dict()
    with pytest.raises(OpFormatError):
        Op.from_dict(
            {
                **good,
                "changes": {k: dict(v) if isinstance(v, dict) else v for k, v in changes.items()},
            }
        )


def test_a_tombstone_next_to_lookalike_paths_is_fine() -> None:
    # "members/r10" and "members/r1x" are not inside "members/r1": only "members/r1/..." is.
    op = a_put(
        changes={"members/r1": TOMBSTONE, "members/r10/name": "A", "members/r1x": 1, "phone": "2"},
        base={},
    )
    assert is_tombstone(op.changes["members/r1"])
    restore = a_put(changes={"": None, "phone": "2"}, base={})
    assert restore.changes[""] is None
