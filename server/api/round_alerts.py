"""``/api/v1/round-alerts``: round-over-round runs (收入骤减、支出骤增, problems new / persisting /
resolved), each stored with the thresholds it used."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from marshmallow import Schema, fields, validate

from server.api import API_PREFIX
from server.api.guard import actor_for, authenticated
from server.api.wire import accepts, load_query, service_context
from server.services import round_alerts
from server.services.access import COUNTY_ADMIN, Principal

blueprint = Blueprint("round_alerts", __name__, url_prefix=f"{API_PREFIX}/round-alerts")


class RunBodySchema(Schema):
    round = fields.String(required=True, validate=validate.Length(min=1, max=40))
    area = fields.String(
        load_default=None, allow_none=True, validate=validate.Regexp(r"^[0-9]{0,12}$")
    )


class RunsQuerySchema(Schema):
    round = fields.String(load_default=None, validate=validate.Length(min=1, max=40))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


@blueprint.post("/runs")
@authenticated(COUNTY_ADMIN)
@accepts(RunBodySchema())
def run(principal: Principal, body: dict[str, Any]) -> Any:
    """Run the round-over-round comparison of a round over your area (or part of it).

    Stores the run with the configuration it used and hands its signals to the task service.
    Answers 200 with ``created`` true for a new run; the same round, configuration and records
    again return the stored run (``created`` false);
    a changed threshold or late records make a new run, never rewriting an earlier one.
    """
    return round_alerts.run_round_alerts(
        body["round"], actor=actor_for(principal), area=body.get("area"), ctx=service_context()
    )


@blueprint.get("/runs")
@authenticated()
def runs(principal: Principal) -> Any:
    """Stored runs over your area, newest first (``?round=&limit=``)."""
    query = load_query(RunsQuerySchema())
    return {"runs": round_alerts.list_runs(actor_for(principal), **query)}


@blueprint.get("/runs/<int:run_id>")
@authenticated()
def run_detail(principal: Principal, run_id: int) -> Any:
    """One stored run with its per-household findings inside your area."""
    return round_alerts.run_detail(actor_for(principal), run_id)
