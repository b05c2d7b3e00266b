"""Every setting of the county server, declared once with its default and help text.

A setting is read, from lowest to highest precedence, from its default, from the environment
variable ``VILLAGE_SYNC_<NAME>`` (plus plain ``DATABASE_URL``, the name hosting platforms use), and
from the mapping given to :func:`server.create_app`. Flask config keys are the upper-case names.
The README's ``## Configuration`` table documents each one; a test keeps the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PREFIX = "VILLAGE_SYNC_"


class SettingError(ValueError):
    """A setting's value could not be read (wrong type or out of range)."""

    code = "invalid_setting"


@dataclass(frozen=True)
class Setting:
    """One configuration value: its name, type, default and what it does."""

    name: str
    default: Any
    help: str

    @property
    def key(self) -> str:
        """The Flask config key (upper case)."""
        return self.name.upper()

    @property
    def env_var(self) -> str:
        """The environment variable that overrides the default."""
        return ENV_PREFIX + self.key

    def parse(self, raw: Any) -> Any:
        """Convert ``raw`` (often a string from the environment) to this setting's type.

        Raises :class:`SettingError` when the text is not a value of that type.
        """
        kind = type(self.default)
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off", ""}:
                return False
            raise SettingError(f"{self.key}: expected true/false, got {raw!r}")
        if kind is int:
            try:
                return int(raw)
            except (TypeError, ValueError):
                raise SettingError(f"{self.key}: expected an integer, got {raw!r}") from None
        return str(raw)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "database_url",
        "sqlite:///var/county.db",
        "SQLAlchemy URL of the database. SQLite (one file, WAL) by default; "
        "`postgresql://user@host/db` for PostgreSQL. Plain `DATABASE_URL` is read too.",
    ),
    Setting(
        "key_dir",
        "",
        "Folder holding the server's X25519/Ed25519 private key files (mode 0600). "
        "Empty: a `keys` folder next to the SQLite file (`var/keys` for PostgreSQL).",
    ),
    Setting("host", "127.0.0.1", "Interface `server serve` listens on."),
    Setting("port", 8080, "TCP port `server serve` listens on."),
    Setting(
        "public_url",
        "",
        "Address devices and admins use to reach the server (printed at first start). "
        "Empty: `http://HOST:PORT`.",
    ),
    Setting("serve_threads", 8, "Worker threads of the WSGI server (waitress)."),
    Setting(
        "serve_processes",
        1,
        "Worker processes of `server serve`, each with `SERVE_THREADS` threads, all accepting on "
        "one listening socket, so the server uses more than one core. For PostgreSQL set it to "
        "the number of cores; keep 1 on SQLite (one writer at a time: more processes only queue "
        "on the write lock). Scheduled jobs run in the first process only (and once across "
        "servers through their database locks).",
    ),
    Setting(
        "trusted_proxies",
        0,
        "Reverse proxies in front of the server whose `X-Forwarded-For`/`-Proto`/`-Host` are "
        "believed (rate limits and the audit log use the client address), under `python -m "
        "server serve` too. 0: none. With a proxy, let only the proxy reach the server (listen "
        "on 127.0.0.1): a direct client could claim any address.",
    ),
    Setting(
        "sync_ops_per_transaction",
        200,
        "Most ops of one uploaded batch applied in one database transaction; a larger batch "
        "commits in slices, so one device cannot hold the write lock for seconds.",
    ),
    Setting("token_ttl_hours", 12, "Lifetime of an admin API token issued at login."),
    Setting("enrollment_code_days", 7, "Default validity of an enrollment code, in days."),
    Setting(
        "rate_limit_attempts",
        10,
        "Failed login or enrollment attempts allowed per client address (and user name) "
        "within the window before requests get 429.",
    ),
    Setting(
        "rate_limit_address_attempts",
        50,
        "Failed logins allowed per client address across all user names within the window "
        "(a township NAT shares one address) before its logins get 429.",
    ),
    Setting("rate_limit_window_seconds", 300, "Length of the sliding rate-limit window."),
    Setting(
        "sqlite_busy_timeout_ms",
        5000,
        "How long a SQLite writer waits for the lock before the request fails with 503.",
    ),
    Setting(
        "sqlite_wal_checkpoint_pages",
        1000,
        "SQLite checkpoints its write-ahead log back into the database once the log holds this "
        "many pages (4 KiB each), and trims the log file to that size afterwards, so the WAL "
        "stays bounded under a long load.",
    ),
    Setting("busy_retry_after_seconds", 2, "Retry-After sent with a 503 for a busy database."),
    Setting("max_request_bytes", 16 * 1024 * 1024, "Largest request body accepted (413 beyond)."),
    Setting("admin_username", "admin", "User name of the county admin created at first start."),
    Setting(
        "county_code",
        "",
        "6-digit county code the first admin is limited to. Empty: no area limit.",
    ),
    Setting(
        "publish_builtin_forms",
        True,
        "At first start, publish the six built-in survey instruments.",
    ),
    Setting(
        "migrate_on_start",
        True,
        "Run pending schema migrations when the app starts (`server init-db` does it explicitly).",
    ),
    Setting(
        "attachments_dir",
        "",
        "Folder for uploaded attachments (house photos), stored by SHA-256. "
        "Empty: an `attachments` folder next to the SQLite file (`var/attachments` for PostgreSQL).",
    ),
    Setting(
        "attachment_max_bytes",
        20 * 1024 * 1024,
        "Largest attachment a device may upload (413 beyond).",
    ),
    Setting(
        "upload_signature_max_age_seconds",
        300,
        "How far a device's signed upload request time may be from server time before it is "
        "refused.",
    ),
    Setting(
        "upload_abandon_hours",
        72,
        "Unfinished uploads untouched for this long are deleted by the purge job.",
    ),
    Setting(
        "scheduler_enabled",
        True,
        "Run the scheduled jobs (publication, purges, backup, alerts) inside `server serve`. "
        "Tests leave it to call the job functions directly.",
    ),
    Setting(
        "job_lock_seconds",
        600,
        "How long a process holds a job's database lock; another process may run the job only "
        "after the lock expires, so each run happens once across processes.",
    ),
    Setting(
        "backup_dir",
        "",
        "Folder for the nightly SQLite backups. Empty: a `backups` folder next to the SQLite file.",
    ),
    Setting(
        "export_dir",
        "",
        "Folder for background export files (each named by its job id). Empty: an `exports` "
        "folder next to the SQLite file (`var/exports` for PostgreSQL).",
    ),
    Setting(
        "export_background_records",
        5000,
        "An export download of more records than this runs in the background instead, with "
        "progress on the page and a download link when it is done.",
    ),
    Setting("backup_keep", 7, "How many nightly SQLite backups to keep (older ones are deleted)."),
    Setting("backup_hour", 2, "Hour (Beijing time, 0-23) of the nightly SQLite backup."),
    Setting(
        "stale_device_days",
        7,
        "An active device that has not synced for this many days is reported stale (audit alert).",
    ),
    Setting(
        "conflict_reminder_days",
        7,
        "Conflicts open longer than this many days get a reminder (audit alert) each day.",
    ),
    Setting(
        "monitoring_visit_days",
        90,
        "A monitoring object (监测对象) whose latest monitoring record is older than this many "
        "days is reported overdue for a visit (audit alert, per village).",
    ),
    Setting(
        "session_secret",
        "",
        "Key that signs the admin web pages' session cookies. Empty: a random key kept in "
        "`web-session.key` in the key folder (several processes on one machine share it).",
    ),
    Setting(
        "publish_check_seconds",
        60,
        "How often the scheduler publishes form versions whose publication time has come.",
    ),
    Setting(
        "field_app_release",
        "",
        "A label mixed into the field app's cache version (`/field/`): change it to make every "
        "installed app offer the update, e.g. after a change outside the app's own files.",
    ),
    Setting(
        "field_app_kill_switch",
        False,
        "Serve a field-app service worker that clears its caches and unregisters itself (for a "
        "broken release); the app then runs from the network only.",
    ),
    Setting(
        "field_photo_max_pixels",
        1_200_000,
        "Photos taken in the field app are downscaled on the device to at most this many pixels "
        "(width × height) before they are stored and uploaded.",
    ),
    Setting(
        "field_sync_interval_seconds",
        300,
        "How often an open field app tries to sync on its own (besides start, `online`, "
        "returning to the app and the 同步 button).",
    ),
    Setting(
        "task_deadline_working_days",
        10,
        "Working days a village team has to work a new verification task (weekends and the "
        "`TASK_HOLIDAYS` skipped); an open task past its deadline is escalated to the township.",
    ),
    Setting(
        "task_holidays",
        "",
        "Public holidays that do not count as working days for task deadlines: comma-separated "
        "dates, e.g. `2026-10-01,2026-10-02`. Empty: only weekends are skipped.",
    ),
)

