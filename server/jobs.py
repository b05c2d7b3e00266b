"""Scheduled jobs of the county server, run by APScheduler inside ``server serve``.

Jobs: publication of form versions whose time has come, purge of expired enrollment codes and
abandoned uploads, the nightly SQLite online backup (keeping ``BACKUP_KEEP``), the stale-device
report, the overdue-monitoring report and the conflict-age reminder (as ``alert.*`` rows in the
audit log, where the admin pages and the audit API show them within the area concerned).

Each job function runs in the caller's app context and opens its own write transactions. The
scheduler calls them through :func:`run_job`, which first takes the job's lock row in the
database (``job_locks``): with several app processes on one PostgreSQL, each firing its own
scheduler, exactly one process runs each occurrence. After a run the lock is kept for the job's
``min_gap``, so a process whose clock or scheduler fires a little later does not run a daily job
a second time; a process that dies mid-run leaves a lock that expires after ``JOB_LOCK_SECONDS``.

The scheduler is started only by ``server serve`` (and only with ``SCHEDULER_ENABLED``); the
unit tests call the job functions and :func:`run_job` directly.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from flask import Flask, current_app

from server.services import forms as form_service
from server.services import uploads
from server.services.access import SCHEDULER_ACTOR, Actor
from server.services.context import EXTENSION_KEY
from server.settings import sqlite_path
from server.storage import enrollment as enrollment_store
from server.storage import indicators as indicator_store
from server.storage import jobs as store
from server.storage.database import backup_sqlite, dialect_name, writing
from server.storage.types import utcnow

log = logging.getLogger(__name__)

#: Wall-clock time zone of the daily jobs (county staff read "02:00" as Beijing time).
CHINA_ZONE: Final = ZoneInfo("Asia/Shanghai")
BACKUP_PREFIX: Final = "county-"
BACKUP_SUFFIX: Final = ".db"
_HOLDER_KEY: Final = "village_sync_job_holder"
_SCHEDULER_KEY: Final = "village_sync_scheduler"


# --- the jobs ----------------------------------------------------------------------------------------


def publish_scheduled_forms(now: datetime | None = None) -> dict[str, Any]:
    """Publish every form version whose publication time has come (audited per version)."""
    published = form_service.publish_due(now or utcnow())
    return {"published": [f"{form_id}@{version}" for form_id, version in published]}


def purge_expired(now: datetime | None = None) -> dict[str, Any]:
    """Delete unused enrollment codes past their expiry and uploads abandoned for
    ``UPLOAD_ABANDON_HOURS``; audited when anything went."""
    now = now or utcnow()
    with writing():
        codes = enrollment_store.purge_expired(now)
    abandoned = uploads.purge_abandoned(
        current_app.extensions[EXTENSION_KEY],
        timedelta(hours=current_app.config["UPLOAD_ABANDON_HOURS"]),
        now=now,
    )
    if codes or abandoned:
        with writing():
            SCHEDULER_ACTOR.audit(
                "job.purge", details={"enrollment_codes": codes, "uploads": abandoned}
            )
    return {"enrollment_codes": codes, "uploads": abandoned}


def backup_dir(config: Any | None = None) -> Path:
    """The backup folder: the setting, else ``backups`` next to the SQLite file."""
    config = config if config is not None else current_app.config
    if config.get("BACKUP_DIR"):
        return Path(config["BACKUP_DIR"]).resolve()
    db_file = sqlite_path(config["DATABASE_URL"])
    return (db_file.parent if db_file is not None else Path("var").resolve()) / "backups"


def backup_to(target: Path, actor: Actor) -> Path:
    """``server backup --to FILE``: copy the SQLite database to ``target`` (0600), audited.

    Raises ``ValueError`` on PostgreSQL (``pg_dump`` is the tool there).
    """
    written = backup_sqlite(target)
    with writing():
        actor.audit(
            "database.backup",
            target_type="database",
            target_id=str(written),
            details={"bytes": written.stat().st_size},
        )
    return written


def backup_database(now: datetime | None = None) -> dict[str, Any]:
    """Copy the SQLite database with the online backup API and keep the newest ``BACKUP_KEEP``.

    Files are named ``county-YYYYmmddTHHMMSSZ.db`` (UTC), so their names sort by age. On
    PostgreSQL nothing is copied (``pg_dump`` is the tool there) and the result says so.
    """
    if dialect_name() != "sqlite":
        return {"skipped": "postgresql: use pg_dump"}
    now = now or utcnow()
    folder = backup_dir()
    target = folder / f"{BACKUP_PREFIX}{now:%Y%m%dT%H%M%SZ}{BACKUP_SUFFIX}"
    backup_sqlite(target)  # created 0600: the copy holds ID numbers like the original
    keep = max(1, int(current_app.config["BACKUP_KEEP"]))
    backups = sorted(folder.glob(f"{BACKUP_PREFIX}*{BACKUP_SUFFIX}"))
    removed = [path.name for path in backups[:-keep]]
    for path in backups[:-keep]:
        path.unlink(missing_ok=True)
    return {"backup": target.name, "bytes": target.stat().st_size, "removed": removed}


def restore_sqlite(backup: Path, database: Path) -> None:
    """Copy a backup over the SQLite database file with the online backup API.

    Stop the server (or at least its writers) first: connections open during the restore see
    the old pages until they reconnect. Raises ``FileNotFoundError`` when ``backup`` is missing.
    """
    if not Path(backup).is_file():
        raise FileNotFoundError(backup)
    source = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        destination = sqlite3.connect(str(database))
        try:
            source.backup(destination)
        finally:
            destination.close()
    finally:
        source.close()


def report_stale_devices(now: datetime | None = None) -> dict[str, Any]:
    """One ``alert.stale_device`` audit row per active device silent for ``STALE_DEVICE_DAYS``.

    A device that never synced counts from its enrollment. The row carries the device's scope
    as its area, so the township reviewer concerned sees it.
    """
    now = now or utcnow()
    days = int(current_app.config["STALE_DEVICE_DAYS"])
    stale = []
    with writing():
        # County-wide: the job reports every area, each row filed under the device's own scope.
        for device in store.stale_devices(now - timedelta(days=days), area_prefix=""):
            last = device.last_sync_at or device.enrolled_at
            silent = (now - last).days
            SCHEDULER_ACTOR.audit(
                "alert.stale_device",
                target_type="device",
                target_id=device.id,
                area_code=device.scope,
                details={
                    "days_since_sync": silent,
                    "last_sync_at": None if device.last_sync_at is None else last.isoformat(),
                    "label": device.label,
                },
            )
            stale.append(device.id)
    return {"stale_devices": stale}


def remind_old_conflicts(now: datetime | None = None) -> dict[str, Any]:
    """One ``alert.conflict_age`` audit row per village with conflicts open longer than
    ``CONFLICT_REMINDER_DAYS`` (count and age of the oldest)."""
    now = now or utcnow()
    days = int(current_app.config["CONFLICT_REMINDER_DAYS"])
    villages = []
    with writing():
        for village, count, oldest in store.old_open_conflicts(now - timedelta(days=days)):
            SCHEDULER_ACTOR.audit(
                "alert.conflict_age",
                target_type="village",
                target_id=village,
                area_code=village,
                details={"open_conflicts": count, "oldest_days": (now - oldest).days},
            )
            villages.append(village)
    return {"villages": villages}


#: Monitoring categories that make a household a monitoring object (监测对象).
_NOT_MONITORED: Final = (None, "", "无")
#: Household numbers named in one overdue-monitoring alert row (the count covers all).
_OVERDUE_LISTED: Final = 50


def report_overdue_monitoring(now: datetime | None = None) -> dict[str, Any]:
    """One ``alert.monitoring_overdue`` audit row per village whose monitoring objects (risk not
    removed) have had no monitoring record for ``MONITORING_VISIT_DAYS``.

    The newest monitoring record of each household is read (streamed, any round); its last
    update is the last visit. The row names up to 50 households and counts them all.
    """
    now = now or utcnow()
    cutoff = now - timedelta(days=int(current_app.config["MONITORING_VISIT_DAYS"]))
    overdue: dict[str, list[tuple[str, int]]] = {}
    for household in indicator_store.household_records("", form_ids=("monitoring_household",)):
        latest = household.newest_by_form().get("monitoring_household")
        if latest is None:
            continue
        data = latest.data
        if data.get("category") in _NOT_MONITORED or data.get("risk_removed") is True:
            continue
        if latest.updated_at < cutoff:
            overdue.setdefault(household.village_code, []).append(
                (household.household_no, (now - latest.updated_at).days)
            )
    with writing():
        for village, households in overdue.items():
            SCHEDULER_ACTOR.audit(
                "alert.monitoring_overdue",
                target_type="village",
                target_id=village,
                area_code=village,
                details={
                    "households": len(households),
                    "most_overdue_days": max(days for _, days in households),
                    "household_nos": [number for number, _ in households[:_OVERDUE_LISTED]],
                },
            )
    return {"villages": sorted(overdue)}


# --- running once across processes ------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """A job: its function, when it fires, and how long after a run no other process runs it."""

    name: str
    function: Callable[..., dict[str, Any]]
    trigger: str  # "interval" | "cron"
    trigger_args: Callable[[Any], dict[str, Any]]
    min_gap: timedelta


def job_specs() -> tuple[JobSpec, ...]:
    """Every scheduled job with its trigger (read from the settings when the scheduler starts)."""
    return (
        JobSpec(
            "publish_scheduled_forms",
            publish_scheduled_forms,
            "interval",
            lambda c: {"seconds": int(c["PUBLISH_CHECK_SECONDS"])},
            timedelta(0),
        ),
        JobSpec(
            "purge_expired",
            purge_expired,
            "interval",
            lambda c: {"hours": 1},
            timedelta(minutes=30),
        ),
        JobSpec(
            "backup_database",
            backup_database,
            "cron",
            lambda c: {"hour": int(c["BACKUP_HOUR"]), "minute": 0},
            timedelta(hours=12),
        ),
        JobSpec(
            "report_stale_devices",
            report_stale_devices,
            "cron",
            lambda c: {"hour": 8, "minute": 0},
            timedelta(hours=12),
        ),
        JobSpec(
            "report_overdue_monitoring",
            report_overdue_monitoring,
            "cron",
            lambda c: {"hour": 8, "minute": 15},
            timedelta(hours=12),
        ),
        JobSpec(
            "remind_old_conflicts",
            remind_old_conflicts,
            "cron",
            lambda c: {"hour": 8, "minute": 30},
            timedelta(hours=12),
        ),
    )


JOBS: Final = {spec.name: spec for spec in job_specs()}


def holder_id(app: Flask) -> str:
    """This app instance's name in job locks: host, process and a per-instance nonce."""
    holder = app.extensions.get(_HOLDER_KEY)
    if holder is None:
        holder = f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        app.extensions[_HOLDER_KEY] = holder
    return holder


