"""Scheduled jobs, called directly on SQLite and PostgreSQL, and their once-across-processes lock."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from forms.instruments.samples import sample_household
from server import jobs
from server.services import auth
from server.services import forms as form_service
from server.services.access import CLI_ACTOR
from server.settings import sqlite_path
from server.storage import audit
from server.storage import devices as device_store
from server.storage import enrollment as enrollment_store
from server.storage import jobs as job_store
from server.storage import uploads as upload_store
from server.storage.database import db, writing
from server.storage.models import ConflictItem, EnrollmentCode, User
from server.storage.types import utcnow
from tests.server.survey_data import store_household

TINY_FORM = {
    "id": "tiny_check",
    "version": 1,
    "title": {"zh": "小调查"},
    "fields": [{"name": "note_text", "type": "text", "label": {"zh": "备注"}}],
}


def _alerts(app: Flask, action: str) -> list[Any]:
    with app.app_context():
        return [e for e in audit.list_entries("", limit=1000) if e.action == action]


def _add_device(device_id: str, scope: str, *, enrolled_days: int, synced_days: int | None) -> None:
    now = utcnow()
    device_store.add_device(
        device_id=device_id,
        x25519_public="x" * 44,
        ed25519_public="e" * 44,
        scope=scope,
        enrolled_at=now - timedelta(days=enrolled_days),
        enrollment_code_id=None,
    )
    if synced_days is not None:
        device_store.touch_last_sync(device_id, now - timedelta(days=synced_days))


def test_publish_job_publishes_due_versions_once(app: Flask) -> None:
    with app.app_context():
        form_service.upload_draft(TINY_FORM, actor=CLI_ACTOR)
        at = utcnow() + timedelta(hours=1)
        form_service.publish("tiny_check", 1, actor=CLI_ACTOR, at=at)
        assert jobs.publish_scheduled_forms(utcnow()) == {"published": []}
        assert jobs.publish_scheduled_forms(at) == {"published": ["tiny_check@1"]}
        assert jobs.publish_scheduled_forms(at + timedelta(minutes=1)) == {"published": []}
        assert form_service.get_version("tiny_check", 1).status == "published"


def test_purge_removes_expired_codes_and_abandoned_uploads(app: Flask) -> None:
    now = utcnow()
    with app.app_context():
        with writing():
            enrollment_store.add_code(
                code_hash="a" * 64,
                scope="530102001201",
                expires_at=now + timedelta(days=1),
                created_by="t",
            )
            enrollment_store.add_code(
                code_hash="b" * 64,
                scope="530102001201",
                expires_at=now + timedelta(days=30),
                created_by="t",
            )
            upload_store.create_upload(
                sha256="c" * 64,
                size=10,
                content_type="image/jpeg",
                device_id="d",
                village_code="530102001201",
            )
        assert jobs.purge_expired(now) == {"enrollment_codes": 0, "uploads": 0}
        later = now + timedelta(days=4)
        assert jobs.purge_expired(later) == {"enrollment_codes": 1, "uploads": 1}
        left = db.session.scalars(sa.select(EnrollmentCode.code_hash)).all()
        assert left == ["b" * 64]
        assert upload_store.get_upload("c" * 64, "d") is None
    (entry,) = _alerts(app, "job.purge")
    assert entry.details == {"enrollment_codes": 1, "uploads": 1}


def test_stale_device_report(app: Flask) -> None:
    with app.app_context():
        with writing():
            _add_device("fresh", "530102001201", enrolled_days=30, synced_days=1)
            _add_device("silent", "530102001202", enrolled_days=30, synced_days=10)
            _add_device("never", "530102002201", enrolled_days=9, synced_days=None)
            _add_device("new", "530102002202", enrolled_days=1, synced_days=None)
            _add_device("gone", "530102002203", enrolled_days=40, synced_days=None)
            device_store.revoke("gone", "", utcnow())
        assert jobs.report_stale_devices() == {"stale_devices": ["silent", "never"]}
    alerts = {e.target_id: e for e in _alerts(app, "alert.stale_device")}
    assert set(alerts) == {"silent", "never"}
    assert alerts["silent"].area_code == "530102001202"
    assert alerts["silent"].details["days_since_sync"] == 10
    assert alerts["never"].details["last_sync_at"] is None
    with app.app_context():
        township = audit.list_entries("530102002", action="alert.stale_device")
    assert [e.target_id for e in township] == ["never"]


def test_stale_devices_read_stays_inside_the_area(app: Flask) -> None:
    with app.app_context():
        with writing():
            _add_device("village1", "530102001201", enrolled_days=30, synced_days=10)
            _add_device("village2", "530102002201", enrolled_days=30, synced_days=10)
            _add_device("township", "530102002", enrolled_days=30, synced_days=10)
        cutoff = utcnow() - timedelta(days=7)
        everywhere = job_store.stale_devices(cutoff, area_prefix="")
        township = job_store.stale_devices(cutoff, area_prefix="530102002")
    assert [d.id for d in everywhere] == ["village1", "township", "village2"]
    assert [d.id for d in township] == ["township", "village2"]
    assert township[0].last_sync_at is not None


def test_conflict_age_reminder(app: Flask) -> None:
    v1, v2 = "530102001201", "530102001202"
    household = sample_household(1, village_code=v1)
    first = store_household(app, household, village_code=v1, household_no="H1")
    second = store_household(app, household, village_code=v2, household_no="H2")
    now = utcnow()
    with app.app_context(), writing() as session:
        for n, (record, village, age) in enumerate(
            [(first, v1, 10), (first, v1, 12), (second, v2, 2)]
        ):
            session.add(
                ConflictItem(
                    id=f"c{n}",
                    record_id=record["housing_safety"],
                    village_code=village,
                    kind="review_field",
                    path=f"appraisal_grade{n}",
                    base=None,
                    mine={"value": "C"},
                    theirs={"value": "D"},
                    status="open",
                    created_at=now - timedelta(days=age),
                )
            )
    with app.app_context():
        assert jobs.remind_old_conflicts(now) == {"villages": [v1]}
        # The storage rule takes an area like the stale-device one: another area sees none.
        cutoff = now - timedelta(days=1)
        assert [v for v, _, _ in job_store.old_open_conflicts(cutoff, area_prefix=v1)] == [v1]
        assert job_store.old_open_conflicts(cutoff, area_prefix="530102002") == []
    (alert,) = _alerts(app, "alert.conflict_age")
    assert alert.area_code == v1
    assert alert.details == {"open_conflicts": 2, "oldest_days": 12}


def test_overdue_monitoring_report(app: Flask) -> None:
    v1, v2 = "530102001201", "530102002201"
    now = utcnow()
    base = sample_household(5, village_code=v1)["monitoring_household"]
    cases = [
        (v1, "H1", {**base, "category": "边缘易致贫户", "risk_removed": False}, 120),
        (v1, "H2", {**base, "category": "边缘易致贫户", "risk_removed": False}, 10),
        (v1, "H3", {**base, "category": "无", "risk_removed": False}, 200),
        (v2, "H4", {**base, "category": "突发严重困难户", "risk_removed": True}, 200),
        (v2, "H5", {**base, "category": "脱贫不稳定户", "risk_removed": False}, 95),
    ]
    for village, number, data, age in cases:
        store_household(
            app,
            {"monitoring_household": data},
            village_code=village,
            household_no=number,
            at=now - timedelta(days=age),
        )
    with app.app_context():
        assert jobs.report_overdue_monitoring(now) == {"villages": [v1, v2]}
    alerts = {e.target_id: e.details for e in _alerts(app, "alert.monitoring_overdue")}
    assert alerts[v1] == {"households": 1, "most_overdue_days": 120, "household_nos": ["H1"]}
    assert alerts[v2] == {"households": 1, "most_overdue_days": 95, "household_nos": ["H5"]}


def test_backup_keeps_n_and_restores_the_data_as_it_was(
    sqlite_url: str, app_on: Any, tmp_path: Path
) -> None:
    app = app_on(sqlite_url, BACKUP_DIR=str(tmp_path / "backups"), BACKUP_KEEP=2)
    with app.app_context():
        auth.create_user(
            username="before",
            password="long-enough-pass",
            role="county_admin",
            area_prefix="",
            actor="test",
        )
        now = utcnow()
        results = [jobs.backup_database(now + timedelta(seconds=s)) for s in (0, 1, 2)]
        kept = sorted(p.name for p in (tmp_path / "backups").iterdir())
        assert kept == [results[1]["backup"], results[2]["backup"]]
        assert results[2]["removed"] == [results[0]["backup"]]
        backup = tmp_path / "backups" / results[2]["backup"]
        assert oct(backup.stat().st_mode & 0o777) == "0o600"
        auth.create_user(
            username="after",
            password="long-enough-pass",
            role="county_admin",
            area_prefix="",
            actor="test",
        )
        db.session.remove()
        db.engine.dispose()
        jobs.restore_sqlite(backup, sqlite_path(app.config["DATABASE_URL"]))
        names = set(db.session.scalars(sa.select(User.username)))
    assert "before" in names and "after" not in names


def test_backup_is_skipped_on_postgresql(postgres_url: str, app_on: Any) -> None:
    app = app_on(postgres_url)
    with app.app_context():
        assert jobs.backup_database() == {"skipped": "postgresql: use pg_dump"}


def test_two_app_instances_run_a_job_once(database_url: str, app_on: Any) -> None:
    first, second = app_on(database_url), app_on(database_url)
    with first.app_context(), writing():
        _add_device("silent", "530102001202", enrolled_days=30, synced_days=10)
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}

    def fire(name: str, app: Flask) -> None:
        barrier.wait()
        results[name] = jobs.run_job(app, "report_stale_devices")

    threads = [
        threading.Thread(target=fire, args=("first", first)),
        threading.Thread(target=fire, args=("second", second)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ran = [name for name, result in results.items() if result is not None]
    assert len(ran) == 1, results
    assert results[ran[0]] == {"stale_devices": ["silent"]}
    assert len(_alerts(first, "alert.stale_device")) == 1
    # A scheduler firing a little later in the other process does not run it again ...
    other = second if ran == ["first"] else first
    assert jobs.run_job(other, "report_stale_devices") is None
    # ... but the next day's run happens.
    tomorrow = utcnow() + timedelta(days=1)
    assert jobs.run_job(other, "report_stale_devices", now=tomorrow) == {
        "stale_devices": ["silent"]
    }
    with other.app_context():
        lock = job_store.get_lock("report_stale_devices")
        assert lock is not None and lock.holder == jobs.holder_id(other)
        assert lock.last_result == {"ok": True, "stale_devices": ["silent"]}


def test_a_crashed_holders_lock_expires(app: Flask) -> None:
    now = utcnow()
    lease = timedelta(seconds=app.config["JOB_LOCK_SECONDS"])
    with app.app_context(), writing():
        assert job_store.try_lock("purge_expired", "dead-process", now, now + lease)
    assert jobs.run_job(app, "purge_expired", now=now + timedelta(seconds=5)) is None
    later = now + lease + timedelta(seconds=1)
    assert jobs.run_job(app, "purge_expired", now=later) == {"enrollment_codes": 0, "uploads": 0}


def test_a_failing_job_is_recorded_and_frees_its_lock(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(now: Any = None) -> dict[str, Any]:
        raise OSError("disk full")

    spec = jobs.JOBS["backup_database"]
    monkeypatch.setitem(
        jobs.JOBS,
        "backup_database",
        jobs.JobSpec(spec.name, broken, spec.trigger, spec.trigger_args, timedelta(0)),
    )
    assert jobs.run_job(app, "backup_database") is None
    with app.app_context():
        lock = job_store.get_lock("backup_database")
        assert lock is not None
        assert lock.last_result == {"ok": False, "error": "OSError: disk full"}
    monkeypatch.undo()
    assert jobs.run_job(app, "backup_database") is not None


def test_scheduler_is_off_unless_enabled(sqlite_url: str, app_on: Any) -> None:
    assert jobs.start_scheduler(app_on(sqlite_url, SCHEDULER_ENABLED=False)) is None
    app = app_on(sqlite_url)
    scheduler = jobs.start_scheduler(app)
    try:
        assert scheduler.running
        assert {job.id for job in scheduler.get_jobs()} == set(jobs.JOBS)
        backup = scheduler.get_job("backup_database")
        assert backup.next_run_time.hour == app.config["BACKUP_HOUR"]
        assert str(backup.next_run_time.tzinfo) == "Asia/Shanghai"
    finally:
        scheduler.shutdown(wait=False)


def test_server_serve_runs_the_scheduler(sqlite_url: str, app_on: Any, tmp_path: Path) -> None:
    """End to end: a version scheduled two seconds ahead is published by a running server."""
    app = app_on(sqlite_url)
    with app.app_context():
        form_service.upload_draft(TINY_FORM, actor=CLI_ACTOR)
        form_service.publish("tiny_check", 1, actor=CLI_ACTOR, at=utcnow() + timedelta(seconds=2))
        db.session.remove()
        db.engine.dispose()
    env = {
        **os.environ,
        "VILLAGE_SYNC_DATABASE_URL": sqlite_url,
        "VILLAGE_SYNC_KEY_DIR": str(tmp_path / "keys"),
        "VILLAGE_SYNC_PUBLISH_CHECK_SECONDS": "1",
        "VILLAGE_SYNC_PUBLISH_BUILTIN_FORMS": "false",
        "VILLAGE_SYNC_SERVE_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", "0"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    database = sqlite_path(sqlite_url)
    assert database is not None
    status, result = "", None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and status != "published":
            time.sleep(0.5)
            with closing(sqlite3.connect(database)) as conn:
                status = conn.execute(
                    "select status from form_versions where form_id = 'tiny_check'"
                ).fetchone()[0]
                row = conn.execute(
                    "select last_result from job_locks where name = 'publish_scheduled_forms'"
                ).fetchone()
                result = row and row[0]
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert status == "published"
    assert result is not None and json.loads(result)["ok"] is True
