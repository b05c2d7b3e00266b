"""Field-level merge: the DESIGN §2 rules, one worked scenario each (docs/protocol-merge.md)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest

from sync_protocol.clock import HybridClock
from sync_protocol.conflicts import (
    Conflict,
    ConflictFormatError,
    conflict_id_for,
    detect_duplicate_household,
)
from sync_protocol.errors import ProtocolError
from sync_protocol.merge import (
    MergeError,
    MergePolicyError,
    MergeResult,
    RecordMismatchError,
    RecordState,
    StampReusedError,
    StateFormatError,
    current_values,
    device_view,
    merge,
    resolution,
)
from sync_protocol.ops import TOMBSTONE, Op, delete_op, delete_row_op, put_op, resolve_op

REF = 1_764_000_000_000  # server time in these tests
RECORD = "0b7e3c1e-4f7a-4d59-9a53-2f4c1f0c7a10"
FORM = "household_roster"
HOUSEHOLD = {"village_code": "530102001201", "household_no": "0001"}
REVIEW_FIELDS = {"appraisal_grade", "income"}


def policy(path: str) -> str:
    return "review" if path.rsplit("/", 1)[-1] in REVIEW_FIELDS else "lww"


class Device:
    """A tablet with its own clock and op sequence, editing against the state it has seen."""

    def __init__(self, name: str, wall_ms: int = REF) -> None:
        self.name = name
        self.wall = wall_ms
        self.clock = HybridClock(name, lambda: self.wall)
        self.seq = 0

    def _next(self) -> tuple[int, str]:
        self.seq += 1
        self.wall += 1
        return self.seq, self.clock.now().to_text()

    def put(self, seen: RecordState | None, changes: dict[str, Any], **extra: Any) -> Op:
        seq, hlc = self._next()
        base = seen.base_for(changes) if seen is not None else {}
        return put_op(
            device_id=self.name,
            seq=seq,
            record_id=RECORD,
            form_id=FORM,
            form_version=1,
            changes=changes,
            base=base,
            hlc=hlc,
            base_revision=seen.revision if seen else 0,
            **extra,
        )

    def create(self, changes: dict[str, Any]) -> Op:
        return self.put(None, changes, household=HOUSEHOLD, round="2026-annual")

    def delete(self, seen: RecordState) -> Op:
        seq, hlc = self._next()
        return delete_op(
            device_id=self.name,
            seq=seq,
            record_id=RECORD,
            form_id=FORM,
            form_version=1,
            base=seen.delete_base(),
            hlc=hlc,
            base_revision=seen.revision,
        )

    def delete_row(self, seen: RecordState, row_path: str) -> Op:
        seq, hlc = self._next()
        return delete_row_op(
            device_id=self.name,
            seq=seq,
            record_id=RECORD,
            form_id=FORM,
            form_version=1,
            row_path=row_path,
            base=seen.delete_base(row_path),
            hlc=hlc,
            base_revision=seen.revision,
        )

    def resolve(self, seen: RecordState, conflict_id: str, chosen: dict[str, Any]) -> Op:
        seq, hlc = self._next()
        changes, base = resolution(seen, conflict_id, chosen)
        return resolve_op(
            device_id=self.name,
            seq=seq,
            record_id=RECORD,
            form_id=FORM,
            form_version=1,
            conflict_id=conflict_id,
            changes=changes,
            base=base,
            hlc=hlc,
            base_revision=seen.revision,
        )


def apply(state: RecordState | None, op: Op, reference_ms: int = REF) -> MergeResult:
    return merge(state, op, policy, reference_ms=reference_ms)


def apply_all(ops: Iterable[Op], state: RecordState | None = None) -> RecordState:
    for op in ops:
        state = apply(state, op).state
    assert state is not None
    return state


def comparable(state: RecordState) -> dict[str, Any]:
    data = state.to_dict()
    del data["revision"]
    return data


@pytest.fixture
def created() -> tuple[Device, Device, RecordState]:
    a, b = Device("dev-a"), Device("dev-b")
    state = apply(
        None, a.create({"head_name": "张三", "phone": "13800000000", "income": 9000})
    ).state
    return a, b, state


def test_creating_a_record_applies_every_field() -> None:
    a = Device("dev-a")
    result = apply(
        None, a.create({"head_name": "张三", "members/r1/name": "张三", "members/r1/_order": 1})
    )
    assert result.status == "applied" and result.changed
    assert result.field_outcomes == dict.fromkeys(
        ["head_name", "members/r1/name", "members/r1/_order"], "applied"
    )
    assert current_values(result.state) == {
        "head_name": "张三",
        "members/r1/name": "张三",
        "members/r1/_order": 1,
    }
    assert result.state.household == HOUSEHOLD and result.state.round == "2026-annual"
    assert result.state.revision == 0  # the server assigns revisions
    assert result.conflicts == [] and not result.suspect


def test_same_op_twice_is_a_duplicate_and_changes_nothing(
    created: tuple[Device, Device, RecordState],
) -> None:
    a, _, state = created
    op = a.put(state, {"phone": "13900000000"})
    once = apply(state, op)
    twice = apply(once.state, op)
    assert twice.status == "duplicate" and not twice.changed
    assert twice.state is once.state
    assert twice.field_outcomes == {"phone": "duplicate"}


def test_edit_on_top_of_what_the_device_saw_applies(
    created: tuple[Device, Device, RecordState],
) -> None:
    _, b, state = created
    result = apply(state, b.put(state, {"phone": "13911111111"}))
    assert result.status == "applied"
    field = result.state.field("phone")
    assert field is not None and field.value == "13911111111" and field.device == "dev-b"
    assert len(field.heads) == 1 and field.status == "ok"
    assert [w.value for w in result.state.history("phone")] == ["13800000000", "13911111111"]
    assert state.field("phone").value == "13800000000"  # the input state is not modified


def test_edits_to_different_fields_never_conflict(
    created: tuple[Device, Device, RecordState],
) -> None:
    a, b, state = created
    op_a = a.put(state, {"head_name": "张三丰"})
    op_b = b.put(state, {"income": 12000})
    merged = apply_all([op_a, op_b], state)
    assert merged.conflicts == []
    assert current_values(merged)["head_name"] == "张三丰"
    assert current_values(merged)["income"] == 12000
    assert comparable(merged) == comparable(apply_all([op_b, op_a], state))


def test_lww_race_higher_stamp_wins_and_loser_is_kept(
    created: tuple[Device, Device, RecordState],
) -> None:
    a, b, state = created
    op_a = a.put(state, {"phone": "13700000000"})
    b.wall += 10  # b edits a little later
    op_b = b.put(state, {"phone": "13600000000"})
    first = apply(state, op_a)
    second = apply(first.state, op_b)
    assert second.status == "merged"
    assert second.field_outcomes == {"phone": "won"}
    assert current_values(second.state)["phone"] == "13600000000"
    assert second.state.field("phone").status == "lww"
    assert "13700000000" in [w.value for w in second.state.history("phone")]
    reverse = apply(apply(state, op_b).state, op_a)
    assert reverse.field_outcomes == {"phone": "lost"}
    assert comparable(reverse.state) == comparable(second.state)


def test_concurrent_same_value_is_a_no_op(created: tuple[Device, Device, RecordState]) -> None:
    a, b, state = created
    merged = apply(
        apply(state, a.put(state, {"income": 10000})).state, b.put(state, {"income": 10000})
    )
    assert merged.status == "applied"
    assert merged.field_outcomes == {"income": "unchanged"}
    assert merged.state.conflicts == []
    assert merged.state.field("income").status == "same"


def test_same_value_compares_numbers_by_value_but_not_booleans(
    created: tuple[Device, Device, RecordState],
) -> None:
    a, b, state = created
    same = apply_all([a.put(state, {"income": 9500}), b.put(state, {"income": 9500.0})], state)
    assert same.conflicts == [] and same.field("income").status == "same"
    c, d = Device("dev-c"), Device("dev-d")
    differ = apply_all([c.put(state, {"income": True}), d.put(state, {"income": 1})], state)
    assert [x.kind for x in differ.conflicts] == ["field"]


def test_review_field_race_is_a_conflict_then_resolved(
    created: tuple[Device, Device, RecordState],
) -> None:
    a, b, state = created
    op_a = a.put(state, {"income": 8000})
    b.wall += 5
    op_b = b.put(state, {"income": 12000})
    one = apply(apply(state, op_a).state, op_b)
    assert one.status == "conflict" and one.field_outcomes == {"income": "conflict"}
    [conflict] = one.conflicts
    assert conflict.kind == "field" and conflict.reason == "review" and conflict.path == "income"
    assert (conflict.base, conflict.mine, conflict.theirs) == (9000, 12000, 8000)
    assert conflict.stamps == (op_a.hlc, op_b.hlc)
    assert [c["device"] for c in conflict.candidates] == ["dev-a", "dev-b"]
    # Provisional value is the highest stamp's, so every replica shows the same thing.
    assert current_values(one.state)["income"] == 12000
    # The other delivery order yields the same conflict id.
    other = apply(apply(state, op_b).state, op_a)
    assert [c.conflict_id for c in other.state.conflicts] == [conflict.conflict_id]
    assert other.conflicts == [conflict]

    reviewer = Device("county-reviewer")
    fix = reviewer.resolve(one.state, conflict.conflict_id, {"income": 8000})
    assert fix.base == {"income": [op_a.hlc, op_b.hlc]}
    done = apply(one.state, fix)
    assert done.status == "applied"
    assert done.closed_conflict_ids == [conflict.conflict_id]
    assert done.state.conflicts == [] and current_values(done.state)["income"] == 8000
    # The reviewer's clock is behind both devices: the resolution still wins, because it names
    # the writes it supersedes; stamps only order writes nobody has seen together.
    [resolved_by] = [w for w in done.state.history("income") if w.conflict_id]
    assert resolved_by.conflict_id == conflict.conflict_id and resolved_by.stamp < op_a.hlc


def test_resolution_racing_a_third_write_conflicts_again(
    created: tuple[Device, Device, RecordState],
) -> None:
    a, b, state = created
    c = Device("dev-c")
    in_conflict = apply_all([a.put(state, {"income": 1}), b.put(state, {"income": 2})], state)
    [conflict] = in_conflict.conflicts
    fix = Device("reviewer").resolve(in_conflict, conflict.conflict_id, {"income": 3})
    late = c.put(state, {"income": 4})  # made offline before the resolution was known
    final = apply_all([fix, late], in_conflict)
    [again] = final.conflicts
    assert again.conflict_id != conflict.conflict_id
    assert {cand["value"] for cand in again.candidates} == {3, 4}
    assert comparable(final) == comparable(apply_all([late, fix], in_conflict))


def test_suspect_stamp_never_wins_an_lww_race_silently(
    created: tuple[Device, Device, RecordState],
) -> None:
    a, _, state = created
    future = Device("dev-future", wall_ms=REF + 3 * 86_400_000)  # clock three days ahead
    op_future = future.put(state, {"phone": "13500000000"})
    op_a = a.put(state, {"phone": "13400000000"})
    first = apply(state, op_future)
    assert first.suspect and first.status == "applied"  # nothing raced it: applied, but flagged
    assert first.state.history("phone")[-1].suspect
    second = apply(first.state, op_a)
    assert not second.suspect
    assert second.status == "conflict"
    [conflict] = second.conflicts
    assert conflict.reason == "suspect_clock" and conflict.kind == "field"
    assert [c["suspect"] for c in conflict.candidates] == [False, True]


def test_suspect_stamp_losing_an_lww_race_is_fine(
    created: tuple[Device, Device, RecordState],
) -> None:
    # A suspect stamp that loses does not need a reviewer: nothing won silently.
    a, _, state = created
    op_a = a.put(state, {"phone": "1"})
    late_ref = REF + 86_400_000
    a_later = apply(state, op_a, reference_ms=late_ref).state
    op_b = Device("dev-b", wall_ms=REF - 1000).put(state, {"phone": "2"})
    result = apply(a_later, op_b, reference_ms=REF - 400_000)
    assert result.suspect and result.field_outcomes == {"phone": "lost"}
    assert result.state.conflicts == []


def test_delete_racing_an_edit_is_a_conflict(created: tuple[Device, Device, RecordState]) -> None:
    a, b, state = created
    gone = a.delete(state)
    edit = b.put(state, {"phone": "13300000000"})
    after_delete = apply(state, gone)
    assert after_delete.status == "applied" and after_delete.state.deleted
    assert current_values(after_delete.state) == {}
    raced = apply(after_delete.state, edit)
    assert raced.status == "conflict" and raced.field_outcomes == {"phone": "conflict"}
    [conflict] = raced.conflicts
    assert conflict.kind == "delete_edit" and conflict.path == ""
    assert conflict.mine == TOMBSTONE
    assert conflict.theirs == {"phone": "13300000000"}
    assert conflict.base == {"phone": "13800000000"}
    # Data under review stays visible.
    assert not raced.state.deleted
    assert current_values(raced.state)["phone"] == "13300000000"
    other = apply_all([edit, gone], state)
    assert comparable(other) == comparable(raced.state)
    assert apply(apply(state, edit).state, gone).status == "conflict"

    reviewer = Device("reviewer")
    deleted = apply(
        raced.state, reviewer.resolve(raced.state, conflict.conflict_id, {"": TOMBSTONE})
    )
    assert deleted.state.deleted and deleted.state.conflicts == []
    assert deleted.closed_conflict_ids == [conflict.conflict_id]
    kept = apply(raced.state, reviewer.resolve(raced.state, conflict.conflict_id, {"": None}))
    assert not kept.state.deleted and kept.state.conflicts == []
    assert current_values(kept.state)["phone"] == "13300000000"


def test_restoring_a_deleted_record(created: tuple[Device, Device, RecordState]) -> None:
    a, _, state = created
    deleted = apply(state, a.delete(state)).state
    restore = a.put(deleted, {"": None})
    assert restore.base == {"": deleted.field("").stamp}
    back = apply(deleted, restore).state
    assert not back.deleted and back.conflicts == []
    assert current_values(back)["head_name"] == "张三"


def test_rows_added_on_two_devices_never_conflict(
    created: tuple[Device, Device, RecordState],
) -> None:
    a, b, state = created
    op_a = a.put(state, {"members/ra/name": "王五", "members/ra/_order": 1})
    op_b = b.put(state, {"members/rb/name": "赵六", "members/rb/_order": 1})
    merged = apply_all([op_a, op_b], state)
    assert merged.conflicts == []
    values = current_values(merged)
    assert values["members/ra/name"] == "王五" and values["members/rb/name"] == "赵六"


def test_fields_inside_one_row_merge_like_any_field(
    created: tuple[Device, Device, RecordState],
) -> None:
    a, b, state = created
    with_row = apply(
        state, a.put(state, {"members/r1/name": "王五", "members/r1/health": "健康"})
    ).state
    op_a = a.put(with_row, {"members/r1/health": "长期慢性病"})
    op_b = b.put(with_row, {"members/r1/name": "王武"})
    merged = apply_all([op_a, op_b], with_row)
    assert merged.conflicts == []
    assert current_values(merged)["members/r1/name"] == "王武"
    assert current_values(merged)["members/r1/health"] == "长期慢性病"


def test_deleting_a_row_another_device_edited_is_a_conflict(
    created: tuple[Device, Device, RecordState],
) -> None:
    a, b, state = created
    with_rows = apply(
        state, a.put(state, {"members/r1/name": "王五", "members/r2/name": "李四"})
    ).state
    drop = a.delete_row(with_rows, "members/r1")
    assert drop.base == {"members/r1/name": with_rows.field("members/r1/name").stamp}
    edit = b.put(with_rows, {"members/r1/name": "王武"})
    clean = apply(with_rows, drop)
    assert clean.status == "applied"
    assert "members/r1/name" not in current_values(clean.state)
    assert current_values(clean.state)["members/r2/name"] == "李四"
    raced = apply(clean.state, edit)
    assert raced.status == "conflict"
    [conflict] = raced.conflicts
    assert conflict.kind == "row_delete_edit" and conflict.path == "members/r1"
    assert conflict.theirs == {"members/r1/name": "王武"}
    assert current_values(raced.state)["members/r1/name"] == "王武"
    assert comparable(apply_all([edit, drop], with_rows)) == comparable(raced.state)
    settled = apply(
        raced.state,
        Device("rev").resolve(raced.state, conflict.conflict_id, {"members/r1": TOMBSTONE}),
    )
    assert settled.state.conflicts == []
    assert "members/r1/name" not in current_values(settled.state)


def test_two_devices_deleting_the_same_row_agree(
    created: tuple[Device, Device, RecordState],
) -> None:
    a, b, state = created
    with_row = apply(state, a.put(state, {"members/r1/name": "王五"})).state
    merged = apply_all(
        [a.delete_row(with_row, "members/r1"), b.delete_row(with_row, "members/r1")], with_row
    )
    assert merged.conflicts == []
    assert "members/r1/name" not in current_values(merged)


def test_late_op_already_superseded_is_kept_in_history(
    created: tuple[Device, Device, RecordState],
) -> None:
    a, b, state = created
    old = a.put(state, {"phone": "1"})
    after_old = apply(state, old).state
    newer = b.put(after_old, {"phone": "2"})  # b saw the old one (on the server) and replaced it
    result = apply(apply(state, newer).state, old)  # the old one arrives late at another replica
    assert result.field_outcomes == {"phone": "superseded"} and result.status == "merged"
    assert current_values(result.state)["phone"] == "2"
    assert {w.value for w in result.state.history("phone")} == {"13800000000", "1", "2"}


def test_household_and_round_come_from_the_earliest_op() -> None:
    a = Device("dev-a")
    create = a.create({"head_name": "张三"})
    later = a.put(
        None,
        {"phone": "1"},
        household={"village_code": "530102001201", "household_no": "9"},
        round="x",
    )
    one = apply_all([later, create])
    assert one.household == HOUSEHOLD and one.round == "2026-annual"
    assert comparable(one) == comparable(apply_all([create, later]))


def test_state_round_trips_through_json(created: tuple[Device, Device, RecordState]) -> None:
    a, b, state = created
    c = Device("dev-c", wall_ms=REF + 10_000_000)  # suspect clock
    ops = [
        a.put(state, {"income": 1, "members/r1/name": "王五"}),
        b.put(state, {"income": 2, "phone": "3"}),
        c.put(state, {"phone": "4"}),
    ]
    merged = apply_all(ops, state)
    merged = apply(merged, b.delete_row(merged, "members/r1")).state
    merged.revision = 17
    text = json.dumps(merged.to_dict(), ensure_ascii=False)
    back = RecordState.from_dict(json.loads(text))
    assert back.to_dict() == merged.to_dict()
    assert back.revision == 17
    assert back.conflicts == merged.conflicts and len(back.conflicts) == 2
    assert current_values(back) == current_values(merged)
    assert back.has_op("dev-c", 1) and not back.has_op("dev-c", 2)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(format=99),
        lambda d: d.pop("record_id"),
        lambda d: d["ops"][0].pop("s"),
        lambda d: d["ops"][0].update(s="yesterday"),
        lambda d: d["ops"][0].update(q="1"),
        lambda d: d.update(policies={"phone": "maybe"}),
        lambda d: d["paths"]["phone"][0].__setitem__(0, 99),
        lambda d: d.update(paths=[]),
    ],
)
def test_malformed_state_is_a_named_error(
    created: tuple[Device, Device, RecordState], damage: Any
) -> None:
    data = json.loads(json.dumps(created[2].to_dict()))
    damage(data)
    with pytest.raises(StateFormatError) as info:
        RecordState.from_dict(data)
    assert info.value.code == "record_state_invalid" and isinstance(info.value, ProtocolError)


def test_merge_refuses_an_op_for_another_record(
    created: tuple[Device, Device, RecordState],
) -> None:
    a, _, state = created
    op = a.put(state, {"phone": "1"})
    alien = Op.from_dict({**op.to_dict(), "record_id": "another"})
    with pytest.raises(RecordMismatchError) as info:
        apply(state, alien)
    assert info.value.code == "op_record_mismatch"


def test_reused_stamp_is_refused(created: tuple[Device, Device, RecordState]) -> None:
    a, _, state = created
    op = a.put(state, {"phone": "1"})
    state = apply(state, op).state
    clash = Op.from_dict({**op.to_dict(), "seq": op.seq + 1, "changes": {"phone": "2"}})
    with pytest.raises(StampReusedError):
        apply(state, clash)
    elsewhere = Op.from_dict({**op.to_dict(), "seq": op.seq + 1, "changes": {"head_name": "x"}})
    with pytest.raises(StampReusedError) as info:
        apply(state, elsewhere)  # one stamp belongs to one op, whatever paths it writes
    assert info.value.code == "stamp_reused"


def test_bad_policy_is_refused(created: tuple[Device, Device, RecordState]) -> None:
    a, b, state = created
    state = apply(state, a.put(state, {"phone": "1"})).state
    with pytest.raises(MergePolicyError):
        merge(state, b.put(created[2], {"phone": "2"}), lambda path: "first", reference_ms=REF)


def test_resolution_refuses_unknown_conflicts_and_wrong_paths(
    created: tuple[Device, Device, RecordState],
) -> None:
    a, b, state = created
    with pytest.raises(MergeError) as info:
        resolution(state, "c-nope", {"income": 1})
    assert info.value.code == "conflict_not_open"
    racing = apply_all([a.put(state, {"income": 1}), b.put(state, {"income": 2})], state)
    with pytest.raises(MergeError) as info:
        resolution(racing, racing.conflicts[0].conflict_id, {"phone": "x"})
    assert info.value.code == "resolution_paths_invalid"


def test_conflict_round_trips_through_json(created: tuple[Device, Device, RecordState]) -> None:
    a, b, state = created
    raced = apply_all([a.delete(state), b.put(state, {"phone": "9"})], state)
    [conflict] = raced.conflicts
    back = Conflict.from_dict(json.loads(json.dumps(conflict.to_dict())))
    assert back == conflict
    with pytest.raises(ConflictFormatError):
        Conflict.from_dict({"kind": "field"})
    with pytest.raises(ConflictFormatError):
        Conflict.from_dict({**conflict.to_dict(), "kind": "other"})


def test_duplicate_household_is_detected_in_the_same_form_and_round() -> None:
    a, b = Device("dev-a"), Device("dev-b")
    mine = a.create({"head_name": "张三"})
    other_record = "7d0d3d7e-0000-4000-8000-000000000001"
    existing = [
        (other_record, HOUSEHOLD, FORM, "2026-annual", "019ab697e000-0000-dev-b"),
        ("r-other-round", HOUSEHOLD, FORM, "monitoring-2026-11", "019ab697e000-0000-dev-b"),
        ("r-other-house", "530102001201:0002", FORM, "2026-annual", "019ab697e000-0000-dev-b"),
        (RECORD, HOUSEHOLD, FORM, "2026-annual", mine.hlc),  # the record itself
    ]
    conflict = detect_duplicate_household(existing, mine)
    assert conflict is not None
    assert conflict.kind == "duplicate_household" and conflict.record_id == RECORD
    assert conflict.theirs["record_id"] == other_record
    assert conflict.mine == {"record_id": RECORD, "created": mine.hlc}
    # Seen from the other record's side, the id is the same.
    their_op = Op.from_dict(
        {**b.create({"head_name": "张三"}).to_dict(), "record_id": other_record}
    )
    mirrored = detect_duplicate_household(
        [(RECORD, "530102001201:0001", FORM, "2026-annual", mine.hlc)], their_op
    )
    assert mirrored is not None and mirrored.conflict_id == conflict.conflict_id
    assert Conflict.from_dict(json.loads(json.dumps(conflict.to_dict()))) == conflict
    assert detect_duplicate_household(existing[1:3], mine) is None
    assert detect_duplicate_household(existing, a.put(None, {"phone": "1"})) is None


def test_worked_examples_of_the_protocol_doc_give_the_documented_ids() -> None:
    """docs/protocol-merge.md §9 quotes these ids: other implementations check against them."""
    ref = 1_764_000_000_000
    record = "6f1c9a52-61c9-4d7e-9a0b-0d6f4f1d2a11"

    def stamp(offset_ms: int, node: str) -> str:
        return f"{ref + offset_ms:012x}-0000-{node}"

    def put(device: str, seq: int, changes: dict[str, Any], base: dict[str, Any], hlc: str) -> Op:
        return put_op(
            device_id=device,
            seq=seq,
            record_id=record,
            form_id="housing_safety",
            form_version=1,
            changes=changes,
            base=base,
            hlc=hlc,
        )

    def run(state: RecordState, *ops: Op) -> RecordState:
        for op in ops:
            state = merge(state, op, policy, reference_ms=ref + 100_000).state
        return state

    created = merge(
        None,
        put(
            "tab-a",
            1,
            {"appraisal_grade": "B", "structure": "砖混", "build_year": 1998},
            {},
            stamp(0, "tab-a"),
        ),
        policy,
        reference_ms=ref,
    ).state
    c = {p: stamp(0, "tab-a") for p in ("appraisal_grade", "structure", "build_year")}
    grade = run(
        created,
        put("tab-a", 2, {"appraisal_grade": "C"}, c, stamp(60_000, "tab-a")),
        put("tab-b", 1, {"appraisal_grade": "D"}, c, stamp(30_000, "tab-b")),
    )
    assert [x.conflict_id for x in grade.conflicts] == ["c-d150da5b1bc2cbe1579e719df1cb6dc7"]
    clock = run(
        created,
        put("tab-a", 2, {"structure": "钢筋混凝土"}, c, stamp(60_000, "tab-a")),
        put("tab-c", 1, {"structure": "土坯"}, c, stamp(86_400_000, "tab-c")),
    )
    assert [x.conflict_id for x in clock.conflicts] == ["c-4470c8e3fdce59416933ec77f4e7c666"]
    gone = run(
        created,
        delete_op(
            device_id="tab-a",
            seq=2,
            record_id=record,
            form_id="housing_safety",
            form_version=1,
            base=c,
            hlc=stamp(60_000, "tab-a"),
            base_revision=1,
        ),
        put("tab-b", 1, {"build_year": 1996}, c, stamp(30_000, "tab-b")),
    )
    assert [x.conflict_id for x in gone.conflicts] == ["c-96f521288ba52234a75bab83af24054c"]
    row = {
        "members/7c1e/name": stamp(10_000, "tab-a"),
        "members/7c1e/_order": stamp(10_000, "tab-a"),
    }
    rows = run(
        created,
        put(
            "tab-a",
            2,
            {"members/7c1e/name": "王五", "members/7c1e/_order": 1},
            {},
            stamp(10_000, "tab-a"),
        ),
        put("tab-a", 3, {"members/7c1e": TOMBSTONE}, row, stamp(40_000, "tab-a")),
        put("tab-b", 1, {"members/7c1e/name": "王武"}, row, stamp(30_000, "tab-b")),
    )
    assert [x.conflict_id for x in rows.conflicts] == ["c-12413d76c034f8a3e0e927a5492397d6"]


def test_device_view_has_values_stamps_and_open_conflicts(
    created: tuple[Device, Device, RecordState],
) -> None:
    a, b, state = created
    with_row = apply(state, a.put(state, {"members/r1/name": "王五"})).state
    dropped = apply(with_row, a.delete_row(with_row, "members/r1")).state
    raced = apply_all([a.put(dropped, {"income": 1}), b.put(dropped, {"income": 2})], dropped)
    raced.revision = 5
    view = device_view(raced)
    assert view["values"] == current_values(raced)
    assert "members/r1/name" not in view["values"]
    # Hidden paths keep their stamps: they are the base of a restore or a later delete.
    assert view["stamps"]["members/r1/name"] == with_row.field("members/r1/name").stamp
    assert view["stamps"]["members/r1"] == dropped.field("members/r1").stamp
    assert (
        view["conflicts"] == [c.conflict_id for c in raced.conflicts]
        and len(view["conflicts"]) == 1
    )
    assert (view["revision"], view["deleted"], view["household"]) == (5, False, HOUSEHOLD)
    json.dumps(view, ensure_ascii=False)


def test_deleting_a_row_does_not_touch_a_row_whose_id_extends_it(
    created: tuple[Device, Device, RecordState],
) -> None:
    a, b, state = created
    rows = apply(state, a.put(state, {"members/r1/name": "王五", "members/r10/name": "李四"})).state
    dropped = apply(rows, a.delete_row(rows, "members/r1")).state
    edited = apply(dropped, b.put(rows, {"members/r10/name": "李斯"}))
    assert edited.status == "applied" and edited.state.conflicts == []
    assert edited.state.is_hidden("members/r1/name") and edited.state.is_hidden("members/r1")
    assert not edited.state.is_hidden("members/r10/name")
    assert current_values(edited.state)["members/r10/name"] == "李斯"


def test_merge_modules_load_without_io_or_crypto_libraries() -> None:
    import subprocess
    import sys

    code = (
        "import sys, sync_protocol.clock, sync_protocol.ops, sync_protocol.merge, "
        "sync_protocol.conflicts\n"
        "bad = [m for m in ('flask', 'sqlalchemy', 'cryptography', 'server', 'sqlite3') "
        "if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _row_conflict(
    created: tuple[Device, Device, RecordState],
) -> tuple[RecordState, RecordState, list[Op]]:
    """(state before, state with an open row_delete_edit conflict, the ops between them)."""
    a, b, state = created
    add = a.put(state, {"members/r1/name": "王五"})
    with_row = apply(state, add).state
    drop, edit = a.delete_row(with_row, "members/r1"), b.put(with_row, {"members/r1/name": "王武"})
    raced = apply_all([drop, edit], with_row)
    assert [c.kind for c in raced.conflicts] == ["row_delete_edit"]
    return state, raced, [add, drop, edit]


def test_a_record_delete_that_saw_everything_closes_the_conflicts_inside(
    created: tuple[Device, Device, RecordState],
) -> None:
    before, raced, ops = _row_conflict(created)
    [row_conflict] = raced.conflicts
    reviewer = Device("rev")
    delete = reviewer.delete(raced)  # delete_base(): every head, the row's rivals included
    result = apply(raced, delete)
    assert result.state.deleted
    assert result.state.conflicts == [] and result.conflicts == []
    assert result.closed_conflict_ids == [row_conflict.conflict_id]
    assert current_values(result.state) == {}
    # Order does not matter: the same writes give the same (conflict-free) state.
    add, drop, edit = ops
    for order in ([delete, add, drop, edit], [edit, delete, add, drop], [drop, delete, edit, add]):
        replica = apply_all(order, before)
        assert comparable(replica) == comparable(result.state)
        assert replica.conflicts == [] and replica.deleted


def test_a_record_delete_that_missed_a_candidate_leaves_the_inner_conflict(
    created: tuple[Device, Device, RecordState],
) -> None:
    _before, raced, _ops = _row_conflict(created)
    [row_conflict] = raced.conflicts
    base = raced.delete_base()
    del base["members/r1/name"]  # the deleter never saw 王武
    blind = delete_op(
        device_id="rev",
        seq=1,
        record_id=RECORD,
        form_id=FORM,
        form_version=1,
        base=base,
        hlc=Device("rev", wall_ms=REF + 50)._next()[1],
        base_revision=0,
    )
    after = apply(raced, blind).state
    kinds = {c.kind for c in after.conflicts}
    # The edit is unseen by the record delete too: both stay in front of a reviewer.
    assert kinds == {"row_delete_edit", "delete_edit"}
    assert row_conflict.conflict_id in {c.conflict_id for c in after.conflicts}
    assert not after.deleted


def test_keeping_the_record_brings_the_inner_conflict_back(
    created: tuple[Device, Device, RecordState],
) -> None:
    _before, raced, _ops = _row_conflict(created)
    [row_conflict] = raced.conflicts
    reviewer = Device("rev")
    deleted = apply(raced, reviewer.delete(raced)).state
    assert deleted.conflicts == []
    restore = reviewer.put(deleted, {"": None})  # base: the record tombstone
    kept = apply(deleted, restore)
    assert not kept.state.deleted
    assert [c.conflict_id for c in kept.state.conflicts] == [row_conflict.conflict_id]
    assert [c.conflict_id for c in kept.conflicts] == [row_conflict.conflict_id]


def test_a_field_race_inside_a_deleted_row_is_closed_by_a_delete_that_saw_both(
    created: tuple[Device, Device, RecordState],
) -> None:
    a, b, state = created
    with_row = apply(state, a.put(state, {"members/r1/income": 1})).state
    raced = apply_all(
        [a.put(with_row, {"members/r1/income": 2}), b.put(with_row, {"members/r1/income": 3})],
        with_row,
    )
    [field] = raced.conflicts
    assert field.kind == "field"
    gone = apply(raced, Device("rev").delete_row(raced, "members/r1"))
    assert gone.state.conflicts == [] and gone.closed_conflict_ids == [field.conflict_id]
    assert "members/r1/income" not in current_values(gone.state)


def test_duplicate_household_id_hashes_record_ids_while_stamps_lists_the_stamps() -> None:
    """protocol-merge.md §6: what the id hashes and what ``stamps`` holds differ, on purpose."""
    mine = Device("dev-a").create({"head_name": "张三"})
    other = "7d0d3d7e-0000-4000-8000-000000000001"
    created = "019ab697e000-0000-dev-b"
    conflict = detect_duplicate_household([(other, HOUSEHOLD, FORM, "2026-annual", created)], mine)
    assert conflict is not None
    first, second = sorted((RECORD, other))
    path = f"{FORM}/2026-annual/530102001201:0001"
    assert conflict.conflict_id == conflict_id_for(
        first, "duplicate_household", path, [first, second]
    )
    assert conflict.stamps == tuple(sorted({created, mine.hlc}))
    assert [c["stamp"] for c in conflict.candidates] == sorted([created, mine.hlc])
    assert conflict.theirs == {"record_id": other, "created": created}
