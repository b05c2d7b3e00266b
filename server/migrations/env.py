"""Alembic environment: runs on the connection handed over by ``server.storage.schema``."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from server.storage.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Migrate on ``config.attributes['connection']`` (or a URL given as sqlalchemy.url)."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        engine = sa.create_engine(context.config.get_main_option("sqlalchemy.url"))
        with engine.begin() as own:
            _run(own)
        return
    _run(connection)


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds tables when needed.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
