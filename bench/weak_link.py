"""Weak link: 1,000 records through 64 kbit/s, 300 ms RTT and drops that land.

DESIGN §5: the records of realistic households (the six built-in instruments,
``forms.instruments.samples``) must finish within 1.5× the byte-ideal time, with zero loss and
zero duplicates. The bench starts a real county server process (temporary SQLite file), enrols
a real device, fills the records on it offline, then runs ``SyncClient.sync()`` — the code of
``village-device sync``, real backoff included — through the fault proxy's village-link profile
(``bench.harness.faultproxy.LinkProfile.village_link``).

The **ideal time** is measured in the same run, on a second device with the same records
synced over the same link without drops, against a fresh server of its own (so it starts from
what the drop run started from): the bytes that drop-free sync delivered (requests up,
replies down, HTTP headers included) divided by the link's bandwidth, plus one round trip per
exchange it needed. Requests and replies take turns on the link, so the two directions are
added. Everything else the drop run spends — the server's work, waiting after a drop, bytes
resent after a drop — is the overhead the ratio measures (resent bytes are not in the ideal).

The proxy cuts every live connection every ~``--cut-every`` seconds (uniform 0.5-1.5×, default
8 s): an exchange takes ~9 s on this link and the client opens a fresh connection for each, so a
cut interval of ~20 s measured from a connection's start would seldom land. The cuts that landed
are printed.

The client's timeline of every exchange (bytes, time to the reply's head, the server's own
time from its ``Server-Timing`` header, pauses) splits each run's wall time into transfer,
round trips, server, lost exchanges, pauses and the device's own work; the server's CPU time
is printed beside it, since the machine is shared (``--timeline`` prints every exchange).

Afterwards each server is asked, through the admin API, whether every record arrived exactly
once: the bench exits 1 if a record is missing or doubled (lost data), and prints ``MISSED``
(exit 0) if only the time target is missed.

``python -m bench weak_link [--records 1000] [--seed 1] [--cut-every 8] [--timeline]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TextIO

from bench.harness.county_server import CountyServer, start_county_server
from bench.harness.faultproxy import FaultProxy, LinkProfile, ProxyCounters
from forms.instruments.samples import DEFAULT_MONITORING_LINE
from village_client_stub.enrollment import enroll
from village_client_stub.simulator import INSTRUMENTS, AdminSession, fill_households
from village_client_stub.store import DeviceStore
from village_client_stub.sync_client import Backoff, SyncClient, SyncFailed, SyncReport
from village_client_stub.transport import HttpTransport

VILLAGE = "530102001201"
TARGET_RATIO = 1.5


@dataclass
class LinkRun:
    """One sync through the proxy: the client's report, the proxy's counters, the wall time."""

    label: str
    records: int
    elapsed_s: float
    counters: ProxyCounters
    report: SyncReport
    bandwidth: float

    rtt_s: float = 0.0
    #: CPU-seconds the server process used during the run (the machine is shared: a loaded
    #: machine stretches the server's part of the wall time, not the link's).
    server_cpu_s: float = 0.0

    @property
    def byte_s(self) -> float:
        """Bytes delivered both ways ÷ bandwidth."""
        return (self.counters.bytes_up + self.counters.bytes_down) / self.bandwidth

    @property
    def ideal_s(self) -> float:
        """This run's bytes ÷ bandwidth + one round trip per exchange (meant for a drop-free run)."""
        return self.byte_s + self.rtt_s * self.report.exchanges

    def breakdown(self) -> dict[str, float]:
        """Where the wall time went, summed over the client's exchange timeline (seconds).

        ``transfer``: each answered exchange's bytes ÷ bandwidth; ``round trips``: one per
        answered exchange; ``server``: the server's own time (``Server-Timing``); ``link
        other``: what is left of answered exchanges (pacing granularity, slow start of the
        reply); ``lost``: exchanges that died on the way (cut, timed out); ``pauses``: backoff
        after failures and the server's hints; ``device``: the rest of the wall time, the
        device's own work between exchanges (sealing, applying replies, its SQLite), of which
        the client measures preparing each request and applying each reply.
        """
        answered = [t for t in self.report.timeline if t.outcome == "ok"]
        lost = [t for t in self.report.timeline if t.outcome != "ok"]
        transfer = sum((t.bytes_up + t.bytes_down) / self.bandwidth for t in answered)
        server = sum(t.server_s or 0.0 for t in answered)
        round_trips = self.rtt_s * len(answered)
        other = sum(t.elapsed_s for t in answered) - transfer - server - round_trips
        lost_s = sum(t.elapsed_s for t in lost)
        pauses = sum(t.pause_s for t in self.report.timeline)
        exchanges_s = sum(t.elapsed_s for t in self.report.timeline)
        prepare = sum(t.prepare_s for t in self.report.timeline)
        apply = sum(t.apply_s for t in self.report.timeline)
        return {
            "transfer": transfer,
            "round trips": round_trips,
            "server": server,
            "link other": other,
            "lost": lost_s,
            "pauses": pauses,
            "device": self.elapsed_s - exchanges_s - pauses,
            "of which preparing requests": prepare,
            "applying replies": apply,
        }


