"""No request, however odd, makes an admin or enrollment route fail with a 500: every documented
POST/PUT gets arbitrary JSON (hypothesis, on SQLite), and every documented route gets arbitrary
path arguments and query parameters — huge integers, NUL characters, any text — on SQLite and
PostgreSQL; each must answer with a success or the one error shape."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server.conftest import add_user, login

#: The blueprints this fuzz covers (the sync/upload wire formats have their own tests).
FUZZED_TAGS = {"auth", "users", "forms", "enrollment", "devices", "monitoring", "audit"}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


#: Field names the routes read, so bodies get past "unknown field" into the services.
KNOWN_KEYS = (
    "scope",
    "days",
    "label",
    "at",
    "income_line",
    "income_drop_percent",
    "water_region_type",
    "code",
    "x25519_public",
    "ed25519_public",
    "username",
    "password",
    "role",
    "area_prefix",
    "id",
    "version",
    "title",
    "fields",
    "subject",
    "choice_lists",
)
body_keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=12)


@pytest.fixture
def fuzz_app(sqlite_url: str, app_on) -> tuple[Flask, dict[str, str], list[tuple[str, str]]]:
    app = app_on(sqlite_url, RATE_LIMIT_ATTEMPTS=100000)
    add_user(app, "admin")
    client = app.test_client()
    headers = login(client, "admin")
    document = client.get("/api/v1/openapi.json").json
    operations = sorted(
        (method, path)
        for path, ops in document["paths"].items()
        for method, op in ops.items()
        if method in {"post", "put"}
        and set(op["tags"]) & FUZZED_TAGS
        and not path.endswith("/logout")
    )
    return app, headers, operations


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_arbitrary_json_never_causes_a_server_error(
    fuzz_app: tuple[Flask, dict[str, str], list[tuple[str, str]]], data: Any
) -> None:
    app, headers, operations = fuzz_app
    method, path = data.draw(st.sampled_from(operations), label="operation")
    concrete = re.sub(
        r"\{(\w+)\}",
        lambda m: data.draw(
            st.sampled_from(["housing_safety", "1", "53", "530102001201", "x"]), label=m.group(1)
        ),
        path,
    )
    body = data.draw(st.dictionaries(body_keys, json_values, max_size=6) | json_values)
    response = getattr(app.test_client(), method)(concrete, json=body, headers=headers)
    assert response.status_code < 500, (method, concrete, body, response.get_data(as_text=True))
    if response.status_code >= 400:
        error = response.get_json()["error"]
        assert set(error) == {"code", "message", "details"}


#: Query parameters the routes read.
QUERY_KEYS = (
    "offset",
    "limit",
    "before",
    "round",
    "village",
    "version",
    "unmasked",
    "sheet",
    "area",
    "form_id",
    "status",
    "household_no",
    "include_deleted",
    "action",
    "level",
    "kind",
    "problem",
)
#: Values for path arguments and query parameters: numbers of every size, text with NULs.
param_values = (
    st.integers(min_value=-(2**70), max_value=2**70).map(str)
    | st.sampled_from(["housing_safety", "1", "0", "530102001201", "true", "", "\x00", "%"])
    | st.text(max_size=20)
)
#: Routes with their own wire formats (sealed sync frames, signed uploads) are tested apart.
_UNFUZZED_PARAMS = ("/sync", "/uploads", "/logout", "/openapi.json")


@pytest.fixture
def param_app(database_url: str, app_on) -> tuple[Flask, dict[str, str], list[tuple[str, str]]]:
    app = app_on(database_url, RATE_LIMIT_ATTEMPTS=100000)
    add_user(app, "admin")
    client = app.test_client()
    headers = login(client, "admin")
    document = client.get("/api/v1/openapi.json").json
    operations = sorted(
        (method, path)
        for path, ops in document["paths"].items()
        for method in ops
        if not any(part in path for part in _UNFUZZED_PARAMS)
    )
    return app, headers, operations


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_arbitrary_path_and_query_parameters_never_cause_a_server_error(
    param_app: tuple[Flask, dict[str, str], list[tuple[str, str]]], data: Any
) -> None:
    app, headers, operations = param_app
    method, path = data.draw(st.sampled_from(operations), label="operation")
    concrete = re.sub(
        r"\{(\w+)\}",
        lambda m: quote(data.draw(param_values, label=m.group(1)), safe="") or "x",
        path.replace("{fmt}", data.draw(st.sampled_from(["csv", "xlsx"]), label="fmt")),
    )
    query = data.draw(st.dictionaries(st.sampled_from(QUERY_KEYS), param_values, max_size=4))
    response = app.test_client().open(
        concrete, method=method.upper(), query_string=query, headers=headers
    )
    assert response.status_code < 500, (method, concrete, query, response.get_data(as_text=True))
    if response.status_code >= 400:
        error = response.get_json()["error"]
        assert set(error) == {"code", "message", "details"}
