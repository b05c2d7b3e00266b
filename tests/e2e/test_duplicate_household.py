"""A household surveyed twice with the same form and round: the duplicate stays open on the
device until the county settles it.

The server reports a ``duplicate_household`` conflict only in the ack (record states list the
merge's field conflicts only), so the device must not close it when a state without it comes
back; it closes when the server's records show it settled (an admin kept one record and the
other came back deleted, or kept both: the records come back naming it in ``closed_conflicts``).
"""

from __future__ import annotations

from pathlib import Path

from forms.instruments.samples import problem_household
from tests.e2e.conftest import VILLAGE, CountyServer, cli_json, device_cli, new_device
from village_client_stub.records import RecordEditor
from village_client_stub.simulator import AdminSession
from village_client_stub.sync_client import SyncClient


def test_duplicate_household_stays_open_until_an_admin_resolves_it(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    db = tmp_path / "tablet.db"
    tablet = new_device(county, admin, db)
    house = problem_household("dangerous_house", 3, village_code=VILLAGE)["housing_safety"]
    where = {"village_code": VILLAGE, "household_no": "0042"}
    editor = RecordEditor(tablet)
    first = editor.fill("housing_safety", house, household=where, round="2026-annual")
    assert not [w for w in first.warnings if w["code"] == "duplicate_household"]
    second = editor.fill("housing_safety", house, household=where, round="2026-annual")
    (warning,) = [w for w in second.warnings if w["code"] == "duplicate_household"]
    assert warning["severity"] == "warning"
    assert first.record_id in warning["message"]["zh"]

    report = SyncClient(tablet).sync()
    (conflict_id,) = report.conflicts
    SyncClient(tablet).sync()
    tablet.close()

    status = cli_json(device_cli(db, "status"))
    assert [c["conflict_id"] for c in status["conflicts"]] == [conflict_id]
    item = admin.get(f"/api/v1/conflicts/{conflict_id}")
    assert (item["kind"], item["status"]) == ("duplicate_household", "open")

    resolved = admin.post(f"/api/v1/conflicts/{conflict_id}/resolve", {"keep": first.record_id})
    assert resolved["status"] == "resolved"
    synced = device_cli(db, "sync")
    assert synced.returncode == 0, synced.stderr
    assert cli_json(device_cli(db, "status"))["conflicts"] == []
    listed = cli_json(device_cli(db, "records"))["records"]
    assert [r["record_id"] for r in listed] == [first.record_id]


def test_duplicate_household_kept_both_closes_on_the_device(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    db = tmp_path / "tablet.db"
    tablet = new_device(county, admin, db)
    house = problem_household("dangerous_house", 3, village_code=VILLAGE)["housing_safety"]
    where = {"village_code": VILLAGE, "household_no": "0043"}
    editor = RecordEditor(tablet)
    first = editor.fill("housing_safety", house, household=where, round="2026-annual")
    second = editor.fill("housing_safety", house, household=where, round="2026-annual")
    (conflict_id,) = SyncClient(tablet).sync().conflicts
    SyncClient(tablet).sync()
    tablet.close()
    status = cli_json(device_cli(db, "status"))
    assert [c["conflict_id"] for c in status["conflicts"]] == [conflict_id]

    resolved = admin.post(f"/api/v1/conflicts/{conflict_id}/resolve", {"action": "keep_both"})
    assert (resolved["status"], resolved["choice"]) == ("resolved", "keep_both")
    synced = device_cli(db, "sync")
    assert synced.returncode == 0, synced.stderr
    assert cli_json(device_cli(db, "status"))["conflicts"] == []
    listed = cli_json(device_cli(db, "records"))["records"]
    assert sorted(r["record_id"] for r in listed) == sorted([first.record_id, second.record_id])
    # Closed stays closed: another sync does not reopen it.
    assert device_cli(db, "sync").returncode == 0
    assert cli_json(device_cli(db, "status"))["conflicts"] == []
