"""What crosses the wire: request bodies loaded through marshmallow, responses dumped by it.

:func:`accepts` both parses the body and records the schema on the view, which is how the
OpenAPI document learns each route's request shape.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import request
from marshmallow import Schema, ValidationError

from server.errors import ValidationFailed

F = TypeVar("F", bound=Callable[..., Any])


def load_body(schema: Schema, *, optional: bool = False) -> dict[str, Any]:
    """Load the JSON request body through ``schema`` (an empty body as ``{}`` if ``optional``).

    Raises :class:`ValidationFailed` when the body is not a JSON object (``details.fields``
    names ``_body``) or fails the schema (``details.fields`` maps field → messages).
    """
    if optional and not request.get_data(cache=True):
        return load_data(schema, {})
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ValidationFailed(
            en="the request body must be a JSON object",
            zh="请求内容应为 JSON 对象",
            details={"fields": {"_body": ["expected a JSON object"]}},
        )
    return load_data(schema, data)


def load_data(schema: Schema, data: Any) -> dict[str, Any]:
    """Load ``data`` through ``schema``; raises :class:`ValidationFailed` with field messages."""
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise ValidationFailed(details={"fields": exc.messages_dict}) from None


def load_query(schema: Schema) -> dict[str, Any]:
    """Load the query string through ``schema``; raises :class:`ValidationFailed`."""
    return load_data(schema, request.args.to_dict())


def accepts(schema: Schema, *, optional: bool = False) -> Callable[[F], F]:
    """Decorate a view: load the JSON body through ``schema`` and pass it as ``body=``.

    With ``optional`` an empty body counts as ``{}`` (all fields take their defaults).
    """

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs["body"] = load_body(schema, optional=optional)
            return view(*args, **kwargs)

        wrapper.request_schema = schema  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def returns(schema: Schema, status: int = 200) -> Callable[[F], F]:
    """Record the response schema of a view for the OpenAPI document."""

    def decorate(view: F) -> F:
        view.response_schema = schema  # type: ignore[attr-defined]
        view.response_status = status  # type: ignore[attr-defined]
        return view

    return decorate
