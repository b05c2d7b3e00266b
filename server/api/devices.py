"""``/api/v1/devices``: enrolled tablets of the caller's area; revoke one."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from marshmallow import Schema, fields, validate

from server.api import API_PREFIX
from server.api.guard import actor_for, authenticated
from server.api.wire import load_query, returns
from server.services import devices
from server.services.access import COUNTY_ADMIN, Principal

blueprint = Blueprint("devices", __name__, url_prefix=f"{API_PREFIX}/devices")


class DeviceSchema(Schema):
    id = fields.String(dump_only=True)
    label = fields.String(dump_only=True)
    scope = fields.String(dump_only=True)
    status = fields.String(dump_only=True)
    x25519_public = fields.String(dump_only=True)
    ed25519_public = fields.String(dump_only=True)
    enrolled_at = fields.DateTime(dump_only=True)
    revoked_at = fields.DateTime(dump_only=True, allow_none=True)
    last_sync_at = fields.DateTime(dump_only=True, allow_none=True)
    app = fields.String(
        dump_only=True,
        allow_none=True,
        metadata={"description": "app and version the device named on its last sync"},
    )


class DeviceQuerySchema(Schema):
    status = fields.String(load_default=None, validate=validate.OneOf(["active", "revoked"]))


@blueprint.get("")
@authenticated()
@returns(DeviceSchema(many=True))
def list_devices(principal: Principal) -> Any:
    """Devices of the caller's area with their last sync (``?status=active|revoked``)."""
    query = load_query(DeviceQuerySchema())
    return DeviceSchema(many=True).dump(devices.list_devices(principal, status=query["status"]))


@blueprint.get("/<device_id>")
@authenticated()
@returns(DeviceSchema())
def get_device(principal: Principal, device_id: str) -> Any:
    """One device of the caller's area (404 for other areas, as for unknown ids)."""
    return DeviceSchema().dump(devices.get_device(principal, device_id))


@blueprint.post("/<device_id>/revoke")
@authenticated(COUNTY_ADMIN)
@returns(DeviceSchema())
def revoke(principal: Principal, device_id: str) -> Any:
    """Revoke a device: its keys are refused from the next request on."""
    return DeviceSchema().dump(devices.revoke(actor_for(principal), device_id))
