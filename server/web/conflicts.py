"""Conflicts: the review queue with ages, one conflict side by side, resolving it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flask import redirect, render_template, request, url_for

from server.errors import ApiError
from server.services import conflicts as conflict_service
from server.services.access import COUNTY_ADMIN, TOWNSHIP_REVIEWER, Principal
from server.web.base import actor_of, blueprint, field_messages, signed_in, zh_message

REVIEWERS = (COUNTY_ADMIN, TOWNSHIP_REVIEWER)
STATUS_NAMES = {"open": "待处理", "resolved": "已处理", "superseded": "已被新修改取代"}
KIND_NAMES = {
    "field": "字段取值不一致",
    "delete_edit": "删除与修改冲突",
    "row_delete_edit": "删除行与修改冲突",
    "duplicate_household": "同一农户重复建档",
}


def typed_value(text: str) -> Any:
    """A value typed by the reviewer: JSON when it parses (numbers, true/false, lists,
    null), otherwise the text itself. The form's own validation then checks it."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        return text


@blueprint.get("/conflicts")
@signed_in(*REVIEWERS)
def conflicts(principal: Principal) -> Any:
    """The queue of the caller's area, oldest first, with each conflict's age."""
    status = request.args.get("status") or "open"
    village = (request.args.get("village") or "").strip() or None
    result = conflict_service.list_conflicts(
        principal,
        status=None if status == "all" else status,
        village=village,
        limit=200,
    )
    return render_template(
        "conflicts.html",
        result=result,
        status=status,
        village=village or "",
        now=datetime.now(UTC),
        status_names=STATUS_NAMES,
        kind_names=KIND_NAMES,
    )


def _conflict_page(principal: Principal, conflict_id: str, **extra: Any) -> str:
    detail = conflict_service.show(principal, conflict_id)
    defaults = {"error": None, "fields": {}, "typed": {}}
    return render_template(
        "conflict.html",
        c=detail,
        now=datetime.now(UTC),
        status_names=STATUS_NAMES,
        kind_names=KIND_NAMES,
        **{**defaults, **extra},
    )


@blueprint.get("/conflicts/<conflict_id>")
@signed_in(*REVIEWERS)
def conflict(principal: Principal, conflict_id: str) -> Any:
    """Base / mine / theirs with who and when; the resolution form (404 outside the area)."""
    return _conflict_page(principal, conflict_id)


@blueprint.post("/conflicts/<conflict_id>/resolve")
@signed_in(*REVIEWERS)
def resolve_conflict(principal: Principal, conflict_id: str) -> Any:
    """Resolve by a competing value, a typed value, or an action; the outcome reaches the
    tablets in their next sync. On refusal the page shows why and keeps what was typed."""
    form = request.form
    typed = {k: form.get(k, "") for k in ("choice", "value", "comment")}
    choice: dict[str, Any] = {"comment": typed["comment"]}
    picked = typed["choice"]
    if picked.startswith("candidate:"):
        choice["candidate"] = picked.removeprefix("candidate:")
    elif picked == "value":
        choice["value"] = typed_value(typed["value"])
    elif picked.startswith("keep:"):
        choice["keep"] = picked.removeprefix("keep:")
    elif picked in ("delete", "keep", "keep_both"):
        choice["action"] = picked
    try:
        conflict_service.resolve(actor_of(principal), conflict_id, choice)
    except ApiError as exc:
        messages = field_messages(exc)
        reasons = exc.details.get("reasons") if isinstance(exc.details, dict) else None
        page = _conflict_page(
            principal,
            conflict_id,
            error=zh_message(exc),
            fields=messages,
            reasons=reasons or [],
            typed=typed,
        )
        return page, exc.status
    return redirect(url_for("web.conflict", conflict_id=conflict_id, done=1))
