"""The sans-I/O device engine (sync_protocol/device.py) on the in-memory storage."""

from __future__ import annotations

from typing import Any

import pytest

from sync_protocol.clock import Stamp
from sync_protocol.device import (
    ENVELOPE_SCOPE,
    ENVELOPE_STREAM,
    SEQUENCE_JUMP,
    AckMismatch,
    DeviceEngine,
    RecordHead,
    StateInvalid,
    UnexpectedBatch,
)
from sync_protocol.device_memory import MemoryStorage
from sync_protocol.messages import Ack, DownloadPage, OpAck, ServerReply
from sync_protocol.ops import TOMBSTONE, Op, put_op

T0 = 1_764_000_000_000
DEVICE = "dev-a"
REC = "rec-1"
HH = {"village_code": "530102001201", "household_no": "0007"}


def other(ms: int) -> str:
    return f"{ms:012x}-0000-dev-b"


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def engine(storage: MemoryStorage) -> DeviceEngine:
    return DeviceEngine(storage, DEVICE)


def queue(
    engine: DeviceEngine, changes: dict[str, Any], *, now_ms: int = T0, record_id: str = REC
) -> Op:
    """Queue a put and write its record, as an edge does."""

    def build(seq: int, stamp: Stamp) -> Op:
        return put_op(
            device_id=DEVICE,
            seq=seq,
            record_id=record_id,
            form_id="survey",
            form_version=1,
            changes=changes,
            base=dict.fromkeys(changes),
            hlc=stamp,
            household=HH,
            round="2026-annual",
        )

    op = engine.queue_op(build, now_ms=now_ms)
    held = engine.storage.record_head(record_id)
    engine.storage.write_record(
        held or RecordHead(record_id, "survey", 1, dict(HH), "2026-annual"), changes
    )
    return op


def view(revision: int, values: dict[str, Any], stamps: dict[str, str], **kw: Any) -> dict:
    return {
        "record_id": kw.get("record_id", REC),
        "form_id": "survey",
        "form_version": 1,
        "household": HH,
        "round": "2026-annual",
        "revision": revision,
        "deleted": kw.get("deleted", False),
        "values": values,
        "stamps": stamps,
        "conflicts": kw.get("conflicts", []),
        **({"closed_conflicts": kw["closed"]} if "closed" in kw else {}),
    }


# --- the outbox -----------------------------------------------------------------------------


def test_ops_are_numbered_without_gaps_and_a_number_is_never_reused(engine: DeviceEngine) -> None:
    first, second = queue(engine, {"a": 1}), queue(engine, {"a": 2})
    engine.mark_sent([1, 2], now_ms=T0)
    engine.fold_acks(
        [1, 2], [{"seq": 1, "status": "applied"}, {"seq": 2, "status": "applied"}], now_ms=T0
    )
    third = queue(engine, {"a": 3})
    assert [first.seq, second.seq, third.seq] == [1, 2, 3]
    assert engine.pending_ops() == [third]


def test_stamps_go_up_when_the_tablet_clock_goes_backwards(engine: DeviceEngine) -> None:
    ops = [queue(engine, {"a": n}, now_ms=T0 - n * 60_000) for n in range(3)]
    assert [Stamp.parse(op.hlc) for op in ops] == sorted(Stamp.parse(op.hlc) for op in ops)
    assert len({op.hlc for op in ops}) == 3


def test_a_resend_counts_attempts_and_keeps_the_op_outstanding(
    engine: DeviceEngine, storage: MemoryStorage
) -> None:
    queue(engine, {"a": 1})
    engine.mark_sent([1], now_ms=T0 + 1)
    engine.mark_sent([1], now_ms=T0 + 2)
    item = storage.outbox_item(1)
    assert item is not None and (item.state, item.attempts, item.sent_at_ms) == ("sent", 2, T0 + 2)
    assert [op.seq for op in engine.pending_ops()] == [1]


