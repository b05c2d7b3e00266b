"""Sync through a link that keeps dropping: nothing lost, nothing doubled, device = server.

The device talks to a real server process through the fault proxy, which resets each
connection after a random number of bytes (seeded), so most exchanges die somewhere — in the
middle of a batch, between batches, or while the reply comes back. The sync client backs off,
shrinks its requests and resends only what has no verified ack; the server answers replays
from its stored acks. At the end every record is on the server exactly once and both sides
hold the same values, field by field.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from bench.harness.faultproxy import FaultProxy, LinkProfile
from forms.instruments.samples import DEFAULT_MONITORING_LINE
from tests.e2e.conftest import (
    VILLAGE,
    CountyServer,
    new_device,
    server_record,
    server_records,
)
from village_client_stub.simulator import AdminSession, fill_households
from village_client_stub.sync_client import Backoff, SyncClient, SyncProgress
from village_client_stub.transport import HttpTransport

HOUSEHOLDS = 84  # x 6 instruments = 504 records


@pytest.mark.slow
def test_500_records_through_a_cutting_link_arrive_exactly_once(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    admin.set_monitoring_line(VILLAGE, date.today().year, DEFAULT_MONITORING_LINE)
    store = new_device(county, admin, tmp_path / "tablet.db")
    record_ids = fill_households(store, VILLAGE, range(HOUSEHOLDS))
    assert len(record_ids) == HOUSEHOLDS * 6 >= 500
    assert len(store.pending_ops()) == len(record_ids)

    host, port = county.url.removeprefix("http://").split(":")
    # Each connection is reset somewhere in its first 2-20 KB (both directions together): an
    # exchange carrying a few batches rarely survives. (Lean downloads bring back only the ack
    # of each new record, so the replies no longer push an exchange past a wider range.)
    profile = LinkProfile(delay_ms=5, cut_after_bytes=(2_000, 20_000), seed=20261125)
    progress: list[SyncProgress] = []
    with FaultProxy((host, int(port)), profile) as proxy:
        client = SyncClient(
            store,
            HttpTransport(f"http://127.0.0.1:{proxy.port}", timeout=20),
            on_progress=progress.append,
            max_failures=80,
            backoff=Backoff(base_s=0.05, cap_s=0.4),
        )
        report = client.sync()
        counters = proxy.counters()

    # The link really was cut, often, and the client really retried.
    assert counters.cuts >= 3, counters
    assert report.failures >= 3
    assert report.ops_acked == len(record_ids)
    assert report.ops_rejected == []
    # The outbox is empty and every op is acknowledged.
    assert store.pending_ops() == []
    assert store.outbox() == []
    assert store.sync_state().acked_through == len(record_ids)
    # Progress reached the end, counting records and bytes.
    assert progress[-1].ops_done == len(record_ids) == progress[-1].ops_total
    assert progress[-1].bytes_up > 0 and progress[-1].bytes_down > 0

    # Every record is on the server exactly once.
    listed = server_records(admin)
    assert sorted(r["record_id"] for r in listed) == sorted(record_ids)
    per_household = Counter((r["form_id"], r["household_no"]) for r in listed)
    assert set(per_household.values()) == {1}
    conflicts = admin.get(f"/api/v1/conflicts?status=all&village={VILLAGE}")
    assert conflicts["total"] == 0

    # Device and server agree on every field, and each record was applied once.
    for record_id in record_ids:
        detail = server_record(admin, record_id)
        assert detail["data"] == store.record(record_id).data, record_id
        device_writes = [h for h in detail["history"] if h["device_id"] == store.device_id]
        assert len(device_writes) == 1, (record_id, detail["history"])
        assert detail["revision"] == store.record(record_id).server_revision


def test_a_stalled_link_times_out_and_sync_resumes(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    store = new_device(county, admin, tmp_path / "tablet.db")
    admin.set_monitoring_line(VILLAGE, date.today().year, DEFAULT_MONITORING_LINE)
    record_ids = fill_households(store, VILLAGE, range(5), form_ids=["housing_safety"])
    host, port = county.url.removeprefix("http://").split(":")
    with FaultProxy((host, int(port)), LinkProfile(delay_ms=5)) as proxy:
        proxy.stall()  # the radio is up but nothing gets through
        # Resume once the client has given up on at least one stalled attempt.
        resumer = threading.Timer(3.0, proxy.resume)
        resumer.start()
        started = time.monotonic()
        try:
            report = SyncClient(
                store,
                HttpTransport(f"http://127.0.0.1:{proxy.port}", timeout=1.0),
                max_failures=20,
                backoff=Backoff(base_s=0.1, cap_s=0.5),
            ).sync()
        finally:
            resumer.cancel()
            proxy.resume()
    assert time.monotonic() - started >= 2.5
    assert report.failures >= 1 and "timed out" in (report.last_error or "")
    assert report.ops_acked == len(record_ids)
    assert store.pending_ops() == []
    assert {r["record_id"] for r in server_records(admin)} == set(record_ids)
