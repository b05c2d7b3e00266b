"""The one place errors become HTTP answers, and the request's failed work is rolled back.

Every exception that escapes a view — a catalogue error (:mod:`server.errors`), Flask's own
404/405/500, an oversized body, a busy or full database — is answered with the one JSON body by
the handlers :func:`register_error_handlers` installs (the admin pages render the same error as
a page, :mod:`server.web.base`). Before answering, the request's open transaction is rolled back
here (:func:`discard_failed_work`): views never control transactions.

Refused requests are audited in one place, here: :func:`note_refusal` marks the request
(the ``ApiError`` handler does it for every 401/403/404/409/429 under ``/api/v1`` and every 4xx
of ``/api/v1/sync``; the sync view for its sealed refusals and rejected frames), and an
``after_request`` hook writes the entries (``sync.refused`` or ``api.refused``: the code, status,
method and path, never the body) in their own transaction after the request's rollback.
Identical refusals from one address within :data:`REFUSAL_AUDIT_WINDOW_SECONDS` are one entry
with a count. Auditing never changes the answer: a busy database only loses the entry (logged).
"""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, g, jsonify, request
from sqlalchemy.exc import IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException

from server.errors import (
    ERROR_CLASSES,
    ApiError,
    Conflict,
    InternalError,
    ServiceBusy,
    ValidationFailed,
    is_busy_fault,
    is_storage_full,
    storage_full,
)
from server.storage import audit
from server.storage.database import rollback, writing

log = logging.getLogger(__name__)

_BY_STATUS: dict[int, type[ApiError]] = {cls.status: cls for cls in ERROR_CLASSES}


def discard_failed_work() -> None:
    """Roll back whatever the failed request left in its session, before its error is answered
    (an error page may read again: a session left in a failed state would refuse)."""
    rollback()


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
    if cls is ValidationFailed:
        return ValidationFailed(en=exc.description or None)
    return cls()


#: Statuses of refusals the audit log records for every ``/api/v1`` endpoint; any 4xx of a sync
#: exchange (a tampered, truncated or replayed envelope) is recorded too.
AUDITED_STATUSES = frozenset({401, 403, 404, 409, 429})
SYNC_PATH = "/api/v1/sync"
#: Identical refusals (action, code, address, actor) within this many seconds share one entry.
REFUSAL_AUDIT_WINDOW_SECONDS = 60


def note_refusal(code: str, status: int, *, actor: str = "", area_code: str = "") -> None:
    """Mark the current request as refused with ``code``; audited once the answer is built.

    ``actor`` defaults to the authenticated principal, else ``ip:<address>``.
    """
    if not request.path.startswith("/api/v1/"):
        return
    refusals = g.setdefault("refusals", [])
    refusals.append((code, status, actor, area_code))


def _audits_refusal(exc: ApiError) -> bool:
    if exc.audited:
        return False
    if request.path == SYNC_PATH:
        return 400 <= exc.status < 500
    return exc.status in AUDITED_STATUSES


def _audit_refusals() -> None:
    """Write the refusals :func:`note_refusal` marked, each in one short transaction."""
    refusals = g.pop("refusals", None)
    if not refusals:
        return
    ip = request.remote_addr or ""
    principal = g.get("principal")
    action = "sync.refused" if request.path == SYNC_PATH else "api.refused"
    details = {"method": request.method, "path": request.path[:200]}
    for code, status, actor, area_code in refusals:
        who = actor or (principal.actor if principal is not None else f"ip:{ip}")
        area = area_code or (principal.area_prefix if principal is not None else "")
        try:
            with writing():
                audit.add_refusal(
                    actor=who[:120],
                    action=action,
                    code=code,
                    ip=ip,
                    area_code=area,
                    details={**details, "status": status},
                    window_seconds=REFUSAL_AUDIT_WINDOW_SECONDS,
                )
        except Exception as exc:  # the refusal stands whatever happens to its audit entry
            rollback()
            log.warning("refused request %s %s not audited: %s", code, request.path, exc)
            return


def register_error_handlers(app: Flask) -> None:
    """Map every exception that can escape a view to the one JSON error body."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        discard_failed_work()
        if _audits_refusal(exc):
            note_refusal(exc.code, exc.status)
        return error_response(exc)

    @app.after_request
    def _audited(response: Response) -> Response:
        try:
            _audit_refusals()
        except Exception:  # never turn a refusal (or any answer) into a 500
            log.exception("auditing refused requests failed")
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        discard_failed_work()
        return error_response(from_http_exception(exc))

    @app.errorhandler(OperationalError)
    def _operational(exc: OperationalError) -> Response:
        discard_failed_work()
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
        discard_failed_work()
        return error_response(Conflict(en="The data changed meanwhile", zh="数据已被修改"))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        discard_failed_work()
        if is_storage_full(exc):
            return error_response(storage_full(exc))
        log.exception("unhandled error")
        return error_response(InternalError())
