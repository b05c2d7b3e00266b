"""``VILLAGE_SYNC_TRUSTED_PROXIES`` under ``python -m server serve``, behind a real reverse proxy
process on loopback (``tests/e2e/reverse_proxy.py``): clients are told apart by the address the
proxy forwards, for rate limits and the audit log (leak 5)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bench.harness.county_server import REPO, CountyServer, start_county_server


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[CountyServer, str]]:
    """A county server trusting one proxy, and the URL of that proxy in front of it."""
    server = start_county_server(
        f"sqlite:///{tmp_path / 'county.db'}",
        tmp_path / "county",
        TRUSTED_PROXIES="1",
        RATE_LIMIT_ATTEMPTS="3",
    )
    proxy = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.reverse_proxy", "--target", server.url],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proxy.stdout is not None
        line = proxy.stdout.readline()
        assert line.startswith("proxy listening on "), line
        yield server, line.split()[-1]
    finally:
        proxy.terminate()
        proxy.wait(15)
        if proxy.stdout:
            proxy.stdout.close()
        server.stop()


def call(
    url: str, method: str, path: str, body: Any = None, *, source: str, token: str | None = None
) -> tuple[int, Any]:
    """One request to ``url`` from the loopback address ``source`` (a distinct client)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(
        parts.hostname, parts.port, timeout=30, source_address=(source, 0)
    )
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(
            method, path, body=None if body is None else json.dumps(body), headers=headers
        )
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read() or b"null")
    finally:
        connection.close()


def test_clients_behind_the_proxy_are_told_apart(proxied: tuple[CountyServer, str]) -> None:
    server, url = proxied
    wrong = {"username": "admin", "password": "not-the-password"}
    statuses = [
        call(url, "POST", "/api/v1/auth/login", wrong, source="127.0.0.2")[0] for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]
    # Another client behind the same proxy is not locked out by the first one's failures.
    status, answer = call(
        url,
        "POST",
        "/api/v1/auth/login",
        {"username": "admin", "password": server.admin_password},
        source="127.0.0.3",
    )
    assert status == 200, answer
    status, entries = call(
        url, "GET", "/api/v1/audit?limit=50", source="127.0.0.3", token=answer["token"]
    )
    assert status == 200
    seen = {(e["action"], e["ip"]) for e in entries if e["action"].startswith("auth.")}
    assert ("auth.login_failed", "127.0.0.2") in seen
    assert ("auth.login", "127.0.0.3") in seen
    assert all(ip != "127.0.0.1" for _, ip in seen), seen
