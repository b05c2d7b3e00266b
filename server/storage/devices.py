"""Enrolled devices: keys, scope, status and last sync."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from server.storage import models
from server.storage.database import db
from server.storage.scoping import under_prefix
from server.storage.types import plain

#: The table; callers get :class:`Device` values, never its rows.
DeviceRow = models.Device


@dataclass(frozen=True)
class Device:
    """An enrolled tablet as stored: public keys, village-code scope, status, last sync."""

    id: str
    x25519_public: str
    ed25519_public: str
    scope: str
    label: str
    status: str  # active | revoked
    enrolled_at: datetime
    revoked_at: datetime | None
    last_sync_at: datetime | None
    enrollment_code_id: int | None


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
    device = DeviceRow(
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
    return plain(Device, device)


def device_in_area(device_id: str, area_prefix: str) -> Device | None:
    """The device if it exists and its scope lies under ``area_prefix``; otherwise None.

    Out-of-area devices are indistinguishable from missing ones, so guessing ids reveals nothing.
    """
    row = db.session.scalar(
        sa.select(DeviceRow).where(
            DeviceRow.id == device_id, under_prefix(DeviceRow.scope, area_prefix)
        )
    )
    return None if row is None else plain(Device, row)


def device_for_sync(device_id: str) -> Device | None:
    """The device by id whatever its area (the sync endpoint checks ``status`` itself)."""
    row = db.session.get(DeviceRow, device_id)
    return None if row is None else plain(Device, row)


def list_devices(area_prefix: str, *, status: str | None = None) -> list[Device]:
    """Devices whose scope lies under ``area_prefix``, most recently enrolled first."""
    query = sa.select(DeviceRow).where(under_prefix(DeviceRow.scope, area_prefix))
    if status:
        query = query.where(DeviceRow.status == status)
    rows = db.session.scalars(query.order_by(DeviceRow.enrolled_at.desc(), DeviceRow.id))
    return [plain(Device, row) for row in rows]


def revoke(device_id: str, area_prefix: str, now: datetime) -> bool:
    """Set an active in-area device to ``revoked``; False if absent, out of area or revoked."""
    return bool(
        db.session.execute(
            sa.update(DeviceRow)
            .where(
                DeviceRow.id == device_id,
                DeviceRow.status == "active",
                under_prefix(DeviceRow.scope, area_prefix),
            )
            .values(status="revoked", revoked_at=now)
        ).rowcount
    )


def touch_last_sync(device_id: str, now: datetime) -> None:
    """Record that ``device_id`` completed a sync exchange at ``now``."""
    db.session.execute(
        sa.update(DeviceRow).where(DeviceRow.id == device_id).values(last_sync_at=now)
    )
