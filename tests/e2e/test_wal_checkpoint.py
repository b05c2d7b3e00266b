"""SQLite's write-ahead log is checkpointed while the server runs (issue 18).

A read transaction left open in a long-lived session pins a snapshot: SQLite cannot checkpoint
past it, so every committed page stays in ``county.db-wal`` and the file grows without bound
(1.75 GB after 20,000 households, ≈14.6 KB per record, before the fix). With no snapshot held,
SQLite's own auto-checkpoint (on commit, past 1,000 pages) copies the frames back and the log is
reused from its start.

The test runs in a bounded mode: the server checkpoints every 64 pages (256 KiB,
``SQLITE_WAL_CHECKPOINT_PAGES``) instead of 1,000, so a load of a few hundred records restarts
the log many times. The load comes in rounds of fresh tablets; after each round the WAL is
measured as the server left it (the test never checkpoints before that), and the log header's
checkpoint sequence number — bumped each time SQLite restarts the log after a complete
checkpoint — must have gone up several times: a pinned snapshot would keep it still.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bench.harness.county_server import start_county_server
from village_client_stub.simulator import Simulator, next_village

CHECKPOINT_PAGES = 64
# Under load the log stays near the checkpoint size plus the largest transaction (a batch of up
# to 200 ops); before the fix it grew ~15 KB per record without end.
WAL_BOUND_BYTES = 4 * 1024 * 1024
FIRST_VILLAGE = "530102001201"
ROUNDS = 3
DEVICES_PER_ROUND = 2
HOUSEHOLDS_PER_DEVICE = 6


def _checkpoint(db_file: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(db_file)
    try:
        busy, log_frames, checkpointed = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
    return busy, log_frames, checkpointed


def _wal_bytes(db_file: Path) -> int:
    wal = Path(f"{db_file}-wal")
    return wal.stat().st_size if wal.exists() else 0


def _log_restarts(db_file: Path) -> int:
    """The WAL header's checkpoint sequence number (big-endian u32 at offset 12)."""
    with open(f"{db_file}-wal", "rb") as wal:
        header = wal.read(32)
    return int.from_bytes(header[12:16], "big")


def test_the_wal_stays_bounded_under_a_long_load(tmp_path: Path) -> None:
    db_file = tmp_path / "county.db"
    server = start_county_server(
        f"sqlite:///{db_file}",
        tmp_path / "county",
        SQLITE_WAL_CHECKPOINT_PAGES=str(CHECKPOINT_PAGES),
    )
    try:
        restarts_before = _log_restarts(db_file)
        wal_after_round = []
        records = 0
        for round_ in range(ROUNDS):
            folder = tmp_path / f"devices-{round_}"
            folder.mkdir()
            simulator = Simulator(
                server.url, folder, admin_user="admin", admin_password=server.admin_password
            )
            result = simulator.run(
                devices=DEVICES_PER_ROUND,
                households=HOUSEHOLDS_PER_DEVICE,
                first_village=next_village(FIRST_VILLAGE, round_ * DEVICES_PER_ROUND),
                seed=round_ * 1000,
            )
            assert all(d.error is None for d in result.devices)
            records += sum(d.records for d in result.devices)
            wal_after_round.append(_wal_bytes(db_file))
        restarts = _log_restarts(db_file) - restarts_before
        assert max(wal_after_round) < WAL_BOUND_BYTES, (records, wal_after_round)
        # The server's own checkpoints restarted the log again and again during the load.
        assert restarts >= 3, (records, restarts)
        _busy, log_frames, checkpointed = _checkpoint(db_file)
        # Every frame of the log made it back into the database: no reader holds an old snapshot.
        assert log_frames > 0
        assert checkpointed == log_frames
    finally:
        server.stop()
