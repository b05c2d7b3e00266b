"""The records API: filters, area scoping, masking of sensitive fields, history, quarantine
access — on records uploaded by real devices (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from forms.instruments.samples import sample_household
from server.services.masking import mask
from tests.server.conftest import add_user, assert_error, login
from tests.server.sync_device import (
    FAR_VILLAGE,
    HOUSE_A,
    OTHER_TOWNSHIP,
    TOWNSHIP,
    VILLAGE,
    SyncDevice,
    county,
)

__all__ = ["county"]  # the fixture, imported for pytest


@pytest.fixture
def uploaded(county: Flask, client: FlaskClient, admin_headers: dict[str, str]) -> dict[str, Any]:
    """A roster and a house in VILLAGE, a house in FAR_VILLAGE (another township)."""
    near = SyncDevice.enroll(client, admin_headers, VILLAGE)
    far = SyncDevice.enroll(client, admin_headers, FAR_VILLAGE)
    roster = sample_household(3, village_code=VILLAGE)["household_roster"]
    household_no = roster["household_no"]
    roster_id = near.create("household_roster", roster, village=VILLAGE, household_no=household_no)
    house_id = near.create("housing_safety", HOUSE_A, village=VILLAGE, household_no=household_no)
    near.sync()
    near.put(house_id, "housing_safety", {"storeys": 2})
    near.sync()
    far_id = far.create("housing_safety", HOUSE_A, village=FAR_VILLAGE, household_no="F1")
    far.sync()
    return {
        "roster": roster,
        "roster_id": roster_id,
        "house_id": house_id,
        "far_id": far_id,
        "device": near,
    }


def test_list_filters_and_masks_sensitive_fields(
    client: FlaskClient, admin_headers: dict[str, str], uploaded: dict[str, Any]
) -> None:
    def listed(**query: Any) -> list[dict[str, Any]]:
        response = client.get("/api/v1/records", query_string=query, headers=admin_headers)
        assert response.status_code == 200, response.get_json()
        return list(response.get_json()["items"])

    assert {r["record_id"] for r in listed()} == {
        uploaded["roster_id"],
        uploaded["house_id"],
        uploaded["far_id"],
    }
    assert {r["record_id"] for r in listed(village=VILLAGE)} == {
        uploaded["roster_id"],
        uploaded["house_id"],
    }
    assert [r["record_id"] for r in listed(village=OTHER_TOWNSHIP)] == [uploaded["far_id"]]
    assert [r["record_id"] for r in listed(form_id="household_roster")] == [uploaded["roster_id"]]
    assert listed(round="2025-annual") == []
    assert len(listed(round="2026-annual")) == 3

    (roster,) = listed(form_id="household_roster")
    phone = uploaded["roster"]["phone"]
    # The same rule as exports (server.services.masking): an ID keeps its first 6 and last 4.
    assert roster["data"]["phone"] == phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
    members = uploaded["roster"]["members"]
    assert [m["id_number"] for m in roster["data"]["members"]] == [
        mask(m["id_number"]) for m in members
    ]
    for member, real in zip(roster["data"]["members"], members, strict=True):
        assert member["id_number"] == real["id_number"][:6] + "*" * 8 + real["id_number"][-4:]
        assert member["health"] == "***"
        assert member["name"]  # not sensitive: shown
    assert phone not in str(roster)


def test_detail_shows_history_and_reveals_sensitive_fields_to_county_admins_only(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str], uploaded: dict[str, Any]
) -> None:
    roster_id, house_id = uploaded["roster_id"], uploaded["house_id"]
    detail = client.get(f"/api/v1/records/{roster_id}", headers=admin_headers).get_json()
    real_ids = {m["id_number"] for m in uploaded["roster"]["members"]}
    assert {m["id_number"] for m in detail["data"]["members"]} == real_ids
    assert detail["history"][0]["changes"]["phone"] == uploaded["roster"]["phone"]

    headers = login_reviewer(county, client, "reviewer-1", TOWNSHIP)
    masked = client.get(f"/api/v1/records/{roster_id}", headers=headers).get_json()
    assert not real_ids & {m["id_number"] for m in masked["data"]["members"]}
    assert uploaded["roster"]["phone"] not in str(masked["history"])

    house = client.get(f"/api/v1/records/{house_id}", headers=headers).get_json()
    assert house["revision"] > 0 and house["data"]["storeys"] == 2
    device_id = uploaded["device"].device_id
    assert [(h["kind"], h["device_id"], h["op_seq"]) for h in house["history"]] == [
        ("put", device_id, 2),
        ("put", device_id, 3),
    ]
    assert house["history"][1]["changes"] == {"storeys": 2}
    assert house["history"][1]["outcome"]["fields"] == {"storeys": "applied"}
    assert house["fields"]["storeys"]["status"] == "ok"
    assert house["open_conflicts"] == []


def login_reviewer(app: Flask, client: FlaskClient, name: str, township: str) -> dict[str, str]:
    add_user(app, name, "township_reviewer", township)
    return login(client, name)


def test_a_reviewer_sees_only_its_township(
    county: Flask, client: FlaskClient, uploaded: dict[str, Any]
) -> None:
    headers = login_reviewer(county, client, "reviewer-2", OTHER_TOWNSHIP)
    listed = client.get("/api/v1/records", headers=headers).get_json()
    assert [r["record_id"] for r in listed["items"]] == [uploaded["far_id"]]
    assert listed["total"] == 1
    for record_id in (uploaded["roster_id"], uploaded["house_id"]):
        assert_error(
            client.get(f"/api/v1/records/{record_id}", headers=headers), 404, "record_not_found"
        )
    assert_error(client.get("/api/v1/records/no-such-id", headers=headers), 404, "record_not_found")


def test_quarantine_is_for_county_admins(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str], uploaded: dict[str, Any]
) -> None:
    device = uploaded["device"]
    device.create("housing_safety", {"storeys": 0}, village=VILLAGE, household_no="Q1")
    device.sync()
    headers = login_reviewer(county, client, "reviewer-3", TOWNSHIP)
    assert_error(client.get("/api/v1/quarantine", headers=headers), 403, "role_forbidden")
    assert_error(
        client.post("/api/v1/quarantine/1/map", json={"form_version": 1}, headers=headers),
        403,
        "role_forbidden",
    )
    items = client.get("/api/v1/quarantine", headers=admin_headers).get_json()["items"]
    assert [(i["kind"], i["op_seq"], i["status"]) for i in items] == [("invalid", 4, "held")]
    codes = {r["code"] for r in items[0]["reasons"]}
    assert {"required", "constraint"} <= codes
    # An invalid op cannot be mapped into validity: re-running it fails again and stays held.
    rerun = client.post(
        f"/api/v1/quarantine/{items[0]['id']}/map", json={"form_version": 1}, headers=admin_headers
    )
    assert_error(rerun, 422, "quarantine_rerun_rejected")
    assert client.get("/api/v1/quarantine", headers=admin_headers).get_json()["total"] == 1
    assert_error(
        client.post("/api/v1/quarantine/999/map", json={"form_version": 1}, headers=admin_headers),
        404,
        "quarantine_not_found",
    )
