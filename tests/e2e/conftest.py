"""End-to-end fixtures: a real county server process, real device stores, the admin API.

``county`` starts ``python -m server serve`` on a free loopback port with a temporary SQLite file
or a private PostgreSQL schema (the ``postgres_url`` fixture of ``tests/conftest.py``), reads
the admin password it prints at first start, and stops the process after the test. Devices are
real ``DeviceStore`` files enrolled over HTTP with codes the admin issues through the API;
tests sync them with the real ``SyncClient`` (in-process) or the real ``village-device``
command (subprocess), and put the fault proxy in between where the network matters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.harness.county_server import REPO, CountyServer, start_county_server
from village_client_stub.enrollment import enroll
from village_client_stub.simulator import AdminSession
from village_client_stub.store import DeviceStore
from village_client_stub.transport import HttpTransport

VILLAGE = "530102001201"
NEIGHBOUR_VILLAGE = "530102001202"
TOWNSHIP = "530102001"


@pytest.fixture(params=["sqlite", "postgresql"])
def county(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CountyServer]:
    """A real county server process on SQLite or PostgreSQL (the test runs on both)."""
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'county.db'}"
    else:
        database_url = request.getfixturevalue("postgres_url")
    server = start_county_server(database_url, tmp_path / "county")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def admin(county: CountyServer) -> AdminSession:
    """The county admin, logged in over the API."""
    return county.admin()


def new_device(
    county: CountyServer,
    admin: AdminSession,
    path: Path,
    scope: str = VILLAGE,
    *,
    via_url: str | None = None,
    now_ms: Any = None,
) -> DeviceStore:
    """Create a device store at ``path`` and enrol it for ``scope`` (forms downloaded).

    ``via_url`` is the address the device uses (a fault proxy); ``now_ms`` its wall clock.
    """
    store = DeviceStore.create(path, now_ms=now_ms) if now_ms else DeviceStore.create(path)
    code = admin.issue_code(scope)
    url = via_url or county.url
    enroll(store, url, code, transport=HttpTransport(url, timeout=30))
    return store


def device_cli(
    db: Path, *args: str, as_json: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``village-device ARGS… --db DB [--json]`` in a subprocess; returns the finished run."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "village_client_stub.cli",
            *args,
            "--db",
            str(db),
            *(["--json"] if as_json else []),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def cli_json(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON object a ``--json`` run printed."""
    assert run.stdout.strip(), run.stderr
    return json.loads(run.stdout)


def server_records(admin: AdminSession, village: str = VILLAGE) -> list[dict[str, Any]]:
    """Every record of ``village`` on the server (list view, sensitive fields masked)."""
    items: list[dict[str, Any]] = []
    while True:
        page = admin.get(f"/api/v1/records?village={village}&limit=1000&offset={len(items)}")
        items.extend(page["items"])
        if len(items) >= page["total"] or not page["items"]:
            return items


def server_record(admin: AdminSession, record_id: str) -> dict[str, Any]:
    """One record with unmasked data, per-field status, open conflicts and history."""
    return admin.get(f"/api/v1/records/{record_id}")
