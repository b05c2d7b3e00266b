"""Devices as admins see them: listed and revoked within the admin's area."""

from __future__ import annotations

from server.errors import Conflict, NotFound
from server.services.access import Actor, Principal
from server.storage import conflicts as conflict_store
from server.storage import devices as store
from server.storage.database import writing
from server.storage.devices import Device
from server.storage.types import utcnow


def list_devices(principal: Principal, *, status: str | None = None) -> list[Device]:
    """Devices whose scope lies in the principal's area (the filter is in the SQL query)."""
    return store.list_devices(principal.area_prefix, status=status)


def open_conflicts_by_device(principal: Principal) -> dict[str, int]:
    """Device id → open conflicts its edits are part of, within the principal's area."""
    return conflict_store.open_counts_by_device(principal.area_prefix)


def get_device(principal: Principal, device_id: str) -> Device:
    """One device of the principal's area. Raises :class:`NotFound` (also for other areas)."""
    device = store.device_in_area(device_id, principal.area_prefix)
    if device is None:
        raise NotFound(en=f"no device {device_id}", zh="设备不存在", code="device_not_found")
    return device


def revoke(actor: Actor, device_id: str) -> Device:
    """Revoke a device of the actor's area: its next sync is refused; audited.

    Raises :class:`NotFound` (absent or other area) or :class:`Conflict`
    (``device_already_revoked``).
    """
    with writing():
        device = store.device_in_area(device_id, actor.area_prefix)
        if device is None:
            raise NotFound(en=f"no device {device_id}", zh="设备不存在", code="device_not_found")
        if not store.revoke(device_id, actor.area_prefix, utcnow()):
            raise Conflict(
                en="the device is already revoked",
                zh="该设备已被停用",
                code="device_already_revoked",
            )
        actor.audit(
            "device.revoke", target_type="device", target_id=device_id, area_code=device.scope
        )
    refreshed = store.device_in_area(device_id, actor.area_prefix)
    if refreshed is None:  # pragma: no cover - the row was just updated in this area
        raise NotFound(en=f"no device {device_id}", zh="设备不存在", code="device_not_found")
    return refreshed
