"""A county server from before the tasks stream (issue 17), for the devices' fallback tests.

The fault is injected into a real server on loopback: its task service knows no ``tasks``
cursor, so a hello that names it is refused with ``scope_denied`` as an older server refuses
it. The CLI device and the browser field app must then sync on without the stream.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from server import create_app
from server.services import auth
from server.services import forms as form_service
from server.services import sync as sync_service
from server.services import tasks as task_service
from server.storage.database import db
from village_client_stub.simulator import AdminSession
from village_client_stub.transport import HttpTransport

ADMIN_PASSWORD = "county-admin-pass"


class _TaskServiceWithoutStream:
    """The real task service under another stream name: no hello's ``tasks`` cursor matches."""

    TASKS_STREAM = "no-such-stream"

    def __getattr__(self, name: str) -> Any:
        return getattr(task_service, name)


@contextmanager
def server_before_tasks_stream(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, AdminSession]]:
    """Serve such a server on 127.0.0.1 (built-in forms published, an admin signed in);
    yields its URL and the admin's session, and stops it afterwards."""
    monkeypatch.setattr(sync_service, "task_service", _TaskServiceWithoutStream())
    app = create_app(
        {"DATABASE_URL": f"sqlite:///{folder / 'c.db'}", "KEY_DIR": str(folder / "keys")}
    )
    with app.app_context():
        form_service.publish_builtins()
        auth.create_user(
            username="admin",
            password=ADMIN_PASSWORD,
            role="county_admin",
            area_prefix="",
            actor="test",
        )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield url, AdminSession(HttpTransport(url), "admin", ADMIN_PASSWORD)
    finally:
        server.shutdown()
        with app.app_context():
            db.engine.dispose()
