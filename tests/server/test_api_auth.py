"""Admin auth over HTTP: tokens, revocation, expiry, rate limiting, trusted proxies."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient

from server.storage import throttle
from server.storage.database import writing
from server.storage.types import utcnow
from tests.server.conftest import ADMIN_PASSWORD, add_user, assert_error, login

TOWNSHIP_1 = "530102001"
TOWNSHIP_2 = "530102002"


def test_login_me_logout_and_revoked_token(client: FlaskClient, app: Flask) -> None:
    add_user(app, "admin")
    headers = login(client, "admin")
    me = client.get("/api/v1/auth/me", headers=headers)
    assert me.json == {"user_id": 1, "username": "admin", "role": "county_admin", "area_prefix": ""}
    assert client.post("/api/v1/auth/logout", headers=headers).json == {"revoked": True}
    assert_error(client.get("/api/v1/auth/me", headers=headers), 401, "invalid_token")
    assert_error(client.post("/api/v1/auth/logout", headers=headers), 401, "invalid_token")
    # Another login still works: only that one token was revoked.
    assert client.get("/api/v1/auth/me", headers=login(client, "admin")).status_code == 200


def test_wrong_credentials_and_missing_token(client: FlaskClient, app: Flask) -> None:
    add_user(app, "admin")
    wrong = client.post("/api/v1/auth/login", json={"username": "admin", "password": "nope"})
    assert_error(wrong, 401, "invalid_credentials")
    nobody = client.post("/api/v1/auth/login", json={"username": "ghost", "password": "nope"})
    assert_error(nobody, 401, "invalid_credentials")
    failed = client.get("/api/v1/audit?action=auth.login_failed", headers=login(client, "admin"))
    assert [e["details"]["username"] for e in failed.json] == ["ghost", "admin"]
    assert_error(client.get("/api/v1/devices"), 401, "missing_token")
    bogus = {"Authorization": "Bearer vs_not-a-token"}
    assert_error(client.get("/api/v1/devices", headers=bogus), 401, "invalid_token")


def test_token_is_stored_hashed(client: FlaskClient, app: Flask) -> None:
    add_user(app, "admin")
    token = login(client, "admin")["Authorization"].split()[1]
    with app.app_context():
        from server.storage.database import db
        from server.storage.models import ApiToken

        stored = db.session.query(ApiToken.token_hash).scalar()
    assert stored != token and token not in stored and len(stored) == 64


def test_token_use_is_recorded_coarsely(client: FlaskClient, app: Flask) -> None:
    add_user(app, "admin")
    headers = login(client, "admin")
    from server.storage.database import db
    from server.storage.models import ApiToken

    with app.app_context():
        assert db.session.query(ApiToken.last_used_at).scalar() is None
    client.get("/api/v1/auth/me", headers=headers)
    with app.app_context():
        first = db.session.query(ApiToken.last_used_at).scalar()
    client.get("/api/v1/auth/me", headers=headers)
    with app.app_context():
        assert first is not None
        assert db.session.query(ApiToken.last_used_at).scalar() == first


def test_expired_token_is_refused(database_url: str, app_on) -> None:
    app = app_on(database_url, TOKEN_TTL_HOURS=0)
    add_user(app, "admin")
    client = app.test_client()
    assert_error(
        client.get("/api/v1/auth/me", headers=login(client, "admin")), 401, "invalid_token"
    )


def test_password_reset_revokes_tokens(client: FlaskClient, app: Flask) -> None:
    add_user(app, "admin")
    headers = login(client, "admin")
    with app.app_context():
        from server.services import auth

        auth.reset_password("admin", "a-brand-new-password", actor="test")
    assert_error(client.get("/api/v1/auth/me", headers=headers), 401, "invalid_token")
    login(client, "admin", "a-brand-new-password")


def test_failed_logins_are_rate_limited_per_address_and_name(database_url: str, app_on) -> None:
    app = app_on(database_url, RATE_LIMIT_ATTEMPTS=3, RATE_LIMIT_WINDOW_SECONDS=600)
    add_user(app, "admin")
    add_user(app, "other")
    client = app.test_client()
    bad = {"username": "admin", "password": "wrong-password"}
    for _ in range(3):
        assert_error(client.post("/api/v1/auth/login", json=bad), 401, "invalid_credentials")
    limited = client.post("/api/v1/auth/login", json=bad)
    error = assert_error(limited, 429, "rate_limited")
    retry = int(limited.headers["Retry-After"])
    assert 0 < retry <= 600 and error["details"]["retry_after"] == retry
    # Even the right password waits: a guesser cannot tell when it found it.
    good = {"username": "admin", "password": ADMIN_PASSWORD}
    assert_error(client.post("/api/v1/auth/login", json=good), 429, "rate_limited")
    # Another account from the same address, and the same account from elsewhere, are not held.
    login(client, "other")
    elsewhere = client.post(
        "/api/v1/auth/login", json=good, environ_overrides={"REMOTE_ADDR": "10.0.0.9"}
    )
    assert elsewhere.status_code == 200


def test_rate_limit_window_slides(database_url: str, app_on) -> None:
    app = app_on(database_url, RATE_LIMIT_ATTEMPTS=2, RATE_LIMIT_WINDOW_SECONDS=60)
    add_user(app, "admin")
    client = app.test_client()
    with app.app_context(), writing():
        # Two failures that have aged out of the window, as another process would have stored.
        old = utcnow() - timedelta(seconds=61)
        throttle.add_hit("login:127.0.0.1:admin", old)
        throttle.add_hit("login:127.0.0.1:admin", old)
    login(client, "admin")


def test_client_address_comes_from_a_trusted_proxy_only(database_url: str, app_on) -> None:
    forwarded = {"X-Forwarded-For": "10.9.8.7"}
    direct = app_on(database_url)
    add_user(direct, "admin")
    client = direct.test_client()
    client.post(
        "/api/v1/auth/login",
        json={"username": "admin", "password": ADMIN_PASSWORD},
        headers=forwarded,
    )
    entries = client.get("/api/v1/audit", headers=login(client, "admin")).json
    assert {e["ip"] for e in entries if e["action"] == "auth.login"} == {"127.0.0.1"}

    proxied = app_on(database_url, TRUSTED_PROXIES=1, RATE_LIMIT_ATTEMPTS=1)
    client = proxied.test_client()
    bad = {"username": "admin", "password": "wrong-password"}
    assert_error(
        client.post("/api/v1/auth/login", json=bad, headers=forwarded), 401, "invalid_credentials"
    )
    assert_error(
        client.post("/api/v1/auth/login", json=bad, headers=forwarded), 429, "rate_limited"
    )
    # Another client behind the same proxy is not held back by the first one's failures.
    other = client.post("/api/v1/auth/login", json=bad, headers={"X-Forwarded-For": "10.0.0.1"})
    assert_error(other, 401, "invalid_credentials")


def test_app_processes_share_one_rate_limit(database_url: str, app_on) -> None:
    """Two app instances on one database (two worker processes) see each other's failures."""
    first = app_on(database_url, RATE_LIMIT_ATTEMPTS=2)
    second = app_on(database_url, RATE_LIMIT_ATTEMPTS=2)
    add_user(first, "admin")
    bad = {"username": "admin", "password": "wrong-password"}
    assert_error(
        first.test_client().post("/api/v1/auth/login", json=bad), 401, "invalid_credentials"
    )
    assert_error(
        second.test_client().post("/api/v1/auth/login", json=bad), 401, "invalid_credentials"
    )
    assert_error(first.test_client().post("/api/v1/auth/login", json=bad), 429, "rate_limited")
