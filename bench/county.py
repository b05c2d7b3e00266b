"""County size: bulk load, dashboard and records API latency, export, a village's first download.

DESIGN §5 and issue 18: a county of 100,000 households across 200 villages; the dashboard over
100,000 households answers with p95 < 1 s (read from the maintained household indicator rows);
a village's first download of 500 households is ≤ 1 MB. The bench starts a real county server
(127.0.0.1) on a fresh database, writes ``--villages`` × ``--households`` sample households (all
six instruments, one in seven a problem household, villages spread over townships of 20) to a
JSON Lines file and loads it with ``python -m server load-households FILE`` — the documented bulk
path, which applies every record through the ingest rules (validation, merge state, change log,
indicator rows in the same transaction) without the transport. It then times ``--calls`` calls
each of the dashboard API (county and village level), the dashboard web page and the records
filter ``GET /api/v1/records?indicator=housing&failing=true`` and the 动态清零 board
``GET /api/v1/board?level=township``, measures the database's size,
exports every instrument of the whole county as CSV through the API, and enrols two fresh
tablets in the last village loaded to time its first download: straight to the server on
loopback (the server's work), then through the fault proxy capped at 1 Mbit/s each way (bytes
both ways, records, exchanges, seconds, and the ratio to the byte-ideal floor: those bytes ÷
the bandwidth).

The default is bounded (10 villages × 20 households); the full county is
``python -m bench county --villages 200 --households 500``. ``--copies N`` copies the loaded
county N times into new townships by SQL (households, records and indicator rows) before the
timings, so ``--villages 20 --households 500 --copies 9`` times a 100,000-household county of
200 villages after loading 10,000 through the bulk path (the load figure is then the 10,000's).

``python -m bench county [--villages 10] [--households 20] [--calls 20] [--backend sqlite]
[--copies 0]``.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bench._county import (
    POSTGRES_URL,
    ServerProcess,
    directory_bytes,
    percentile,
    postgres_size,
    running_server,
    sqlite_files,
    timed_gets,
)
from bench.harness.faultproxy import FaultProxy, LinkProfile
from forms.instruments.samples import (
    DEFAULT_MONITORING_LINE,
    PROBLEM_CASES,
    problem_household,
    sample_household,
)
from village_client_stub.enrollment import enroll
from village_client_stub.store import DeviceStore
from village_client_stub.sync_client import SyncClient
from village_client_stub.transport import HttpTransport

TARGET_P95_S = 1.0
TARGET_DOWNLOAD_BYTES = 1_000_000
TARGET_HOUSEHOLDS = 100_000
#: The load goal: a county's 100,000 households (600,000 records) within an hour.
TARGET_LOAD_S = 3600.0
#: The whole county's export: every instrument as CSV within ten minutes.
TARGET_EXPORT_S = 600.0
LINK_BYTES_PER_S = 1_000_000 / 8
ROUND = "2026-annual"
COUNTY = "530102"
VILLAGES_PER_TOWNSHIP = 20
DASHBOARD = "/api/v1/indicators?level=county"
DASHBOARD_VILLAGES = "/api/v1/indicators?level=village&limit=50"
DASHBOARD_PAGE = "/"
FAILING_HOUSING = "/api/v1/records?indicator=housing&failing=true"
#: The 动态清零 board by township (read from the same maintained rows, streamed); timed beside
#: the dashboard, not counted in its p95 target.
BOARD = "/api/v1/board?level=township&limit=50"
FORMS = (
    "household_roster",
    "housing_safety",
    "drinking_water",
    "compulsory_education",
    "medical_insurance",
    "monitoring_household",
)


def village_code(index: int) -> str:
    """The ``index``-th village of the bench county: 20 villages to a township."""
    township, village = divmod(index, VILLAGES_PER_TOWNSHIP)
    return f"{COUNTY}{township + 1:03d}{village + 201:03d}"


def write_households(path: Path, villages: int, households: int) -> int:
    """Write the sample county as JSON Lines (one household a line); returns the records."""
    cases = list(PROBLEM_CASES)
    records = 0
    with path.open("w", encoding="utf-8") as out:
        for v in range(villages):
            village = village_code(v)
            for h in range(households):
                seed = v * households + h
                if seed % 7 == 3:
                    data = problem_household(cases[seed % len(cases)], seed, village_code=village)
                else:
                    data = sample_household(seed, village_code=village)
                records += len(data)
                line = {
                    "village_code": village,
                    "household_no": f"{village}{h + 1:04d}",
                    "round": ROUND,
                    "records": data,
                }
                out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
    return records


def load(server: ServerProcess, path: Path) -> tuple[float, str]:
    """Run ``python -m server load-households`` on the server's database; (seconds, output)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "server", "load-households", str(path)],
        env=server.env,
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,  # the report; its progress (stderr) shows on the bench's
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"load-households failed:\n{done.stdout}")
    return seconds, done.stdout.strip()


