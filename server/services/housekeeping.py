"""Housekeeping the scheduler runs: expired enrollment codes and abandoned uploads go."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from server.services import uploads
from server.services.access import SCHEDULER_ACTOR
from server.services.context import ServiceContext
from server.storage import enrollment as enrollment_store
from server.storage.database import writing


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
