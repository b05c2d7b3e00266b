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
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from village_client_stub.enrollment import enroll
from village_client_stub.simulator import AdminSession
from village_client_stub.store import DeviceStore
from village_client_stub.transport import HttpTransport

REPO = Path(__file__).resolve().parents[2]
VILLAGE = "530102001201"
NEIGHBOUR_VILLAGE = "530102001202"
TOWNSHIP = "530102001"
# A cold start (migrations, six instruments published) takes a few seconds; on a loaded
# 2-core machine several times that.
START_TIMEOUT_S = 120.0


@dataclass
class CountyServer:
    """A running ``python -m server serve`` process."""

    url: str
    admin_password: str
    database_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def admin(self) -> AdminSession:
        """A fresh admin session (token) over HTTP."""
        return AdminSession(HttpTransport(self.url), "admin", self.admin_password)

    def log(self) -> str:
        """What the server printed so far (for failure messages)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """Terminate the process and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)


def start_county_server(database_url: str, workdir: Path, **settings: str) -> CountyServer:
    """Start a server on a free loopback port; returns once it listens.

    ``settings`` are extra ``VILLAGE_SYNC_<NAME>`` values (names without the prefix).
    Raises RuntimeError (with the server's output) if it does not come up.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "server.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "VILLAGE_SYNC_KEY_DIR": str(workdir / "keys"),
        "VILLAGE_SYNC_ATTACHMENTS_DIR": str(workdir / "attachments"),
        "VILLAGE_SYNC_BACKUP_DIR": str(workdir / "backups"),
        "VILLAGE_SYNC_SCHEDULER_ENABLED": "false",
        "VILLAGE_SYNC_SERVE_THREADS": "4",
        "PYTHONUNBUFFERED": "1",
    }
    env.update({f"VILLAGE_SYNC_{k.upper()}": v for k, v in settings.items()})
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", "0"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log_path.read_text(encoding="utf-8", errors="replace")
        listening = re.search(r"listening on (http://\S+)", text)
        password = re.search(r"password:\s+(\S+)", text)
        if listening and password:
            return CountyServer(
                listening.group(1), password.group(1), database_url, process, log_path
            )
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    process.wait(15)
    raise RuntimeError(f"the county server did not start:\n{log_path.read_text()}")


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
