"""Upload pacing (sync_protocol/pacing.py): budget, batches, backoff — no clock, no own randomness."""

from __future__ import annotations

import random

from sync_protocol.clock import Stamp
from sync_protocol.exchange import DEFAULT_BATCH_WIRE_BYTES
from sync_protocol.ops import Op, put_op
from sync_protocol.pacing import (
    MAX_BATCHES_PER_REQUEST,
    MIN_REQUEST_BYTES,
    Backoff,
    BatchPlanner,
    LinkEstimate,
)

DEVICE = "dev-a"


def _ops(count: int) -> list[Op]:
    return [
        put_op(
            device_id=DEVICE,
            seq=n,
            record_id=f"rec-{n}",
            form_id="survey",
            form_version=1,
            changes={"note": f"第 {n} 户 " + "x" * (n % 97)},
            hlc=Stamp(1_764_000_000_000 + n, 0, DEVICE),
        )
        for n in range(1, count + 1)
    ]


def test_backoff_doubles_within_equal_jitter_and_caps() -> None:
    backoff = Backoff(1.0, 8.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(6)]
    for attempt, delay in enumerate(delays, start=1):
        step = min(8.0, 2.0 ** (attempt - 1))
        assert step / 2 <= delay <= step
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_the_budget_halves_after_a_drop_and_at_most_doubles_after_a_success() -> None:
    link = LinkEstimate(initial_bytes=16_384)
    link.failed()
    assert link.request_bytes == 8_192
    link.observe(8_192, 8_192, 0.001)  # a very fast exchange
    assert link.request_bytes == 16_384
    for _ in range(10):
        link.failed()
    assert link.request_bytes == MIN_REQUEST_BYTES
    assert link.batch_bytes == MIN_REQUEST_BYTES


def test_a_fast_link_carries_at_most_the_maximum_number_of_full_batches() -> None:
    link = LinkEstimate()
    for _ in range(12):
        link.observe(1_000_000, 1_000_000, 0.01)
    assert link.request_bytes == MAX_BATCHES_PER_REQUEST * DEFAULT_BATCH_WIRE_BYTES
    assert link.batch_bytes == DEFAULT_BATCH_WIRE_BYTES


def test_the_planner_sends_a_prefix_of_the_outbox_within_the_budget() -> None:
    ops = _ops(400)
    link = LinkEstimate(initial_bytes=4_096)
    planner = BatchPlanner()
    batches = planner.plan(ops, link, sender_id=DEVICE, allowed={0})
    sent = [op.seq for batch in batches for op in batch.ops]
    assert len(batches) >= 1
    assert len(batches) <= max(1, link.request_bytes // link.batch_bytes)
    assert sent == list(range(1, len(sent) + 1))  # lowest seq first, no gap
    assert len(sent) < len(ops)
    assert planner.plan([], link, sender_id=DEVICE, allowed={0}) == []
