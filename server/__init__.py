"""The Village Sync county server (Flask): ``create_app()`` builds it, ``server.cli`` runs it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["create_app"]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """``server.app.create_app`` with the command line added under ``flask --app server …``.

    The commands are added here, not in ``server.app``: the command line builds apps itself, and
    the factory importing it back would tie the two modules into a cycle.
    """
    from server.app import create_app as build_app
    from server.cli import register_commands

    app = build_app(config)
    register_commands(app)
    return app
