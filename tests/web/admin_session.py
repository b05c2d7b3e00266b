"""A county admin signed in to a real server in a real browser, shared by the browser tests.

The admin page tests each need the same thing before their story starts: a county server process on
a fresh SQLite file, a Chromium page signed in with the password printed at first start, console
errors collected, and screenshots at phone and desktop width checked for sideways overflow.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness.county_server import REPO, CountyServer, start_county_server

ARTIFACTS = REPO / "tests" / "artifacts" / "browser"


@contextmanager
def sqlite_county(folder: Path) -> Iterator[CountyServer]:
    """A county server process on its own SQLite file under ``folder``, stopped afterwards."""
    server = start_county_server(f"sqlite:///{folder / 'county.db'}", folder / "county")
    try:
        yield server
    finally:
        server.stop()


class Shots:
    """Screenshots of a page at phone and desktop width, checked for sideways overflow."""

    def __init__(self, page: Any) -> None:
        self.page = page
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(self, name: str) -> None:
        for width, height in ((1280, 900), (360, 780)):
            self.page.set_viewport_size({"width": width, "height": height})
            self.page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
            if width == 360:
                wide = self.page.evaluate("document.documentElement.scrollWidth")
                assert wide <= 360, f"{name} is {wide} px wide at 360 px"
        self.page.set_viewport_size({"width": 1280, "height": 900})


@dataclass
class AdminPage:
    """A signed-in admin's page, its screenshots and the console errors it logged."""

    page: Any
    base: str
    shots: Shots
    errors: list[str] = field(default_factory=list)


@contextmanager
def signed_in_admin(chromium: Any, county: CountyServer, **context: Any) -> Iterator[AdminPage]:
    """Sign in through the login page as the first admin, as a person does; close afterwards."""
    browser_context = chromium.new_context(viewport={"width": 1280, "height": 900}, **context)
    page = browser_context.new_page()
    admin = AdminPage(page=page, base=county.url, shots=Shots(page))
    page.on("console", lambda msg: admin.errors.append(msg.text) if msg.type == "error" else None)
    try:
        page.goto(county.url + "/login")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", county.admin_password)
        page.click("form button[type=submit]")
        page.wait_for_url(county.url + "/")
        yield admin
    finally:
        browser_context.close()
