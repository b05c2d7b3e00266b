"""Area names: the county admin names its townships and villages (one by one or as a CSV)."""

from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request, url_for

from server.errors import ApiError
from server.services import areas
from server.services.access import COUNTY_ADMIN, Principal
from server.web.base import actor_of, blueprint, field_messages, signed_in, zh_message

#: A village list is a few KB; anything far larger is the wrong file.
MAX_TABLE_BYTES = 2 * 1024 * 1024


def _areas_page(principal: Principal, **extra: Any) -> str:
    defaults: dict[str, Any] = {
        "error": None,
        "fields": {},
        "typed": {},
        "issues": [],
        "imported": None,
    }
    return render_template("areas.html", named=areas.list_names(principal), **{**defaults, **extra})


@blueprint.get("/areas")
@signed_in(COUNTY_ADMIN)
def area_names(principal: Principal) -> Any:
    """The named townships and villages of the admin's area; name one; load a table."""
    imported = request.args.get("imported")
    return _areas_page(principal, imported=int(imported) if (imported or "").isdigit() else None)


@blueprint.post("/areas")
@signed_in(COUNTY_ADMIN)
def set_area_name(principal: Principal) -> Any:
    """Name one code (an empty name forgets it)."""
    typed = {k: request.form.get(k, "") for k in ("code", "name")}
    try:
        areas.set_name(typed["code"], typed["name"], actor=actor_of(principal))
    except ApiError as exc:
        page = _areas_page(
            principal, error=zh_message(exc), fields=field_messages(exc), typed=typed
        )
        return page, exc.status
    return redirect(url_for("web.area_names"))


@blueprint.post("/areas/import")
@signed_in(COUNTY_ADMIN)
def import_area_names(principal: Principal) -> Any:
    """Load a ``code,name`` CSV: every row or none, each problem shown with its row."""
    upload = request.files.get("table")
    data = upload.read(MAX_TABLE_BYTES + 1) if upload is not None else b""
    try:
        if len(data) > MAX_TABLE_BYTES:
            data = b"\x00"  # refused below as "not a table", with the same located message
        count = areas.import_table(data, actor=actor_of(principal))
    except ApiError as exc:
        issues = exc.details.get("issues", []) if isinstance(exc.details, dict) else []
        return _areas_page(principal, error=zh_message(exc), issues=issues), exc.status
    return redirect(url_for("web.area_names", imported=count))
