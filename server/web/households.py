"""Households: the list behind every dashboard number, and one household's page."""

from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request, url_for

from server.errors import NotFound
from server.services import indicators, records
from server.services.access import Principal
from server.web.base import blueprint, signed_in
from server.web.dashboard import INDICATOR_NAMES, PROBLEM_NAMES

PAGE = 50


def _page_number() -> int:
    try:
        return max(1, min(int(request.args.get("page", "1")), 100_000))
    except ValueError:
        return 1


@blueprint.get("/households")
@signed_in()
def households(principal: Principal) -> Any:
    """Households of an area (optionally those failing one indicator), paged; a village code
    with a household number opens that household's page."""
    area = (request.args.get("area") or "").strip()
    number = (request.args.get("household_no") or "").strip()
    if number and len(area) == 12:
        return redirect(url_for("web.household", village=area, household_no=number))
    problem = request.args.get("problem") or None
    round_ = request.args.get("round") or None
    page = _page_number()
    result = indicators.household_list(
        principal,
        area=area or None,
        round=round_,
        problem=problem,
        limit=PAGE,
        offset=(page - 1) * PAGE,
    )
    return render_template(
        "households.html",
        result=result,
        area=area,
        number=number,
        problem=problem,
        round=round_,
        page=page,
        pages=max(1, -(-result["total"] // PAGE)),
        names=INDICATOR_NAMES,
        problem_names=PROBLEM_NAMES,
    )


@blueprint.get("/households/<village>/<path:household_no>")
@signed_in()
def household(principal: Principal, village: str, household_no: str) -> Any:
    """Every instrument of every round of one household, its indicators and field history.

    404 when the household has no record in the caller's area (other areas look absent)."""
    found = records.list_records(
        principal, village=village, household_no=household_no, include_deleted=True, limit=1000
    )
    if not found["items"]:
        raise NotFound(zh="未找到该农户", en="no such household in your area")
    details = [records.show(principal, item["record_id"]) for item in found["items"]]
    details.sort(key=lambda d: (d["round"], d["form_id"], d["created_at"]))
    pictures = indicators.household_list(principal, area=village, limit=1000)["households"]
    picture = next((p for p in pictures if p["household_no"] == household_no), None)
    return render_template(
        "household.html",
        village=village,
        household_no=household_no,
        records=details,
        picture=picture,
        names=INDICATOR_NAMES,
        problem_names=PROBLEM_NAMES,
    )
