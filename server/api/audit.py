"""``/api/v1/audit``: the audit log of the caller's area, newest first."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from marshmallow import Schema, fields, validate

from server.api import API_PREFIX
from server.api.guard import authenticated
from server.api.wire import MAX_INT, load_query, returns
from server.services import audit
from server.services.access import Principal

blueprint = Blueprint("audit", __name__, url_prefix=f"{API_PREFIX}/audit")


class AuditEntrySchema(Schema):
    id = fields.Integer(dump_only=True)
    at = fields.DateTime(dump_only=True)
    actor = fields.String(dump_only=True)
    action = fields.String(dump_only=True)
    target_type = fields.String(dump_only=True)
    target_id = fields.String(dump_only=True)
    area_code = fields.String(dump_only=True)
    ip = fields.String(dump_only=True)
    details = fields.Dict(dump_only=True)


class AuditQuerySchema(Schema):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    before = fields.Integer(load_default=None, validate=validate.Range(min=1, max=MAX_INT))
    action = fields.String(load_default=None)


@blueprint.get("")
@authenticated()
@returns(AuditEntrySchema(many=True))
def list_entries(principal: Principal) -> Any:
    """Audit entries of the caller's area (``?limit=&before=<id>&action=``), newest first."""
    query = load_query(AuditQuerySchema())
    rows = audit.list_entries(
        principal,
        limit=query["limit"],
        before_id=query["before"],
        action=query["action"],
    )
    return AuditEntrySchema(many=True).dump(rows)
