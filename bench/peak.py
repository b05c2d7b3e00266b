"""The evening peak: N tablets syncing at once, exchange latency, failures, server CPU and RSS.

DESIGN §5: 200 devices syncing at once with p95 exchange latency under 2 s on loopback, zero
failures; a server worker under 500 MB. For each backend of ``--backends`` and each
``SERVE_PROCESSES`` of ``--processes`` the bench starts one real county server (127.0.0.1, the
default thread count per process) and, for each level of ``--levels``, enrols that many fresh
tablets (one village each), fills ``--households`` sample households on each offline (a small
batch), and then lets every tablet of the level run the real ``SyncClient.sync()`` at once
(upload, acks, its village's download).

The tablets run in ``--clients`` separate client processes, each driving its share of the
devices with one thread per device. They must not share a process (and its GIL) with each other
in one lump or with anything the figure is about: the figure is meant to be the server's. Every
``/sync`` HTTP exchange is timed on the device side. A device that gets "busy" (a 503 with
``Retry-After``, or a reply whose batches were skipped) waits and retries as the protocol says:
those attempts are counted as ``retried``; ``failed`` counts only the devices whose sync ended
without delivering every op (the exchanges that ultimately failed). Server CPU-seconds (every
process of the server) and peak RSS per server process come from ``/proc``.

``python -m bench peak [--levels 50,100,200] [--households 1] [--backends sqlite,postgresql]
[--processes 1,N] [--clients 2]`` (N: the number of cores).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

from bench._county import (
    ExchangeTimes,
    ServerProcess,
    TimedTransport,
    percentile,
    running_server,
    status_summary,
)

TARGET_P95_S = 2.0
TARGET_RSS_MB = 500.0
#: How long the parent waits for a client process to prepare or to finish its devices.
CLIENT_TIMEOUT_S = 900.0


@dataclass
class DeviceOutcome:
    """How one tablet's sync ended."""

    records: int
    sync_s: float
    retried: int
    pending_left: int
    error: str | None

    @property
    def failed(self) -> bool:
        """The sync did not deliver every op (it gave up, or something is left)."""
        return self.error is not None or self.pending_left > 0


@dataclass
class PeakLevel:
    """One level: N tablets at once."""

    devices: int
    wall_s: float
    cpu_s: float
    rss_mb: dict[int, float]
    times: ExchangeTimes
    outcomes: list[DeviceOutcome] = field(default_factory=list)

    @property
    def records(self) -> int:
        """Records the tablets of the level uploaded."""
        return sum(o.records for o in self.outcomes)

    @property
    def failed(self) -> int:
        """Devices whose sync ultimately failed."""
        return sum(1 for o in self.outcomes if o.failed)

    @property
    def retried(self) -> int:
        """Exchange attempts that failed and were retried (busy, no reply)."""
        return sum(o.retried for o in self.outcomes)

    @property
    def http_errors(self) -> int:
        """Exchange attempts without a 2xx answer (each retried, or the last of a failure)."""
        return sum(1 for s in self.times.statuses if not 200 <= s < 300)