def _copy_statements(
    backend: str, columns: dict[str, list[str]], townships: int, copy: int
) -> list[str]:
    """SQL copying the households of the first ``townships`` townships into ``townships`` new
    ones (copy number ``copy``): households, records, indicator rows and village sums, with new
    codes and ids. ``columns`` names the columns of the two indicator tables."""
    village_columns = columns["village_indicators"]
    offset = copy * townships
    township = "CAST(substr(village_code, 7, 3) AS INTEGER)"
    if backend == "sqlite":
        village = (
            f"substr(village_code, 1, 6) || printf('%03d', {township} + {offset}) "
            "|| substr(village_code, 10, 3)"
        )
        new_id = "lower(hex(randomblob(16)))"
    else:
        village = (
            f"substr(village_code, 1, 6) || lpad(({township} + {offset})::text, 3, '0') "
            "|| substr(village_code, 10, 3)"
        )
        new_id = f"md5(record_id || '/{copy}')"
    number = f"replace(household_no, village_code, {village})"
    if backend == "sqlite":
        picture = f"json_set(picture, '$.village_code', {village}, '$.household_no', {number})"
    else:
        picture = (
            f"jsonb_set(jsonb_set(picture, '{{village_code}}', to_jsonb({village})), "
            f"'{{household_no}}', to_jsonb({number}))"
        )
    original = f"{township} <= {townships}"
    values = {"village_code": village, "household_no": number, "picture": picture}
    household_columns = columns["household_indicators"]
    return [
        "INSERT INTO households (village_code, household_no, county_code, revision, created_at, "
        f"created_by_device) SELECT {village}, {number}, county_code, revision, created_at, "
        f"created_by_device FROM households WHERE {original}",
        "INSERT INTO records (record_id, form_id, form_version, village_code, county_code, "
        "household_no, round, revision, deleted, state, data, created_at, updated_at) "
        f"SELECT {new_id}, form_id, form_version, {village}, county_code, {number}, round, "
        f"revision, deleted, state, data, created_at, updated_at FROM records WHERE {original}",
        f"INSERT INTO household_indicators ({', '.join(household_columns)}) "
        f"SELECT {', '.join(values.get(c, c) for c in household_columns)} "
        "FROM household_indicators "
        f"WHERE {original}",
        f"INSERT INTO village_indicators ({', '.join(village_columns)}) "
        f"SELECT {', '.join(village if c == 'village_code' else c for c in village_columns)} "
        f"FROM village_indicators WHERE {original}",
    ]


