"""Field app: the shell's size compressed against the 300 KB goal, and the time to the first form
on a cold cache over a weak link (DESIGN §5, issue 15).

``python -m bench field_app [--kbit 64] [--rtt-ms 300]``. The app is the real one (``create_app``,
served by waitress on loopback, gzip as the blueprint sends it); the link is
:mod:`bench.harness.faultproxy` (bandwidth cap each way, half the round trip added each way).

* **Size**: every file of the asset manifest (what the service worker precaches on install),
  raw, gzip -9 (what the server sends) and brotli when the ``brotli`` module is installed.
* **First form**: the requests a cold browser makes before the first form can be typed in, in
  dependency waves found by reading the files (the page's ``href``/``src``; each module's static
  ``import … from`` and ``import("…")`` but the scanner's; then the shell's ``fetch`` of the
  forms document), each wave in parallel over
  at most six keep-alive connections as a browser does. Modelled as Σ (RTT + wave bytes ÷
  bandwidth) plus one RTT to connect, and measured by actually loading it through the proxy.
* **Install**: the rest of the manifest, fetched the same way (the worker's precache).
* **Wire**: sync body bytes per record, the browser's protocol client (in Debian's Chromium)
  against the CLI device, the same housing records, one sync each after a first one.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import re
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from bench.harness.faultproxy import FaultProxy, LinkProfile, kbit_per_s

GOAL_BYTES = 300 * 1024
#: A browser's connections per host over HTTP/1.1.
CONNECTIONS = 6
PAGE = "/field/"

_HTML_REF = re.compile(r"""(?:href|src)="(/field/[^"]+)\"""")
_STATIC_IMPORT = re.compile(
    r"""^\s*(?:import|export)\s[^;]*?from\s+["'](\.{1,2}/[^"']+)["']""", re.M
)
_FETCH = re.compile(r"""fetch\(\s*["'](/field/[^"']+)["']""")
_DYNAMIC_IMPORT = re.compile(r"""import\(\s*["'](\.{1,2}/[^"']+)["']\s*\)""")
#: Modules imported on demand that a first form does not wait for (the QR scanner).
ON_DEMAND = frozenset({"/field/static/app/scanner.js"})


@dataclass(frozen=True)
class FieldAppReport:
    """What one run measured (bytes, seconds)."""

    files: int
    raw_bytes: int
    gzip_bytes: int
    brotli_bytes: int | None
    first_form_waves: tuple[tuple[str, ...], ...]
    first_form_bytes: int
    first_form_model_s: float
    first_form_measured_s: float
    install_bytes: int
    install_measured_s: float
    kbit: float
    rtt_ms: float


def _resolve(base: str, relative: str) -> str:
    parts = base.split("/")[:-1]
    for piece in relative.split("/"):
        if piece == "..":
            parts.pop()
        elif piece != ".":
            parts.append(piece)
    return "/".join(parts)


def first_form_waves(bodies: dict[str, bytes]) -> list[list[str]]:
    """The URLs a cold browser loads before the first form, grouped by what reveals them."""
    page = bodies[PAGE].decode()
    waves = [[PAGE], sorted({u for u in _HTML_REF.findall(page) if u in bodies})]
    seen = set(waves[0]) | set(waves[1])
    fetched: set[str] = set()
    frontier = waves[1]
    while frontier:
        following: set[str] = set()
        for url in frontier:
            if not url.endswith(".js"):
                continue
            text = bodies[url].decode()
            following |= {_resolve(url, rel) for rel in _STATIC_IMPORT.findall(text)}
            # The engines' modules (form renderer, protocol client) load as the app starts.
            following |= {_resolve(url, rel) for rel in _DYNAMIC_IMPORT.findall(text)} - ON_DEMAND
            fetched |= set(_FETCH.findall(text))
        frontier = sorted(u for u in following if u in bodies and u not in seen)
        seen |= set(frontier)
        if frontier:
            waves.append(frontier)
    last = sorted(u for u in fetched if u in bodies and u not in seen)
    if last:
        waves.append(last)
    return waves


class _Pool:
    """Up to six keep-alive connections through the link, like a browser's per-host pool."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.free: list[http.client.HTTPConnection] = []
        self.lock = threading.Lock()

    def get(self, url: str) -> int:
        with self.lock:
            conn = self.free.pop() if self.free else None
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        conn.request("GET", url, headers={"Accept-Encoding": "gzip"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {url}: HTTP {response.status}")
        with self.lock:
            self.free.append(conn)
        return len(body)

    def wave(self, urls: Sequence[str]) -> int:
        with ThreadPoolExecutor(CONNECTIONS) as workers:
            return sum(workers.map(self.get, urls))

    def close(self) -> None:
        for conn in self.free:
            conn.close()


def _serve(workdir: Path) -> tuple[dict[str, bytes], object, threading.Thread]:
    from waitress.server import create_server

    from server.app import create_app

    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{workdir / 'county.db'}",
            "KEY_DIR": str(workdir / "keys"),
            "MIGRATE_ON_START": False,  # the field app's files need no database
        }
    )
    _, bodies = app.extensions["field_app"]
    server = create_server(app, host="127.0.0.1", port=0, threads=CONNECTIONS)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    return bodies, server, thread


def run(kbit: float = 64.0, rtt_ms: float = 300.0) -> FieldAppReport:
    """Measure the shell and load it cold through a link of ``kbit`` and ``rtt_ms``."""
    try:
        import brotli  # type: ignore[import-not-found]
    except ImportError:
        brotli = None
    with tempfile.TemporaryDirectory(prefix="bench-field-") as tmp:
        bodies, server, thread = _serve(Path(tmp))
        try:
            raw = sum(len(b) for b in bodies.values())
            zipped = {url: len(gzip.compress(b, 9, mtime=0)) for url, b in bodies.items()}
            squeezed = sum(len(brotli.compress(b)) for b in bodies.values()) if brotli else None
            waves = first_form_waves(bodies)
            first = [u for wave in waves for u in wave]
            rest = sorted(set(bodies) - set(first))
            rate = kbit_per_s(kbit)
            first_bytes = sum(zipped[u] for u in first)
            # One RTT to connect, then per wave one RTT and its bytes through the link.
            model = rtt_ms / 1000 + sum(
                rtt_ms / 1000 + sum(zipped[u] for u in wave) / rate for wave in waves
            )
            profile = LinkProfile(delay_ms=rtt_ms / 2, bandwidth_bytes_per_s=rate)
            with FaultProxy(("127.0.0.1", server.effective_port), profile) as proxy:  # type: ignore[attr-defined]
                pool = _Pool(proxy.port)
                started = time.perf_counter()
                for wave in waves:
                    pool.wave(wave)
                first_s = time.perf_counter() - started
                started = time.perf_counter()
                install_bytes = pool.wave(rest)
                install_s = time.perf_counter() - started
                pool.close()
        finally:
            server.close()  # type: ignore[attr-defined]
            thread.join(5)
    return FieldAppReport(
        files=len(bodies),
        raw_bytes=raw,
        gzip_bytes=sum(zipped.values()),
        brotli_bytes=squeezed,
        first_form_waves=tuple(tuple(w) for w in waves),
        first_form_bytes=first_bytes,
        first_form_model_s=model,
        first_form_measured_s=first_s,
        install_bytes=install_bytes,
        install_measured_s=install_s,
        kbit=kbit,
        rtt_ms=rtt_ms,
    )


def print_report(report: FieldAppReport, out: TextIO) -> None:
    """The size table, the first-form waves and the targets."""
    kb = 1024
    print(f"field app shell: {report.files} files in the asset manifest", file=out)
    print(f"  raw    {report.raw_bytes / kb:8.1f} KB", file=out)
    print(f"  gzip   {report.gzip_bytes / kb:8.1f} KB  (what /field/ sends)", file=out)
    if report.brotli_bytes is None:
        print("  brotli        n/a  (the brotli module is not installed)", file=out)
    else:
        print(f"  brotli {report.brotli_bytes / kb:8.1f} KB", file=out)
    ratio = GOAL_BYTES / report.gzip_bytes
    verdict = "met" if report.gzip_bytes <= GOAL_BYTES else "*** MISSED ***"
    print(
        f"target: shell <= 300 KB compressed: {report.gzip_bytes / kb:.1f} KB gzip "
        f"({ratio:.1f}x under the goal) -> {verdict}",
        file=out,
    )
    link = f"{report.kbit:g} kbit/s, {report.rtt_ms:g} ms RTT"
    print(f"first form on a cold cache at {link}:", file=out)
    for number, wave in enumerate(report.first_form_waves, 1):
        print(f"  wave {number}: {', '.join(wave)}", file=out)
    print(
        f"  {report.first_form_bytes / kb:.1f} KB gzip in {len(report.first_form_waves)} waves: "
        f"model {report.first_form_model_s:.1f} s, measured through the proxy "
        f"{report.first_form_measured_s:.1f} s",
        file=out,
    )
    print(
        f"install (the rest of the precache, {report.install_bytes / kb:.1f} KB on the wire): "
        f"{report.install_measured_s:.1f} s more",
        file=out,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the field-app bench and print its figures (0 unless it could not run)."""
    parser = argparse.ArgumentParser(prog="python -m bench field_app", description=__doc__)
    parser.add_argument("--kbit", type=float, default=64.0, help="link speed, kbit/s each way")
    parser.add_argument("--rtt-ms", type=float, default=300.0, help="round-trip time, ms")
    parser.add_argument(
        "--records", type=int, default=50, help="records for the wire comparison (0: skip it)"
    )
    args = parser.parse_args(argv)
    if args.kbit <= 0 or args.rtt_ms < 0:
        print("--kbit must be > 0 and --rtt-ms >= 0", file=sys.stderr)
        return 2
    print_report(run(args.kbit, args.rtt_ms), sys.stdout)
    if args.records > 0:
        print_wire(wire_per_record(args.records), sys.stdout)
    return 0


#: The browser device of the wire comparison, driven through the app's own modules.
_BROWSER_DEVICE = """async ([code, records, round]) => {
  const { generateDeviceKeys, enrol } = await import('/field/static/protocol/enrol.js');
  const { DeviceEngine } = await import('/field/static/protocol/device.js');
  const { MemoryStorage } = await import('/field/static/protocol/memory-storage.js');
  const { syncOnce } = await import('/field/static/protocol/client.js');
  const keys = await generateDeviceKeys();
  const enrolled = await enrol({ baseUrl: location.origin, code, keys, label: 'bench' });
  const storage = new MemoryStorage();
  const engine = new DeviceEngine(storage, enrolled.deviceId);
  const device = { deviceId: enrolled.deviceId, scope: enrolled.scope, keys, server: enrolled.server };
  const exchange = async () => {
    const totals = { up: 0, down: 0, exchanges: 0 };
    for (let more = true; more || (await engine.pendingOps(1)).length; ) {
      const r = await syncOnce({ engine, device, baseUrl: location.origin });
      totals.up += r.bytesUp; totals.down += r.bytesDown; totals.exchanges += 1; more = r.more;
    }
    return totals;
  };
  await exchange();  // the first sync: forms and the village's records, not measured
  for (const { recordId, household, changes } of records) {
    await storage.transaction(async () => {
      const base = await engine.putBase(recordId, changes, []);
      await engine.queueOp((seq, stamp) => ({ device_id: device.deviceId, seq, record_id: recordId,
        form_id: 'housing_safety', form_version: 1, household, round, kind: 'put', changes, base,
        base_revision: 0, hlc: stamp.toText() }), { nowMs: Date.now() });
      await storage.writeRecord({ recordId, formId: 'housing_safety', formVersion: 1, household, round,
        stamps: {}, serverRevision: 0, deleted: false }, changes);
    });
  }
  return exchange();
}"""


@dataclass(frozen=True)
class WireReport:
    """Sync body bytes (both directions) for the same records from each kind of device."""

    records: int
    browser_up: int
    browser_down: int
    browser_exchanges: int
    cli_up: int
    cli_down: int
    cli_exchanges: int


def _housing_records(records: int, village: str) -> list[dict[str, object]]:
    from forms.instruments import load_builtin

    structure = load_builtin("housing_safety").choice_lists["structure"][0].value
    return [
        {
            "household": {"village_code": village, "household_no": f"{9000 + i:04d}"},
            "changes": {
                "appraisal_grade": "C",
                "structure": structure,
                "renovation_method": "拆除重建",
                "build_year": 1990 + i % 30,
                "storeys": 1 + i % 3,
                "floor_area": 60.5 + i,
            },
        }
        for i in range(records)
    ]


def wire_per_record(records: int = 50) -> WireReport:
    """Create ``records`` housing records on a CLI device and on a browser device (Chromium,
    the app's protocol modules), each enrolled and synced once before; then one sync each (until
    delivered): the sync bodies' bytes up and down. Both talk to one real county server."""
    import uuid

    from playwright.sync_api import sync_playwright

    from bench.harness.county_server import start_county_server
    from village_client_stub.enrollment import enroll
    from village_client_stub.records import RecordEditor
    from village_client_stub.store import DeviceStore
    from village_client_stub.sync_client import SyncClient

    village = "530102001201"
    round_ = "2026-annual"
    made = _housing_records(records, village)
    with tempfile.TemporaryDirectory(prefix="bench-field-wire-") as tmp:
        county = start_county_server(f"sqlite:///{tmp}/county.db", Path(tmp) / "county")
        try:
            admin = county.admin()
            store = DeviceStore.create(Path(tmp) / "tablet.db")
            enroll(store, county.url, admin.issue_code(village))
            SyncClient(store).sync()
            editor = RecordEditor(store)
            for record in made:
                editor.fill(
                    "housing_safety",
                    record["changes"],  # type: ignore[arg-type]
                    household=record["household"],  # type: ignore[arg-type]
                    round=round_,
                )
            cli = SyncClient(store).sync()
            store.close()
            # The browser's households differ (a second device of the same households would
            # be a duplicate-household conflict, which costs the reply extra bytes).
            for i, record in enumerate(made):
                record["household"] = {"village_code": village, "household_no": f"{8000 + i:04d}"}
                record["recordId"] = str(uuid.uuid4())
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
                try:
                    page = browser.new_page()
                    page.goto(f"{county.url}/field/ping")
                    totals = page.evaluate(
                        _BROWSER_DEVICE, [admin.issue_code(village), made, round_]
                    )
                finally:
                    browser.close()
        finally:
            county.stop()
    return WireReport(
        records=records,
        browser_up=totals["up"],
        browser_down=totals["down"],
        browser_exchanges=totals["exchanges"],
        cli_up=cli.bytes_up,
        cli_down=cli.bytes_down,
        cli_exchanges=cli.exchanges,
    )


def print_wire(report: WireReport, out: TextIO) -> None:
    """Bytes per record on the wire, browser against the CLI device."""
    n = report.records
    browser = (report.browser_up + report.browser_down) / n
    cli = (report.cli_up + report.cli_down) / n
    print(f"bytes per record on the wire ({n} housing records, one sync each):", file=out)
    print(
        f"  browser  {browser:7.1f} B/record  (up {report.browser_up / n:.1f}, down "
        f"{report.browser_down / n:.1f}; {report.browser_exchanges} exchanges; deflate-raw)",
        file=out,
    )
    print(
        f"  CLI      {cli:7.1f} B/record  (up {report.cli_up / n:.1f}, down "
        f"{report.cli_down / n:.1f}; {report.cli_exchanges} exchanges)",
        file=out,
    )
    print(f"  browser / CLI = {browser / cli:.2f}", file=out)
