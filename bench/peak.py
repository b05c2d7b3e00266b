"""The evening peak: N tablets syncing at once, exchange latency, failures, server CPU and RSS.

DESIGN §5: 200 devices syncing at once with p95 exchange latency under 2 s on loopback, zero
failures; a server worker under 500 MB. The bench starts one real county server process
(127.0.0.1, SQLite by default, the default thread count), and for each level of ``--levels``
enrols that many fresh tablets (one village each), fills ``--households`` sample households on
each offline (a small batch), and then lets every tablet of the level run the real
``SyncClient.sync()`` at once (upload, acks, its village's download). Every ``/sync`` HTTP
exchange is timed on the device side; a failed exchange is a non-2xx answer (503 when the
database stays busy) or a broken connection. Server CPU-seconds and RSS come from ``/proc``.

``python -m bench peak [--levels 50,100,200] [--households 1] [--backend sqlite]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from bench._county import (
    ExchangeTimes,
    ServerProcess,
    TimedTransport,
    percentile,
    running_server,
    status_summary,
)
from bench.ingest import prepare_devices
from village_client_stub.simulator import DeviceRun
from village_client_stub.store import DeviceStore
from village_client_stub.sync_client import SyncClient

TARGET_P95_S = 2.0
TARGET_RSS_MB = 500.0


@dataclass
class PeakLevel:
    """One level: N tablets at once."""

    devices: int
    records: int
    wall_s: float
    cpu_s: float
    rss_mb: float
    times: ExchangeTimes
    device_errors: int

    @property
    def failed_exchanges(self) -> int:
        """Exchanges that did not get a 2xx answer."""
        return sum(1 for s in self.times.statuses if not 200 <= s < 300)


def run_level(server: ServerProcess, runs: list[DeviceRun]) -> PeakLevel:
    """Sync ``runs`` all at once through timed transports."""
    times = ExchangeTimes()

    def one(run: DeviceRun) -> None:
        with DeviceStore.open(run.db_path) as store:
            try:
                run.report = SyncClient(
                    store, TimedTransport(server.url, times, timeout=120)
                ).sync()
            except Exception as exc:  # one device failing must not stop the others
                run.error = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=one, args=(run,)) for run in runs]
    cpu_before = server.cpu_s()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return PeakLevel(
        devices=len(runs),
        records=sum(r.records for r in runs),
        wall_s=wall,
        cpu_s=server.cpu_s() - cpu_before,
        rss_mb=server.rss_mb()[1],
        times=times,
        device_errors=sum(1 for r in runs if r.error),
    )


def print_report(levels: list[PeakLevel], backend: str, out: TextIO) -> None:
    """One line per level; the target line for the largest."""
    print(
        f"evening peak on {backend}: tablets syncing at once (upload + acks + download)", file=out
    )
    header = (
        f"{'devices':>7} {'records':>7} {'exchanges':>9} {'p50':>6} {'p95':>6} {'p99':>6} "
        f"{'failed':>6} {'wall':>7} {'server CPU':>10} {'peak RSS':>8}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for level in levels:
        s = level.times.seconds
        print(
            f"{level.devices:>7} {level.records:>7} {len(s):>9} {percentile(s, 0.5):>5.2f}s "
            f"{percentile(s, 0.95):>5.2f}s {percentile(s, 0.99):>5.2f}s "
            f"{level.failed_exchanges:>6} {level.wall_s:>6.1f}s {level.cpu_s:>9.1f}s "
            f"{level.rss_mb:>6.0f}MB",
            file=out,
        )
        if level.failed_exchanges or level.device_errors:
            print(
                f"  outcomes: {dict(status_summary(level.times.statuses))}; "
                f"devices that gave up: {level.device_errors}",
                file=out,
            )
    top = levels[-1]
    p95 = percentile(top.times.seconds, 0.95)
    met = p95 < TARGET_P95_S and top.failed_exchanges == 0 and top.device_errors == 0
    print(
        f"target: {top.devices} devices at once, p95 < {TARGET_P95_S:.0f} s, 0 failures: "
        f"p95 {p95:.2f} s ({p95 / TARGET_P95_S:.1f}x the goal), {top.failed_exchanges} failed "
        f"{'met' if met else 'MISSED'}",
        file=out,
    )
    rss = max(level.rss_mb for level in levels)
    print(
        f"target: server under {TARGET_RSS_MB:.0f} MB RSS: {rss:.0f} MB "
        f"{'met' if rss < TARGET_RSS_MB else 'MISSED'}",
        file=out,
    )


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run the bench; exit 1 if a tablet kept unsent records, 2 for bad arguments."""
    parser = argparse.ArgumentParser(prog="python -m bench peak", description=__doc__)
    parser.add_argument("--levels", default="50,100,200", help="tablets at once, per level")
    parser.add_argument("--households", type=int, default=1, help="households per tablet")
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgresql"))
    args = parser.parse_args(argv)
    try:
        counts = [int(x) for x in args.levels.split(",") if x]
    except ValueError:
        parser.error("--levels takes comma-separated device counts")
    if not counts or min(counts) < 1 or args.households < 1:
        parser.error("--levels and --households must be at least 1")
    levels: list[PeakLevel] = []
    with tempfile.TemporaryDirectory(prefix="bench-peak-") as folder:
        with running_server(args.backend, Path(folder)) as server:
            offset = 0
            for index, count in enumerate(counts):
                runs = prepare_devices(
                    server,
                    Path(folder) / f"level-{index}",
                    count,
                    args.households,
                    first_index=offset,
                )
                offset += count
                levels.append(run_level(server, runs))
    print_report(levels, args.backend, out)
    return 1 if any(level.device_errors for level in levels) else 0


if __name__ == "__main__":
    sys.exit(main())
