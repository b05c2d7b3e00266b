"""Households: the list behind every dashboard number, and one household's page."""

from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request, url_for

import forms as forms_lib
from server.errors import ApiError, NotFound, ValidationFailed
from server.services import forms as form_service
from server.services import household_search, indicators, records
from server.services.access import Principal
from server.web.base import blueprint, signed_in, zh_message
from server.web.dashboard import INDICATOR_NAMES, PROBLEM_NAMES

PAGE = 50


class FormLabels:
    """Chinese labels of a form version's fields and choices, for showing stored values."""

    def __init__(self, form_id: str, version: int) -> None:
        try:
            self.defn: forms_lib.FormDefinition | None = forms_lib.load_definition(
                form_service.get_version(form_id, version).definition
            )
        except (ApiError, forms_lib.FormsError):
            self.defn = None  # a version the server no longer knows: show names and raw values

    @property
    def title(self) -> str:
        """The form's Chinese title (its id without a definition)."""
        return self.defn.title.zh if self.defn is not None else ""

    def label(self, path: str) -> str:
        """The field's Chinese label, or its name."""
        fld = self.defn.find_field(path) if self.defn is not None else None
        return fld.label.zh if fld is not None and fld.label is not None else path

    def value(self, path: str, value: Any) -> Any:
        """A stored value as shown: choice labels for select fields, 是/否 for booleans."""
        fld = self.defn.find_field(path) if self.defn is not None else None
        if isinstance(value, bool):
            return "是" if value else "否"
        if fld is None or self.defn is None or not fld.choices:
            return value
        labels = {c.value: c.label.zh for c in self.defn.choices_of(fld)}
        if isinstance(value, list):
            return "、".join(labels.get(str(v), str(v)) for v in value)
        return labels.get(str(value), value)


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
    name = (request.args.get("name") or "").strip()[:40]
    id_number = (request.args.get("id_number") or "").strip()[:40]
    if number and len(area) == 12 and not (name or id_number):
        return redirect(url_for("web.household", village=area, household_no=number))
    if number or name or id_number:
        return _search_page(principal, area, number, name, id_number)
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
        typed={"name": "", "id_number": ""},
        search=None,
        error=None,
    )


def _search_page(
    principal: Principal, area: str, number: str, name: str, id_number: str
) -> tuple[str, int]:
    typed = {"area": area, "number": number, "name": name, "id_number": id_number}
    try:
        found = household_search.search(
            principal, area=area, household_no=number, name=name, id_number=id_number
        )
    except ValidationFailed as exc:
        return _households_template(typed, search=None, error=zh_message(exc)), exc.status
    return _households_template(typed, search=found, error=None), 200


def _households_template(typed: dict[str, str], **extra: Any) -> str:
    return render_template(
        "households.html",
        result=None,
        area=typed["area"],
        number=typed["number"],
        typed=typed,
        problem=None,
        round=None,
        page=1,
        pages=1,
        names=INDICATOR_NAMES,
        problem_names=PROBLEM_NAMES,
        **extra,
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
    labels = {(d["form_id"], d["form_version"]) for d in details}
    form_labels = {key: FormLabels(*key) for key in labels}
    pictures = indicators.household_list(principal, area=village, limit=1000)["households"]
    picture = next((p for p in pictures if p["household_no"] == household_no), None)
    return render_template(
        "household.html",
        village=village,
        household_no=household_no,
        records=details,
        labels=form_labels,
        picture=picture,
        names=INDICATOR_NAMES,
        problem_names=PROBLEM_NAMES,
    )
