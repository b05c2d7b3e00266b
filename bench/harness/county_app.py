"""An in-process county server app on a fresh SQLite file, for the benches that time one job.

``bench department`` and ``bench round_alerts`` run a service (an import, a round-over-round
run) directly, without HTTP: the app is the real one (``create_app``, migrations, scheduler off),
the built-in instruments published and the monitoring line of 5301 for 2026 set with the
thresholds the bench needs. The folder and the database go when the block ends.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask

#: The region and year every generated county of the benches lies in (forms.instruments.samples).
REGION, YEAR, LINE_YUAN = "5301", 2026, 8700


@contextmanager
def in_process_county(prefix: str, thresholds: dict[str, Any]) -> Iterator[Flask]:
    """The app on ``<temp folder>/county.db``, ready for households; disposed afterwards."""
    from server import create_app
    from server.services import forms as form_service
    from server.services import monitoring
    from server.services.access import CLI_ACTOR
    from server.storage.database import db

    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        app = create_app(
            {
                "DATABASE_URL": f"sqlite:///{Path(folder) / 'county.db'}",
                "KEY_DIR": str(Path(folder) / "keys"),
                "SCHEDULER_ENABLED": False,
            }
        )
        with app.app_context():
            form_service.publish_builtins()
            monitoring.set_line(REGION, YEAR, LINE_YUAN, thresholds, actor=CLI_ACTOR)
        try:
            yield app
        finally:
            with app.app_context():
                db.engine.dispose()
