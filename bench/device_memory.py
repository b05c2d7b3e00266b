"""Device memory: one tablet syncing 5,000 records against a real server, its peak RSS.

DESIGN and issue 18: a device syncing 5,000 records stays under 100 MB RSS. The bench starts a
real county server (127.0.0.1, SQLite by default) and, in a fresh client process (spawned, so
nothing of the bench's own memory counts), runs the ``village_client_stub`` device:

1. **upload**: enrol a tablet, fill ``--records`` sample records offline (six instruments a
   household), then ``SyncClient.sync()`` them all;
2. **first download**: enrol a second tablet in the same village and run its first sync, which
   downloads those records (plus the form manifest).

Before each sync the process's peak-RSS counter is reset (``/proc/self/clear_refs``, Linux), so
the figure is the resident memory the process reached *during the sync* (the interpreter and
libraries included), read from ``VmHWM`` afterwards.

``python -m bench device_memory [--records 5000] [--backend sqlite]``.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

from bench._county import running_server

TARGET_RSS_MB = 100.0
RECORDS_PER_HOUSEHOLD = 6
CHILD_TIMEOUT_S = 1800.0


@dataclass
class SyncMemory:
    """One measured sync of the device process."""

    what: str
    records: int
    exchanges: int
    seconds: float
    rss_before_mb: float
    peak_mb: float
    pending_left: int


def _memory_mb(field: str) -> float:
    status = Path("/proc/self/status").read_text()
    match = re.search(rf"{field}:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0


def _measured_sync(what: str, store: Any, url: str) -> dict[str, Any]:
    """Sync ``store`` with its peak-RSS counter reset first; the figures as a dict."""
    from village_client_stub.sync_client import SyncClient
    from village_client_stub.transport import HttpTransport

    before = _memory_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    started = time.perf_counter()
    report = SyncClient(store, HttpTransport(url, timeout=300)).sync()
    seconds = time.perf_counter() - started
    return {
        "what": what,
        "records": report.ops_acked if what == "upload" else report.records_received,
        "exchanges": report.exchanges,
        "seconds": seconds,
        "rss_before_mb": before,
        "peak_mb": _memory_mb("VmHWM"),
        "pending_left": report.pending_left,
    }


def _device_main(url: str, admin_password: str, folder: str, records: int, results: Any) -> None:
    """The device process: fill and upload, then a second tablet's first download."""
    try:
        from bench.tablets import prepare_devices
        from village_client_stub.enrollment import enroll
        from village_client_stub.simulator import AdminSession
        from village_client_stub.store import DeviceStore
        from village_client_stub.transport import HttpTransport

        server = SimpleNamespace(url=url, admin_password=admin_password)
        households = math.ceil(records / RECORDS_PER_HOUSEHOLD)
        (run,) = prepare_devices(server, Path(folder), 1, households)  # type: ignore[arg-type]
        out = []
        with DeviceStore.open(run.db_path) as store:
            out.append(_measured_sync("upload", store, url))
        # The second tablet enrols without its first sync, so that sync is the measured one.
        admin = AdminSession(HttpTransport(url), "admin", admin_password)
        with DeviceStore.create(Path(folder) / "second-tablet.db") as store:
            enroll(store, url, admin.issue_code(run.village), download=False)
            out.append(_measured_sync("first download", store, url))
        results.put(("done", out))
    except Exception as exc:  # reported to the parent
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def measure(backend: str, records: int, folder: Path) -> list[SyncMemory]:
    """Run the device process against a fresh server; its two measured syncs."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    with running_server(backend, folder) as server:
        process = context.Process(
            target=_device_main,
            args=(server.url, server.admin_password, str(folder / "device"), records, results),
            daemon=True,
        )
        process.start()
        try:
            kind, payload = results.get(timeout=CHILD_TIMEOUT_S)
        finally:
            process.join(60)
            if process.is_alive():
                process.kill()
    if kind == "error":
        raise RuntimeError(f"the device process failed: {payload}")
    return [SyncMemory(**item) for item in payload]


def print_report(runs: list[SyncMemory], backend: str, out: TextIO) -> None:
    """The table and the target line."""
    print(f"device memory: one tablet process syncing against a real server ({backend})", file=out)
    header = (
        f"{'sync':<15} {'records':>7} {'exchanges':>9} {'time':>7} {'RSS before':>10} "
        f"{'peak RSS':>8}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for run in runs:
        print(
            f"{run.what:<15} {run.records:>7} {run.exchanges:>9} {run.seconds:>6.1f}s "
            f"{run.rss_before_mb:>8.0f}MB {run.peak_mb:>6.0f}MB",
            file=out,
        )
    peak = max(run.peak_mb for run in runs)
    print(
        f"target: a device syncing {runs[0].records:,} records under {TARGET_RSS_MB:.0f} MB RSS: "
        f"{peak:.0f} MB ({peak / TARGET_RSS_MB:.2f}x the floor) "
        f"{'met' if peak < TARGET_RSS_MB else 'MISSED'}",
        file=out,
    )


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run the bench; exit 1 if a record was not delivered, 2 for bad arguments."""
    parser = argparse.ArgumentParser(prog="python -m bench device_memory", description=__doc__)
    parser.add_argument("--records", type=int, default=5000, help="records the tablet syncs")
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgresql"))
    args = parser.parse_args(argv)
    if args.records < 1:
        parser.error("--records must be at least 1")
    with tempfile.TemporaryDirectory(prefix="bench-device-memory-") as folder:
        runs = measure(args.backend, args.records, Path(folder))
    print_report(runs, args.backend, out)
    lost = runs[0].pending_left or runs[1].records < runs[0].records
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
