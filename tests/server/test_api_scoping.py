"""Roles and areas over HTTP: reviewers see only their township, admins only their county;
accounts are managed inside the area; every admin action is audited."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from sync_protocol.crypto import generate_device_keys
from tests.server.conftest import ADMIN_PASSWORD, add_user, assert_error, login

TOWNSHIP_1 = "530102001"
TOWNSHIP_2 = "530102002"


def enroll_device(client: FlaskClient, headers: dict[str, str], scope: str) -> str:
    issued = client.post("/api/v1/enrollment-codes", json={"scope": scope}, headers=headers)
    assert issued.status_code == 201, issued.json
    keys = generate_device_keys().public_document()
    enrolled = client.post(
        "/api/v1/devices/enroll",
        json={
            "code": issued.json["code"],
            "x25519_public": keys["encryption_public"],
            "ed25519_public": keys["signing_public"],
        },
    )
    assert enrolled.status_code == 201, enrolled.json
    return enrolled.json["device_id"]


def test_township_reviewer_sees_only_its_township(client: FlaskClient, app: Flask) -> None:
    add_user(app, "admin")
    add_user(app, "reviewer1", role="township_reviewer", area=TOWNSHIP_1)
    admin = login(client, "admin")
    mine = enroll_device(client, admin, TOWNSHIP_1 + "201")
    theirs = enroll_device(client, admin, TOWNSHIP_2 + "201")
    township_wide = enroll_device(client, admin, TOWNSHIP_2)

    reviewer = login(client, "reviewer1")
    listed = client.get("/api/v1/devices", headers=reviewer).json
    assert [d["id"] for d in listed] == [mine]
    assert client.get(f"/api/v1/devices/{mine}", headers=reviewer).status_code == 200
    for guessed in (theirs, township_wide, "00000000-0000-0000-0000-000000000000"):
        assert_error(
            client.get(f"/api/v1/devices/{guessed}", headers=reviewer), 404, "device_not_found"
        )

    audit = client.get("/api/v1/audit", headers=reviewer).json
    assert audit and all(e["area_code"].startswith(TOWNSHIP_1) for e in audit)
    targets = {e["target_id"] for e in audit}
    assert mine in targets and theirs not in targets and township_wide not in targets

    everything = client.get("/api/v1/audit", headers=admin).json
    assert {theirs, township_wide} <= {e["target_id"] for e in everything}


def test_reviewer_cannot_do_admin_actions(client: FlaskClient, app: Flask) -> None:
    add_user(app, "admin")
    add_user(app, "reviewer1", role="township_reviewer", area=TOWNSHIP_1)
    device = enroll_device(client, login(client, "admin"), TOWNSHIP_1 + "201")
    reviewer = login(client, "reviewer1")
    for method, path, body in (
        ("post", "/api/v1/enrollment-codes", {"scope": TOWNSHIP_1 + "201"}),
        ("post", f"/api/v1/devices/{device}/revoke", None),
        ("post", "/api/v1/forms", {"id": "x"}),
        ("post", "/api/v1/users", {"username": "x", "password": "y" * 12, "role": "county_admin"}),
    ):
        response = getattr(client, method)(path, json=body, headers=reviewer)
        assert_error(response, 403, "role_forbidden")


def test_county_admin_is_held_to_its_county(client: FlaskClient, app: Flask) -> None:
    add_user(app, "root")
    root = login(client, "root")
    created = client.post(
        "/api/v1/users",
        json={
            "username": "kunming",
            "password": "x" * 12,
            "role": "county_admin",
            "area_prefix": "530102",
        },
        headers=root,
    )
    assert created.status_code == 201 and created.json["area_prefix"] == "530102"
    enroll_device(client, root, "530103001201")
    county = login(client, "kunming", "x" * 12)
    assert client.get("/api/v1/devices", headers=county).json == []
    outside = client.post(
        "/api/v1/enrollment-codes", json={"scope": "530103001201"}, headers=county
    )
    assert_error(outside, 403, "outside_area")
    reviewer_elsewhere = client.post(
        "/api/v1/users",
        json={
            "username": "r",
            "password": "x" * 12,
            "role": "township_reviewer",
            "area_prefix": "530103001",
        },
        headers=county,
    )
    assert_error(reviewer_elsewhere, 403, "outside_area")
    duplicate = client.post(
        "/api/v1/users",
        json={"username": "kunming", "password": "x" * 12, "role": "county_admin"},
        headers=root,
    )
    assert_error(duplicate, 409, "username_taken")


def test_every_admin_action_is_audited(client: FlaskClient, app: Flask) -> None:
    add_user(app, "admin")
    headers = login(client, "admin")
    device = enroll_device(client, headers, TOWNSHIP_1 + "201")
    client.post(f"/api/v1/devices/{device}/revoke", headers=headers)
    client.post("/api/v1/auth/logout", headers=headers)
    actions = [
        e["action"] for e in client.get("/api/v1/audit", headers=login(client, "admin")).json
    ]
    assert actions[:6] == [
        "auth.login",
        "auth.logout",
        "device.revoke",
        "device.enroll",
        "enrollment_code.issue",
        "auth.login",
    ]


def test_disabling_an_account_revokes_its_tokens_at_once(client: FlaskClient, app: Flask) -> None:
    add_user(app, "root")
    add_user(app, "reviewer", role="township_reviewer", area=TOWNSHIP_1)
    add_user(app, "elsewhere", role="township_reviewer", area="530103001")
    root = login(client, "root")
    reviewer = login(client, "reviewer")
    accounts = {a["username"]: a for a in client.get("/api/v1/users", headers=root).json}
    assert set(accounts) == {"root", "reviewer", "elsewhere"}
    target = accounts["reviewer"]["user_id"]

    disabled = client.post(f"/api/v1/users/{target}/disable", headers=root)
    assert disabled.status_code == 200 and disabled.json["active"] is False
    assert_error(client.get("/api/v1/auth/me", headers=reviewer), 401, "invalid_token")
    refused = client.post(
        "/api/v1/auth/login", json={"username": "reviewer", "password": ADMIN_PASSWORD}
    )
    assert_error(refused, 401, "invalid_credentials")
    client.post(f"/api/v1/users/{target}/enable", headers=root)
    login(client, "reviewer")

    me = accounts["root"]["user_id"]
    assert_error(
        client.post(f"/api/v1/users/{me}/disable", headers=root), 409, "cannot_disable_self"
    )


def test_county_admins_manage_only_accounts_inside_their_area(
    client: FlaskClient, app: Flask
) -> None:
    add_user(app, "root")
    add_user(app, "kunming", area="530102")
    add_user(app, "reviewer", role="township_reviewer", area=TOWNSHIP_1)
    add_user(app, "elsewhere", role="township_reviewer", area="530103001")
    county = login(client, "kunming")
    accounts = {
        a["username"]: a["user_id"] for a in client.get("/api/v1/users", headers=county).json
    }
    assert set(accounts) == {"kunming", "reviewer"}
    everyone = {
        a["username"]: a["user_id"]
        for a in client.get("/api/v1/users", headers=login(client, "root")).json
    }
    for name in ("root", "elsewhere"):
        assert_error(
            client.post(f"/api/v1/users/{everyone[name]}/disable", headers=county),
            404,
            "user_not_found",
        )
    assert (
        client.post(f"/api/v1/users/{accounts['reviewer']}/disable", headers=county).status_code
        == 200
    )
