"""The sealed sync exchange end to end: enrol, upload, ack, download, replays and refusals.

Every request is built by a real device (``tests/server/sync_device.py``) with real keys and
sealed envelopes, against a real SQLite file and a real PostgreSQL schema.
"""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.storage import models
from sync_protocol.envelope import CompressionId, peek_header
from sync_protocol.errors import ServerRefused
from tests.server.conftest import assert_error
from tests.server.sync_device import (
    HOUSE_A,
    OTHER_VILLAGE,
    TOWNSHIP,
    VILLAGE,
    SyncDevice,
    count,
    county,
)
from village_client_stub.transport import server_timing_s

__all__ = ["county"]  # the fixture, imported for pytest


@pytest.fixture
def device(county: Flask, client: FlaskClient, admin_headers: dict[str, str]) -> SyncDevice:
    return SyncDevice.enroll(client, admin_headers, VILLAGE)


def test_new_records_are_acked_stored_and_reach_a_second_device(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str], device: SyncDevice
) -> None:
    ids = [
        device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no=f"H{i:03}")
        for i in range(3)
    ]
    request = device.build()
    response = device.post(request.body)
    # Records of a form with a packaged dictionary, to a device holding it: zstd + dictionary.
    assert peek_header(response.get_data()).compression == CompressionId.ZSTD_DICTIONARY
    reply = device.open(response, request)
    device.apply(reply)
    assert [f.status for f in reply.frames] == ["committed", "committed"]
    (ack,) = reply.acks
    assert [a.status for a in ack.acks] == ["applied"] * 3
    assert ack.high_water_mark == 3
    assert {r["record_id"] for r in ack.records} == set(ids)
    assert device.pending == []
    assert reply.server_time_ms > 0
    assert count(county, models.Record) == 3
    # The first device's own download page lists its records too, with the cursor moved on.
    page = next(p for p in reply.downloads if p.scope == VILLAGE)
    assert {r["record_id"] for r in page.records} == set(ids)
    manifest = next(p for p in reply.downloads if p.scope == "manifest")
    assert {f["form_id"] for f in manifest.forms} >= {"housing_safety", "household_roster"}
    assert all("definition" in f for f in manifest.forms)

    township_device = SyncDevice.enroll(client, admin_headers, TOWNSHIP)
    township_device.sync()
    assert set(township_device.states) == set(ids)
    assert township_device.values(ids[0])["appraisal_grade"] == "A"
    # Nothing new: the next exchange downloads nothing.
    again = township_device.sync()
    assert all(not p.records for p in again.downloads)

    elsewhere = SyncDevice.enroll(client, admin_headers, OTHER_VILLAGE)
    elsewhere.sync()
    assert elsewhere.states == {}


def test_replayed_batch_returns_identical_acks_and_changes_nothing(
    county: Flask, device: SyncDevice
) -> None:
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H001")
    device.create("housing_safety", {**HOUSE_A, "storeys": 2}, village=VILLAGE, household_no="H002")
    ops = list(device.pending)
    first = device.sync()
    records_before = count(county, models.Record)
    changes_before = count(county, models.RecordChange)

    # The reply was "lost": the device sends the same ops again in fresh envelopes.
    request = device.build(ops)
    replay = device.open(device.post(request.body), request)
    assert [a.to_dict() for a in replay.acks[0].acks] == [a.to_dict() for a in first.acks[0].acks]
    assert replay.acks[0].high_water_mark == 2
    assert count(county, models.Record) == records_before
    assert count(county, models.RecordChange) == changes_before

    # Re-batched differently (one op per batch), the acks are still the stored ones.
    request = device.build(ops, batch_size=1)
    split = device.open(device.post(request.body), request)
    assert [a.acks[0].to_dict() for a in split.acks] == [a.to_dict() for a in first.acks[0].acks]


def test_the_same_request_bytes_sent_twice_are_refused_as_a_replay(
    county: Flask, device: SyncDevice
) -> None:
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H001")
    request = device.build()
    assert device.post(request.body).status_code == 200
    error = assert_error(device.post(request.body), 409, "envelope_replayed")
    assert error["details"]["frame"] == 0
    assert count(county, models.RecordChange) == 1


def test_tampered_hello_is_refused_with_its_code(county: Flask, device: SyncDevice) -> None:
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H001")
    request = device.build()
    body = bytearray(request.body)
    body[4 + request.frame_sizes[0] - 4 - 70] ^= 0x01  # a bit inside the hello's ciphertext
    assert_error(device.post(bytes(body)), 400, "envelope_bad_signature")
    assert count(county, models.Record) == 0


