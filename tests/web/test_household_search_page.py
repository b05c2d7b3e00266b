"""The households page searches by number, name and ID number, inside the signed-in area."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from forms.instruments.samples import sample_household
from tests.server.survey_data import store_household
from tests.web.conftest import Browser, add_account, text

V1, FAR = "530102001201", "530102002301"


def _store(app: Flask, village: str, number: str, seed: int) -> dict:
    roster = sample_household(seed, village_code=village)["household_roster"]
    store_household(app, {"household_roster": roster}, village_code=village, household_no=number)
    return roster["members"][0]


def test_search_by_name_and_id_masks_for_a_reviewer_and_hides_other_townships(
    app: Flask, admin: Browser, browser_for: Callable[[str], Browser]
) -> None:
    head = _store(app, V1, "H1", 1)
    far = _store(app, FAR, "H9", 2)
    add_account(app, "reviewer", "township_reviewer", "530102001")
    reviewer = browser_for("reviewer")

    county = text(admin.get("/households", query_string={"name": head["name"]}))
    assert 'id="search-results"' in county and head["id_number"] in county
    assert f'href="/households/{V1}/H1"' in county

    page = text(reviewer.get("/households", query_string={"id_number": head["id_number"]}))
    # What was typed stays in the form; the result shows the number masked.
    assert f'value="{head["id_number"]}"' in page
    shown = page.split('id="search-results"')[1]
    assert head["name"] in shown and head["id_number"] not in shown
    assert head["id_number"][:6] + "*" in shown and head["id_number"][-4:] in shown

    # Only the results: the page's random CSRF token can contain "H9" or any four digits.
    hidden = text(reviewer.get("/households", query_string={"name": far["name"]}))
    hidden = hidden.split('id="search-results"')[1]
    assert "H9" not in hidden and far["id_number"][-4:] not in hidden
    outside = reviewer.get("/households", query_string={"area": FAR, "name": far["name"]})
    assert outside.status_code == 404 and far["name"] not in text(outside)


def test_a_short_id_number_is_refused_on_the_page_in_chinese(admin: Browser) -> None:
    refused = admin.get("/households", query_string={"id_number": "5301", "name": ""})
    body = text(refused)
    assert refused.status_code == 400 and "请输入完整的身份证号" in body
    assert 'value="5301"' in body and "Traceback" not in body
