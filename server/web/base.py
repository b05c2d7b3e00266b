"""What every page shares: the blueprint, sign-in guard, CSRF, session cookie, error pages."""

from __future__ import annotations

import functools
import logging
import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from server.api import API_PREFIX
from server.errors import (
    ApiError,
    Forbidden,
    InternalError,
    NotFound,
    ServiceBusy,
    Unauthorized,
    is_busy_fault,
)
from server.http_errors import discard_failed_work, error_response, from_http_exception
from server.services import areas, auth
from server.services.access import COUNTY_ADMIN, Actor, Principal
from server.services.indicators import CHINA_TIME
from server.settings import resolve_key_dir
from sync_protocol.clock import Stamp
from sync_protocol.errors import ProtocolError

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

blueprint = Blueprint(
    "web",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/web",
)
csrf = CSRFProtect()

#: The file (in the key folder) holding the random key that signs session cookies.
SESSION_KEY_FILE = "web-session.key"
#: Session key of the API-style token a signed-in browser holds.
TOKEN_KEY = "token"

#: The pages load styles from this server only, images from it or inline (the QR code's data
#: URI), and no script: a page cannot be made to fetch from the internet or run injected code.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'none'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

ROLE_NAMES = {COUNTY_ADMIN: "县级管理员", "township_reviewer": "乡镇审核员"}


