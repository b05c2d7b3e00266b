"""After ``python -m server rotate-keys`` an enrolled tablet adopts the announced keys."""

from __future__ import annotations

import re
from pathlib import Path

from forms.instruments.samples import sample_household
from tests.e2e.conftest import VILLAGE, CountyServer, new_device, server_record
from village_client_stub.records import RecordEditor
from village_client_stub.simulator import AdminSession
from village_client_stub.sync_client import SyncClient


def test_a_tablet_switches_to_the_rotated_server_keys(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    tablet = new_device(county, admin, tmp_path / "tablet.db")
    old_key_id = tablet.identity().server_key_id
    assert SyncClient(tablet).sync().server_keys_adopted is None

    rotated = county.cli("rotate-keys")
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    found = re.search(r"current server key id: ([0-9a-f]{16})", rotated.stdout)
    assert found, rotated.stdout
    new_key_id = found.group(1)
    assert new_key_id != old_key_id

    editor = RecordEditor(tablet)
    house = sample_household(31, village_code=VILLAGE)["housing_safety"]
    where = {"village_code": VILLAGE, "household_no": "0031"}
    first = editor.fill("housing_safety", house, household=where).record_id
    report = SyncClient(tablet).sync()
    assert report.server_keys_adopted == new_key_id
    assert report.ops_acked == 1
    assert tablet.identity().server_key_id == new_key_id
    client = SyncClient(tablet)
    assert client.end.server_encryption.key_id() == new_key_id

    editor.edit(first, ["floor_area=88.5"])
    again = client.sync()
    assert again.ops_acked == 1 and again.server_keys_adopted is None
    assert server_record(admin, first)["data"]["floor_area"] == 88.5
    tablet.close()