@pytest.mark.parametrize(
    "acks",
    [
        [],  # missing
        [{"seq": 1, "status": "applied"}, {"seq": 1, "status": "applied"}],  # twice
        [{"seq": 1, "status": "applied"}, {"seq": 9, "status": "applied"}],  # extra
        [{"seq": True, "status": "applied"}],  # a bool is not a seq
        [{"seq": 1, "status": "accepted"}],  # unknown status
        ["applied"],
    ],
)
def test_acks_that_do_not_match_the_batch_change_nothing(
    engine: DeviceEngine, storage: MemoryStorage, acks: list[Any]
) -> None:
    queue(engine, {"a": 1})
    engine.mark_sent([1], now_ms=T0)
    before = storage.snapshot()
    # No transaction around the call: the engine checks every ack before its first write.
    with pytest.raises(AckMismatch):
        engine.fold_acks([1], acks, now_ms=T0)
    assert storage.snapshot() == before


def test_an_ack_folds_the_op_stamp_into_the_record_unless_a_newer_one_is_held(
    engine: DeviceEngine, storage: MemoryStorage
) -> None:
    op = queue(engine, {"a": 1, "b": 1})
    held = storage.record_head(REC)
    assert held is not None
    newer = other(T0 + 3_600_000)
    storage.write_record(RecordHead(**{**held.__dict__, "stamps": {"b": newer}}), None)
    summary = engine.fold_acks([1], [{"seq": 1, "status": "merged"}], now_ms=T0)
    assert (summary.removed, summary.acked_through) == ([1], 1)
    assert storage.record_head(REC).stamps == {"a": op.hlc, "b": newer}  # type: ignore[union-attr]


def test_a_conflict_ack_records_an_unlisted_conflict_once(
    engine: DeviceEngine, storage: MemoryStorage
) -> None:
    queue(engine, {"a": 1})
    ack = {"seq": 1, "status": "conflict", "conflict_ids": ["dup-1"]}
    assert engine.fold_acks([1], [ack], now_ms=T0 + 5).conflicts == ["dup-1"]
    note = storage.conflict("dup-1")
    assert note is not None
    assert (note.listed, note.status, note.seq, note.detail) == (False, "open", 1, {"paths": ["a"]})
    assert note.received_at_ms == T0 + 5


def test_a_rejected_op_holds_acked_through_back_until_corrected(
    engine: DeviceEngine, storage: MemoryStorage
) -> None:
    queue(engine, {"a": -1})
    queue(engine, {"b": 1})
    summary = engine.fold_acks(
        [1, 2],
        [
            {"seq": 1, "status": "rejected", "reasons": [{"path": "a", "code": "min"}]},
            {"seq": 2, "status": "applied"},
        ],
        now_ms=T0,
    )
    assert (summary.rejected, summary.removed, summary.acked_through) == ([1], [2], 2)
    assert storage.outbox_item(1).reasons == ({"path": "a", "code": "min"},)  # type: ignore[union-attr]
    changes, corrects = engine.resend_rejected(REC, {"c": 1}, {"a": 5, "c": 1})
    assert (changes, corrects) == ({"c": 1, "a": 5}, [1])
    engine.queue_op(lambda seq, stamp: _op(seq, stamp, changes), now_ms=T0, corrects=corrects)
    item = storage.outbox_item(1)
    assert item is not None and (item.state, item.corrected_by) == ("corrected", 3)


def _op(seq: int, stamp: Stamp, changes: dict[str, Any]) -> Op:
    return put_op(
        device_id=DEVICE,
        seq=seq,
        record_id=REC,
        form_id="survey",
        form_version=1,
        changes=changes,
        base=dict.fromkeys(changes),
        hlc=stamp,
    )


def test_a_rejected_row_delete_is_resent_only_if_the_row_is_still_gone(
    engine: DeviceEngine,
) -> None:
    queue(engine, {"m/r1": TOMBSTONE})
    engine.mark_rejected(1, [])
    gone, _ = engine.resend_rejected(REC, {"x": 1}, {"x": 1})
    back, _ = engine.resend_rejected(REC, {"x": 1}, {"x": 1, "m/r1/name": "A"})
    assert gone == {"x": 1, "m/r1": TOMBSTONE} and back == {"x": 1}


def test_rejecting_an_op_that_is_not_outstanding_is_a_mismatch(engine: DeviceEngine) -> None:
    with pytest.raises(AckMismatch):
        engine.mark_rejected(1, [])


# --- bases ----------------------------------------------------------------------------------


