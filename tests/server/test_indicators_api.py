"""The indicators dashboard over HTTP: counts, rates, lists, scoping, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from forms.indicators import MonitoringConfig, household_indicators
from forms.instruments.samples import problem_household, sample_household
from server.services.access import Principal
from server.services.indicators import household_list, rollup
from server.storage.indicators import household_records
from tests.server.conftest import add_user, assert_error, login
from tests.server.survey_data import store_household

V1, V2, V3 = "530102001201", "530102001202", "530102002201"
URL = "/api/v1/indicators"


def _households() -> list[tuple[str, str, dict[str, dict[str, Any]]]]:
    return [
        (V1, "H1", sample_household(3, village_code=V1)),
        (V1, "H2", problem_household("dangerous_house", 4, village_code=V1)),
        (V1, "H3", problem_household("too_little_water", 5, village_code=V1)),
        (V2, "H4", problem_household("below_line", 6, village_code=V2)),
        (V3, "H5", problem_household("dropout", 7, village_code=V3)),
    ]


@pytest.fixture
def surveyed(app: Flask, admin_headers: dict[str, str], client: FlaskClient) -> Flask:
    response = client.put(
        "/api/v1/monitoring-lines/53/2026", json={"income_line": 8700}, headers=admin_headers
    )
    assert response.status_code == 200, response.json
    for village, number, household in _households():
        store_household(app, household, village_code=village, household_no=number)
    return app


def _area(body: dict[str, Any], code: str) -> dict[str, Any]:
    return next(a for a in body["areas"] if a["area"] == code)


def test_village_rollup_counts_and_rates(
    surveyed: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    response = client.get(URL, query_string={"round": "2026-annual"}, headers=admin_headers)
    assert response.status_code == 200, response.json
    body = response.json
    assert body["year"] == 2026 and body["level"] == "village"
    assert [a["area"] for a in body["areas"]] == [V1, V2, V3]
    v1 = _area(body, V1)
    assert v1["households"] == 3
    housing = v1["indicators"]["housing"]
    assert (housing["passing"], housing["failing"], housing["unknown"]) == (2, 1, 0)
    assert housing["rate"] == round(2 / 3, 4)
    water = v1["indicators"]["water"]
    assert (water["passing"], water["failing"]) == (2, 1)
    assert water["failed_by_indicator"]["quantity"] == 1
    assert _area(body, V3)["indicators"]["education"]["failing"] == 1
    assert _area(body, V2)["indicators"]["income"]["failing"] == 1
    total = body["total"]
    assert total["households"] == 5 and total["open_conflicts"] == 0
    assert total["indicators"]["insurance"]["passing"] == 5
    below = body["below_line"]
    assert below["total"] == 1
    assert below["households"][0]["household_no"] == "H4"
    assert below["households"][0]["per_capita_income"] < 8700
    assert below["households"][0]["monitoring_line"] == 8700


def test_rollup_agrees_with_the_form_engine(surveyed: Flask) -> None:
    config = MonitoringConfig(monitoring_lines={"53": {2026: 8700}})
    with surveyed.app_context():
        expected = [
            household_indicators(h.data_by_form(), h.village_code, 2026, config)
            for h in household_records("", chunk_rows=4)
        ]
        body = rollup(Principal(1, "t", "county_admin", ""), level="county", config=config)
    assert len(expected) == 5
    (county,) = body["areas"]
    assert county["area"] == "530102"
    assert county["all_assured"] == sum(p.all_assured is True for p in expected)
    assert county["open_problems"] == sum(len(p.open_problems) for p in expected)
    assert county["monitoring_objects"] == sum(
        p.monitoring_category not in (None, "", "无") for p in expected
    )


def test_township_rollup_and_monitoring_objects(
    surveyed: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    body = client.get(URL, query_string={"level": "township"}, headers=admin_headers).json
    assert [(a["area"], a["households"]) for a in body["areas"]] == [
        ("530102001", 4),
        ("530102002", 1),
    ]
    listed = body["monitoring_objects"]["households"]
    assert body["monitoring_objects"]["total"] == len(listed) >= 1
    h4 = next(row for row in listed if row["household_no"] == "H4")
    assert h4["monitoring_category"] == "边缘易致贫户"
    days = [row["days_since_identification"] for row in listed]
    assert all(isinstance(d, int) and d > 0 for d in days)
    assert days == sorted(days, reverse=True)


def test_township_reviewer_sees_only_its_township(surveyed: Flask, client: FlaskClient) -> None:
    add_user(surveyed, "reviewer", role="township_reviewer", area="530102002")
    headers = login(client, "reviewer")
    body = client.get(URL, query_string={"area": "530102"}, headers=headers).json
    assert body["area"] == "530102002"
    assert [a["area"] for a in body["areas"]] == [V3]
    assert body["total"]["households"] == 1
    outside = client.get(URL, query_string={"area": "530102001"}, headers=headers)
    assert_error(outside, 403, "outside_area")
    listed = client.get(f"{URL}/households", headers=headers).json
    assert [h["household_no"] for h in listed["households"]] == ["H5"]


def test_household_list_filters_by_problem_and_pages(
    surveyed: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    body = client.get(
        f"{URL}/households", query_string={"problem": "housing"}, headers=admin_headers
    ).json
    assert body["total"] == 1
    (only,) = body["households"]
    assert only["household_no"] == "H2" and only["housing_safe"] is False
    assert set(only["record_ids"]) == {
        "household_roster",
        "housing_safety",
        "drinking_water",
        "compulsory_education",
        "medical_insurance",
        "monitoring_household",
    }
    page = client.get(
        f"{URL}/households", query_string={"limit": 2, "offset": 2}, headers=admin_headers
    ).json
    assert page["total"] == 5
    assert [h["household_no"] for h in page["households"]] == ["H3", "H4"]


def test_round_filter_and_open_conflicts(
    surveyed: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    from server.storage.database import writing
    from server.storage.models import ConflictItem
    from server.storage.types import utcnow

    other = sample_household(9, village_code=V1)
    ids = store_household(surveyed, other, village_code=V1, household_no="H9", round="2027-annual")
    with surveyed.app_context(), writing() as session:
        session.add(
            ConflictItem(
                id="c-1",
                record_id=ids["housing_safety"],
                village_code=V1,
                kind="review_field",
                path="appraisal_grade",
                base=None,
                mine={"value": "C"},
                theirs={"value": "D"},
                status="open",
                created_at=utcnow(),
            )
        )
    body = client.get(URL, query_string={"round": "2027-annual"}, headers=admin_headers).json
    assert body["year"] == 2027
    assert body["total"]["households"] == 1
    assert _area(body, V1)["open_conflicts"] == 1
    assert _area(body, V1)["oldest_conflict_days"] == 0


def test_bad_queries_get_the_error_shape(
    app: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    assert_error(client.get(URL), 401, "missing_token")
    bad_level = client.get(URL, query_string={"level": "street"}, headers=admin_headers)
    assert_error(bad_level, 400, "validation_failed")
    bad_area = client.get(URL, query_string={"area": "53x"}, headers=admin_headers)
    assert_error(bad_area, 400, "validation_failed")
    empty = client.get(URL, headers=admin_headers).json
    assert empty["total"]["households"] == 0 and empty["areas"] == []


def test_survey_year_defaults_to_today() -> None:
    from server.services.indicators import survey_year

    assert survey_year("2025-annual", date(2026, 1, 1)) == 2025
    assert survey_year("monitoring-2026-11", date(2027, 3, 1)) == 2027
    assert survey_year(None, date(2026, 5, 1)) == 2026


TODAY = date(2026, 11, 25)
COUNTY_ADMIN = Principal(1, "t", "county_admin", "")


def test_open_problems_are_dated_from_the_first_failing_round(app: Flask) -> None:
    config = MonitoringConfig(monitoring_lines={"53": {2025: 8700, 2026: 8700}})
    autumn_2025 = datetime(2025, 9, 1, 4, tzinfo=UTC)  # 12:00 in Beijing
    autumn_2026 = datetime(2026, 9, 10, 4, tzinfo=UTC)
    dangerous = problem_household("dangerous_house", 11, village_code=V1)
    safe = sample_household(11, village_code=V1)
    housing = ("housing_safety",)
    # H1: dangerous in 2025 and still in 2026; H2: repaired in 2026; H3: dangerous since 2026.
    for number, first, second in (
        ("H1", dangerous, dangerous),
        ("H2", dangerous, safe),
        ("H3", safe, dangerous),
    ):
        store_household(
            app,
            first,
            village_code=V1,
            household_no=number,
            round="2025-annual",
            at=autumn_2025,
            forms=housing,
        )
        store_household(
            app,
            second,
            village_code=V1,
            household_no=number,
            round="2026-annual",
            at=autumn_2026,
            forms=housing,
        )
    with app.app_context():
        listed = household_list(COUNTY_ADMIN, round="2026-annual", today=TODAY, config=config)
        body = rollup(COUNTY_ADMIN, round="2026-annual", today=TODAY, config=config)
        earlier = household_list(COUNTY_ADMIN, round="2025-annual", today=TODAY, config=config)
    problems = {h["household_no"]: h["problems"] for h in listed["households"]}
    assert problems["H1"] == [{"problem": "housing", "found_on": "2025-09-01", "days_open": 450}]
    assert problems["H2"] == []
    assert problems["H3"] == [{"problem": "housing", "found_on": "2026-09-10", "days_open": 76}]
    (village,) = body["areas"]
    assert village["open_problems_by_indicator"]["housing"] == 2
    assert village["oldest_open_problem_days"] == 450
    # As of the 2025 round, H1 and H2 had just been found (H3's 2026 record is not counted).
    before = {h["household_no"]: h["problems"] for h in earlier["households"]}
    assert [p["found_on"] for p in before["H1"] + before["H2"]] == ["2025-09-01"] * 2
    assert before["H3"] == []


def test_sharp_income_fall_marks_a_household_newly_at_risk(app: Flask) -> None:
    config = MonitoringConfig(
        monitoring_lines={"53": {2025: 8700, 2026: 8700}},
        income_drop_percents={"53": {2026: 30}},
    )
    steady = sample_household(21, village_code=V2)["monitoring_household"]
    fallen = dict(steady)
    for key in ("wage_income", "business_income", "property_income", "transfer_income"):
        fallen[key] = round(steady[key] * 0.4, 2)
    fallen["production_costs"] = round(steady["production_costs"] * 0.4, 2)
    for number, second in (("H1", steady), ("H2", fallen)):
        store_household(
            app,
            {"monitoring_household": steady},
            village_code=V2,
            household_no=number,
            round="2025-annual",
            at=datetime(2025, 10, 1, tzinfo=UTC),
        )
        store_household(
            app,
            {"monitoring_household": second},
            village_code=V2,
            household_no=number,
            round="2026-annual",
            at=datetime(2026, 10, 1, tzinfo=UTC),
        )
    with app.app_context():
        body = rollup(COUNTY_ADMIN, round="2026-annual", today=TODAY, config=config)
        listed = household_list(COUNTY_ADMIN, round="2026-annual", today=TODAY, config=config)
    assert body["total"]["newly_at_risk"] == 1
    (flagged,) = body["newly_at_risk"]["households"]
    assert flagged["household_no"] == "H2"
    assert flagged["round_change"]["income_drop"] is True
    assert flagged["round_change"]["income_change_percent"] == -60.0
    changes = {h["household_no"]: h["round_change"] for h in listed["households"]}
    assert changes["H1"]["flagged"] is False and changes["H1"]["income_change_percent"] == 0.0


def _households_of(response: Any) -> set[str]:
    assert response.status_code == 200, response.json
    return {item["household_no"] for item in response.json["items"]}


def test_records_filter_by_indicator_uses_the_dashboard_pictures(
    surveyed: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    def records(**query: str) -> Any:
        return client.get("/api/v1/records", query_string=query, headers=admin_headers)

    everyone = {"H1", "H2", "H3", "H4", "H5"}
    assert _households_of(records(indicator="housing", failing="true")) == {"H2"}
    assert _households_of(records(indicator="water", failing="true")) == {"H3"}
    assert _households_of(records(indicator="education", failing="true")) == {"H5"}
    assert _households_of(records(indicator="income", failing="true")) == {"H4"}
    assert _households_of(records(indicator="insurance", failing="true")) == set()
    assert _households_of(records(indicator="housing", failing="false")) == everyone - {"H2"}
    assert _households_of(records(indicator="housing")) == everyone
    # Combined with the other filters; every record of a matching household is listed.
    narrowed = records(indicator="water", failing="false", village=V1, form_id="drinking_water")
    assert _households_of(narrowed) == {"H1", "H2"}
    assert {item["form_id"] for item in narrowed.json["items"]} == {"drinking_water"}
    page = records(indicator="housing", failing="false", limit="1", offset="1")
    whole = records(indicator="housing", failing="false")
    assert page.json["total"] == whole.json["total"] == len(whole.json["items"]) > 1
    assert page.json["items"] == whole.json["items"][1:2]
    error = assert_error(records(indicator="roads"), 400, "validation_failed")
    assert "indicator" in error["details"]["fields"]
    assert_error(records(failing="true"), 400, "validation_failed")


def test_records_filter_by_indicator_stays_in_a_reviewers_area(
    surveyed: Flask, client: FlaskClient
) -> None:
    add_user(surveyed, "li", role="township_reviewer", area="530102001")
    reviewer = login(client, "li")
    response = client.get(
        "/api/v1/records", query_string={"indicator": "education"}, headers=reviewer
    )
    assert _households_of(response) == {"H1", "H2", "H3", "H4"}  # H5 is in another township
