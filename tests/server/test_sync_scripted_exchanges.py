"""The whole-exchange scripts of ``sync_protocol/vectors/exchanges.json``, played against the real
county server in-process (upload, conflict and resolution, replay, truncation, key rotation,
clock skew): every step's reply is what the script says (docs/protocol.md §6, §11).

Devices are :class:`tests.server.sync_device.SyncDevice` — real keys, real sealed envelopes;
the script only names what a device does and what must come back.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.services import keys
from server.services.context import EXTENSION_KEY
from server.settings import resolve_key_dir
from sync_protocol.crypto import EncryptionPublicKey, SigningPublicKey
from sync_protocol.exchange import CONTENT_TYPE, Request
from sync_protocol.messages import ServerReply
from tests.server.sync_device import SyncDevice, county

__all__ = ["county"]  # the fixture, imported for pytest

SCRIPTS = json.loads(
    (
        Path(__file__).resolve().parents[2] / "sync_protocol" / "vectors" / "exchanges.json"
    ).read_text(encoding="utf-8")
)
DAY_MS = 24 * 3600 * 1000


@dataclasses.dataclass
class _Play:
    app: Flask
    client: FlaskClient
    admin_headers: dict[str, str]
    devices: dict[str, SyncDevice] = dataclasses.field(default_factory=dict)
    records: dict[str, str] = dataclasses.field(default_factory=dict)
    conflicts: dict[str, str] = dataclasses.field(default_factory=dict)
    last_request: dict[str, Request] = dataclasses.field(default_factory=dict)
    last_ops: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    last_reply: dict[str, ServerReply] = dataclasses.field(default_factory=dict)

    def step(self, step: dict[str, Any], where: str) -> None:
        if "enroll" in step:
            offset = int(step.get("clock_offset_days", 0)) * DAY_MS
            self.devices[step["enroll"]] = SyncDevice.enroll(
                self.client, self.admin_headers, step["scope"], clock_offset_ms=offset
            )
        elif "rotate_keys" in step:
            keys.rotate(resolve_key_dir(self.app.config))
            self.app.extensions[EXTENSION_KEY].keys.reload()
        elif "resolve" in step:
            conflict_id = self.conflicts[step["resolve"]]
            response = self.client.post(
                f"/api/v1/conflicts/{conflict_id}/resolve",
                json={"value": step["value"]},
                headers=self.admin_headers,
            )
            assert response.status_code == 200, (where, response.get_json())
        else:
            self.device_step(self.devices[step["device"]], step, where)

    def device_step(self, device: SyncDevice, step: dict[str, Any], where: str) -> None:
        if "create" in step:
            village = device.scope if len(device.scope) == 12 else device.scope + "201"
            self.records[step["create"]] = device.create(
                step["form_id"], step["data"], village=village, household_no=step["household_no"]
            )
        elif "put" in step:
            device.put(self.records[step["put"]], "housing_safety", step["changes"])
        elif "adopt_server_keys" in step:
            announced = _server_keys(self.last_reply[step["device"]])
            device.end = dataclasses.replace(
                device.end,
                server_encryption=EncryptionPublicKey.from_base64(announced["encryption_public"]),
                server_signing=SigningPublicKey.from_base64(announced["signing_public"]),
            )
        else:
            self.exchange(device, step["device"], step["exchange"], step.get("expect", {}), where)

    def exchange(
        self,
        device: SyncDevice,
        name: str,
        options: dict[str, Any],
        expect: dict[str, Any],
        where: str,
    ) -> None:
        if options.get("resend_last"):
            request = self.last_request[name]
        elif options.get("resend_ops"):
            request = device.build(self.last_ops[name])
        else:
            self.last_ops[name] = list(device.pending)
            request = device.build(batch_size=int(options.get("batch_size", 50)))
        self.last_request[name] = request
        body = request.body[: len(request.body) - int(options.get("cut_bytes", 0))]
        response = device.post(body)
        assert response.status_code == expect.get("http_status", 200), (where, response.data[:300])
        is_sealed = response.headers["Content-Type"] == CONTENT_TYPE
        assert {"exchange": True, "json": False}[
            expect.get("content_type", "exchange")
        ] is is_sealed
        if not is_sealed:
            assert response.get_json()["error"]["code"] == expect["error"], where
            return
        reply = device.open(response, request)
        self.last_reply[name] = reply
        if "refusal" in expect:
            assert reply.refusal is not None and reply.refusal.code == expect["refusal"], where
        else:
            assert reply.refusal is None, (where, reply.refusal)
            key_change = _server_keys(reply)["encryption_public"] != (
                device.end.server_encryption.to_base64()
            )
            device.apply(reply)
            if "key_change" in expect:
                assert key_change is expect["key_change"], where
        if "frames" in expect:
            got = [f.status + (f":{f.code}" if f.code else "") for f in reply.frames]
            assert got == expect["frames"], where
        if "acks" in expect:
            assert [[a.status for a in ack.acks] for ack in reply.acks] == expect["acks"], where
        if "save_conflicts" in expect:
            ids = [c for ack in reply.acks for a in ack.acks for c in a.conflict_ids]
            assert len(ids) == len(expect["save_conflicts"]), where
            self.conflicts.update(zip(expect["save_conflicts"], ids, strict=True))
        for alias, values in expect.get("values", {}).items():
            held = device.values(self.records[alias])
            assert {path: held.get(path) for path in values} == values, where


def _server_keys(reply: ServerReply) -> dict[str, Any]:
    (manifest,) = [page for page in reply.downloads if page.scope == "manifest"]
    (entry,) = [c for c in manifest.config if c["key"] == "server_keys"]
    return dict(entry)


@pytest.mark.parametrize("script", SCRIPTS["scripts"], ids=lambda s: s["id"])
def test_scripted_exchange(
    script: dict[str, Any], county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    play = _Play(county, client, admin_headers)
    for number, step in enumerate(script["steps"]):
        play.step(step, f"{script['id']} step {number}")


def test_a_script_whose_expectation_is_wrong_fails(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    script = json.loads(json.dumps(SCRIPTS["scripts"][0]))
    script["steps"][3]["expect"]["acks"] = [["conflict"]]
    play = _Play(county, client, admin_headers)
    with pytest.raises(AssertionError):
        for number, step in enumerate(script["steps"]):
            play.step(step, f"step {number}")
