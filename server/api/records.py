"""``/api/v1/records`` (query, one record with history) and ``/api/v1/quarantine`` (refused ops,
mapping an unknown form version to a published one), scoped to the caller's area."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from marshmallow import Schema, fields, validate

from server.api import API_PREFIX
from server.api.guard import actor_for, authenticated
from server.api.wire import MAX_INT, accepts, load_query, returns
from server.services import records
from server.services.access import COUNTY_ADMIN, TOWNSHIP_REVIEWER, Principal
from server.services.indicators import PROBLEMS

blueprint = Blueprint("records", __name__, url_prefix=API_PREFIX)


class RecordSummarySchema(Schema):
    record_id = fields.String(dump_only=True)
    form_id = fields.String(dump_only=True)
    form_version = fields.Integer(dump_only=True)
    village_code = fields.String(dump_only=True)
    household_no = fields.String(dump_only=True)
    round = fields.String(dump_only=True)
    revision = fields.Integer(dump_only=True)
    deleted = fields.Boolean(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)
    data = fields.Dict(dump_only=True)


class RecordListSchema(Schema):
    items = fields.List(fields.Nested(RecordSummarySchema), dump_only=True)
    total = fields.Integer(dump_only=True)


class HistorySchema(Schema):
    revision = fields.Integer(dump_only=True)
    kind = fields.String(dump_only=True)
    device_id = fields.String(dump_only=True, allow_none=True)
    op_seq = fields.Integer(dump_only=True, allow_none=True)
    user_id = fields.Integer(dump_only=True, allow_none=True)
    hlc = fields.String(dump_only=True, allow_none=True)
    changes = fields.Dict(dump_only=True)
    outcome = fields.Dict(dump_only=True)
    at = fields.DateTime(dump_only=True)


class RecordDetailSchema(RecordSummarySchema):
    fields_ = fields.Dict(data_key="fields", attribute="fields", dump_only=True)
    warnings = fields.List(fields.Dict(), dump_only=True)
    open_conflicts = fields.List(fields.String(), dump_only=True)
    history = fields.List(fields.Nested(HistorySchema), dump_only=True)


class RecordQuerySchema(Schema):
    village = fields.String(load_default=None, validate=validate.Length(max=12))
    form_id = fields.String(load_default=None, validate=validate.Length(max=64))
    round = fields.String(load_default=None, validate=validate.Length(max=40))
    household_no = fields.String(load_default=None, validate=validate.Length(max=64))
    include_deleted = fields.Boolean(load_default=False)
    indicator = fields.String(load_default=None, validate=validate.OneOf(PROBLEMS))
    failing = fields.Boolean(load_default=None)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_INT))


class QuarantineEntrySchema(Schema):
    id = fields.Integer(dump_only=True)
    kind = fields.String(dump_only=True)
    status = fields.String(dump_only=True)
    device_id = fields.String(dump_only=True, allow_none=True)
    op_seq = fields.Integer(dump_only=True, allow_none=True)
    village_code = fields.String(dump_only=True)
    received_at = fields.DateTime(dump_only=True)
    reasons = fields.List(fields.Dict(), dump_only=True)
    resolution = fields.Dict(dump_only=True, allow_none=True)
    op = fields.Dict(dump_only=True)


class QuarantineListSchema(Schema):
    items = fields.List(fields.Nested(QuarantineEntrySchema), dump_only=True)
    total = fields.Integer(dump_only=True)


class QuarantineQuerySchema(Schema):
    kind = fields.String(load_default=None, validate=validate.OneOf(records.QUARANTINE_KINDS))
    status = fields.String(
        load_default=records.QUARANTINE_HELD,
        validate=validate.OneOf([records.QUARANTINE_HELD, records.QUARANTINE_RELEASED, "all"]),
    )
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_INT))


class MapSchema(Schema):
    form_version = fields.Integer(required=True, validate=validate.Range(min=1, max=MAX_INT))


class MappedSchema(Schema):
    id = fields.Integer(dump_only=True)
    status = fields.String(dump_only=True)
    ack = fields.Dict(dump_only=True)


@blueprint.get("/records")
@authenticated(COUNTY_ADMIN, TOWNSHIP_REVIEWER)
@returns(RecordListSchema())
def list_records(principal: Principal) -> Any:
    """Records of the caller's area (``?village=<code prefix>&form_id=&round=&household_no=
    &include_deleted=&indicator=housing|water|education|insurance|income&failing=&limit=
    &offset=``); sensitive fields masked. ``indicator`` keeps the records of households whose
    indicator the records decide; ``failing=true|false`` those where it fails or passes."""
    query = load_query(RecordQuerySchema())
    return RecordListSchema().dump(records.list_records(principal, **query))


@blueprint.get("/records/<record_id>")
@authenticated(COUNTY_ADMIN, TOWNSHIP_REVIEWER)
@returns(RecordDetailSchema())
def show_record(principal: Principal, record_id: str) -> Any:
    """One record: merged data, per-field merge status, warnings, open conflicts, history.
    Sensitive fields are shown to county admins only. 404 outside the caller's area."""
    return RecordDetailSchema().dump(records.show(principal, record_id))


@blueprint.get("/quarantine")
@authenticated(COUNTY_ADMIN)
@returns(QuarantineListSchema())
def list_quarantine(principal: Principal) -> Any:
    """Ops the sync refused, kept with their reasons (``?kind=invalid|out_of_scope|
    unknown_form_version&status=held|released|all&limit=&offset=``), newest first."""
    query = load_query(QuarantineQuerySchema())
    status = None if query["status"] == "all" else query["status"]
    result = records.list_quarantine(
        principal, kind=query["kind"], status=status, limit=query["limit"], offset=query["offset"]
    )
    return QuarantineListSchema().dump(result)


@blueprint.post("/quarantine/<int:item_id>/map")
@authenticated(COUNTY_ADMIN)
@accepts(MapSchema())
@returns(MappedSchema())
def map_quarantined(principal: Principal, item_id: int, body: dict[str, Any]) -> Any:
    """Re-run a quarantined op on a published version of its form (``{"form_version": n}``);
    released when it applies, 422 ``quarantine_rerun_rejected`` with the new reasons if not."""
    result = records.map_quarantined(actor_for(principal), item_id, body["form_version"])
    return MappedSchema().dump(result)
