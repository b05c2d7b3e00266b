"""The device store: one SQLite file per device, holding everything the tablet knows.

The file (``--db PATH``) is created with mode 0600 and holds the device's identity and private
keys (they never leave it), the server's public keys and the device's scope, form definitions,
households in scope, records, drafts, the outbox of sync ops, conflicts, sync state and
attachments. docs/device.md describes every table.

Promises the sync client relies on:

* **Op sequence.** Ops are numbered 1, 2, 3 … per device with no gaps; a number is never reused,
  even after the op is acknowledged and removed. The sequence number, the HLC stamp and the
  record change are written in one transaction (:meth:`DeviceStore.queue_op`).
* **Nothing lost before its ack.** An op leaves the outbox only through :meth:`mark_acked` with a
  matching, well-formed ack; a rejected op stays (state ``rejected``, with the server's reasons)
  until a later edit of the same record corrects it.
* **Server state wins, local edits survive.** :meth:`apply_server_state` replaces a record with
  the server's merged state and re-applies the device's still-outstanding ops on top.

The schema is versioned with ``PRAGMA user_version`` and a list of migration steps
(:data:`MIGRATIONS`); opening a file upgrades it, and a file from a newer program is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from forms.definition import FormDefinition, dump_definition, load_definition
from forms.errors import FormDefinitionError, FormsError
from forms.paths import unflatten
from sync_protocol.clock import HybridClock, Stamp, wall_clock_ms
from sync_protocol.crypto import (
    EncryptionPrivateKey,
    EncryptionPublicKey,
    KeyBundle,
    SigningPrivateKey,
    SigningPublicKey,
    generate_device_keys,
)
from sync_protocol.errors import ProtocolError
from sync_protocol.merge import RecordState, device_view
from sync_protocol.ops import Op, is_tombstone
from village_client_stub.errors import (
    AckMismatch,
    BadInput,
    DeviceError,
    StoreCorrupt,
    StoreExists,
    StoreNotFound,
    UnknownForm,
    UnknownRecord,
)

__all__ = [
    "ACK_STATUSES",
    "MIGRATIONS",
    "OP_STATES",
    "AckSummary",
    "DeviceIdentity",
    "DeviceStore",
    "Draft",
    "FormSummary",
    "LocalRecord",
    "OutboxEntry",
    "SyncState",
    "dumps",
]

OP_STATES = ("pending", "sent", "rejected", "corrected")
ACK_STATUSES = ("applied", "merged", "duplicate", "conflict", "rejected")

# Each step is one SQL script; PRAGMA user_version = number of steps applied. Append, never edit.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE device (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        device_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        encryption_private BLOB NOT NULL,
        signing_private BLOB NOT NULL,
        encryption_key_id TEXT NOT NULL,
        signing_key_id TEXT NOT NULL,
        server_url TEXT,
        server_encryption_public BLOB,
        server_signing_public BLOB,
        server_key_id TEXT,
        scope TEXT,
        enrolled_at TEXT
    );
    CREATE TABLE config (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE forms (
        form_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        title_zh TEXT NOT NULL,
        definition TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        received_at TEXT NOT NULL,
        PRIMARY KEY (form_id, version)
    );
    CREATE TABLE households (
        village_code TEXT NOT NULL,
        household_no TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}',
        revision INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (village_code, household_no)
    );
    CREATE TABLE records (
        record_id TEXT PRIMARY KEY,
        form_id TEXT NOT NULL,
        form_version INTEGER NOT NULL,
        village_code TEXT,
        household_no TEXT,
        round TEXT,
        data TEXT NOT NULL,
        stamps TEXT NOT NULL DEFAULT '{}',
        server_revision INTEGER NOT NULL DEFAULT 0,
        deleted INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX records_household ON records (village_code, household_no);
    CREATE INDEX records_form ON records (form_id, form_version);
    CREATE TABLE drafts (
        draft_id TEXT PRIMARY KEY,
        record_id TEXT,
        form_id TEXT NOT NULL,
        form_version INTEGER NOT NULL,
        village_code TEXT,
        household_no TEXT,
        round TEXT,
        data TEXT NOT NULL,
        issues TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY,
        record_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        op TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'sent', 'rejected', 'corrected')),
        attempts INTEGER NOT NULL DEFAULT 0,
        reasons TEXT,
        corrected_by INTEGER,
        created_at TEXT NOT NULL,
        sent_at TEXT
    );
    CREATE INDEX outbox_record ON outbox (record_id, state);
    CREATE TABLE conflicts (
        conflict_id TEXT PRIMARY KEY,
        record_id TEXT NOT NULL,
        seq INTEGER,
        detail TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'open',
        received_at TEXT NOT NULL
    );
    CREATE TABLE sync_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        last_seq INTEGER NOT NULL DEFAULT 0,
        acked_through INTEGER NOT NULL DEFAULT 0,
        hlc_last TEXT,
        server_time_ms INTEGER,
        last_sync_at TEXT,
        last_error TEXT
    );
    CREATE TABLE cursors (
        scope TEXT NOT NULL,
        stream TEXT NOT NULL,
        cursor TEXT NOT NULL,
        PRIMARY KEY (scope, stream)
    );
    CREATE TABLE attachments (
        sha256 TEXT PRIMARY KEY,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        confirmed_offset INTEGER NOT NULL DEFAULT 0,
        record_id TEXT,
        created_at TEXT NOT NULL
    );
    """,
    # ``listed``: the conflict was named in a record state the server sent (a field or delete
    # conflict of the merge), so that list is its authority. Conflicts known only from an ack
    # (duplicate_household) are 0: record states never list them.
    """
    ALTER TABLE conflicts ADD COLUMN listed INTEGER NOT NULL DEFAULT 1;
    """,
    # Why the last upload of an attachment stopped (zh and en), cleared when it completes.
    """
    ALTER TABLE attachments ADD COLUMN last_error TEXT;
    """,
    # The last sync error's stable code and Chinese text (``last_error`` keeps the English).
    """
    ALTER TABLE sync_state ADD COLUMN last_error_code TEXT;
    ALTER TABLE sync_state ADD COLUMN last_error_zh TEXT;
    """,
)


