"""The OpenAPI document lists every /api/v1 route and method, with schemas and auth."""

from __future__ import annotations

import re

from flask import Flask

from server.api import API_PREFIX


def test_every_registered_api_route_is_documented(sqlite_url: str, app_on) -> None:
    app: Flask = app_on(sqlite_url)
    document = app.test_client().get(f"{API_PREFIX}/openapi.json").json
    assert document["openapi"].startswith("3.1")
    documented = {
        (path, method.upper())
        for path, operations in document["paths"].items()
        for method in operations
    }
    registered = {
        (re.sub(r"<(?:[a-z]+(?:\([^)]*\))?:)?(\w+)>", r"{\1}", rule.rule), method)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(API_PREFIX)
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert registered and documented == registered


def test_operations_carry_summaries_bodies_security_and_the_error_shape(
    sqlite_url: str, app_on
) -> None:
    document = app_on(sqlite_url).test_client().get(f"{API_PREFIX}/openapi.json").json
    paths = document["paths"]
    login = paths[f"{API_PREFIX}/auth/login"]["post"]
    body = login["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["username", "password"]
    assert "security" not in login
    assert (
        "token" in login["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    )
    enroll = paths[f"{API_PREFIX}/devices/enroll"]["post"]
    assert "201" in enroll["responses"] and "security" not in enroll
    revoke = paths[f"{API_PREFIX}/devices/{{device_id}}/revoke"]["post"]
    assert revoke["security"] == [{"bearer": []}] and revoke["x-roles"] == ["county_admin"]
    assert revoke["parameters"][0]["name"] == "device_id"
    version = paths[f"{API_PREFIX}/forms/{{form_id}}/versions/{{version}}"]["get"]
    assert {p["name"]: p["schema"]["type"] for p in version["parameters"]} == {
        "form_id": "string",
        "version": "integer",
    }
    for operations in paths.values():
        for operation in operations.values():
            assert operation["summary"]
            assert operation["responses"]["default"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
    error = document["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["required"] == ["code", "message", "details"]
    assert error["properties"]["message"]["required"] == ["zh", "en"]
    listed = document["components"]["schemas"]["Error"]["x-error-codes"]
    assert [entry["code"] for entry in listed] == error["properties"]["code"]["enum"]


def test_a_new_blueprint_is_documented_without_extra_work(sqlite_url: str, app_on) -> None:
    from flask import Blueprint

    app = app_on(sqlite_url)
    extra = Blueprint("extra", __name__, url_prefix=f"{API_PREFIX}/extra")

    @extra.get("/<int:item>")
    def show(item: int):
        """Show one extra item."""
        return {"item": item}

    app.register_blueprint(extra)
    paths = app.test_client().get(f"{API_PREFIX}/openapi.json").json["paths"]
    assert paths[f"{API_PREFIX}/extra/{{item}}"]["get"]["summary"] == "Show one extra item."
