"""Forms: versions and their status; upload a draft (XLSForm or JSON), publish, retire."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from flask import g, redirect, render_template, request, url_for

import forms as forms_lib
from server.errors import ApiError, ValidationFailed
from server.services import devices as device_service
from server.services import forms as form_service
from server.services.access import COUNTY_ADMIN, Principal
from server.services.indicators import CHINA_TIME
from server.web.base import actor_of, blueprint, signed_in, zh_message

STATUS_NAMES = {"draft": "草稿", "scheduled": "待发布", "published": "已发布", "retired": "已停用"}


def _forms_page(**extra: Any) -> str:
    defaults = {"error": None, "issues": [], "uploaded": None, "filename": ""}
    return render_template(
        "forms.html",
        forms=form_service.list_forms(),
        status_names=STATUS_NAMES,
        # Which of the signed-in admin's tablets still lack each form's newest version.
        behind=device_service.devices_behind_by_form(g.principal),
        **{**defaults, **extra},
    )


@blueprint.get("/forms")
@signed_in()
def forms(principal: Principal) -> Any:
    """Every form with its versions and their status."""
    return _forms_page()


def _document(
    content: bytes, filename: str, attachments: dict[str, bytes] | None = None
) -> tuple[Any, str]:
    """The definition in an uploaded file: an XLSForm workbook (with the choices files its
    ``select_one_from_file`` questions name) or a JSON document."""
    if filename.lower().endswith(".xlsx") or content[:2] == b"PK":
        return form_service.document_from_xlsform(content, filename, attachments), "xlsform"
    try:
        return json.loads(content.decode("utf-8")), "json"
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValidationFailed(
            en="the file is neither an .xlsx workbook nor JSON",
            zh="上传的文件既不是 .xlsx 表格也不是 JSON",
            details={"fields": {"file": ["an XLSForm .xlsx or a JSON definition"]}},
        ) from None


@blueprint.post("/forms/upload")
@signed_in(COUNTY_ADMIN)
def upload_form(principal: Principal) -> Any:
    """Store an uploaded definition as a draft; a refused one lists every located problem."""
    upload = request.files.get("file")
    filename = (upload.filename or "") if upload is not None else ""
    try:
        if upload is None or not filename:
            raise ValidationFailed(en="choose a file", zh="请选择要上传的文件（.xlsx 或 .json）")
        attachments = {
            f.filename: f.read() for f in request.files.getlist("attachment") if f.filename
        }
        document, source = _document(upload.read(), filename, attachments)
        row = form_service.upload_draft(document, actor=actor_of(principal), source=source)
    except ApiError as exc:
        issues = exc.details.get("issues", []) if isinstance(exc.details, dict) else []
        page = _forms_page(error=zh_message(exc), issues=issues, filename=filename)
        return page, exc.status
    return _forms_page(uploaded=form_service.version_summary(row), filename=filename), 201


def _publish_time(text: str) -> datetime | None:
    """A local (Beijing) date-time from the page's ``datetime-local`` input, or None."""
    text = text.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(
            en="the publication time is not a date and time",
            zh="发布时间格式不正确，应为 年-月-日 时:分",
            details={"fields": {"at": ["YYYY-MM-DDTHH:MM"]}},
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=CHINA_TIME)


@blueprint.post("/forms/<form_id>/<int:version>/publish")
@signed_in(COUNTY_ADMIN)
def publish_form(principal: Principal, form_id: str, version: int) -> Any:
    """Publish a version now, or schedule it for the time given (Beijing time)."""
    try:
        at = _publish_time(request.form.get("at", ""))
        form_service.publish(form_id, version, actor=actor_of(principal), at=at)
    except ApiError as exc:
        return _forms_page(error=zh_message(exc)), exc.status
    return redirect(url_for("web.forms"))


@blueprint.post("/forms/<form_id>/<int:version>/retire")
@signed_in(COUNTY_ADMIN)
def retire_form(principal: Principal, form_id: str, version: int) -> Any:
    """Retire a version (after the confirmation box is ticked): tablets stop offering it for
    new records."""
    try:
        if request.form.get("confirm") != "1":
            raise ValidationFailed(
                en="tick the confirmation to retire a version",
                zh="请勾选“确认停用”后再停用",
                details={"fields": {"confirm": ["required"]}},
            )
        form_service.retire(form_id, version, actor=actor_of(principal))
    except ApiError as exc:
        return _forms_page(error=zh_message(exc)), exc.status
    return redirect(url_for("web.forms"))


#: Languages written right to left (Uyghur in Arabic script among the county languages).
RTL_LANGUAGES = frozenset({"ug", "ar", "fa", "ur", "he"})
TYPE_NAMES = {
    "text": "文本",
    "integer": "整数",
    "decimal": "小数",
    "date": "日期",
    "select_one": "单选",
    "select_multiple": "多选",
    "boolean": "是/否",
    "geopoint": "位置",
    "image": "照片",
    "repeat": "重复组",
    "note": "说明",
    "calculate": "计算",
    "time": "时间",
    "datetime": "日期时间",
    "audio": "录音",
    "video": "视频",
    "file": "文件",
    "geotrace": "轨迹",
    "geoshape": "区域",
    "rank": "排序",
}


def _languages(defn: forms_lib.FormDefinition) -> list[str]:
    found = set(defn.title)
    for _path, fld in _walk_fields(defn.fields):
        for text in (fld.label, fld.hint):
            if text is not None:
                found.update(text)
    return ["zh", *sorted(found - {"zh"})]


def _walk_fields(fields: tuple[forms_lib.Field, ...]) -> list[tuple[str, forms_lib.Field]]:
    out = []
    for fld in fields:
        out.append((fld.name, fld))
        out.extend((f"{fld.name}/{p}", f) for p, f in _walk_fields(fld.fields))
    return out


@blueprint.get("/forms/<form_id>/<int:version>")
@signed_in()
def preview_form(principal: Principal, form_id: str, version: int) -> Any:
    """The form as the tablet asks it: labels, hints, choices and skip logic, per language
    (right to left for Uyghur)."""
    row = form_service.get_version(form_id, version)
    defn = forms_lib.load_definition(row.definition)
    languages = _languages(defn)
    lang = request.args.get("lang") if request.args.get("lang") in languages else "zh"
    return render_template(
        "form_preview.html",
        defn=defn,
        summary=form_service.version_summary(row),
        languages=languages,
        lang=lang,
        rtl=lang in RTL_LANGUAGES,
        type_names=TYPE_NAMES,
        status_names=STATUS_NAMES,
    )
