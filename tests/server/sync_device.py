"""A small but real device for server tests: enrolled over HTTP, speaking the sealed protocol.

It keeps what a tablet keeps — its keys, an HLC, an op sequence, an envelope sequence, the
server's merged record states and download cursors — and builds every request with
``sync_protocol.exchange`` exactly as the tablet app does. Nothing is mocked.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from forms.paths import flatten
from server.services import forms as form_service
from server.storage.database import db
from sync_protocol.clock import HybridClock, wall_clock_ms
from sync_protocol.compression import DictionaryStore
from sync_protocol.crypto import (
    EncryptionPublicKey,
    KeyBundle,
    SigningPublicKey,
    generate_device_keys,
)
from sync_protocol.exchange import CONTENT_TYPE, DeviceEnd, Request, build_request, open_reply
from sync_protocol.merge import RecordState
from sync_protocol.messages import Capabilities, Hello, ServerReply, UploadBatch
from sync_protocol.ops import Op, delete_op, put_op

SYNC_URL = "/api/v1/sync"
YEAR_MS = 365 * 24 * 3600 * 1000

VILLAGE = "530102001201"
OTHER_VILLAGE = "530102001202"
TOWNSHIP = "530102001"
OTHER_TOWNSHIP = "530102002"
FAR_VILLAGE = "530102002301"

#: A valid housing-safety record (A-grade house, safe by appraisal).
HOUSE_A: dict[str, Any] = {
    "appraisal_grade": "A",
    "appraisal_date": "2025-08-04",
    "structure": "砖混（有构造柱/圈梁）",
    "build_year": 2009,
    "storeys": 1,
    "floor_area": 93.1,
    "safety_basis": "鉴定安全",
}


@pytest.fixture
def county(app: Flask) -> Flask:
    """The app with the six built-in instruments published."""
    with app.app_context():
        form_service.publish_builtins()
    return app


def count(app: Flask, model: Any) -> int:
    """Rows of ``model`` in the app's database."""
    with app.app_context():
        return int(db.session.query(model).count())


def issue_code(client: FlaskClient, headers: dict[str, str], scope: str) -> str:
    """An enrollment code for ``scope``, issued by the admin whose ``headers`` are given."""
    response = client.post("/api/v1/enrollment-codes", json={"scope": scope}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["code"])


