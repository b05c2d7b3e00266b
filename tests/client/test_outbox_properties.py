"""Property: whatever the mix of edits, lost exchanges, acks, rejections and restarts, the outbox
numbers ops 1, 2, 3 … without gaps, loses nothing before its ack, and its stamps only go up."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from sync_protocol.clock import Stamp
from sync_protocol.ops import put_op
from tests.client.conftest import FakeClock
from village_client_stub.store import DeviceStore

ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("queue"), st.integers(1, 3)),
        st.tuples(st.just("send"), st.integers(1, 4)),
        st.tuples(st.just("ack"), st.sampled_from(["applied", "duplicate", "rejected", "lost"])),
        st.tuples(st.just("clock"), st.integers(-60_000, 60_000)),
        st.tuples(st.just("reopen"), st.just(0)),
    ),
    max_size=25,
)


def _queue(store: DeviceStore, n: int) -> list[int]:
    seqs = []
    for i in range(n):
        record_id = f"r{i % 2}"
        op = store.queue_op(
            lambda seq, stamp, rid=record_id: put_op(
                device_id=store.device_id,
                seq=seq,
                record_id=rid,
                form_id="housing_safety",
                form_version=1,
                changes={"storeys": seq},
                hlc=stamp,
            ),
            record={
                "record_id": record_id,
                "form_id": "housing_safety",
                "form_version": 1,
                "household": None,
                "round": None,
                "data": {"storeys": i},
            },
        )
        seqs.append(op.seq)
    return seqs


@settings(max_examples=30, deadline=None)
@given(ACTIONS)
def test_outbox_invariants(actions: list[tuple[str, object]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "device.db"
        clock = FakeClock()
        store = DeviceStore.create(path, now_ms=clock)
        queued: list[int] = []
        removed: set[int] = set()
        rejected: set[int] = set()
        in_flight: list[int] = []
        stamps: dict[int, Stamp] = {}
        try:
            for action, arg in actions:
                if action == "queue":
                    queued += _queue(store, int(arg))  # type: ignore[arg-type]
                elif action == "send":
                    in_flight = [op.seq for op in store.pending_ops(limit=int(arg))]  # type: ignore[arg-type]
                    store.mark_sent(in_flight)
                elif action == "ack" and in_flight:
                    if arg != "lost":  # a lost exchange leaves its ops to be sent again
                        acks = [{"seq": s, "status": arg, "reasons": []} for s in in_flight]
                        summary = store.mark_acked(in_flight, acks)
                        removed.update(summary.removed)
                        rejected.update(summary.rejected)
                    in_flight = []
                elif action == "clock":
                    clock.advance(int(arg))  # type: ignore[arg-type]
                elif action == "reopen":
                    store.close()
                    store = DeviceStore.open(path, now_ms=clock)
                    in_flight = []
                for entry in store.outbox():
                    stamps[entry.seq] = entry.op.stamp
            # Contiguous numbering from 1, never reused.
            assert queued == list(range(1, len(queued) + 1))
            state = store.sync_state()
            assert state.last_seq == len(queued)
            # Nothing lost: every op is acked-and-removed or still in the outbox.
            outstanding = [op.seq for op in store.pending_ops()]
            kept = {e.seq for e in store.outbox(["rejected"])}
            assert kept == rejected
            assert sorted(set(outstanding) | removed | kept) == queued
            assert outstanding == sorted(outstanding)
            expected_through = (min(outstanding) - 1) if outstanding else len(queued)
            if removed or rejected:
                assert state.acked_through == expected_through
            # Stamps follow op order even when the wall clock jumps back.
            ordered = [stamps[s] for s in sorted(stamps)]
            assert ordered == sorted(ordered) and len(set(ordered)) == len(ordered)
        finally:
            store.close()