def test_tampered_batch_frame_is_rejected_and_later_frames_skipped(
    county: Flask, device: SyncDevice
) -> None:
    for i in range(3):
        device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no=f"H{i}")
    request = device.build(batch_size=1)
    body = bytearray(request.body)
    second_batch_end = sum(request.frame_sizes[:3])
    body[second_batch_end - 10] ^= 0x80  # inside the signature of batch 2
    reply = device.open(device.post(bytes(body)), request)
    assert [(f.status, f.code) for f in reply.frames] == [
        ("committed", None),
        ("committed", None),
        ("rejected", "envelope_bad_signature"),
        ("skipped", None),
    ]
    assert len(reply.acks) == 1 and reply.acks[0].high_water_mark == 1
    assert count(county, models.Record) == 1
    device.apply(reply)
    follow_up = device.sync()
    assert follow_up.acks[-1].high_water_mark == 3
    assert count(county, models.Record) == 3


def test_truncated_body_commits_the_complete_batches(county: Flask, device: SyncDevice) -> None:
    for i in range(2):
        device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no=f"H{i}")
    request = device.build(batch_size=1)
    cut = request.body[: sum(request.frame_sizes[:2]) + 30]
    reply = device.open(device.post(cut), request)
    assert [f.status for f in reply.frames] == ["committed", "committed", "truncated"]
    assert count(county, models.Record) == 1


def test_unknown_device_and_garbage_get_json_errors(county: Flask, client: FlaskClient) -> None:
    assert_error(client.post("/api/v1/sync", data=b""), 400, "exchange_empty")
    assert_error(client.post("/api/v1/sync", data=b"\x00\x00\x00\x00"), 400, "frame_malformed")
    assert_error(
        client.post("/api/v1/sync", data=b"\x00\x00\x00\x05hello"), 400, "envelope_malformed_header"
    )


def test_unknown_device_is_refused(county: Flask, client: FlaskClient, device: SyncDevice) -> None:
    from sync_protocol.crypto import generate_device_keys
    from sync_protocol.exchange import DeviceEnd

    stranger = SyncDevice(
        client,
        "not-enrolled",
        VILLAGE,
        generate_device_keys(),
        DeviceEnd(
            device_id="not-enrolled",
            keys=generate_device_keys(),
            server_encryption=device.end.server_encryption,
            server_signing=device.end.server_signing,
        ),
    )
    assert_error(stranger.post(stranger.build([]).body), 401, "device_unknown")


def test_wrong_signing_key_is_refused(
    county: Flask, client: FlaskClient, device: SyncDevice
) -> None:
    from dataclasses import replace

    from sync_protocol.crypto import generate_device_keys

    impostor = replace(device.end, keys=generate_device_keys())
    device.end = impostor
    assert_error(device.post(device.build([]).body), 400, "envelope_bad_signature")


def test_revoked_device_is_refused_with_a_sealed_refusal(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str], device: SyncDevice
) -> None:
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H001")
    response = client.post(f"/api/v1/devices/{device.device_id}/revoke", headers=admin_headers)
    assert response.status_code == 200
    request = device.build()
    response = device.post(request.body)
    assert response.status_code == 403
    reply = device.open(response, request)
    assert reply.refusal is not None and reply.refusal.code == "device_revoked"
    with pytest.raises(ServerRefused) as refused:
        reply.raise_for_refusal()
    assert refused.value.code == "device_revoked"
    assert count(county, models.Record) == 0


def test_cursor_outside_the_device_scope_is_denied(county: Flask, device: SyncDevice) -> None:
    device.cursors[OTHER_VILLAGE] = 0
    request = device.build([])
    response = device.post(request.body)
    assert response.status_code == 403
    reply = device.open(response, request)
    assert reply.refusal is not None and reply.refusal.code == "scope_denied"


def test_envelope_sealed_to_an_unknown_server_key_is_refused(
    county: Flask, device: SyncDevice
) -> None:
    from dataclasses import replace

    from sync_protocol.crypto import generate_server_keys

    stale = generate_server_keys().encryption_public
    device.end = replace(device.end, server_encryption=stale)
    assert_error(device.post(device.build([]).body), 400, "envelope_unknown_key_id")


def test_a_batch_from_another_device_inside_an_exchange_is_rejected(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str], device: SyncDevice
) -> None:
    other = SyncDevice.enroll(client, admin_headers, VILLAGE)
    other.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H1")
    foreign = other.build()
    foreign_batch = foreign.body[foreign.frame_sizes[0] :]
    own = device.build([])
    reply = device.open(device.post(own.body + foreign_batch), own)
    assert [(f.status, f.code) for f in reply.frames] == [
        ("committed", None),
        ("rejected", "envelope_unknown_sender"),
    ]
    assert count(county, models.Record) == 0


def test_a_malformed_frame_after_good_ones_keeps_what_was_committed(
    county: Flask, device: SyncDevice
) -> None:
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H1")
    request = device.build()
    reply = device.open(device.post(request.body + b"\x00\x00\x00\x00junk"), request)
    assert [(f.status, f.code) for f in reply.frames] == [
        ("committed", None),
        ("committed", None),
        ("rejected", "frame_malformed"),
    ]
    assert reply.acks[0].acks[0].status == "applied"
    assert count(county, models.Record) == 1


