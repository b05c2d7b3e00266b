"""Department lists (部门数据比对): upload a department's list, edit the column mapping, see
each round's counts and the rows that matched no household (IDs masked)."""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Response, redirect, render_template, request, url_for

from server.api.wire import service_context
from server.errors import ApiError
from server.services import department_lists as service
from server.services.access import COUNTY_ADMIN, Principal
from server.services.task_reasons import DEPARTMENTS
from server.web.base import actor_of, blueprint, field_messages, signed_in, zh_message

ROW_PAGE = 200


def _default_area(principal: Principal) -> str:
    return principal.area_prefix


def _lists_page(principal: Principal, **extra: Any) -> str:
    defaults: dict[str, Any] = {
        "error": None,
        "fields": {},
        "typed": {
            "department": "medical_insurance",
            "period": date.today().strftime("%Y-%m"),
            "as_of": date.today().isoformat(),
            "area": _default_area(principal),
        },
        "result": None,
    }
    return render_template(
        "department_lists.html",
        rounds=service.list_rounds(principal),
        departments=DEPARTMENTS,
        problems=service.PROBLEMS,
        **{**defaults, **extra},
    )


@blueprint.get("/department-lists")
@signed_in()
def department_lists(principal: Principal) -> Any:
    """The rounds of the admin's area with their counts; the upload form for county admins."""
    return _lists_page(principal)


@blueprint.post("/department-lists")
@signed_in(COUNTY_ADMIN)
def upload_department_list(principal: Principal) -> Any:
    """Import the uploaded list; the page shows what the import did, or the located error."""
    typed = {k: request.form.get(k, "").strip() for k in ("department", "period", "as_of", "area")}
    upload = request.files.get("file")
    content = upload.read(service.MAX_FILE_BYTES + 1) if upload is not None else b""
    try:
        result = service.import_department_list(
            service_context(),
            actor_of(principal),
            content,
            department=typed["department"],
            period=typed["period"],
            as_of=typed["as_of"],
            area=typed["area"],
            file_name=(upload.filename or "") if upload is not None else "",
        )
    except ApiError as exc:
        page = _lists_page(
            principal, error=zh_message(exc), fields=field_messages(exc), typed=typed
        )
        return page, exc.status
    return _lists_page(principal, result=result, typed=typed)


@blueprint.get("/department-lists/<int:round_id>")
@signed_in()
def department_round(principal: Principal, round_id: int) -> Any:
    """One round: its counts over the caller's area and its unmatched rows (read audited)."""
    try:
        page = max(1, int(request.args.get("page", "1")))
    except ValueError:
        page = 1
    shown = service.get_round(principal, round_id)
    rows, total = service.round_rows(
        service_context(),
        principal,
        actor_of(principal),
        round_id,
        limit=ROW_PAGE,
        offset=(page - 1) * ROW_PAGE,
    )
    return render_template(
        "department_round.html",
        round=shown,
        rows=rows,
        total=total,
        page=page,
        pages=max(1, -(-total // ROW_PAGE)),
        departments=DEPARTMENTS,
        problems=service.PROBLEMS,
    )


def _mapping_page(principal: Principal, department: str, area: str, **extra: Any) -> str:
    found = service.get_mapping(principal, area, department)
    return render_template(
        "department_mapping.html",
        mapping=found,
        labels=service.field_labels(department),
        required=service.REQUIRED_FIELDS,
        departments=DEPARTMENTS,
        **{"error": None, "fields": {}, "typed": found.columns, "saved_now": False, **extra},
    )


@blueprint.get("/department-lists/mapping")
@signed_in(COUNTY_ADMIN)
def department_mapping(principal: Principal) -> Any:
    """The column mapping of one department for an area (its default until saved)."""
    department = request.args.get("department") or "medical_insurance"
    area = request.args.get("area") or _default_area(principal)
    try:
        return _mapping_page(principal, department, area)
    except ApiError as exc:
        return _lists_page(principal, error=zh_message(exc)), exc.status


@blueprint.post("/department-lists/mapping")
@signed_in(COUNTY_ADMIN)
def save_department_mapping(principal: Principal) -> Any:
    """Save the mapping; errors are shown beside the fields, the typed headers kept."""
    department = request.form.get("department", "")
    area = request.form.get("area", "")
    columns = {
        key.removeprefix("col_"): value
        for key, value in request.form.items()
        if key.startswith("col_")
    }
    try:
        service.save_mapping(actor_of(principal), area, department, columns)
    except ApiError as exc:
        try:
            page = _mapping_page(
                principal,
                department,
                area,
                error=zh_message(exc),
                fields=field_messages(exc),
                typed=columns,
            )
        except ApiError:
            page = _lists_page(principal, error=zh_message(exc))
        return page, exc.status
    return redirect(url_for("web.department_mapping", department=department, area=area, saved=1))


@blueprint.get("/department-lists/housing-appraisal.xlsx")
@signed_in(COUNTY_ADMIN)
def housing_appraisal_file(principal: Principal) -> Any:
    """Download the households to appraise (住建), as the API gives them."""
    area = request.args.get("area") or _default_area(principal)
    try:
        content, _ = service.housing_appraisal_list(principal, actor_of(principal), area=area)
    except ApiError as exc:
        return _lists_page(principal, error=zh_message(exc)), exc.status
    response = Response(
        content,
        content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    )
    response.headers["Content-Disposition"] = f"attachment; filename=housing-appraisal-{area}.xlsx"
    return response
