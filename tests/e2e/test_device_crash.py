"""The tablet dies in the middle of a sync; the next sync loses nothing and doubles nothing.

``village-device sync`` runs as a subprocess through a slow fault-proxy link, so the server
commits the first batch while its acknowledgement is still on the way back. The test kills the
process (SIGKILL: no cleanup, no flush) in exactly that window — the server holds records the
device has no ack for — then runs ``sync`` again. The resent ops get the acks the server stored
when it first committed them (nothing is applied twice), the outbox ends empty and the server
holds every record once, equal to the device's copy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from bench.harness.faultproxy import FaultProxy, LinkProfile, kbit_per_s
from forms.instruments.samples import DEFAULT_MONITORING_LINE
from tests.e2e.conftest import (
    REPO,
    VILLAGE,
    CountyServer,
    cli_json,
    device_cli,
    new_device,
    server_record,
    server_records,
)
from village_client_stub.simulator import AdminSession, fill_households
from village_client_stub.store import DeviceStore

HOUSEHOLDS = 34  # x 6 instruments = 204 records


def _wait_for_committed_but_unacked(
    admin: AdminSession, db: Path, process: subprocess.Popen[bytes], timeout: float = 90.0
) -> tuple[int, int]:
    """Poll until the server holds records the device has no ack for; return both counts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the sync finished before it could be interrupted"
        on_server = admin.get(f"/api/v1/records?village={VILLAGE}&limit=1")["total"]
        with DeviceStore.open(db) as store:
            acked = store.sync_state().acked_through
        if on_server > acked:
            return on_server, acked
        time.sleep(0.05)
    raise AssertionError("the server never got ahead of the device's acks")


@pytest.mark.slow
def test_killed_mid_sync_then_sync_again_loses_and_doubles_nothing(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    admin.set_monitoring_line(VILLAGE, date.today().year, DEFAULT_MONITORING_LINE)
    host, port = county.url.removeprefix("http://").split(":")
    # ~16 KB/s each way: the first request (all the ops) is up in ~2 s, its reply takes longer.
    profile = LinkProfile(delay_ms=20, bandwidth_bytes_per_s=kbit_per_s(128))
    db = tmp_path / "tablet.db"
    with FaultProxy((host, int(port)), profile) as proxy:
        store = new_device(county, admin, db, via_url=f"http://127.0.0.1:{proxy.port}")
        record_ids = fill_households(store, VILLAGE, range(HOUSEHOLDS))
        local = {rid: store.record(rid).data for rid in record_ids}
        store.close()

        process = subprocess.Popen(
            [sys.executable, "-m", "village_client_stub.cli", "sync", "--db", str(db), "--json"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            on_server, acked = _wait_for_committed_but_unacked(admin, db, process)
            os.kill(process.pid, signal.SIGKILL)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(30)
        assert process.returncode == -signal.SIGKILL
        assert on_server > acked

        # After the crash: the file opens, every op without an ack is still queued, and the
        # records the user typed are intact.
        with DeviceStore.open(db) as store:
            left = store.pending_ops()
            assert len(left) == len(record_ids) - store.sync_state().acked_through > 0
            assert {rid: store.record(rid).data for rid in record_ids} == local

        again = cli_json(device_cli(db, "sync"))
        assert again["ok"] and again["pending_ops"] == 0
        # Every op got its ack; those the server had committed before the crash got their
        # stored acks back (the history below shows each was applied once).
        assert sum(again["status_counts"].values()) == len(left)
        assert set(again["status_counts"]) <= {"applied", "duplicate"}

    with DeviceStore.open(db) as store:
        assert store.outbox() == []
        assert store.sync_state().acked_through == len(record_ids)
        listed = server_records(admin)
        assert sorted(r["record_id"] for r in listed) == sorted(record_ids)
        for record_id in record_ids:
            detail = server_record(admin, record_id)
            assert detail["data"] == store.record(record_id).data == local[record_id]
            writes = [h for h in detail["history"] if h["device_id"] == store.device_id]
            assert len(writes) == 1, detail["history"]
