"""Odd input at the wire boundary gets a 400 ``validation_failed``, never a 500, on both engines:
NUL characters in bodies, query strings and path arguments (PostgreSQL refuses NUL in text)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.server.conftest import assert_error

NUL = "\x00"

#: (method, url, JSON body, the field the error names); each carries a NUL somewhere.
NUL_REQUESTS: list[tuple[str, str, Any, str]] = [
    ("POST", "/api/v1/auth/login", {"username": "a" + NUL, "password": "x"}, "username"),
    ("GET", "/api/v1/records?round=%00", None, "round"),
    ("GET", "/api/v1/records?village=53%00", None, "village"),
    ("GET", "/api/v1/records/%00", None, "record_id"),
    ("GET", "/api/v1/devices/%00", None, "device_id"),
    ("GET", "/api/v1/conflicts/%00", None, "conflict_id"),
    ("GET", "/api/v1/forms/%00/versions", None, "form_id"),
    ("GET", "/api/v1/exports/%00.csv", None, "form_id"),
    ("POST", "/api/v1/enrollment-codes", {"scope": "530102001201", "label": NUL}, "label"),
    (
        "POST",
        "/api/v1/users",
        {"username": "x" + NUL, "password": "a-long-password", "role": "county_admin"},
        "username",
    ),
    ("POST", "/api/v1/forms", {"id": "f", "title": {"zh": NUL}}, "title.zh"),
]


@pytest.mark.parametrize(("method", "url", "body", "field"), NUL_REQUESTS)
def test_a_nul_character_is_a_validation_error_naming_the_field(
    app: Flask,
    client: FlaskClient,
    admin_headers: dict[str, str],
    method: str,
    url: str,
    body: Any,
    field: str,
) -> None:
    response = client.open(url, method=method, json=body, headers=admin_headers)
    error = assert_error(response, 400, "validation_failed")
    assert field in error["details"]["fields"], error


def test_a_nul_in_an_uploaded_json_definition_is_a_validation_error(
    app: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    import io

    data = {"file": (io.BytesIO(b'{"id": "f\\u0000"}'), "form.json")}
    response = client.post("/api/v1/forms", data=data, headers=admin_headers)
    error = assert_error(response, 400, "validation_failed")
    assert "file.id" in error["details"]["fields"]


HUGE = "99999999999999999999"

#: (method, url, expected status): huge integers in query strings are 400, in paths 404.
HUGE_INT_REQUESTS: list[tuple[str, str, int]] = [
    ("GET", f"/api/v1/records?offset={HUGE}", 400),
    ("GET", f"/api/v1/conflicts?offset={HUGE}", 400),
    ("GET", f"/api/v1/quarantine?offset={HUGE}", 400),
    ("GET", f"/api/v1/indicators/households?offset={HUGE}", 400),
    ("GET", f"/api/v1/audit?before={HUGE}", 400),
    ("GET", f"/api/v1/exports/housing_safety.csv?version={HUGE}", 400),
    ("GET", f"/api/v1/forms/housing_safety/versions/{HUGE}", 404),
    ("POST", f"/api/v1/forms/housing_safety/versions/{HUGE}/publish", 404),
    ("POST", f"/api/v1/users/{HUGE}/disable", 404),
    ("POST", f"/api/v1/users/{2**31}/enable", 404),
    ("POST", f"/api/v1/quarantine/{HUGE}/map", 404),
    ("PUT", f"/api/v1/monitoring-lines/530102/{HUGE}", 404),
]


@pytest.mark.parametrize(("method", "url", "status"), HUGE_INT_REQUESTS)
def test_a_huge_integer_is_refused_before_the_database(
    app: Flask,
    client: FlaskClient,
    admin_headers: dict[str, str],
    method: str,
    url: str,
    status: int,
) -> None:
    body = {"form_id": "housing_safety", "form_version": 1} if "map" in url else None
    response = client.open(url, method=method, json=body, headers=admin_headers)
    assert_error(response, status, "validation_failed" if status == 400 else "not_found")


def test_the_largest_allowed_path_integer_still_routes(
    app: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    response = client.post(f"/api/v1/users/{2**31 - 1}/disable", headers=admin_headers)
    assert_error(response, 404, "user_not_found")  # the route matched; the user is absent


def _nested(depth: int) -> bytes:
    return ('{"a":' * depth + "1" + "}" * depth).encode()


# Kept under 500 KB: larger multipart bodies make the test client spool to a temp file.
DEEP_BODIES = [_nested(50_000), b"[" * 100_000 + b"]" * 100_000, _nested(900)]


@pytest.mark.parametrize("body", DEEP_BODIES, ids=["object", "array", "just-parseable"])
@pytest.mark.parametrize(
    "url", ["/api/v1/auth/login", "/api/v1/forms", "/api/v1/users", "/api/v1/uploads"]
)
def test_deeply_nested_json_is_a_validation_error(
    app: Flask, client: FlaskClient, admin_headers: dict[str, str], url: str, body: bytes
) -> None:
    response = client.post(
        url, data=body, headers={**admin_headers, "Content-Type": "application/json"}
    )
    _refused(response, body)


def _refused(response: Any, body: bytes) -> None:
    # Too deep to parse: 400. Parseable but deep: the route's own answer, never a 500.
    if len(body) > 100_000:
        assert_error(response, 400, "validation_failed")
    else:
        assert 400 <= response.status_code < 500, response.get_data(as_text=True)
        assert set(response.get_json()["error"]) == {"code", "message", "details"}


@pytest.mark.parametrize("body", DEEP_BODIES, ids=["object", "array", "just-parseable"])
def test_a_deeply_nested_uploaded_json_definition_is_a_validation_error(
    app: Flask, client: FlaskClient, admin_headers: dict[str, str], body: bytes
) -> None:
    import io

    data = {"file": (io.BytesIO(body), "form.json")}
    response = client.post("/api/v1/forms", data=data, headers=admin_headers)
    _refused(response, body)


#: (url, raw JSON body, the field the error names); each carries a lone surrogate escape.
SURROGATE_REQUESTS: list[tuple[str, bytes, str]] = [
    ("/api/v1/auth/login", b'{"\\ud800": 1}', "\\ud800"),
    ("/api/v1/auth/login", b'{"username": "a\\ud800", "password": "x"}', "username"),
    ("/api/v1/auth/login", b'{"username": "admin", "password": "\\udfff"}', "password"),
    (
        "/api/v1/devices/enroll",
        b'{"code": "\\ud83d", "x25519_public": "a", "ed25519_public": "b"}',
        "code",
    ),
    ("/api/v1/enrollment-codes", b'{"scope": "530102001201", "label": "\\ud800"}', "label"),
]


@pytest.mark.parametrize(("url", "raw", "field"), SURROGATE_REQUESTS)
def test_a_lone_surrogate_in_json_is_a_validation_error_not_a_500(
    app: Flask,
    client: FlaskClient,
    admin_headers: dict[str, str],
    url: str,
    raw: bytes,
    field: str,
) -> None:
    for headers in ({}, admin_headers):
        response = client.post(
            url, data=raw, headers={**headers, "Content-Type": "application/json"}
        )
        if response.status_code == 401:
            continue
        error = assert_error(response, 400, "validation_failed")
        assert field in error["details"]["fields"], error
