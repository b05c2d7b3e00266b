"""Downloads and the edges of an exchange: paging, the form manifest stream, a batch that mixes
ops already processed with new ones, a busy database (SQLite, a real lock held elsewhere)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from forms.instruments import builtin_json
from server.services import forms as form_service
from server.services.access import CLI_ACTOR
from server.services.sync import RECORDS_PER_PAGE
from server.settings import sqlite_path
from server.storage import models
from server.storage.database import db
from tests.server.conftest import add_user, assert_error, login, make_app
from tests.server.sync_device import HOUSE_A, TOWNSHIP, VILLAGE, SyncDevice, count, county

__all__ = ["county"]  # the fixture, imported for pytest


def test_a_first_download_larger_than_a_page_arrives_in_pages(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    writer = SyncDevice.enroll(client, admin_headers, VILLAGE)
    total = 2 * RECORDS_PER_PAGE + 50
    ids = {
        writer.create("housing_safety", HOUSE_A, village=VILLAGE, household_no=f"P{i:04}")
        for i in range(total)
    }
    writer.sync(batch_size=200)
    reader = SyncDevice.enroll(client, admin_headers, TOWNSHIP)
    request = reader.build([])
    first = reader.open(reader.post(request.body), request)
    page = next(p for p in first.downloads if p.scope == TOWNSHIP)
    assert page.more and len(page.records) == RECORDS_PER_PAGE and page.after == 0
    reader.apply(first)
    reader.sync()  # follows the pages to the end
    assert set(reader.states) == ids
    revisions = [s["revision"] for s in reader.states.values()]
    assert len(set(revisions)) == total


def test_new_form_versions_travel_in_the_manifest_stream(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    device.sync()
    assert (("housing_safety", 1) in device.forms) and device.cursors["manifest"] > 0
    assert all(not p.forms for p in device.sync().downloads)  # nothing new
    with county.app_context():
        document = builtin_json("housing_safety")
        document["version"] = 2
        form_service.upload_draft(document, actor=CLI_ACTOR)
        draft = [p.forms for p in device.sync().downloads]
        assert all(not forms for forms in draft)  # drafts are not sent
        form_service.publish("housing_safety", 2, actor=CLI_ACTOR)
    (manifest,) = [p for p in device.sync().downloads if p.scope == "manifest"]
    assert [(f["form_id"], f["version"], f["status"]) for f in manifest.forms] == [
        ("housing_safety", 2, "published")
    ]
    assert manifest.forms[0]["definition"]["version"] == 2
    # Records on the new version are accepted at once.
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="V2", version=2)
    assert device.sync().acks[0].acks[0].status == "applied"


def test_a_batch_mixing_processed_and_new_ops_applies_only_the_new(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    for i in range(3):
        device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no=f"M{i}")
    sent = list(device.pending)
    first = device.sync()
    for i in range(3, 5):
        device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no=f"M{i}")
    request = device.build(sent + device.pending)
    reply = device.open(device.post(request.body), request)
    acks = [a.to_dict() for a in reply.acks[0].acks]
    assert acks[:3] == [a.to_dict() for a in first.acks[0].acks]
    assert [a["status"] for a in acks[3:]] == ["applied", "applied"]
    assert reply.acks[0].high_water_mark == 5
    assert count(county, models.Record) == 5
    assert count(county, models.RecordChange) == 5

    # A gap (op 7 without op 6) is refused whole; nothing of it is applied.
    device.op_seq += 1  # op 6 is "lost"
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="M7")
    request = device.build(device.pending[-1:])
    reply = device.open(device.post(request.body), request)
    assert [(f.status, f.code) for f in reply.frames] == [
        ("committed", None),
        ("rejected", "op_sequence_gap"),
    ]
    assert count(county, models.Record) == 5


def test_a_busy_database_answers_503_with_retry_after(sqlite_url: str, tmp_path: Path) -> None:
    app = make_app(sqlite_url, tmp_path, SQLITE_BUSY_TIMEOUT_MS=200)
    with app.app_context():
        form_service.publish_builtins()
    own_client = app.test_client()
    add_user(app, "busy-admin")
    headers = login(own_client, "busy-admin")
    device = SyncDevice.enroll(own_client, headers, VILLAGE)
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="B1")
    path = sqlite_path(sqlite_url)
    assert path is not None
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        response = device.post(device.build().body)
        error = assert_error(response, 503, "database_busy")
        assert int(response.headers["Retry-After"]) >= 1 and error["details"]["retry_after"] >= 1
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    reply = device.sync()
    assert reply.acks[0].acks[0].status == "applied"
    with app.app_context():
        db.engine.dispose()


def test_a_batch_hitting_a_busy_database_is_skipped_with_a_backoff(
    county: Flask,
    client: FlaskClient,
    admin_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from server.storage import sync_state
    from server.storage.errors import StorageBusy

    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    for i in range(2):
        device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no=f"K{i}")
    real_lock = sync_state.lock_marks
    calls = {"n": 0}

    def busy_on_second_batch(device_id: str) -> object:
        # The injected fault: the second batch meets a lock timeout.
        calls["n"] += 1
        if calls["n"] == 2:
            raise StorageBusy("UPDATE", {}, Exception("database is locked"))
        return real_lock(device_id)

    monkeypatch.setattr(sync_state, "lock_marks", busy_on_second_batch)
    request = device.build(batch_size=1)
    reply = device.open(device.post(request.body), request)
    assert [f.status for f in reply.frames] == ["committed", "committed", "skipped"]
    assert reply.backoff_ms > 0
    device.apply(reply)
    assert [op.seq for op in device.pending] == [2]
    assert device.sync().acks[0].acks[0].status == "applied"
    assert count(county, models.Record) == 2


def test_monitoring_lines_of_the_device_area_travel_with_the_manifest(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    for region, line in (("53", 8700.0), ("530102", 9000.0), ("54", 9500.0)):
        response = client.put(
            f"/api/v1/monitoring-lines/{region}/2026",
            json={"income_line": line, "water_region_type": "water_short"},
            headers=admin_headers,
        )
        assert response.status_code in (200, 201), response.get_json()
    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    (manifest,) = [p for p in device.sync().downloads if p.scope == "manifest"]
    lines = [c for c in manifest.config if c["key"].startswith("monitoring_line:")]
    assert {(c["region_code"], c["year"], c["income_line"]) for c in lines} == {
        ("53", 2026, 8700.0),
        ("530102", 2026, 9000.0),
    }
    assert all(c["settings"]["water_region_type"] == "water_short" for c in lines)
