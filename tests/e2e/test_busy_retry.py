"""A tablet that meets a busy county server waits and retries, and delivers everything (issue 18).

At the evening peak a SQLite server may answer an exchange with 503 ``database_busy`` and
``Retry-After`` (another process — a backup, the CLI — holds the write lock longer than the busy
timeout). The real device client must treat that as "try again later", not as a failure: the
sync ends with every op acknowledged, and the busy answers show up only as retried attempts.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from bench.harness.county_server import start_county_server
from bench.tablets import prepare_devices
from village_client_stub.store import DeviceStore
from village_client_stub.sync_client import SyncClient
from village_client_stub.transport import HttpTransport


def test_a_device_that_gets_busy_retries_after_the_hint_and_delivers_every_op(
    tmp_path: Path,
) -> None:
    db_file = tmp_path / "county.db"
    server = start_county_server(
        f"sqlite:///{db_file}",
        tmp_path / "server",
        SQLITE_BUSY_TIMEOUT_MS="300",
        BUSY_RETRY_AFTER_SECONDS="1",
    )
    try:
        (run,) = prepare_devices(server, tmp_path / "devices", 1, 2)  # type: ignore[arg-type]
        statuses: list[int] = []

        class Watching(HttpTransport):
            def request(self, method, path, body=None, headers=None, **kwargs):  # type: ignore[no-untyped-def]
                response = super().request(method, path, body, headers, **kwargs)
                if path.endswith("/sync"):
                    statuses.append(response.status)
                return response

        with DeviceStore.open(run.db_path) as store:
            blocker = sqlite3.connect(db_file, isolation_level=None, check_same_thread=False)
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock ...
            release = threading.Timer(2.5, lambda: blocker.execute("ROLLBACK"))
            release.start()  # ... for 2.5 s, far past the server's 0.3 s busy timeout
            started = time.monotonic()
            try:
                report = SyncClient(store, Watching(server.url)).sync()
            finally:
                release.join()
                blocker.close()
        assert 503 in statuses and statuses[-1] == 200, statuses
        assert report.failures >= 1  # the busy answers were retried ...
        assert (
            report.pending_left == 0 and report.ops_acked == run.records == 12
        )  # ... and nothing lost
        assert time.monotonic() - started >= 2.5  # it waited for the lock rather than giving up
    finally:
        server.stop()
