"""Login rate limits of a real server process under parallel attempts, on SQLite and PostgreSQL
(leak 7): an attempt is counted before its password is checked, in one transaction with the
check, so N parallel guesses get exactly the limit's worth of answers; and one address spraying
many user names meets a limit of its own."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.harness.county_server import CountyServer, start_county_server


@pytest.fixture(params=["sqlite", "postgresql"])
def limited(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CountyServer]:
    """A county server allowing 10 failures per (address, name) and 25 per address."""
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'county.db'}"
    else:
        database_url = request.getfixturevalue("postgres_url")
    server = start_county_server(
        database_url,
        tmp_path / "county",
        RATE_LIMIT_ATTEMPTS="10",
        RATE_LIMIT_ADDRESS_ATTEMPTS="25",
        SERVE_THREADS="8",
    )
    try:
        yield server
    finally:
        server.stop()


def attempt(url: str, username: str, password: str = "not-the-password") -> int:
    body = json.dumps({"username": username, "password": password}).encode()
    request = urllib.request.Request(
        f"{url}/api/v1/auth/login", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        error.close()
        return error.code


def test_parallel_wrong_logins_get_exactly_the_limit_checked(limited: CountyServer) -> None:
    with ThreadPoolExecutor(max_workers=40) as pool:
        statuses = Counter(pool.map(lambda _: attempt(limited.url, "admin"), range(40)))
    assert statuses == {401: 10, 429: 30}, statuses


def test_one_address_spraying_user_names_is_limited(limited: CountyServer) -> None:
    statuses = [attempt(limited.url, f"user{n}") for n in range(30)]
    assert statuses == [401] * 25 + [429] * 5, statuses
    # The right password of a real account from that address waits too.
    assert attempt(limited.url, "admin", limited.admin_password) == 429
