"""Smoke test of the department import bench: a small list, untimed, the figures are sane."""

from __future__ import annotations

import io
import re

from bench.department import main


def test_department_bench_prints_seconds_memory_and_the_ratio_to_the_goal() -> None:
    out = io.StringIO()
    assert main(["--rows", "300"], out=out) == 0
    text = out.getvalue()
    assert re.search(r"county: [\d,]+ households, [\d,]+ people in the roster", text), text
    assert "医保 list: 300 rows" in text
    found = re.search(r"import: ([\d.]+) s \(([\d,]+) rows/s\); rows 300, matched ([\d,]+)", text)
    assert found, text
    # Rows 7, 107, … have a mistyped ID and are still matched; strangers and repeats are not.
    assert "by name + birth date + village" in text and "duplicate_row" in text
    assert re.search(r"memory: peak RSS \d+ MB, -?\d+ MB above", text), text
    assert re.search(r"department import 300 rows: [\d.]+ s vs goal < 60 s \(ratio [\d.]+\)", text)