def test_a_device_restored_from_an_old_backup_cannot_reuse_sequence_numbers(
    county: Flask, device: SyncDevice
) -> None:
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H1")
    device.sync()
    # Restored from a backup taken before that sync: it numbers a new edit 1 again.
    device.op_seq, device.high_water = 0, 0
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H2")
    request = device.build()
    reply = device.open(device.post(request.body), request)
    assert [(f.status, f.code) for f in reply.frames] == [
        ("committed", None),
        ("rejected", "op_sequence_reused"),
    ]
    assert count(county, models.Record) == 1


def test_lean_acks_leave_out_the_states_of_applied_ops(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str], device: SyncDevice
) -> None:
    device.lean_acks = True
    plain = device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H1")
    warned = device.create(
        "housing_safety", {**HOUSE_A, "storeys": 3}, village=VILLAGE, household_no="H2"
    )
    device.create("housing_safety", {"storeys": 99}, village=VILLAGE, household_no="H3")
    request = device.build()
    ack = device.open(device.post(request.body), request).acks[0]
    assert [a.status for a in ack.acks] == ["applied", "applied", "rejected"]
    # Only the state with server warnings travels; the device computes the plain one itself.
    assert [r["record_id"] for r in ack.records] == [warned]
    assert plain not in {r["record_id"] for r in ack.records}


def test_lean_downloads_leave_out_the_states_own_ops_made(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str], device: SyncDevice
) -> None:
    device.lean_downloads = True
    plain = device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H1")
    request = device.build()
    reply = device.open(device.post(request.body), request)
    (ack,) = reply.acks
    assert [a.status for a in ack.acks] == ["applied"]
    assert ack.lean_seqs == (ack.acks[0].seq,)
    assert ack.records == ()
    page = reply.downloads[0]
    assert plain not in {r["record_id"] for r in page.records}
    assert page.next_cursor >= ack.acks[0].revision


def test_a_lean_page_walks_past_more_own_states_than_a_page_holds(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str], device: SyncDevice
) -> None:
    # 250 new records in one exchange: every state is the device's own, so the page walks on
    # past its 200 rows and the cursor lands after all of them; the next exchange sends none.
    device.lean_downloads = True
    for n in range(250):
        device.create(
            "housing_safety",
            {**HOUSE_A, "floor_area": 40.5 + n},
            village=VILLAGE,
            household_no=f"W{n:03d}",
        )
    request = device.build()
    reply = device.open(device.post(request.body), request)
    acks = [a for ack in reply.acks for a in ack.acks]
    assert [a.status for a in acks] == ["applied"] * 250
    (page,) = [p for p in reply.downloads if p.scope == VILLAGE]
    assert page.records == () and not page.more
    assert page.next_cursor >= max(a.revision for a in acks)
    device.apply(reply)
    request = device.build()
    again = device.open(device.post(request.body), request)
    assert [p.records for p in again.downloads if p.scope == VILLAGE] == [()]


def test_lean_downloads_shrink_the_real_reply_under_40_bytes_per_acked_record(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str], device: SyncDevice
) -> None:
    # The county server's own reply (not the bench's model of it) to 50 new records, HTTP
    # body only: with lean downloads no state travels back, only the acks.
    sizes = {}
    # A first exchange takes the form manifest (the six definitions), which is no reply to acks.
    request = device.build()
    for page in device.open(device.post(request.body), request).downloads:
        device.cursors[page.scope] = page.next_cursor
    for lean in (False, True):
        device.lean_downloads = lean
        for n in range(50):
            device.create(
                "housing_safety",
                {**HOUSE_A, "floor_area": 40.5 + n},
                village=VILLAGE,
                household_no=f"L{int(lean)}-{n:03d}",
            )
        request = device.build()
        response = device.post(request.body)
        reply = device.open(response, request)
        assert [a.status for a in reply.acks[0].acks] == ["applied"] * 50
        device.apply(reply)
        village_page = reply.downloads[0]
        sizes[lean] = len(response.data) / 50
        if lean:
            assert len(reply.acks[0].lean_seqs) == 50 and village_page.records == ()
    assert sizes[True] <= 40 < sizes[False], sizes


def test_every_exchange_reply_says_how_long_the_server_worked_on_it(
    county: Flask, client: FlaskClient, device: SyncDevice
) -> None:
    # The device takes this time out of the exchange's before estimating the link's speed
    # (sync_protocol.pacing.LinkEstimate.observe): a busy server is not a slow link.
    device.create("housing_safety", HOUSE_A, village=VILLAGE, household_no="H001")
    response = device.post(device.build().body)
    assert response.status_code == 200
    seconds = server_timing_s(response.headers["Server-Timing"])
    assert seconds is not None and 0 < seconds < 60
    refused = client.post("/api/v1/sync", data=b"")  # a JSON error is not timed
    assert "Server-Timing" not in refused.headers
