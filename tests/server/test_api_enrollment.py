"""Device enrollment over HTTP: one-time expiring codes, keys, scope, manifest, revocation."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from server.services.context import EXTENSION_KEY
from server.storage import devices
from server.storage.database import db, writing
from server.storage.models import EnrollmentCode
from server.storage.types import utcnow
from sync_protocol.crypto import generate_device_keys
from tests.server.conftest import assert_error

VILLAGE = "530102001201"


def issue(client: FlaskClient, headers: dict[str, str], scope: str = VILLAGE, **extra) -> dict:
    response = client.post(
        "/api/v1/enrollment-codes", json={"scope": scope, **extra}, headers=headers
    )
    assert response.status_code == 201, response.json
    return response.json


def enroll_body(code: str) -> dict[str, str]:
    keys = generate_device_keys().public_document()
    return {
        "code": code,
        "x25519_public": keys["encryption_public"],
        "ed25519_public": keys["signing_public"],
    }


def test_enrollment_returns_device_scope_server_keys_and_manifest(
    client: FlaskClient, app: Flask, admin_headers: dict[str, str]
) -> None:
    with app.app_context():
        from server.services import forms as form_service
        from server.services.access import CLI_ACTOR

        form_service.publish_builtins(actor=CLI_ACTOR)
        ring = app.extensions[EXTENSION_KEY].keys.ring()
    code = issue(client, admin_headers, label="team 3 tablet")
    body = enroll_body(code["code"])
    response = client.post("/api/v1/devices/enroll", json=body)
    assert response.status_code == 201, response.json
    answer = response.json
    assert answer["scope"] == VILLAGE
    assert answer["server_keys"] == {"current_key_id": ring.current_id, **ring.public_document()}
    assert answer["server_keys"]["encryption_key_id"] == ring.current_id
    assert len(answer["forms"]) == 7  # the six instruments and the verification outcome
    server_time = datetime.fromisoformat(answer["server_time"])
    assert abs((server_time - utcnow()).total_seconds()) < 60
    assert {f["form_id"] for f in answer["forms"]} >= {"housing_safety", "household_roster"}
    with app.app_context():
        device = devices.device_for_sync(answer["device_id"])
        assert device.status == "active" and device.scope == VILLAGE
        assert device.x25519_public == body["x25519_public"]
        assert device.label == "team 3 tablet"


def test_code_is_shown_once_and_stored_hashed(
    client: FlaskClient, app: Flask, admin_headers: dict[str, str]
) -> None:
    code = issue(client, admin_headers)["code"]
    listed = client.get("/api/v1/enrollment-codes", headers=admin_headers).json
    assert len(listed) == 1 and "code" not in listed[0]
    with app.app_context():
        stored = db.session.scalar(sa.select(EnrollmentCode.code_hash))
    assert code.replace("-", "") not in stored


def test_reused_code_is_409(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    code = issue(client, admin_headers)["code"]
    assert client.post("/api/v1/devices/enroll", json=enroll_body(code)).status_code == 201
    again = client.post("/api/v1/devices/enroll", json=enroll_body(code))
    assert_error(again, 409, "enrollment_code_used")


def test_wrong_code_is_401(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    issue(client, admin_headers)
    wrong = client.post("/api/v1/devices/enroll", json=enroll_body("AAAA-BBBB-CCCC-DDDD"))
    assert_error(wrong, 401, "invalid_enrollment_code")


def test_expired_code_is_410(client: FlaskClient, app: Flask, admin_headers: dict) -> None:
    code = issue(client, admin_headers, days=1)["code"]
    with app.app_context(), writing() as session:
        session.execute(
            sa.update(EnrollmentCode).values(expires_at=utcnow() - timedelta(minutes=1))
        )
    expired = client.post("/api/v1/devices/enroll", json=enroll_body(code))
    error = assert_error(expired, 410, "enrollment_code_expired")
    assert "expired_at" in error["details"]
    refused = client.get("/api/v1/audit?action=device.enroll_refused", headers=admin_headers).json
    assert [(e["area_code"], e["details"]["reason"]) for e in refused] == [
        (VILLAGE, "enrollment_code_expired")
    ]


def test_code_typing_is_forgiving(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    code = issue(client, admin_headers)["code"]
    sloppy = " " + code.lower().replace("-", " ") + " "
    assert client.post("/api/v1/devices/enroll", json=enroll_body(sloppy)).status_code == 201


def test_enrollment_attempts_are_rate_limited(database_url: str, app_on) -> None:
    app = app_on(database_url, RATE_LIMIT_ATTEMPTS=3)
    from tests.server.conftest import add_user, login

    add_user(app, "admin")
    client = app.test_client()
    code = issue(client, login(client, "admin"))["code"]
    for _ in range(3):
        wrong = client.post("/api/v1/devices/enroll", json=enroll_body("WRON-GWRO-NGWR-ONGW"))
        assert_error(wrong, 401, "invalid_enrollment_code")
    limited = client.post("/api/v1/devices/enroll", json=enroll_body(code))
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) > 0
    other_address = client.post(
        "/api/v1/devices/enroll",
        json=enroll_body(code),
        environ_overrides={"REMOTE_ADDR": "10.1.2.3"},
    )
    assert other_address.status_code == 201


def test_malformed_keys_and_scopes_are_400(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    code = issue(client, admin_headers)["code"]
    body = enroll_body(code) | {"x25519_public": "AAAA"}
    error = assert_error(
        client.post("/api/v1/devices/enroll", json=body), 400, "invalid_public_key"
    )
    assert "x25519_public" in error["details"]["fields"]
    # The code was not spent by the malformed attempt.
    assert client.post("/api/v1/devices/enroll", json=enroll_body(code)).status_code == 201
    for scope in ("5301", "530102", "53010200120", "53010200120X"):
        bad = client.post("/api/v1/enrollment-codes", json={"scope": scope}, headers=admin_headers)
        assert_error(bad, 400, "validation_failed")
    too_long = client.post(
        "/api/v1/enrollment-codes", json={"scope": VILLAGE, "days": 365}, headers=admin_headers
    )
    assert_error(too_long, 400, "validation_failed")


def test_revoked_device_is_marked_at_once(
    client: FlaskClient, app: Flask, admin_headers: dict[str, str]
) -> None:
    code = issue(client, admin_headers)["code"]
    device_id = client.post("/api/v1/devices/enroll", json=enroll_body(code)).json["device_id"]
    revoked = client.post(f"/api/v1/devices/{device_id}/revoke", headers=admin_headers)
    assert revoked.status_code == 200 and revoked.json["status"] == "revoked"
    assert revoked.json["revoked_at"] is not None
    with app.app_context():
        assert devices.device_for_sync(device_id).status == "revoked"
    again = client.post(f"/api/v1/devices/{device_id}/revoke", headers=admin_headers)
    assert_error(again, 409, "device_already_revoked")
    listed = client.get("/api/v1/devices?status=revoked", headers=admin_headers).json
    assert [d["id"] for d in listed] == [device_id]
    assert client.get("/api/v1/devices?status=active", headers=admin_headers).json == []
    assert_error(
        client.get("/api/v1/devices?status=lost", headers=admin_headers), 400, "validation_failed"
    )


def test_code_claimed_by_another_tablet_is_409(
    client: FlaskClient, app: Flask, admin_headers: dict[str, str]
) -> None:
    code = issue(client, admin_headers)["code"]
    with app.app_context():
        from server.services.enrollment import code_hash
        from server.storage import enrollment as store

        row = store.code_by_hash(code_hash(code))
        with writing():
            assert store.claim(row.id, "first", utcnow())
    # Claimed directly in storage (as a concurrent enrollment would): HTTP now sees it used.
    assert_error(
        client.post("/api/v1/devices/enroll", json=enroll_body(code)), 409, "enrollment_code_used"
    )


def test_concurrent_enrollments_with_one_code_make_one_device(
    app: Flask, admin_headers: dict[str, str]
) -> None:
    import threading

    code = issue(app.test_client(), admin_headers)["code"]
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def attempt() -> None:
        client = app.test_client()
        body = enroll_body(code)
        barrier.wait()
        statuses.append(client.post("/api/v1/devices/enroll", json=body).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 409, 409, 409]
    with app.app_context():
        assert len(devices.list_devices("")) == 1
