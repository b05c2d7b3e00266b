"""The next request's batches are cut while an exchange is on the link, and still exactly right.

A real server process behind the fault proxy (300 ms round trip, so each exchange spends time on
the link); a request budget pinned to 4 KiB, so the outbox takes many exchanges and every
budget is the same. The batches of every exchange but the first were cut in the worker thread
during the exchange before; every op still goes out once, in order, and arrives once. After a
drop (the proxy resets connections) the plan cut for that outcome goes out: the ops of the
dropped exchange first again.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.harness.faultproxy import FaultProxy, LinkProfile
from sync_protocol.pacing import LinkEstimate
from tests.e2e.conftest import VILLAGE, CountyServer, new_device, server_records
from village_client_stub.simulator import AdminSession, fill_households
from village_client_stub.sync_client import Backoff, SyncClient
from village_client_stub.transport import HttpTransport


@pytest.mark.slow
@pytest.mark.parametrize("county", ["sqlite"], indirect=True)
def test_batches_cut_ahead_carry_every_op_once_in_order(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    store = new_device(county, admin, tmp_path / "tablet.db")
    record_ids = fill_households(store, VILLAGE, range(25))  # 150 records
    host, port = county.url.removeprefix("http://").split(":")
    # Every live connection is reset every 0.5-1.5 s (an exchange here takes about half a
    # second): cuts by time, as DESIGN's link drops. Not by bytes: a dropped exchange's records
    # come back in the next download page (their acks were lost), so a byte cut below a page's
    # size would drop every later attempt too.
    profile = LinkProfile(delay_ms=150, cut_every_s=1.0, seed=7)
    with FaultProxy((host, int(port)), profile) as proxy:
        proxy_port = proxy.port
        client = SyncClient(
            store,
            HttpTransport(f"http://127.0.0.1:{proxy_port}", timeout=20),
            link=LinkEstimate(initial_bytes=4096, max_bytes=4096, min_bytes=4096),
            backoff=Backoff(base_s=0.05, cap_s=0.2),
            max_failures=40,
        )
        report = client.sync()
    assert report.ops_acked == len(record_ids) and store.pending_ops() == []
    answered = [t for t in report.timeline if t.outcome == "ok" and t.ops]
    assert len(answered) >= 4
    # Every exchange after an answered one took the batches cut while that one was on the link.
    after_answered = [
        later
        for earlier, later in zip(report.timeline, report.timeline[1:], strict=False)
        if earlier.outcome == "ok" and later.ops
    ]
    assert after_answered and all(t.cut_ahead for t in after_answered)
    # Cuts landed (seeded); the exchange after each resends the dropped ops first, from the
    # plan cut for that outcome (half the budget: fewer ops).
    assert report.failures >= 1, report.timeline
    pairs = [
        (earlier, later)
        for earlier, later in zip(report.timeline, report.timeline[1:], strict=False)
        if earlier.outcome != "ok"
    ]
    assert pairs and all(later.first_seq == earlier.first_seq for earlier, later in pairs)
    assert all(later.cut_ahead and later.ops <= earlier.ops for earlier, later in pairs)
    listed = server_records(admin)
    assert sorted(r["record_id"] for r in listed) == sorted(record_ids)
    assert set(Counter((r["form_id"], r["household_no"]) for r in listed).values()) == {1}
