"""The conflicts API: area and role scoping, filters, delete conflicts — on conflicts made by real
devices over the sealed sync exchange (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_protocol.merge import RecordState
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


def make_grade_conflict(
    client: FlaskClient, admin_headers: dict[str, str], village: str, household_no: str
) -> tuple[str, str]:
    """Two devices of ``village`` change one house's grade differently; (record id, conflict id)."""
    first = SyncDevice.enroll(client, admin_headers, village)
    second = SyncDevice.enroll(client, admin_headers, village, clock_offset_ms=1000)
    record_id = first.create("housing_safety", HOUSE_A, village=village, household_no=household_no)
    first.sync()
    second.sync()
    first.put(record_id, "housing_safety", {"appraisal_grade": "B"})
    # Confirming the old grade while the other device changed it is a conflict too.
    second.put(record_id, "housing_safety", {"appraisal_grade": "A", "storeys": 2})
    first.sync()
    (ack,) = second.sync().acks[0].acks
    assert ack.status == "conflict"
    (conflict_id,) = ack.conflict_ids
    return record_id, conflict_id


@pytest.fixture
def two_townships(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> dict[str, tuple[str, str]]:
    return {
        TOWNSHIP: make_grade_conflict(client, admin_headers, VILLAGE, "H1"),
        OTHER_TOWNSHIP: make_grade_conflict(client, admin_headers, FAR_VILLAGE, "H2"),
    }


def reviewer(app: Flask, client: FlaskClient, name: str, township: str) -> dict[str, str]:
    add_user(app, name, "township_reviewer", township)
    return login(client, name)


def test_a_reviewer_sees_and_resolves_only_conflicts_of_its_township(
    county: Flask,
    client: FlaskClient,
    admin_headers: dict[str, str],
    two_townships: dict[str, tuple[str, str]],
) -> None:
    mine_record, mine = two_townships[TOWNSHIP]
    _other_record, other = two_townships[OTHER_TOWNSHIP]
    headers = reviewer(county, client, "reviewer-1", TOWNSHIP)

    everything = client.get("/api/v1/conflicts", headers=admin_headers).get_json()
    assert {c["id"] for c in everything["items"]} == {mine, other}
    listed = client.get("/api/v1/conflicts", headers=headers).get_json()
    assert [c["id"] for c in listed["items"]] == [mine] and listed["total"] == 1

    # Another township's conflict is absent, even by id, even to resolve.
    assert_error(
        client.get(f"/api/v1/conflicts/{other}", headers=headers), 404, "conflict_not_found"
    )
    assert_error(
        client.post(f"/api/v1/conflicts/{other}/resolve", json={"value": "A"}, headers=headers),
        404,
        "conflict_not_found",
    )
    assert_error(
        client.get(f"/api/v1/records/{_other_record}", headers=headers), 404, "record_not_found"
    )

    detail = client.get(f"/api/v1/conflicts/{mine}", headers=headers).get_json()
    stamp = next(c["stamp"] for c in detail["candidates"] if c["value"] == "B")
    resolved = client.post(
        f"/api/v1/conflicts/{mine}/resolve", json={"candidate": stamp}, headers=headers
    )
    assert resolved.status_code == 200, resolved.get_json()
    closed = client.get(
        "/api/v1/conflicts", query_string={"status": "resolved"}, headers=headers
    ).get_json()
    assert [(c["id"], c["resolved_by"]) for c in closed["items"]] == [(mine, "reviewer-1")]
    audit = client.get(
        "/api/v1/audit", query_string={"action": "conflict.resolve"}, headers=headers
    ).get_json()
    assert [(a["target_id"], a["actor"], a["area_code"]) for a in audit] == [
        (mine, "reviewer-1", VILLAGE)
    ]
    record = client.get(f"/api/v1/records/{mine_record}", headers=headers).get_json()
    assert record["data"]["appraisal_grade"] == "B"


def test_list_filters_by_village_form_and_status(
    county: Flask,
    client: FlaskClient,
    admin_headers: dict[str, str],
    two_townships: dict[str, tuple[str, str]],
) -> None:
    _record, mine = two_townships[TOWNSHIP]

    def ids(**query: str) -> list[str]:
        response = client.get("/api/v1/conflicts", query_string=query, headers=admin_headers)
        assert response.status_code == 200, response.get_json()
        return [c["id"] for c in response.get_json()["items"]]

    assert ids(village=VILLAGE) == [mine]
    assert ids(village=TOWNSHIP) == [mine]
    assert len(ids(form_id="housing_safety")) == 2
    assert ids(form_id="drinking_water") == []
    assert ids(status="resolved") == []
    assert len(ids(status="all")) == 2
    assert_error(
        client.get("/api/v1/conflicts", query_string={"village": "53x"}, headers=admin_headers),
        400,
        "validation_failed",
    )
    assert_error(client.get("/api/v1/conflicts"), 401, "missing_token")


def test_delete_racing_an_edit_is_kept_when_the_reviewer_says_so(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    first = SyncDevice.enroll(client, admin_headers, VILLAGE)
    second = SyncDevice.enroll(client, admin_headers, VILLAGE)
    record_id = first.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H9")
    first.sync()
    second.sync()
    first.delete(record_id)
    second.put(record_id, "housing_safety", {"storeys": 2})
    first.sync()
    ack = second.sync().acks[0].acks[0]
    assert ack.status == "conflict"
    (conflict_id,) = ack.conflict_ids
    detail = client.get(f"/api/v1/conflicts/{conflict_id}", headers=admin_headers).get_json()
    assert detail["kind"] == "delete_edit"
    assert detail["theirs"] == {"storeys": 2}
    wrong = client.post(
        f"/api/v1/conflicts/{conflict_id}/resolve", json={"value": 1}, headers=admin_headers
    )
    assert_error(wrong, 400, "resolution_choice_invalid")
    kept = client.post(
        f"/api/v1/conflicts/{conflict_id}/resolve", json={"action": "keep"}, headers=admin_headers
    )
    assert kept.status_code == 200, kept.get_json()
    for device in (first, second):
        device.sync()
        state = RecordState.from_dict(device.states[record_id])
        assert not state.deleted and state.conflicts == []
        assert device.values(record_id)["storeys"] == 2


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
bodies = st.dictionaries(
    st.sampled_from(("candidate", "value", "action", "keep")) | st.text(max_size=8),
    json_values,
    max_size=3,
)


def test_no_resolution_body_makes_a_500(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    _record_id, conflict_id = make_grade_conflict(client, admin_headers, VILLAGE, "F1")

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(body=bodies | json_values)
    def resolve_with(body: object) -> None:
        response = client.post(
            f"/api/v1/conflicts/{conflict_id}/resolve", json=body, headers=admin_headers
        )
        assert response.status_code in (200, 400, 409, 422), response.get_data(as_text=True)
        if response.status_code != 200:
            error = response.get_json()["error"]
            assert set(error) == {"code", "message", "details"}

    resolve_with()


def make_row_conflict(
    client: FlaskClient, admin_headers: dict[str, str]
) -> tuple[str, str, str, str]:
    """One tablet deletes a roster member row while another corrects that member's ID number;
    returns (record id, conflict id, old ID, corrected ID)."""
    from forms.instruments.samples import sample_household
    from sync_protocol.ops import TOMBSTONE

    roster = sample_household(5, village_code=VILLAGE)["household_roster"]
    first = SyncDevice.enroll(client, admin_headers, VILLAGE)
    second = SyncDevice.enroll(client, admin_headers, VILLAGE, clock_offset_ms=1000)
    record_id = first.create("household_roster", roster, village=VILLAGE, household_no="R1")
    first.sync()
    second.sync()
    member = roster["members"][-1]
    row = f"members/{member['_id']}"
    state = RecordState.from_dict(first.states[record_id])
    op = first.put(record_id, "household_roster", {row: TOMBSTONE})
    op.base.update(state.delete_base(row))
    old = member["id_number"]
    corrected = old[:-5] + ("1" if old[-5] != "1" else "3") + old[-4:]
    from forms.identity import id_check_char

    corrected = corrected[:17] + id_check_char(corrected[:17])
    second.put(record_id, "household_roster", {f"{row}/id_number": corrected})
    first.sync()
    acks = second.sync().acks[0].acks
    assert acks[0].status == "conflict", acks[0]
    return record_id, acks[0].conflict_ids[0], old, corrected


def test_a_reviewer_sees_sensitive_values_of_a_conflict_masked_like_the_records_api(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    """Leak 1: conflicts show sensitive values by the one masking rule (county admins whole)."""
    record_id, conflict_id, old, corrected = make_row_conflict(client, admin_headers)
    headers = reviewer(county, client, "reviewer-m", TOWNSHIP)
    shown = client.get(f"/api/v1/conflicts/{conflict_id}", headers=headers)
    assert shown.status_code == 200, shown.get_json()
    text = shown.get_data(as_text=True)
    assert old not in text and corrected not in text, shown.get_json()
    record = client.get(f"/api/v1/records/{record_id}", headers=headers).get_data(as_text=True)
    assert old not in record
    from server.services.masking import mask

    assert mask(corrected) in text or mask(old) in text
    whole = client.get(f"/api/v1/conflicts/{conflict_id}", headers=admin_headers)
    assert corrected in whole.get_data(as_text=True)