def test_the_base_is_the_own_outstanding_stamp_else_the_servers(
    engine: DeviceEngine, storage: MemoryStorage
) -> None:
    seen = other(T0 - 1_000)
    storage.write_record(RecordHead(REC, "survey", 1, stamps={"a": seen, "m/r1/n": seen}), {})
    mine = queue(engine, {"b": 1})
    base = engine.put_base(REC, {"a": 2, "b": 2, "c": 2}, [])
    assert base == {"a": seen, "b": mine.hlc, "c": None}
    row = engine.put_base(REC, {"m/r1": TOMBSTONE}, ["m/r1/_order"])
    assert row == {"m/r1": None, "m/r1/n": seen, "m/r1/_order": None}
    assert engine.delete_base(REC, ["a", "z"]) == {
        "a": seen,
        "z": None,
        "b": mine.hlc,
        "m/r1/n": seen,
    }


# --- server states --------------------------------------------------------------------------


def test_a_server_state_is_rebased_under_unapplied_ops(
    engine: DeviceEngine, storage: MemoryStorage
) -> None:
    queue(engine, {"a": "mine"})
    queue(engine, {"b": "rejected but kept"})
    engine.fold_acks([1], [{"seq": 1, "status": "applied"}], now_ms=T0)
    engine.mark_rejected(2, [])
    queue(engine, {"c": "pending"})
    s = other(T0)
    assert engine.apply_server_state(
        view(4, {"a": "server", "b": "server", "c": "server", "d": "server"}, {"a": s}), now_ms=T0
    )
    # The acked op is part of the server's state; the rejected and pending ones lie on top.
    assert storage.values(REC) == {
        "a": "server",
        "b": "rejected but kept",
        "c": "pending",
        "d": "server",
    }
    held = storage.record_head(REC)
    assert held is not None and (held.server_revision, held.stamps) == (4, {"a": s})
    assert not engine.apply_server_state(view(3, {"a": "old"}, {}), now_ms=T0)
    assert storage.values(REC)["a"] == "server"


def test_listed_conflicts_follow_the_state_and_closed_ones_stay_closed(
    engine: DeviceEngine, storage: MemoryStorage
) -> None:
    engine.apply_server_state(view(1, {}, {}, conflicts=["c1", "c2"]), now_ms=T0)
    engine.apply_server_state(view(2, {}, {}, conflicts=["c2"]), now_ms=T0)
    status = {n.conflict_id: n.status for n in storage.conflict_notes()}
    assert status == {"c1": "resolved", "c2": "open"}
    # An older state is ignored, but the conflicts it says were closed close all the same.
    assert not engine.apply_server_state(view(1, {}, {}, closed=["c2"]), now_ms=T0)
    assert storage.conflict("c2").status == "resolved"  # type: ignore[union-attr]


def test_a_malformed_state_changes_nothing(engine: DeviceEngine, storage: MemoryStorage) -> None:
    engine.apply_server_state(view(1, {}, {}, conflicts=["c1"]), now_ms=T0)
    before = storage.snapshot()
    broken = {**view(2, {}, {}, closed=["c1"]), "values": None}
    with pytest.raises(StateInvalid):
        engine.apply_server_state(broken, now_ms=T0)
    assert storage.snapshot() == before


def test_a_duplicate_closes_when_its_twin_comes_back_deleted(
    engine: DeviceEngine, storage: MemoryStorage
) -> None:
    queue(engine, {"a": 1})
    engine.fold_acks([1], [{"seq": 1, "status": "conflict", "conflict_ids": ["d"]}], now_ms=T0)
    engine.apply_server_state(view(1, {"a": 2}, {}, record_id="twin"), now_ms=T0)
    engine.apply_server_state(view(1, {"a": 1}, {}), now_ms=T0)  # never lists "d"
    note = storage.conflict("d")
    assert note is not None and (note.status, note.detail["twin"]) == ("open", "twin")
    engine.apply_server_state(view(2, {}, {}, record_id="twin", deleted=True), now_ms=T0)
    assert storage.conflict("d").status == "resolved"  # type: ignore[union-attr]


# --- replies, cursors, envelope counter -----------------------------------------------------


