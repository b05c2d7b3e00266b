"""The 动态清零 board page: counts by township that link to their households, ages, evidence,
recurring problems, a reviewer's own township only — and in a real browser at 360 px."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask

from bench.harness.county_server import CountyServer
from tests.server.board_data import (
    FIRST,
    SECOND,
    THIRD,
    VILLAGE_A,
    VILLAGE_B,
    VILLAGE_C,
    household,
    store,
)
from tests.server.conftest import make_app
from tests.web.admin_session import signed_in_admin
from tests.web.conftest import Browser, add_account, text


def _rounds(app: Flask) -> dict[str, str]:
    """P1's house rebuilt and confirmed, P2's water fixed then short again, P3 and P4 open."""
    store(app, household(1, VILLAGE_A, house_unsafe=True), VILLAGE_A, "P1", FIRST)
    fixed = store(app, household(1, VILLAGE_A), VILLAGE_A, "P1", SECOND)
    store(app, household(1, VILLAGE_A), VILLAGE_A, "P1", THIRD, forms=("household_roster",))
    store(app, household(2, VILLAGE_B, water_unsafe=True), VILLAGE_B, "P2", FIRST)
    store(app, household(2, VILLAGE_B), VILLAGE_B, "P2", SECOND)
    store(app, household(2, VILLAGE_B, water_unsafe=True), VILLAGE_B, "P2", THIRD)
    store(app, household(3, VILLAGE_C, house_unsafe=True), VILLAGE_C, "P3", SECOND)
    store(
        app, household(4, VILLAGE_A, house_unsafe=True, water_unsafe=True), VILLAGE_A, "P4", THIRD
    )
    return fixed


def test_the_board_page_links_its_numbers_and_shows_evidence(
    app: Flask, admin: Browser, browser_for: Callable[[str], Browser]
) -> None:
    fixed = _rounds(app)
    page = text(admin.get("/board"))
    assert "动态清零" in page and "<svg" in page and "cdn" not in page.lower()
    # The housing count of township 530102001 links to exactly its households with that problem.
    link = re.search(r'href="(/households\?area=530102001&amp;problem=housing)"', page)
    assert link is not None
    listed = text(admin.get(link.group(1).replace("&amp;", "&")))
    assert "P4" in listed and "P1" not in listed and "P3" not in listed
    # The cleared house shows its evidence record, linked on the household page.
    assert f"#record-{fixed['housing_safety']}" in page
    assert "反复1次" in page  # P2's water, back in the third round
    # The dashboard's open-problem count leads here.
    assert 'href="/board"' in text(admin.get("/"))

    add_account(app, "reviewer", "township_reviewer", "530102002")
    own = text(browser_for("reviewer").get("/board"))
    assert "P3" in own and "P1" not in own and "P2" not in own and "P4" not in own


def test_the_board_in_a_real_browser_at_360_px(
    chromium: Any, county: CountyServer, tmp_path: Path
) -> None:
    # Records written into the server's own database, as synced tablets leave them.
    writer = make_app(county.database_url, tmp_path / "writer")
    _rounds(writer)
    with writer.app_context():
        from server.storage.database import db

        db.engine.dispose()

    with signed_in_admin(chromium, county) as admin:
        page, base, shots, errors = admin.page, admin.base, admin.shots, admin.errors
        page.click("nav a:has-text('清零')")
        page.wait_for_url(base + "/board")
        assert "未清零问题" in page.inner_text("main")
        open_rows = page.inner_text("#open")
        assert open_rows.index("P2") < open_rows.index("P3") < open_rows.index("P4")  # oldest first
        shots.take("board")
        # A bar leads to the households it counts.
        page.click("svg.bars a >> nth=0")
        page.wait_for_url(re.compile(r".*/households\?area=.*problem=.*"))
        assert "P4" in page.inner_text("main")
        assert errors == []
