"""The storage layer: the only code that holds SQLAlchemy sessions and writes SQL.

One module per aggregate (``users``, ``devices``, ``enrollment``, ``forms``, ``records``,
``conflicts`` …) over the tables of ``models``; ``database`` configures the engine and owns the
write transaction (``writing()``); ``revisions`` hands out per-county revision numbers;
``scoping`` turns an area code prefix into SQL; ``schema`` runs the Alembic migrations shipped
in ``server/migrations`` (a schema change is a new script there, never a wipe).

Promises every backend keeps (tested against SQLite and PostgreSQL in one contract class):

- a record's ``revision`` only goes up, and revisions within a county are handed out in commit
  order (a counter row bumped inside the writing transaction);
- ``records.changes_since(scope, since)`` is an exclusive cursor: paging never skips or repeats
  a row, even with concurrent writers;
- deleted records stay as tombstones and are listed by the cursor;
- area scoping (village-code prefix) is part of every scoped query.
"""
