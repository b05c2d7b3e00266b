"""SQLite writers of one process queue for the write lock in arrival order, and the monitoring
lines every exchange reads are loaded again only when the table changes (the evening peak)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from flask import Flask

from server.storage import database
from server.storage import monitoring as monitoring_store
from server.storage.database import WRITER_QUEUE_KEY, db, writing
from server.storage.errors import StorageBusy
from tests.conftest import PG_URL


def _sqlite_app(app_on: Callable[..., Flask], tmp_path: Path, **overrides: object) -> Flask:
    app = app_on(f"sqlite:///{tmp_path / 'county.db'}", **overrides)
    with app.app_context(), writing() as session:
        session.execute(sa.text("CREATE TABLE turns (n INTEGER, who INTEGER)"))
    return app


def test_writers_of_one_process_take_turns_in_arrival_order_without_busy_errors(
    app_on: Callable[..., Flask], tmp_path: Path
) -> None:
    # A busy timeout far shorter than the queue's total wait: left to SQLite's busy handler
    # the last writers would fail; queued, each waits only for those ahead of it.
    app = _sqlite_app(app_on, tmp_path, SQLITE_BUSY_TIMEOUT_MS=2000)
    queue = app.extensions[WRITER_QUEUE_KEY]
    errors: list[BaseException] = []

    def writer(who: int) -> None:
        with app.app_context():
            try:
                with writing() as session:
                    n = session.execute(sa.text("SELECT count(*) FROM turns")).scalar_one()
                    time.sleep(0.02)  # work inside the transaction
                    session.execute(
                        sa.text("INSERT INTO turns VALUES (:n, :who)"), {"n": n, "who": who}
                    )
            except BaseException as exc:  # collected for the assertion below
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(12)]
    with app.app_context(), writing():
        for thread in threads:
            thread.start()
            deadline = time.monotonic() + 5
            # Let each writer join the queue before the next one starts.
            while len(queue._waiting) < threads.index(thread) + 1 and time.monotonic() < deadline:
                time.sleep(0.005)
    for thread in threads:
        thread.join(30)
    assert errors == []
    with app.app_context():
        rows = db.session.execute(sa.text("SELECT n, who FROM turns ORDER BY n")).all()
    assert [tuple(r) for r in rows] == [(i, i) for i in range(12)]


def test_a_writer_that_waits_longer_than_the_busy_timeout_gets_storage_busy(
    app_on: Callable[..., Flask], tmp_path: Path
) -> None:
    app = _sqlite_app(app_on, tmp_path, SQLITE_BUSY_TIMEOUT_MS=200)
    outcome: list[object] = []

    def writer() -> None:
        with app.app_context():
            started = time.monotonic()
            try:
                with writing():
                    outcome.append("wrote")
            except StorageBusy:
                outcome.append(time.monotonic() - started)

    with app.app_context(), writing():
        thread = threading.Thread(target=writer)
        thread.start()
        thread.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], float), outcome
    assert 0.15 < outcome[0] < 5
    # The queue is free again: the next writer goes straight in.
    with app.app_context(), writing() as session:
        session.execute(sa.text("INSERT INTO turns VALUES (1, 1)"))


@pytest.mark.parametrize("change", ["upsert", "insert", "delete"])
def test_monitoring_lines_are_read_again_only_after_the_table_changed(
    app_on: Callable[..., Flask], tmp_path: Path, change: str
) -> None:
    app = _sqlite_app(app_on, tmp_path)
    with app.app_context():
        with writing():
            for region in ("530102001201", "530102001202"):
                monitoring_store.set_line(
                    region_code=region, year=2026, income_line=7000.0, settings={}, updated_by="t"
                )
        first = monitoring_store.list_lines()
        assert monitoring_store.list_lines() is first  # unchanged: the kept copy
        with writing():
            if change == "upsert":
                monitoring_store.set_line(
                    region_code="530102001201",
                    year=2026,
                    income_line=7100.0,
                    settings={},
                    updated_by="t",
                )
            elif change == "insert":
                monitoring_store.set_line(
                    region_code="530102001203",
                    year=2026,
                    income_line=7000.0,
                    settings={},
                    updated_by="t",
                )
            else:
                monitoring_store.delete_line("530102001202", 2026)
            inside = monitoring_store.list_lines()  # the writer sees its own change
        after = monitoring_store.list_lines()
    expected = {
        "upsert": {("530102001201", 7100.0), ("530102001202", 7000.0)},
        "insert": {("530102001201", 7000.0), ("530102001202", 7000.0), ("530102001203", 7000.0)},
        "delete": {("530102001201", 7000.0)},
    }[change]
    for lines in (inside, after):
        assert {(line.region_code, line.income_line) for line in lines} == expected


def test_each_postgresql_pool_keeps_a_connection_per_serving_thread(
    postgres_url: str, app_on: Callable[..., Flask]
) -> None:
    app = app_on(postgres_url, SERVE_THREADS=12)
    with app.app_context():
        assert db.engine.pool.size() == 12  # type: ignore[attr-defined]
        # Twelve threads each holding a connection at once: none waits for the pool.
        held: list[object] = []
        barrier = threading.Barrier(12, timeout=30)

        def hold() -> None:
            with app.app_context():
                with db.engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
                    held.append(conn)
                    barrier.wait()

        threads = [threading.Thread(target=hold) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(held) == 12
        assert db.engine.pool.overflow() <= 0  # type: ignore[attr-defined]


def _backend_pid(app: Flask) -> int:
    with app.app_context():
        pid = db.session.scalar(sa.text("SELECT pg_backend_pid()"))
        db.session.rollback()
    return int(pid)


def test_a_postgresql_connection_idle_past_the_ping_age_is_checked_and_replaced(
    postgres_url: str, app_on: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_on(postgres_url, SERVE_THREADS=1)
    first = _backend_pid(app)
    assert _backend_pid(app) == first  # in use a moment ago: handed out again, unpinged
    with app.app_context():
        db.engine.pool.dispose()  # type: ignore[attr-defined]
    first = _backend_pid(app)
    # The database drops the idle connection (a restart); once it is older than the ping age
    # the pool notices on checkout and the request gets a fresh connection, not an error.
    killer = psycopg.connect(PG_URL, autocommit=True)
    try:
        assert killer.execute("SELECT pg_terminate_backend(%s)", (first,)).fetchone() == (True,)
    finally:
        killer.close()
    monkeypatch.setattr(database, "IDLE_PING_S", 0.0)
    second = _backend_pid(app)
    assert second != first
