"""The HTTP API under ``/api/v1``: one blueprint module per resource.

To add a resource, write ``server/api/<resource>.py`` with a ``blueprint`` whose ``url_prefix``
starts with :data:`API_PREFIX`, and list the module in :data:`BLUEPRINT_MODULES`. The OpenAPI
document is built from the registered routes, so it lists new ones automatically.
"""

from __future__ import annotations

import importlib

from flask import Flask

API_PREFIX = "/api/v1"

BLUEPRINT_MODULES: tuple[str, ...] = (
    "server.api.auth",
    "server.api.users",
    "server.api.forms",
    "server.api.enrollment",
    "server.api.devices",
    "server.api.monitoring",
    "server.api.audit",
    "server.api.indicators",
    "server.api.round_alerts",
    "server.api.board",
    "server.api.exports",
    "server.api.uploads",
    "server.api.sync",
    "server.api.conflicts",
    "server.api.records",
    "server.api.department_lists",
    "server.api.tasks",
    "server.api.openapi",
)


def register_blueprints(app: Flask) -> None:
    """Register every blueprint listed in :data:`BLUEPRINT_MODULES` on ``app``."""
    for name in BLUEPRINT_MODULES:
        app.register_blueprint(importlib.import_module(name).blueprint)