def dumps(value: Any) -> str:
    """Canonical JSON text for storage (sorted keys, UTF-8 kept readable)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class DeviceIdentity:
    """The public facts about this device (no private key material)."""

    device_id: str
    created_at: str
    encryption_key_id: str
    signing_key_id: str
    public_keys: dict[str, str]
    server_url: str | None
    server_key_id: str | None
    scope: str | None
    enrolled_at: str | None


@dataclass(frozen=True)
class FormSummary:
    """One form version on the device."""

    form_id: str
    version: int
    title_zh: str
    sha256: str
    current: bool


@dataclass(frozen=True)
class LocalRecord:
    """A record as the device sees it.

    Attributes:
        data: the local view: the server's state with the device's outstanding edits on top.
        stamps: per path, the HLC stamp of the value last seen from the server (the ``base``
            of the next op for that path, unless an outstanding local op wrote it since).
        server_revision: the record revision last received from the server (0 = never).
    """

    record_id: str
    form_id: str
    form_version: int
    household: dict[str, str] | None
    round: str | None
    data: dict[str, Any]
    stamps: dict[str, str]
    server_revision: int
    deleted: bool
    created_at: str
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "record_id": self.record_id,
            "form_id": self.form_id,
            "form_version": self.form_version,
            "household": self.household,
            "round": self.round,
            "data": self.data,
            "server_revision": self.server_revision,
            "deleted": self.deleted,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class Draft:
    """Typed input that failed validation, kept so nothing typed is lost.

    ``record_id`` is None for a new record (a failed ``fill``) and the record's id for a failed
    ``edit``; ``issues`` are the validation issues (contracts §3 shape).
    """

    draft_id: str
    record_id: str | None
    form_id: str
    form_version: int
    household: dict[str, str] | None
    round: str | None
    data: dict[str, Any]
    issues: list[dict[str, Any]]
    created_at: str
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "draft_id": self.draft_id,
            "record_id": self.record_id,
            "form_id": self.form_id,
            "form_version": self.form_version,
            "household": self.household,
            "round": self.round,
            "data": self.data,
            "issues": self.issues,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class OutboxEntry:
    """One op in the outbox with its delivery state."""

    seq: int
    op: Op
    state: str
    attempts: int
    reasons: list[dict[str, Any]] | None
    corrected_by: int | None
    created_at: str
    sent_at: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "seq": self.seq,
            "record_id": self.op.record_id,
            "form_id": self.op.form_id,
            "kind": self.op.kind,
            "paths": sorted(self.op.changes),
            "state": self.state,
            "attempts": self.attempts,
            "reasons": self.reasons,
            "corrected_by": self.corrected_by,
            "created_at": self.created_at,
            "sent_at": self.sent_at,
        }


@dataclass(frozen=True)
class SyncState:
    """Where sync stands: op numbering, acknowledgement, clock, last success."""

    last_seq: int
    acked_through: int
    hlc_last: str | None
    server_time_ms: int | None
    last_sync_at: str | None
    last_error: str | None
    cursors: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class AckSummary:
    """What :meth:`DeviceStore.mark_acked` did."""

    removed: list[int]
    rejected: list[int]
    conflicts: list[str]
    acked_through: int


def _household(row: Mapping[str, Any]) -> dict[str, str] | None:
    if row["village_code"] is None:
        return None
    return {"village_code": row["village_code"], "household_no": row["household_no"]}


@contextmanager
def _owner_only(path: Path) -> Iterator[Any]:
    """A new file created 0600 from the start, opened for binary writing."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        yield handle


