"""``/api/v1/forms``: upload drafts (JSON or XLSForm), publish now or later, retire, list."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, request
from marshmallow import Schema, fields

from server.api import API_PREFIX
from server.api.guard import actor_for, authenticated
from server.api.wire import accepts, json_body, reject_nul, returns, too_deep
from server.errors import ValidationFailed
from server.services import forms as form_service
from server.services.access import COUNTY_ADMIN, Principal

#: The first bytes of an OLE2 compound file (an Excel 97-2003 ``.xls``).
_OLE = b"\xd0\xcf\x11\xe0"

blueprint = Blueprint("forms", __name__, url_prefix=f"{API_PREFIX}/forms")


class VersionSchema(Schema):
    form_id = fields.String(dump_only=True)
    version = fields.Integer(dump_only=True)
    odk_version = fields.String(dump_only=True)
    odk_form_id = fields.String(dump_only=True)
    status = fields.String(dump_only=True)
    source = fields.String(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    created_by = fields.String(dump_only=True)
    publish_at = fields.DateTime(dump_only=True, allow_none=True)
    published_at = fields.DateTime(dump_only=True, allow_none=True)
    retired_at = fields.DateTime(dump_only=True, allow_none=True)


class VersionWithDefinitionSchema(VersionSchema):
    definition = fields.Dict(dump_only=True)


class UploadedSchema(VersionSchema):
    warnings = fields.List(fields.Dict(), dump_only=True)


class FormSchema(Schema):
    form_id = fields.String(dump_only=True)
    title = fields.Dict(dump_only=True)
    builtin = fields.Boolean(dump_only=True)
    versions = fields.List(fields.Nested(VersionSchema), dump_only=True)


class PublishSchema(Schema):
    at = fields.AwareDateTime(load_default=None, allow_none=True)


def _uploaded_document() -> tuple[Any, str, list[dict[str, Any]]]:
    """The definition from the request — a JSON body, or a multipart ``file`` (.json, or an
    XLSForm .xlsx/.xlsm/.xls) — its source, and the XLSForm importer's located warnings."""
    upload = request.files.get("file")
    if upload is not None:
        content = upload.read()
        name = (upload.filename or "").lower()
        if name.endswith((".xlsx", ".xlsm", ".xls")) or content[:2] == b"PK" or content[:4] == _OLE:
            attachments = {
                f.filename: f.read() for f in request.files.getlist("attachment") if f.filename
            }
            document, warnings = form_service.read_xlsform_upload(
                content, upload.filename, attachments
            )
            return document, "xlsform", warnings
        try:
            document = json.loads(content.decode("utf-8"))
            reject_nul(document, "file")
            return document, "json", []
        except RecursionError:
            raise too_deep("file") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValidationFailed(
                en=f"the uploaded file is neither an .xlsx workbook nor JSON: {exc}",
                zh="上传的文件既不是 .xlsx 表格也不是 JSON",
                details={"fields": {"file": ["an XLSForm .xlsx or a JSON definition"]}},
            ) from None
    document = json_body()
    if not isinstance(document, dict):
        raise ValidationFailed(
            en="send the definition as a JSON object or a multipart 'file' (.xlsx or .json)",
            zh="请以 JSON 或上传文件（.xlsx/.json）的方式提交表单定义",
            details={"fields": {"_body": ["a JSON object or a multipart file"]}},
        )
    reject_nul(document)
    return document, "json", []


@blueprint.get("")
@authenticated()
@returns(FormSchema(many=True))
def list_forms(principal: Principal) -> Any:
    """Every form and the status of each version."""
    return FormSchema(many=True).dump(form_service.list_forms())


@blueprint.post("")
@authenticated(COUNTY_ADMIN)
@returns(UploadedSchema(), 201)
def upload(principal: Principal) -> Any:
    """Upload a definition (JSON body, or multipart file .xlsx/.json) as a draft version.

    With an XLSForm, repeat the multipart part ``attachment`` for each choices file its
    ``select_one_from_file`` questions name (``villages.csv``, ``crops.xml``).

    422 ``form_invalid`` lists every located issue in ``details.issues``; 422
    ``sensitive_flag_dropped`` names fields that were sensitive in an earlier version (send
    ``?drop_sensitive=true`` to drop the flag anyway: audited, and old records stay masked).
    ``warnings`` lists what an XLSForm import ignored or mapped, located (sheet/row/column).
    """
    document, source, warnings = _uploaded_document()
    drop = request.args.get("drop_sensitive", "").lower() in ("1", "true", "yes")
    row = form_service.upload_draft(
        document, actor=actor_for(principal), source=source, drop_sensitive=drop
    )
    summary = {**form_service.version_summary(row), "warnings": warnings}
    return UploadedSchema().dump(summary), 201


@blueprint.get("/<form_id>/versions")
@authenticated()
@returns(VersionSchema(many=True))
def list_versions(principal: Principal, form_id: str) -> Any:
    """Every version of a form, newest first."""
    rows = form_service.versions(form_id)
    return VersionSchema(many=True).dump([form_service.version_summary(r) for r in rows])


@blueprint.get("/<form_id>/versions/<int:version>")
@authenticated()
@returns(VersionWithDefinitionSchema())
def get_version(principal: Principal, form_id: str, version: int) -> Any:
    """One version with its canonical definition."""
    row = form_service.get_version(form_id, version)
    summary = form_service.version_summary(row)
    return VersionWithDefinitionSchema().dump({**summary, "definition": row.definition})


@blueprint.post("/<form_id>/versions/<int:version>/publish")
@authenticated(COUNTY_ADMIN)
@accepts(PublishSchema(), optional=True)
@returns(VersionSchema())
def publish(principal: Principal, body: dict[str, Any], form_id: str, version: int) -> Any:
    """Publish a version now, or at ``at`` (ISO 8601 with zone) — it is then ``scheduled``."""
    row = form_service.publish(form_id, version, actor=actor_for(principal), at=body["at"])
    return VersionSchema().dump(form_service.version_summary(row))


@blueprint.post("/<form_id>/versions/<int:version>/retire")
@authenticated(COUNTY_ADMIN)
@returns(VersionSchema())
def retire(principal: Principal, form_id: str, version: int) -> Any:
    """Retire a version: no new records on it (existing ones stay valid)."""
    row = form_service.retire(form_id, version, actor=actor_for(principal))
    return VersionSchema().dump(form_service.version_summary(row))
