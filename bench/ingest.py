"""Ingest: records per second through HTTP ``/sync`` against a raw SQLite insert of the same rows.

DESIGN §5: ≥ 1,000 records/s decrypt+verify+validate+merge+commit on SQLite on this 2-core
machine, within 5× of a raw SQLite insert of the same rows measured in the same run; the same on
PostgreSQL. The bench starts a real county server process per backend (127.0.0.1), enrols
``--devices`` simulated tablets (one village each), fills ``--households`` sample households
(six instruments each) on every tablet offline, then syncs all tablets at once with the real
``SyncClient`` and measures the sync phase only: records/s of wall time and records per server
CPU-second (``/proc``, user + system, every thread of the server process).

The anchor: the rows the SQLite server stored for those records (``households``, ``records``,
``record_changes``) inserted again into an empty copy of the same schema with plain
``sqlite3.executemany``, one transaction per 50 records, as the server commits a batch.

With ``--clients N`` the tablets sync from N client processes of their own (as ``bench peak``
drives them) instead of threads of the bench process, so the tablets' own work (sealing, zstd,
applying replies) no longer caps the wall-clock figure at one client core.

``python -m bench ingest [--devices 4] [--households 167] [--backends sqlite,postgresql]
[--clients 0]``.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from bench._county import ServerProcess, running_server
from bench.tablets import prepare_devices
from village_client_stub.simulator import DeviceRun
from village_client_stub.store import DeviceStore
from village_client_stub.sync_client import SyncClient
from village_client_stub.transport import HttpTransport

TARGET_RECORDS_PER_S = {"sqlite": 1000.0, "postgresql": 2000.0}
TARGET_RAW_RATIO = 5.0
_TABLES = ("households", "records", "record_changes")


@dataclass
class IngestRun:
    """One backend's sync phase."""

    backend: str
    records: int
    acked: int
    wall_s: float
    cpu_s: float
    failures: int

    @property
    def per_s(self) -> float:
        """Records per second of wall time."""
        return self.records / self.wall_s if self.wall_s else 0.0

    @property
    def per_cpu_s(self) -> float:
        """Records per server CPU-second."""
        return self.records / self.cpu_s if self.cpu_s else float("inf")


def sync_all(server: ServerProcess, runs: list[DeviceRun]) -> tuple[float, float]:
    """Sync every tablet at once; returns (wall seconds, server CPU-seconds) of that phase."""

    def one(run: DeviceRun) -> None:
        with DeviceStore.open(run.db_path) as store:
            try:
                run.report = SyncClient(store, HttpTransport(server.url, timeout=120)).sync()
            except Exception as exc:  # one device failing must not stop the others
                run.error = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=one, args=(run,)) for run in runs]
    cpu_before = server.cpu_s()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, server.cpu_s() - cpu_before


def ingest(
    backend: str,
    devices: int,
    households: int,
    workdir: Path,
    processes: int = 1,
    clients: int = 0,
) -> tuple[IngestRun, Path]:
    """Run one backend; returns the run and (for SQLite) a copy of the server's database.

    ``processes`` is the server's ``SERVE_PROCESSES``; the CPU counted is the first process's
    (its workers are other processes: read the wall figure then). ``clients`` > 0 syncs the
    tablets from that many client processes (``bench.peak.run_level``), 0 from threads here.
    """
    with running_server(backend, workdir, SERVE_PROCESSES=str(processes)) as server:
        if clients > 0:
            from bench.peak import run_level

            level = run_level(server, workdir / "devices", devices, households, 0, clients)
            records = level.records
            acked = records - sum(o.pending_left for o in level.outcomes)
            failures = sum(1 for o in level.outcomes if o.error) + level.retried
            wall, cpu = level.wall_s, level.cpu_s
        else:
            runs = prepare_devices(server, workdir / "devices", devices, households)
            wall, cpu = sync_all(server, runs)
            records = sum(r.records for r in runs)
            acked = sum(r.report.ops_acked for r in runs if r.report)
            failures = sum(1 for r in runs if r.error) + sum(
                r.report.failures for r in runs if r.report
            )
        copy = workdir / "stored.db"
        if server.db_file is not None:
            source = sqlite3.connect(server.db_file)
            with sqlite3.connect(copy) as target:
                source.backup(target)
            source.close()
    return IngestRun(backend, records, acked, wall, cpu, failures), copy


