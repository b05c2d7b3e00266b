"""Backup restored into a fresh server: identical records, conflicts and audit (the "backup"
proof of issue 16).

A real server on SQLite takes a sync from two tablets (records, a delete, a conflict), then
``python -m server backup --to FILE`` copies the database while the server runs. A second, fresh
server process (its own folder, its own port) starts on the file restored from that backup, and
every record (with its history), every conflict and every audit entry it serves through the API
equals what the first server served at the moment of the backup. The counts are printed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness.county_server import REPO, START_TIMEOUT_S, CountyServer, start_county_server
from forms.instruments.samples import problem_household
from server.jobs import restore_sqlite
from tests.e2e.conftest import VILLAGE, new_device, server_records
from village_client_stub.records import RecordEditor
from village_client_stub.simulator import AdminSession, fill_households
from village_client_stub.sync_client import SyncClient
from village_client_stub.transport import HttpTransport


def _serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``python -m server serve`` with ``env`` on a free port; returns it and its URL."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", "0"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        found = re.search(r"listening on (http://\S+)", log.read_text(errors="replace"))
        if found:
            return process, found.group(1)
        time.sleep(0.05)
    process.kill()
    process.wait(30)
    raise AssertionError(f"the restored server did not start:\n{log.read_text()}")


def _audit(admin: AdminSession, up_to: int) -> list[dict[str, Any]]:
    """Every audit entry with an id up to ``up_to``, newest first."""
    return [entry for entry in admin.get("/api/v1/audit?limit=1000") if entry["id"] <= up_to]


def _snapshot(admin: AdminSession, audit_up_to: int) -> dict[str, Any]:
    """Records (with history), conflicts and audit as the API serves them."""
    records = {
        r["record_id"]: admin.get(f"/api/v1/records/{r['record_id']}")
        for r in admin.get(f"/api/v1/records?village={VILLAGE}&include_deleted=true&limit=1000")[
            "items"
        ]
    }
    conflicts = {
        c["id"]: admin.get(f"/api/v1/conflicts/{c['id']}")
        for c in admin.get("/api/v1/conflicts?status=all&limit=1000")["items"]
    }
    return {"records": records, "conflicts": conflicts, "audit": _audit(admin, audit_up_to)}


def test_backup_restored_into_a_fresh_server_serves_the_same_data(tmp_path: Path) -> None:
    county: CountyServer = start_county_server(
        f"sqlite:///{tmp_path / 'county.db'}", tmp_path / "a"
    )
    fresh: subprocess.Popen[bytes] | None = None
    try:
        admin = county.admin()
        tablet_a = new_device(county, admin, tmp_path / "a.db")
        made = fill_households(tablet_a, VILLAGE, range(3))
        house = problem_household("dangerous_house", 3, village_code=VILLAGE)["housing_safety"]
        where = {"village_code": VILLAGE, "household_no": "0042"}
        record_id = RecordEditor(tablet_a).fill("housing_safety", house, household=where).record_id
        SyncClient(tablet_a).sync()
        tablet_b = new_device(county, admin, tmp_path / "b.db")
        RecordEditor(tablet_a).edit(record_id, ["renovation_method=原址翻建"])
        RecordEditor(tablet_b).edit(record_id, ["renovation_method=选址新建"])
        RecordEditor(tablet_b).delete(made[0])
        SyncClient(tablet_a).sync()
        report = SyncClient(tablet_b).sync()
        assert len(report.conflicts) == 1
        tablet_a.close()
        tablet_b.close()

        newest = admin.get("/api/v1/audit?limit=1")[0]["id"]
        before = _snapshot(admin, newest)
        backup = tmp_path / "saved" / "county-backup.db"
        run = county.cli("backup", "--to", str(backup))
        assert run.returncode == 0, run.stderr
        assert backup.stat().st_mode & 0o777 == 0o600
        # The backup is audited on the running server.
        after = county.admin().get("/api/v1/audit?action=database.backup")
        assert [entry["target_id"] for entry in after] == [str(backup)]

        # A fresh machine: its own folder with the key files copied, the database restored.
        restored = tmp_path / "b" / "county.db"
        restored.parent.mkdir()
        shutil.copytree(Path(county.env["VILLAGE_SYNC_KEY_DIR"]), tmp_path / "b" / "keys")
        restore_sqlite(backup, restored)
        env = {
            **county.env,
            "DATABASE_URL": f"sqlite:///{restored}",
            "VILLAGE_SYNC_DATABASE_URL": f"sqlite:///{restored}",
            "VILLAGE_SYNC_KEY_DIR": str(tmp_path / "b" / "keys"),
            "VILLAGE_SYNC_ATTACHMENTS_DIR": str(tmp_path / "b" / "attachments"),
            "VILLAGE_SYNC_BACKUP_DIR": str(tmp_path / "b" / "backups"),
        }
        fresh, url = _serve(env, tmp_path / "b" / "server.log")
        assert url != county.url
        county.stop()  # nothing can come from the first server any more
        restored_admin = AdminSession(HttpTransport(url), "admin", county.admin_password)
        got = _snapshot(restored_admin, newest)

        assert got["records"] == before["records"]
        assert got["conflicts"] == before["conflicts"]
        assert got["audit"] == before["audit"]
        assert len(server_records(restored_admin)) == len(before["records"]) - 1  # one deleted
        print(
            f"backup restored: {len(got['records'])} records (with history), "
            f"{len(got['conflicts'])} conflicts, {len(got['audit'])} audit entries identical"
        )
        assert len(got["records"]) == 3 * 6 + 1 and len(got["conflicts"]) == 1
    finally:
        if fresh is not None and fresh.poll() is None:
            fresh.terminate()
            fresh.wait(30)
        county.stop()
