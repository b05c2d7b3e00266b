"""Server test fixtures: a real app on a real SQLite file or PostgreSQL schema per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server import create_app
from server.services import auth

ADMIN_PASSWORD = "county-admin-pass"


def make_app(database_url: str, tmp_path: Path, **overrides: Any) -> Flask:
    """An app on ``database_url`` with keys in the test's temp dir."""
    config: dict[str, Any] = {
        "DATABASE_URL": database_url,
        "KEY_DIR": str(tmp_path / "keys"),
        "TESTING": True,
    }
    config.update(overrides)
    return create_app(config)


@pytest.fixture
def app_on(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """Build apps on a given URL (with settings overrides); their engines are disposed after."""
    built: list[Flask] = []

    def build(database_url: str, **overrides: Any) -> Flask:
        application = make_app(database_url, tmp_path, **overrides)
        built.append(application)
        return application

    yield build
    for application in built:
        with application.app_context():
            from server.storage.database import db

            db.engine.dispose()


@pytest.fixture
def app(database_url: str, app_on: Callable[..., Flask]) -> Flask:
    """A migrated app on SQLite or PostgreSQL (parametrised by ``database_url``)."""
    return app_on(database_url)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def add_user(app: Flask, username: str, role: str = "county_admin", area: str = "") -> None:
    """Create an account directly through the service (as the CLI does)."""
    with app.app_context():
        auth.create_user(
            username=username, password=ADMIN_PASSWORD, role=role, area_prefix=area, actor="test"
        )


def login(client: FlaskClient, username: str, password: str = ADMIN_PASSWORD) -> dict[str, str]:
    """Log in over HTTP and return the Authorization header."""
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.json
    return {"Authorization": f"Bearer {response.json['token']}"}


@pytest.fixture
def admin_headers(app: Flask, client: FlaskClient) -> dict[str, str]:
    """Authorization header of an unrestricted county admin."""
    add_user(app, "admin")
    return login(client, "admin")


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """Check the one error shape, status and code; return the error object."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert set(error["message"]) == {"zh", "en"}
    assert all(isinstance(text, str) and text for text in error["message"].values())
    assert isinstance(error["details"], dict)
    return error
