"""Enrolled devices: keys, scope, status and last sync."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

import sqlalchemy as sa

from server.storage import models
from server.storage.database import db
from server.storage.models import BatchAck, DeviceOpMark, QuarantinedOp
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
    #: The manifest cursor of the device's last hello (None before its first sync).
    manifest_cursor: int | None = None
    #: The app and version the device named on its last sync (``Village-Sync-App``), if any.
    app: str | None = None


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
    # Its sync bookkeeping row from the start: the first exchange then claims its envelope with
    # one UPDATE, like every later one (``sync_state.claim_envelope``).
    db.session.add(
        DeviceOpMark(device_id=device_id, high_water=0, envelope_seq=0, updated_at=enrolled_at)
    )
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


_DEVICES: sa.Table = DeviceRow.__table__  # type: ignore[assignment]
# The statements every sync exchange runs, built once (``bench peak``: building them per call
# and loading the row through the ORM was a fixed cost of every exchange).
_FOR_SYNC = sa.select(*(_DEVICES.c[f.name] for f in fields(Device))).where(
    _DEVICES.c.id == sa.bindparam("device")
)
_STATUS = sa.select(_DEVICES.c.status).where(_DEVICES.c.id == sa.bindparam("device"))
_TOUCH = (
    sa.update(_DEVICES)
    .where(_DEVICES.c.id == sa.bindparam("device"))
    .values(
        last_sync_at=sa.bindparam("now", type_=_DEVICES.c.last_sync_at.type),
        # None keeps what is stored (a hello without a manifest cursor, no app header).
        manifest_cursor=sa.func.coalesce(
            sa.bindparam("cursor", type_=sa.BigInteger), _DEVICES.c.manifest_cursor
        ),
        app=sa.func.coalesce(sa.bindparam("app", type_=sa.String), _DEVICES.c.app),
    )
)


def device_for_sync(device_id: str) -> Device | None:
    """The device by id whatever its area (the sync endpoint checks ``status`` itself)."""
    row = db.session.execute(_FOR_SYNC, {"device": device_id}).first()
    return None if row is None else plain(Device, row)


def device_status(device_id: str) -> str | None:
    """The device's status (``active``, ``revoked``), or None for an unknown device: what every
    batch of an exchange checks again under the write lock, one column by a statement built
    once rather than the whole row through the ORM."""
    return db.session.execute(_STATUS, {"device": device_id}).scalar()


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


def touch_last_sync(
    device_id: str, now: datetime, manifest_cursor: int | None = None, app: str | None = None
) -> None:
    """Record that ``device_id`` completed a sync exchange at ``now`` (and, when given, the
    manifest cursor its hello reported and the app it named)."""
    db.session.execute(
        _TOUCH, {"device": device_id, "now": now, "cursor": manifest_cursor, "app": app}
    )


@dataclass(frozen=True)
class OpCounts:
    """What the server holds of a device's ops: every op up to ``acked`` is processed;
    ``received`` is the highest op seq a stored batch ended with; ``held`` ops wait in the
    quarantine (unknown form version, invalid)."""

    acked: int = 0
    received: int = 0
    held: int = 0


def op_counts(area_prefix: str) -> dict[str, OpCounts]:
    """Device id → :class:`OpCounts` for the devices under ``area_prefix`` (three grouped
    queries over indexed columns, whatever the number of ops)."""
    in_area = sa.select(DeviceRow.id).where(under_prefix(DeviceRow.scope, area_prefix))
    acked = dict(
        db.session.execute(
            sa.select(DeviceOpMark.device_id, DeviceOpMark.high_water).where(
                DeviceOpMark.device_id.in_(in_area)
            )
        ).all()
    )
    received = dict(
        db.session.execute(
            sa.select(BatchAck.device_id, sa.func.max(BatchAck.last_seq))
            .where(BatchAck.device_id.in_(in_area))
            .group_by(BatchAck.device_id)
        ).all()
    )
    held = dict(
        db.session.execute(
            sa.select(QuarantinedOp.device_id, sa.func.count())
            .where(QuarantinedOp.device_id.in_(in_area), QuarantinedOp.status == "held")
            .group_by(QuarantinedOp.device_id)
        ).all()
    )
    return {
        device_id: OpCounts(
            int(acked.get(device_id) or 0),
            int(max(received.get(device_id) or 0, acked.get(device_id) or 0)),
            int(held.get(device_id) or 0),
        )
        for device_id in {*acked, *received, *held}
        if device_id is not None
    }
