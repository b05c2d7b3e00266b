"""Attacks on a real county server process over real HTTP, each refused with its own code and
audited (the "attacks as tests" proof of issue 16): replay, reordered batches, bit flips,
truncation, another device's signature, a stale server key, a revoked device, a reused enrolment
code, a logged-out token, scope escapes by id guessing, another area's photo. Each refusal must
leave an audit entry (read as the county admin through ``/api/v1/audit``) naming the action, the
refusal code and the client's address. The table of what was tried and what held is printed
(``pytest -s``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from bench.harness.county_server import CountyServer
from sync_protocol.crypto import generate_device_keys, generate_server_keys
from tests.e2e.conftest import NEIGHBOUR_VILLAGE, VILLAGE
from tests.server.conftest import assert_error
from tests.server.sync_device import HOUSE_A, SyncDevice

#: The address every attack comes from (no proxy in front of the server here).
ATTACKER_IP = "127.0.0.1"


@dataclass
class Reply:
    """What the Flask test client's response offers, for an answer over real HTTP."""

    status_code: int
    headers: Any
    body: bytes

    def get_data(self, as_text: bool = False) -> Any:
        return self.body.decode("utf-8", "replace") if as_text else self.body

    def get_json(self) -> Any:
        return json.loads(self.body)

    @property
    def json(self) -> Any:
        return self.get_json()


