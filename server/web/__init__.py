"""The county's admin web pages: server-rendered, Chinese first, usable on a 360 px phone.

One blueprint (``web``) beside the API, calling the same services (no second copy of any rule).
Signing in trades user name and password for the same kind of token the API issues
(``services.auth.login``); the token lives in Flask's signed session cookie (HttpOnly,
SameSite=Lax, Secure when the request came over https), so logging out, disabling an account or
an expired token end the web session exactly as they end API access. Every form carries a CSRF
token (Flask-WTF), checked for every state-changing request of this blueprint only: the API
authenticates by bearer header and needs none. Every asset is served by the county server.
"""

from __future__ import annotations

import importlib

from flask import Flask

from server.web.base import blueprint, init_security

#: The page modules; each adds its routes to :data:`server.web.base.blueprint`.
PAGE_MODULES: tuple[str, ...] = (
    "server.web.account",
    "server.web.dashboard",
    "server.web.board",
    "server.web.households",
    "server.web.devices",
    "server.web.conflicts",
    "server.web.tasks",
    "server.web.forms",
    "server.web.admin",
    "server.web.areas",
    "server.web.export_jobs",
    "server.web.department_lists",
)


def init_app(app: Flask) -> None:
    """Register the web pages, the session cookie settings, CSRF and the HTML error pages."""
    for name in PAGE_MODULES:
        importlib.import_module(name)
    init_security(app)
    app.register_blueprint(blueprint)