def server_pids(server: ServerProcess) -> list[int]:
    """The server process and its worker processes (``SERVE_PROCESSES`` > 1 forks them)."""
    pids = [server.process.pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(server.process.pid):
            pids.append(int(stat.parent.name))
    return pids


def peak_rss_mb(pids: list[int]) -> dict[int, float]:
    """Peak resident memory (VmHWM) of each of ``pids`` in MB."""
    out: dict[int, float] = {}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        out[pid] = int(match.group(1)) / 1024 if match else 0.0
    return out


# --- the client processes ---------------------------------------------------------------------


def _client_main(
    url: str,
    admin_password: str,
    folder: str,
    first_index: int,
    devices: int,
    households: int,
    go: Any,
    results: Any,
) -> None:
    """One client process: prepare its tablets, wait for ``go``, sync them all at once.

    Puts ``("ready", first_index)`` on ``results`` once prepared, then ``("done", payload)``
    (or ``("error", text)`` when the preparation failed).
    """
    from bench.tablets import prepare_devices
    from village_client_stub.store import DeviceStore
    from village_client_stub.sync_client import SyncClient

    # prepare_devices needs only the address and the admin password of the server.
    server = SimpleNamespace(url=url, admin_password=admin_password)
    try:
        runs = prepare_devices(
            server,  # type: ignore[arg-type]
            Path(folder),
            devices,
            households,
            first_index=first_index,
        )
    except Exception as exc:  # reported to the parent, which stops the level
        results.put(("error", f"{type(exc).__name__}: {exc}"))
        return
    times = ExchangeTimes()
    outcomes: list[dict[str, Any]] = []
    lock = threading.Lock()

    def one(run: Any) -> None:
        started = time.perf_counter()
        error = None
        retried = pending = 0
        with DeviceStore.open(run.db_path) as store:
            try:
                report = SyncClient(store, TimedTransport(url, times, timeout=120)).sync()
                retried, pending = report.failures, report.pending_left
            except Exception as exc:  # one device failing must not stop the others
                error = f"{type(exc).__name__}: {exc}"
                pending = store.pending_count()
        outcome = {
            "records": run.records,
            "sync_s": time.perf_counter() - started,
            "retried": retried,
            "pending_left": pending,
            "error": error,
        }
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=one, args=(run,)) for run in runs]
    results.put(("ready", first_index))
    go.wait()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(
        ("done", {"seconds": times.seconds, "statuses": times.statuses, "outcomes": outcomes})
    )


