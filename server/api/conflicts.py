"""``/api/v1/conflicts``: the review queue of the caller's area — list, compare, resolve."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from marshmallow import Schema, fields, validate

from server.api import API_PREFIX
from server.api.guard import actor_for, authenticated
from server.api.wire import MAX_INT, accepts, load_query, returns
from server.services import conflicts
from server.services.access import COUNTY_ADMIN, TOWNSHIP_REVIEWER, Principal

blueprint = Blueprint("conflicts", __name__, url_prefix=f"{API_PREFIX}/conflicts")


class ConflictSummarySchema(Schema):
    id = fields.String(dump_only=True)
    record_id = fields.String(dump_only=True)
    kind = fields.String(dump_only=True)
    path = fields.String(dump_only=True)
    status = fields.String(dump_only=True)
    village_code = fields.String(dump_only=True)
    household_no = fields.String(dump_only=True)
    form_id = fields.String(dump_only=True)
    form_version = fields.Integer(dump_only=True)
    round = fields.String(dump_only=True)
    device_id = fields.String(dump_only=True, allow_none=True)
    created_at = fields.DateTime(dump_only=True)
    resolved_at = fields.DateTime(dump_only=True, allow_none=True)
    resolved_by = fields.String(dump_only=True, allow_none=True)


class ConflictListSchema(Schema):
    items = fields.List(fields.Nested(ConflictSummarySchema), dump_only=True)
    total = fields.Integer(dump_only=True)


class ConflictDetailSchema(ConflictSummarySchema):
    label = fields.Dict(dump_only=True, allow_none=True)
    reason = fields.String(dump_only=True, allow_none=True)
    base = fields.Raw(dump_only=True, allow_none=True)
    mine = fields.Raw(dump_only=True, allow_none=True)
    theirs = fields.Raw(dump_only=True, allow_none=True)
    candidates = fields.List(fields.Dict(), dump_only=True)
    resolution = fields.Dict(dump_only=True, allow_none=True)


class ConflictQuerySchema(Schema):
    status = fields.String(
        load_default="open", validate=validate.OneOf([*conflicts.STATUSES, "all"])
    )
    village = fields.String(load_default=None, validate=validate.Length(max=12))
    form_id = fields.String(load_default=None, validate=validate.Length(max=64))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_INT))


class ResolveSchema(Schema):
    candidate = fields.String(validate=validate.Length(min=1, max=128))
    value = fields.Raw(allow_none=True)
    action = fields.String(validate=validate.OneOf(["delete", "keep", "keep_both"]))
    keep = fields.String(validate=validate.Length(min=1, max=36))


class ResolvedSchema(Schema):
    id = fields.String(dump_only=True)
    status = fields.String(dump_only=True)
    record_id = fields.String(dump_only=True)
    choice = fields.String(dump_only=True)
    revision = fields.Integer(dump_only=True, allow_none=True)


_REVIEWERS = (COUNTY_ADMIN, TOWNSHIP_REVIEWER)


@blueprint.get("")
@authenticated(*_REVIEWERS)
@returns(ConflictListSchema())
def list_conflicts(principal: Principal) -> Any:
    """Conflicts of the caller's area, oldest first (``?status=open|resolved|superseded|all
    &village=<code prefix>&form_id=&limit=&offset=``)."""
    query = load_query(ConflictQuerySchema())
    result = conflicts.list_conflicts(
        principal,
        status=None if query["status"] == "all" else query["status"],
        village=query["village"],
        form_id=query["form_id"],
        limit=query["limit"],
        offset=query["offset"],
    )
    return ConflictListSchema().dump(result)


@blueprint.get("/<conflict_id>")
@authenticated(*_REVIEWERS)
@returns(ConflictDetailSchema())
def show_conflict(principal: Principal, conflict_id: str) -> Any:
    """One conflict with base/mine/theirs and every candidate (404 outside the caller's area)."""
    return ConflictDetailSchema().dump(conflicts.show(principal, conflict_id))


@blueprint.post("/<conflict_id>/resolve")
@authenticated(*_REVIEWERS)
@accepts(ResolveSchema())
@returns(ResolvedSchema())
def resolve(principal: Principal, conflict_id: str, body: dict[str, Any]) -> Any:
    """Resolve: ``{"candidate": stamp}`` or ``{"value": v}`` for a field, ``{"action":
    "delete"|"keep"}`` for a delete conflict, ``{"keep": record_id}`` or ``{"action":
    "keep_both"}`` for a duplicate household. The resolution is merged as a server op and
    reaches devices in their next download. 409 ``conflict_not_open``, 422 ``resolution_invalid``.
    """
    result = conflicts.resolve(actor_for(principal), conflict_id, body)
    return ResolvedSchema().dump(result)