class HttpClient:
    """The slice of ``FlaskClient`` the server-test helpers use, over real HTTP."""

    def __init__(self, url: str) -> None:
        self.url = url

    def open(
        self,
        path: str,
        *,
        method: str,
        data: bytes | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        headers = dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return Reply(answer.status, answer.headers, answer.read())
        except urllib.error.HTTPError as error:
            with error:
                return Reply(error.code, error.headers, error.read())

    def post(self, path: str, *, data: bytes | None = None, json: Any = None, **kw: Any) -> Reply:
        return self.open(path, method="POST", data=data, json_body=json, headers=kw.get("headers"))

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        return self.open(path, method="GET", headers=headers)


def login(client: HttpClient, username: str, password: str) -> dict[str, str]:
    answer = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return {"Authorization": f"Bearer {answer.json['token']}"}


def test_attacks_on_a_real_server_are_each_refused_with_their_code_and_audited(
    county: CountyServer,
) -> None:
    client = HttpClient(county.url)
    admin = login(client, "admin", county.admin_password)
    held: list[tuple[str, int, str]] = []
    #: Refusals expected in the audit log so far, by (action, code); identical ones within a
    #: minute are one entry whose ``details.count`` counts them.
    expected: Counter[tuple[str, str]] = Counter()

    def audited(action: str, code: str) -> None:
        expected[(action, code)] += 1
        rows = client.get(f"/api/v1/audit?action={action}&limit=1000", headers=admin).json
        entries = [
            row
            for row in rows
            if row["details"].get("code", row["details"].get("reason")) == code
            and row["ip"] == ATTACKER_IP
        ]
        seen = sum(int(row["details"].get("count", 1)) for row in entries)
        assert seen == expected[(action, code)], (action, code, rows)

    def refused(attack: str, response: Reply, status: int, code: str, action: str) -> None:
        assert_error(response, status, code)
        audited(action, code)
        held.append((attack, status, code))

    device = SyncDevice.enroll(client, admin, VILLAGE)  # type: ignore[arg-type]
    record_id = device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="A1")
    request = device.build()
    assert device.post(request.body).status_code == 200
    refused("replayed request", device.post(request.body), 409, "envelope_replayed", "sync.refused")

    flipped = bytearray(device.build([]).body)
    flipped[len(flipped) // 2] ^= 0x01
    refused(
        "bit flip in the hello",
        device.post(bytes(flipped)),
        400,
        "envelope_bad_signature",
        "sync.refused",
    )

    whole = device.build([]).body
    refused(
        "truncated body",
        device.post(whole[: len(whole) // 2]),
        400,
        "envelope_truncated",
        "sync.refused",
    )

    impostor = replace(device, end=replace(device.end, keys=generate_device_keys()))
    refused(
        "another key signs as the device",
        impostor.post(impostor.build([]).body),
        400,
        "envelope_bad_signature",
        "sync.refused",
    )

    stale_key = generate_server_keys().encryption_public
    stale = replace(device, end=replace(device.end, server_encryption=stale_key))
    refused(
        "sealed to an unknown server key",
        stale.post(stale.build([]).body),
        400,
        "envelope_unknown_key_id",
        "sync.refused",
    )

    code = client.post("/api/v1/enrollment-codes", json={"scope": VILLAGE}, headers=admin).json
    keys = generate_device_keys()
    enrol = {
        "code": code["code"],
        "x25519_public": keys.encryption_public.to_base64(),
        "ed25519_public": keys.signing_public.to_base64(),
    }
    assert client.post("/api/v1/devices/enroll", json=enrol).status_code == 201
    refused(
        "reused enrolment code",
        client.post("/api/v1/devices/enroll", json=enrol),
        409,
        "enrollment_code_used",
        "device.enroll_refused",
    )

    reviewer_password = "a-long-reviewer-password"
    made = client.post(
        "/api/v1/users",
        json={
            "username": "far-reviewer",
            "password": reviewer_password,
            "role": "township_reviewer",
            "area_prefix": "530102002",
        },
        headers=admin,
    )
    assert made.status_code == 201, made.get_data(as_text=True)
    far = login(client, "far-reviewer", reviewer_password)
    refused(
        "record id of another township",
        client.get(f"/api/v1/records/{record_id}", headers=far),
        404,
        "record_not_found",
        "api.refused",
    )
    refused(
        "a guessed photo hash",
        client.get(f"/api/v1/uploads/{'ab' * 32}/content", headers=far),
        404,
        "attachment_not_found",
        "api.refused",
    )
    assert client.post("/api/v1/auth/logout", headers=far).status_code == 200
    refused(
        "token after logout",
        client.get("/api/v1/auth/me", headers=far),
        401,
        "invalid_token",
        "api.refused",
    )

    neighbour = SyncDevice.enroll(client, admin, NEIGHBOUR_VILLAGE)  # type: ignore[arg-type]
    neighbour.cursors[VILLAGE] = 0
    request = neighbour.build([])
    response = neighbour.post(request.body)
    assert response.status_code == 403
    reply = neighbour.open(response, request)
    assert reply.refusal is not None and reply.refusal.code == "scope_denied"
    audited("sync.refused", "scope_denied")
    held.append(("download cursor of another village", 403, "scope_denied"))

    # Reorder: the device sends two batches (ops 2 and 3) with their frames swapped. The first
    # frame to arrive holds op 3 with op 2 missing: refused with its code, nothing of it applied,
    # the rest skipped. Sent again in order, both apply: a reorder loses and duplicates nothing.
    second = device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="A2")
    third = device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="A3")
    request = device.build(device.pending[-2:], batch_size=1)
    sizes = request.frame_sizes
    hello, first_batch = request.body[: sizes[0]], request.body[sizes[0] : sizes[0] + sizes[1]]
    swapped = hello + request.body[sizes[0] + sizes[1] :] + first_batch
    response = device.post(swapped)
    assert response.status_code == 200
    reply = device.open(response, request)
    assert [(f.status, f.code) for f in reply.frames[1:]] == [
        ("rejected", "op_sequence_gap"),
        ("skipped", None),
    ]
    assert not reply.acks
    audited("sync.refused", "op_sequence_gap")
    held.append(("batches delivered out of order", 200, "op_sequence_gap"))
    in_order = device.sync()
    assert [f.status for f in in_order.frames[1:]] == ["committed"]
    for made_id in (second, third):
        assert client.get(f"/api/v1/records/{made_id}", headers=admin).status_code == 200

    revoked = client.post(f"/api/v1/devices/{device.device_id}/revoke", headers=admin)
    assert revoked.status_code == 200
    request = device.build([])
    response = device.post(request.body)
    assert response.status_code == 403
    reply = device.open(response, request)
    assert reply.refusal is not None and reply.refusal.code == "device_revoked"
    audited("sync.refused", "device_revoked")
    held.append(("revoked device syncs", 403, "device_revoked"))

    print(f"\nattacks tried: {len(held)}, refused: {len(held)}")
    for attack, status, error_code in held:
        print(f"  {attack:<36} {status} {error_code}")
    assert len(held) == 12
