"""The whole story through the real command line and a real server process (SQLite and PostgreSQL).

A work team's tablet is created, enrolled with a code the county issued, fills a household,
syncs; a second tablet of the township downloads it, corrects a field, syncs; the first
tablet receives the correction. Then the county revokes the first tablet and its next sync
stops with one clear line. Every check on the server side goes through the admin API.
"""

from __future__ import annotations

import json
from pathlib import Path

from forms.instruments.samples import sample_household
from tests.e2e.conftest import (
    TOWNSHIP,
    VILLAGE,
    CountyServer,
    cli_json,
    device_cli,
    new_device,
    server_record,
    server_records,
)
from village_client_stub.records import RecordEditor
from village_client_stub.simulator import AdminSession
from village_client_stub.store import DeviceStore
from village_client_stub.sync_client import SyncClient


def test_enrol_fill_sync_and_receive_a_correction(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    db = tmp_path / "tablet-a.db"
    assert cli_json(device_cli(db, "init"))["ok"]

    code = admin.issue_code(VILLAGE, label="team 1")
    enrolled = cli_json(device_cli(db, "enroll", "--server", county.url, "--code", code))
    assert enrolled["ok"] and enrolled["scope"] == VILLAGE
    device_id = enrolled["device_id"]
    # The device id is the server's; the forms came with the first download.
    assert {f.split("@")[0] for f in enrolled["forms_on_device"]} >= {
        "household_roster",
        "housing_safety",
        "monitoring_household",
    }
    listed = cli_json(device_cli(db, "forms"))
    assert len(listed["forms"]) == 7  # the six instruments and the verification outcome

    # The same code cannot enrol a second tablet: one line, exit 1.
    other = tmp_path / "tablet-x.db"
    device_cli(other, "init")
    reused = device_cli(other, "enroll", "--server", county.url, "--code", code)
    assert reused.returncode == 1
    assert json.loads(reused.stdout)["error"]["code"] == "enrollment_code_used"

    house = sample_household(7, village_code=VILLAGE)["housing_safety"]
    record_file = tmp_path / "house.json"
    record_file.write_text(json.dumps(house, ensure_ascii=False), encoding="utf-8")
    filled = cli_json(
        device_cli(
            db,
            "fill",
            "housing_safety",
            "--household",
            f"{VILLAGE}/0007",
            "--from",
            str(record_file),
        )
    )
    record_id = filled["record_id"]
    assert cli_json(device_cli(db, "status"))["pending_ops"] == 1

    synced = cli_json(device_cli(db, "sync"))
    assert synced["ok"] and synced["ops_acked"] == 1 and synced["pending_ops"] == 0
    assert synced["status_counts"] == {"applied": 1}
    status = cli_json(device_cli(db, "status"))
    assert status["pending_ops"] == 0 and status["last_sync_at"] and status["acked_through"] == 1

    on_server = server_record(admin, record_id)
    shown = cli_json(device_cli(db, "show", record_id))["record"]
    assert on_server["data"] == shown["data"]
    assert on_server["household_no"] == "0007"
    assert on_server["history"][0]["device_id"] == device_id

    # A township tablet downloads the household and corrects the number of storeys.
    with new_device(county, admin, tmp_path / "tablet-b.db", TOWNSHIP) as tablet_b:
        assert tablet_b.record(record_id).data == shown["data"]
        storeys = int(shown["data"]["storeys"]) + 1
        RecordEditor(tablet_b).edit(record_id, [f"storeys={storeys}"])
        report = SyncClient(tablet_b).sync()
        assert report.ops_acked == 1 and report.status_counts == {"applied": 1}

    # The first tablet receives the correction with its next sync.
    again = cli_json(device_cli(db, "sync"))
    assert again["ok"] and again["records_received"] >= 1
    corrected = cli_json(device_cli(db, "show", record_id))["record"]
    assert corrected["data"]["storeys"] == storeys
    assert server_record(admin, record_id)["data"] == corrected["data"]
    assert len(server_records(admin)) == 1

    # The county revokes the first tablet: its next sync stops with one clear line.
    admin.post(f"/api/v1/devices/{device_id}/revoke", {})
    revoked = device_cli(db, "sync")
    assert revoked.returncode == 1
    error = json.loads(revoked.stdout)["error"]
    assert error["code"] == "device_revoked"
    assert "停用" in error["message"]["zh"] and "revoked" in error["message"]["en"]
    text = device_cli(db, "sync", as_json=False)
    assert text.returncode == 1 and text.stdout == ""
    assert len(text.stderr.strip().splitlines()) == 1
    assert text.stderr.startswith("错误：此设备已被县级管理员停用")
    # Nothing the tablet held was lost by the refusal.
    with DeviceStore.open(db) as store:
        assert store.record(record_id).data == corrected["data"]
        assert "device_revoked" in (store.status()["last_error"] or "")
