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
from pathlib import Path
from typing import Any

import sqlite_utils

from forms.definition import FormDefinition, dump_definition, load_definition
from forms.errors import FormDefinitionError, FormsError
from sync_protocol import device as engine_errors
from sync_protocol.clock import Stamp, wall_clock_ms
from sync_protocol.crypto import (
    EncryptionPrivateKey,
    EncryptionPublicKey,
    KeyBundle,
    SigningPrivateKey,
    SigningPublicKey,
    generate_device_keys,
)
from sync_protocol.device import ACK_STATUSES, OP_STATES, AckSummary, DeviceEngine, OutboxItem
from sync_protocol.ops import Op
from village_client_stub.engine_storage import SqliteEngineStorage, iso_ms
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
    # Verification tasks of the ``tasks`` download stream (issue 17), each its stream entry as
    # received; the outcome is worked as an ordinary ``verification_outcome`` record.
    """
    CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY,
        village_code TEXT NOT NULL,
        household_no TEXT NOT NULL,
        status TEXT NOT NULL,
        deadline TEXT NOT NULL,
        revision INTEGER NOT NULL,
        entry TEXT NOT NULL,
        received_at TEXT NOT NULL
    );
    CREATE INDEX ix_tasks_deadline ON tasks (deadline);
    """,
)


