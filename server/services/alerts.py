"""Alerts the scheduler files in the audit log (``alert.*`` rows, each under the area it
concerns, so the admin pages and the audit API show it to the admins of that area): devices
silent too long, conflicts open too long, monitoring objects not visited in time."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

from server.services.access import SCHEDULER_ACTOR
from server.services.context import ServiceContext
from server.storage import indicators as indicator_store
from server.storage import jobs as store
from server.storage.database import writing


def report_stale_devices(ctx: ServiceContext, now: datetime | None = None) -> dict[str, Any]:
    """One ``alert.stale_device`` audit row per active device silent for ``STALE_DEVICE_DAYS``.

    A device that never synced counts from its enrollment. The row carries the device's scope
    as its area, so the township reviewer concerned sees it.
    """
    now = now or ctx.now()
    days = int(ctx.settings["STALE_DEVICE_DAYS"])
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


def remind_old_conflicts(ctx: ServiceContext, now: datetime | None = None) -> dict[str, Any]:
    """One ``alert.conflict_age`` audit row per village with conflicts open longer than
    ``CONFLICT_REMINDER_DAYS`` (count and age of the oldest)."""
    now = now or ctx.now()
    days = int(ctx.settings["CONFLICT_REMINDER_DAYS"])
    villages = []
    with writing():
        for village, count, oldest in store.old_open_conflicts(
            now - timedelta(days=days), area_prefix=""
        ):
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


def report_overdue_monitoring(ctx: ServiceContext, now: datetime | None = None) -> dict[str, Any]:
    """One ``alert.monitoring_overdue`` audit row per village whose monitoring objects (risk not
    removed) have had no monitoring record for ``MONITORING_VISIT_DAYS``.

    The newest monitoring record of each household is read (streamed, any round); its last
    update is the last visit. The row names up to 50 households and counts them all.
    """
    now = now or ctx.now()
    cutoff = now - timedelta(days=int(ctx.settings["MONITORING_VISIT_DAYS"]))
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
