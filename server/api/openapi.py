"""``GET /api/v1/openapi.json``: the OpenAPI 3.1 description, built from the registered routes.

Walking ``app.url_map`` means no route can be forgotten: every ``/api/v1`` rule appears, with
its summary (the view's docstring), request and response schemas (recorded by
``server.api.wire.accepts``/``returns``), whether it needs a token, and the one error body.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, current_app
from marshmallow import RAISE, Schema, fields, validate

from server.api import API_PREFIX
from server.errors import ERROR_CODES

blueprint = Blueprint("openapi", __name__, url_prefix=API_PREFIX)

#: Path arguments with a fixed shape the views check (400 otherwise).
_PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
}

_CONVERTER = re.compile(r"<(?:(?P<conv>[a-z]+)(?:\([^)]*\))?:)?(?P<name>\w+)>")


def _field_schema(field: fields.Field) -> dict[str, Any]:
    if isinstance(field, fields.Nested):
        nested = field.schema
        out = _object_schema(nested)
        return {"type": "array", "items": out} if getattr(nested, "many", False) else out
    if isinstance(field, fields.List):
        return {"type": "array", "items": _field_schema(field.inner)}
    if isinstance(field, fields.Dict):
        out: dict[str, Any] = {"type": "object"}
    elif isinstance(field, fields.Boolean):
        out = {"type": "boolean"}
    elif isinstance(field, fields.Integer):
        out = {"type": "integer"}
    elif isinstance(field, fields.Number):
        out = {"type": "number"}
    elif isinstance(field, fields.DateTime):
        out = {"type": "string", "format": "date-time"}
    else:
        out = {"type": "string"}
    out.update(_validator_schema(field))
    if field.allow_none:
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def _validator_schema(field: fields.Field) -> dict[str, Any]:
    """JSON-schema keywords for the field's marshmallow validators (lengths, ranges, patterns,
    choices), so the document refuses what the server refuses."""
    out: dict[str, Any] = {}
    for check in field.validators:
        if isinstance(check, validate.Length):
            if check.equal is not None:
                out["minLength"] = out["maxLength"] = check.equal
            if check.min is not None:
                out["minLength"] = check.min
            if check.max is not None:
                out["maxLength"] = check.max
        elif isinstance(check, validate.Range):
            if check.min is not None:
                out["minimum" if check.min_inclusive else "exclusiveMinimum"] = check.min
            if check.max is not None:
                out["maximum" if check.max_inclusive else "exclusiveMaximum"] = check.max
        elif isinstance(check, validate.Regexp):
            out["pattern"] = check.regex.pattern
        elif isinstance(check, validate.OneOf):
            out["enum"] = list(check.choices)
    return out


def _object_schema(schema: Schema, *, direction: str = "dump") -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, field in schema.fields.items():
        if direction == "load" and field.dump_only:
            continue
        if direction == "dump" and field.load_only:
            continue
        properties[field.data_key or name] = _field_schema(field)
        if direction == "load" and field.required:
            required.append(field.data_key or name)
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    if direction == "load" and schema.unknown == RAISE:
        # The server refuses fields it does not know (400 validation_failed): say so.
        out["additionalProperties"] = False
    if getattr(schema, "many", False):
        return {"type": "array", "items": out}
    return out


def _error_component() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {
                        "type": "string",
                        "enum": sorted(ERROR_CODES),
                        "description": "stable; the statuses and default messages are in"
                        " x-error-codes",
                    },
                    "message": {
                        "type": "object",
                        "required": ["zh", "en"],
                        "properties": {"zh": {"type": "string"}, "en": {"type": "string"}},
                    },
                    "details": {"type": "object"},
                },
            }
        },
        "x-error-codes": [ERROR_CODES[code].as_dict() for code in sorted(ERROR_CODES)],
    }


def build_document() -> dict[str, Any]:
    """The OpenAPI document of the current app: every ``/api/v1`` route and method."""
    paths: dict[str, dict[str, Any]] = {}
    for rule in current_app.url_map.iter_rules():
        if not rule.rule.startswith(API_PREFIX):
            continue
        view = current_app.view_functions[rule.endpoint]
        path = _CONVERTER.sub(lambda m: "{" + m.group("name") + "}", rule.rule)
        parameters = [
            {
                "name": match.group("name"),
                "in": "path",
                "required": True,
                "schema": _PATH_SCHEMAS.get(
                    match.group("name"),
                    {"type": "integer" if match.group("conv") == "int" else "string"},
                ),
            }
            for match in _CONVERTER.finditer(rule.rule)
        ]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            doc = (view.__doc__ or "").strip()
            operation: dict[str, Any] = {
                "operationId": f"{rule.endpoint}.{method.lower()}",
                "summary": doc.splitlines()[0] if doc else rule.endpoint,
                "tags": [rule.endpoint.split(".")[0]],
                "responses": {
                    "default": {
                        "description": "error (see components.responses)",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    }
                },
            }
            if doc:
                operation["description"] = doc
            if parameters:
                operation["parameters"] = parameters
            request_schema = getattr(view, "request_schema", None)
            if request_schema is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _object_schema(request_schema, direction="load")
                        }
                    },
                }
            response_schema = getattr(view, "response_schema", None)
            status = str(getattr(view, "response_status", 200))
            ok: dict[str, Any] = {"description": "success"}
            if response_schema is not None:
                ok["content"] = {"application/json": {"schema": _object_schema(response_schema)}}
            operation["responses"][status] = ok
            if getattr(view, "requires_auth", False):
                operation["security"] = [{"bearer": []}]
                roles = getattr(view, "allowed_roles", ())
                if roles:
                    operation["x-roles"] = list(roles)
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Village Sync county server",
            "version": "1",
            "description": "Admin, enrollment and sync API. Every error has the body "
            '{"error": {"code", "message": {"zh", "en"}, "details"}}; the codes, their '
            "statuses and default messages are listed in components.schemas.Error"
            " (x-error-codes).",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {"Error": _error_component()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@blueprint.get("/openapi.json")
def openapi_document() -> Any:
    """This API's OpenAPI 3.1 description."""
    return build_document()