def ratio(run_: LinkRun, ideal: LinkRun) -> float:
    """Wall time of ``run_`` ÷ the ideal time of the drop-free run ``ideal``."""
    return run_.elapsed_s / ideal.ideal_s if ideal.ideal_s else float("inf")


def fill_exactly(store: DeviceStore, records: int) -> list[str]:
    """Fill sample households (six instruments each, the last one partly) up to ``records``."""
    full, rest = divmod(records, len(INSTRUMENTS))
    ids = fill_households(store, VILLAGE, range(full))
    if rest:
        ids += fill_households(store, VILLAGE, [full], form_ids=INSTRUMENTS[:rest])
    return ids


def sync_through(
    server: CountyServer, store: DeviceStore, profile: LinkProfile, label: str, records: int
) -> LinkRun:
    """Sync ``store`` to the end through a proxy with ``profile``; time it and count bytes."""
    host, port = server.url.removeprefix("http://").split(":")
    with FaultProxy((host, int(port)), profile) as proxy:
        client = SyncClient(
            store,
            HttpTransport(f"http://127.0.0.1:{proxy.port}", timeout=60),
            max_failures=15,
            # The client's schedule (1 s, 2 s, 4 s ...) with a 30 s cap: a drop of this link
            # heals at once, and a bench must not wait minutes for a server that went away.
            backoff=Backoff(cap_s=30.0),
        )
        cpu_before = server.cpu_s()
        started = time.monotonic()
        try:
            report = client.sync()
        except SyncFailed as exc:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"the county server process exited (code {server.process.returncode})"
                ) from exc
            raise
        elapsed = time.monotonic() - started
        cpu_s = server.cpu_s() - cpu_before
        counters = proxy.counters()
    assert profile.bandwidth_bytes_per_s is not None  # both profiles cap the link
    return LinkRun(
        label,
        records,
        elapsed,
        counters,
        report,
        profile.bandwidth_bytes_per_s,
        rtt_s=2 * profile.delay_ms / 1000,
        server_cpu_s=cpu_s,
    )


def check_arrivals(admin: AdminSession, record_ids: Sequence[str]) -> list[str]:
    """Problems with what reached the server: missing, unexpected or doubled records."""
    seen: list[str] = []
    households: Counter[tuple[str, str]] = Counter()
    while True:
        page = admin.get(f"/api/v1/records?village={VILLAGE}&limit=1000&offset={len(seen)}")
        for item in page["items"]:
            seen.append(item["record_id"])
            households[(item["form_id"], item["household_no"])] += 1
        if len(seen) >= page["total"] or not page["items"]:
            break
    problems = []
    missing = set(record_ids) - set(seen)
    extra = set(seen) - set(record_ids)
    doubled = [k for k, n in households.items() if n > 1]
    if missing:
        problems.append(f"{len(missing)} records missing on the server")
    if extra:
        problems.append(f"{len(extra)} unexpected records on the server")
    if len(seen) != len(set(seen)) or doubled:
        problems.append(f"{len(doubled)} households recorded twice")
    return problems


def _device(server: CountyServer, admin: AdminSession, path: Path) -> DeviceStore:
    store = DeviceStore.create(path)
    enroll(store, server.url, admin.issue_code(VILLAGE), transport=HttpTransport(server.url))
    return store


def run(
    records: int, seed: int, cut_every_s: float, workdir: Path
) -> tuple[list[LinkRun], list[str]]:
    """Sync ``records`` through the link with drops, then without (the ideal), each run on a
    fresh server of its own.

    One server for both runs made the drop-free run another run altogether: its device, in the
    same village, downloaded the first device's 1,000 records and re-created the same
    households (1,000 duplicate-household conflicts to note and settle), which is not what the
    ideal of the drop run is meant to measure.
    """
    runs: list[LinkRun] = []
    problems: list[str] = []
    village = LinkProfile.village_link(seed)
    drops = LinkProfile(
        delay_ms=village.delay_ms,
        bandwidth_bytes_per_s=village.bandwidth_bytes_per_s,
        cut_every_s=cut_every_s,
        seed=seed,
    )
    steady = LinkProfile(
        delay_ms=village.delay_ms, bandwidth_bytes_per_s=village.bandwidth_bytes_per_s
    )
    profiles = [("village link (drops)", drops), ("same link, no drops", steady)]
    for index, (label, profile) in enumerate(profiles):
        folder = workdir / f"run-{index}"
        folder.mkdir()
        server = start_county_server(f"sqlite:///{folder / 'county.db'}", folder / "county")
        try:
            admin = server.admin()
            admin.set_monitoring_line(VILLAGE, date.today().year, DEFAULT_MONITORING_LINE)
            with _device(server, admin, folder / "device.db") as store:
                record_ids = fill_exactly(store, records)
                run_ = sync_through(server, store, profile, label, len(record_ids))
                runs.append(run_)
                if store.pending_ops():
                    problems.append(f"{label}: {len(store.pending_ops())} ops left in the outbox")
            problems += [f"{label}: {p}" for p in check_arrivals(admin, record_ids)]
        finally:
            server.stop()
    return runs, problems


