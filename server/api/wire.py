"""What crosses the wire: request bodies loaded through marshmallow, responses dumped by it.

:func:`accepts` both parses the body and records the schema on the view, which is how the
OpenAPI document learns each route's request shape.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, request
from marshmallow import Schema, ValidationError
from werkzeug.routing import IntegerConverter

from server.errors import ValidationFailed
from server.services.context import EXTENSION_KEY, ServiceContext

F = TypeVar("F", bound=Callable[..., Any])

#: The largest integer a query parameter or path argument may carry: ids, versions, offsets and
#: cursors are far below it, and larger values overflow the database's integer parameters.
MAX_INT = 2**31 - 1


class BoundedIntConverter(IntegerConverter):
    """The ``<int:…>`` URL converter, refusing values above :data:`MAX_INT` (the route does not
    match: 404) so a huge path id never reaches the database."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_INT)
        super().__init__(*args, **kwargs)


def service_context() -> ServiceContext:
    """The running app's service context, built once by the app factory (``server.app``)."""
    context: ServiceContext = current_app.extensions[EXTENSION_KEY]
    return context


def load_body(schema: Schema, *, optional: bool = False) -> dict[str, Any]:
    """Load the JSON request body through ``schema`` (an empty body as ``{}`` if ``optional``).

    Raises :class:`ValidationFailed` when the body is not a JSON object (``details.fields``
    names ``_body``) or fails the schema (``details.fields`` maps field → messages).
    """
    if optional and not request.get_data(cache=True):
        return load_data(schema, {})
    data = json_body()
    if not isinstance(data, dict):
        raise ValidationFailed(
            en="the request body must be a JSON object",
            zh="请求内容应为 JSON 对象",
            details={"fields": {"_body": ["expected a JSON object"]}},
        )
    return load_data(schema, data)


def too_deep(field: str = "_body") -> ValidationFailed:
    """The error for JSON nested deeper than the parser (or a walk over it) can follow."""
    return ValidationFailed(
        en="the JSON is nested too deeply",
        zh="JSON 嵌套层级过深",
        details={"fields": {field: ["nested too deeply"]}},
    )


def json_body() -> Any:
    """The request body parsed as JSON, or None when it is not JSON.

    Raises :class:`ValidationFailed` when it is nested too deeply to parse (Python's parser
    raises ``RecursionError``, which would otherwise be a 500).
    """
    try:
        return request.get_json(silent=True)
    except RecursionError:
        raise too_deep() from None


#: Text the server cannot store: NUL (PostgreSQL refuses it in text and JSON columns) and lone
#: UTF-16 surrogates (``"\\ud800"`` in JSON parses to a str that cannot be encoded as UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _printable(text: str) -> str:
    """``text`` with lone surrogates escaped (``\\ud800``), safe to echo in an error body."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _bad_text(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    return "must not contain a NUL character" if found.group() == "\x00" else "lone surrogate"


def _nul_path(value: Any, path: str) -> tuple[str, str] | None:
    """The path of the first unstorable text in ``value`` (keys and nested values) and why."""
    if isinstance(value, str):
        reason = _bad_text(value)
        return None if reason is None else (path, reason)
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{_printable(str(key))}" if path else _printable(str(key))
            reason = _bad_text(str(key))
            if reason is not None:
                return where, reason
            found = _nul_path(item, where)
            if found is not None:
                return found
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _nul_path(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def reject_nul(value: Any, path: str = "") -> None:
    """Raise :class:`ValidationFailed` naming the field when ``value`` holds a NUL character or
    a lone surrogate (keys included).

    No text the server stores or looks up may contain U+0000: PostgreSQL refuses it in text and
    JSON columns, so it would otherwise surface as a 500 deep inside a query. A lone surrogate
    cannot be encoded as UTF-8 at all (not even into the error body that echoes it).
    """
    try:
        found = _nul_path(value, path)
    except RecursionError:
        raise too_deep(path or "_body") from None
    if found is not None:
        where, reason = found
        if reason == "lone surrogate":
            raise ValidationFailed(
                en=f"{where or 'the value'} contains a lone UTF-16 surrogate",
                zh="内容含有无效的 Unicode 字符（孤立代理项）",
                details={"fields": {where or "_body": ["must not contain a lone surrogate"]}},
            )
        raise ValidationFailed(
            en=f"{where or 'the value'} contains a NUL character",
            zh="内容含有 NUL 字符",
            details={"fields": {where or "_body": [reason]}},
        )


def reject_nul_in_path() -> None:
    """Refuse a request whose URL path arguments hold a NUL character (a ``before_request``)."""
    if request.view_args:
        reject_nul(dict(request.view_args))


def load_data(schema: Schema, data: Any) -> dict[str, Any]:
    """Load ``data`` through ``schema``; raises :class:`ValidationFailed` with field messages
    (including a NUL character anywhere in ``data``)."""
    reject_nul(data)
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise ValidationFailed(details={"fields": exc.messages_dict}) from None
    except RecursionError:
        raise too_deep() from None


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
