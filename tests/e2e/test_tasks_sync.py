"""Verification tasks end to end (issue 17), on a real server process over loopback HTTP.

Tasks opened on the server (through the task service, as a department import would) reach the
village's tablet in the ``tasks`` download stream — only that village's — are listed and worked
offline with ``village-device tasks`` / ``village-device task``, go back as an ordinary record op
with an evidence photo on the next sync, and the server's task shows the outcome, which the
department export carries.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness.county_server import start_county_server
from server import create_app
from server.services import tasks
from server.services.access import CLI_ACTOR
from server.services.context import EXTENSION_KEY
from server.services.task_reasons import HouseholdKey, HouseholdSignal, TaskReason
from server.storage.database import db
from tests.e2e.conftest import NEIGHBOUR_VILLAGE, VILLAGE, CountyServer, cli_json, device_cli
from village_client_stub.simulator import AdminSession

NOT_ENROLLED = TaskReason(
    "insurance_not_enrolled",
    "dept:medical_insurance",
    "户籍成员在医保名单中未参保",
    "a member is not enrolled in medical insurance",
    {"member": "王五", "id_number": "530102********0019"},
)
DISABILITY = TaskReason(
    "disability_card_but_healthy",
    "dept:disability",
    "残联名单有残疾证，花名册为健康",
    "the disability list shows a card, the roster says healthy",
    {"member": "王五"},
)


@pytest.fixture
def county(tmp_path: Path) -> Iterator[CountyServer]:
    """The county server on SQLite only: the task rules run on PostgreSQL in
    tests/server/test_tasks.py; this story is about the tablet and the wire, and each run of it
    costs a dozen CLI processes."""
    server = start_county_server(f"sqlite:///{tmp_path / 'county.db'}", tmp_path / "county")
    try:
        yield server
    finally:
        server.stop()


def _open_on_server(county: CountyServer) -> list[str]:
    """Open tasks in the county's database through the task service (a producer's call)."""
    settings = {
        k[len("VILLAGE_SYNC_") :]: v for k, v in county.env.items() if k.startswith("VILLAGE_SYNC_")
    }
    app = create_app({**settings, "DATABASE_URL": county.database_url})
    try:
        with app.app_context():
            sink = tasks.task_sink(app.extensions[EXTENSION_KEY], CLI_ACTOR)
            result = sink(
                [
                    HouseholdSignal(HouseholdKey(VILLAGE, "0017"), (NOT_ENROLLED, DISABILITY)),
                    HouseholdSignal(HouseholdKey(NEIGHBOUR_VILLAGE, "0002"), (NOT_ENROLLED,)),
                ],
                origin="dept:medical_insurance:2026-11",
            )
            return list(result.created)
    finally:
        with app.app_context():
            db.engine.dispose()


def test_tasks_reach_the_tablet_are_worked_offline_and_come_back(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    db_file = tmp_path / "tablet.db"
    assert device_cli(db_file, "init").returncode == 0
    code = admin.issue_code(VILLAGE)
    enrolled = device_cli(db_file, "enroll", "--server", county.url, "--code", code)
    assert enrolled.returncode == 0, enrolled.stderr
    assert cli_json(device_cli(db_file, "tasks"))["tasks"] == []

    created = _open_on_server(county)
    assert len(created) == 2
    synced = cli_json(device_cli(db_file, "sync"))
    assert synced["ok"] and synced["tasks_received"] == 1

    (task,) = cli_json(device_cli(db_file, "tasks"))["tasks"]
    assert task["household"] == {"village_code": VILLAGE, "household_no": "0017"}
    assert [r["code"] for r in task["reasons"]] == [
        "insurance_not_enrolled",
        "disability_card_but_healthy",
    ]
    assert task["local_status"] == "open" and task["deadline"]
    listing = device_cli(db_file, "tasks", as_json=False)
    assert listing.returncode == 0
    assert "户籍成员在医保名单中未参保" in listing.stdout and "待核查" in listing.stdout

    # Worked offline: a coded outcome, a note and an evidence photo, queued in the outbox.
    photo = tmp_path / "evidence.jpg"
    photo.write_bytes(random.Random(17).randbytes(50_000))
    refused = device_cli(db_file, "task", task["task_id"][:8], "--outcome", "data_error")
    assert refused.returncode == 1
    assert cli_json(refused)["error"]["message"]["zh"].startswith("数据错误须写明类型")
    worked = cli_json(
        device_cli(
            db_file,
            "task",
            task["task_id"][:8],
            "--outcome",
            "data_error",
            "--detail",
            "death",
            "--note",
            "户主已于十月去世",
            "--photo",
            str(photo),
        )
    )
    assert worked["ok"] and worked["record_id"] == task["record_id"] and worked["seq"] == 1
    assert (
        cli_json(device_cli(db_file, "tasks", "--status", "worked"))["tasks"][0]["task_id"]
        == (task["task_id"])
    )

    synced = cli_json(device_cli(db_file, "sync"))
    assert synced["ok"] and synced["ops_acked"] == 1 and synced["pending_ops"] == 0
    assert synced["tasks_received"] == 1  # the server's worked status comes back down

    shown = admin.get(f"/api/v1/tasks/{task['task_id']}")
    assert shown["status"] == "worked"
    address = "sha256:" + hashlib.sha256(photo.read_bytes()).hexdigest()
    assert shown["outcome"] == {
        "outcome": "data_error",
        "data_error": "death",
        "note": "户主已于十月去世",
        "photo": address,
        "record_id": task["record_id"],
    }
    assert shown["outcome_label"]["zh"] == "数据错误：人员已死亡"
    still_open = admin.get(f"/api/v1/tasks?village={NEIGHBOUR_VILLAGE}")["items"]
    assert [t["status"] for t in still_open] == ["open"]
    on_device = cli_json(device_cli(db_file, "task", task["task_id"], "--show"))["task"]
    assert on_device["status"] == "worked"

    # The outcomes go back to the department that sent the list.
    out = tmp_path / "medical-insurance.csv"
    exported = county.cli(
        "export-task-outcomes", "--department", "medical_insurance", "--out", str(out)
    )
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    by_household = {row[2]: row for row in rows[1:]}
    assert set(by_household) == {"0017", "0002"}
    assert by_household["0017"][7:11] == [
        "data_error",
        "数据错误：人员已死亡",
        "death",
        "户主已于十月去世",
    ]
    assert by_household["0002"][6:8] == ["open", ""]
    disability = county.cli("export-task-outcomes", "--department", "disability", "--out", str(out))
    assert disability.returncode == 0
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert [row[3] for row in rows[1:]] == ["disability_card_but_healthy"]
