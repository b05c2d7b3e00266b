"""The create fast path of ``merge`` gives exactly what the general merge gives.

``merge(None, op)`` for a put without tombstones (a record the server has never seen) builds the
state directly instead of walking heads, policies and conflicts. Hypothesis generates such ops —
top-level fields, repeat rows with ``_order`` and row markers, every JSON value shape, bases that
name stamps the server never saw, suspect clocks, with and without a household — and checks the
result, every derived view of the state and the merge of a later op on top of it against the
general merge (``_merge_into``). Ops the fast path must not take (tombstones, resolutions) are
generated too, to check that ``merge`` routes them to the general merge.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sync_protocol import merge as merge_module
from sync_protocol.clock import HybridClock, Stamp
from sync_protocol.merge import (
    RecordState,
    _is_plain_create,
    _merge_into,
    current_values,
    device_view,
    merge,
)
from sync_protocol.ops import TOMBSTONE, Op, OpFormatError, put_op, resolve_op

REF = 1_764_000_000_000
DAY_MS = 86_400_000
RECORD = "3c8e1c1a-8a43-4c1e-b1c2-6f0f5a7c0d11"
REVIEW = {"income", "appraisal_grade"}
TOP = ["head_name", "phone", "income", "appraisal_grade", "water_source"]
ROWS = ["members/r1", "members/r2", "members/r3/visits/v1"]


def policy(path: str) -> str:
    return "review" if path.rsplit("/", 1)[-1] in REVIEW else "lww"


def stamp(wall_ms: int, node: str, counter: int = 0) -> str:
    return Stamp(wall_ms, counter, node).to_text()


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from([9000.0, 0.0, -1.5]),
    st.text(max_size=6),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.sampled_from(["lat", "lon", "a"]), scalars, max_size=2),
)
paths = st.one_of(
    st.sampled_from(TOP),
    st.builds(
        lambda row, name: f"{row}/{name}",
        st.sampled_from(ROWS),
        st.sampled_from(["name", "income", "_order", "health"]),
    ),
    st.sampled_from(ROWS),  # a row marker with a plain value: "the row exists"
)
base_entries = st.one_of(
    st.none(),
    st.builds(stamp, st.integers(REF - DAY_MS, REF), st.sampled_from(["dev-x", "dev-y"])),
    st.lists(
        st.builds(stamp, st.integers(REF - DAY_MS, REF), st.sampled_from(["dev-x", "dev-y"])),
        min_size=1,
        max_size=2,
        unique=True,
    ),
)


@st.composite
def create_ops(draw: st.DrawFn, *, tombstones: bool = False) -> Op:
    changes = draw(st.dictionaries(paths, values, min_size=1, max_size=8))
    if tombstones and draw(st.booleans()):
        changes[draw(st.sampled_from(ROWS))] = TOMBSTONE
    base = {path: draw(base_entries) for path in changes if draw(st.booleans())}
    # Up to two days ahead of the server: a suspect stamp must stay suspect on the fast path.
    wall = REF + draw(st.integers(-DAY_MS, 2 * DAY_MS))
    household = draw(
        st.one_of(
            st.none(),
            st.just({"village_code": "530102001201", "household_no": "5301020012010001"}),
        )
    )
    try:
        return put_op(
            device_id="dev-a",
            seq=draw(st.integers(1, 500)),
            record_id=RECORD,
            form_id="household_roster",
            form_version=draw(st.integers(1, 3)),
            changes=changes,
            base=base,
            hlc=stamp(wall, "dev-a", draw(st.integers(0, 3))),
            household=household,
            round=draw(st.one_of(st.none(), st.just("2026-annual"))),
        )
    except OpFormatError:
        # e.g. an edit inside a row the same op deletes: no device sends that.
        return draw(create_ops(tombstones=False))


def views(state: RecordState) -> dict[str, Any]:
    """Everything a caller can read from a state, in plain data."""
    every = sorted({*state.paths, *TOP, *ROWS, ""})
    return {
        "dict": state.to_dict(),
        "fields": state.fields,
        "conflicts": [c.to_dict() for c in state.conflicts],
        "deleted": state.deleted,
        "values": current_values(state),
        "device_view": device_view(state),
        "created": state.created_stamp,
        "heads": {p: state.heads(p) for p in every},
        "hidden": {p: state.is_hidden(p) for p in every},
        "history": state.history(),
        "policies": dict(state._policies),
        "base_for": state.base_for(every),
        "delete_base": state.delete_base(""),
    }


def outcome(result: merge_module.MergeResult) -> dict[str, Any]:
    return {
        "changed": result.changed,
        "status": result.status,
        "fields": list(result.field_outcomes.items()),
        "conflicts": [c.to_dict() for c in result.conflicts],
        "suspect": result.suspect,
        "closed": result.closed_conflict_ids,
    }


def general(op: Op) -> merge_module.MergeResult:
    suspect = merge(None, op, policy, reference_ms=REF).suspect
    return _merge_into(None, op, policy, suspect)


@settings(max_examples=300, deadline=None)
@given(create_ops())
def test_a_create_merges_as_the_general_merge_does(op: Op) -> None:
    assert _is_plain_create(op)
    fast = merge(None, op, policy, reference_ms=REF)
    slow = general(op)
    assert outcome(fast) == outcome(slow)
    assert views(fast.state) == views(slow.state)
    # The state read back from its dict (what the server stores) agrees too.
    assert views(RecordState.from_dict(fast.state.to_dict())) == views(slow.state)


@settings(max_examples=200, deadline=None)
@given(create_ops(), st.data())
def test_the_next_op_merges_the_same_on_a_fast_state(op: Op, data: st.DataObject) -> None:
    """The views the fast path fills in must be the ones a later merge would compute."""
    fast = merge(None, op, policy, reference_ms=REF).state
    slow = general(op).state
    touched = data.draw(st.lists(st.sampled_from(sorted(op.changes)), min_size=1, unique=True))
    edited = {path: data.draw(values) for path in touched}
    seen = data.draw(st.booleans())  # edited on top of the create, or concurrently with it
    wall = REF + data.draw(st.integers(-DAY_MS, DAY_MS))
    clock = HybridClock("dev-b", lambda: wall)
    try:
        second = put_op(
            device_id="dev-b",
            seq=1,
            record_id=RECORD,
            form_id="household_roster",
            form_version=1,
            changes=edited,
            base=fast.base_for(edited) if seen else {},
            hlc=clock.now(),
        )
    except OpFormatError:
        return
    after_fast = merge(fast, second, policy, reference_ms=REF)
    after_slow = merge(slow, second, policy, reference_ms=REF)
    assert outcome(after_fast) == outcome(after_slow)
    assert views(after_fast.state) == views(after_slow.state)
    # And the create delivered again is a duplicate on both.
    assert outcome(merge(fast, op, policy, reference_ms=REF)) == outcome(
        merge(slow, op, policy, reference_ms=REF)
    )


@settings(max_examples=100, deadline=None)
@given(create_ops(tombstones=True))
def test_ops_the_fast_path_must_not_take_still_merge_generally(op: Op) -> None:
    tombstoned = any(value is TOMBSTONE or value == TOMBSTONE for value in op.changes.values())
    assert _is_plain_create(op) is not tombstoned
    assert outcome(merge(None, op, policy, reference_ms=REF)) == outcome(general(op))


def test_a_resolution_is_not_a_create() -> None:
    op = resolve_op(
        device_id="server",
        seq=1,
        record_id=RECORD,
        form_id="household_roster",
        form_version=1,
        conflict_id="c-1",
        changes={"income": 100},
        base={"income": None},
        hlc=stamp(REF, "server"),
        base_revision=0,
    )
    assert not _is_plain_create(op)
    assert outcome(merge(None, op, policy, reference_ms=REF)) == outcome(general(op))
