"""Field paths (contracts §4): flatten/unflatten round-trips, row order, tombstones."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forms.errors import PathError
from forms.paths import flatten, is_row_path, row_prefix, schema_path, unflatten

RECORD: dict[str, Any] = {
    "head": "张三",
    "grade": "C",
    "issues": ["roof", "wall"],
    "empty_multi": [],
    "location": {"lat": 25.04, "lon": 102.7},
    "members": [
        {"_id": "r2", "name": "李四", "visits": [{"_id": "v1", "date": "2026-01-02"}]},
        {"_id": "r1", "name": "王五", "age": None},
    ],
}


def test_flatten_shape() -> None:
    flat = flatten(RECORD)
    assert flat["head"] == "张三"
    assert flat["issues"] == ["roof", "wall"]
    assert flat["location"] == {"lat": 25.04, "lon": 102.7}
    assert flat["members/r2/_order"] == 0
    assert flat["members/r1/_order"] == 1
    assert flat["members/r2/name"] == "李四"
    assert flat["members/r2/visits/v1/date"] == "2026-01-02"
    assert flat["members/r2/visits/v1/_order"] == 0
    assert flat["members/r1/age"] is None
    assert "members" not in flat


def test_round_trip_keeps_row_order() -> None:
    assert unflatten(flatten(RECORD)) == RECORD
    assert [r["_id"] for r in unflatten(flatten(RECORD))["members"]] == ["r2", "r1"]


def test_unflatten_orders_rows_by_order_then_id() -> None:
    flat = {"m/b/_order": 1.5, "m/a/_order": 1.5, "m/c/_order": 0, "m/d/x": 1}
    assert [r["_id"] for r in unflatten(flat)["m"]] == ["c", "a", "b", "d"]


def test_tombstone_deletes_a_row_and_its_values() -> None:
    flat = flatten(RECORD)
    flat["members/r2"] = None
    rebuilt = unflatten(flat)
    assert [r["_id"] for r in rebuilt["members"]] == ["r1"]
    flat["members/r1"] = None
    assert "members" not in unflatten(flat)
    marker = {"m/x": "TOMB", "m/x/a": 1, "m/y": True}
    assert unflatten(marker, is_tombstone=lambda v: v == "TOMB") == {"m": [{"_id": "y"}]}


def test_rows_win_over_an_empty_value() -> None:
    assert unflatten({"m": [], "m/r/_order": 0, "m/r/a": 1}) == {"m": [{"_id": "r", "a": 1}]}
    assert unflatten({"m": None, "m/r/a": 1}) == {"m": [{"_id": "r", "a": 1}]}
    with pytest.raises(PathError) as info:
        unflatten({"m": "text", "m/r/a": 1})
    assert info.value.code == "value_and_rows"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"m": [{"name": "x"}]}, "bad_row_id"),
        ({"m": [{"_id": "a/b"}]}, "bad_row_id"),
        ({"m": [{"_id": "a"}, {"_id": "a"}]}, "duplicate_row_id"),
        ({"m": [{"_id": "a", "_order": 3}]}, "reserved_key"),
        ({"a/b": 1}, "bad_key"),
    ],
)
def test_flatten_refuses_bad_shapes(data: dict[str, Any], code: str) -> None:
    with pytest.raises(PathError) as info:
        flatten(data)
    assert info.value.code == code


def test_path_helpers() -> None:
    assert schema_path("members/r1/visits/v2/date") == "members/visits/date"
    assert schema_path("members/r1") == "members"
    assert is_row_path("members/r1") and not is_row_path("members/r1/name")
    assert row_prefix("members/r1/name") == "members/r1"
    assert row_prefix("a/r1/b/r2") == "a/r1"
    assert row_prefix("name") is None
    with pytest.raises(PathError):
        schema_path("a//b")


names = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.lists(st.text(max_size=4), max_size=3),
    st.fixed_dictionaries({"lat": st.floats(-90, 90), "lon": st.floats(-180, 180)}),
)


def records(depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    if depth == 0:
        return st.dictionaries(names, leaves, max_size=4)
    row_ids = st.uuids().map(str)

    def rows(fields: dict[str, Any]) -> st.SearchStrategy[list[dict[str, Any]]]:
        return st.lists(
            st.tuples(row_ids, records(depth - 1)), min_size=1, max_size=3, unique_by=lambda t: t[0]
        ).map(lambda items: [{"_id": rid, **body} for rid, body in items])

    return st.dictionaries(names, st.one_of(leaves, st.just(None).flatmap(rows)), max_size=4)


@settings(max_examples=150, deadline=None)
@given(records())
def test_flatten_unflatten_round_trip(data: dict[str, Any]) -> None:
    flat = flatten(data)
    assert all(isinstance(k, str) for k in flat)
    assert unflatten(flat) == data
