"""Verification tasks: the list of the caller's area (overdue and escalated ones marked), closing
a worked task. The rules live in ``server.services.tasks``."""

from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request, url_for

from server.api.wire import service_context
from server.errors import ApiError
from server.services import tasks as task_service
from server.services.access import COUNTY_ADMIN, TOWNSHIP_REVIEWER, Principal
from server.web.base import actor_of, blueprint, signed_in, zh_message

REVIEWERS = (COUNTY_ADMIN, TOWNSHIP_REVIEWER)
STATUS_NAMES = {"open": "待核查", "worked": "已核查", "closed": "已关闭"}


@blueprint.get("/tasks")
@signed_in(*REVIEWERS)
def tasks(principal: Principal) -> Any:
    """Tasks of the caller's area, earliest deadline first (``?status=&village=&overdue=1``)."""
    return _list_page(principal)


def _list_page(principal: Principal, error: str | None = None) -> str:
    status = request.args.get("status") or "open"
    if status not in (*STATUS_NAMES, "all"):
        status = "open"
    village = (request.args.get("village") or "").strip()
    overdue = request.args.get("overdue") == "1"
    try:
        result = task_service.list_tasks(
            service_context(),
            principal,
            village=village or None,
            status=None if status == "all" else status,
            overdue=overdue,
            limit=200,
        )
    except ApiError as exc:
        result, error = {"items": [], "total": 0}, zh_message(exc)
    return render_template(
        "tasks.html",
        result=result,
        status=status,
        village=village,
        overdue=overdue,
        error=error,
        status_names=STATUS_NAMES,
    )


@blueprint.post("/tasks/<task_id>/close")
@signed_in(*REVIEWERS)
def close_task(principal: Principal, task_id: str) -> Any:
    """Close a worked task (its outcome accepted), then back to the list (with the reason on
    the page when it cannot be closed)."""
    try:
        task_service.close_task(
            actor_of(principal), task_id, note=(request.form.get("note") or "")[:500]
        )
    except ApiError as exc:
        return _list_page(principal, zh_message(exc)), exc.status
    return redirect(url_for("web.tasks", status="closed"))
