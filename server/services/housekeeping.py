"""Housekeeping the scheduler runs: expired enrollment codes and abandoned uploads go; the
SQLite database is copied (nightly, keeping the newest ``BACKUP_KEEP``, or on demand)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from server.services import uploads
from server.services.access import SCHEDULER_ACTOR, Actor
from server.services.context import ServiceContext
from server.storage import enrollment as enrollment_store
from server.storage.database import backup_sqlite, dialect_name, writing

BACKUP_PREFIX: Final = "county-"
BACKUP_SUFFIX: Final = ".db"


def purge_expired(ctx: ServiceContext, now: datetime | None = None) -> dict[str, Any]:
    """Delete unused enrollment codes past their expiry and uploads abandoned for
    ``UPLOAD_ABANDON_HOURS``; audited when anything went."""
    now = now or ctx.now()
    with writing():
        codes = enrollment_store.purge_expired(now)
    abandoned = uploads.purge_abandoned(
        ctx,
        timedelta(hours=ctx.settings["UPLOAD_ABANDON_HOURS"]),
        now=now,
    )
    if codes or abandoned:
        with writing():
            SCHEDULER_ACTOR.audit(
                "job.purge", details={"enrollment_codes": codes, "uploads": abandoned}
            )
    return {"enrollment_codes": codes, "uploads": abandoned}


def backup_to(target: Path, actor: Actor) -> Path:
    """Copy the SQLite database to ``target`` (0600), audited (``database.backup``).

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


def backup_database(
    ctx: ServiceContext, folder: Path, now: datetime | None = None
) -> dict[str, Any]:
    """Copy the SQLite database into ``folder`` with the online backup API and keep the newest
    ``BACKUP_KEEP``.

    Files are named ``county-YYYYmmddTHHMMSSZ.db`` (UTC), so their names sort by age. On
    PostgreSQL nothing is copied (``pg_dump`` is the tool there) and the result says so.
    """
    if dialect_name() != "sqlite":
        return {"skipped": "postgresql: use pg_dump"}
    now = now or ctx.now()
    target = folder / f"{BACKUP_PREFIX}{now:%Y%m%dT%H%M%SZ}{BACKUP_SUFFIX}"
    backup_sqlite(target)  # created 0600: the copy holds ID numbers like the original
    keep = max(1, int(ctx.settings["BACKUP_KEEP"]))
    backups = sorted(folder.glob(f"{BACKUP_PREFIX}*{BACKUP_SUFFIX}"))
    removed = [path.name for path in backups[:-keep]]
    for path in backups[:-keep]:
        path.unlink(missing_ok=True)
    return {"backup": target.name, "bytes": target.stat().st_size, "removed": removed}
