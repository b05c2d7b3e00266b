"""County size: dashboard and records API latency, database size, a village's first download.

DESIGN §5: a county of 100,000 households; the dashboard over 100,000 households answers with
p95 < 1 s; a village's first download of 500 households is ≤ 1 MB. The bench starts a real
county server (127.0.0.1), loads ``--villages`` × ``--households`` sample households (all six
instruments) through the real ingest path — one tablet per village, filled offline, all synced
at once — because the server has no bulk load path yet (issue 18). It then times 20 calls each
of ``GET /api/v1/indicators?level=county`` and ``GET /api/v1/records?indicator=housing&failing=true``,
measures the database's size on disk, and enrols a fresh tablet in the first village to measure
its first download (bytes down, records received, the time that takes at 1 Mbit/s).

The default is bounded (10 villages × 20 households); the full county is
``python -m bench county --villages 200 --households 500`` (over an hour through ``/sync``).

``python -m bench county [--villages 10] [--households 20] [--calls 20] [--backend sqlite]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from bench._county import (
    directory_bytes,
    percentile,
    postgres_size,
    running_server,
    sqlite_files,
    timed_gets,
)
from bench.ingest import FIRST_VILLAGE, prepare_devices, sync_all
from village_client_stub.enrollment import enroll
from village_client_stub.store import DeviceStore
from village_client_stub.sync_client import SyncClient
from village_client_stub.transport import HttpTransport

TARGET_P95_S = 1.0
TARGET_DOWNLOAD_BYTES = 1_000_000
TARGET_HOUSEHOLDS = 100_000
LINK_BYTES_PER_S = 1_000_000 / 8
DASHBOARD = "/api/v1/indicators?level=county"
FAILING_HOUSING = "/api/v1/records?indicator=housing&failing=true"


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run the bench; exit 1 if loading lost records, 2 for bad arguments."""
    parser = argparse.ArgumentParser(prog="python -m bench county", description=__doc__)
    parser.add_argument("--villages", type=int, default=10, help="villages (one tablet each)")
    parser.add_argument("--households", type=int, default=20, help="households per village")
    parser.add_argument("--calls", type=int, default=20, help="timed calls per API")
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgresql"))
    args = parser.parse_args(argv)
    if min(args.villages, args.households, args.calls) < 1:
        parser.error("--villages, --households and --calls must be at least 1")
    with tempfile.TemporaryDirectory(prefix="bench-county-") as folder:
        with running_server(args.backend, Path(folder)) as server:
            runs = prepare_devices(server, Path(folder) / "devices", args.villages, args.households)
            load_wall, load_cpu = sync_all(server, runs)
            records = sum(r.records for r in runs)
            acked = sum(r.report.ops_acked for r in runs if r.report)
            admin = server.admin()
            dashboard = timed_gets(admin, DASHBOARD, args.calls)
            failing = timed_gets(admin, FAILING_HOUSING, args.calls)
            if server.db_file is not None:
                size = directory_bytes(sqlite_files(server.db_file))
                wal = directory_bytes([Path(f"{server.db_file}-wal")])
            else:
                size, wal = postgres_size(server.database_url), 0
            rss = server.rss_mb()[1]
            with DeviceStore.create(Path(folder) / "fresh.db") as store:
                transport = HttpTransport(server.url, timeout=120)
                enroll(
                    store,
                    server.url,
                    admin.issue_code(FIRST_VILLAGE),
                    transport=transport,
                    download=False,
                )
                first = SyncClient(store, HttpTransport(server.url, timeout=120)).sync()
    households = args.villages * args.households
    print(
        f"county on {args.backend}: {households:,} households ({records:,} records) in "
        f"{args.villages} villages, loaded through /sync",
        file=out,
    )
    print(
        f"load: {records / load_wall:,.0f} records/s, {records / load_cpu if load_cpu else 0:,.0f} "
        f"records per server CPU-second, server peak RSS {rss:.0f} MB",
        file=out,
    )
    print(
        f"database on disk: {size / 1e6:,.1f} MB ({size / households:,.0f} B per household"
        + (f"; WAL {wal / 1e6:,.1f} MB" if server.db_file is not None else "")
        + ")",
        file=out,
    )
    header = f"{'GET':<48} {'calls':>5} {'p50':>7} {'p95':>7} {'goal':>6}"
    print(header, file=out)
    print("-" * len(header), file=out)
    for path, seconds in ((DASHBOARD, dashboard), (FAILING_HOUSING, failing)):
        p95 = percentile(seconds, 0.95)
        print(
            f"{path:<48} {len(seconds):>5} {percentile(seconds, 0.5):>6.3f}s {p95:>6.3f}s "
            f"{TARGET_P95_S:>5.1f}s",
            file=out,
        )
    p95 = percentile(dashboard, 0.95)
    scaled = p95 * TARGET_HOUSEHOLDS / households
    print(
        f"target: dashboard p95 < {TARGET_P95_S:.0f} s at {TARGET_HOUSEHOLDS:,} households: "
        f"{p95:.3f} s at {households:,} ({'met' if p95 < TARGET_P95_S else 'MISSED'} here; "
        f"{scaled:,.1f} s at {TARGET_HOUSEHOLDS:,} if it stays linear)",
        file=out,
    )
    village_households = args.households
    print(
        f"a village's first download, {village_households} households: "
        f"{first.bytes_down:,} B down, {first.records_received} records, {first.exchanges} "
        f"exchanges, {first.bytes_down / LINK_BYTES_PER_S:.1f} s of a 1 Mbit/s link",
        file=out,
    )
    per_500 = first.bytes_down * 500 / village_households
    print(
        f"target: <= {TARGET_DOWNLOAD_BYTES:,} B for 500 households: {per_500:,.0f} B scaled "
        f"{'met' if per_500 <= TARGET_DOWNLOAD_BYTES else 'MISSED'}",
        file=out,
    )
    if acked < records:
        print(f"DATA PROBLEM: {records - acked} records not acknowledged", file=out)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