def replicate(server: ServerProcess, backend: str, villages: int, copies: int) -> float:
    """Copy the loaded county ``copies`` times into new townships by SQL; returns seconds.

    A stand-in for loading more through the bulk path when the machine has no hour to spare:
    the copies are real rows (records, households, indicator rows), so every timed query after
    it reads a county of the copied size.
    """
    townships = -(-villages // VILLAGES_PER_TOWNSHIP)
    started = time.perf_counter()
    if backend == "sqlite":
        import sqlite3

        assert server.db_file is not None
        connection: Any = sqlite3.connect(server.db_file, timeout=60)
        columns = {
            table: [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
            for table in ("household_indicators", "village_indicators")
        }
    else:
        import psycopg

        schema = re.search(r"search_path%3D(\w+)", server.database_url)
        connection = psycopg.connect(POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://"))
        connection.execute(f'SET search_path TO "{schema.group(1) if schema else "public"}"')
        columns = {
            table: [
                row[0]
                for row in connection.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                    "AND table_schema = current_schema() ORDER BY ordinal_position",
                    (table,),
                )
            ]
            for table in ("household_indicators", "village_indicators")
        }
    with connection:
        for copy in range(1, copies + 1):
            for statement in _copy_statements(backend, columns, townships, copy):
                connection.execute(statement)
    connection.close()
    return time.perf_counter() - started


class WebSession:
    """A browser-like session of the admin web pages: login form, CSRF token, cookie."""

    def __init__(self, url: str, username: str, password: str) -> None:
        """Sign in through the login page. Raises RuntimeError when the login is refused."""
        self.url = url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        page = self.opener.open(f"{url}/login", timeout=60).read().decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        form = {
            "username": username,
            "password": password,
            "csrf_token": token.group(1) if token else "",
        }
        answer = (
            self.opener.open(f"{url}/login", urllib.parse.urlencode(form).encode(), timeout=60)
            .read()
            .decode()
        )
        if 'name="password"' in answer and "退出" not in answer:
            raise RuntimeError("the web login was refused")

    def timed_gets(self, path: str, calls: int) -> list[float]:
        """Wall seconds of ``calls`` sequential GETs of the page ``path`` (each must answer 200)."""
        seconds = []
        for _ in range(calls):
            started = time.perf_counter()
            with self.opener.open(f"{self.url}{path}", timeout=120) as response:
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"{path} answered {response.status}")
            seconds.append(time.perf_counter() - started)
        return seconds


def export_county(server: ServerProcess, token_headers: dict[str, str]) -> tuple[float, int]:
    """Export every instrument of the county as CSV through the API; (seconds, bytes)."""
    started = time.perf_counter()
    size = 0
    for form_id in FORMS:
        request = urllib.request.Request(
            f"{server.url}/api/v1/exports/{form_id}.csv?village={COUNTY}", headers=token_headers
        )
        with urllib.request.urlopen(request, timeout=3600) as response:
            while chunk := response.read(1 << 20):
                size += len(chunk)
    return time.perf_counter() - started, size


@dataclass(frozen=True)
class FirstDownload:
    """A fresh tablet's first sync of its village: what crossed the wire and how long it took."""

    bytes_up: int
    bytes_down: int
    records: int
    exchanges: int
    seconds: float


def first_download(
    server: ServerProcess,
    admin: Any,
    village: str,
    store_path: Path,
    bandwidth: float | None = None,
) -> FirstDownload:
    """Enrol a fresh tablet in ``village`` and time its first sync, straight to the server
    (``bandwidth`` None) or through the fault proxy capped at ``bandwidth`` bytes/s each way
    (no delay, no cuts); bytes are the proxy's count of what it delivered."""
    host, port = server.url.removeprefix("http://").split(":")
    with (
        DeviceStore.create(store_path) as store,
        FaultProxy((host, int(port)), LinkProfile(bandwidth_bytes_per_s=bandwidth)) as proxy,
    ):
        enroll(
            store,
            server.url,
            admin.issue_code(village),
            transport=HttpTransport(server.url, timeout=600),
            download=False,
        )
        started = time.perf_counter()
        report = SyncClient(
            store, HttpTransport(f"http://127.0.0.1:{proxy.port}", timeout=600)
        ).sync()
        seconds = time.perf_counter() - started
        counters = proxy.counters()
    return FirstDownload(
        counters.bytes_up, counters.bytes_down, report.records_received, report.exchanges, seconds
    )


def _ratio(figure: float, goal: float, *, lower_is_better: bool = True) -> str:
    met = figure <= goal if lower_is_better else figure >= goal
    ratio = figure / goal if goal else 0.0
    return f"{ratio:.3f}× the goal, {'met' if met else 'MISSED'}"


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run the bench; exit 1 if loading lost records, 2 for bad arguments."""
    parser = argparse.ArgumentParser(prog="python -m bench county", description=__doc__)
    parser.add_argument("--villages", type=int, default=10, help="villages")
    parser.add_argument("--households", type=int, default=20, help="households per village")
    parser.add_argument("--calls", type=int, default=20, help="timed calls per API")
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgresql"))
    parser.add_argument(
        "--copies",
        type=int,
        default=0,
        help="after the load, copy the county this many times by SQL (new townships), so the "
        "timed queries read a county (copies + 1) times the loaded size",
    )
    parser.add_argument(
        "--no-export",
        action="store_true",
        help="skip the whole-county export (about 2 minutes at 100,000 households) when only "
        "the dashboard timings are wanted",
    )
    args = parser.parse_args(argv)
    if min(args.villages, args.households, args.calls) < 1 or args.copies < 0:
        parser.error("--villages, --households and --calls must be at least 1, --copies >= 0")
    if -(-args.villages // VILLAGES_PER_TOWNSHIP) * (args.copies + 1) > 999:
        parser.error("a county has at most 999 townships: fewer --villages or --copies")
    loaded_households = args.villages * args.households

    def say(line: str) -> None:
        print(line, file=out, flush=True)  # as it is measured: a long run shows its progress

    with tempfile.TemporaryDirectory(prefix="bench-county-") as folder:
        with running_server(args.backend, Path(folder)) as server:
            admin = server.admin()
            admin.set_monitoring_line("53", int(ROUND[:4]), DEFAULT_MONITORING_LINE)
            source = Path(folder) / "households.jsonl"
            started = time.perf_counter()
            records = write_households(source, args.villages, args.households)
            generate_s = time.perf_counter() - started
            households = loaded_households
            say(
                f"county on {args.backend}: {households:,} households ({records:,} records) in "
                f"{args.villages} villages, loaded through python -m server load-households"
            )
            load_s, loaded = load(server, source)
            source.unlink()
            say(f"  {loaded}")
            scaled_load = load_s * TARGET_HOUSEHOLDS / households
            say(
                f"load: {load_s:,.1f} s ({records / load_s:,.0f} records/s; file written in "
                f"{generate_s:,.1f} s); {scaled_load:,.0f} s for {TARGET_HOUSEHOLDS:,} "
                f"households at this rate, goal {TARGET_LOAD_S:,.0f} s: "
                f"{_ratio(scaled_load, TARGET_LOAD_S)}"
            )
            stored = admin.get("/api/v1/records?limit=1")["total"]
            if args.copies:
                copy_s = replicate(server, args.backend, args.villages, args.copies)
                households = loaded_households * (args.copies + 1)
                say(
                    f"copied by SQL {args.copies} times into new townships in {copy_s:,.1f} s: "
                    f"the figures below are of {households:,} households "
                    f"({records * (args.copies + 1):,} records) in "
                    f"{args.villages * (args.copies + 1)} villages"
                )
            if server.db_file is not None:
                size = directory_bytes(sqlite_files(server.db_file))
                wal = directory_bytes([Path(f"{server.db_file}-wal")])
            else:
                size, wal = postgres_size(server.database_url), 0
            say(
                f"database on disk: {size / 1e6:,.1f} MB ({size / households:,.0f} B per household"
                + (f"; WAL {wal / 1e6:,.1f} MB" if server.db_file is not None else "")
                + ")"
            )
            counted = admin.get(DASHBOARD)["total"]["households"]
            say(f"the dashboard counts {counted:,} households")
            web = WebSession(server.url, "admin", server.admin_password)
            header = f"{'GET':<48} {'calls':>5} {'p50':>7} {'p95':>7} {'goal':>6}  ratio"
            say(header)
            say("-" * len(header))
            worst = 0.0
            for path, timed in (
                (DASHBOARD, lambda: timed_gets(admin, DASHBOARD, args.calls)),
                (DASHBOARD_VILLAGES, lambda: timed_gets(admin, DASHBOARD_VILLAGES, args.calls)),
                (f"web {DASHBOARD_PAGE}", lambda: web.timed_gets(DASHBOARD_PAGE, args.calls)),
                (FAILING_HOUSING, lambda: timed_gets(admin, FAILING_HOUSING, args.calls)),
                (BOARD, lambda: timed_gets(admin, BOARD, args.calls)),
            ):
                seconds = timed()
                p95 = percentile(seconds, 0.95)
                if path != BOARD:  # the dashboard's target; the board's figure is for the record
                    worst = max(worst, p95)
                say(
                    f"{path:<48} {len(seconds):>5} {percentile(seconds, 0.5):>6.3f}s "
                    f"{p95:>6.3f}s {TARGET_P95_S:>5.1f}s  {_ratio(p95, TARGET_P95_S)}"
                )
            say(
                f"target: p95 < {TARGET_P95_S:.0f} s at {TARGET_HOUSEHOLDS:,} households: worst "
                f"{worst:.3f} s at {households:,} ({'met' if worst < TARGET_P95_S else 'MISSED'} "
                "here)"
            )
            if args.no_export:
                say("whole-county export: skipped (--no-export)")
            else:
                export_s, export_bytes = export_county(server, admin.headers)
                say(
                    f"whole-county export, {len(FORMS)} instruments as CSV: {export_s:,.1f} s, "
                    f"{export_bytes / 1e6:,.1f} MB; goal {TARGET_EXPORT_S:,.0f} s at "
                    f"{TARGET_HOUSEHOLDS:,} households: "
                    f"{_ratio(export_s * TARGET_HOUSEHOLDS / households, TARGET_EXPORT_S)} "
                    "(scaled)"
                )
            # The last village loaded: its records carry the county's newest revisions, so a
            # download walking the county's revisions instead of the village's would read the
            # whole county before its first page.
            village = village_code(args.villages - 1)
            cpu_before = server.cpu_s()
            loopback = first_download(server, admin, village, Path(folder) / "loopback.db")
            # The server's own CPU for that download (the loopback wall also holds the tablet's
            # work of applying each page): what a download page costs the server.
            server_cpu_s = server.cpu_s() - cpu_before
            linked = first_download(
                server, admin, village, Path(folder) / "linked.db", LINK_BYTES_PER_S
            )
            village_households = args.households
            floor_s = (linked.bytes_up + linked.bytes_down) / LINK_BYTES_PER_S
            say(
                f"a village's first download ({village}, {village_households} households): "
                f"{linked.bytes_down:,} B down, {linked.bytes_up:,} B up, {linked.records} "
                f"records, {linked.exchanges} exchanges; {loopback.seconds:.2f} s on loopback "
                f"(the server's work); at 1 Mbit/s {linked.seconds:.2f} s, byte-ideal floor "
                f"{floor_s:.2f} s (bytes both ways / bandwidth): "
                f"{linked.seconds / floor_s if floor_s else 0:.2f}× the floor; server CPU "
                f"{server_cpu_s:.2f} s ({server_cpu_s * 1000 / max(loopback.exchanges, 1):.0f} ms "
                "per exchange)"
            )
            per_500 = linked.bytes_down * 500 / village_households
            scaled = "" if village_households == 500 else "scaled "
            say(
                f"target: <= {TARGET_DOWNLOAD_BYTES:,} B for 500 households: {per_500:,.0f} B "
                f"{scaled}({_ratio(per_500, TARGET_DOWNLOAD_BYTES)}); "
                f"{linked.seconds * 500 / village_households:.1f} s {scaled}at 1 Mbit/s"
            )
            say(f"server peak RSS {server.rss_mb()[1]:.0f} MB")
    if stored < records:
        say(f"DATA PROBLEM: {records - stored} records not stored")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