def run_job(app: Flask, name: str, now: datetime | None = None) -> dict[str, Any] | None:
    """Run job ``name`` in an app context if this process wins its lock; returns its result.

    Returns None when another process holds the lock (it runs, or ran within the job's
    ``min_gap``). A failing job is logged, its error kept as the lock's ``last_result``, and
    None returned: the scheduler thread must survive it. Raises ``KeyError`` for an unknown name.
    """
    spec = JOBS[name]
    with app.app_context():
        holder = holder_id(app)
        started = now or utcnow()
        lease = timedelta(seconds=int(app.config["JOB_LOCK_SECONDS"]))
        with writing():
            if not store.try_lock(name, holder, started, started + lease):
                return None
        result: dict[str, Any] | None
        try:
            result = spec.function(now) if now is not None else spec.function()
            outcome: dict[str, Any] = {"ok": True, **(result or {})}
        except Exception as exc:
            log.exception("scheduled job %s failed", name)
            result, outcome = None, {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        finished = utcnow() if now is None else now
        with writing():
            if not store.finish(name, holder, finished, started + spec.min_gap, outcome):
                log.warning("job %s outlived its lock (JOB_LOCK_SECONDS too short?)", name)
        return result


def build_scheduler(app: Flask) -> Any:
    """A BackgroundScheduler (Beijing time) with every job, not yet started."""
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(timezone=CHINA_ZONE)
    for spec in job_specs():
        scheduler.add_job(
            run_job,
            spec.trigger,
            args=(app, spec.name),
            id=spec.name,
            name=spec.name,
            coalesce=True,  # after a pause, one catch-up run, not one per missed time
            max_instances=1,
            misfire_grace_time=3600,
            **spec.trigger_args(app.config),
        )
    return scheduler


def start_scheduler(app: Flask) -> Any | None:
    """Start the jobs for ``app`` (``server serve``) unless ``SCHEDULER_ENABLED`` is off.

    Returns the running scheduler (call ``shutdown()`` on exit), or None when disabled.
    """
    if not app.config["SCHEDULER_ENABLED"]:
        return None
    scheduler = build_scheduler(app)
    scheduler.start()
    app.extensions[_SCHEDULER_KEY] = scheduler
    return scheduler
