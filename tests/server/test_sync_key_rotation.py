"""Server key rotation while tablets are enrolled: old devices keep syncing, then switch.

A device knows only the server keys it got at enrollment. After ``rotate-keys`` the reply to a
hello sealed to the old key is sealed and signed with that old key, and announces the current
keys (``server_keys`` in the manifest config) so the device can move to them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from server.services import keys
from server.services.context import EXTENSION_KEY
from server.settings import resolve_key_dir
from sync_protocol.crypto import EncryptionPublicKey, SigningPublicKey
from sync_protocol.messages import ServerReply
from tests.server.sync_device import HOUSE_A, VILLAGE, SyncDevice, county

__all__ = ["county"]  # the fixture, imported for pytest


def _announced(reply: ServerReply) -> dict[str, Any]:
    (manifest,) = [page for page in reply.downloads if page.scope == "manifest"]
    (entry,) = [c for c in manifest.config if c["key"] == "server_keys"]
    return dict(entry)


def _rotate(app: Flask) -> str:
    ring = keys.rotate(resolve_key_dir(app.config))
    app.extensions[EXTENSION_KEY].keys.reload()
    return ring.current_id


def test_a_device_enrolled_before_a_rotation_keeps_syncing_and_learns_the_new_keys(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    old_id = device.end.server_encryption.key_id()
    assert _announced(device.sync())["current_key_id"] == old_id

    new_id = _rotate(county)
    assert new_id != old_id
    record_id = device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H001")
    reply = device.sync()  # sealed to the old key, verified with the old signing key
    assert [f.status for f in reply.frames] == ["committed", "committed"]
    assert device.states[record_id]["revision"] >= 1
    announced = _announced(reply)
    assert announced["current_key_id"] == new_id == announced["encryption_key_id"]

    # The device switches to the announced keys; its next exchange uses them.
    device.end = dataclasses.replace(
        device.end,
        server_encryption=EncryptionPublicKey.from_base64(announced["encryption_public"]),
        server_signing=SigningPublicKey.from_base64(announced["signing_public"]),
    )
    device.put(record_id, "housing_safety", {"storeys": 2})
    reply = device.sync()
    assert [f.status for f in reply.frames] == ["committed", "committed"]
    assert _announced(reply)["current_key_id"] == new_id


def test_a_device_enrolled_after_a_rotation_uses_the_new_key(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    new_id = _rotate(county)
    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    assert device.end.server_encryption.key_id() == new_id
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H002")
    reply = device.sync()
    assert [f.status for f in reply.frames] == ["committed", "committed"]
    assert _announced(reply)["current_key_id"] == new_id
