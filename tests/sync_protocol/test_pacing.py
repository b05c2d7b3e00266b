"""Upload pacing (sync_protocol/pacing.py): budget, batches, backoff — no clock, no own randomness."""

from __future__ import annotations

import random

from sync_protocol.clock import Stamp
from sync_protocol.exchange import DEFAULT_BATCH_WIRE_BYTES
from sync_protocol.ops import Op, put_op
from sync_protocol.pacing import (
    MAX_BATCHES_PER_REQUEST,
    MIN_REQUEST_BYTES,
    MIN_TARGET_S,
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


def test_the_servers_own_time_does_not_count_as_link_time() -> None:
    # The same bytes over the same link (20 KB each way in 5 s of transfer): once with a
    # quick server, once with a server that thought for 20 s. Told the server's time, the
    # estimate sees the same link both times; not told, it sees a link five times slower.
    quick, busy, blind = (LinkEstimate(initial_bytes=16_384) for _ in range(3))
    for _ in range(4):
        quick.observe(20_000, 20_000, 5.1, server_s=0.1)
        busy.observe(20_000, 20_000, 25.0, server_s=20.0)
        blind.observe(20_000, 20_000, 25.0)
    assert quick.bytes_per_s is not None and busy.bytes_per_s is not None
    assert abs(busy.bytes_per_s - 8_000) < 1 and abs(quick.bytes_per_s - 40_000 / 5.0) < 1
    assert busy.request_bytes == quick.request_bytes
    assert blind.request_bytes < busy.request_bytes / 4


def test_a_server_time_beyond_the_exchange_or_below_zero_is_not_trusted() -> None:
    link = LinkEstimate(initial_bytes=16_384)
    link.observe(8_000, 8_000, 2.0, server_s=5.0)  # no link time left: no information
    assert link.bytes_per_s is None and link.request_bytes == 16_384
    link.observe(8_000, 8_000, 2.0, server_s=-3.0)  # read as 0
    assert link.bytes_per_s == 8_000


def _settle(link: LinkEstimate, rounds: int = 12) -> None:
    """Exchanges of 2 s on an 8,000 B/s link (8 KB up, 8 KB down), the server quick."""
    for _ in range(rounds):
        link.observe(8_000, 8_000, 2.0, server_s=0.0)


def test_a_link_that_drops_often_gets_shorter_exchanges() -> None:
    steady, dropping = LinkEstimate(), LinkEstimate()
    _settle(steady)
    _settle(dropping)
    for _ in range(6):  # a drop 3 s into each of six exchanges: ~one drop per 7 s of link use
        dropping.failed(3.0)
        dropping.observe(8_000, 8_000, 2.0, server_s=0.0)
    _settle(steady, 6)
    assert steady.exchange_target_s == steady.target_s
    assert MIN_TARGET_S < dropping.exchange_target_s < steady.target_s / 2
    # Budget = speed × the exchange's target, split over both directions.
    assert steady.request_bytes == int(8_000 * steady.target_s / 2)
    assert dropping.request_bytes == int(8_000 * dropping.exchange_target_s / 2)


def test_one_early_drop_or_a_failure_that_is_no_drop_keeps_the_target() -> None:
    link = LinkEstimate()
    assert link.drop_every_s is None and link.exchange_target_s == link.target_s
    link.failed(3.0)  # one drop, 3 s in: the prior (two drops, one per 20 s) still weighs
    assert link.target_s / 2 < link.exchange_target_s < link.target_s
    busy = LinkEstimate()
    for _ in range(20):
        busy.failed()  # 503s, a refused sequence: nothing about the link
    assert busy.exchange_target_s == busy.target_s
