"""The server stores ID numbers in standard form and keeps what was typed in the record's
history: a device uploads a full-width / lower-case-x number (SQLite and PostgreSQL)."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from forms.identity import id_check_char
from forms.instruments.samples import sample_household
from tests.server.sync_device import VILLAGE, SyncDevice, county

__all__ = ["county"]  # the fixture, imported for pytest


def _typed_and_standard(number: str) -> tuple[str, str]:
    """A valid number of the same birth date and sex ending in X, typed full-width with a
    lower-case x, and in standard form."""
    for sequence in range(100):
        first17 = f"{number[:14]}{sequence:02d}{number[16]}"
        if id_check_char(first17) == "X":
            typed = "".join(chr(ord(c) + 0xFEE0) for c in first17) + "x"
            return typed, first17 + "X"
    raise AssertionError("no sequence gives a check character X")


def test_an_uploaded_id_is_stored_in_standard_form_and_its_history_keeps_the_typed_one(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    roster = sample_household(3, village_code=VILLAGE)["household_roster"]
    head = roster["members"][0]
    typed, standard = _typed_and_standard(head["id_number"])
    head["id_number"] = typed
    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    record_id = device.create(
        "household_roster", roster, village=VILLAGE, household_no=roster["household_no"]
    )
    reply = device.sync()
    assert [op.status for ack in reply.acks for op in ack.acks] == ["applied"]
    path = f"members/{head['_id']}/id_number"
    # What the device gets back (the merged state) holds the standard form ...
    assert device.values(record_id)[path] == standard

    detail = client.get(f"/api/v1/records/{record_id}", headers=admin_headers).get_json()
    assert detail["data"]["members"][0]["id_number"] == standard
    # ... and the history shows what was typed.
    assert detail["history"][0]["changes"][path] == typed

    # A second device typing the same number in another spelling is the same value: no conflict.
    other = SyncDevice.enroll(client, admin_headers, VILLAGE)
    other.sync()
    other.put(record_id, "household_roster", {path: standard.lower()})
    statuses = [op.status for ack in other.sync().acks for op in ack.acks]
    assert statuses and "conflict" not in statuses
    detail = client.get(f"/api/v1/records/{record_id}", headers=admin_headers).get_json()
    assert detail["data"]["members"][0]["id_number"] == standard
    assert detail["open_conflicts"] == []
