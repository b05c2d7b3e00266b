"""Monitoring-line configuration over HTTP, and the MonitoringConfig the indicators read."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from server.services.monitoring import monitoring_config
from tests.server.conftest import add_user, assert_error, login

VILLAGE = "530102001201"


def test_lines_by_region_and_year_feed_the_indicator_config(
    client: FlaskClient, app: Flask, admin_headers: dict[str, str]
) -> None:
    province = client.put(
        "/api/v1/monitoring-lines/53/2025", json={"income_line": 8700}, headers=admin_headers
    )
    assert province.status_code == 200, province.json
    assert province.json["income_line"] == 8700 and province.json["updated_by"] == "admin"
    county = client.put(
        "/api/v1/monitoring-lines/530102/2025",
        json={"income_line": 9600, "income_drop_percent": 30, "water_region_type": "water_short"},
        headers=admin_headers,
    )
    assert county.status_code == 200, county.json
    # Setting again replaces (one row per region and year).
    client.put(
        "/api/v1/monitoring-lines/53/2025", json={"income_line": 8800}, headers=admin_headers
    )
    listed = client.get("/api/v1/monitoring-lines", headers=admin_headers).json
    assert [(r["region_code"], r["year"], r["income_line"]) for r in listed] == [
        ("53", 2025, 8800),
        ("530102", 2025, 9600),
    ]
    with app.app_context():
        config = monitoring_config()
    assert config.monitoring_line(VILLAGE, 2025) == 9600
    assert config.monitoring_line("530200001201", 2025) == 8800
    assert config.income_drop_percent(VILLAGE, 2025) == 30
    assert config.water_region_type(VILLAGE) == "water_short"

    assert client.delete("/api/v1/monitoring-lines/530102/2025", headers=admin_headers).json == {
        "deleted": True
    }
    assert_error(
        client.delete("/api/v1/monitoring-lines/530102/2025", headers=admin_headers),
        404,
        "monitoring_line_not_found",
    )
    entries = client.get("/api/v1/audit", headers=admin_headers).json
    # Newest first: the refused second delete (a 404 is audited: guessed ids show up), then
    # the delete and the set.
    assert [e["action"] for e in entries[:3]] == [
        "api.refused",
        "monitoring_line.delete",
        "monitoring_line.set",
    ]
    assert entries[0]["details"]["code"] == "monitoring_line_not_found"


def test_bad_values_are_refused(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    for path, body in (
        ("/api/v1/monitoring-lines/53/1900", {"income_line": 8700}),
        ("/api/v1/monitoring-lines/5x/2025", {"income_line": 8700}),
        ("/api/v1/monitoring-lines/53/2025", {"income_line": 8700, "income_drop_percent": -5}),
    ):
        assert_error(
            client.put(path, json=body, headers=admin_headers), 400, "monitoring_config_invalid"
        )
    assert_error(
        client.put(
            "/api/v1/monitoring-lines/53/2025", json={"income_line": -1}, headers=admin_headers
        ),
        400,
        "validation_failed",
    )


def test_lines_are_set_only_inside_the_admins_area(client: FlaskClient, app: Flask) -> None:
    add_user(app, "root")
    root = login(client, "root")
    client.post(
        "/api/v1/users",
        json={
            "username": "kunming",
            "password": "x" * 12,
            "role": "county_admin",
            "area_prefix": "530102",
        },
        headers=root,
    )
    add_user(app, "reviewer", role="township_reviewer", area="530102001")
    county = login(client, "kunming", "x" * 12)
    assert_error(
        client.put("/api/v1/monitoring-lines/53/2025", json={"income_line": 1}, headers=county),
        403,
        "outside_area",
    )
    own = client.put(
        "/api/v1/monitoring-lines/530102/2025", json={"income_line": 9000}, headers=county
    )
    assert own.status_code == 200
    reviewer = login(client, "reviewer")
    assert_error(
        client.put(
            "/api/v1/monitoring-lines/530102001/2025", json={"income_line": 1}, headers=reviewer
        ),
        403,
        "role_forbidden",
    )
    assert len(client.get("/api/v1/monitoring-lines", headers=reviewer).json) == 1
