"""The server's one error model: named exceptions with stable codes, one JSON body.

Every error leaves the server as::

    {"error": {"code": "enrollment_code_expired", "message": "…", "details": {…}}}

``code`` is stable (clients branch on it); ``message`` is for people, in Chinese and English
(``"中文 / English"``); ``details`` carries machine-readable context (per-field messages for
validation, located issues for a form definition). Services and storage raise these classes; the
handlers registered by :func:`register_error_handlers` are the one place that turns them — and
Flask's own 404/405/500, oversized bodies and a busy database — into HTTP responses.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from flask import Flask, Response, current_app, jsonify
from sqlalchemy.exc import IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Base class: an error with an HTTP status, a stable code and a bilingual message.

    Subclasses fix ``status`` and a default ``code``/message; an instance may narrow the code
    (e.g. ``Gone(code="enrollment_code_expired", ...)``) and add ``details``.
    """

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"
    default_zh: ClassVar[str] = "服务器内部错误"
    default_en: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        en: str | None = None,
        zh: str | None = None,
        *,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.code = code or self.default_code
        self.message_en = en or self.default_en
        self.message_zh = zh or self.default_zh
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(f"{self.code}: {self.message_en}")

    @property
    def message(self) -> str:
        """The human message, Chinese first then English."""
        return f"{self.message_zh} / {self.message_en}"

    def headers(self) -> dict[str, str]:
        """Extra response headers (``Retry-After`` for 429/503)."""
        return {}

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ValidationFailed(ApiError):
    """400: the request body or query is malformed; ``details.fields`` maps field → messages."""

    status = 400
    default_code = "validation_failed"
    default_zh = "请求内容不合法"
    default_en = "The request is not valid"


class Unauthorized(ApiError):
    """401: missing, wrong, expired or revoked credentials (token, password, enrollment code)."""

    status = 401
    default_code = "unauthorized"
    default_zh = "需要登录或凭据无效"
    default_en = "Authentication required or credentials invalid"

    def headers(self) -> dict[str, str]:
        # RFC 6750: a 401 names the scheme the client should use.
        return {"WWW-Authenticate": 'Bearer realm="village-sync"'}


class Forbidden(ApiError):
    """403: authenticated, but the role may not do this (e.g. a reviewer publishing a form)."""

    status = 403
    default_code = "forbidden"
    default_zh = "无权执行此操作"
    default_en = "You are not allowed to do this"


class NotFound(ApiError):
    """404: no such resource within the caller's area (out-of-area ids look absent too)."""

    status = 404
    default_code = "not_found"
    default_zh = "未找到"
    default_en = "Not found"


class MethodNotAllowed(ApiError):
    """405: the route exists but not for this HTTP method."""

    status = 405
    default_code = "method_not_allowed"
    default_zh = "不支持该请求方法"
    default_en = "Method not allowed"


class Conflict(ApiError):
    """409: the request clashes with the current state (code already used, duplicate version)."""

    status = 409
    default_code = "conflict"
    default_zh = "与现有数据冲突"
    default_en = "Conflicts with the current state"


class Gone(ApiError):
    """410: the thing existed but has expired (e.g. an enrollment code past its expiry)."""

    status = 410
    default_code = "gone"
    default_zh = "已过期"
    default_en = "Expired or no longer available"


class PayloadTooLarge(ApiError):
    """413: the request body exceeds ``MAX_REQUEST_BYTES``."""

    status = 413
    default_code = "payload_too_large"
    default_zh = "请求内容过大"
    default_en = "Request body too large"


class Unprocessable(ApiError):
    """422: well-formed but semantically invalid (e.g. a form definition with located issues)."""

    status = 422
    default_code = "unprocessable"
    default_zh = "内容无法处理"
    default_en = "The content cannot be processed"


class RateLimited(ApiError):
    """429: too many attempts; ``Retry-After`` says when to try again (seconds)."""

    status = 429
    default_code = "rate_limited"
    default_zh = "尝试次数过多，请稍后再试"
    default_en = "Too many attempts, try again later"

    def __init__(self, retry_after: int, en: str | None = None, zh: str | None = None, **kw: Any):
        self.retry_after = max(1, int(retry_after))
        details = {"retry_after": self.retry_after, **dict(kw.pop("details", None) or {})}
        super().__init__(en, zh, details=details, **kw)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ServiceBusy(ApiError):
    """503: the database is busy (SQLite lock timeout, PostgreSQL serialization); retry later."""

    status = 503
    default_code = "database_busy"
    default_zh = "服务器繁忙，请稍后重试"
    default_en = "The server is busy, retry shortly"

    def __init__(self, retry_after: int, en: str | None = None, zh: str | None = None, **kw: Any):
        self.retry_after = max(1, int(retry_after))
        details = {"retry_after": self.retry_after, **dict(kw.pop("details", None) or {})}
        super().__init__(en, zh, details=details, **kw)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class StorageFull(ApiError):
    """507: the server's disk (or database) is full; nothing was stored, retry later."""

    status = 507
    default_code = "storage_full"
    default_zh = "服务器存储空间已满，数据未保存，请稍后重试"
    default_en = "The server's storage is full; nothing was stored, retry later"

    def __init__(self, retry_after: int, en: str | None = None, zh: str | None = None, **kw: Any):
        self.retry_after = max(1, int(retry_after))
        details = {"retry_after": self.retry_after, **dict(kw.pop("details", None) or {})}
        super().__init__(en, zh, details=details, **kw)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class InternalError(ApiError):
    """500: an unexpected fault; the details are logged, never sent."""


