"""Department list import: a 100,000-row 医保 list matched against a county's roster.

Issue 17's figure: importing a 100,000-row department list takes under 60 s on this 2-core
machine, with memory bounded. The bench builds a county on a fresh SQLite file (sample
households' rosters loaded through ``server.services.household_load``, the documented bulk
path, until the roster holds ``--rows`` people), writes the medical-insurance list of those
people in the department's layout (two title rows, the header, IDs as text; one row in a
hundred a mistyped ID, one in a hundred a person listed twice, one in two hundred someone the
roster does not have), then times :func:`server.services.department_lists.import_department_list`
— read, normalise, match, seal every row, cross-check every household, hand the signals to a
sink — as the CLI ``import-department`` runs it. It prints the seconds, rows per second, the
resident memory the import added at its peak (sampled from ``/proc/self/status``) and the
ratio to the 60 s goal.

``python -m bench department [--rows 100000]`` (``--rows 2000`` for a quick look).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, TextIO

import openpyxl

from bench.harness.county_app import in_process_county

GOAL_S = 60.0
ROUND = "2026-annual"
HOUSEHOLDS_PER_VILLAGE = 400
VILLAGES_PER_TOWNSHIP = 20
HEADERS = ["序号", "行政区划代码", "姓名", "证件号码", "出生日期", "参保状态", "险种", "个人自付"]


def _rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """The highest resident set size seen while the block runs (sampled every 50 ms)."""

    def __init__(self) -> None:
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_kb = max(self.peak_kb, _rss_kb())

    def __enter__(self) -> PeakMemory:
        self.peak_kb = _rss_kb()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, _rss_kb())


def _village(index: int) -> str:
    village = index // HOUSEHOLDS_PER_VILLAGE
    township = 1 + village // VILLAGES_PER_TOWNSHIP
    return f"530102{township:03d}{201 + village % VILLAGES_PER_TOWNSHIP:03d}"


def county_rosters(people: int) -> list[dict[str, Any]]:
    """Sample households' rosters until they hold ``people`` members (IDs unique)."""
    from forms.instruments.samples import sample_household

    rosters: list[dict[str, Any]] = []
    seen: set[str] = set()
    total = 0
    seed = 0
    while total < people:
        roster = sample_household(seed, village_code=_village(len(rosters)))["household_roster"]
        seed += 1
        numbers = {m["id_number"] for m in roster["members"]}
        if numbers & seen:
            continue  # two samples drew the same ID: a county has each person once
        seen |= numbers
        rosters.append(roster)
        total += len(roster["members"])
    return rosters


def medical_list(rosters: Iterable[dict[str, Any]], rows: int) -> bytes:
    """The 医保 list of the rosters' people in the department's layout, ``rows`` rows."""
    from forms.identity import id_check_char

    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("参保人员")
    sheet.append(["2026年11月 城乡居民基本医疗保险参保人员名单"])
    sheet.append(["导出时间：2026-11-30"])
    sheet.append(HEADERS)
    n = 0
    for roster in rosters:
        for member in roster["members"]:
            if n >= rows:
                break
            n += 1
            number = member["id_number"]
            if n % 100 == 7:  # a mistyped check character: found by name + birth + village
                right = id_check_char(number[:17])
                number = number[:17] + ("1" if right != "1" else "2")
            elif n % 200 == 11:  # someone the roster does not have
                number = f"53010219900101{(n // 200) % 1000:03d}"
                number = number[:17] + id_check_char(number[:17])
            birth = f"{number[6:10]}-{number[10:12]}-{number[12:14]}"
            out_of_pocket = str((n * 37) % 40000) if n % 50 == 0 else ""
            sheet.append(
                [
                    n,
                    roster["village_code"],
                    member["name"],
                    number,
                    birth,
                    "正常参保",
                    "城乡居民基本医疗保险",
                    out_of_pocket,
                ]
            )
            if n % 100 == 50 and n < rows:  # the same person twice
                n += 1
                sheet.append([n, roster["village_code"], member["name"], number, birth, "正常参保"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def run(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run the bench (``python -m bench department``, see ``bench/department.py``); 2 for bad
    arguments, 1 if the import lost rows."""
    parser = argparse.ArgumentParser(prog="python -m bench department", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the department list")
    args = parser.parse_args(argv)
    if args.rows < 10:
        parser.error("--rows must be at least 10")

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    from server.services import department_lists
    from server.services.access import CLI_ACTOR
    from server.services.context import EXTENSION_KEY
    from server.services.household_load import load_households

    with in_process_county("bench-department-", {"medical_out_of_pocket_yuan": 20000}) as app:
        started = time.perf_counter()
        rosters = county_rosters(args.rows)
        with app.app_context():
            lines = (
                json.dumps(
                    {
                        "village_code": r["village_code"],
                        "household_no": r["household_no"],
                        "round": ROUND,
                        "records": {"household_roster": r},
                    },
                    ensure_ascii=False,
                )
                for r in rosters
            )
            loaded = load_households(lines)
        people = sum(len(r["members"]) for r in rosters)
        say(
            f"county: {len(rosters):,} households, {people:,} people in the roster "
            f"(applied {loaded.statuses.get('applied', 0):,}), set up in "
            f"{time.perf_counter() - started:.1f} s"
        )
        started = time.perf_counter()
        content = medical_list(rosters, args.rows)
        say(
            f"医保 list: {args.rows:,} rows, {len(content) / 1e6:.1f} MB xlsx, written in "
            f"{time.perf_counter() - started:.1f} s"
        )
        handed: list[int] = []

        def sink(signals: Iterable[Any], *, origin: str) -> None:
            handed.append(sum(1 for _ in signals))

        with app.app_context():
            ctx = app.extensions[EXTENSION_KEY]
            with PeakMemory() as memory:
                baseline = memory.peak_kb
                started = time.perf_counter()
                result = department_lists.import_department_list(
                    ctx,
                    CLI_ACTOR,
                    content,
                    department="medical_insurance",
                    period="2026-11",
                    as_of="2026-11-30",
                    area="530102",
                    sink=sink,
                )
                seconds = time.perf_counter() - started
        counts = result.counts
        say(
            f"import: {seconds:.1f} s ({counts['rows'] / seconds:,.0f} rows/s); rows "
            f"{counts['rows']:,}, matched {counts['matched']:,} "
            f"({counts['matched_by_name_birth_village']:,} by name + birth date + village), "
            f"unmatched {counts['unmatched']:,} {counts['problems']}; "
            f"{result.households_signalled:,} households signalled"
        )
        added_mb = (memory.peak_kb - baseline) / 1024
        say(
            f"memory: peak RSS {memory.peak_kb / 1024:.0f} MB, {added_mb:.0f} MB above the "
            f"{baseline / 1024:.0f} MB before the import ({added_mb * 1024 / counts['rows']:.2f} "
            "KB per row)"
        )
        verdict = "met" if seconds < GOAL_S else "MISSED"
        say(
            f"department import {args.rows:,} rows: {seconds:.1f} s vs goal < {GOAL_S:.0f} s "
            f"(ratio {seconds / GOAL_S:.2f}): {verdict}"
        )
        if counts["rows"] != args.rows or handed != [result.households_signalled]:
            say(f"LOST: {counts['rows']} of {args.rows} rows stored, sink saw {handed}")
            return 1
    return 0