def dumps(value: Any) -> str:
    """Canonical JSON text for storage (sorted keys, UTF-8 kept readable)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


_iso = iso_ms


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
        self._storage = SqliteEngineStorage(self)

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

    # --- the outbox and server state: the device engine's unit of work -----------------------

    @property
    def engine(self) -> DeviceEngine:
        """The sans-I/O device engine (``sync_protocol.device``) over this file.

        Call its writing methods inside :meth:`transaction` (one engine call = one unit of
        work); the methods below do that for the CLI and the sync client.
        """
        return DeviceEngine(self._storage, self._device_id)

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
        returns the op (:meth:`DeviceEngine.queue_op`). ``record`` holds the keyword arguments
        of the record write (record_id, form_id, form_version, household, round, data).
        ``corrects`` lists rejected ops this op corrects (they move to state ``corrected``);
        ``draft_id`` is deleted in the same transaction (its data became this op).

        Raises:
            sync_protocol.ops.OpFormatError: ``build`` produced a malformed op (nothing written).
        """
        with self.transaction():
            op = self.engine.queue_op(build, now_ms=self._now_ms(), corrects=corrects)
            self._write_record(**record)
            if draft_id is not None:
                self.delete_draft(draft_id)
        return op

    @staticmethod
    def _entry(item: OutboxItem) -> OutboxEntry:
        return OutboxEntry(
            seq=item.seq,
            op=item.op,
            state=item.state,
            attempts=item.attempts,
            reasons=None if item.reasons is None else [dict(r) for r in item.reasons],
            corrected_by=item.corrected_by,
            created_at=_iso(item.created_at_ms),
            sent_at=None if item.sent_at_ms is None else _iso(item.sent_at_ms),
        )

    def outbox(
        self, states: Iterable[str] = OP_STATES, *, record_id: str | None = None
    ) -> list[OutboxEntry]:
        """Outbox entries in the given states (of one record, if given), by sequence."""
        items = self._storage.outbox_items(list(states), record_id=record_id)
        return [self._entry(item) for item in items]

    def pending_ops(self, limit: int | None = None) -> list[Op]:
        """Ops still to deliver (``pending`` or ``sent`` without an ack), lowest seq first.

        Sent-but-unacked ops are included: the exchange that carried them may have been lost,
        and the server treats a replay as a duplicate.
        """
        return self.engine.pending_ops(limit)

    def pending_count(self) -> int:
        """How many ops :meth:`pending_ops` would return, counted in SQL.

        The sync client asks before every exchange (progress, the final report); decoding the
        whole outbox to count it was a sixth of a syncing tablet's CPU (py-spy, bench ingest).
        """
        row = self._one("SELECT count(*) AS n FROM outbox WHERE state IN ('pending', 'sent')")
        return int(row["n"]) if row else 0

    def mark_sent(self, seqs: Iterable[int]) -> None:
        """Note that these ops went out in an exchange (attempts counted)."""
        with self.transaction():
            self.engine.mark_sent(seqs, now_ms=self._now_ms())

    def mark_acked(self, seqs: Iterable[int], acks: Iterable[Mapping[str, Any]]) -> AckSummary:
        """Apply the server's acks (contracts §7) for ops ``seqs``, all or nothing
        (:meth:`DeviceEngine.fold_acks` states the rules).

        Raises:
            AckMismatch: missing, extra, duplicate or malformed acks; nothing is changed.
        """
        try:
            with self.transaction():
                return self.engine.fold_acks(list(seqs), acks, now_ms=self._now_ms())
        except engine_errors.AckMismatch as exc:
            raise AckMismatch(exc.message, message_zh=exc.message_zh) from exc

    def mark_rejected(self, seq: int, reasons: Sequence[Mapping[str, Any]]) -> None:
        """Keep op ``seq`` for correction with the server's per-field reasons.

        Raises:
            AckMismatch: no pending or sent op has that seq.
        """
        try:
            with self.transaction():
                self.engine.mark_rejected(seq, reasons)
        except engine_errors.AckMismatch as exc:
            raise AckMismatch(exc.message, message_zh=exc.message_zh) from exc

    def rejected_ops(self, record_id: str | None = None) -> list[OutboxEntry]:
        """Rejected ops awaiting correction (optionally of one record)."""
        return self.outbox(["rejected"], record_id=record_id)

    def outstanding_ops(self, record_id: str) -> list[Op]:
        """Ops of a record the server has not applied: pending, sent or rejected, by seq."""
        items = self._storage.outbox_items(("pending", "sent", "rejected"), record_id=record_id)
        return [item.op for item in items]

    def apply_server_state(self, state: Mapping[str, Any]) -> bool:
        """Replace a record with the server's merged state, keeping outstanding local edits
        (:meth:`DeviceEngine.apply_server_state` states the rules). Returns True when written.

        Raises:
            BadInput: the state is malformed, or its values do not form record data.
        """
        try:
            with self.transaction():
                return self.engine.apply_server_state(state, now_ms=self._now_ms())
        except engine_errors.StateInvalid as exc:
            raise BadInput(exc.message, message_zh=exc.message_zh) from exc

    # --- sync state ------------------------------------------------------------------------

    def observe_server_time(self, server_ms: int) -> None:
        """Fold the server's clock (every response carries it) into the device HLC."""
        with self.transaction():
            self.engine.observe_server_time(int(server_ms), now_ms=self._now_ms())

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

    def tasks(self, status: str | None = None) -> list[dict[str, Any]]:
        """The verification tasks on the device (stream entries), earliest deadline first."""
        sql, params = "SELECT entry FROM tasks", []
        if status is not None:
            sql, params = sql + " WHERE status = ?", [status]
        rows = self._rows(sql + " ORDER BY deadline, task_id", params)
        return [json.loads(row["entry"]) for row in rows]

    def task(self, prefix: str) -> dict[str, Any]:
        """The task whose id is ``prefix`` or starts with it.

        Raises:
            UnknownRecord: no task, or several, match.
        """
        rows = list(
            self._rows(
                "SELECT entry FROM tasks WHERE task_id = ? OR task_id LIKE ? ORDER BY task_id",
                [prefix, prefix.replace("%", "").replace("_", "") + "%"],
            )
        )
        exact = [r for r in rows if json.loads(r["entry"])["task_id"] == prefix]
        rows = exact or rows
        if len(rows) != 1:
            raise UnknownRecord(
                f"no single task matches {prefix!r} ({len(rows)} found)",
                message_zh=f"没有唯一匹配 {prefix!r} 的核查任务（找到 {len(rows)} 个）",
            )
        return dict(json.loads(rows[0]["entry"]))

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
            # Open on the server's last word (the tasks stream); worked locally or not.
            "tasks_open": self.db.execute(
                "SELECT count(*) FROM tasks WHERE status = 'open'"
            ).fetchone()[0],
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