@dataclass
class SyncDevice:
    """One enrolled device and its local sync state."""

    client: FlaskClient
    device_id: str
    scope: str
    keys: KeyBundle
    end: DeviceEnd
    clock_offset_ms: int = 0
    lean_acks: bool = False
    lean_downloads: bool = False
    op_seq: int = 0
    envelope_seq: int = 1
    batch_seq: int = 0
    high_water: int = 0
    pending: list[Op] = field(default_factory=list)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    cursors: dict[str, int] = field(default_factory=dict)
    forms: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    clock: HybridClock = field(init=False)

    def __post_init__(self) -> None:
        self.clock = HybridClock(
            self.device_id, now_ms=lambda: wall_clock_ms() + self.clock_offset_ms
        )

    @classmethod
    def enroll(
        cls,
        client: FlaskClient,
        admin_headers: dict[str, str],
        scope: str,
        *,
        clock_offset_ms: int = 0,
    ) -> SyncDevice:
        """Issue a code for ``scope`` and enrol a fresh key bundle with it."""
        code = issue_code(client, admin_headers, scope)
        keys = generate_device_keys()
        response = client.post(
            "/api/v1/devices/enroll",
            json={
                "code": code,
                "x25519_public": keys.encryption_public.to_base64(),
                "ed25519_public": keys.signing_public.to_base64(),
            },
        )
        assert response.status_code == 201, response.get_json()
        body = response.get_json()
        server = body["server_keys"]
        end = DeviceEnd(
            device_id=body["device_id"],
            keys=keys,
            server_encryption=EncryptionPublicKey.from_base64(server["encryption_public"]),
            server_signing=SigningPublicKey.from_base64(server["signing_public"]),
            dictionaries=DictionaryStore.packaged(),
        )
        return cls(client, body["device_id"], body["scope"], keys, end, clock_offset_ms)

    # --- editing ---------------------------------------------------------------------------

    def put(
        self,
        record_id: str,
        form_id: str,
        changes: dict[str, Any],
        *,
        household: dict[str, str] | None = None,
        round: str | None = "2026-annual",
        version: int = 1,
    ) -> Op:
        """Queue a put of ``changes`` on top of what this device last saw of the record."""
        known = self.states.get(record_id)
        state = RecordState.from_dict(known) if known is not None else None
        base = state.base_for(changes) if state is not None else dict.fromkeys(changes)
        self.op_seq += 1
        op = put_op(
            device_id=self.device_id,
            seq=self.op_seq,
            record_id=record_id,
            form_id=form_id,
            form_version=version,
            household=household if state is None else None,
            round=round if state is None else None,
            changes=changes,
            base=base,
            hlc=self.clock.now(),
            base_revision=state.revision if state is not None else 0,
        )
        self.pending.append(op)
        return op

    def create(
        self, form_id: str, data: dict[str, Any], *, village: str, household_no: str, **kw: Any
    ) -> str:
        """Queue a new record of ``form_id`` with ``data`` (flattened to paths); returns its id."""
        record_id = str(uuid.uuid4())
        household = {"village_code": village, "household_no": household_no}
        self.put(record_id, form_id, flatten(data), household=household, **kw)
        return record_id

    def delete(self, record_id: str) -> Op:
        """Queue the deletion of a record, naming every value this device saw in it."""
        state = RecordState.from_dict(self.states[record_id])
        self.op_seq += 1
        op = delete_op(
            device_id=self.device_id,
            seq=self.op_seq,
            record_id=record_id,
            form_id=state.form_id,
            form_version=state.form_version,
            base=state.delete_base(""),
            hlc=self.clock.now(),
            base_revision=state.revision,
        )
        self.pending.append(op)
        return op

    # --- syncing ---------------------------------------------------------------------------

    def hello(self) -> Hello:
        """The hello of the next exchange."""
        return Hello(
            device_id=self.device_id,
            cursors=dict(self.cursors),
            high_water_mark=self.high_water,
            clock=self.clock.now().to_text(),
            capabilities=Capabilities(
                suites=(1,),
                compression=(0, 1, 2, 3),
                dictionary_ids=tuple(self.end.dictionaries.ids()),
                lean_acks=self.lean_acks,
                lean_downloads=self.lean_downloads,
            ),
        )

    def build(self, ops: list[Op] | None = None, *, batch_size: int = 50) -> Request:
        """Seal a request carrying ``ops`` (default: everything pending) in batches."""
        ops = list(self.pending if ops is None else ops)
        batches = []
        for start in range(0, len(ops), batch_size):
            self.batch_seq += 1
            batches.append(UploadBatch(self.batch_seq, tuple(ops[start : start + batch_size])))
        request = build_request(self.end, self.hello(), batches, first_sequence=self.envelope_seq)
        self.envelope_seq = request.next_sequence
        return request

    #: The ``Village-Sync-App`` this device names itself with (None: the header is left out).
    app: str | None = None

    def post(self, body: bytes) -> Any:
        """POST a raw request body to the sync endpoint; returns the test response."""
        headers = {"Content-Type": CONTENT_TYPE}
        if self.app is not None:
            headers["Village-Sync-App"] = self.app
        return self.client.post(SYNC_URL, data=body, headers=headers)

    def open(self, response: Any, request: Request) -> ServerReply:
        """Open the sealed reply to ``request`` (raises on tampering or a reply to another)."""
        assert response.headers["Content-Type"] == CONTENT_TYPE, response.get_data(as_text=True)
        return open_reply(response.get_data(), self.end, hello_sequence=request.hello_sequence)

    def sync(self, *, batch_size: int = 50) -> ServerReply:
        """One full exchange: upload pending ops, apply acks and every download page."""
        request = self.build(batch_size=batch_size)
        response = self.post(request.body)
        reply = self.open(response, request)
        reply.raise_for_refusal()
        self.apply(reply)
        while any(page.more for page in reply.downloads):
            request = self.build([])
            reply = self.open(self.post(request.body), request)
            self.apply(reply)
        return reply

    def apply(self, reply: ServerReply) -> None:
        """Fold a reply in: server time, acked ops, merged states, download pages."""
        self.clock.observe(reply.server_time_ms)
        for ack in reply.acks:
            self.high_water = max(self.high_water, ack.high_water_mark)
            for state in ack.records:
                self._keep(state)
        self.pending = [op for op in self.pending if op.seq > self.high_water]
        for page in reply.downloads:
            for state in page.records:
                self._keep(state)
            for entry in page.forms:
                self.forms[(entry["form_id"], entry["version"])] = entry
            self.cursors[page.scope] = page.next_cursor

    def _keep(self, state: dict[str, Any]) -> None:
        current = self.states.get(state["record_id"])
        if current is None or current.get("revision", 0) <= state.get("revision", 0):
            self.states[state["record_id"]] = state

    def values(self, record_id: str) -> dict[str, Any]:
        """The merged values (flat paths) this device holds for a record."""
        from sync_protocol.merge import current_values

        return current_values(RecordState.from_dict(self.states[record_id]))
