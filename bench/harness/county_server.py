"""A real county server process for end-to-end tests and benchmarks.

:func:`start_county_server` runs ``python -m server serve`` on a free loopback port with the
given database URL and a working folder for keys, attachments and backups, waits until it
listens and reads the admin password from the file it names at first start. Used by the e2e fixtures
(``tests/e2e/conftest.py``) and ``bench/weak_link.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from village_client_stub.simulator import AdminSession
from village_client_stub.transport import HttpTransport

REPO = Path(__file__).resolve().parents[2]
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
    env: dict[str, str]

    def admin(self) -> AdminSession:
        """A fresh admin session (token) over HTTP."""
        return AdminSession(HttpTransport(self.url), "admin", self.admin_password)

    def cpu_s(self) -> float:
        """User + system CPU-seconds the server process has used so far (all its threads)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # Fields after the command name: state [0] … utime [11], stime [12].
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        """What the server printed so far (for failure messages)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``python -m server ARGS…`` against this server's database and key folder."""
        return subprocess.run(
            [sys.executable, "-m", "server", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,
        )

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
    # Nothing the developer exported for their own server (VILLAGE_SYNC_DATABASE_URL, a key
    # folder, an admin password…) may reach the test server: every setting it needs is set here.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VILLAGE_SYNC_")},
        "DATABASE_URL": database_url,
        "VILLAGE_SYNC_DATABASE_URL": database_url,
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
        # The log is not a terminal: the first admin password is in the file it names.
        password_file = re.search(r"password file:\s+(\S+)", text)
        if listening and password_file:
            password = Path(password_file.group(1)).read_text(encoding="utf-8").strip()
            return CountyServer(listening.group(1), password, database_url, process, log_path, env)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    process.wait(15)
    raise RuntimeError(f"the county server did not start:\n{log_path.read_text()}")