def raw_insert(stored: Path, workdir: Path) -> tuple[int, float]:
    """Insert the stored rows again into an empty copy of the schema; (records, seconds)."""
    source = sqlite3.connect(stored)
    target_path = workdir / "raw.db"
    target = sqlite3.connect(target_path, isolation_level=None)
    target.execute("PRAGMA journal_mode=WAL")
    target.execute("PRAGMA synchronous=NORMAL")
    rows = {}
    for table in _TABLES:
        for (ddl,) in source.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL", (table,)
        ):
            target.execute(ddl)
        rows[table] = source.execute(f"SELECT * FROM {table}").fetchall()
    source.close()
    records = rows["records"]
    started = time.perf_counter()
    batches = max(1, -(-len(records) // 50))
    for i in range(batches):
        target.execute("BEGIN IMMEDIATE")
        for table in _TABLES:
            # Each table's rows cut into as many slices as there are 50-record batches.
            table_rows = rows[table]
            chunk = table_rows[
                i * len(table_rows) // batches : (i + 1) * len(table_rows) // batches
            ]
            if chunk:
                marks = ",".join("?" * len(chunk[0]))
                target.executemany(f"INSERT INTO {table} VALUES ({marks})", chunk)
        target.execute("COMMIT")
    seconds = time.perf_counter() - started
    target.close()
    return len(records), seconds


def print_report(
    runs: list[IngestRun], raw: tuple[int, float] | None, out: TextIO, devices: int
) -> None:
    """One line per backend: ours, the raw anchor, the ratio, the targets."""
    raw_rate = raw[0] / raw[1] if raw and raw[1] else None
    print(f"ingest through HTTP /sync, {devices} devices at once (sync phase only)", file=out)
    header = (
        f"{'backend':<11} {'records':>7} {'acked':>6} {'wall':>7} {'rec/s':>7} "
        f"{'server CPU':>10} {'rec/CPU-s':>9} {'fails':>5}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in runs:
        print(
            f"{r.backend:<11} {r.records:>7} {r.acked:>6} {r.wall_s:>6.1f}s {r.per_s:>7.0f} "
            f"{r.cpu_s:>9.1f}s {r.per_cpu_s:>9.0f} {r.failures:>5}",
            file=out,
        )
    if raw_rate is not None:
        print(
            f"anchor: raw SQLite insert of the same rows ({raw[0]} records, households and "
            f"change log, 50 per transaction): {raw_rate:,.0f} records/s",
            file=out,
        )
    for r in runs:
        target = TARGET_RECORDS_PER_S[r.backend]
        mark = "met" if r.per_s >= target else "MISSED"
        line = f"target {r.backend}: >= {target:,.0f} records/s: {r.per_s:,.0f} {mark}"
        if raw_rate:
            ratio = raw_rate / r.per_s if r.per_s else float("inf")
            mark_raw = "met" if ratio <= TARGET_RAW_RATIO else "MISSED"
            line += (
                f"; raw insert is {ratio:,.1f}x faster (target <= {TARGET_RAW_RATIO}x) {mark_raw}"
            )
        print(line, file=out)


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run the bench; exit 1 if a record was not acknowledged, 2 for bad arguments."""
    parser = argparse.ArgumentParser(prog="python -m bench ingest", description=__doc__)
    parser.add_argument("--devices", type=int, default=4, help="tablets syncing at once")
    parser.add_argument("--households", type=int, default=167, help="households per tablet")
    parser.add_argument(
        "--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql"
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="server worker processes (SERVE_PROCESSES)"
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=0,
        help="client processes driving the tablets (0: threads of this process)",
    )
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    if args.devices < 1 or args.households < 1:
        parser.error("--devices and --households must be at least 1")
    if args.clients < 0:
        parser.error("--clients must be 0 or more")
    if not backends or any(b not in TARGET_RECORDS_PER_S for b in backends):
        parser.error("--backends takes sqlite and/or postgresql")
    runs: list[IngestRun] = []
    raw = None
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as folder:
        for backend in backends:
            workdir = Path(folder) / backend
            run, stored = ingest(
                backend, args.devices, args.households, workdir, args.processes, args.clients
            )
            runs.append(run)
            if backend == "sqlite":
                raw = raw_insert(stored, workdir)
    print_report(runs, raw, out, args.devices)
    lost = [r for r in runs if r.acked < r.records]
    for r in lost:
        print(
            f"DATA PROBLEM: {r.backend}: {r.records - r.acked} records not acknowledged", file=out
        )
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