def run_level(
    server: ServerProcess,
    folder: Path,
    devices: int,
    households: int,
    first_index: int,
    clients: int,
) -> PeakLevel:
    """Prepare ``devices`` tablets in ``clients`` processes, then sync them all at once."""
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    results = context.Queue()
    shares = [devices // clients + (1 if i < devices % clients else 0) for i in range(clients)]
    processes = []
    start = first_index
    for i, share in enumerate(s for s in shares if s):
        process = context.Process(
            target=_client_main,
            args=(
                server.url,
                server.admin_password,
                str(folder / f"client-{i}"),
                start,
                share,
                households,
                go,
                results,
            ),
            daemon=True,
        )
        process.start()
        processes.append(process)
        start += share
    try:
        for _ in processes:
            kind, payload = results.get(timeout=CLIENT_TIMEOUT_S)
            if kind == "error":
                raise RuntimeError(f"a client process could not prepare its tablets: {payload}")
        pids = server_pids(server)
        cpu_before = server.cpu_s()
        started = time.perf_counter()
        go.set()
        times = ExchangeTimes()
        outcomes: list[DeviceOutcome] = []
        for _ in processes:
            kind, payload = results.get(timeout=CLIENT_TIMEOUT_S)
            for seconds, status in zip(payload["seconds"], payload["statuses"], strict=True):
                times.add(seconds, status)
            outcomes.extend(DeviceOutcome(**o) for o in payload["outcomes"])
        wall = time.perf_counter() - started
        cpu = server.cpu_s() - cpu_before
    except queue.Empty:
        raise RuntimeError("a client process did not answer in time") from None
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
    return PeakLevel(devices, wall, cpu, peak_rss_mb(pids), times, outcomes)


# --- the report -------------------------------------------------------------------------------


HEADER = (
    f"{'devices':>7} {'records':>7} {'exchanges':>9} {'p50':>6} {'p95':>6} {'p99':>6} "
    f"{'failed':>6} {'retried':>7} {'sync p95':>8} {'wall':>7} {'server CPU':>10} "
    f"{'peak RSS per worker':<20}"
)


def level_line(level: PeakLevel) -> str:
    """One table row."""
    s = level.times.seconds
    sync = [o.sync_s for o in level.outcomes]
    rss = " ".join(f"{mb:.0f}" for mb in level.rss_mb.values())
    return (
        f"{level.devices:>7} {level.records:>7} {len(s):>9} {percentile(s, 0.5):>5.2f}s "
        f"{percentile(s, 0.95):>5.2f}s {percentile(s, 0.99):>5.2f}s "
        f"{level.failed:>6} {level.retried:>7} {percentile(sync, 0.95):>7.2f}s "
        f"{level.wall_s:>6.1f}s {level.cpu_s:>9.1f}s {rss} MB"
    )


def print_config(
    levels: list[PeakLevel], backend: str, processes: int, clients: int, out: TextIO
) -> None:
    """The table of one server configuration and its target lines."""
    print(
        f"evening peak on {backend}, SERVE_PROCESSES={processes}: tablets syncing at once "
        f"(upload + acks + download), driven from {clients} client process(es)",
        file=out,
    )
    print(HEADER, file=out)
    print("-" * len(HEADER), file=out)
    for level in levels:
        print(level_line(level), file=out)
        if level.http_errors or level.failed:
            errors = sorted({o.error for o in level.outcomes if o.error})
            print(
                f"  attempts: {dict(status_summary(level.times.statuses))}; "
                f"devices that did not finish: {level.failed}"
                + (f" ({'; '.join(errors)[:300]})" if errors else ""),
                file=out,
            )
    top = levels[-1]
    p95 = percentile(top.times.seconds, 0.95)
    met = p95 < TARGET_P95_S and top.failed == 0
    print(
        f"target {backend} x{processes}: {top.devices} devices at once, p95 < "
        f"{TARGET_P95_S:.0f} s, 0 failures: p95 {p95:.2f} s ({p95 / TARGET_P95_S:.1f}x the goal), "
        f"{top.failed} failed {'met' if met else 'MISSED'}",
        file=out,
    )
    rss = max((mb for level in levels for mb in level.rss_mb.values()), default=0.0)
    print(
        f"target {backend} x{processes}: server worker under {TARGET_RSS_MB:.0f} MB RSS: "
        f"{rss:.0f} MB {'met' if rss < TARGET_RSS_MB else 'MISSED'}",
        file=out,
    )


def _counts(text: str, name: str, parser: argparse.ArgumentParser) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x]
    except ValueError:
        parser.error(f"{name} takes comma-separated numbers")
    if not counts or min(counts) < 1:
        parser.error(f"{name} must be at least 1")
    return counts


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run the bench; exit 1 if a tablet kept unsent records, 2 for bad arguments."""
    parser = argparse.ArgumentParser(prog="python -m bench peak", description=__doc__)
    parser.add_argument("--levels", default="50,100,200", help="tablets at once, per level")
    parser.add_argument("--households", type=int, default=1, help="households per tablet")
    parser.add_argument("--backends", "--backend", default="sqlite,postgresql")
    cores = os.cpu_count() or 1
    parser.add_argument(
        "--processes",
        default=f"1,{cores}" if cores > 1 else "1",
        help="SERVE_PROCESSES values to run (default 1 and the number of cores)",
    )
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    args = parser.parse_args(argv)
    counts = _counts(args.levels, "--levels", parser)
    process_counts = _counts(args.processes, "--processes", parser)
    backends = [b for b in args.backends.split(",") if b]
    if any(b not in ("sqlite", "postgresql") for b in backends) or not backends:
        parser.error("--backends takes sqlite and/or postgresql")
    if args.households < 1 or args.clients < 1:
        parser.error("--households and --clients must be at least 1")
    failed = False
    for backend in backends:
        for processes in process_counts:
            levels: list[PeakLevel] = []
            with tempfile.TemporaryDirectory(prefix="bench-peak-") as folder:
                with running_server(
                    backend, Path(folder), SERVE_PROCESSES=str(processes)
                ) as server:
                    offset = 0
                    for index, count in enumerate(counts):
                        levels.append(
                            run_level(
                                server,
                                Path(folder) / f"level-{index}",
                                count,
                                args.households,
                                offset,
                                args.clients,
                            )
                        )
                        offset += count
            print_config(levels, backend, processes, args.clients, out)
            print(file=out)
            out.flush()
            failed = failed or any(level.failed for level in levels)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
