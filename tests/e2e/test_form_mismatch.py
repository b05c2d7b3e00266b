"""A form the server sends with the same id and version but other content than the device's
copy is kept as it is on the device and reported; the sync goes on."""

from __future__ import annotations

from pathlib import Path

from forms.instruments.samples import sample_household
from tests.e2e.conftest import VILLAGE, CountyServer, new_device, server_record
from village_client_stub.records import RecordEditor
from village_client_stub.simulator import AdminSession
from village_client_stub.sync_client import MANIFEST_SCOPE, SyncClient


def test_a_differing_form_copy_is_kept_and_reported_without_stopping_the_sync(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    tablet = new_device(county, admin, tmp_path / "tablet.db")
    version = tablet.form("housing_safety").version
    # As if another document had been loaded by hand under the same id and version.
    tablet.db.execute(
        "UPDATE forms SET sha256 = ? WHERE form_id = 'housing_safety' AND version = ?",
        ["0" * 64, version],
    )
    with tablet.transaction():
        tablet.set_cursor(MANIFEST_SCOPE, "0", "forms")
    house = sample_household(41, village_code=VILLAGE)["housing_safety"]
    house.pop("photos")
    record_id = (
        RecordEditor(tablet)
        .fill("housing_safety", house, household={"village_code": VILLAGE, "household_no": "0041"})
        .record_id
    )

    report = SyncClient(tablet).sync()
    assert report.forms_kept_local == [f"housing_safety@{version}"]
    assert report.ops_acked == 1 and report.forms_received > 0
    assert server_record(admin, record_id)["data"]["storeys"] == house["storeys"]
    tablet.close()
