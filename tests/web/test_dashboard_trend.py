"""The dashboard's trend by round: one point per round and indicator, linked, area-scoped."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from flask import Flask

from forms.instruments.samples import problem_household, sample_household
from tests.server.survey_data import store_household
from tests.web.conftest import Browser, add_account, text

V1, FAR = "530102001201", "530102002301"
TOWNSHIP = "530102001"
HOUSING = ("housing_safety",)


@pytest.fixture
def two_rounds(app: Flask) -> Flask:
    """2025: both houses dangerous; 2026: V1's rebuilt, FAR's still dangerous."""
    autumn_2025 = datetime(2025, 9, 1, 4, tzinfo=UTC)
    autumn_2026 = datetime(2026, 9, 10, 4, tzinfo=UTC)
    for village, number, later in (
        (V1, "H1", sample_household(1, village_code=V1)),
        (FAR, "H9", problem_household("dangerous_house", 2, village_code=FAR)),
    ):
        store_household(
            app,
            problem_household("dangerous_house", 3, village_code=village),
            village_code=village,
            household_no=number,
            round="2025-annual",
            at=autumn_2025,
            forms=HOUSING,
        )
        store_household(
            app,
            later,
            village_code=village,
            household_no=number,
            round="2026-annual",
            at=autumn_2026,
            forms=HOUSING,
        )
    return app


def _housing_points(page: str) -> list[tuple[str, str]]:
    """(link, "count/total") of the housing line's points, in round order."""
    trend = page[page.index('<svg class="trend"') :]
    trend = trend[: trend.index("</svg>")]
    return re.findall(
        r'<a href="([^"]*problem=housing[^"]*)"><circle[^>]*><title>住房 [^：]*：(\d+/\d+)', trend
    )


def test_the_trend_has_a_linked_point_per_round(two_rounds: Flask, admin: Browser) -> None:
    page = text(admin.get("/"))
    points = _housing_points(page)
    assert [share for _, share in points] == ["2/2", "1/2"]
    assert "round=2025-annual" in points[0][0] and "round=2026-annual" in points[1][0]
    # The point's link lists exactly the households it counts.
    listed = text(admin.get(points[1][0].replace("&amp;", "&")))
    assert "H9" in listed and "H1" not in listed


def test_a_reviewer_s_trend_counts_only_its_township(
    two_rounds: Flask, browser_for: Callable[[str], Browser]
) -> None:
    add_account(two_rounds, "reviewer", "township_reviewer", TOWNSHIP)
    page = text(browser_for("reviewer").get("/"))
    assert [share for _, share in _housing_points(page)] == ["1/1", "0/1"]
