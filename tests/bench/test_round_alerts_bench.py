"""Smoke test of the round-alert bench: a small county, untimed; the figures are sane and the
generated income drops are found."""

from __future__ import annotations

import io
import re

from bench.round_alerts import main


def test_round_alert_bench_prints_rate_cpu_memory_and_the_ratio_to_the_goal() -> None:
    out = io.StringIO()
    assert main(["--households", "40"], out=out) == 0
    text = out.getvalue()
    assert "county: 40 households × 2 rounds × 3 records (applied 240)" in text, text
    found = re.search(
        r"run-round-alerts 2026-11: [\d.]+ s, [\d.]+ CPU-s, [\d,]+ households/s .*; "
        r"40 with a previous round, (\d+) signals (\{.*\})",
        text,
    )
    assert found, text
    # Households 3, 13, 23, 33 earn 40 % less (threshold 30 %): income drops are flagged.
    assert int(found.group(1)) >= 4 and "income_drop" in found.group(2), text
    assert re.search(r"memory: peak RSS \d+ MB, -?\d+ MB above", text), text
    assert re.search(r"100,000 households .*: \d+ s vs goal < 300 s \(ratio [\d.]+\)", text), text
