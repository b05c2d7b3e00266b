"""Three devices edit one household's house record in a random interleaving of edits and syncs;
once everyone has synced, every device holds exactly the server's merged state.

Seeded, so a failure replays; run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import random

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.storage import models
from server.storage.database import db
from sync_protocol.merge import RecordState
from tests.server.sync_device import HOUSE_A, VILLAGE, SyncDevice, county

__all__ = ["county"]  # the fixture, imported for pytest

#: Fields and values that keep the record valid whatever combination wins.
CHOICES = {
    "storeys": [1, 2],
    "floor_area": [60.0, 75.5, 120.0],
    "build_year": [1985, 1999, 2009],
    "appraisal_grade": ["A", "B"],  # a review field: concurrent changes queue conflicts
}


@pytest.mark.parametrize("seed", [7, 2026])
def test_devices_converge_on_the_server_state(
    seed: int, county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    rng = random.Random(seed)
    devices = [SyncDevice.enroll(client, admin_headers, VILLAGE) for _ in range(3)]
    record_id = devices[0].create("housing_safety", HOUSE_A, village=VILLAGE, household_no="C1")
    for device in devices:
        device.sync()
    statuses: set[str] = set()
    for _step in range(40):
        device = rng.choice(devices)
        if rng.random() < 0.6:
            field = rng.choice(sorted(CHOICES))
            device.put(record_id, "housing_safety", {field: rng.choice(CHOICES[field])})
        else:
            reply = device.sync()
            statuses.update(a.status for ack in reply.acks for a in ack.acks)
    for _round in range(2):
        for device in devices:
            device.sync()
    assert "rejected" not in statuses
    # The interleaving really raced: some ops merged past others, some queued conflicts.
    assert {"merged", "conflict"} <= statuses
    with county.app_context():
        server_state = db.session.get(models.Record, record_id).state  # type: ignore[union-attr]
    for device in devices:
        assert device.pending == []
        assert device.states[record_id] == server_state
    merged = RecordState.from_dict(server_state)
    # Every op of every device is in the merged history: nothing typed was lost.
    assert {(w.device, w.seq) for w in merged.history()} >= {
        (d.device_id, seq) for d in devices for seq in range(1, d.op_seq + 1)
    }
