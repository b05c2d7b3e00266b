"""``/api/v1/exports/<form_id>.csv|.xlsx``: a form's records as a spreadsheet (see
``server.services.exports`` for the layout and the masking rules)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, stream_with_context
from marshmallow import Schema, fields, validate

from server.api import API_PREFIX
from server.api.guard import actor_for, authenticated
from server.api.wire import MAX_INT, load_query
from server.services import exports
from server.services.access import Principal

blueprint = Blueprint("exports", __name__, url_prefix=f"{API_PREFIX}/exports")

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_FILE_CHUNK = 64 * 1024


class ExportQuerySchema(Schema):
    village = fields.String(load_default=None)
    round = fields.String(load_default=None, validate=validate.Length(min=1, max=40))
    version = fields.Integer(load_default=None, validate=validate.Range(min=1, max=MAX_INT))
    unmasked = fields.Boolean(load_default=False)
    sheet = fields.String(load_default=exports.MAIN_SHEET, validate=validate.Length(max=255))


def _file_then_delete(path: str) -> Iterator[bytes]:
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_FILE_CHUNK):
                yield chunk
    finally:
        os.unlink(path)


@blueprint.get("/<string:form_id>.<any(csv, xlsx):fmt>")
@authenticated()
def export_records(principal: Principal, form_id: str, fmt: str) -> Any:
    """Records of a form as CSV (one sheet, ``?sheet=``) or XLSX (all sheets); audited.

    Query: ``village`` (code prefix), ``round``, ``version``, ``unmasked=true`` (county admin
    only). Sensitive fields are masked otherwise. The body is streamed.
    """
    query = load_query(ExportQuerySchema())
    export = exports.start_export(principal, actor_for(principal), form_id, fmt=fmt, **query)
    if fmt == "csv":
        body = stream_with_context(export.csv_chunks(query["sheet"]))
        suffix = "" if query["sheet"] == exports.MAIN_SHEET else "-" + query["sheet"]
        response = Response(body, mimetype="text/csv", content_type="text/csv; charset=utf-8")
        filename = f"{form_id}{suffix.replace('/', '-')}.csv"
    else:
        path = export.xlsx_file()
        response = Response(_file_then_delete(path), content_type=XLSX_TYPE)
        response.headers["Content-Length"] = str(os.path.getsize(path))
        filename = f"{form_id}.xlsx"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response
