"""``/api/v1/department-lists``: import a department's list as a round, list the rounds, show a
round's unmatched rows (masked), read and save a department's column mapping."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, request
from marshmallow import Schema, fields, validate

from server.api import API_PREFIX
from server.api.guard import actor_for, authenticated
from server.api.wire import MAX_INT, accepts, load_data, load_query, returns, service_context
from server.errors import ValidationFailed
from server.services import department_lists as service
from server.services.access import COUNTY_ADMIN, Principal
from server.services.task_reasons import DEPARTMENTS

blueprint = Blueprint("department_lists", __name__, url_prefix=f"{API_PREFIX}/department-lists")

_DEPARTMENT = validate.OneOf(list(DEPARTMENTS))


class ImportFieldsSchema(Schema):
    department = fields.String(required=True, validate=_DEPARTMENT)
    period = fields.String(required=True, validate=validate.Length(min=7, max=7))
    as_of = fields.Date(required=True)
    area = fields.String(required=True, validate=validate.Length(min=6, max=12))
    mapping = fields.String(load_default=None, validate=validate.Length(max=4000))


class ImportResultSchema(Schema):
    round_id = fields.Integer(dump_only=True)
    department = fields.String(dump_only=True)
    period = fields.String(dump_only=True)
    as_of = fields.String(dump_only=True)
    already_imported = fields.Boolean(dump_only=True)
    counts = fields.Dict(dump_only=True)
    households_signalled = fields.Integer(dump_only=True)
    signals_delivered = fields.Boolean(dump_only=True)
    mapping = fields.Dict(dump_only=True)


class RoundSchema(Schema):
    id = fields.Integer(dump_only=True)
    area = fields.String(dump_only=True)
    department = fields.String(dump_only=True)
    department_name = fields.Dict(dump_only=True)
    period = fields.String(dump_only=True)
    as_of = fields.String(dump_only=True)
    file_name = fields.String(dump_only=True)
    created_at = fields.String(dump_only=True, allow_none=True)
    created_by = fields.String(dump_only=True)
    counts = fields.Dict(dump_only=True)
    signals_delivered = fields.Boolean(dump_only=True)
    households_signalled = fields.Integer(dump_only=True)


class RoundListQuerySchema(Schema):
    department = fields.String(load_default=None, validate=_DEPARTMENT)


class RowSchema(Schema):
    excel_row = fields.Integer(dump_only=True)
    village_code = fields.String(dump_only=True)
    household_no = fields.String(dump_only=True)
    matched_by = fields.String(dump_only=True)
    problem = fields.String(dump_only=True)
    message = fields.Dict(dump_only=True)
    name = fields.String(dump_only=True)
    id_number = fields.String(dump_only=True)


class RowPageSchema(Schema):
    items = fields.List(fields.Nested(RowSchema), dump_only=True)
    total = fields.Integer(dump_only=True)


class RowQuerySchema(Schema):
    limit = fields.Integer(load_default=200, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_INT))


class MappingQuerySchema(Schema):
    area = fields.String(required=True, validate=validate.Length(min=6, max=12))


class MappingSchema(Schema):
    area = fields.String(dump_only=True)
    department = fields.String(dump_only=True)
    columns = fields.Dict(keys=fields.String(), values=fields.String())
    saved = fields.Boolean(dump_only=True)


class SaveMappingSchema(Schema):
    area = fields.String(required=True, validate=validate.Length(min=6, max=12))
    columns = fields.Dict(
        keys=fields.String(validate=validate.Length(max=40)),
        values=fields.String(validate=validate.Length(max=60)),
        required=True,
    )


def _mapping_text(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ValidationFailed(
            en="mapping is a JSON object {field: header}",
            zh="列对应关系应为 JSON 对象｛字段: 表头｝",
            code="department_mapping_invalid",
            details={"fields": {"mapping": ["a JSON object"]}},
        )
    return value


@blueprint.post("")
@authenticated(COUNTY_ADMIN)
@returns(ImportResultSchema(), status=201)
def import_list(principal: Principal) -> Any:
    """Import a department list (multipart: ``file`` .xlsx, ``department``, ``period``
    YYYY-MM, ``as_of``, ``area``, optional ``mapping`` JSON); the same file again is a no-op
    that says so (200, ``already_imported``)."""
    body = load_data(ImportFieldsSchema(), request.form.to_dict())
    upload = request.files.get("file")
    if upload is None:
        raise ValidationFailed(
            en="send the list as the multipart field 'file'",
            zh="请以 file 字段上传名单文件",
            code="department_import_invalid",
            details={"fields": {"file": ["required"]}},
        )
    result = service.import_department_list(
        service_context(),
        actor_for(principal),
        upload.read(service.MAX_FILE_BYTES + 1),
        department=body["department"],
        period=body["period"],
        as_of=body["as_of"],
        area=body["area"],
        file_name=upload.filename or "",
        columns=_mapping_text(body["mapping"]),
    )
    return result.to_dict(), 200 if result.already_imported else 201


@blueprint.get("")
@authenticated()
@returns(RoundSchema(many=True))
def list_rounds(principal: Principal) -> Any:
    """The rounds of your area (newest first), counted over your area; ``?department=``."""
    query = load_query(RoundListQuerySchema())
    return [r.to_dict() for r in service.list_rounds(principal, department=query["department"])]


@blueprint.get("/<int(max=9007199254740991):round_id>")
@authenticated()
@returns(RoundSchema())
def get_round(principal: Principal, round_id: int) -> Any:
    """One round, counted over your area."""
    return service.get_round(principal, round_id).to_dict()


@blueprint.get("/<int(max=9007199254740991):round_id>/unmatched")
@authenticated()
@returns(RowPageSchema())
def unmatched_rows(principal: Principal, round_id: int) -> Any:
    """A round's rows that matched no household, with their Excel row and why; IDs masked.
    Reading them is audited. ``?limit=&offset=``."""
    query = load_query(RowQuerySchema())
    rows, total = service.round_rows(
        service_context(),
        principal,
        actor_for(principal),
        round_id,
        limit=query["limit"],
        offset=query["offset"],
    )
    return {"items": [r.to_dict() for r in rows], "total": total}


XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@blueprint.get("/housing-appraisal.xlsx")
@authenticated(COUNTY_ADMIN)
def housing_appraisal(principal: Principal) -> Any:
    """The households of ``?area=`` whose house is not known safe, for 住建 to appraise (IDs
    unmasked: county admins only; audited). The file with 鉴定等级 filled in imports back as
    a ``housing`` list."""
    query = load_query(MappingQuerySchema())
    content, _ = service.housing_appraisal_list(principal, actor_for(principal), area=query["area"])
    response = Response(content, content_type=XLSX_TYPE)
    response.headers["Content-Disposition"] = (
        f"attachment; filename=housing-appraisal-{query['area']}.xlsx"
    )
    return response


@blueprint.get("/mappings/<string(maxlength=32):department>")
@authenticated(COUNTY_ADMIN)
@returns(MappingSchema())
def get_mapping(principal: Principal, department: str) -> Any:
    """The column mapping of a department for ``?area=`` (its default until one is saved)."""
    query = load_query(MappingQuerySchema())
    found = service.get_mapping(principal, query["area"], department)
    return {
        "area": found.area,
        "department": found.department,
        "columns": found.columns,
        "saved": found.saved,
    }


@blueprint.put("/mappings/<string(maxlength=32):department>")
@authenticated(COUNTY_ADMIN)
@accepts(SaveMappingSchema())
@returns(MappingSchema())
def save_mapping(principal: Principal, body: dict[str, Any], department: str) -> Any:
    """Save the column mapping (field → header) of a department for an area; audited."""
    found = service.save_mapping(actor_for(principal), body["area"], department, body["columns"])
    return {
        "area": found.area,
        "department": found.department,
        "columns": found.columns,
        "saved": found.saved,
    }
