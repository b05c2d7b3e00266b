"""Per-scope revision counters, taken inside the writing transaction.

PostgreSQL sequences hand out numbers at call time and the transactions holding them may commit
in any order, so a reader paging with ``since`` could pass a number whose row commits later and
never see it. A counter *row* bumped with an upsert … RETURNING is locked until the writer
commits: the next writer of the same county waits, so numbers become visible in order.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from server.storage.database import db
from server.storage.models import RevisionCounter

#: Counter scope of the form manifest (published/retired form versions), county-wide.
MANIFEST_SCOPE = "manifest"


def next_revision(scope: str) -> int:
    """Return the next revision number of ``scope`` (1, 2, 3 …), locked until commit.

    Must be called inside a write transaction (``server.storage.database.writing``); the number
    is only meaningful once that transaction commits.
    """
    return reserve_revisions(scope, 1)[0]


def reserve_revisions(scope: str, count: int) -> range:
    """Take ``count`` consecutive revision numbers of ``scope`` in one statement.

    For a batch that writes many records of one county: one round trip instead of ``count``.
    Same locking as :func:`next_revision`. Raises ``ValueError`` unless ``count >= 1``.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(RevisionCounter)
        .values(scope=scope, value=count)
        .on_conflict_do_update(
            index_elements=[RevisionCounter.scope],
            set_={"value": RevisionCounter.value + count},
        )
        .returning(RevisionCounter.value)
    )
    last = int(db.session.execute(statement).scalar_one())
    return range(last - count + 1, last + 1)


def current_revision(scope: str) -> int:
    """The last revision handed out for ``scope`` (0 when none yet)."""
    value = db.session.scalar(
        sa.select(RevisionCounter.value).where(RevisionCounter.scope == scope)
    )
    return int(value or 0)
