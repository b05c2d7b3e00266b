"""Fixtures shared by every test package.

PostgreSQL: storage and sync tests run on SQLite and on a real PostgreSQL
(``VILLAGE_SYNC_TEST_PG``, default ``postgresql://postgres@127.0.0.1:5432/test``).
Each test gets its own schema, dropped afterwards. When PostgreSQL is unreachable the
PostgreSQL-backed tests are skipped on a developer machine, but with ``CI=true`` the
whole run fails: CI must never go green on SQLite alone.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

# The Chromium fixture for every browser test (tests/web, tests/e2e).
pytest_plugins = ["tests.browser"]

PG_URL = os.environ.get("VILLAGE_SYNC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _postgres_problem() -> str | None:
    """Return why PostgreSQL cannot be used, or None when it answers."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a hard dependency
        return f"psycopg is not installed: {exc}"
    try:
        with psycopg.connect(PG_URL, connect_timeout=5) as conn:
            conn.execute("select 1")
    except Exception as exc:
        return f"PostgreSQL at {PG_URL} is unreachable: {exc}"
    return None


_PG_PROBLEM: str | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _PG_PROBLEM
    _PG_PROBLEM = _postgres_problem()
    if _PG_PROBLEM and _in_ci():
        pytest.exit(f"CI=true but {_PG_PROBLEM}", returncode=3)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL for PostgreSQL whose search_path is a fresh, private schema."""
    if _PG_PROBLEM:
        if _in_ci():
            pytest.fail(_PG_PROBLEM)
        pytest.skip(_PG_PROBLEM)
    import psycopg

    schema = f"vs_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'create schema "{schema}"')
    base = PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'drop schema if exists "{schema}" cascade')


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A SQLAlchemy URL for a real SQLite file in the test's temp dir."""
    return f"sqlite:///{tmp_path / 'county.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over both engines: a real SQLite file and a real PostgreSQL schema."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")