def test_a_reply_applies_each_records_newest_state_once_and_moves_the_cursor(
    engine: DeviceEngine, storage: MemoryStorage
) -> None:
    queue(engine, {"a": 1})
    engine.mark_sent([1], now_ms=T0)
    ack = Ack(
        batch_seq=5,
        acks=(OpAck(seq=1, status="applied", revision=1),),
        high_water_mark=1,
        records=(view(1, {"a": 1}, {}),),
    )
    page = DownloadPage(
        scope="530102", after=0, next_cursor=9, more=True, records=(view(2, {"a": 7}, {}),)
    )
    manifest = DownloadPage(scope="manifest", after=0, next_cursor=3, more=False)
    reply = ServerReply(server_time_ms=T0, acks=(ack,), downloads=(page, manifest))
    fold = engine.fold_reply(reply, {5: [1]}, now_ms=T0)
    assert (fold.ops_acked, fold.records_applied, fold.more) == (1, 1, True)
    assert fold.status_counts == {"applied": 1} and fold.manifest_pages == [manifest]
    assert storage.values(REC) == {"a": 7}
    assert engine.hello_cursors("530102") == {"530102": 9, "manifest": 0}
    with pytest.raises(UnexpectedBatch):
        engine.fold_reply(reply, {6: [1]}, now_ms=T0)


def test_hello_cursors_skip_the_envelope_counter_and_foreign_streams(
    engine: DeviceEngine, storage: MemoryStorage
) -> None:
    storage.set_cursor(ENVELOPE_SCOPE, ENVELOPE_STREAM, "44")
    storage.set_cursor("manifest", "forms", "12")
    storage.set_cursor("5301", "households", "8")
    assert engine.hello_cursors("5301") == {"5301": 0, "manifest": 12}


def test_the_envelope_counter_starts_at_one_and_jumps_after_a_replay(
    engine: DeviceEngine,
) -> None:
    assert engine.next_envelope_sequence() == 1
    engine.reserve_envelope_sequences(4)
    assert engine.skip_envelope_sequences() == 4 + SEQUENCE_JUMP == engine.next_envelope_sequence()


def test_the_server_clock_folds_into_the_next_stamps(engine: DeviceEngine) -> None:
    engine.observe_server_time(T0 + 3_600_000, now_ms=T0)
    assert Stamp.parse(queue(engine, {"a": 1}).hlc).ms == T0 + 3_600_000
    assert Stamp.parse(engine.hello_clock(now_ms=T0)).ms == T0 + 3_600_000


def test_memory_storage_transaction_undoes_everything_on_error(
    engine: DeviceEngine, storage: MemoryStorage
) -> None:
    queue(engine, {"a": 1})
    before = storage.snapshot()
    with pytest.raises(RuntimeError), storage.transaction():
        queue(engine, {"b": 2})
        storage.set_cursor("5301", "records", "3")
        raise RuntimeError("the edge failed half-way")
    assert storage.snapshot() == before


def _task(revision: int, status: str = "open") -> dict[str, Any]:
    return {
        "task_id": "t-1",
        "household": HH,
        "status": status,
        "reasons": [],
        "revision": revision,
    }


def test_tasks_are_asked_for_only_when_wanted_and_kept_at_their_newest_revision(
    engine: DeviceEngine, storage: MemoryStorage
) -> None:
    # A device that keeps no tasks sends the hello it always sent.
    assert engine.hello_cursors("530102") == {"530102": 0, "manifest": 0}
    assert engine.hello_cursors("530102", tasks=True) == {"530102": 0, "manifest": 0, "tasks": 0}
    page = DownloadPage(scope="tasks", after=0, next_cursor=5, more=False, tasks=(_task(5),))
    fold = engine.fold_reply(ServerReply(server_time_ms=T0, downloads=(page,)), {}, now_ms=T0)
    assert fold.tasks_applied == 1 and fold.records_applied == 0
    assert storage.task("t-1") == _task(5)
    assert engine.hello_cursors("530102", tasks=True)["tasks"] == 5
    assert "tasks" not in engine.hello_cursors("530102")
    # An older copy arriving late changes nothing; a newer one replaces it.
    assert engine.apply_task(_task(4, "closed")) is False
    assert engine.apply_task(_task(7, "worked")) is True
    assert storage.task("t-1")["status"] == "worked"
    with pytest.raises(StateInvalid):
        engine.apply_task({"household": HH, "revision": 1})


def test_a_tasks_page_round_trips_and_other_pages_carry_no_tasks_key() -> None:
    page = DownloadPage(scope="tasks", after=0, next_cursor=5, more=False, tasks=(_task(5),))
    assert DownloadPage.from_dict(page.to_dict()) == page
    assert (
        "tasks" not in DownloadPage(scope="manifest", after=0, next_cursor=1, more=False).to_dict()
    )
