"""Web page fixtures: a real app on a real SQLite file, browsers as Flask test clients.

A :class:`Browser` keeps its session cookie like a real browser and sends the CSRF token the
pages embed, so every test goes through the same sign-in and form checks a person does. The
pages' rules live in the services, which run on both engines in ``tests/server``; the pages
run on SQLite here (the browser story in ``test_browser.py`` drives a real server process).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bench.harness.county_server import CountyServer
from server.services import auth
from server.services import forms as form_service
from tests.server.conftest import ADMIN_PASSWORD, make_app
from tests.web.admin_session import sqlite_county

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    """A migrated app on a SQLite file with the six built-in instruments published."""
    application = make_app(f"sqlite:///{tmp_path / 'county.db'}", tmp_path)
    with application.app_context():
        form_service.publish_builtins()
    yield application
    with application.app_context():
        from server.storage.database import db

        db.engine.dispose()


def add_account(app: Flask, username: str, role: str = "county_admin", area: str = "") -> None:
    """Create an account through the service, as the CLI does."""
    with app.app_context():
        auth.create_user(
            username=username, password=ADMIN_PASSWORD, role=role, area_prefix=area, actor="test"
        )


class Browser:
    """A test client that signs in through the login page and submits forms with CSRF."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.token = ""

    def get(self, path: str, **kwargs: Any) -> Any:
        response = self.client.get(path, **kwargs)
        found = (
            CSRF.search(response.get_data(as_text=True))
            if response.mimetype == "text/html"
            else None
        )
        if found:
            self.token = found.group(1)
        return response

    def post(
        self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **kw: Any
    ) -> Any:
        if csrf and not self.token:
            self.get("/login")
        form = dict(data or {})
        if csrf:
            form["csrf_token"] = self.token
        response = self.client.post(path, data=form, **kw)
        found = (
            CSRF.search(response.get_data(as_text=True))
            if response.mimetype == "text/html"
            else None
        )
        if found:
            self.token = found.group(1)
        return response

    def login(self, username: str, password: str = ADMIN_PASSWORD) -> Any:
        self.get("/login")
        response = self.post("/login", {"username": username, "password": password})
        assert response.status_code == 302, response.get_data(as_text=True)
        self.get("/")
        return response


@pytest.fixture
def browser_for(app: Flask) -> Callable[[str], Browser]:
    """A signed-in browser for an existing account name."""

    def make(username: str) -> Browser:
        browser = Browser(app.test_client())
        browser.login(username)
        return browser

    return make


@pytest.fixture
def admin(app: Flask, browser_for: Callable[[str], Browser]) -> Browser:
    """An unrestricted county admin, signed in."""
    add_account(app, "admin")
    return browser_for("admin")


def text(response: Any) -> str:
    """The response body as text."""
    return response.get_data(as_text=True)


@pytest.fixture
def county(tmp_path: Path) -> Iterator[CountyServer]:
    """A real county server process on a fresh SQLite file, for the real-browser stories."""
    with sqlite_county(tmp_path) as server:
        yield server
