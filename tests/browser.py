"""Debian's Chromium under Playwright, shared by every browser test (admin pages, field app).

Never a downloaded browser: ``/usr/bin/chromium`` is launched through ``executable_path``.
Without it a developer machine skips the test; with ``CI=true`` the run fails
(``make install-browser`` installs it as root). Import the ``chromium`` fixture from here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@contextmanager
def launched_chromium(extra_args: tuple[str, ...] = ()) -> Iterator[Any]:
    """Debian's Chromium under Playwright with ``extra_args`` (a fake camera, say); skipped
    locally without it, a failure in CI."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (make install-browser)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - playwright is a test extra
        problem = f"playwright is not installed: {exc}"
    if problem:
        if in_ci():
            pytest.fail(problem)
        pytest.skip(problem)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright (skipped locally without it, a failure in CI)."""
    with launched_chromium() as browser:
        yield browser
