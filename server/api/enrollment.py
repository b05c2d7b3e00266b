"""Enrollment: admins issue codes (``/api/v1/enrollment-codes``); tablets enrol with one
(``POST /api/v1/devices/enroll``, no token — the code is the credential)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from marshmallow import Schema, fields, validate

from server.api import API_PREFIX
from server.api.guard import actor_for, authenticated, client_ip
from server.api.wire import accepts, returns, service_context
from server.services import enrollment
from server.services.access import COUNTY_ADMIN, Principal

blueprint = Blueprint("enrollment", __name__, url_prefix=API_PREFIX)


class IssueCodeSchema(Schema):
    scope = fields.String(required=True)
    days = fields.Integer(load_default=None, allow_none=True)
    label = fields.String(load_default="", validate=validate.Length(max=120))


class IssuedCodeSchema(Schema):
    id = fields.Integer(dump_only=True)
    code = fields.String(dump_only=True)
    scope = fields.String(dump_only=True)
    label = fields.String(dump_only=True)
    expires_at = fields.DateTime(dump_only=True)


class CodeListSchema(Schema):
    id = fields.Integer(dump_only=True)
    scope = fields.String(dump_only=True)
    label = fields.String(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    created_by = fields.String(dump_only=True)
    expires_at = fields.DateTime(dump_only=True)
    used_at = fields.DateTime(dump_only=True, allow_none=True)
    device_id = fields.String(dump_only=True, allow_none=True)


class EnrollSchema(Schema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=64))
    x25519_public = fields.String(required=True, validate=validate.Length(max=64))
    ed25519_public = fields.String(required=True, validate=validate.Length(max=64))
    label = fields.String(load_default="", validate=validate.Length(max=120))


class EnrollmentSchema(Schema):
    device_id = fields.String(dump_only=True)
    scope = fields.String(dump_only=True)
    server_keys = fields.Dict(dump_only=True)
    forms = fields.List(fields.Dict(), dump_only=True)
    server_time = fields.DateTime(dump_only=True)


@blueprint.post("/enrollment-codes")
@authenticated(COUNTY_ADMIN)
@accepts(IssueCodeSchema())
@returns(IssuedCodeSchema(), 201)
def issue_code(principal: Principal, body: dict[str, Any]) -> Any:
    """Issue a one-time enrollment code for a village (12 digits) or township (9) scope.

    The plain code is in this answer only; the server keeps its hash.
    """
    issued = enrollment.issue_code(
        service_context(),
        body["scope"],
        days=body["days"],
        actor=actor_for(principal),
        label=body["label"],
    )
    return IssuedCodeSchema().dump(issued), 201


@blueprint.get("/enrollment-codes")
@authenticated(COUNTY_ADMIN)
@returns(CodeListSchema(many=True))
def list_codes(principal: Principal) -> Any:
    """Unused codes of the admin's area (never the codes themselves)."""
    return CodeListSchema(many=True).dump(enrollment.list_codes(principal))


@blueprint.post("/devices/enroll")
@accepts(EnrollSchema())
@returns(EnrollmentSchema(), 201)
def enroll(body: dict[str, Any]) -> Any:
    """Enrol a tablet: code + its X25519/Ed25519 public keys (base64) → device id and scope.

    401 ``invalid_enrollment_code`` (wrong), 410 ``enrollment_code_expired``,
    409 ``enrollment_code_used`` (reused), 429 after too many failures from one address.
    """
    result = enrollment.enroll(
        service_context(),
        body["code"],
        x25519_public=body["x25519_public"],
        ed25519_public=body["ed25519_public"],
        ip=client_ip(),
        label=body["label"],
    )
    return EnrollmentSchema().dump(result), 201