class _HttpsAwareSessionInterface(SecureCookieSessionInterface):
    """Session cookies are ``Secure`` whenever the browser reached us over https.

    Behind a reverse proxy that terminates TLS, ``request.is_secure`` follows
    ``X-Forwarded-Proto`` once ``TRUSTED_PROXIES`` is set; on plain http on a county LAN the
    cookie must still be sent, so a fixed ``Secure`` flag would lock everyone out.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config.get("SESSION_COOKIE_SECURE")) or request.is_secure


def _session_secret(app: Flask) -> str:
    configured = app.config.get("SESSION_SECRET") or ""
    if configured:
        return str(configured)
    folder = resolve_key_dir(app.config)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = Path(folder) / SESSION_KEY_FILE
    if not path.exists():
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            pass  # another worker process wrote it first
        else:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_urlsafe(48))
    return path.read_text(encoding="ascii").strip()


def init_security(app: Flask) -> None:
    """Session cookie, CSRF and the HTML pages for unknown addresses outside the API."""
    app.secret_key = _session_secret(app)
    app.session_interface = _HttpsAwareSessionInterface()
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_NAME"] = "village_sync_session"
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=int(app.config["TOKEN_TTL_HOURS"]))
    # Checked only by this blueprint (below); the API authenticates by bearer header.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    # The token is bound to the session; a form left open over lunch must still submit.
    app.config["WTF_CSRF_TIME_LIMIT"] = None
    csrf.init_app(app)

    def _unknown_address(exc: HTTPException) -> Response | tuple[str, int]:
        # Routing errors belong to no blueprint: API paths keep the JSON body, pages get HTML.
        if request.path.startswith(API_PREFIX):
            discard_failed_work()
            return error_response(from_http_exception(exc))
        return _error_page(from_http_exception(exc))

    app.register_error_handler(404, _unknown_address)
    app.register_error_handler(405, _unknown_address)


@blueprint.before_request
def _check_csrf() -> None:
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        csrf.protect()


@blueprint.after_request
def _no_store(response: Response) -> Response:
    # Pages show personal data: never keep them in a shared browser's cache.
    if not request.path.startswith(blueprint.static_url_path or "/static/web"):
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        # Everything comes from the county server itself; no script runs at all.
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    return response


def zh_message(exc: ApiError) -> str:
    """The Chinese message of a catalogue error (pages are Chinese first)."""
    return exc.message_zh


def field_messages(exc: ApiError) -> dict[str, list[str]]:
    """Per-field messages of a validation error (``details.fields``), as lists of text."""
    fields = exc.details.get("fields") if isinstance(exc.details, dict) else None
    if not isinstance(fields, dict):
        return {}
    out: dict[str, list[str]] = {}
    for name, messages in fields.items():
        if isinstance(messages, list):
            out[str(name)] = [str(m) for m in messages]
        elif isinstance(messages, dict):
            out[str(name)] = [f"{k}: {v}" for k, v in messages.items()]
        else:
            out[str(name)] = [str(messages)]
    return out


def _error_page(exc: ApiError) -> tuple[str, int]:
    discard_failed_work()
    status = exc.status
    # An id of another area looks absent, exactly like an unknown one.
    if isinstance(exc, Forbidden) and exc.code == "outside_area":
        status = 404
        exc = NotFound()
    return render_template("error.html", error=exc, message=zh_message(exc), status=status), status


@blueprint.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Any:
    if isinstance(exc, Unauthorized) and request.method == "GET":
        session.pop(TOKEN_KEY, None)
        return redirect(url_for("web.login", next=_local_path(request.full_path)))
    return _error_page(exc)


@blueprint.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError) -> Any:
    refused = ApiError(
        en="the form expired or did not come from this site; reload the page and try again",
        zh="表单已过期或来源不明，请刷新页面后重试",
        code="csrf_failed",
    )
    refused.status = 400  # type: ignore[misc]
    return _error_page(refused)


@blueprint.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Any:
    return _error_page(from_http_exception(exc))


@blueprint.errorhandler(OperationalError)
def _database_error(exc: OperationalError) -> Any:
    if is_busy_fault(exc):
        return _error_page(ServiceBusy(retry_after=current_app.config["BUSY_RETRY_AFTER_SECONDS"]))
    log.exception("database fault on a web page")
    return _error_page(InternalError())


@blueprint.errorhandler(Exception)
def _unexpected(exc: Exception) -> Any:
    log.exception("unhandled error on a web page")
    return _error_page(InternalError())


def _local_path(target: str | None) -> str:
    """``target`` if it is a path on this site, else the dashboard (no open redirects)."""
    if not target:
        return url_for("web.dashboard")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("web.dashboard")
    return target.rstrip("?") or "/"


def signed_in(*roles: str) -> Callable[[F], F]:
    """Decorate a page: require a signed-in, active account (and one of ``roles`` if given).

    The view receives ``principal=``. A missing, expired or revoked session sends the browser
    to the sign-in page (GET) or refuses the request (POST); a role outside ``roles`` gets 403.
    """

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = session.get(TOKEN_KEY)
            if not token:
                if request.method == "GET":
                    return redirect(url_for("web.login", next=_local_path(request.full_path)))
                raise Unauthorized(zh="登录已失效，请重新登录", en="sign in again")
            principal = auth.authenticate(str(token))  # ends its read, as for the API
            if roles:
                principal.require(*roles)
            g.principal = principal
            kwargs["principal"] = principal
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def actor_of(principal: Principal) -> Actor:
    """The audit actor of the signed-in admin."""
    return Actor.of(principal, request.remote_addr or "")


def area_label(code: str | None) -> str:
    """``name（code）`` for a named township or village, else the bare code.

    The names of the signed-in admin's area are read once per request, on first use."""
    if not code:
        return ""
    names = g.get("area_names")
    if names is None:
        principal = g.get("principal")
        names = areas.names_under(principal.area_prefix) if principal is not None else {}
        g.area_names = names
    return areas.label(names, str(code))


@blueprint.app_context_processor
def _page_globals() -> dict[str, Any]:
    return {"role_names": ROLE_NAMES, "COUNTY_ADMIN": COUNTY_ADMIN, "area_label": area_label}


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@blueprint.app_template_filter("when")
def when(moment: datetime | None) -> str:
    """A stored time in Beijing time, to the minute (what county staff read)."""
    if moment is None:
        return ""
    return _aware(moment).astimezone(CHINA_TIME).strftime("%Y-%m-%d %H:%M")


@blueprint.app_template_filter("days_since")
def days_since(moment: datetime) -> int:
    """Whole days from ``moment`` until now."""
    return (datetime.now(UTC) - _aware(moment)).days


@blueprint.app_template_filter("stamp_time")
def stamp_time(text: str) -> str:
    """When a clock stamp says a value was written, in Beijing time (the stamp if unreadable)."""
    try:
        moment = datetime.fromtimestamp(Stamp.parse(text).ms / 1000, UTC)
    except (ProtocolError, ValueError, OverflowError, OSError):
        return str(text)
    return when(moment)
