"""Scheduled jobs of the county server, run by APScheduler inside ``server serve``.

Jobs: publication of form versions whose time has come, purge of expired enrollment codes and
abandoned uploads, the nightly SQLite online backup (keeping ``BACKUP_KEEP``), the stale-device
report, the overdue-monitoring report and the conflict-age reminder (as ``alert.*`` rows in the
audit log, where the admin pages and the audit API show them within the area concerned).

The domain jobs are services (``services.alerts``, ``services.housekeeping``,
``services.forms.publish_due``); the functions here run them for the current app. Each job
function runs in the caller's app context and opens its own write transactions. The
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

from server.services import alerts, housekeeping, tasks
from server.services import forms as form_service
from server.services.access import SCHEDULER_ACTOR, Actor
from server.services.context import EXTENSION_KEY, ServiceContext
from server.settings import sqlite_path
from server.storage import jobs as store
from server.storage.database import writing
from server.storage.types import utcnow

log = logging.getLogger(__name__)

#: Wall-clock time zone of the daily jobs (county staff read "02:00" as Beijing time).
CHINA_ZONE: Final = ZoneInfo("Asia/Shanghai")
_HOLDER_KEY: Final = "village_sync_job_holder"
_SCHEDULER_KEY: Final = "village_sync_scheduler"


# --- the jobs ----------------------------------------------------------------------------------------


def publish_scheduled_forms(now: datetime | None = None) -> dict[str, Any]:
    """Publish every form version whose publication time has come (audited per version)."""
    published = form_service.publish_due(now or utcnow())
    return {"published": [f"{form_id}@{version}" for form_id, version in published]}


def purge_expired(now: datetime | None = None) -> dict[str, Any]:
    """``services.housekeeping.purge_expired`` for the current app."""
    return housekeeping.purge_expired(_services(), now)


def backup_dir(config: Any | None = None) -> Path:
    """The backup folder: the setting, else ``backups`` next to the SQLite file."""
    config = config if config is not None else current_app.config
    if config.get("BACKUP_DIR"):
        return Path(config["BACKUP_DIR"]).resolve()
    db_file = sqlite_path(config["DATABASE_URL"])
    return (db_file.parent if db_file is not None else Path("var").resolve()) / "backups"


def backup_to(target: Path, actor: Actor) -> Path:
    """``server backup --to FILE``: ``services.housekeeping.backup_to``."""
    return housekeeping.backup_to(target, actor)


def backup_database(now: datetime | None = None) -> dict[str, Any]:
    """``services.housekeeping.backup_database`` into :func:`backup_dir` for the current app."""
    return housekeeping.backup_database(_services(), backup_dir(), now)


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
    """``services.alerts.report_stale_devices`` for the current app."""
    return alerts.report_stale_devices(_services(), now)


def remind_old_conflicts(now: datetime | None = None) -> dict[str, Any]:
    """``services.alerts.remind_old_conflicts`` for the current app."""
    return alerts.remind_old_conflicts(_services(), now)


def report_overdue_monitoring(now: datetime | None = None) -> dict[str, Any]:
    """``services.alerts.report_overdue_monitoring`` for the current app."""
    return alerts.report_overdue_monitoring(_services(), now)


def escalate_overdue_tasks(now: datetime | None = None) -> dict[str, Any]:
    """``services.tasks.escalate_overdue`` for the current app (verification tasks past their
    working-day deadline go to the township)."""
    return tasks.escalate_overdue(_services(), SCHEDULER_ACTOR, now)


def _services() -> ServiceContext:
    context: ServiceContext = current_app.extensions[EXTENSION_KEY]
    return context


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
            "escalate_overdue_tasks",
            escalate_overdue_tasks,
            "cron",
            lambda c: {"hour": 8, "minute": 45},
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
