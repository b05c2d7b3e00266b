"""Devices as admins see them: listed and revoked within the admin's area."""

from __future__ import annotations

from dataclasses import dataclass

from server.errors import Conflict, NotFound
from server.services.access import Actor, Principal
from server.storage import conflicts as conflict_store
from server.storage import devices as store
from server.storage import forms as form_store
from server.storage.database import writing
from server.storage.devices import Device, OpCounts
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


@dataclass(frozen=True)
class FormBehind:
    """A form whose newest published version a device has not received yet."""

    form_id: str
    title: str
    version: int


def op_counts(principal: Principal) -> dict[str, OpCounts]:
    """Device id → ops acknowledged, received and held in the quarantine (protocol v1's hello
    carries neither the device's outbox size nor its app version: this is what the server
    knows), for the devices of the principal's area."""
    return store.op_counts(principal.area_prefix)


def _newest_published() -> list[tuple[str, str, int, int]]:
    """(form id, Chinese title, version, manifest revision) of each form's newest published
    version."""
    newest = []
    for form, versions in form_store.list_forms():
        published = [v for v in versions if v.status == "published"]
        if published:
            top = max(published, key=lambda v: v.version)
            title = form.title.get("zh") if isinstance(form.title, dict) else None
            newest.append((form.id, str(title or form.id), top.version, top.manifest_revision))
    return newest


def forms_behind(principal: Principal) -> dict[str, list[FormBehind]]:
    """Active device id → the forms whose newest published version it has not received, as
    told by the manifest cursor of its last hello (a device that has not synced since it was
    published, or has not applied that page, still runs an older version). Devices that never
    reported a cursor are left out: nothing is known of them yet."""
    newest = _newest_published()
    behind: dict[str, list[FormBehind]] = {}
    for device in store.list_devices(principal.area_prefix, status="active"):
        if device.manifest_cursor is None:
            continue
        late = [
            FormBehind(form_id, title, version)
            for form_id, title, version, revision in newest
            if device.manifest_cursor < revision
        ]
        if late:
            behind[device.id] = late
    return behind


def devices_behind_by_form(principal: Principal) -> dict[str, list[str]]:
    """Form id → ids of the principal's active devices that lack its newest published version."""
    by_form: dict[str, list[str]] = {}
    for device_id, late in forms_behind(principal).items():
        for form in late:
            by_form.setdefault(form.form_id, []).append(device_id)
    return by_form
