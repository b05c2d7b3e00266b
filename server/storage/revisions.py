"""Per-scope revision counters, taken inside the writing transaction.

PostgreSQL sequences hand out numbers at call time and the transactions holding them may commit
in any order, so a reader paging with ``since`` could pass a number whose row commits later and
never see it. A counter *row* bumped with an upsert … RETURNING is locked until the writer
commits: the next writer of the same county waits, so numbers become visible in order.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from server.extensions import db
from server.storage.models import RevisionCounter

#: Counter scope of the form manifest (published/retired form versions), county-wide.
MANIFEST_SCOPE = "manifest"


def next_revision(scope: str) -> int:
    """Return the next revision number of ``scope`` (1, 2, 3 …), locked until commit.

    Must be called inside a write transaction (``server.storage.database.writing``); the number
    is only meaningful once that transaction commits.
    """
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(RevisionCounter)
        .values(scope=scope, value=1)
        .on_conflict_do_update(
            index_elements=[RevisionCounter.scope],
            set_={"value": RevisionCounter.value + 1},
        )
        .returning(RevisionCounter.value)
    )
    return int(db.session.execute(statement).scalar_one())


def current_revision(scope: str) -> int:
    """The last revision handed out for ``scope`` (0 when none yet)."""
    value = db.session.scalar(
        sa.select(RevisionCounter.value).where(RevisionCounter.scope == scope)
    )
    return int(value or 0)
