"""Smoke test of the wire-size bench: small, untimed, checks what the numbers mean."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import bench.__main__ as bench_runner
from bench.__main__ import discover
from bench.__main__ import main as bench_main
from bench.wire_size import (
    DOWNLOAD_TARGET_BYTES,
    SETTINGS,
    build_ops,
    first_download,
    http_request,
    main,
    merged_states,
    openrosa_submission,
    run,
    server_reply,
    target_line,
)
from forms.instruments.samples import sample_household
from sync_protocol.compression import DictionaryStore

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON_M_BENCH = (sys.executable, "-m", "bench")


def test_small_run_reports_every_cell_and_beats_odk() -> None:
    report = run(households=3, batch_sizes=(1, 6))
    assert report.records == 18
    assert {key[1] for key in report.ours} == {1, 6}
    assert {key[0] for key in report.ours} == {s.name for s in SETTINGS}
    for (setting, batch_size), value in report.ours.items():
        assert 100 < value < report.odk_bytes_per_record, (setting, batch_size)
    # Batching amortises headers, hello and envelope; dictionaries help single records most.
    for setting in SETTINGS:
        assert report.ours[(setting.name, 6)] < report.ours[(setting.name, 1)]
    assert report.ours[("zstd+dictionary", 1)] < report.ours[("zstd", 1)]
    assert report.seal_records_per_s > 0 and report.open_records_per_s > 0
    # The default exchange (one hello for everything, 32 KiB batches) beats every fixed size here.
    assert report.default_batches == 1
    for setting in SETTINGS:
        assert report.default_exchange[setting.name] < report.ours[(setting.name, 6)]
        assert report.default_ratio(setting.name) > report.ratio(setting.name, 6)


def test_packaged_dictionaries_cover_the_builtin_instruments() -> None:
    store = DictionaryStore.packaged()
    forms = {op.form_id for op in build_ops([0], device_id="d")}
    assert all(store.for_form(form_id, 1) is not None for form_id in forms)


def test_cli_prints_the_table() -> None:
    out = io.StringIO()
    assert (
        main(["--households", "2", "--batch-sizes", "1,4", "--download-households", "2"], out=out)
        == 0
    )
    text = out.getvalue()
    assert "deflate-raw (browser)" in text and "zstd+dictionary" in text
    assert "ODK-style OpenRosa submission" in text
    assert "32KiB*" in text
    assert "first download of a village, 2 households" in text


def test_bench_runner_finds_wire_size() -> None:
    assert "wire_size" in discover()
    assert bench_main(["no_such_bench"]) == 2


def test_openrosa_submission_is_a_real_multipart_request() -> None:
    data = sample_household(1)["housing_safety"]
    request = openrosa_submission("housing_safety", 1, data, "0b6f1f7e-3c55", "BOUNDARY")
    head, body = request.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /v1/key/")
    assert b"X-OpenRosa-Version: 1.0" in head
    assert b"Content-Type: multipart/form-data; boundary=BOUNDARY" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert b'name="xml_submission_file"' in body
    assert b'xmlns:orx="http://openrosa.org/xforms"' in body
    assert body.endswith(b"--BOUNDARY--\r\n")
    assert data["appraisal_grade"].encode() in body


def test_http_request_bytes() -> None:
    request = http_request("/api/v1/sync", [("Content-Type", "x/y")], b"abc")
    assert request.endswith(b"\r\nContent-Length: 3\r\n\r\nabc")
    assert request.startswith(b"POST /api/v1/sync HTTP/1.1\r\nHost: ")


def test_first_download_is_measured_for_every_setting() -> None:
    download = first_download(households=3)
    assert set(download) == {s.name for s in SETTINGS}
    for total, exchanges in download.values():
        assert exchanges == 1  # 18 record states fit one page
        assert 0 < total < DOWNLOAD_TARGET_BYTES


def test_python_m_bench_wire_size_runs_as_a_real_process() -> None:
    """The command line users type, in a fresh interpreter (bounded, not timed)."""
    completed = subprocess.run(
        [*PYTHON_M_BENCH, "wire_size", "--households", "2", "--download-households", "1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "== wire_size ==" in out and "== wire_size:" in out
    assert "wire size: 12 new instrument records" in out
    assert "ODK-style OpenRosa submission" in out
    # 12 records cannot amortise a batch of 50: the target is missed, said loudly, exit still 0.
    assert "target: upload at batch 50 <= 150 B/record" in out
    assert "*** MISSED ***" in out
    assert "first download of a village, 1 households" in out


def test_runner_passes_a_list_even_without_bench_arguments(monkeypatch) -> None:
    """With no arguments after the name the bench gets ``[]``: ``None`` would reread sys.argv."""
    seen: list[object] = []

    def fake(argv: list[str] | None) -> int:
        seen.append(argv)
        return 0

    monkeypatch.setattr(bench_runner, "discover", lambda: {"fake": fake})
    monkeypatch.setattr(sys, "argv", ["python -m bench", "fake"])
    assert bench_runner.main() == 0
    assert bench_runner.main(["fake"]) == 0
    assert bench_runner.main(["fake", "--flag", "1"]) == 0
    assert seen == [[], [], ["--flag", "1"]]


def test_bench_exit_code_ignores_a_missed_target() -> None:
    out = io.StringIO()
    assert (
        main(["--households", "1", "--batch-sizes", "50", "--download-households", "0"], out=out)
        == 0
    )
    text = out.getvalue()
    assert "*** MISSED ***" in text
    assert target_line("x <= 1", "2", False) == "target: x <= 1: 2 -> *** MISSED ***"
    assert target_line("x <= 1", "0", True) == "target: x <= 1: 0 -> met"


def test_replies_are_measured_both_ways_and_lean_acks_only_shrink_them() -> None:
    report = run(households=2, batch_sizes=(1, 12))
    assert set(report.replies) == set(report.ours) == set(report.lean_replies)
    for key, value in report.replies.items():
        # A reply carries each new record's merged state (Ack and download page): never tiny.
        assert value > 150, key
        assert report.lean_replies[key] <= value, key
    # deflate-raw cannot see the second copy of a state as cheaply as zstd: lean acks help it.
    browser = "deflate-raw (browser)"
    assert report.lean_replies[(browser, 12)] < report.replies[(browser, 12)]


def test_server_reply_repeats_the_states_the_way_the_server_does() -> None:
    ops = build_ops([0], device_id="dev-1")
    states = merged_states(ops)
    reply = server_reply(ops, states, 1, lean=False)
    [ack] = reply.acks
    assert [a.status for a in ack.acks] == ["applied"] * len(ops)
    assert [r["record_id"] for r in ack.records] == [op.record_id for op in ops]
    assert reply.downloads[0].records == ack.records  # the same states, a second time
    lean = server_reply(ops, states, 1, lean=True)
    assert lean.acks[0].records == () and lean.downloads[0].records == ack.records
    assert lean.acks[0].acks == ack.acks
    # lean_downloads: no state anywhere, every op named, the page cursor still moves past them.
    leaner = server_reply(ops, states, 1, lean=True, lean_downloads=True)
    assert leaner.acks[0].records == () and leaner.downloads[0].records == ()
    assert leaner.acks[0].lean_seqs == tuple(op.seq for op in ops)
    assert leaner.downloads[0].next_cursor == reply.downloads[0].next_cursor


def test_lean_downloads_meet_the_reply_goal_at_batch_50() -> None:
    report = run(households=10, batch_sizes=(50,))
    for key, value in report.lean_download_replies.items():
        assert value < report.lean_replies[key] / 4, key
        assert value <= 40, key  # DESIGN.md §5: ≤ 40 B per acknowledged record


def test_cli_prints_reply_sizes() -> None:
    out = io.StringIO()
    assert (
        main(["--households", "1", "--batch-sizes", "6", "--download-households", "0"], out=out)
        == 0
    )
    text = out.getvalue()
    assert "server reply to the same requests" in text and "up+down" in text
