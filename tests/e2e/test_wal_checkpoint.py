"""SQLite's write-ahead log is checkpointed while the server runs (issue 18).

A read transaction left open in a long-lived session pins a snapshot: SQLite cannot checkpoint
past it, so every committed page stays in ``county.db-wal`` and the file grows without bound.
With no snapshot held, a passive checkpoint from another connection copies every frame back.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bench.harness.county_server import start_county_server
from village_client_stub.simulator import Simulator

# An idle server's WAL after a checkpoint is reused from its start, so under load it stays near
# SQLite's auto-checkpoint size (1,000 pages, 4 MiB) plus one batch; this bound leaves room.
WAL_BOUND_BYTES = 8 * 1024 * 1024


def _checkpoint(db_file: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(db_file)
    try:
        busy, log_frames, checkpointed = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
    return busy, log_frames, checkpointed


def test_no_snapshot_pins_the_wal_while_the_server_runs(tmp_path: Path) -> None:
    db_file = tmp_path / "county.db"
    server = start_county_server(f"sqlite:///{db_file}", tmp_path / "county")
    try:
        simulator = Simulator(
            server.url,
            tmp_path / "devices",
            admin_user="admin",
            admin_password=server.admin_password,
        )
        (tmp_path / "devices").mkdir()
        result = simulator.run(devices=2, households=4, first_village="530102001201")
        assert all(d.error is None for d in result.devices)
        _busy, log_frames, checkpointed = _checkpoint(db_file)
        # Every frame of the log made it back into the database: no reader holds an old snapshot.
        assert log_frames > 0
        assert checkpointed == log_frames
        assert Path(f"{db_file}-wal").stat().st_size < WAL_BOUND_BYTES
    finally:
        server.stop()
