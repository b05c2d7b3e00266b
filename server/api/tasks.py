"""``/api/v1/tasks``: verification tasks of the caller's area — list, one task, close, and the
outcomes exported back per department (issue 17; ``server.services.tasks`` holds the rules)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response
from marshmallow import Schema, fields, validate

from server.api import API_PREFIX
from server.api.guard import actor_for, authenticated
from server.api.wire import MAX_INT, accepts, load_query, returns, service_context
from server.services import tasks
from server.services.access import COUNTY_ADMIN, TOWNSHIP_REVIEWER, Principal
from server.services.task_reasons import DEPARTMENTS

blueprint = Blueprint("tasks", __name__, url_prefix=f"{API_PREFIX}/tasks")

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_REVIEWERS = (COUNTY_ADMIN, TOWNSHIP_REVIEWER)


class ReasonSchema(Schema):
    code = fields.String(dump_only=True)
    source = fields.String(dump_only=True)
    origin = fields.String(dump_only=True)
    message = fields.Dict(dump_only=True)
    details = fields.Dict(dump_only=True)
    found_at = fields.String(dump_only=True)


class TaskSchema(Schema):
    id = fields.String(dump_only=True)
    village_code = fields.String(dump_only=True)
    # None for a village-level task (a listed person no household of the roster has).
    household_no = fields.String(dump_only=True, allow_none=True)
    level = fields.String(dump_only=True, validate=validate.OneOf(["household", "village"]))
    status = fields.String(dump_only=True)
    reasons = fields.List(fields.Nested(ReasonSchema), dump_only=True)
    origins = fields.List(fields.String(), dump_only=True)
    outcome = fields.Dict(dump_only=True, allow_none=True)
    outcome_label = fields.Dict(dump_only=True)
    deadline = fields.Date(dump_only=True)
    overdue = fields.Boolean(dump_only=True)
    escalated = fields.Boolean(dump_only=True)
    escalated_at = fields.DateTime(dump_only=True, allow_none=True)
    record_id = fields.String(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)
    worked_at = fields.DateTime(dump_only=True, allow_none=True)
    closed_at = fields.DateTime(dump_only=True, allow_none=True)
    closed_by = fields.String(dump_only=True, allow_none=True)


class TaskListSchema(Schema):
    items = fields.List(fields.Nested(TaskSchema), dump_only=True)
    total = fields.Integer(dump_only=True)


class TaskQuerySchema(Schema):
    status = fields.String(load_default=None, validate=validate.OneOf([*tasks.STATUSES, "all"]))
    village = fields.String(load_default=None, validate=validate.Length(min=1, max=12))
    overdue = fields.Boolean(load_default=False)
    escalated = fields.Boolean(load_default=None)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_INT))


class CloseSchema(Schema):
    note = fields.String(load_default="", validate=validate.Length(max=500))


class OutcomeExportQuerySchema(Schema):
    department = fields.String(required=True, validate=validate.OneOf(list(DEPARTMENTS)))
    format = fields.String(load_default="csv", validate=validate.OneOf(["csv", "xlsx"]))


@blueprint.get("")
@authenticated(*_REVIEWERS)
@returns(TaskListSchema())
def list_tasks(principal: Principal) -> Any:
    """Verification tasks of the caller's area, earliest deadline first (``?village=<code
    prefix>&status=open|worked|closed|all&overdue=true&escalated=true&limit=&offset=``).
    ``overdue`` keeps open tasks past their working-day deadline; ``escalated`` those the
    scheduler escalated to the township."""
    query = load_query(TaskQuerySchema())
    status = query["status"]
    result = tasks.list_tasks(
        service_context(),
        principal,
        village=query["village"],
        status=None if status in (None, "all") else status,
        overdue=query["overdue"],
        escalated=query["escalated"],
        limit=query["limit"],
        offset=query["offset"],
    )
    return TaskListSchema().dump(result)


@blueprint.get("/outcomes")
@authenticated(COUNTY_ADMIN)
def export_outcomes(principal: Principal) -> Any:
    """The outcomes of the tasks with reasons from one department, for that department
    (``?department=medical_insurance&format=csv|xlsx``): one row per reason, masked details,
    the task's status and outcome. County admins only; audited."""
    query = load_query(OutcomeExportQuerySchema())
    body = tasks.export_outcomes(
        actor_for(principal),
        query["department"],
        area_prefix=principal.area_prefix,
        fmt=query["format"],
    )
    kind = XLSX_TYPE if query["format"] == "xlsx" else "text/csv; charset=utf-8"
    response = Response(body, content_type=kind)
    filename = f"task-outcomes-{query['department']}.{query['format']}"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/<task_id>")
@authenticated(*_REVIEWERS)
@returns(TaskSchema())
def show_task(principal: Principal, task_id: str) -> Any:
    """One task with every reason and its outcome (404 ``task_not_found`` outside the area)."""
    return TaskSchema().dump(tasks.show_task(service_context(), principal, task_id))


@blueprint.post("/<task_id>/close")
@authenticated(*_REVIEWERS)
@accepts(CloseSchema(), optional=True)
@returns(TaskSchema())
def close_task(principal: Principal, task_id: str, body: dict[str, Any]) -> Any:
    """Close a worked task (its outcome accepted); 409 ``task_not_worked`` otherwise."""
    tasks.close_task(actor_for(principal), task_id, note=body.get("note", ""))
    return TaskSchema().dump(tasks.show_task(service_context(), principal, task_id))
