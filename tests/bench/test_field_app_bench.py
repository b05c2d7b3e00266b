"""Smoke test of the field-app bench: a fast link, so it is bounded; checks what the numbers mean."""

from __future__ import annotations

import io

from bench.__main__ import discover
from bench.field_app import (
    GOAL_BYTES,
    first_form_waves,
    main,
    print_report,
    print_wire,
    run,
    wire_per_record,
)


def test_the_bench_is_discovered_and_rejects_an_impossible_link() -> None:
    assert "field_app" in discover()
    assert main(["--kbit", "0"]) == 2


def test_a_fast_run_measures_the_whole_manifest_and_the_first_form_waves() -> None:
    report = run(kbit=4000, rtt_ms=10)
    # The page first, then what it names, then the modules they import, the forms last.
    assert report.first_form_waves[0] == ("/field/",)
    assert "/field/static/app/app.js" in report.first_form_waves[1]
    assert "/field/static/app/sealed-store.js" in report.first_form_waves[2]
    assert report.first_form_waves[-1] == ("/field/instruments.json",)
    # jsQR is precached but not on the way to the first form.
    assert all("jsQR" not in url for wave in report.first_form_waves for url in wave)
    assert 0 < report.first_form_bytes < report.gzip_bytes < report.raw_bytes
    assert report.gzip_bytes <= GOAL_BYTES
    # What went through the proxy is the gzip size of the rest, and loading took the link's time.
    assert report.install_bytes == report.gzip_bytes - report.first_form_bytes
    assert report.first_form_measured_s >= report.first_form_bytes / (4000 * 125)
    out = io.StringIO()
    print_report(report, out)
    assert "target: shell <= 300 KB compressed" in out.getvalue()


def test_waves_follow_imports_not_file_order() -> None:
    # Static and dynamic imports both count, except the scanner (loaded only to scan a QR).
    bodies = {
        "/field/": b'<script type="module" src="/field/static/app/a.js"></script>',
        "/field/static/app/a.js": (
            b'import { b } from "./b.js";\nfetch("/field/data.json");\n'
            b'const e = () => import("../forms/render.js");\nimport("./scanner.js");'
        ),
        "/field/static/forms/render.js": b"export function renderForm() {}",
        "/field/static/app/scanner.js": b"",
        "/field/static/app/b.js": b'import { c } from "../lib/c.js";',
        "/field/static/lib/c.js": b"export const c = 1;",
        "/field/data.json": b"{}",
        "/field/static/unused.js": b"",
    }
    assert first_form_waves(bodies) == [
        ["/field/"],
        ["/field/static/app/a.js"],
        ["/field/static/app/b.js", "/field/static/forms/render.js"],
        ["/field/static/lib/c.js"],
        ["/field/data.json"],
    ]


def test_bytes_per_record_are_measured_for_the_browser_and_the_cli_device() -> None:
    # Three records each, one real county server, the app's modules in Debian's Chromium.
    report = wire_per_record(3)
    assert report.records == 3
    assert report.browser_exchanges >= 1 and report.cli_exchanges >= 1
    # Three sealed records went up and their acks came down, on both devices.
    assert report.browser_up > 3 * 50 and report.cli_up > 3 * 50
    assert report.browser_down > 0 and report.cli_down > 0
    out = io.StringIO()
    print_wire(report, out)
    assert "browser / CLI" in out.getvalue()
