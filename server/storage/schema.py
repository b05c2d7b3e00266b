"""Schema migrations: Alembic, run programmatically, scripts shipped in ``server/migrations``.

An upgrade never needs a wipe: every schema change is a new script in
``server/migrations/versions``; :func:`upgrade` applies whatever is pending.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import OperationalError

from server.storage.database import WRITE_OPTION

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

# Any constant shared by all app processes; several processes starting at once on one PostgreSQL
# take turns on this advisory lock instead of racing to create the same tables.
_PG_MIGRATION_LOCK = 0x56534D47

#: How long a process waits for another one's migration (or any writer) on SQLite before giving
#: up. The busy timeout alone is too short when several processes boot on a loaded machine.
MIGRATION_WAIT_SECONDS = 120.0


def _alembic_config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration id shipped with this code."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:  # pragma: no cover - the package always ships the initial migration
        raise RuntimeError("no migrations shipped in server/migrations/versions")
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """The migration id the database is at, or None for an empty database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: sa.Engine, *, wait_seconds: float = MIGRATION_WAIT_SECONDS) -> str:
    """Apply every pending migration and return the resulting revision id.

    Safe to call from several processes at once (PostgreSQL advisory lock; SQLite's write lock).
    On SQLite a "database is locked" — another process migrating or writing for longer than the
    busy timeout — is retried with a growing pause until ``wait_seconds`` have passed.
    Raises ``sqlalchemy.exc.OperationalError`` when the database cannot be reached, or is still
    locked at the deadline.
    """
    deadline = time.monotonic() + wait_seconds
    pause = 0.05
    while True:
        try:
            return _upgrade_once(engine)
        except OperationalError as exc:
            if not _sqlite_locked(engine, exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause * random.uniform(0.5, 1.0))  # jitter: waiting processes spread out
        pause = min(pause * 2, 1.0)


def _sqlite_locked(engine: sa.Engine, exc: OperationalError) -> bool:
    return engine.dialect.name == "sqlite" and "database is locked" in str(exc.orig).lower()


def _upgrade_once(engine: sa.Engine) -> str:
    with engine.connect() as connection:
        # On SQLite take the write lock up front: two processes starting together would
        # otherwise both read "no schema" and one would fail to upgrade its read to a write.
        connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            _upgrade_locked(connection)
    current = current_revision(engine)
    return current or ""


def _upgrade_locked(connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
    command.upgrade(_alembic_config(connection), "head")
