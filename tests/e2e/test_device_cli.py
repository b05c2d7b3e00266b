"""The networked ``village-device`` verbs against a real server: refusals, failures, simulate.

* An op for a form version the server never published is refused with its reason; the sync
  finishes, the op waits on the tablet for correction and ``status`` says why.
* Wrong or reused enrollment codes, and enrolling twice, end in one clear line.
* A server that cannot be reached: ``sync`` gives up after ``--max-failures`` attempts with one
  line, and keeps every edit.
* ``simulate`` enrols several tablets, fills sample households and syncs them all.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import (
    NEIGHBOUR_VILLAGE,
    VILLAGE,
    CountyServer,
    cli_json,
    device_cli,
    server_records,
)
from village_client_stub.simulator import AdminSession
from village_client_stub.store import DeviceStore

WELL_CHECK = {
    "id": "well_check",
    "version": 1,
    "title": {"zh": "水井检查", "en": "Well check"},
    "subject": "household",
    "fields": [{"name": "depth", "type": "integer", "label": {"zh": "井深", "en": "Depth"}}],
}


def test_refusals_and_failures_are_one_clear_line_and_lose_nothing(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    db = tmp_path / "tablet.db"
    device_cli(db, "init")
    wrong = device_cli(db, "enroll", "--server", county.url, "--code", "AAAA-BBBB-CCCC-DDDD")
    assert wrong.returncode == 1
    assert json.loads(wrong.stdout)["error"]["code"] == "invalid_enrollment_code"
    text = device_cli(
        db, "enroll", "--server", county.url, "--code", "AAAA-BBBB-CCCC-DDDD", as_json=False
    )
    assert text.returncode == 1 and text.stderr.startswith("错误：注册码无效")
    assert len(text.stderr.strip().splitlines()) == 1

    code = admin.issue_code(VILLAGE)
    enrolled = device_cli(db, "enroll", "--server", county.url, "--code", code, as_json=False)
    assert enrolled.returncode == 0, enrolled.stderr
    assert "服务器分配的设备编号" in enrolled.stdout
    twice = device_cli(db, "enroll", "--server", county.url, "--code", admin.issue_code(VILLAGE))
    assert json.loads(twice.stdout)["error"]["code"] == "already_enrolled"

    # A form the county never published, loaded on the tablet by hand.
    form_file = tmp_path / "well.json"
    form_file.write_text(json.dumps(WELL_CHECK, ensure_ascii=False), encoding="utf-8")
    assert cli_json(device_cli(db, "load-forms", str(form_file)))["ok"]
    data_file = tmp_path / "well-record.json"
    data_file.write_text(json.dumps({"depth": 12}), encoding="utf-8")
    filled = cli_json(
        device_cli(
            db, "fill", "well_check", "--household", f"{VILLAGE}/0001", "--from", str(data_file)
        )
    )
    synced = cli_json(device_cli(db, "sync"))
    assert synced["ok"] and synced["ops_rejected"] == [filled["seq"]]
    assert synced["pending_ops"] == 0 and synced["status_counts"] == {"rejected": 1}
    status = cli_json(device_cli(db, "status"))
    (rejected,) = status["rejected"]
    assert rejected["record_id"] == filled["record_id"]
    assert [r["code"] for r in rejected["reasons"]] == ["unknown_form_version"]
    shown = device_cli(db, "sync", as_json=False)
    assert shown.returncode == 0 and "同步完成" in shown.stdout
    assert server_records(admin) == []

    # The server goes away: the tablet says it retries, then gives up after two tries with one
    # line, keeping edits.
    hh_file = tmp_path / "house.json"
    hh_file.write_text(json.dumps({"depth": 30}), encoding="utf-8")
    device_cli(db, "fill", "well_check", "--household", f"{VILLAGE}/0002", "--from", str(hh_file))
    county.stop()
    down = device_cli(db, "sync", "--max-failures", "2", "--timeout", "5", as_json=False)
    assert down.returncode == 1 and down.stdout == ""
    (retry, gave_up) = down.stderr.strip().splitlines()
    assert retry.startswith("服务器无应答（connection refused），") and "retrying in" in retry
    assert gave_up.startswith("错误：连续 2 次同步失败")
    with DeviceStore.open(db) as store:
        assert len(store.pending_ops()) == 1
        assert len(store.rejected_ops()) == 1
        assert "sync_failed" in (store.status()["last_error"] or "")


def test_simulate_enrols_fills_and_syncs_several_tablets(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    run = device_cli(
        tmp_path / "unused.db",
        "simulate",
        "--server",
        county.url,
        "--admin-password",
        county.admin_password,
        "--devices",
        "2",
        "--households",
        "2",
        "--dir",
        str(tmp_path / "fleet"),
        "--parallel",
    )
    result = cli_json(run)
    assert result["ok"] and result["failed_devices"] == 0
    assert result["records"] == 2 * 2 * 6
    villages = [d["village"] for d in result["devices"]]
    assert villages == [VILLAGE, NEIGHBOUR_VILLAGE]
    for device in result["devices"]:
        assert device["sync"]["ops_acked"] == 12
        assert device["sync"]["pending_left"] == 0
        assert len(server_records(admin, device["village"])) == 12