def print_timeline(run_: LinkRun, out: TextIO) -> None:
    """One line per exchange of ``run_``: ops, bytes, times, the budget after it, the outcome."""
    print(f"exchange by exchange, {run_.label}:", file=out)
    print(
        f"{'#':>3} {'at':>7} {'ops':>4} {'up':>7} {'down':>7} {'transfer':>8} {'wait':>6} "
        f"{'total':>6} {'server':>6} {'pause':>6} {'budget':>7} ahead  outcome",
        file=out,
    )
    for t in run_.report.timeline:
        transfer = (t.bytes_up + t.bytes_down) / run_.bandwidth
        server = "-" if t.server_s is None else f"{t.server_s:.2f}"
        print(
            f"{t.index:>3} {t.started_s:>6.1f}s {t.ops:>4} {t.bytes_up:>7,} {t.bytes_down:>7,} "
            f"{transfer:>7.2f}s {t.wait_s:>5.2f}s {t.elapsed_s:>5.2f}s {server:>6} "
            f"{t.pause_s:>5.1f}s {t.budget_bytes:>7,} {'yes' if t.cut_ahead else 'no':>5}  "
            f"{t.outcome}",
            file=out,
        )


def print_report(
    runs: Sequence[LinkRun],
    problems: Sequence[str],
    out: TextIO,
    cut_every_s: float,
    *,
    timeline: bool = False,
) -> None:
    """The table: time, bytes, ideal time and ratio per run; the cuts that landed; the target."""
    low, high = 0.5 * cut_every_s, 1.5 * cut_every_s
    print(
        f"weak link: 64 kbit/s (8,000 B/s each way), 300 ms RTT; every live connection cut "
        f"every ~{cut_every_s:g} s (uniform {low:g}-{high:g} s)",
        file=out,
    )
    main_run, clean = runs[0], runs[1]
    header = (
        f"{'run':<22} {'records':>7} {'time':>8} {'bytes up':>10} {'bytes down':>11} "
        f"{'ideal':>8} {'ratio':>6} {'drops':>5} {'retries':>7} {'exchanges':>9}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in runs:
        print(
            f"{r.label:<22} {r.records:>7} {r.elapsed_s:>7.1f}s {r.counters.bytes_up:>10,} "
            f"{r.counters.bytes_down:>11,} {clean.ideal_s:>7.1f}s {ratio(r, clean):>5.2f}x "
            f"{r.counters.cuts:>5} {r.report.failures:>7} {r.report.exchanges:>9}",
            file=out,
        )
    per_record = (clean.counters.bytes_up + clean.counters.bytes_down) / clean.records
    print(
        f"ideal: drop-free bytes ({per_record:.0f} B per record both ways) / bandwidth = "
        f"{clean.byte_s:.1f} s, + one {clean.rtt_s:.1f} s round trip per exchange "
        f"({clean.report.exchanges}) = {clean.ideal_s:.1f} s",
        file=out,
    )
    for r in runs:
        parts = ", ".join(f"{name} {value:.1f} s" for name, value in r.breakdown().items())
        server_s = sum(t.server_s or 0.0 for t in r.report.timeline)
        print(
            f"where the time went, {r.label}: {parts}; server CPU {r.server_cpu_s:.1f} s "
            f"(its Server-Timing sum {server_s:.1f} s)",
            file=out,
        )
    if timeline:
        for r in runs:
            print_timeline(r, out)
    print(
        f"cuts that landed on the drop run: {main_run.counters.cuts}"
        + ("" if main_run.counters.cuts else " (none: the ratio measured no drop)"),
        file=out,
    )
    value = ratio(main_run, clean)
    mark = "met" if value <= TARGET_RATIO else "MISSED"
    print(
        f"target: 1,000 records within {TARGET_RATIO}x the ideal time, zero loss, zero "
        f"duplicates: {value:.2f}x {mark}",
        file=out,
    )
    if problems:
        for problem in problems:
            print(f"DATA PROBLEM: {problem}", file=out)
    else:
        print("every record arrived exactly once; outbox empty", file=out)


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run the bench; exit 1 only if data was lost or doubled, 2 for bad arguments."""
    parser = argparse.ArgumentParser(prog="python -m bench weak_link", description=__doc__)
    parser.add_argument("--records", type=int, default=1000, help="records to sync")
    parser.add_argument("--seed", type=int, default=1, help="seed of the drop schedule")
    parser.add_argument(
        "--cut-every", type=float, default=8.0, help="mean seconds between cuts (0.5-1.5x)"
    )
    parser.add_argument("--timeline", action="store_true", help="print every exchange of both runs")
    args = parser.parse_args(argv)
    if args.records < 1:
        parser.error("--records must be at least 1")
    if args.cut_every <= 0:
        parser.error("--cut-every must be > 0")
    with tempfile.TemporaryDirectory(prefix="weak-link-") as folder:
        runs, problems = run(args.records, args.seed, args.cut_every, Path(folder))
    print_report(runs, problems, out, args.cut_every, timeline=args.timeline)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
