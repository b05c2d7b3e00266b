"""``/api/v1/monitoring-lines``: the monitoring income line by region and year."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from marshmallow import Schema, fields, validate

from server.api import API_PREFIX
from server.api.guard import actor_for, authenticated
from server.api.wire import accepts, returns
from server.services import monitoring
from server.services.access import COUNTY_ADMIN, Principal

blueprint = Blueprint("monitoring", __name__, url_prefix=f"{API_PREFIX}/monitoring-lines")

REGION = "<string(minlength=2,maxlength=12):region_code>"


class LineSchema(Schema):
    region_code = fields.String(dump_only=True)
    year = fields.Integer(dump_only=True)
    income_line = fields.Float(dump_only=True)
    settings = fields.Dict(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)
    updated_by = fields.String(dump_only=True)


class SetLineSchema(Schema):
    income_line = fields.Float(required=True, validate=validate.Range(min=0, min_inclusive=False))
    income_drop_percent = fields.Float(load_default=None, allow_none=True)
    expense_rise_percent = fields.Float(load_default=None, allow_none=True)
    medical_out_of_pocket_yuan = fields.Float(load_default=None, allow_none=True)
    water_region_type = fields.String(
        load_default=None, allow_none=True, validate=validate.OneOf(["water_rich", "water_short"])
    )


@blueprint.get("")
@authenticated()
@returns(LineSchema(many=True))
def list_lines(principal: Principal) -> Any:
    """Every configured monitoring line (region prefix, year, yuan per person per year)."""
    return LineSchema(many=True).dump(monitoring.list_lines())


@blueprint.put(f"/{REGION}/<int:year>")
@authenticated(COUNTY_ADMIN)
@accepts(SetLineSchema())
@returns(LineSchema())
def set_line(principal: Principal, body: dict[str, Any], region_code: str, year: int) -> Any:
    """Set the line of a region (2-12 digit prefix inside your area) for a year."""
    income_line = body.pop("income_line")
    row = monitoring.set_line(region_code, year, income_line, body, actor=actor_for(principal))
    return LineSchema().dump(row)


@blueprint.delete(f"/{REGION}/<int:year>")
@authenticated(COUNTY_ADMIN)
def delete_line(principal: Principal, region_code: str, year: int) -> Any:
    """Remove the line of a region for a year."""
    monitoring.delete_line(region_code, year, actor=actor_for(principal))
    return {"deleted": True}
