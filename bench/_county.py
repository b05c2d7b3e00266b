"""What the server benches share: a real county server process, its CPU and memory, timed syncs.

:func:`start_server` runs ``python -m server serve`` on a free loopback port (127.0.0.1 only)
with a temporary SQLite file or a fresh PostgreSQL schema, and returns once it listens, with the
admin password it printed at first start. Benches must not import ``tests/``, so this is the
bench's own variant of :mod:`bench.harness.county_server`, plus what a load bench
needs: the server's CPU-seconds and resident memory from ``/proc`` (Linux), and a transport that
times every ``/sync`` exchange.

The module name starts with ``_`` so ``python -m bench`` does not take it for a bench.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness.county_server import start_county_server
from server.settings import SETTINGS_BY_KEY
from village_client_stub.simulator import AdminSession
from village_client_stub.transport import HttpResponse, HttpTransport

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0
POSTGRES_URL = os.environ.get(
    "VILLAGE_SYNC_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_SERVE_THREADS = SETTINGS_BY_KEY["SERVE_THREADS"].default


@dataclass
class ServerProcess:
    """A running ``python -m server serve``."""

    url: str
    admin_password: str
    database_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    db_file: Path | None
    #: The environment the server runs with (for a ``python -m server`` command on its data).
    env: dict[str, str]

    def admin(self) -> AdminSession:
        """A fresh admin session over HTTP."""
        return AdminSession(HttpTransport(self.url), "admin", self.admin_password)

    def cpu_s(self) -> float:
        """User + system CPU-seconds the server has used so far: every thread of its process
        and of its worker processes (``SERVE_PROCESSES`` > 1 forks them)."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # a process that ended meanwhile
            # Fields after the command name: state [0], ppid [1], utime [11], stime [12].
            if stat.parent.name == str(self.process.pid) or fields[1] == str(self.process.pid):
                total += int(fields[11]) + int(fields[12])
        return total / _CLOCK_TICKS

    def rss_mb(self) -> tuple[float, float]:
        """(current, peak) resident memory of the server process in MB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        now = re.search(r"VmRSS:\s+(\d+) kB", status)
        peak = re.search(r"VmHWM:\s+(\d+) kB", status)
        return (
            int(now.group(1)) / 1024 if now else 0.0,
            int(peak.group(1)) / 1024 if peak else 0.0,
        )

    def log(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """Terminate the process and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)


def database_url(backend: str, workdir: Path) -> tuple[str, Path | None]:
    """A fresh database for ``backend`` (``sqlite`` or ``postgresql``) and its file, if any.

    PostgreSQL gets a new schema in the ``test`` database (dropped by :func:`drop_schema`), named
    through the ``options`` connection parameter, so nothing else in that database is touched.
    """
    if backend == "sqlite":
        path = workdir / "county.db"
        return f"sqlite:///{path}", path
    if backend != "postgresql":
        raise ValueError(f"unknown backend {backend!r}")
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(POSTGRES_URL), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}", None


def drop_schema(url: str) -> None:
    """Drop the PostgreSQL schema :func:`database_url` made (no-op for SQLite)."""
    match = re.search(r"search_path%3D(bench_[0-9a-f]+)", url)
    if not match:
        return
    import psycopg

    with psycopg.connect(_libpq(POSTGRES_URL), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{match.group(1)}" CASCADE')


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def start_server(
    url: str, workdir: Path, db_file: Path | None = None, **settings: str
) -> ServerProcess:
    """Start a server on 127.0.0.1 with ``url``; ``settings`` are ``VILLAGE_SYNC_<NAME>`` values.

    The start-up is :func:`bench.harness.county_server.start_county_server`'s, with the server's
    default thread count (a load bench measures the server as a county runs it). Raises
    RuntimeError (with the server's output) if it does not come up.
    """
    settings = {"SERVE_THREADS": str(DEFAULT_SERVE_THREADS), **settings}
    server = start_county_server(url, workdir, **settings)
    return ServerProcess(
        server.url, server.admin_password, url, server.process, server.log_path, db_file, server.env
    )


@contextmanager
def running_server(backend: str, workdir: Path, **settings: str) -> Iterator[ServerProcess]:
    """A server on a fresh ``backend`` database for the block; stopped and cleaned afterwards."""
    url, db_file = database_url(backend, workdir)
    try:
        server = start_server(url, workdir / "server", db_file, **settings)
        try:
            yield server
        finally:
            server.stop()
    finally:
        drop_schema(url)


class ExchangeTimes:
    """Wall-clock seconds of every ``/sync`` exchange, collected from many threads."""

    def __init__(self) -> None:
        """Start empty."""
        self._lock = threading.Lock()
        self.seconds: list[float] = []
        self.statuses: list[int] = []

    def add(self, seconds: float, status: int) -> None:
        """Record one exchange (its HTTP status; 0 when the connection failed)."""
        with self._lock:
            self.seconds.append(seconds)
            self.statuses.append(status)

    def transport_factory(self) -> Callable[[str], HttpTransport]:
        """A ``Simulator`` transport factory whose transports report here."""
        return lambda url: TimedTransport(url, self)


class TimedTransport(HttpTransport):
    """An :class:`HttpTransport` that times its ``/sync`` requests into an :class:`ExchangeTimes`."""

    def __init__(self, base_url: str, times: ExchangeTimes, **kwargs: Any) -> None:
        """As :class:`HttpTransport`; ``times`` collects the exchanges."""
        super().__init__(base_url, **kwargs)
        self._times = times

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> HttpResponse:
        """Send as the parent does; a ``/sync`` request is timed (and counted when it fails)."""
        if not path.endswith("/sync"):
            return super().request(method, path, body, headers, **kwargs)
        started = time.perf_counter()
        try:
            response = super().request(method, path, body, headers, **kwargs)
        except Exception:
            self._times.add(time.perf_counter() - started, 0)
            raise
        self._times.add(time.perf_counter() - started, response.status)
        return response


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0.95 → p95) of ``values``, nearest-rank; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    """The median, 0 when empty."""
    return statistics.median(values) if values else 0.0


def timed_gets(admin: AdminSession, path: str, calls: int) -> list[float]:
    """Wall seconds of ``calls`` sequential admin GETs of ``path`` (each must answer 2xx)."""
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        admin.get(path)
        seconds.append(time.perf_counter() - started)
    return seconds


def directory_bytes(paths: Sequence[Path]) -> int:
    """Bytes of the files that exist among ``paths``."""
    return sum(p.stat().st_size for p in paths if p.exists())


def sqlite_files(db_file: Path) -> list[Path]:
    """The database file and its ``-wal`` and ``-shm`` companions."""
    return [db_file, Path(f"{db_file}-wal"), Path(f"{db_file}-shm")]


def postgres_size(url: str) -> int:
    """Bytes of the tables (indexes and TOAST included) in the bench's PostgreSQL schema."""
    match = re.search(r"search_path%3D(bench_[0-9a-f]+)", url)
    if not match:
        return 0
    import psycopg

    with psycopg.connect(_libpq(POSTGRES_URL)) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r'",
            (match.group(1),),
        ).fetchone()
    return int(row[0]) if row else 0


def status_summary(statuses: Sequence[int]) -> Mapping[str, int]:
    """Count of exchanges by outcome: ``ok`` (2xx), ``http <code>``, ``connection failed``."""
    out: dict[str, int] = {}
    for status in statuses:
        key = (
            "ok"
            if 200 <= status < 300
            else ("connection failed" if status == 0 else f"http {status}")
        )
        out[key] = out.get(key, 0) + 1
    return out
