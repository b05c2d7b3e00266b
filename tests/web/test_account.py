"""Signing in and out, the session cookie, CSRF, disabled accounts, changing the password."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from tests.server.conftest import ADMIN_PASSWORD
from tests.web.conftest import Browser, add_account, text

PAGES = [
    "/",
    "/households",
    "/households/530102001201/H1",
    "/devices",
    "/conflicts",
    "/conflicts/c-0",
    "/forms",
    "/exports",
    "/exports/housing_safety.xlsx",
    "/quarantine",
    "/users",
    "/audit",
    "/areas",
    "/exports/jobs/0b0e0c2a-0000-4000-8000-000000000000",
    "/password",
]


@pytest.mark.parametrize("path", PAGES)
def test_logged_out_every_page_leads_to_the_login_page(app: Flask, path: str) -> None:
    response = app.test_client().get(path)
    assert response.status_code == 302
    assert response.location.startswith("/login?next=")
    login = app.test_client().get(response.location)
    assert login.status_code == 200
    body = text(login)
    assert '<meta charset="utf-8">' in body and "登录" in body


def test_the_root_opens_the_login_page_then_the_dashboard(app: Flask) -> None:
    add_account(app, "admin")
    browser = Browser(app.test_client())
    first = browser.get("/", follow_redirects=True)
    assert "用户名" in text(first) and "密码" in text(first)
    response = browser.post(
        "/login", {"username": "admin", "password": ADMIN_PASSWORD, "next": "/"}
    )
    assert response.status_code == 302 and response.location == "/"
    assert "两不愁三保障" in text(browser.get("/"))


def test_a_wrong_password_is_refused_in_chinese_and_keeps_the_name(app: Flask) -> None:
    add_account(app, "admin")
    browser = Browser(app.test_client())
    response = browser.post("/login", {"username": "admin", "password": "wrong-password"})
    assert response.status_code == 401
    body = text(response)
    assert "用户名或密码错误" in body and 'value="admin"' in body
    assert "Traceback" not in body


def test_the_login_rate_limit_applies_to_the_page(app: Flask) -> None:
    add_account(app, "admin")
    browser = Browser(app.test_client())
    for _ in range(app.config["RATE_LIMIT_ATTEMPTS"]):
        browser.post("/login", {"username": "admin", "password": "wrong-password"})
    response = browser.post("/login", {"username": "admin", "password": ADMIN_PASSWORD})
    assert response.status_code == 429
    assert "尝试次数过多" in text(response) and response.headers["Retry-After"]


def test_an_off_site_next_is_not_followed(app: Flask) -> None:
    add_account(app, "admin")
    browser = Browser(app.test_client())
    response = browser.post(
        "/login",
        {"username": "admin", "password": ADMIN_PASSWORD, "next": "//evil.example/x"},
    )
    assert response.location == "/"


def test_the_session_cookie_is_httponly_lax_and_secure_only_over_https(app: Flask) -> None:
    add_account(app, "admin")
    browser = Browser(app.test_client())
    response = browser.post("/login", {"username": "admin", "password": ADMIN_PASSWORD})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    secure = Browser(app.test_client())
    secure.get("/login", base_url="https://county.example")
    response = secure.client.post(
        "/login",
        base_url="https://county.example",
        headers={"Referer": "https://county.example/login"},  # checked over https
        data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": secure.token},
    )
    assert response.status_code == 302
    assert "Secure" in response.headers["Set-Cookie"]


def test_a_form_without_the_csrf_token_is_refused(admin: Browser) -> None:
    for path, data in [
        ("/devices/codes", {"scope": "530102001201"}),
        ("/logout", {}),
        ("/users", {"username": "x", "password": "long-enough-pass", "role": "county_admin"}),
    ]:
        response = admin.post(path, data, csrf=False)
        assert response.status_code == 400, path
        assert "表单已过期或来源不明" in text(response)
    # Nothing happened: no code issued, still signed in.
    assert "还没有设备" in text(admin.get("/devices"))
    assert "未使用的注册码" not in text(admin.get("/devices"))
    assert admin.get("/").status_code == 200


def test_logout_ends_the_session_and_revokes_its_token(app: Flask, admin: Browser) -> None:
    with admin.client.session_transaction() as session:
        kept = dict(session)
    assert admin.post("/logout").location == "/login"
    assert admin.get("/").status_code == 302
    # Replaying the old cookie does not help: its token is revoked.
    replay = app.test_client()
    with replay.session_transaction() as session:
        session.update(kept)
    assert replay.get("/").status_code == 302


def test_a_disabled_account_is_signed_out_at_once(
    app: Flask, admin: Browser, browser_for: Callable[[str], Browser]
) -> None:
    add_account(app, "reviewer", "township_reviewer", "530102001")
    reviewer = browser_for("reviewer")
    assert reviewer.get("/").status_code == 200
    users = text(admin.get("/users"))
    assert "reviewer" in users
    with app.app_context():
        from server.storage import users as user_store

        user_id = user_store.user_by_name("reviewer").id
    assert admin.post(f"/users/{user_id}/disable").status_code == 302
    response = reviewer.get("/")
    assert response.status_code == 302 and response.location.startswith("/login")
    refused = reviewer.post("/login", {"username": "reviewer", "password": ADMIN_PASSWORD})
    assert refused.status_code == 401
    assert admin.post(f"/users/{user_id}/enable").status_code == 302
    reviewer.login("reviewer")


def test_the_first_password_must_be_changed_and_can_be(app: Flask, admin: Browser) -> None:
    assert "您仍在使用初始密码" in text(admin.get("/"))
    wrong = admin.post(
        "/password",
        {
            "current_password": "nope",
            "new_password": "a-new-password",
            "repeat_password": "a-new-password",
        },
    )
    assert wrong.status_code == 401 and "当前密码不正确" in text(wrong)
    short = admin.post(
        "/password",
        {"current_password": ADMIN_PASSWORD, "new_password": "short", "repeat_password": "short"},
    )
    assert short.status_code == 400 and "密码至少需要10个字符" in text(short)
    done = admin.post(
        "/password",
        {
            "current_password": ADMIN_PASSWORD,
            "new_password": "a-new-password",
            "repeat_password": "a-new-password",
        },
    )
    assert done.status_code == 200 and "密码已修改" in text(done)
    # Still signed in (a fresh token), and the notice is gone.
    assert "您仍在使用初始密码" not in text(admin.get("/"))
    again = Browser(app.test_client())
    assert (
        again.post("/login", {"username": "admin", "password": ADMIN_PASSWORD}).status_code == 401
    )
    again.login("admin", "a-new-password")


def test_unknown_pages_are_html_and_api_errors_stay_json(admin: Browser) -> None:
    page = admin.get("/no-such-page")
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "未找到" in text(page) and "Traceback" not in text(page)
    api = admin.client.get("/api/v1/no-such-thing")
    assert api.status_code == 404 and api.get_json()["error"]["code"] == "not_found"
