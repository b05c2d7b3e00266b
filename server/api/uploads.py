"""``/api/v1/uploads``: resumable, content-addressed attachment uploads from devices (tus-like).

Every request carries ``Authorization: VillageSync-Device device="…", ts="…", sig="…"`` (see
``server.services.uploads.signature_message`` and docs/attachments.md).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request, send_file
from marshmallow import Schema, fields, validate

from server.api import API_PREFIX
from server.api.guard import authenticated
from server.api.wire import json_body, load_data, returns, service_context
from server.errors import ValidationFailed
from server.services import uploads
from server.services.access import Principal

blueprint = Blueprint("uploads", __name__, url_prefix=f"{API_PREFIX}/uploads")


class StartUploadSchema(Schema):
    sha256 = fields.String(required=True, validate=validate.Regexp(r"^[0-9a-f]{64}$"))
    size = fields.Integer(required=True, validate=validate.Range(min=1))
    content_type = fields.String(
        load_default="application/octet-stream", validate=validate.Length(min=1, max=100)
    )


class UploadStatusSchema(Schema):
    sha256 = fields.String(dump_only=True)
    size = fields.Integer(dump_only=True)
    offset = fields.Integer(dump_only=True)
    complete = fields.Boolean(dump_only=True)
    content_type = fields.String(dump_only=True)


def _device(sha256: str, offset: str, body: bytes) -> Any:
    device = uploads.authenticate_device(
        service_context(),
        request.headers.get("Authorization", ""),
        method=request.method,
        path=request.path,
        sha256=sha256,
        offset=offset,
        body=body,
    )
    return device


def _reply(status: uploads.UploadStatus, code: int = 200) -> Response:
    response = jsonify(status.to_dict())
    response.status_code = code
    response.headers["Upload-Offset"] = str(status.offset)
    response.headers["Upload-Length"] = str(status.size)
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.post("")
@returns(UploadStatusSchema(), status=201)
def start_upload() -> Any:
    """Announce an attachment by SHA-256 and size; 201 when new, 200 to resume or when complete.

    Signed by the device (offset ``0``). 413 beyond the attachment size limit.
    """
    body = request.get_data(cache=True)
    data = json_body()
    if not isinstance(data, dict):
        raise ValidationFailed(
            en="the request body must be a JSON object",
            zh="请求内容应为 JSON 对象",
            details={"fields": {"_body": ["expected a JSON object"]}},
        )
    loaded = load_data(StartUploadSchema(), data)
    device = _device(loaded["sha256"], "0", body)
    status, created = uploads.start_upload(
        service_context(), device, loaded["sha256"], loaded["size"], loaded["content_type"]
    )
    response = _reply(status, 201 if created else 200)
    response.headers["Location"] = f"{API_PREFIX}/uploads/{status.sha256}"
    return response


# Parsed by hand (the body is signed as sent), but shown in the OpenAPI document all the same.
start_upload.request_schema = StartUploadSchema()  # type: ignore[attr-defined]


@blueprint.get("/<string:sha256>")
@returns(UploadStatusSchema())
def upload_status(sha256: str) -> Any:
    """The confirmed offset of an upload (also as ``HEAD``: headers ``Upload-Offset``,
    ``Upload-Length``). Signed by the device (empty offset)."""
    uploads.check_sha256(sha256)
    device = _device(sha256, "", b"")
    return _reply(uploads.upload_status(device, sha256))


@blueprint.patch("/<string:sha256>")
@returns(UploadStatusSchema())
def append_chunk(sha256: str) -> Any:
    """Append the body at ``Upload-Offset``, checked against ``Upload-Checksum: sha256 <b64>``.

    409 with the confirmed offset when ``Upload-Offset`` is not it; 422 for a chunk whose
    checksum differs, or a finished file whose SHA-256 is not its address; 413 past the size.
    """
    uploads.check_sha256(sha256)
    offset_text = request.headers.get("Upload-Offset", "")
    if not offset_text.isdigit():
        raise ValidationFailed(
            en="send Upload-Offset: <bytes confirmed so far>",
            zh="缺少 Upload-Offset",
            details={"fields": {"Upload-Offset": ["a non-negative integer"]}},
        )
    chunk = request.get_data(cache=False)
    device = _device(sha256, offset_text, chunk)
    status = uploads.append_chunk(
        service_context(),
        device,
        sha256,
        int(offset_text),
        request.headers.get("Upload-Checksum"),
        chunk,
    )
    return _reply(status)


@blueprint.get("/<string:sha256>/content")
@authenticated()
def attachment_content(principal: Principal, sha256: str) -> Any:
    """The stored file of a completed upload (admins, within their area), e.g. a house photo."""
    path, content_type = uploads.stored_attachment(service_context(), principal.area_prefix, sha256)
    response = send_file(
        path,
        mimetype=content_type,
        max_age=0,
        conditional=True,
        etag=sha256,
        as_attachment=True,
        download_name=f"{sha256}.{content_type.rpartition('/')[2].replace('octet-stream', 'bin')}",
    )
    response.headers["Cache-Control"] = "private, max-age=0"
    # Even opened directly, the file may run nothing: no scripts, no plugins, no framing.
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response
