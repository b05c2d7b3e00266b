"""The places where protocol v1's documents and the server used to disagree (issue 13, gaps
1–15), each pinned over real sealed exchanges: what docs/protocol.md now says is what happens.
"""

from __future__ import annotations

import json

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.storage import models
from sync_protocol.clock import Stamp
from sync_protocol.codec import canonical_json
from sync_protocol.envelope import seal
from sync_protocol.exchange import CONTENT_TYPE, open_reply
from sync_protocol.merge import RecordState, resolution
from sync_protocol.messages import CLOCK_SKEW_LIMIT_MS, UploadBatch
from sync_protocol.ops import resolve_op
from tests.server.conftest import assert_error
from tests.server.sync_device import HOUSE_A, VILLAGE, SyncDevice, count, county
from tests.server.test_sync_merge import HOUSE_D

__all__ = ["county"]  # the fixture, imported for pytest

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
def device(county: Flask, client: FlaskClient, admin_headers: dict[str, str]) -> SyncDevice:
    return SyncDevice.enroll(client, admin_headers, VILLAGE)


def _frame(envelope: bytes) -> bytes:
    return len(envelope).to_bytes(4, "big") + envelope


def test_enrollment_server_keys_name_the_current_key_like_the_manifest_entry(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    """Gap 1: the enrolment reply's ``server_keys`` is the config entry's shape minus ``key``."""
    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    entry = next(
        c
        for page in device.sync().downloads
        if page.scope == "manifest"
        for c in page.config
        if c["key"] == "server_keys"
    )
    from tests.server.sync_device import issue_code

    code = issue_code(client, admin_headers, VILLAGE)
    keys = device.keys
    enrolled = client.post(
        "/api/v1/devices/enroll",
        json={
            "code": code,
            "x25519_public": keys.encryption_public.to_base64(),
            "ed25519_public": keys.signing_public.to_base64(),
        },
    ).get_json()
    assert set(enrolled) == {"device_id", "scope", "server_keys", "forms", "server_time"}
    assert enrolled["server_keys"] == {k: v for k, v in entry.items() if k != "key"}
    assert enrolled["server_keys"]["current_key_id"] == enrolled["server_keys"]["encryption_key_id"]


def test_pages_come_for_the_own_scope_and_the_manifest_even_with_no_cursors(
    county: Flask, device: SyncDevice
) -> None:
    """Gap 2: a hello with ``cursors: {}`` gets the device's scope and ``manifest`` pages."""
    assert device.cursors == {}
    request = device.build([])
    reply = device.open(device.post(request.body), request)
    assert [p.scope for p in reply.downloads] == [VILLAGE, "manifest"]
    manifest = reply.downloads[1]
    assert manifest.after == 0 and manifest.next_cursor > 0
    entry = manifest.forms[0]
    # Gap 3: the form entry of a manifest page.
    assert set(entry) == {"form_id", "version", "status", "manifest_revision", "definition"}
    assert entry["status"] == "published"
    assert entry["definition"]["id"] == entry["form_id"]
    assert entry["definition"]["version"] == entry["version"]


def test_replies_are_signed_by_the_county_server_sender(county: Flask, device: SyncDevice) -> None:
    """Gap 4: the reply envelope's sender id is ``county-server``."""
    from sync_protocol.envelope import peek_header

    request = device.build([])
    assert peek_header(device.post(request.body).get_data()).sender_id == "county-server"


def test_applied_acks_carry_no_empty_conflict_or_reason_lists(
    county: Flask, device: SyncDevice
) -> None:
    """Gap 5: ``conflict_ids`` only on a conflict, ``reasons`` only on a rejection — on the wire."""
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H001")
    device.create("housing_safety", {"appraisal_grade": "Z"}, village=VILLAGE, household_no="H002")
    reply = device.sync()
    wire = reply.to_dict()["acks"][0]["acks"]
    assert wire[0] == {"seq": 1, "status": "applied", "revision": wire[0]["revision"]}
    assert wire[1]["status"] == "rejected" and "conflict_ids" not in wire[1]
    assert wire[1]["revision"] == 0 and wire[1]["reasons"]


def test_an_authentic_hello_that_is_not_a_valid_hello_gets_a_sealed_exchange_invalid(
    county: Flask, device: SyncDevice
) -> None:
    """Gap 7: an unknown hello key is a sealed ``exchange_invalid`` refusal (HTTP 400)."""
    hello = {**device.hello().to_dict(), "type": "hello", "colour": "blue"}
    envelope = seal(
        canonical_json(hello),
        recipient_public=device.end.server_encryption,
        sender_id=device.device_id,
        sender_signing_key=device.keys.signing,
        sequence=7,
    )
    response = device.post(_frame(envelope))
    assert response.status_code == 400
    assert response.headers["Content-Type"] == CONTENT_TYPE
    reply = open_reply(response.get_data(), device.end, hello_sequence=7)
    assert reply.refusal is not None and reply.refusal.code == "exchange_invalid"
    assert "hello.colour" in reply.refusal.message
    assert (reply.frames, reply.acks, reply.downloads) == ((), (), ())


def test_json_errors_and_sealed_replies_are_told_apart_by_content_type(
    county: Flask, client: FlaskClient, device: SyncDevice
) -> None:
    """Gap 7: JSON errors are ``application/json``; sealed refusals keep the exchange type."""
    error = client.post("/api/v1/sync", data=b"")
    assert error.headers["Content-Type"] == "application/json"
    device.cursors["530102002301"] = 0
    refused = device.post(device.build([]).body)
    assert (refused.status_code, refused.headers["Content-Type"]) == (403, CONTENT_TYPE)


def test_a_sequence_at_or_below_the_highest_accepted_is_refused_even_if_never_seen(
    county: Flask, device: SyncDevice
) -> None:
    """Gap 8: the server keeps only the highest accepted envelope sequence."""
    device.envelope_seq = 10
    assert device.post(device.build([]).body).status_code == 200
    device.envelope_seq = 5  # never sent before, but below 10
    error = assert_error(device.post(device.build([]).body), 409, "envelope_replayed")
    assert error["details"]["frame"] == 0
    device.envelope_seq = 11
    assert device.post(device.build([]).body).status_code == 200


@pytest.mark.parametrize("offset_ms", [CLOCK_SKEW_LIMIT_MS + DAY_MS, -CLOCK_SKEW_LIMIT_MS - DAY_MS])
def test_a_hello_clock_beyond_the_skew_limit_is_refused_sealed(
    county: Flask, device: SyncDevice, offset_ms: int
) -> None:
    """Gap 9: more than two years from server time either way → sealed ``clock_skew`` (403)."""
    # Set before the edit: the hello's clock is a fresh stamp of the HLC, which never goes back
    # below a stamp it issued (a clock set back after an edit is not "behind").
    device.clock_offset_ms = offset_ms
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H001")
    request = device.build()
    response = device.post(request.body)
    assert response.status_code == 403
    reply = device.open(response, request)
    assert reply.refusal is not None and reply.refusal.code == "clock_skew"
    assert ("ahead" if offset_ms > 0 else "behind") in reply.refusal.message
    assert count(county, models.Record) == 0


def test_a_clock_a_year_off_is_within_the_limit_and_accepted(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    """Gap 9: inside the limit the hello is accepted; an ahead stamp is merely suspect."""
    ahead = SyncDevice.enroll(client, admin_headers, VILLAGE, clock_offset_ms=400 * DAY_MS)
    ahead.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H001")
    reply = ahead.sync()
    assert reply.refusal is None
    assert [a.status for a in reply.acks[0].acks] == ["applied"]
    (state,) = reply.acks[0].records
    assert RecordState.from_dict(state).to_dict()["ops"][0].get("x") is True
    behind = SyncDevice.enroll(client, admin_headers, VILLAGE, clock_offset_ms=-400 * DAY_MS)
    assert behind.sync().refusal is None


def test_batch_seq_must_go_up_within_a_request_and_may_repeat_across_requests(
    county: Flask, device: SyncDevice
) -> None:
    """Gap 10: a repeated ``batch_seq`` inside one request is rejected, later frames skipped."""
    from sync_protocol.exchange import build_request

    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H001")
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H002")
    first, second = device.pending
    batches = [UploadBatch(1, (first,)), UploadBatch(1, (second,))]
    request = build_request(device.end, device.hello(), batches, first_sequence=1)
    reply = device.open(device.post(request.body), request)
    assert [(f.status, f.code) for f in reply.frames] == [
        ("committed", None),
        ("committed", None),
        ("rejected", "batch_seq_reused"),
    ]
    assert count(county, models.Record) == 1
    # The next request starts its batch numbering again: accepted, op seq carries on.
    request = build_request(
        device.end, device.hello(), [UploadBatch(1, (second,))], first_sequence=3
    )
    reply = device.open(device.post(request.body), request)
    assert [f.status for f in reply.frames] == ["committed", "committed"]
    assert [a.status for a in reply.acks[0].acks] == ["applied"]


def test_a_field_devices_resolve_op_is_rejected_and_the_conflict_stays_open(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    """Gap 15: resolving is a reviewer's job; a device's resolve op is ``rejected``."""
    first = SyncDevice.enroll(client, admin_headers, VILLAGE)
    second = SyncDevice.enroll(client, admin_headers, VILLAGE, clock_offset_ms=1000)
    record_id = first.create("housing_safety", HOUSE_D, village=VILLAGE, household_no="H100")
    first.sync()
    second.sync()
    first.put(record_id, "housing_safety", {"appraisal_grade": "C"})
    second.put(record_id, "housing_safety", {"appraisal_grade": "无房"})
    first.sync()
    (conflict_id,) = second.sync().acks[0].acks[0].conflict_ids
    state = RecordState.from_dict(second.states[record_id])
    changes, base = resolution(state, conflict_id, {"appraisal_grade": "无房"})
    second.op_seq += 1
    second.pending.append(
        resolve_op(
            device_id=second.device_id,
            seq=second.op_seq,
            record_id=record_id,
            form_id="housing_safety",
            form_version=1,
            conflict_id=conflict_id,
            changes=changes,
            base=base,
            hlc=second.clock.now(),
            base_revision=state.revision,
        )
    )
    (op_ack,) = second.sync().acks[0].acks
    assert op_ack.status == "rejected"
    assert [r["code"] for r in op_ack.reasons] == ["resolve_not_permitted"]
    listed = client.get("/api/v1/conflicts", headers=admin_headers).get_json()["items"]
    assert [(c["id"], c["status"]) for c in listed] == [(conflict_id, "open")]


def test_record_states_carry_no_conflict_list_the_open_conflicts_derive_from_paths(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    """Gap 6: a record state has no ``conflicts`` key; its open conflicts are derived."""
    first = SyncDevice.enroll(client, admin_headers, VILLAGE)
    second = SyncDevice.enroll(client, admin_headers, VILLAGE, clock_offset_ms=1000)
    record_id = first.create("housing_safety", HOUSE_D, village=VILLAGE, household_no="H100")
    first.sync()
    second.sync()
    first.put(record_id, "housing_safety", {"appraisal_grade": "C"})
    second.put(record_id, "housing_safety", {"appraisal_grade": "无房"})
    first.sync()
    (conflict_id,) = second.sync().acks[0].acks[0].conflict_ids
    wire = second.states[record_id]
    assert "conflicts" not in wire
    assert json.loads(json.dumps(wire))["policies"] == {"appraisal_grade": "review"}
    assert [c.conflict_id for c in RecordState.from_dict(wire).conflicts] == [conflict_id]
    assert Stamp.parse(wire["ops"][-1]["s"]).node in {first.device_id, second.device_id}
