"""Refused requests are audited in one place (``server.errors``): one entry per refusal with its
code and the client's address, a flood of identical refusals coalesced into one entry with a
count, nothing typed (tokens, passwords) stored, and a busy database never changing the answer."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.server.conftest import add_user, assert_error, login

BOGUS_TOKEN = "vs_this-token-was-never-issued-0123456789"


def _refusals(client: FlaskClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    rows = client.get("/api/v1/audit?action=api.refused&limit=1000", headers=headers)
    assert rows.status_code == 200, rows.get_json()
    return rows.get_json()


def test_identical_refusals_are_one_entry_with_a_count(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    bogus = {"Authorization": f"Bearer {BOGUS_TOKEN}"}
    for _ in range(25):
        assert_error(client.get("/api/v1/auth/me", headers=bogus), 401, "invalid_token")
    assert_error(
        client.get("/api/v1/records/00000000-0000-4000-8000-000000000000", headers=admin_headers),
        404,
        "record_not_found",
    )
    rows = _refusals(client, admin_headers)
    by_code = {row["details"]["code"]: row for row in rows}
    assert len(rows) == 2, rows
    token = by_code["invalid_token"]
    assert token["details"]["count"] == 25
    assert token["details"]["status"] == 401
    assert token["details"]["path"] == "/api/v1/auth/me"
    assert token["ip"] == "127.0.0.1" and token["actor"] == "ip:127.0.0.1"
    record = by_code["record_not_found"]
    assert record["actor"] == "admin" and record["details"]["count"] == 1
    assert BOGUS_TOKEN not in json.dumps(rows)


def test_a_refusal_its_service_audits_is_not_audited_twice(app: Flask, client: FlaskClient) -> None:
    add_user(app, "admin")
    typed = "my-secret-password-typed-wrong"
    answer = client.post("/api/v1/auth/login", json={"username": "admin", "password": typed})
    assert_error(answer, 401, "invalid_credentials")
    headers = login(client, "admin")
    failed = client.get("/api/v1/audit?action=auth.login_failed", headers=headers).get_json()
    assert len(failed) == 1
    assert _refusals(client, headers) == []
    everything = client.get("/api/v1/audit?limit=1000", headers=headers).get_json()
    assert typed not in json.dumps(everything)


def test_a_busy_database_while_auditing_leaves_the_refusal_as_it_was(
    sqlite_url: str, app_on: Any
) -> None:
    app = app_on(sqlite_url, SQLITE_BUSY_TIMEOUT_MS=50)
    add_user(app, "admin")
    client = app.test_client()
    headers = login(client, "admin")
    bogus = {"Authorization": f"Bearer {BOGUS_TOKEN}"}
    blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        response = client.get("/api/v1/auth/me", headers=bogus)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert_error(response, 401, "invalid_token")
    # The entry was lost to the lock (logged); the next refusal is audited again.
    assert _refusals(client, headers) == []
    assert_error(client.get("/api/v1/auth/me", headers=bogus), 401, "invalid_token")
    assert [row["details"]["code"] for row in _refusals(client, headers)] == ["invalid_token"]


def test_a_rate_limited_login_is_audited_with_the_callers_address(
    app: Flask, client: FlaskClient
) -> None:
    add_user(app, "admin")
    attacker = {"REMOTE_ADDR": "10.9.8.7"}
    statuses = [
        client.post(
            "/api/v1/auth/login",
            json={"username": "admin", "password": "wrong-guess"},
            environ_base=attacker,
        ).status_code
        for _ in range(13)
    ]
    assert statuses == [401] * 10 + [429] * 3, statuses
    headers = login(client, "admin")
    rows = _refusals(client, headers)
    assert [(r["details"]["code"], r["ip"], r["details"]["count"]) for r in rows] == [
        ("rate_limited", "10.9.8.7", 3)
    ]
