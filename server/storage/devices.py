"""Enrolled devices: keys, scope, status and last sync."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from server.storage.database import db
from server.storage.models import Device
from server.storage.scoping import under_prefix


def add_device(
    *,
    device_id: str,
    x25519_public: str,
    ed25519_public: str,
    scope: str,
    enrolled_at: datetime,
    enrollment_code_id: int | None,
    label: str = "",
) -> Device:
    """Insert an active device (inside the caller's write transaction)."""
    device = Device(
        id=device_id,
        x25519_public=x25519_public,
        ed25519_public=ed25519_public,
        scope=scope,
        label=label,
        status="active",
        enrolled_at=enrolled_at,
        enrollment_code_id=enrollment_code_id,
    )
    db.session.add(device)
    db.session.flush()
    return device


def device_in_area(device_id: str, area_prefix: str) -> Device | None:
    """The device if it exists and its scope lies under ``area_prefix``; otherwise None.

    Out-of-area devices are indistinguishable from missing ones, so guessing ids reveals nothing.
    """
    return db.session.scalar(
        sa.select(Device).where(Device.id == device_id, under_prefix(Device.scope, area_prefix))
    )


def device_for_sync(device_id: str) -> Device | None:
    """The device by id whatever its area (the sync endpoint checks ``status`` itself)."""
    return db.session.get(Device, device_id)


def list_devices(area_prefix: str, *, status: str | None = None) -> list[Device]:
    """Devices whose scope lies under ``area_prefix``, most recently enrolled first."""
    query = sa.select(Device).where(under_prefix(Device.scope, area_prefix))
    if status:
        query = query.where(Device.status == status)
    return list(db.session.scalars(query.order_by(Device.enrolled_at.desc(), Device.id)))


def revoke(device_id: str, area_prefix: str, now: datetime) -> bool:
    """Set an active in-area device to ``revoked``; False if absent, out of area or revoked."""
    return bool(
        db.session.execute(
            sa.update(Device)
            .where(
                Device.id == device_id,
                Device.status == "active",
                under_prefix(Device.scope, area_prefix),
            )
            .values(status="revoked", revoked_at=now)
        ).rowcount
    )


def touch_last_sync(device_id: str, now: datetime) -> None:
    """Record that ``device_id`` completed a sync exchange at ``now``."""
    db.session.execute(sa.update(Device).where(Device.id == device_id).values(last_sync_at=now))
