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
    args = parser.parse_args(argv)
    if args.kbit <= 0 or args.rtt_ms < 0:
        print("--kbit must be > 0 and --rtt-ms >= 0", file=sys.stderr)
        return 2
    print_report(run(args.kbit, args.rtt_ms), sys.stdout)
    return 0
