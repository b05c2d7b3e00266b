"""``/api/v1/indicators``: the 两不愁三保障 + 饮水安全 dashboard of the caller's area."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from marshmallow import Schema, fields, validate

from server.api import API_PREFIX
from server.api.guard import authenticated
from server.api.wire import MAX_INT, load_query
from server.services import indicators
from server.services.access import Principal

blueprint = Blueprint("indicators", __name__, url_prefix=f"{API_PREFIX}/indicators")


class RollupQuerySchema(Schema):
    area = fields.String(load_default=None)
    level = fields.String(load_default="village", validate=validate.OneOf(indicators.LEVELS))
    round = fields.String(load_default=None, validate=validate.Length(min=1, max=40))
    limit = fields.Integer(load_default=200, validate=validate.Range(min=0, max=5000))


class HouseholdQuerySchema(Schema):
    area = fields.String(load_default=None)
    round = fields.String(load_default=None, validate=validate.Length(min=1, max=40))
    problem = fields.String(load_default=None, validate=validate.OneOf(indicators.PROBLEMS))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_INT))


@blueprint.get("")
@authenticated()
def rollup(principal: Principal) -> Any:
    """Indicators rolled up by village, township or county (``?level=&area=&round=&limit=``).

    Counts and rates of housing safe, water safe (with the failed indicators), no school-age
    dropout, everyone insured and income above the monitoring line; households below the line;
    monitoring objects with days since identification; households newly at risk (sharp income
    fall or expense rise); open problems by indicator and the oldest one's age; open conflicts
    awaiting review.
    """
    query = load_query(RollupQuerySchema())
    return indicators.rollup(principal, **query)


@blueprint.get("/households")
@authenticated()
def households(principal: Principal) -> Any:
    """Per-household indicators (``?area=&round=&problem=&limit=&offset=``), paged, with each
    open problem's date found and the change since the previous monitoring record."""
    query = load_query(HouseholdQuerySchema())
    return indicators.household_list(principal, **query)
