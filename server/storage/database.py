"""Engine set-up for SQLite and PostgreSQL, and the one way to open a write transaction."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.orm import Session

from server.storage.errors import StorageBusy, translate
from server.storage.models import Base

#: The one SQLAlchemy handle, created unbound at import and bound to an app by
#: :func:`init_database` in ``create_app``. It lives here because only storage may use it.
db = SQLAlchemy(model_class=Base)

#: Connection execution option that makes the next SQLite transaction ``BEGIN IMMEDIATE``.
WRITE_OPTION = "village_sync_write"
_IN_WRITE = "village_sync_in_write"


def _json_dumps(value: Any) -> str:
    """JSON text of a JSON column's value, with orjson.

    Every record, change-log row and stored ack is a JSON column: with the standard library
    encoding and decoding them was 6 % of the server's CPU under ingest (py-spy, bench ingest);
    orjson does it 5-10x faster. The standard library still takes what orjson refuses (an
    integer beyond 64 bits), so a value stored before is stored the same way now.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode("utf-8")
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value)


def _json_loads(text: str | bytes) -> Any:
    """The value of a JSON column's text; the standard library reads what orjson refuses
    (``NaN`` written by an older server)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def engine_options(database_url: str, busy_timeout_ms: int, threads: int = 8) -> dict[str, Any]:
    """SQLAlchemy ``create_engine`` options for the URL (passed through Flask-SQLAlchemy).

    On PostgreSQL the pool of each server process keeps one connection per serving thread
    (``threads``: ``SERVE_THREADS``) plus SQLAlchemy's default overflow for the scheduler and
    CLI work, so no request waits for a connection another thread holds; with
    ``SERVE_PROCESSES`` workers the database sees that many pools.
    """
    codec = {"json_serializer": _json_dumps, "json_deserializer": _json_loads}
    if database_url.startswith("sqlite"):
        # sqlite3's own timeout is the busy handler; the PRAGMA below sets it again per connection.
        return {
            "connect_args": {"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
            **codec,
        }
    # No ``pool_pre_ping``: it cost a round trip on every checkout, four per sync exchange
    # (``bench peak``); the pool pings only a connection that sat idle (``install_engine_hooks``).
    return {"pool_size": max(5, int(threads)), "max_overflow": 10, **codec}


#: A pooled PostgreSQL connection idle longer than this is pinged before it is handed out (the
#: database may have restarted meanwhile). One back within this time was in use a moment ago;
#: if its backend died since, the request gets a retryable 503 and the pool a new connection —
#: what a backend killed in the middle of a request gives anyway.
IDLE_PING_S = 5.0


def install_engine_hooks(
    engine: sa.Engine, busy_timeout_ms: int, wal_checkpoint_pages: int = 1000
) -> None:
    """Give SQLite connections WAL, a busy timeout, foreign keys and explicit transactions.

    ``wal_checkpoint_pages`` is the auto-checkpoint threshold; the log file is also trimmed to
    that size after a checkpoint (``journal_size_limit``), so one burst does not leave a large
    file behind for good.

    pysqlite's implicit transactions begin late and cannot be made ``IMMEDIATE``; taking over
    ``BEGIN`` lets write transactions take the write lock up front, so two writers queue on the
    busy timeout instead of one failing with "database is locked" after it has already read.

    On every dialect, database errors are raised as ``server.storage.errors`` classes.
    """
    event.listen(engine, "handle_error", translate)
    if engine.dialect.name != "sqlite":
        _ping_idle_connections(engine)
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        pages = max(1, int(wal_checkpoint_pages))
        cursor.execute(f"PRAGMA wal_autocheckpoint={pages}")
        cursor.execute(f"PRAGMA journal_size_limit={pages * 4096}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _ping_idle_connections(engine: sa.Engine) -> None:
    """Ping a pooled connection before handing it out only when it sat idle for more than
    :data:`IDLE_PING_S`; a dead one is replaced (SQLAlchemy's disconnect-on-checkout rule)."""

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        # A connection just opened is as fresh as one just given back.
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in = record.info.get("checked_in_at")
        if checked_in is not None and time.monotonic() - checked_in < IDLE_PING_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out (or opens) another.
            raise sa.exc.DisconnectionError(f"idle connection is gone: {exc}") from exc


#: ``app.extensions`` key of the app's :class:`WriterQueue` (SQLite only).
WRITER_QUEUE_KEY = "village_sync_writer_queue"


class WriterQueue:
    """The write transactions of one process on one SQLite file, one at a time, first come
    first served.

    SQLite has one writer. Left to SQLite, the threads of a process that all want to write poll
    the lock with sleeps that grow to 100 ms (its busy handler): the lock sits idle between a
    commit and the next poll, late arrivals overtake early ones, and at the evening peak an
    unlucky exchange waited out the whole busy timeout and got a 503. Queued here, the next
    writer starts the moment the previous one commits, in arrival order; SQLite's busy timeout
    still arbitrates between processes (the CLI, a second server process).
    """

    def __init__(self, timeout_s: float) -> None:
        """``timeout_s``: how long :meth:`acquire` waits (the SQLite busy timeout)."""
        self.timeout_s = timeout_s
        self._mutex = threading.Lock()
        #: One locked gate per waiting thread, in arrival order; releasing the first gate
        #: hands the turn to that thread alone (no herd of woken threads per commit).
        self._waiting: deque[threading.Lock] = deque()
        self._held = False

    def acquire(self) -> bool:
        """Wait for this thread's turn; False when ``timeout_s`` passed first."""
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            gate = threading.Lock()
            gate.acquire()
            self._waiting.append(gate)
        if gate.acquire(timeout=self.timeout_s):
            return True  # the previous writer handed its turn over
        with self._mutex:
            if gate in self._waiting:
                self._waiting.remove(gate)
                return False
        return True  # handed over just as the wait ran out: the turn is ours

    def release(self) -> None:
        """End this thread's turn; the first in line goes."""
        with self._mutex:
            if self._waiting:
                self._waiting.popleft().release()  # still held: now by that thread
            else:
                self._held = False


def init_database(app: Flask) -> None:
    """Bind the SQLAlchemy extension to ``app`` and hook the engine (SQLite pragmas)."""
    url = app.config["DATABASE_URL"]
    busy = app.config["SQLITE_BUSY_TIMEOUT_MS"]
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    app.config.setdefault(
        "SQLALCHEMY_ENGINE_OPTIONS", engine_options(url, busy, app.config["SERVE_THREADS"])
    )
    db_file = _sqlite_file(url)
    if db_file is not None:
        db_file.parent.mkdir(parents=True, exist_ok=True)
        if not db_file.exists():
            # The file holds ID numbers and password hashes: owner-only from the first byte.
            # SQLite gives its -wal and -shm files the same mode as the database file.
            os.close(os.open(db_file, os.O_CREAT | os.O_WRONLY, 0o600))
    db.init_app(app)
    if url.startswith("sqlite"):
        app.extensions[WRITER_QUEUE_KEY] = WriterQueue(busy / 1000)
    with app.app_context():
        install_engine_hooks(db.engine, busy, app.config["SQLITE_WAL_CHECKPOINT_PAGES"])

    # Registered after Flask-SQLAlchemy's own teardown, so it runs first (Flask runs teardowns
    # last-registered first) and the session is already closed when that one runs.
    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        _tolerating_lost_connection(db.session.remove)


def _tolerating_lost_connection(action: Any) -> None:
    """Run ``action`` (a rollback or close); a connection the database closed under us is fine.

    When PostgreSQL terminated the backend, rolling back on it raises; SQLAlchemy has already
    invalidated that connection (the pool opens a fresh one), so there is nothing left to undo
    and the request's answer (a 503 for the lost connection) stands instead of becoming a 500.
    """
    try:
        action()
    except sa.exc.DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        db.session.remove()


def _sqlite_file(url: str) -> Path | None:
    from server.settings import sqlite_path

    return sqlite_path(url)


def engine() -> sa.Engine:
    """The current app's engine."""
    return db.engine


def rollback() -> None:
    """Roll back whatever the current session holds (after an error escaped a view)."""
    _tolerating_lost_connection(db.session.rollback)


def dispose() -> None:
    """Return the session's connection and close the engine's pool now (end of a CLI command),
    rather than at interpreter exit, where PostgreSQL would see dangling sessions."""
    db.session.remove()
    db.engine.dispose()


def dialect_name() -> str:
    """``sqlite`` or ``postgresql``."""
    return db.engine.dialect.name


@contextmanager
def writing() -> Iterator[Session]:
    """Run the block in one write transaction: committed on success, rolled back on error.

    On SQLite the transaction starts with ``BEGIN IMMEDIATE`` so it holds the write lock from the
    first statement. A read-only transaction still open in the session is ended first. Nested use
    joins the outer transaction. Raises whatever the block raises (after rolling back);
    :class:`~server.storage.errors.StorageBusy` when the busy timeout runs out.
    """
    session = db.session()
    if session.info.get(_IN_WRITE):
        yield session
        return
    if session.in_transaction():
        session.rollback()
    writers: WriterQueue | None = current_app.extensions.get(WRITER_QUEUE_KEY)
    if writers is not None and not writers.acquire():
        raise StorageBusy(
            "BEGIN IMMEDIATE",
            None,
            sqlite3.OperationalError("database is locked (the writers' queue timed out)"),
        )
    session.info[_IN_WRITE] = True
    try:
        session.connection(execution_options={WRITE_OPTION: True})
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.info[_IN_WRITE] = False
        if writers is not None:
            writers.release()


def end_read() -> None:
    """End a read-only transaction (returns the connection to the pool, drops any snapshot)."""
    session = db.session()
    if session.in_transaction() and not session.info.get(_IN_WRITE):
        session.rollback()


def make_private_dirs(folder: Path) -> None:
    """Create ``folder`` and any missing parents with mode 0700 (existing ones are left alone)."""
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for candidate in reversed(missing):
        candidate.mkdir(mode=0o700, exist_ok=True)
        os.chmod(candidate, 0o700)


def backup_sqlite(target: Path) -> Path:
    """Copy the SQLite database to ``target`` with SQLite's online backup API.

    ``target`` is created mode 0600 and missing folders 0700 before any data is written. Safe while the server runs (readers and writers continue). Raises ``ValueError`` when the
    database is not SQLite (use ``pg_dump`` for PostgreSQL).
    """
    if dialect_name() != "sqlite":
        raise ValueError("backup --to works for SQLite only; use pg_dump for PostgreSQL")
    target = Path(target)
    make_private_dirs(target.parent)
    # The copy holds ID numbers, phones and password hashes: owner-only before the first page.
    os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
    os.chmod(target, 0o600)  # an existing file keeps its old mode through O_CREAT
    raw = db.engine.raw_connection()
    try:
        source: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]
        destination = sqlite3.connect(str(target))
        try:
            source.backup(destination)
        finally:
            destination.close()
    finally:
        raw.close()
    return target
