"""The Village Sync county server (Flask): ``create_app()`` builds it, ``server.cli`` runs it."""

from server.app import create_app

__all__ = ["create_app"]
