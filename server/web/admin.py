"""Exports, the quarantine, users and roles, the audit log."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any

from flask import (
    Response,
    current_app,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)

from server.errors import ApiError, ValidationFailed
from server.services import audit as audit_service
from server.services import auth, export_jobs, records
from server.services import exports as export_service
from server.services import forms as form_service
from server.services.access import COUNTY_ADMIN, ROLES, Principal
from server.services.indicators import CHINA_TIME
from server.web.base import actor_of, blueprint, field_messages, signed_in, zh_message
from server.web.export_jobs import start_background

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_FILE_CHUNK = 64 * 1024


# --- exports -----------------------------------------------------------------------------------


@blueprint.get("/exports")
@signed_in()
def exports(principal: Principal) -> Any:
    """Choose a form, an area and a format; the download is masked unless asked otherwise."""
    return render_template(
        "exports.html",
        forms=form_service.list_forms(),
        jobs=export_jobs.list_jobs(principal),
        error=None,
    )


def _file_then_delete(path: str) -> Iterator[bytes]:
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_FILE_CHUNK):
                yield chunk
    finally:
        os.unlink(path)


@blueprint.get("/exports/<string:form_id>.<any(csv, xlsx):fmt>")
@signed_in()
def download_export(principal: Principal, form_id: str, fmt: str) -> Any:
    """The export file (audited before the first byte; only county admins may unmask).

    An export larger than ``EXPORT_BACKGROUND_RECORDS`` runs in the background instead: the
    browser is sent to the job's progress page."""
    village = (request.args.get("village") or "").strip() or None
    round_ = (request.args.get("round") or "").strip() or None
    threshold = int(current_app.config["EXPORT_BACKGROUND_RECORDS"])
    if export_jobs.is_large(principal, form_id, village=village, round=round_, threshold=threshold):
        return start_background(principal, form_id, fmt)
    export = export_service.start_export(
        principal,
        actor_of(principal),
        form_id,
        fmt=fmt,
        village=(request.args.get("village") or "").strip() or None,
        round=(request.args.get("round") or "").strip() or None,
        unmasked=request.args.get("unmasked") == "1",
    )
    if fmt == "csv":
        response = Response(
            stream_with_context(export.csv_chunks(export_service.MAIN_SHEET)),
            content_type="text/csv; charset=utf-8",
        )
    else:
        path = export.xlsx_file()
        response = Response(_file_then_delete(path), content_type=XLSX_TYPE)
        response.headers["Content-Length"] = str(os.path.getsize(path))
    response.headers["Content-Disposition"] = f'attachment; filename="{form_id}.{fmt}"'
    return response


# --- quarantine --------------------------------------------------------------------------------


@blueprint.get("/quarantine")
@signed_in(COUNTY_ADMIN)
def quarantine(principal: Principal) -> Any:
    """Ops the sync refused (unknown form versions …) with their reasons."""
    result = records.list_quarantine(principal, limit=200)
    return render_template("quarantine.html", result=result, error=None, failed_id=None)


@blueprint.post("/quarantine/<int:item_id>/map")
@signed_in(COUNTY_ADMIN)
def map_quarantined(principal: Principal, item_id: int) -> Any:
    """Re-run a quarantined op on a published version of its form."""
    try:
        version = int(request.form.get("form_version", ""))
    except ValueError:
        version = 0
    try:
        if version < 1:
            raise ValidationFailed(en="give a version number", zh="请填写要改用的版本号")
        records.map_quarantined(actor_of(principal), item_id, version)
    except ApiError as exc:
        result = records.list_quarantine(principal, limit=200)
        page = render_template(
            "quarantine.html", result=result, error=zh_message(exc), failed_id=item_id
        )
        return page, exc.status
    return redirect(url_for("web.quarantine"))


# --- users -------------------------------------------------------------------------------------


def _users_page(principal: Principal, **extra: Any) -> str:
    defaults = {"error": None, "fields": {}, "typed": {}, "created": None}
    return render_template(
        "users.html", accounts=auth.list_accounts(principal), roles=ROLES, **{**defaults, **extra}
    )


@blueprint.get("/users")
@signed_in(COUNTY_ADMIN)
def users(principal: Principal) -> Any:
    """Accounts of the admin's area; create one; disable or enable."""
    return _users_page(principal)


@blueprint.post("/users")
@signed_in(COUNTY_ADMIN)
def create_user(principal: Principal) -> Any:
    """Create a county admin or a township reviewer inside the admin's own area."""
    typed = {
        k: request.form.get(k, "") for k in ("username", "role", "area_prefix", "display_name")
    }
    area = typed["area_prefix"].strip() or principal.area_prefix
    try:
        actor_of(principal).require_area(area)
        created = auth.create_user(
            username=typed["username"],
            password=request.form.get("password", ""),
            role=typed["role"],
            area_prefix=area,
            display_name=typed["display_name"][:120],
            actor=principal.actor,
            actor_user_id=principal.user_id,
        )
    except ApiError as exc:
        page = _users_page(
            principal, error=zh_message(exc), fields=field_messages(exc), typed=typed
        )
        return page, exc.status
    return _users_page(principal, created=created), 201


@blueprint.post("/users/<int:user_id>/<any(enable, disable):change>")
@signed_in(COUNTY_ADMIN)
def set_user_active(principal: Principal, user_id: int, change: str) -> Any:
    """Disable (its sessions and tokens end at once) or enable an account."""
    try:
        auth.set_account_active(actor_of(principal), user_id, change == "enable")
    except ApiError as exc:
        return _users_page(principal, error=zh_message(exc)), exc.status
    return redirect(url_for("web.users"))


# --- audit -------------------------------------------------------------------------------------


def _day_start(text: str, field: str) -> datetime | None:
    """Midnight (Beijing time) of a ``YYYY-MM-DD`` date from the page, or None when empty."""
    text = text.strip()
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(
            en=f"{field} is not a date",
            zh="日期格式不正确，应为 年-月-日",
            details={"fields": {field: ["YYYY-MM-DD"]}},
        ) from None
    return datetime.combine(day, time(0), tzinfo=CHINA_TIME)


@blueprint.get("/audit")
@signed_in()
def audit(principal: Principal) -> Any:
    """The audit log of the caller's area, newest first, filtered by actor, action, area and
    day range (Beijing time); paged back."""
    typed = {
        k: (request.args.get(k) or "").strip()
        for k in ("actor", "action", "area", "since", "until")
    }
    try:
        before = int(request.args["before"]) if request.args.get("before") else None
    except ValueError:
        before = None
    try:
        since = _day_start(typed["since"], "since")
        until = _day_start(typed["until"], "until")
        entries = audit_service.list_entries(
            principal,
            limit=100,
            before_id=before,
            action=typed["action"] or None,
            actor=typed["actor"] or None,
            area=typed["area"] or None,
            since=since,
            until=until + timedelta(days=1) if until is not None else None,
        )
    except ValidationFailed as exc:
        page = render_template("audit.html", entries=[], typed=typed, error=zh_message(exc))
        return page, exc.status
    return render_template("audit.html", entries=entries, typed=typed, error=None)
