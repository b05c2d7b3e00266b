"""``python -m bench round_alerts``: the round-over-round alert run over a generated county.

Issue 17's round alerts compare every household of a round with its previous round (problems
new / persisting / resolved, 收入骤减 and 支出骤增 against the configured thresholds) and hand
the signals to the task service, in one transaction (``server.services.round_alerts``). The
bench builds a county on a fresh SQLite file — ``--households`` sample households, each with a
roster, housing and monitoring record in two rounds (``2026-05`` and ``2026-11``), loaded through
the documented bulk path (``server.services.household_load``); in the second round one household
in ten earns 40 % less and one in twenty pays a large medical bill — sets the thresholds
(income drop 30 %, expense rise 20 %), then times ``run-round-alerts --round 2026-11`` as the CLI
runs it (the real task sink: the tasks are opened in the same transaction).

It prints households per second, the CPU-seconds of the run, the peak resident memory the run
added (sampled from ``/proc/self/status``), and the goal: a 100,000-household county's run under
5 minutes — the ratio of this run's rate projected to 100,000 households to 300 s.

``python -m bench round_alerts [--households 2000]`` (``--households 200`` for a quick look).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from bench.department_import import PeakMemory
from bench.harness.county_app import in_process_county

GOAL_HOUSEHOLDS = 100_000
GOAL_S = 300.0
ROUNDS = ("2026-05", "2026-11")
FORMS = ("household_roster", "housing_safety", "monitoring_household")
HOUSEHOLDS_PER_VILLAGE = 400


def _village(index: int) -> str:
    village = index // HOUSEHOLDS_PER_VILLAGE
    return f"530102{1 + village // 20:03d}{201 + village % 20:03d}"


def county_lines(households: int, round_: str) -> Iterator[str]:
    """JSON Lines for ``load-households``: every household in ``round_``; the second round's
    monitoring record earns 40 % less in one household of ten, pays 30,000 yuan out of pocket
    in one of twenty."""
    from forms.instruments.samples import sample_household

    for index in range(households):
        village = _village(index)
        sample = sample_household(index, village_code=village)
        number = sample["household_roster"]["household_no"]
        records: dict[str, Any] = {form: dict(sample[form]) for form in FORMS}
        monitoring = records["monitoring_household"]
        if round_ == ROUNDS[1]:
            if index % 10 == 3:
                for key in ("wage_income", "business_income"):
                    monitoring[key] = round(float(monitoring.get(key) or 0) * 0.6, 2)
            if index % 20 == 7:
                monitoring["medical_out_of_pocket"] = 30000.0
        yield json.dumps(
            {
                "village_code": village,
                "household_no": number,
                "round": round_,
                "records": records,
            },
            ensure_ascii=False,
        )


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run the bench; 2 for bad arguments, 1 if the run compared fewer households than made."""
    parser = argparse.ArgumentParser(prog="python -m bench round_alerts", description=__doc__)
    parser.add_argument("--households", type=int, default=2000, help="households in the county")
    args = parser.parse_args(argv)
    if args.households < 10:
        parser.error("--households must be at least 10")

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    from server.services import round_alerts
    from server.services.access import CLI_ACTOR
    from server.services.context import EXTENSION_KEY
    from server.services.household_load import load_households

    thresholds = {"income_drop_percent": 30, "expense_rise_percent": 20}
    with in_process_county("bench-round-alerts-", thresholds) as app:
        started = time.perf_counter()
        with app.app_context():
            # One round after the other, as the teams make them: a round's records are
            # compared with those that reached the server before them.
            statuses: dict[str, int] = {}
            for round_ in ROUNDS:
                loaded = load_households(county_lines(args.households, round_))
                for status, count in loaded.statuses.items():
                    statuses[status] = statuses.get(status, 0) + count
            applied = statuses.get("applied", 0)
            # A sample the ingest rules refuse (rare) is left out, as the county's would be.
            refused = {k: v for k, v in statuses.items() if k != "applied"}
        say(
            f"county: {args.households:,} households × {len(ROUNDS)} rounds × {len(FORMS)} "
            f"records (applied {applied:,}{f', {refused}' if refused else ''}), set up in "
            f"{time.perf_counter() - started:.1f} s"
        )
        with app.app_context():
            ctx = app.extensions[EXTENSION_KEY]
            with PeakMemory() as memory:
                baseline = memory.peak_kb
                cpu, started = time.process_time(), time.perf_counter()
                result = round_alerts.run_round_alerts(ROUNDS[1], actor=CLI_ACTOR, ctx=ctx)
                seconds = time.perf_counter() - started
                cpu_s = time.process_time() - cpu
        run = result["run"]
        compared = run["households"]
        rate = compared / seconds if seconds else float("inf")
        say(
            f"run-round-alerts {ROUNDS[1]}: {seconds:.1f} s, {cpu_s:.1f} CPU-s, "
            f"{rate:,.0f} households/s ({compared / cpu_s if cpu_s else 0:,.0f} per CPU-s); "
            f"{run['counts']['compared']:,} with a previous round, {run['signals']:,} signals "
            f"{run['counts'].get('reasons', {})}"
        )
        added_mb = (memory.peak_kb - baseline) / 1024
        say(
            f"memory: peak RSS {memory.peak_kb / 1024:.0f} MB, {added_mb:.0f} MB above the "
            f"{baseline / 1024:.0f} MB before the run"
        )
        projected = GOAL_HOUSEHOLDS / rate if rate else float("inf")
        verdict = "met" if projected < GOAL_S else "MISSED"
        # The wall clock carries the other jobs of a shared machine; CPU-seconds do not.
        on_cpu = GOAL_HOUSEHOLDS * cpu_s / compared if compared else float("inf")
        say(
            f"round alerts at {GOAL_HOUSEHOLDS:,} households (projected from this rate): "
            f"{projected:.0f} s vs goal < {GOAL_S:.0f} s (ratio {projected / GOAL_S:.2f}): "
            f"{verdict}; on one free core {on_cpu:.0f} CPU-s (ratio {on_cpu / GOAL_S:.2f})"
        )
        if compared != args.households:
            say(f"LOST: the run compared {compared} of {args.households} households")
            return 1
    return 0
