"""Smoke tests of the server benches (ingest, peak, device_memory): tiny runs, untimed, the table is sane."""

from __future__ import annotations

import io
import re

from bench.__main__ import discover
from bench.device_memory import main as device_memory_main
from bench.ingest import main as ingest_main
from bench.peak import main as peak_main


def test_the_runner_finds_the_server_benches() -> None:
    assert {"ingest", "peak", "device_memory"} <= set(discover())


def test_ingest_prints_ours_the_raw_anchor_and_the_ratio_on_both_backends() -> None:
    out = io.StringIO()
    assert ingest_main(["--devices", "2", "--households", "2"], out=out) == 0
    text = out.getvalue()
    for backend in ("sqlite", "postgresql"):
        row = re.search(rf"^{backend}\s+(\d+)\s+(\d+)\s", text, re.MULTILINE)
        assert row, text
        assert row.group(1) == row.group(2) == "24"  # 2 tablets × 2 households × 6 instruments
        assert re.search(rf"target {backend}: .* records/s: [\d,]+ (met|MISSED); raw insert", text)
    anchor = re.search(
        r"raw SQLite insert of the same rows \(24 records.*: ([\d,]+) records/s", text
    )
    assert anchor and int(anchor.group(1).replace(",", "")) > 0, text


def test_ingest_from_client_processes_acks_every_record() -> None:
    out = io.StringIO()
    argv = ["--devices", "2", "--households", "2", "--backends", "sqlite", "--clients", "2"]
    assert ingest_main(argv, out=out) == 0
    row = re.search(r"^sqlite\s+(\d+)\s+(\d+)\s.*\s(\d+)$", out.getvalue(), re.MULTILINE)
    assert row, out.getvalue()
    assert row.group(1) == row.group(2) == "24" and row.group(3) == "0"


def test_peak_prints_latency_percentiles_failures_cpu_and_rss_per_level() -> None:
    out = io.StringIO()
    argv = ["--levels", "2,3", "--backends", "sqlite", "--processes", "1", "--clients", "2"]
    assert peak_main(argv, out=out) == 0
    text = out.getvalue()
    assert "SERVE_PROCESSES=1" in text and "2 client process(es)" in text, text
    rows = re.findall(
        r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)s\s+([\d.]+)s\s+([\d.]+)s\s+(\d+)\s+(\d+)\s"
        r".*\s([\d.]+)s\s+([\d ]+) MB$",
        text,
        re.MULTILINE,
    )
    assert [(int(r[0]), int(r[1])) for r in rows] == [(2, 12), (3, 18)], text
    for row in rows:
        exchanges, p50, p95, p99 = int(row[2]), float(row[3]), float(row[4]), float(row[5])
        assert exchanges >= int(row[0])  # at least one exchange per tablet
        assert 0 < p50 <= p95 <= p99
        assert row[6] == "0"  # no tablet failed on an idle loopback server
        assert float(row[8]) > 0  # the server did some work (CPU-seconds from /proc)
        assert [int(mb) for mb in row[9].split()] and all(int(mb) > 0 for mb in row[9].split())
    assert re.search(r"server worker under 500 MB RSS: \d+ MB (met|MISSED)", text)


def test_peak_counts_every_worker_of_a_multi_process_server_on_postgresql() -> None:
    out = io.StringIO()
    argv = ["--levels", "2", "--backends", "postgresql", "--processes", "2", "--clients", "1"]
    assert peak_main(argv, out=out) == 0
    text = out.getvalue()
    assert "evening peak on postgresql, SERVE_PROCESSES=2" in text, text
    row = re.search(r"^\s+2\s+12\s+(\d+)\s.*s\s+([\d ]+) MB$", text, re.MULTILINE)
    assert row, text
    assert len(row.group(2).split()) == 2, text  # one peak RSS per server process


def test_device_memory_prints_the_peak_rss_of_upload_and_first_download_against_the_floor() -> None:
    out = io.StringIO()
    assert device_memory_main(["--records", "30"], out=out) == 0
    text = out.getvalue()
    rows = re.findall(
        r"^(upload|first download)\s+(\d+)\s+(\d+)\s+[\d.]+s\s+(\d+)MB\s+(\d+)MB$",
        text,
        re.MULTILINE,
    )
    assert [r[0] for r in rows] == ["upload", "first download"], text
    for _what, records, exchanges, before, peak in rows:
        assert int(records) == 30 and int(exchanges) >= 1  # 5 households x 6 instruments
        assert 10 < int(before) <= int(peak), text  # a Python process, measured from /proc
    assert re.search(r"target: a device syncing 30 records under 100 MB RSS: \d+ MB", text)