#: Every error class a client can meet, for the shape test and the OpenAPI document.
ERROR_CLASSES: tuple[type[ApiError], ...] = (
    ValidationFailed,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    Gone,
    PayloadTooLarge,
    Unprocessable,
    RateLimited,
    ServiceBusy,
    StorageFull,
    InternalError,
)

_BY_STATUS: dict[int, type[ApiError]] = {cls.status: cls for cls in ERROR_CLASSES}

_BUSY_MARKERS = (
    "database is locked",
    "database table is locked",
    "could not serialize access",
    "deadlock detected",
    "lock timeout",
)


#: How long a client waits after a full disk before trying again (an operator must act).
STORAGE_FULL_RETRY_AFTER_SECONDS = 300
#: A full disk is logged once per this many seconds per process, not once per request.
STORAGE_FULL_LOG_EVERY_SECONDS = 600
_DISK_FULL_MARKERS = (
    "database or disk is full",  # SQLite SQLITE_FULL
    "no space left on device",
    "could not extend file",  # PostgreSQL disk_full (53100)
    "disk full",
)
_storage_full_logged_at: float | None = None


def is_storage_full(exc: BaseException) -> bool:
    """True when ``exc`` means the disk or database is full (ENOSPC, EDQUOT, SQLITE_FULL …)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    original = getattr(exc, "orig", None)
    if isinstance(original, OSError) and original.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if getattr(original, "pgcode", None) == "53100":
        return True
    if original is None and not isinstance(exc, OSError):
        return False  # only a database driver's or the OS's own words count
    text = str(original if original is not None else exc).lower()
    return any(marker in text for marker in _DISK_FULL_MARKERS)


def storage_full(exc: BaseException) -> StorageFull:
    """The 507 answer to a full disk, logged (one line, no traceback) at most once a while."""
    global _storage_full_logged_at
    now = time.monotonic()
    if _storage_full_logged_at is None or now - _storage_full_logged_at > (
        STORAGE_FULL_LOG_EVERY_SECONDS
    ):
        _storage_full_logged_at = now
        log.error("storage full, requests answered 507 until space is freed: %s", exc)
    return StorageFull(retry_after=STORAGE_FULL_RETRY_AFTER_SECONDS)


def is_busy_fault(exc: BaseException) -> bool:
    """True when a database error means "busy, try again" rather than a bug.

    A connection the database closed under the request (PostgreSQL restarted, the backend
    terminated) counts too: SQLAlchemy invalidates it and the next checkout gets a fresh one.
    """
    if getattr(exc, "connection_invalidated", False):
        return True
    text = str(getattr(exc, "orig", exc)).lower()
    return any(marker in text for marker in _BUSY_MARKERS)


def error_response(error: ApiError) -> Response:
    """The Flask response for ``error``: the JSON body, its status and extra headers."""
    response = jsonify(error.body())
    response.status_code = error.status
    for name, value in error.headers().items():
        response.headers[name] = value
    return response


def from_http_exception(exc: HTTPException) -> ApiError:
    """Translate a werkzeug/Flask HTTP exception (404 route, 405, 413 …) to our error class."""
    cls = _BY_STATUS.get(exc.code or 500, InternalError)
    if cls in (RateLimited, ServiceBusy):
        return cls(retry_after=1)
    if cls is InternalError:
        return InternalError()
    if cls is ValidationFailed:
        return ValidationFailed(en=exc.description or None)
    return cls()


def register_error_handlers(app: Flask) -> None:
    """Map every exception that can escape a view to the one JSON error body."""

    def _rollback() -> None:
        from server.storage.database import rollback

        rollback()

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        _rollback()
        return error_response(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        _rollback()
        return error_response(from_http_exception(exc))

    @app.errorhandler(OperationalError)
    def _operational(exc: OperationalError) -> Response:
        _rollback()
        if is_busy_fault(exc):
            retry = current_app.config.get("BUSY_RETRY_AFTER_SECONDS", 2)
            return error_response(ServiceBusy(retry_after=retry))
        if is_storage_full(exc):
            return error_response(storage_full(exc))
        log.exception("database fault")
        return error_response(InternalError())

    @app.errorhandler(IntegrityError)
    def _integrity(exc: IntegrityError) -> Response:
        # A uniqueness race the service did not pre-check (two admins creating one version).
        _rollback()
        return error_response(Conflict(en="The data changed meanwhile", zh="数据已被修改"))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        _rollback()
        if is_storage_full(exc):
            return error_response(storage_full(exc))
        log.exception("unhandled error")
        return error_response(InternalError())