def _secure_file(path: Path) -> None:
    """Make sure only the owner can read the store (it holds private keys)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o600)


class DeviceStore:
    """The device's SQLite file. Create with :meth:`create`, open with :meth:`open`.

    ``now_ms`` is the wall clock in milliseconds (tests pass a fake); it drives both the HLC and
    the timestamps written to the file. Not thread-safe: one store object per thread.
    """

    def __init__(self, path: Path, db: sqlite_utils.Database, now_ms: Callable[[], int]) -> None:
        self.path = path
        self.db = db
        self._now_ms = now_ms
        self._device_id: str = db.execute("SELECT device_id FROM device").fetchone()[0]
        self._form_cache: dict[tuple[str, int], FormDefinition] = {}

    # --- opening ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], *, now_ms: Callable[[], int] = wall_clock_ms
    ) -> DeviceStore:
        """Create a new store at ``path`` (mode 0600) with fresh device keys and a device id.

        Raises:
            StoreExists: a file already exists at ``path``.
            StoreCorrupt: the file cannot be created.
        """
        target = Path(path)
        try:
            # O_EXCL: never adopt a file someone else prepared; 0600 from the first byte.
            fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError as exc:
            raise StoreExists(
                f"a device store already exists at {target}",
                message_zh=f"{target} 已有设备数据文件",
            ) from exc
        except OSError as exc:
            raise StoreCorrupt(
                f"cannot create {target}: {exc.strerror}",
                message_zh=f"无法创建 {target}：{exc.strerror}",
            ) from exc
        os.close(fd)
        try:
            db = cls._connect(target, creating=True)
            keys = generate_device_keys()
            created = _iso(now_ms())
            with db.atomic():
                db.execute(
                    "INSERT INTO device (id, device_id, created_at, encryption_private, "
                    "signing_private, encryption_key_id, signing_key_id) "
                    "VALUES (1, ?, ?, ?, ?, ?, ?)",
                    [
                        f"dev-{uuid.uuid4().hex}",
                        created,
                        keys.encryption.raw(),
                        keys.signing.raw(),
                        keys.encryption.key_id(),
                        keys.signing.key_id(),
                    ],
                )
                db.execute("INSERT INTO sync_state (id) VALUES (1)")
        except BaseException:
            # A half-made store would block the next `init` and fail every `open`: remove it.
            for leftover in (target, Path(f"{target}-wal"), Path(f"{target}-shm")):
                leftover.unlink(missing_ok=True)
            raise
        return cls(target, db, now_ms)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, now_ms: Callable[[], int] = wall_clock_ms
    ) -> DeviceStore:
        """Open an existing store, upgrading its schema if it is older than this program.

        Raises:
            StoreNotFound: no file at ``path``.
            StoreCorrupt: the file is not a device store, or comes from a newer program.
        """
        target = Path(path)
        if not target.is_file():
            raise StoreNotFound(
                f"no device store at {target}; run `village-device init` first",
                message_zh=f"{target} 没有设备数据文件，请先运行 village-device init",
            )
        db = cls._connect(target, creating=False)
        try:
            initialised = db.execute("SELECT count(*) FROM device").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreCorrupt(
                f"{target} is not a device store: {exc}",
                message_zh=f"{target} 不是设备数据文件",
            ) from exc
        if not initialised:
            db.close()
            raise StoreCorrupt(
                f"{target} is not an initialised device store",
                message_zh=f"{target} 不是已初始化的设备数据文件",
            )
        return cls(target, db, now_ms)

    @staticmethod
    def _connect(path: Path, *, creating: bool) -> sqlite_utils.Database:
        """Connect, refuse foreign or newer files, and apply pending migration steps.

        Only a file this code just created may start at schema version 0: migrating any other
        version-0 file would write our tables into somebody else's database.
        """
        try:
            conn = sqlite3.connect(str(path))
            db = sqlite_utils.Database(conn, execute_plugins=False)
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupt(
                f"{path} is not a SQLite file: {exc}", message_zh=f"{path} 不是 SQLite 数据文件"
            ) from exc
        if version == 0 and not creating:
            db.close()
            raise StoreCorrupt(
                f"{path} is not a device store", message_zh=f"{path} 不是设备数据文件"
            )
        if version > len(MIGRATIONS):
            db.close()
            raise StoreCorrupt(
                f"{path} has schema version {version}; this program knows {len(MIGRATIONS)}",
                message_zh=f"{path} 的数据结构版本 {version} 比本程序新，请升级程序",
            )
        with db.ensure_autocommit_on():
            # WAL keeps a crash mid-write from corrupting the file; SQLite gives the -wal and
            # -shm files the database file's own permissions (0600).
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        for step in range(version, len(MIGRATIONS)):
            with db.atomic():
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {step + 1}")
        _secure_file(path)
        return db

    def close(self) -> None:
        """Close the file."""
        self.db.close()

    def __enter__(self) -> DeviceStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def schema_version(self) -> int:
        """The ``PRAGMA user_version`` of the file (number of migration steps applied)."""
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def now_ms(self) -> int:
        """The store's wall clock, in ms."""
        return self._now_ms()

    def _now_iso(self) -> str:
        return _iso(self._now_ms())

    def _rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Iterator[dict]:
        return self.db.query(sql, params)

    def _one(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> dict | None:
        return next(iter(self.db.query(sql, params)), None)

    @contextmanager
    def transaction(self) -> Iterator[DeviceStore]:
        """One atomic unit of work; nested calls become savepoints of the outer one.

        The outer transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock before
        reading, so two processes on one file (a CLI run while the sync client works) queue up
        behind SQLite's busy timeout instead of both reading the same ``last_seq``.
        """
        if self.db.conn.in_transaction:
            with self.db.atomic():
                yield self
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.db.rollback()
            raise
        self.db.commit()

    # --- identity and keys -----------------------------------------------------------------

    @property
    def device_id(self) -> str:
        """This device's id (the op ``device_id`` and HLC node)."""
        return self._device_id

    def identity(self) -> DeviceIdentity:
        """The device's public identity and enrollment facts."""
        row = self._one("SELECT * FROM device")
        assert row is not None  # the constructor checked the row exists
        keys = self.key_bundle()
        return DeviceIdentity(
            device_id=row["device_id"],
            created_at=row["created_at"],
            encryption_key_id=row["encryption_key_id"],
            signing_key_id=row["signing_key_id"],
            public_keys=keys.public_document(),
            server_url=row["server_url"],
            server_key_id=row["server_key_id"],
            scope=row["scope"],
            enrolled_at=row["enrolled_at"],
        )

    def key_bundle(self) -> KeyBundle:
        """The device's private keys, loaded into memory for sealing and signing.

        The raw private bytes stay in the store file; nothing here writes them anywhere else.
        """
        row = self.db.execute("SELECT encryption_private, signing_private FROM device").fetchone()
        return KeyBundle(
            EncryptionPrivateKey.from_raw(bytes(row[0])), SigningPrivateKey.from_raw(bytes(row[1]))
        )

    def set_enrollment(
        self,
        *,
        server_url: str,
        server_encryption_public: bytes,
        server_signing_public: bytes,
        server_key_id: str,
        scope: str,
        device_id: str | None = None,
    ) -> None:
        """Record what enrollment returned: the server, its public keys, the device's scope.

        ``device_id``, when the server assigns one, replaces the local id; allowed only while
        no op has been sent yet (queued ops are rewritten to carry the new id).

        Raises:
            crypto.InvalidKey: a server key is not 32 valid raw bytes.
            DeviceError: the device id would change after ops were sent.
        """
        EncryptionPublicKey.from_raw(server_encryption_public)
        SigningPublicKey.from_raw(server_signing_public)
        with self.transaction():
            if device_id is not None and device_id != self._device_id:
                self._rename_device(device_id)
            self.db.execute(
                "UPDATE device SET server_url=?, server_encryption_public=?, "
                "server_signing_public=?, server_key_id=?, scope=?, enrolled_at=?",
                [
                    server_url,
                    server_encryption_public,
                    server_signing_public,
                    server_key_id,
                    scope,
                    self._now_iso(),
                ],
            )

    def _rename_device(self, device_id: str) -> None:
        sent = self.db.execute("SELECT count(*) FROM outbox WHERE state != 'pending'").fetchone()[0]
        state = self.sync_state()
        if sent or state.acked_through:
            raise DeviceError(
                "the device id cannot change after ops were sent",
                message_zh="已发送过数据，设备编号不能再更改",
            )
        for entry in self.outbox():
            data = entry.op.to_dict()
            data["device_id"] = device_id
            self.db.execute(
                "UPDATE outbox SET op=? WHERE seq=?", [Op.from_dict(data).to_json(), entry.seq]
            )
        self.db.execute("UPDATE device SET device_id=?", [device_id])
        self._device_id = device_id

    def server_keys(self) -> tuple[EncryptionPublicKey, SigningPublicKey] | None:
        """The server's public keys, or None before enrollment."""
        row = self.db.execute(
            "SELECT server_encryption_public, server_signing_public FROM device"
        ).fetchone()
        if row[0] is None:
            return None
        return EncryptionPublicKey.from_raw(bytes(row[0])), SigningPublicKey.from_raw(bytes(row[1]))

    def adopt_server_keys(
        self, *, encryption_public: bytes, signing_public: bytes, key_id: str
    ) -> bool:
        """Switch to the server's current keys (announced in a signed reply after a rotation);
        the next hello is sealed to them. Returns True when they differ from the stored ones."""
        row = self.db.execute(
            "SELECT server_encryption_public, server_signing_public, server_key_id FROM device"
        ).fetchone()
        if row[0] is None:
            raise BadInput("the device is not enrolled", message_zh="设备尚未注册")
        if (bytes(row[0]), bytes(row[1]), row[2]) == (encryption_public, signing_public, key_id):
            return False
        self.db.execute(
            "UPDATE device SET server_encryption_public=?, server_signing_public=?, "
            "server_key_id=?",
            [encryption_public, signing_public, key_id],
        )
        return True

    # --- configuration ---------------------------------------------------------------------

    def set_config(self, values: Mapping[str, Any]) -> None:
        """Store evaluation configuration (e.g. the monitoring income line), key by key."""
        with self.transaction():
            for key, value in values.items():
                self.db.execute(
                    "INSERT INTO config (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [key, dumps(value)],
                )

    def config(self) -> dict[str, Any]:
        """All configuration values."""
        return {r["key"]: json.loads(r["value"]) for r in self._rows("SELECT * FROM config")}

    # --- forms -----------------------------------------------------------------------------

    def put_form(self, document: Mapping[str, Any]) -> FormDefinition:
        """Store one form version (idempotent for the same content).

        Raises:
            FormDefinitionError: the document is not a valid form definition.
            StoreCorrupt: a different document is already stored under the same id+version
                (a published version never changes).
        """
        defn = load_definition(document)
        canonical = dumps(dump_definition(defn))
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        existing = self._one(
            "SELECT sha256 FROM forms WHERE form_id=? AND version=?", [defn.id, defn.version]
        )
        if existing is not None:
            if existing["sha256"] != digest:
                raise StoreCorrupt(
                    f"form {defn.key} is already stored with different content",
                    message_zh=f"表单 {defn.key} 已存在且内容不同",
                )
            return defn
        with self.transaction():
            self.db.execute(
                "INSERT INTO forms (form_id, version, title_zh, definition, sha256, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [defn.id, defn.version, defn.title.zh, canonical, digest, self._now_iso()],
            )
        return defn

    def forms(self) -> list[FormSummary]:
        """Every form version on the device; ``current`` marks the newest of each form."""
        rows = list(self._rows("SELECT * FROM forms ORDER BY form_id, version"))
        newest: dict[str, int] = {}
        for row in rows:
            newest[row["form_id"]] = max(newest.get(row["form_id"], 0), row["version"])
        return [
            FormSummary(
                form_id=row["form_id"],
                version=row["version"],
                title_zh=row["title_zh"],
                sha256=row["sha256"],
                current=row["version"] == newest[row["form_id"]],
            )
            for row in rows
        ]

    def form(self, form_id: str, version: int | None = None) -> FormDefinition:
        """The definition of ``form_id`` at ``version`` (default: the newest on the device).

        Raises:
            UnknownForm: the form or version is not on the device.
        """
        if version is None:
            row = self._one(
                "SELECT version FROM forms WHERE form_id=? ORDER BY version DESC LIMIT 1",
                [form_id],
            )
            version = row["version"] if row else None
        # A stored version never changes (put_form refuses other content), so it is cached.
        cached = self._form_cache.get((form_id, version)) if version is not None else None
        if cached is not None:
            return cached
        row = (
            self._one(
                "SELECT definition FROM forms WHERE form_id=? AND version=?", [form_id, version]
            )
            if version is not None
            else None
        )
        if row is None:
            what = form_id if version is None else f"{form_id}@{version}"
            raise UnknownForm(
                f"form {what} is not on this device (see `village-device forms`)",
                message_zh=f"设备上没有表单 {what}（用 village-device forms 查看）",
            )
        try:
            defn = load_definition(json.loads(row["definition"]))
        except FormDefinitionError as exc:  # stored forms were validated when put
            raise StoreCorrupt(str(exc), message_zh="设备上的表单定义已损坏") from exc
        self._form_cache[(form_id, defn.version)] = defn
        return defn

    # --- households ------------------------------------------------------------------------

    def put_household(
        self,
        village_code: str,
        household_no: str,
        data: Mapping[str, Any] | None = None,
        revision: int = 0,
    ) -> None:
        """Add or update a household in scope (from the server's download)."""
        with self.transaction():
            self.db.execute(
                "INSERT INTO households (village_code, household_no, data, revision, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (village_code, household_no) DO UPDATE SET "
                "data = excluded.data, revision = excluded.revision, "
                "updated_at = excluded.updated_at",
                [village_code, household_no, dumps(dict(data or {})), revision, self._now_iso()],
            )

    def households(self) -> list[dict[str, Any]]:
        """Households in scope, by village code and number."""
        return [
            {
                "village_code": r["village_code"],
                "household_no": r["household_no"],
                "data": json.loads(r["data"]),
                "revision": r["revision"],
            }
            for r in self._rows("SELECT * FROM households ORDER BY village_code, household_no")
        ]

    # --- records ---------------------------------------------------------------------------

    @staticmethod
    def _record(row: Mapping[str, Any]) -> LocalRecord:
        return LocalRecord(
            record_id=row["record_id"],
            form_id=row["form_id"],
            form_version=row["form_version"],
            household=_household(row),
            round=row["round"],
            data=json.loads(row["data"]),
            stamps=json.loads(row["stamps"]),
            server_revision=row["server_revision"],
            deleted=bool(row["deleted"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def record(self, record_id: str) -> LocalRecord:
        """One record by id.

        Raises:
            UnknownRecord: no record with that id.
        """
        row = self._one("SELECT * FROM records WHERE record_id=?", [record_id])
        if row is None:
            raise UnknownRecord(
                f"no record {record_id} on this device", message_zh=f"设备上没有记录 {record_id}"
            )
        return self._record(row)

    def find_record(self, prefix: str) -> LocalRecord:
        """The record whose id is ``prefix`` or uniquely starts with it (ids are long UUIDs).

        Raises:
            UnknownRecord: no record, or several, match.
        """
        rows = list(
            self._rows(
                "SELECT * FROM records WHERE record_id = ? OR record_id LIKE ? ESCAPE '\\' LIMIT 2",
                [
                    prefix,
                    prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",
                ],
            )
        )
        exact = [r for r in rows if r["record_id"] == prefix]
        if exact:
            return self._record(exact[0])
        if len(rows) != 1 or not prefix:
            raise UnknownRecord(
                f"no single record matches {prefix!r}", message_zh=f"找不到唯一匹配 {prefix} 的记录"
            )
        return self._record(rows[0])

    def records(
        self, *, form_id: str | None = None, include_deleted: bool = False
    ) -> list[LocalRecord]:
        """Records on the device, newest edit first."""
        sql = "SELECT * FROM records WHERE 1=1"
        params: list[Any] = []
        if form_id is not None:
            sql += " AND form_id = ?"
            params.append(form_id)
        if not include_deleted:
            sql += " AND deleted = 0"
        sql += " ORDER BY updated_at DESC, record_id"
        return [self._record(r) for r in self._rows(sql, params)]

    def _write_record(
        self,
        *,
        record_id: str,
        form_id: str,
        form_version: int,
        household: Mapping[str, str] | None,
        round: str | None,
        data: Mapping[str, Any],
        stamps: Mapping[str, str] | None = None,
        server_revision: int | None = None,
        deleted: bool | None = None,
    ) -> None:
        now = self._now_iso()
        existing = self._one("SELECT * FROM records WHERE record_id=?", [record_id])
        hh = dict(household) if household else {}
        if existing is None:
            self.db.execute(
                "INSERT INTO records (record_id, form_id, form_version, village_code, "
                "household_no, round, data, stamps, server_revision, deleted, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    record_id,
                    form_id,
                    form_version,
                    hh.get("village_code"),
                    hh.get("household_no"),
                    round,
                    dumps(dict(data)),
                    dumps(dict(stamps or {})),
                    server_revision or 0,
                    int(bool(deleted)),
                    now,
                    now,
                ],
            )
            return
        self.db.execute(
            "UPDATE records SET form_id=?, form_version=?, village_code=?, household_no=?, "
            "round=?, data=?, stamps=?, server_revision=?, deleted=?, updated_at=? "
            "WHERE record_id=?",
            [
                form_id,
                form_version,
                hh.get("village_code", existing["village_code"]),
                hh.get("household_no", existing["household_no"]),
                round if round is not None else existing["round"],
                dumps(dict(data)),
                dumps(dict(stamps)) if stamps is not None else existing["stamps"],
                server_revision if server_revision is not None else existing["server_revision"],
                int(deleted) if deleted is not None else existing["deleted"],
                now,
                record_id,
            ],
        )

    # --- drafts ----------------------------------------------------------------------------

    def save_draft(
        self,
        *,
        form_id: str,
        form_version: int,
        data: Mapping[str, Any],
        issues: Sequence[Mapping[str, Any]],
        household: Mapping[str, str] | None = None,
        round: str | None = None,
        record_id: str | None = None,
        draft_id: str | None = None,
    ) -> str:
        """Keep typed data that failed validation; returns the draft id (new or ``draft_id``)."""
        now = self._now_iso()
        hh = dict(household) if household else {}
        with self.transaction():
            if draft_id is not None and self._one(
                "SELECT 1 FROM drafts WHERE draft_id=?", [draft_id]
            ):
                self.db.execute(
                    "UPDATE drafts SET data=?, issues=?, updated_at=? WHERE draft_id=?",
                    [dumps(dict(data)), dumps([dict(i) for i in issues]), now, draft_id],
                )
                return draft_id
            new_id = f"draft-{uuid.uuid4().hex[:12]}"
            self.db.execute(
                "INSERT INTO drafts (draft_id, record_id, form_id, form_version, village_code, "
                "household_no, round, data, issues, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    new_id,
                    record_id,
                    form_id,
                    form_version,
                    hh.get("village_code"),
                    hh.get("household_no"),
                    round,
                    dumps(dict(data)),
                    dumps([dict(i) for i in issues]),
                    now,
                    now,
                ],
            )
            return new_id

    @staticmethod
    def _draft(row: Mapping[str, Any]) -> Draft:
        return Draft(
            draft_id=row["draft_id"],
            record_id=row["record_id"],
            form_id=row["form_id"],
            form_version=row["form_version"],
            household=_household(row),
            round=row["round"],
            data=json.loads(row["data"]),
            issues=json.loads(row["issues"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def draft(self, draft_id: str) -> Draft | None:
        """The draft with that id, or None."""
        row = self._one("SELECT * FROM drafts WHERE draft_id=?", [draft_id])
        return self._draft(row) if row else None

    def drafts(self) -> list[Draft]:
        """Every draft, oldest first."""
        return [self._draft(r) for r in self._rows("SELECT * FROM drafts ORDER BY created_at")]

    def delete_draft(self, draft_id: str) -> None:
        """Drop a draft once its data has become a valid record or edit."""
        self.db.execute("DELETE FROM drafts WHERE draft_id=?", [draft_id])

    # --- the outbox ------------------------------------------------------------------------

    def _clock(self) -> HybridClock:
        last = self.db.execute("SELECT hlc_last FROM sync_state").fetchone()[0]
        return HybridClock(self._device_id, self._now_ms, last=Stamp.parse(last) if last else None)

    def queue_op(
        self,
        build: Callable[[int, Stamp], Op],
        *,
        record: Mapping[str, Any],
        corrects: Iterable[int] = (),
        draft_id: str | None = None,
    ) -> Op:
        """Append one op and write its record, atomically.

        ``build(seq, stamp)`` receives the next op sequence number and a fresh HLC stamp and
        returns the op. ``record`` holds the keyword arguments of the record write (record_id,
        form_id, form_version, household, round, data). ``corrects`` lists rejected ops this op
        corrects (they move to state ``corrected``); ``draft_id`` is deleted in the same
        transaction (its data became this op).

        Raises:
            sync_protocol.ops.OpFormatError: ``build`` produced a malformed op (nothing written).
        """
        with self.transaction():
            state = self.db.execute("SELECT last_seq, hlc_last FROM sync_state").fetchone()
            seq = state[0] + 1
            clock = self._clock()
            stamp = clock.now()
            op = build(seq, stamp)
            self.db.execute(
                "INSERT INTO outbox (seq, record_id, kind, op, created_at) VALUES (?, ?, ?, ?, ?)",
                [seq, op.record_id, op.kind, op.to_json(), self._now_iso()],
            )
            self.db.execute("UPDATE sync_state SET last_seq=?, hlc_last=?", [seq, stamp.to_text()])
            self._write_record(**record)
            for old in corrects:
                self.db.execute(
                    "UPDATE outbox SET state='corrected', corrected_by=? "
                    "WHERE seq=? AND state='rejected'",
                    [seq, old],
                )
            if draft_id is not None:
                self.delete_draft(draft_id)
        return op

    @staticmethod
    def _entry(row: Mapping[str, Any]) -> OutboxEntry:
        return OutboxEntry(
            seq=row["seq"],
            op=Op.from_dict(json.loads(row["op"])),
            state=row["state"],
            attempts=row["attempts"],
            reasons=json.loads(row["reasons"]) if row["reasons"] else None,
            corrected_by=row["corrected_by"],
            created_at=row["created_at"],
            sent_at=row["sent_at"],
        )

    def outbox(
        self, states: Iterable[str] = OP_STATES, *, record_id: str | None = None
    ) -> list[OutboxEntry]:
        """Outbox entries in the given states (of one record, if given), by sequence."""
        wanted: list[Any] = list(states)
        marks = ",".join("?" for _ in wanted)
        sql = f"SELECT * FROM outbox WHERE state IN ({marks})"
        if record_id is not None:
            sql += " AND record_id = ?"
            wanted.append(record_id)
        return [self._entry(r) for r in self._rows(sql + " ORDER BY seq", wanted)]

    def pending_ops(self, limit: int | None = None) -> list[Op]:
        """Ops still to deliver (``pending`` or ``sent`` without an ack), lowest seq first.

        Sent-but-unacked ops are included: the exchange that carried them may have been lost,
        and the server treats a replay as a duplicate.
        """
        sql = "SELECT * FROM outbox WHERE state IN ('pending', 'sent') ORDER BY seq"
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [self._entry(r).op for r in self._rows(sql, params)]

    def mark_sent(self, seqs: Iterable[int]) -> None:
        """Note that these ops went out in an exchange (attempts counted)."""
        now = self._now_iso()
        with self.transaction():
            for seq in seqs:
                self.db.execute(
                    "UPDATE outbox SET state='sent', attempts=attempts+1, sent_at=? "
                    "WHERE seq=? AND state IN ('pending', 'sent')",
                    [now, seq],
                )

    def mark_acked(self, seqs: Iterable[int], acks: Iterable[Mapping[str, Any]]) -> AckSummary:
        """Apply the server's acks (contracts §7) for ops ``seqs``, all or nothing.

        Every seq in ``seqs`` needs exactly one ack and every ack must name one of ``seqs``.
        ``applied``, ``merged``, ``duplicate`` and ``conflict`` remove the op from the outbox
        (the op's stamps become the record's base for the paths it wrote; conflict ids are
        recorded); ``rejected`` keeps it with its reasons. Acks for ops already removed are
        accepted again (a replayed exchange) and change nothing.

        Raises:
            AckMismatch: missing, extra, duplicate or malformed acks; nothing is changed.
        """
        wanted = list(seqs)
        by_seq: dict[int, Mapping[str, Any]] = {}
        for ack in acks:
            seq = ack.get("seq") if isinstance(ack, Mapping) else None
            status = ack.get("status") if isinstance(ack, Mapping) else None
            if not isinstance(seq, int) or status not in ACK_STATUSES:
                raise AckMismatch(f"malformed ack {ack!r}", message_zh="服务器确认格式错误")
            if seq in by_seq or seq not in wanted:
                raise AckMismatch(
                    f"ack for seq {seq} was not expected", message_zh=f"收到意外的确认：{seq}"
                )
            by_seq[seq] = ack
        missing = [s for s in wanted if s not in by_seq]
        if missing:
            raise AckMismatch(
                f"no ack for seq {missing}", message_zh=f"缺少对操作 {missing} 的确认"
            )
        removed: list[int] = []
        rejected: list[int] = []
        conflict_ids: list[str] = []
        with self.transaction():
            for seq in wanted:
                ack = by_seq[seq]
                row = self._one("SELECT * FROM outbox WHERE seq=?", [seq])
                if row is None or row["state"] in ("rejected", "corrected"):
                    continue  # a replayed ack for an op already settled
                entry = self._entry(row)
                if ack["status"] == "rejected":
                    self._reject(seq, ack.get("reasons") or [])
                    rejected.append(seq)
                    continue
                self._fold_own_stamps(entry.op)
                for conflict_id in ack.get("conflict_ids") or []:
                    self.db.execute(
                        "INSERT OR IGNORE INTO conflicts (conflict_id, record_id, seq, detail, "
                        "received_at, listed) VALUES (?, ?, ?, ?, ?, 0)",
                        [
                            conflict_id,
                            entry.op.record_id,
                            seq,
                            dumps({"paths": sorted(entry.op.changes)}),
                            self._now_iso(),
                        ],
                    )
                    conflict_ids.append(conflict_id)
                self.db.execute("DELETE FROM outbox WHERE seq=?", [seq])
                removed.append(seq)
            through = self._update_acked_through()
            self._settle_duplicates()
        return AckSummary(removed, rejected, conflict_ids, through)

    def _fold_own_stamps(self, op: Op) -> None:
        """After an ack, the op's own writes are what the device last saw at those paths."""
        row = self._one("SELECT stamps FROM records WHERE record_id=?", [op.record_id])
        if row is None:
            return
        stamps = json.loads(row["stamps"])
        for path in op.changes:
            if stamps.get(path, "") < op.hlc:
                stamps[path] = op.hlc
        self.db.execute(
            "UPDATE records SET stamps=? WHERE record_id=?", [dumps(stamps), op.record_id]
        )

    def _update_acked_through(self) -> int:
        outstanding = self.db.execute(
            "SELECT min(seq) FROM outbox WHERE state IN ('pending', 'sent')"
        ).fetchone()[0]
        last_seq = self.db.execute("SELECT last_seq FROM sync_state").fetchone()[0]
        through = (outstanding - 1) if outstanding is not None else last_seq
        self.db.execute("UPDATE sync_state SET acked_through=?", [through])
        return int(through)

    def _reject(self, seq: int, reasons: Sequence[Mapping[str, Any]]) -> None:
        self.db.execute(
            "UPDATE outbox SET state='rejected', reasons=? WHERE seq=?",
            [dumps([dict(r) for r in reasons]), seq],
        )

    def mark_rejected(self, seq: int, reasons: Sequence[Mapping[str, Any]]) -> None:
        """Keep op ``seq`` for correction with the server's per-field reasons.

        Raises:
            AckMismatch: no pending or sent op has that seq.
        """
        with self.transaction():
            row = self._one("SELECT state FROM outbox WHERE seq=?", [seq])
            if row is None or row["state"] not in ("pending", "sent"):
                raise AckMismatch(
                    f"no outstanding op {seq} to reject", message_zh=f"没有待确认的操作 {seq}"
                )
            self._reject(seq, reasons)
            self._update_acked_through()

    def rejected_ops(self, record_id: str | None = None) -> list[OutboxEntry]:
        """Rejected ops awaiting correction (optionally of one record)."""
        return self.outbox(["rejected"], record_id=record_id)

    def outstanding_ops(self, record_id: str) -> list[Op]:
        """Ops of a record the server has not applied: pending, sent or rejected, by seq."""
        return [
            self._entry(r).op
            for r in self._rows(
                "SELECT * FROM outbox WHERE record_id=? AND state IN ('pending','sent','rejected') "
                "ORDER BY seq",
                [record_id],
            )
        ]

    # --- applying server state -------------------------------------------------------------

    def apply_server_state(self, state: Mapping[str, Any]) -> bool:
        """Replace a record with the server's merged state, keeping outstanding local edits.

        ``state`` is what the server sends for a record: a full record state
        (``sync_protocol.merge.RecordState.to_dict()``, as acks and download pages carry it)
        or its device view (``sync_protocol.merge.device_view``: ``values`` as flat paths,
        ``stamps``, ``revision``, ``deleted``, ``conflicts``). The server's values and stamps
        become the record's; ops still outstanding for the record (pending, sent or rejected —
        call :meth:`mark_acked` for the same exchange first) are re-applied on top, so the user
        keeps seeing what they typed. The record's open conflicts follow the server's list. A
        state older than the revision already held is ignored. Returns True when written.

        Raises:
            BadInput: the state is malformed.
        """
        described: dict[str, dict[str, Any]] = {}
        try:
            # Optional: conflicts the server closed that record states never list
            # (``duplicate_household``, e.g. settled with keep_both, which changes no record).
            closed_ids = [str(c) for c in state.get("closed_conflicts") or []]
            if "paths" in state and "format" in state:
                full = RecordState.from_dict(state)
                described = {c.conflict_id: self._describe(c.to_dict()) for c in full.conflicts}
                state = device_view(full)
            record_id = str(state["record_id"])
            revision = int(state["revision"])
            values = dict(state["values"])
            stamps = {str(k): str(v) for k, v in dict(state.get("stamps") or {}).items()}
            form_id = str(state["form_id"])
            form_version = int(state["form_version"])
            conflict_ids = [str(c) for c in state.get("conflicts") or []]
            household = state.get("household")
            if household is not None:
                household = {
                    "village_code": str(household["village_code"]),
                    "household_no": str(household["household_no"]),
                }
        except (KeyError, TypeError, ValueError, ProtocolError) as exc:
            raise BadInput(
                f"server record state is malformed: {exc}", message_zh="服务器返回的记录格式错误"
            ) from exc
        with self.transaction():
            # A closed conflict stays closed, whatever the revision of the state naming it.
            for conflict_id in closed_ids:
                self.db.execute(
                    "UPDATE conflicts SET status = 'resolved' "
                    "WHERE conflict_id = ? AND status = 'open'",
                    [conflict_id],
                )
            existing = self._one(
                "SELECT server_revision FROM records WHERE record_id=?", [record_id]
            )
            if existing is not None and existing["server_revision"] > revision:
                return False
            flat = dict(values)
            for op in self.outstanding_ops(record_id):
                flat.update(op.changes)
            try:
                merged = unflatten(flat, is_tombstone=is_tombstone)
            except FormsError as exc:
                raise BadInput(
                    f"server record values do not form a record: {exc}",
                    message_zh="服务器返回的记录数据无法还原",
                ) from exc
            self._write_record(
                record_id=record_id,
                form_id=form_id,
                form_version=form_version,
                household=household,
                round=state.get("round"),
                data=merged,
                stamps=stamps,
                server_revision=revision,
                deleted=bool(state.get("deleted", False)),
            )
            self._sync_conflicts(record_id, conflict_ids)
            for conflict_id, description in described.items():
                row = self._one("SELECT detail FROM conflicts WHERE conflict_id=?", [conflict_id])
                if row is not None:
                    detail = {**json.loads(row["detail"] or "{}"), **description}
                    self.db.execute(
                        "UPDATE conflicts SET detail=? WHERE conflict_id=?",
                        [dumps(detail), conflict_id],
                    )
            self._settle_duplicates()
        return True

    def _describe(self, conflict: Mapping[str, Any]) -> dict[str, Any]:
        """What ``status`` shows of a field conflict: kind, path, this device's value and the
        competing one (newest candidate of another device), when the state tells them."""
        mine, theirs = conflict.get("mine"), conflict.get("theirs")
        own = [c for c in conflict.get("candidates") or [] if c.get("device") == self.device_id]
        other = [c for c in conflict.get("candidates") or [] if c.get("device") != self.device_id]
        if own and other:
            mine, theirs = own[-1].get("value"), other[-1].get("value")
        return {
            "kind": conflict.get("kind"),
            "path": conflict.get("path"),
            "mine": mine,
            "theirs": theirs,
        }

    def _sync_conflicts(self, record_id: str, open_ids: Sequence[str]) -> None:
        """Make the record's open listed conflicts exactly the server's list.

        A record state lists only the conflicts of its merge (field and delete conflicts); a
        conflict the device knows only from an ack (``duplicate_household``) is left alone here
        and settled by :meth:`_settle_duplicates`.
        """
        now = self._now_iso()
        for conflict_id in open_ids:
            self.db.execute(
                "INSERT INTO conflicts (conflict_id, record_id, received_at, listed) "
                "VALUES (?, ?, ?, 1) "
                "ON CONFLICT (conflict_id) DO UPDATE SET status = 'open', listed = 1",
                [conflict_id, record_id, now],
            )
        marks = ",".join("?" for _ in open_ids) or "''"
        self.db.execute(
            f"UPDATE conflicts SET status = 'resolved' WHERE record_id = ? "
            f"AND status = 'open' AND listed = 1 AND conflict_id NOT IN ({marks})",
            [record_id, *open_ids],
        )

    def _settle_duplicates(self) -> None:
        """Close the open duplicate-household conflicts the server's records show settled.

        Such a conflict stays open until one of its two records is deleted (an admin kept the
        other one). The twin is the other live record of the same household, form and round;
        it is remembered in the conflict's detail when first seen, and a conflict whose twin
        this device has not seen yet stays open.
        """
        for row in self._rows(
            "SELECT conflict_id, record_id, detail FROM conflicts "
            "WHERE status = 'open' AND listed = 0"
        ):
            detail = dict(json.loads(row["detail"] or "{}"))
            own = self._one(
                "SELECT form_id, village_code, household_no, round, deleted FROM records "
                "WHERE record_id = ?",
                [row["record_id"]],
            )
            if own is None:
                continue
            twin_id = detail.get("twin")
            if twin_id is None and not own["deleted"]:
                twin = self._one(
                    "SELECT record_id FROM records WHERE record_id != ? AND form_id = ? "
                    "AND village_code IS ? AND household_no IS ? AND round IS ? AND deleted = 0 "
                    "ORDER BY created_at, record_id LIMIT 1",
                    [
                        row["record_id"],
                        own["form_id"],
                        own["village_code"],
                        own["household_no"],
                        own["round"],
                    ],
                )
                if twin is not None:
                    twin_id = detail["twin"] = twin["record_id"]
                    self.db.execute(
                        "UPDATE conflicts SET detail = ? WHERE conflict_id = ?",
                        [dumps(detail), row["conflict_id"]],
                    )
            twin_row = (
                None
                if twin_id is None
                else self._one("SELECT deleted FROM records WHERE record_id = ?", [twin_id])
            )
            if own["deleted"] or (twin_row is not None and twin_row["deleted"]):
                self.db.execute(
                    "UPDATE conflicts SET status = 'resolved' WHERE conflict_id = ?",
                    [row["conflict_id"]],
                )

    # --- sync state ------------------------------------------------------------------------

    def observe_server_time(self, server_ms: int) -> None:
        """Fold the server's clock (every response carries it) into the device HLC."""
        with self.transaction():
            stamp = self._clock().observe(int(server_ms))
            self.db.execute(
                "UPDATE sync_state SET hlc_last=?, server_time_ms=?", [stamp.to_text(), server_ms]
            )

    def sync_state(self) -> SyncState:
        """The current sync state, with every cursor."""
        row = self._one("SELECT * FROM sync_state")
        assert row is not None  # created with the store
        cursors: dict[str, dict[str, str]] = {}
        for r in self._rows("SELECT * FROM cursors ORDER BY scope, stream"):
            cursors.setdefault(r["scope"], {})[r["stream"]] = r["cursor"]
        return SyncState(
            last_seq=row["last_seq"],
            acked_through=row["acked_through"],
            hlc_last=row["hlc_last"],
            server_time_ms=row["server_time_ms"],
            last_sync_at=row["last_sync_at"],
            last_error=row["last_error"],
            cursors=cursors,
        )

    def cursor(self, scope: str, stream: str = "records") -> str | None:
        """The download cursor of ``stream`` for ``scope`` (exclusive ``since``), or None."""
        row = self._one("SELECT cursor FROM cursors WHERE scope=? AND stream=?", [scope, stream])
        return row["cursor"] if row else None

    def set_cursor(self, scope: str, cursor: str, stream: str = "records") -> None:
        """Advance a download cursor (call in the same transaction as the page it follows)."""
        self.db.execute(
            "INSERT INTO cursors (scope, stream, cursor) VALUES (?, ?, ?) "
            "ON CONFLICT (scope, stream) DO UPDATE SET cursor = excluded.cursor",
            [scope, stream, str(cursor)],
        )

    def record_sync_result(
        self,
        *,
        ok: bool,
        error: str | None = None,
        error_zh: str | None = None,
        code: str | None = None,
    ) -> None:
        """Remember the end of an exchange: success time, or the last error (English text,
        Chinese text and stable code)."""
        if ok:
            self.db.execute(
                "UPDATE sync_state SET last_sync_at=?, last_error=NULL, last_error_zh=NULL, "
                "last_error_code=NULL",
                [self._now_iso()],
            )
        else:
            self.db.execute(
                "UPDATE sync_state SET last_error=?, last_error_zh=?, last_error_code=?",
                [error or "unknown error", error_zh or error or "未知错误", code],
            )

    # --- conflicts -------------------------------------------------------------------------

    def conflicts(self, status: str | None = "open") -> list[dict[str, Any]]:
        """Conflicts the server reported for this device's ops."""
        sql = "SELECT * FROM conflicts"
        params: list[Any] = []
        if status is not None:
            sql += " WHERE status=?"
            params.append(status)
        found = []
        for r in self._rows(sql + " ORDER BY received_at", params):
            detail = json.loads(r["detail"])
            record = self._one(
                "SELECT form_id, form_version, village_code, household_no FROM records "
                "WHERE record_id=?",
                [r["record_id"]],
            )
            household = label = None
            if record is not None:
                if record["household_no"] is not None:
                    household = f"{record['village_code']}/{record['household_no']}"
                path = detail.get("path") or next(iter(detail.get("paths") or []), None)
                if detail.get("kind", "field") == "field" and path:
                    label = self._field_label(record["form_id"], record["form_version"], path)
            found.append({**r, "detail": detail, "household": household, "field_label": label})
        return found

    def _field_label(self, form_id: str, version: int, path: str) -> str | None:
        try:
            fld = self.form(form_id, version).find_field(path)
        except (DeviceError, FormsError):
            return None
        return fld.label.zh if fld is not None and fld.label is not None else None

    def set_conflict_status(self, conflict_id: str, status: str) -> None:
        """Mark a conflict resolved (the server says so) or open."""
        self.db.execute("UPDATE conflicts SET status=? WHERE conflict_id=?", [status, conflict_id])

    # --- attachments -----------------------------------------------------------------------

    def photos_dir(self) -> Path:
        """The owner-only folder beside the device file holding attached photos by SHA-256."""
        return self.path.with_name(self.path.name + ".photos")

    def add_attachment(self, path: str | os.PathLike[str], record_id: str | None = None) -> str:
        """Copy a file (a house photo) into :meth:`photos_dir` by content; returns
        ``sha256:<hex>``.

        The bytes are copied at attach time (file 0600, folder 0700), so deleting or editing
        the original afterwards loses nothing; uploads read the copy.

        Raises:
            BadInput: the file cannot be read, or the copy cannot be written.
        """
        source = Path(path)
        folder = self.photos_dir()
        digest = hashlib.sha256()
        size = 0
        temp = folder / f".{uuid.uuid4().hex}.part"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chmod(folder, 0o700)
            with source.open("rb") as handle, _owner_only(temp) as copy:
                for block in iter(lambda: handle.read(65536), b""):
                    digest.update(block)
                    copy.write(block)
                    size += len(block)
                copy.flush()
                os.fsync(copy.fileno())
            hex_digest = digest.hexdigest()
            kept = folder / hex_digest
            os.replace(temp, kept)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise BadInput(
                f"cannot copy {source} into {folder}: {exc.strerror or exc}",
                message_zh=f"无法读取或保存照片文件 {source}",
            ) from exc
        self.db.execute(
            "INSERT INTO attachments (sha256, path, size, record_id, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (sha256) DO UPDATE SET path = excluded.path",
            [hex_digest, str(kept.resolve()), size, record_id, self._now_iso()],
        )
        return f"sha256:{hex_digest}"

    def note_upload_error(self, sha256_hex: str, zh: str | None, en: str | None = None) -> None:
        """Remember why an attachment's upload stopped (``None`` clears it)."""
        value = None if zh is None else dumps({"zh": zh, "en": en or zh})
        self.db.execute("UPDATE attachments SET last_error=? WHERE sha256=?", [value, sha256_hex])

    def attachments(self, *, unfinished: bool = False) -> list[dict[str, Any]]:
        """Registered attachments (only those not fully uploaded when ``unfinished``)."""
        sql = "SELECT * FROM attachments"
        if unfinished:
            sql += " WHERE confirmed_offset < size"
        return list(self._rows(sql + " ORDER BY created_at"))

    def confirm_upload_offset(self, sha256_hex: str, offset: int) -> None:
        """Record how many bytes the server has confirmed (only ever moves forward)."""
        self.db.execute(
            "UPDATE attachments SET confirmed_offset = max(confirmed_offset, min(?, size)) "
            "WHERE sha256=?",
            [offset, sha256_hex],
        )

    # --- overview --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``village-device status`` shows: outbox, rejections, conflicts, last sync."""
        state = self.sync_state()
        counts = {
            r["state"]: r["n"]
            for r in self._rows("SELECT state, count(*) AS n FROM outbox GROUP BY state")
        }
        identity = self.identity()
        sync_row = self._one("SELECT last_error_zh, last_error_code FROM sync_state")
        assert sync_row is not None  # created with the store
        return {
            "device_id": identity.device_id,
            "enrolled": identity.server_url is not None,
            "server_url": identity.server_url,
            "scope": identity.scope,
            "pending_ops": counts.get("pending", 0) + counts.get("sent", 0),
            "last_seq": state.last_seq,
            "acked_through": state.acked_through,
            "rejected": [e.to_dict() for e in self.rejected_ops()],
            "conflicts": self.conflicts("open"),
            "drafts": [
                {
                    "draft_id": d.draft_id,
                    "record_id": d.record_id,
                    "form_id": d.form_id,
                    "issues": len(d.issues),
                }
                for d in self.drafts()
            ],
            "records": self.db.execute("SELECT count(*) FROM records WHERE deleted = 0").fetchone()[
                0
            ],
            "last_sync_at": state.last_sync_at,
            "last_error": state.last_error,
            "last_error_zh": sync_row["last_error_zh"],
            "last_error_code": sync_row["last_error_code"],
            "revoked": sync_row["last_error_code"] == "device_revoked",
            "attachments_unfinished": len(unfinished := self.attachments(unfinished=True)),
            "photos_unfinished": [
                {
                    "sha256": a["sha256"],
                    "size": a["size"],
                    "confirmed_offset": a["confirmed_offset"],
                    "record_id": a["record_id"],
                    "reason": json.loads(a["last_error"]) if a["last_error"] else None,
                }
                for a in unfinished
            ],
        }
