"""PostgreSQL connections killed under load (the "PostgreSQL restarted under load" proof of
issue 16): while admins read and a device syncs, the test terminates the server's database
backends with ``pg_terminate_backend`` again and again. Every request either succeeds or fails
with a retryable 503 and ``Retry-After`` (never a 500), and the same server process answers
normally afterwards — no restart.

Only this test's own backends are killed: the server connects with an ``application_name``
unique to the test's private schema, and the terminate query filters on it (other sessions share
this PostgreSQL).
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import psycopg

from bench.harness.county_server import start_county_server
from tests.conftest import PG_URL
from tests.e2e.conftest import VILLAGE, new_device
from village_client_stub.errors import DeviceError
from village_client_stub.simulator import fill_households
from village_client_stub.store import DeviceStore
from village_client_stub.sync_client import SyncClient

TERMINATIONS = 15
READERS = 3


def test_terminated_backends_give_retryable_errors_and_the_app_recovers(
    postgres_url: str, tmp_path: Path
) -> None:
    app_name = "vs_proof_" + postgres_url.rsplit("search_path%3D", 1)[1]
    county = start_county_server(f"{postgres_url}&application_name={app_name}", tmp_path / "c")
    try:
        admin = county.admin()
        token = admin.headers["Authorization"]
        tablet = new_device(county, admin, tmp_path / "tablet.db")
        fill_households(tablet, VILLAGE, range(4))
        tablet.close()

        statuses: Counter[str] = Counter()
        stop = threading.Event()

        def read() -> None:
            for _ in range(10_000):
                if stop.is_set():
                    return
                request = urllib.request.Request(
                    f"{county.url}/api/v1/records?village={VILLAGE}&limit=50",
                    headers={"Authorization": token},
                )
                try:
                    with urllib.request.urlopen(request, timeout=60) as answer:
                        statuses[str(answer.status)] += 1
                except urllib.error.HTTPError as error:
                    with error:
                        retry = error.headers.get("Retry-After")
                        statuses[f"{error.code}{' retry-after' if retry else ''}"] += 1

        readers = [threading.Thread(target=read, daemon=True) for _ in range(READERS)]
        for thread in readers:
            thread.start()
        killed = 0
        sync_failures = 0
        try:
            for _ in range(TERMINATIONS):
                time.sleep(0.3)
                with psycopg.connect(PG_URL, autocommit=True) as conn:
                    rows = conn.execute(
                        "select pg_terminate_backend(pid) from pg_stat_activity "
                        "where application_name = %s and pid <> pg_backend_pid()",
                        (app_name,),
                    ).fetchall()
                killed += len(rows)
        finally:
            stop.set()
            for thread in readers:
                thread.join(120)

        # The same process, no restart: a sync and a read go through.
        with DeviceStore.open(tmp_path / "tablet.db") as store:
            for _ in range(5):
                try:
                    SyncClient(store).sync()
                    break
                except DeviceError:
                    sync_failures += 1
            assert store.pending_ops() == []
        assert county.process.poll() is None
        after = county.admin().get(f"/api/v1/records?village={VILLAGE}&limit=1")
        assert after["total"] == 4 * 6

        print(
            f"pg_terminate_backend: {TERMINATIONS} rounds, {killed} backends killed; "
            f"answers {dict(statuses)}; app recovered without restart"
        )
        assert killed >= TERMINATIONS
        assert set(statuses) <= {"200", "503 retry-after"}, (dict(statuses), county.log())
        assert "Traceback" not in county.log()
    finally:
        county.stop()
