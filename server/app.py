"""The application factory."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix

from server.api import register_blueprints
from server.api.wire import BoundedIntConverter, reject_nul_in_path
from server.errors import PayloadTooLarge
from server.field import init_app as init_field
from server.http_errors import register_error_handlers
from server.services.context import EXTENSION_KEY, ServiceContext
from server.settings import load_settings
from server.storage import schema
from server.storage.database import engine, init_database
from server.web import init_app as init_web

log = logging.getLogger(__name__)

#: The Content-Security-Policy of the admin origin (views may send a stricter one).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build a county-server app.

    ``config`` overrides settings (upper-case keys, see ``server.settings``) and may carry Flask
    keys such as ``TESTING``. With ``MIGRATE_ON_START`` (the default) pending schema migrations
    run here, so a fresh database is usable at once.

    Raises ``server.settings.SettingError`` for a malformed setting and
    ``sqlalchemy.exc.OperationalError`` when the database cannot be reached for migration.
    """
    app = Flask("server")
    app.config.update(load_settings(config))
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_REQUEST_BYTES"]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # Chinese stays readable
    app.json.sort_keys = False  # type: ignore[attr-defined]

    proxies = int(app.config["TRUSTED_PROXIES"])
    if proxies > 0:
        # Behind nginx every request would otherwise come from 127.0.0.1 and share one limit.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies
        )

    # The one context every service call gets: settings, clock, key ring (views pass it on).
    app.extensions[EXTENSION_KEY] = ServiceContext.of(app.config)
    init_database(app)
    register_error_handlers(app)
    app.url_map.converters["int"] = BoundedIntConverter  # before the routes are added
    register_blueprints(app)
    init_web(app)  # the admin web pages beside the API
    init_field(app)  # the field app (PWA) at /field/

    @app.before_request
    def _refuse_oversized_bodies() -> None:
        # Checked up front: a JSON parser called with silent=True would otherwise hide the 413.
        length = request.content_length
        if length is not None and length > app.config["MAX_REQUEST_BYTES"]:
            raise PayloadTooLarge(details={"max_bytes": app.config["MAX_REQUEST_BYTES"]})

    # A NUL in a path argument would reach PostgreSQL, which refuses it in text (a 500).
    app.before_request(reject_nul_in_path)

    @app.after_request
    def _security_headers(response: Any) -> Any:
        # Every response of the admin origin: browsers never guess a type, and a page may load
        # only this origin's own scripts, styles and images (a view may set a stricter policy).
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response

    if app.config["MIGRATE_ON_START"]:
        with app.app_context():
            schema.upgrade(engine())
    return app
