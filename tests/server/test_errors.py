"""One error body for every error: our classes, Flask's own 404/405/500, 413 and a busy DB."""

from __future__ import annotations

import sqlite3

import pytest
from flask import Flask

from server.errors import (
    ERROR_CLASSES,
    ApiError,
    RateLimited,
    ServiceBusy,
    StorageFull,
    Unauthorized,
)
from tests.server.conftest import assert_error


@pytest.fixture
def sqlite_app(sqlite_url: str, app_on) -> Flask:
    app = app_on(sqlite_url)

    @app.get("/raise/<name>")
    def _raise(name: str):
        cls = next(c for c in ERROR_CLASSES if c.__name__ == name)
        if cls in (RateLimited, ServiceBusy, StorageFull):
            raise cls(retry_after=7, details={"why": "test"})
        raise cls(details={"why": "test"})

    @app.get("/crash")
    def _crash():
        raise RuntimeError("a bug")

    return app


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_class_leaves_in_the_one_shape(sqlite_app: Flask, cls: type[ApiError]):
    response = sqlite_app.test_client().get(f"/raise/{cls.__name__}")
    error = assert_error(response, cls.status, cls.default_code)
    assert error["details"]["why"] == "test"
    if cls in (RateLimited, ServiceBusy, StorageFull):
        assert response.headers["Retry-After"] == "7"
        assert error["details"]["retry_after"] == 7
    if cls is Unauthorized:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_status_codes_and_codes_are_unique() -> None:
    assert len({c.status for c in ERROR_CLASSES}) == len(ERROR_CLASSES)
    assert len({c.default_code for c in ERROR_CLASSES}) == len(ERROR_CLASSES)
    assert {400, 401, 403, 404, 409, 410, 413, 422, 429, 503} <= {c.status for c in ERROR_CLASSES}


def test_flask_404_405_and_500_use_the_shape(sqlite_app: Flask) -> None:
    client = sqlite_app.test_client()
    assert_error(client.get("/api/v1/no-such-thing"), 404, "not_found")
    assert_error(client.get("/api/v1/auth/login"), 405, "method_not_allowed")
    error = assert_error(client.get("/crash"), 500, "internal_error")
    assert "a bug" not in str(error)


def test_oversized_body_is_413(sqlite_url: str, app_on) -> None:
    app = app_on(sqlite_url, MAX_REQUEST_BYTES=1000)
    response = app.test_client().post("/api/v1/auth/login", data=b"x" * 5000)
    assert_error(response, 413, "payload_too_large")


def test_malformed_body_is_400_with_field_messages(sqlite_app: Flask) -> None:
    client = sqlite_app.test_client()
    error = assert_error(
        client.post("/api/v1/auth/login", json={"username": ""}), 400, "validation_failed"
    )
    assert set(error["details"]["fields"]) == {"username", "password"}
    error = assert_error(
        client.post("/api/v1/auth/login", data="not json"), 400, "validation_failed"
    )
    assert "_body" in error["details"]["fields"]


def test_locked_sqlite_database_answers_503_with_retry_after(sqlite_url: str, app_on):
    app = app_on(sqlite_url, SQLITE_BUSY_TIMEOUT_MS=50, BUSY_RETRY_AFTER_SECONDS=3)
    from tests.server.conftest import add_user, login

    add_user(app, "admin")
    client = app.test_client()
    headers = login(client, "admin")
    blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        response = client.post(
            "/api/v1/enrollment-codes", json={"scope": "530102001201"}, headers=headers
        )
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert_error(response, 503, "database_busy")
    assert response.headers["Retry-After"] == "3"
    # Once the lock is gone the same request succeeds.
    again = client.post("/api/v1/enrollment-codes", json={"scope": "530102001201"}, headers=headers)
    assert again.status_code == 201


def test_a_full_sqlite_database_answers_507_with_retry_after(
    sqlite_url: str, app_on, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leak 11: SQLite's "database or disk is full" (fault-injected) is 507, not a 500."""
    from sqlalchemy.exc import OperationalError

    from server.services import enrollment
    from tests.server.conftest import add_user, login

    app = app_on(sqlite_url)
    add_user(app, "admin")
    client = app.test_client()
    headers = login(client, "admin")

    def full(*args, **kwargs):
        raise OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(enrollment.enrollment, "add_code", full)
    response = client.post(
        "/api/v1/enrollment-codes", json={"scope": "530102001201"}, headers=headers
    )
    assert_error(response, 507, "storage_full")
    assert int(response.headers["Retry-After"]) > 0