SETTINGS_BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Return every setting's value (keyed by upper-case name) plus any extra override keys.

    Precedence: defaults < environment (``VILLAGE_SYNC_*``, ``DATABASE_URL``) < ``overrides``.
    Extra keys in ``overrides`` (e.g. ``TESTING``) are passed through unchanged.
    Raises :class:`SettingError` for a value of the wrong type.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {s.key: s.default for s in SETTINGS}
    if env.get("DATABASE_URL"):
        values["DATABASE_URL"] = env["DATABASE_URL"]
    for setting in SETTINGS:
        if setting.env_var in env:
            values[setting.key] = setting.parse(env[setting.env_var])
    for key, raw in (overrides or {}).items():
        upper = key.upper()
        setting = SETTINGS_BY_KEY.get(upper)
        values[upper if setting else key] = setting.parse(raw) if setting else raw
    values["DATABASE_URL"] = normalise_database_url(values["DATABASE_URL"])
    return values


#: The URL forms the server runs on: SQLite files and PostgreSQL through psycopg 3.
SUPPORTED_URL_PREFIXES = ("sqlite://", "postgresql+psycopg://")


def normalise_database_url(url: str) -> str:
    """Give PostgreSQL URLs the psycopg 3 driver and make SQLite file paths absolute.

    ``postgres://`` and ``postgresql://`` become ``postgresql+psycopg://``; a relative SQLite path
    is resolved against the current directory so the CLI and the app agree on one file.
    Raises :class:`SettingError` for any other kind of URL (another engine, not a URL at all).
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if not url.startswith(SUPPORTED_URL_PREFIXES):
        raise SettingError(
            f"DATABASE_URL: unsupported database URL {url.split('://', 1)[0]!r}…; use "
            "sqlite:///path/to/county.db or postgresql://user:password@host/dbname"
        )
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rest = url[len("sqlite:///") :]
        if rest and not rest.startswith(":memory:"):
            return "sqlite:///" + str(Path(rest).resolve())
    return url


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for other engines (and in-memory SQLite)."""
    if not url.startswith("sqlite:///"):
        return None
    rest = url[len("sqlite:///") :].split("?", 1)[0]
    if not rest or rest.startswith(":memory:"):
        return None
    return Path(rest)


def resolve_export_dir(values: Mapping[str, Any]) -> Path:
    """The folder for background export files: the setting, else next to the SQLite file."""
    if values.get("EXPORT_DIR"):
        return Path(values["EXPORT_DIR"]).resolve()
    db_file = sqlite_path(values["DATABASE_URL"])
    if db_file is not None:
        return db_file.parent / "exports"
    return Path("var/exports").resolve()


def resolve_key_dir(values: Mapping[str, Any]) -> Path:
    """The folder for the server key files: the setting, else next to the SQLite file."""
    if values.get("KEY_DIR"):
        return Path(values["KEY_DIR"]).resolve()
    db_file = sqlite_path(values["DATABASE_URL"])
    if db_file is not None:
        return db_file.parent / "keys"
    return Path("var/keys").resolve()
