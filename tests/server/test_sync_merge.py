"""Merging through the sync endpoint: rejections with quarantine, field merges, review conflicts
resolved by an admin, duplicate households, suspect clocks — all over real sealed exchanges on
SQLite and PostgreSQL, checked through the admin API."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.storage import models
from sync_protocol.merge import RecordState
from tests.server.sync_device import (
    HOUSE_A,
    OTHER_VILLAGE,
    VILLAGE,
    YEAR_MS,
    SyncDevice,
    count,
    county,
)

__all__ = ["county"]  # the fixture, imported for pytest

#: A D-grade house rebuilt and accepted: valid, and still valid as a C or a 无房 household.
HOUSE_D: dict[str, Any] = {
    "appraisal_grade": "D",
    "appraisal_date": "2025-08-04",
    "structure": "土坯/夯土房（无立柱）",
    "build_year": 1985,
    "storeys": 1,
    "floor_area": 60.0,
    "safety_basis": "改造安全",
    "renovation_method": "拆除重建",
    "renovation_year": 2024,
    "renovation_accepted": True,
}


@pytest.fixture
def pair(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> tuple[SyncDevice, SyncDevice, str]:
    """Two devices of one village that both hold one D-grade house record."""
    first = SyncDevice.enroll(client, admin_headers, VILLAGE)
    # One second ahead (well inside the drift allowance), so the second device's edits carry the
    # later stamps whatever the millisecond.
    second = SyncDevice.enroll(client, admin_headers, VILLAGE, clock_offset_ms=1000)
    record_id = first.create("housing_safety", HOUSE_D, village=VILLAGE, household_no="H100")
    first.sync()
    second.sync()
    assert record_id in second.states
    return first, second, record_id


def quarantine(client: FlaskClient, headers: dict[str, str], **query: str) -> list[dict]:
    response = client.get("/api/v1/quarantine", query_string=query, headers=headers)
    assert response.status_code == 200, response.get_json()
    return list(response.get_json()["items"])


def test_out_of_scope_op_is_rejected_and_quarantined(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    device.create("housing_safety", HOUSE_A, village=OTHER_VILLAGE, household_no="H1")
    ack = device.sync().acks[0].acks[0]
    assert ack.status == "rejected"
    assert [r["code"] for r in ack.reasons] == ["out_of_scope"]
    assert count(county, models.Record) == 0
    (held,) = quarantine(client, admin_headers, kind="out_of_scope")
    assert held["device_id"] == device.device_id and held["op_seq"] == 1
    assert held["op"]["household"]["village_code"] == OTHER_VILLAGE
    assert held["village_code"] == OTHER_VILLAGE


def test_invalid_record_is_rejected_with_field_reasons_and_visible_to_admins(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    bad = {k: v for k, v in HOUSE_A.items() if k != "appraisal_grade"}
    device.create("housing_safety", {**bad, "storeys": 99}, village=VILLAGE, household_no="H2")
    good = device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H3")
    reply = device.sync()
    rejected, applied = reply.acks[0].acks
    assert rejected.status == "rejected" and rejected.revision == 0
    assert {(r["code"], r["path"]) for r in rejected.reasons} == {
        ("required", "appraisal_grade"),
        ("constraint", "storeys"),
        ("check", "safety_basis"),  # 鉴定安全 needs an A or B grade
    }
    assert all(r["message"]["zh"] and r["severity"] == "error" for r in rejected.reasons)
    assert applied.status == "applied"
    assert reply.acks[0].high_water_mark == 2  # the rejected op counts as processed
    assert count(county, models.Record) == 1 and good in device.states
    (held,) = quarantine(client, admin_headers, kind="invalid")
    assert {r["path"] for r in held["reasons"]} == {"appraisal_grade", "storeys", "safety_basis"}
    assert held["op"]["changes"]["storeys"] == 99  # what was typed is kept whole


def test_warnings_do_not_reject_and_come_back_with_the_record(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    record_id = device.create(
        "housing_safety", {**HOUSE_A, "storeys": 3}, village=VILLAGE, household_no="H4"
    )
    ack = device.sync().acks[0]
    assert ack.acks[0].status == "applied"
    (state,) = ack.records
    assert [w.get("check") for w in state["warnings"]] == ["many_storeys"]
    detail = client.get(f"/api/v1/records/{record_id}", headers=admin_headers).get_json()
    assert [w.get("check") for w in detail["warnings"]] == ["many_storeys"]


def test_unknown_form_version_is_quarantined_then_mapped_by_an_admin(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    record_id = device.create(
        "housing_safety", HOUSE_A, village=VILLAGE, household_no="H5", version=9
    )
    ack = device.sync().acks[0].acks[0]
    assert ack.status == "rejected" and ack.reasons[0]["code"] == "unknown_form_version"
    (held,) = quarantine(client, admin_headers, kind="unknown_form_version")

    not_published = client.post(
        f"/api/v1/quarantine/{held['id']}/map", json={"form_version": 7}, headers=admin_headers
    )
    assert not_published.status_code == 400
    assert not_published.get_json()["error"]["code"] == "form_version_not_published"

    mapped = client.post(
        f"/api/v1/quarantine/{held['id']}/map", json={"form_version": 1}, headers=admin_headers
    )
    assert mapped.status_code == 200, mapped.get_json()
    assert mapped.get_json()["status"] == "released"
    assert mapped.get_json()["ack"]["status"] == "applied"
    assert quarantine(client, admin_headers, kind="unknown_form_version") == []
    again = client.post(
        f"/api/v1/quarantine/{held['id']}/map", json={"form_version": 1}, headers=admin_headers
    )
    assert again.status_code == 409

    device.sync()
    assert device.values(record_id)["appraisal_grade"] == "A"
    audit = client.get(
        "/api/v1/audit", query_string={"action": "quarantine.map"}, headers=admin_headers
    )
    assert len(audit.get_json()) == 1


def test_edits_of_different_fields_merge_without_conflict(
    pair: tuple[SyncDevice, SyncDevice, str], county: Flask
) -> None:
    first, second, record_id = pair
    first.put(record_id, "housing_safety", {"storeys": 2})
    second.put(record_id, "housing_safety", {"floor_area": 75.5})
    assert first.sync().acks[0].acks[0].status == "applied"
    assert second.sync().acks[0].acks[0].status == "applied"
    first.sync()
    for device in (first, second):
        values = device.values(record_id)
        assert (values["storeys"], values["floor_area"]) == (2, 75.5)
    assert count(county, models.ConflictItem) == 0


def test_review_field_conflict_is_resolved_by_an_admin_and_reaches_both_devices(
    pair: tuple[SyncDevice, SyncDevice, str],
    county: Flask,
    client: FlaskClient,
    admin_headers: dict[str, str],
) -> None:
    first, second, record_id = pair
    mine = first.put(record_id, "housing_safety", {"appraisal_grade": "C"})
    second.put(record_id, "housing_safety", {"appraisal_grade": "无房"})
    assert first.sync().acks[0].acks[0].status == "applied"
    ack = second.sync().acks[0].acks[0]
    assert ack.status == "conflict"
    (conflict_id,) = ack.conflict_ids

    listed = client.get("/api/v1/conflicts", headers=admin_headers).get_json()
    assert [c["id"] for c in listed["items"]] == [conflict_id]
    assert listed["items"][0]["path"] == "appraisal_grade"
    assert listed["items"][0]["form_id"] == "housing_safety"
    detail = client.get(f"/api/v1/conflicts/{conflict_id}", headers=admin_headers).get_json()
    assert (detail["base"], detail["mine"], detail["theirs"]) == ("D", "无房", "C")
    assert detail["reason"] == "review"
    assert detail["label"]["zh"]
    assert {c["value"] for c in detail["candidates"]} == {"C", "无房"}

    bad = client.post(
        f"/api/v1/conflicts/{conflict_id}/resolve",
        json={"candidate": "nope"},
        headers=admin_headers,
    )
    assert bad.status_code == 400
    resolved = client.post(
        f"/api/v1/conflicts/{conflict_id}/resolve",
        json={"candidate": mine.hlc},
        headers=admin_headers,
    )
    assert resolved.status_code == 200, resolved.get_json()
    assert resolved.get_json()["status"] == "resolved"
    twice = client.post(
        f"/api/v1/conflicts/{conflict_id}/resolve",
        json={"candidate": mine.hlc},
        headers=admin_headers,
    )
    assert twice.status_code == 409 and twice.get_json()["error"]["code"] == "conflict_not_open"

    for device in (first, second):
        device.sync()
        state = RecordState.from_dict(device.states[record_id])
        assert device.values(record_id)["appraisal_grade"] == "C"
        assert state.conflicts == []
    open_now = client.get("/api/v1/conflicts", headers=admin_headers).get_json()
    assert open_now["total"] == 0
    audit = client.get(
        "/api/v1/audit", query_string={"action": "conflict.resolve"}, headers=admin_headers
    ).get_json()
    assert [entry["target_id"] for entry in audit] == [conflict_id]
    history = client.get(f"/api/v1/records/{record_id}", headers=admin_headers).get_json()
    assert [h["kind"] for h in history["history"]] == ["put", "put", "put", "resolve"]

    # A device keeps editing on top of the resolution without a new conflict.
    second.put(record_id, "housing_safety", {"appraisal_grade": "D"})
    assert second.sync().acks[0].acks[0].status == "applied"


def test_reviewer_can_enter_a_new_value(
    pair: tuple[SyncDevice, SyncDevice, str], client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    first, second, record_id = pair
    first.put(record_id, "housing_safety", {"appraisal_grade": "C"})
    second.put(record_id, "housing_safety", {"appraisal_grade": "无房"})
    first.sync()
    (conflict_id,) = second.sync().acks[0].acks[0].conflict_ids
    invalid = client.post(
        f"/api/v1/conflicts/{conflict_id}/resolve", json={"value": "Z"}, headers=admin_headers
    )
    assert invalid.status_code == 422
    assert invalid.get_json()["error"]["code"] == "resolution_invalid"
    assert invalid.get_json()["error"]["details"]["reasons"][0]["path"] == "appraisal_grade"
    ok = client.post(
        f"/api/v1/conflicts/{conflict_id}/resolve", json={"value": "D"}, headers=admin_headers
    )
    assert ok.status_code == 200, ok.get_json()
    first.sync()
    assert first.values(record_id)["appraisal_grade"] == "D"


def test_a_device_a_year_ahead_is_accepted_flagged_and_does_not_win_silently(
    pair: tuple[SyncDevice, SyncDevice, str],
    county: Flask,
    client: FlaskClient,
    admin_headers: dict[str, str],
) -> None:
    first, _second, record_id = pair
    future = SyncDevice.enroll(client, admin_headers, VILLAGE, clock_offset_ms=YEAR_MS)
    future.sync()  # a hello a year ahead is accepted
    first.put(record_id, "housing_safety", {"build_year": 1986})
    future.put(record_id, "housing_safety", {"build_year": 1990})
    assert first.sync().acks[0].acks[0].status == "applied"
    ack = future.sync().acks[0].acks[0]
    # build_year is an lww field: a normal later stamp would simply win; a suspect one may not.
    assert ack.status == "conflict"
    (conflict_id,) = ack.conflict_ids
    detail = client.get(f"/api/v1/conflicts/{conflict_id}", headers=admin_headers).get_json()
    assert detail["reason"] == "suspect_clock"
    assert any(c["suspect"] for c in detail["candidates"])
    record = client.get(f"/api/v1/records/{record_id}", headers=admin_headers).get_json()
    assert record["fields"]["build_year"]["suspect"] is True
    assert record["fields"]["build_year"]["status"] == "conflict"
    assert conflict_id in record["open_conflicts"]

    # Alone on a field, a suspect edit is accepted but stays flagged.
    future.put(record_id, "housing_safety", {"storeys": 2})
    assert future.sync().acks[0].acks[0].status == "applied"
    record = client.get(f"/api/v1/records/{record_id}", headers=admin_headers).get_json()
    assert record["fields"]["storeys"]["suspect"] is True


def test_two_devices_creating_one_household_make_a_duplicate_conflict(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    first = SyncDevice.enroll(client, admin_headers, VILLAGE)
    second = SyncDevice.enroll(client, admin_headers, VILLAGE)
    kept = first.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H200")
    dropped = second.create("housing_safety", HOUSE_D, village=VILLAGE, household_no="H200")
    assert first.sync().acks[0].acks[0].status == "applied"
    ack = second.sync().acks[0].acks[0]
    assert ack.status == "conflict"
    (conflict_id,) = ack.conflict_ids
    detail = client.get(f"/api/v1/conflicts/{conflict_id}", headers=admin_headers).get_json()
    assert detail["kind"] == "duplicate_household"
    assert {c["record_id"] for c in detail["candidates"]} == {kept, dropped}

    resolved = client.post(
        f"/api/v1/conflicts/{conflict_id}/resolve", json={"keep": kept}, headers=admin_headers
    )
    assert resolved.status_code == 200, resolved.get_json()
    second.sync()
    assert RecordState.from_dict(second.states[dropped]).deleted
    assert second.values(kept)["appraisal_grade"] == "A"
    listed = client.get(
        "/api/v1/records", query_string={"household_no": "H200"}, headers=admin_headers
    ).get_json()
    assert [r["record_id"] for r in listed["items"]] == [kept]


def test_a_nul_character_rejects_only_its_op_and_is_kept_readable(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    device.create(
        "housing_safety", {**HOUSE_A, "structure": "砖\x00混"}, village=VILLAGE, household_no="N1"
    )
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="N2")
    bad, good = device.sync().acks[0].acks
    assert bad.status == "rejected" and bad.reasons[0]["code"] == "invalid_character"
    assert good.status == "applied"
    (held,) = quarantine(client, admin_headers, kind="invalid")
    assert held["op"]["changes"]["structure"] == "砖\ufffd混"


def test_identifiers_longer_than_the_columns_reject_only_their_op(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    household = {"village_code": VILLAGE, "household_no": "L1"}
    device.put("r" * 37, "housing_safety", HOUSE_A, household=household)
    device.put("r" * 36, "housing_safety", HOUSE_A, household=household, round="x" * 41)
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="L2")
    long_id, long_round, good = device.sync().acks[0].acks
    assert long_id.reasons[0]["code"] == long_round.reasons[0]["code"] == "identifier_too_long"
    assert good.status == "applied"


def test_a_server_fault_on_one_op_rejects_and_keeps_it_without_blocking_the_device(
    county: Flask,
    client: FlaskClient,
    admin_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from server.services import record_ops

    real_merge = record_ops.merge
    poisoned = "0" * 36

    def failing_merge(state: Any, op: Any, *args: Any, **kwargs: Any) -> Any:
        # The injected fault: the merge breaks on one record's data.
        if op.record_id == poisoned:
            raise RuntimeError("injected fault")
        return real_merge(state, op, *args, **kwargs)

    monkeypatch.setattr(record_ops, "merge", failing_merge)
    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    household = {"village_code": VILLAGE, "household_no": "S1"}
    device.put(poisoned, "housing_safety", HOUSE_A, household=household)
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="S2")
    faulty, good = device.sync().acks[0].acks
    assert faulty.status == "rejected" and faulty.reasons[0]["code"] == "server_fault"
    assert good.status == "applied"
    (held,) = quarantine(client, admin_headers, kind="invalid")
    assert held["op"]["record_id"] == poisoned


def test_mapping_an_out_of_scope_op_keeps_the_device_scope(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    device.create("housing_safety", HOUSE_A, village=OTHER_VILLAGE, household_no="O1")
    device.sync()
    (held,) = quarantine(client, admin_headers, kind="out_of_scope")
    rerun = client.post(
        f"/api/v1/quarantine/{held['id']}/map", json={"form_version": 1}, headers=admin_headers
    )
    assert rerun.status_code == 422
    assert rerun.get_json()["error"]["details"]["reasons"][0]["code"] == "out_of_scope"
    assert count(county, models.Record) == 0


def test_an_invalid_edit_of_a_stored_record_leaves_it_unchanged(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    record_id = device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="E1")
    device.sync()
    revision = device.states[record_id]["revision"]
    device.put(record_id, "housing_safety", {"storeys": 99})
    ack = device.sync().acks[0]
    assert (ack.acks[0].status, ack.acks[0].revision) == ("rejected", 0)
    assert [(r["code"], r["path"]) for r in ack.acks[0].reasons] == [("constraint", "storeys")]
    # The ack still carries the record as it stands, for the device to show next to its edit.
    (state,) = ack.records
    assert state["revision"] == revision
    assert device.values(record_id)["storeys"] == 1


def test_household_numbers_and_rounds_not_of_their_shape_reject_their_op(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    """A household number is letters/digits/dashes, a round like ``2026-annual`` (leak 4)."""
    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="=HYPERLINK(1)")
    device.put(
        "1" * 36,
        "housing_safety",
        HOUSE_A,
        household={"village_code": VILLAGE, "household_no": "F1"},
        round="+cmd|' /C calc'!A0",
    )
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="F2")
    bad_number, bad_round, good = device.sync().acks[0].acks
    assert bad_number.status == bad_round.status == "rejected"
    assert bad_number.reasons[0]["code"] == "household_invalid"
    assert bad_round.reasons[0]["code"] == "round_invalid"
    assert good.status == "applied"


def test_fields_not_in_the_form_reject_their_op(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    """Leak 10: a path the form does not have is refused, never stored and served."""
    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    device.create(
        "housing_safety",
        {**HOUSE_A, "secret_note": "<script>x</script>"},
        village=VILLAGE,
        household_no="U1",
    )
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="U2")
    bad, good = device.sync().acks[0].acks
    assert bad.status == "rejected", bad
    assert [(r["code"], r["path"]) for r in bad.reasons] == [("unknown_field", "secret_note")]
    assert good.status == "applied"
    listed = client.get("/api/v1/records?form_id=housing_safety", headers=admin_headers)
    assert "secret_note" not in listed.get_data(as_text=True)


def test_a_large_batch_commits_in_bounded_slices(
    database_url: str, app_on: Any, tmp_path: Any
) -> None:
    """Leak 10: one batch of 450 ops never holds the write lock for all of them at once."""
    from sqlalchemy import event

    from server.services.forms import publish_builtins
    from server.storage.database import db
    from tests.server.conftest import add_user, login

    app = app_on(database_url, SYNC_OPS_PER_TRANSACTION=100)
    with app.app_context():
        publish_builtins()
    add_user(app, "admin")
    client = app.test_client()
    headers = login(client, "admin")
    device = SyncDevice.enroll(client, headers, VILLAGE)
    for n in range(450):
        device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no=f"B{n}")
    commits: list[int] = []
    with app.app_context():
        event.listen(db.engine, "commit", lambda conn: commits.append(1))
    request = device.build(batch_size=450)
    reply = device.open(device.post(request.body), request)
    device.apply(reply)
    (ack,) = reply.acks
    assert [a.status for a in ack.acks] == ["applied"] * 450
    assert ack.high_water_mark == device.op_seq
    assert len(commits) >= 5, commits  # five slices of at most 100 ops (plus the hello)
    again = device.sync()
    assert not again.acks or all(a.status != "rejected" for b in again.acks for a in b.acks)
