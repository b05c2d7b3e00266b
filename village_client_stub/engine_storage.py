"""The device engine's storage on the device's SQLite file.

:class:`SqliteEngineStorage` implements :class:`sync_protocol.device.DeviceStorage` over the
tables of :mod:`village_client_stub.store` (docs/device.md): ``outbox``, ``records``,
``conflicts``, ``sync_state`` and ``cursors``. It holds no rules — those are the engine's — only
reads and writes, plus the two translations the engine leaves to an edge: times (milliseconds in
the engine, ISO text in the file) and record data (flat paths in the engine, nested JSON here,
through ``forms.paths``). It never opens a transaction: :class:`~village_client_stub.store.
DeviceStore` runs every engine call inside its own ``transaction()``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from forms.errors import FormsError
from forms.paths import unflatten
from sync_protocol.device import ConflictNote, Counters, OutboxItem, RecordHead
from sync_protocol.ops import Op, is_tombstone
from village_client_stub.errors import BadInput


class RecordFile(Protocol):
    """What this storage needs of the device file (:class:`~village_client_stub.store.DeviceStore`
    provides it): the open database and its one record writer, which keeps the searchable
    columns in step. Named here rather than imported, so the store and its engine storage do
    not import each other."""

    db: Any

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
    ) -> None: ...


__all__ = ["SqliteEngineStorage", "iso_ms", "ms_iso"]

#: Decoded ops kept by their stored JSON text. A sync reads the same outbox ops several times
#: (the window of a request, the ops cut ahead for the next one, each record's unapplied ops
#: when its state comes back), and decoding and validating an op was a sixth of the tablet's
#: own time between exchanges; an op's text names it exactly, so a hit is always right.
_DECODED_OPS: Final = 8192


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as the file's ISO text (UTC, millisecond precision)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def ms_iso(text: str | None) -> int | None:
    """The file's ISO text back to milliseconds (None stays None)."""
    if text is None:
        return None
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


class SqliteEngineStorage:
    """:class:`~sync_protocol.device.DeviceStorage` on one open :class:`DeviceStore`."""

    def __init__(self, store: RecordFile) -> None:
        self._store = store
        self._db = store.db
        self._ops: dict[str, Op] = {}

    def _one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        return next(iter(self._db.query(sql, params)), None)

    # --- counters ----------------------------------------------------------------------------

    def counters(self) -> Counters:
        row = self._one("SELECT last_seq, acked_through, hlc_last, server_time_ms FROM sync_state")
        assert row is not None  # created with the store
        return Counters(
            last_seq=row["last_seq"],
            acked_through=row["acked_through"],
            hlc_last=row["hlc_last"],
            server_time_ms=row["server_time_ms"],
        )

    def set_counters(self, counters: Counters) -> None:
        self._db.execute(
            "UPDATE sync_state SET last_seq=?, acked_through=?, hlc_last=?, server_time_ms=?",
            [counters.last_seq, counters.acked_through, counters.hlc_last, counters.server_time_ms],
        )

    # --- outbox ------------------------------------------------------------------------------

    def _op(self, text: str) -> Op:
        op = self._ops.get(text)
        if op is None:
            op = Op.from_dict(json.loads(text))
            if len(self._ops) >= _DECODED_OPS:
                self._ops.clear()
            self._ops[text] = op
        return op

    def _item(self, row: Mapping[str, Any]) -> OutboxItem:
        reasons = json.loads(row["reasons"]) if row["reasons"] else None
        return OutboxItem(
            seq=row["seq"],
            op=self._op(row["op"]),
            state=row["state"],
            attempts=row["attempts"],
            reasons=None if reasons is None else tuple(reasons),
            corrected_by=row["corrected_by"],
            created_at_ms=ms_iso(row["created_at"]) or 0,
            sent_at_ms=ms_iso(row["sent_at"]),
        )

    def outbox_item(self, seq: int) -> OutboxItem | None:
        row = self._one("SELECT * FROM outbox WHERE seq=?", [seq])
        return None if row is None else self._item(row)

    def outbox_items(
        self, states: Sequence[str], *, record_id: str | None = None, limit: int | None = None
    ) -> list[OutboxItem]:
        params: list[Any] = list(states)
        marks = ",".join("?" for _ in states) or "''"
        sql = f"SELECT * FROM outbox WHERE state IN ({marks})"
        if record_id is not None:
            sql += " AND record_id = ?"
            params.append(record_id)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [self._item(r) for r in self._db.query(sql, params)]

    def put_outbox_item(self, item: OutboxItem) -> None:
        self._db.execute(
            "INSERT INTO outbox (seq, record_id, kind, op, state, attempts, reasons, "
            "corrected_by, created_at, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (seq) DO UPDATE SET record_id=excluded.record_id, kind=excluded.kind, "
            "op=excluded.op, state=excluded.state, attempts=excluded.attempts, "
            "reasons=excluded.reasons, corrected_by=excluded.corrected_by, "
            "sent_at=excluded.sent_at",
            [
                item.seq,
                item.op.record_id,
                item.op.kind,
                item.op.to_json(),
                item.state,
                item.attempts,
                None if item.reasons is None else _dumps([dict(r) for r in item.reasons]),
                item.corrected_by,
                iso_ms(item.created_at_ms),
                None if item.sent_at_ms is None else iso_ms(item.sent_at_ms),
            ],
        )

    def remove_outbox_item(self, seq: int) -> None:
        self._db.execute("DELETE FROM outbox WHERE seq=?", [seq])

    # --- records -----------------------------------------------------------------------------

    def record_head(self, record_id: str) -> RecordHead | None:
        row = self._one("SELECT * FROM records WHERE record_id=?", [record_id])
        if row is None:
            return None
        household = (
            None
            if row["village_code"] is None
            else {"village_code": row["village_code"], "household_no": row["household_no"]}
        )
        return RecordHead(
            record_id=row["record_id"],
            form_id=row["form_id"],
            form_version=row["form_version"],
            household=household,
            round=row["round"],
            stamps=json.loads(row["stamps"]),
            server_revision=row["server_revision"],
            deleted=bool(row["deleted"]),
        )

    def write_record(self, head: RecordHead, values: Mapping[str, Any] | None) -> None:
        """Raises BadInput when ``values`` do not form record data (the unit of work is then
        rolled back by the store's transaction)."""
        if values is None:
            # Only what the engine decides changed; ``updated_at`` is the user's edit time.
            self._db.execute(
                "UPDATE records SET stamps=?, server_revision=?, deleted=? WHERE record_id=?",
                [_dumps(head.stamps), head.server_revision, int(head.deleted), head.record_id],
            )
            return
        try:
            data = unflatten(values, is_tombstone=is_tombstone)
        except FormsError as exc:
            raise BadInput(
                f"server record values do not form a record: {exc}",
                message_zh="服务器返回的记录数据无法还原",
            ) from exc
        self._store._write_record(
            record_id=head.record_id,
            form_id=head.form_id,
            form_version=head.form_version,
            household=head.household,
            round=head.round,
            data=data,
            stamps=head.stamps,
            server_revision=head.server_revision,
            deleted=head.deleted,
        )

    def live_twins(
        self, record_id: str, form_id: str, household: Mapping[str, str] | None, round: str | None
    ) -> list[str]:
        hh = dict(household) if household else {}
        return [
            row["record_id"]
            for row in self._db.query(
                "SELECT record_id FROM records WHERE record_id != ? AND form_id = ? "
                "AND village_code IS ? AND household_no IS ? AND round IS ? AND deleted = 0 "
                "ORDER BY created_at, record_id",
                [record_id, form_id, hh.get("village_code"), hh.get("household_no"), round],
            )
        ]

    # --- conflicts ---------------------------------------------------------------------------

    @staticmethod
    def _note(row: Mapping[str, Any]) -> ConflictNote:
        return ConflictNote(
            conflict_id=row["conflict_id"],
            record_id=row["record_id"],
            seq=row["seq"],
            detail=dict(json.loads(row["detail"] or "{}")),
            status=row["status"],
            listed=bool(row["listed"]),
            received_at_ms=ms_iso(row["received_at"]) or 0,
        )

    def conflict(self, conflict_id: str) -> ConflictNote | None:
        row = self._one("SELECT * FROM conflicts WHERE conflict_id=?", [conflict_id])
        return None if row is None else self._note(row)

    def conflict_notes(
        self,
        *,
        record_id: str | None = None,
        status: str | None = None,
        listed: bool | None = None,
    ) -> list[ConflictNote]:
        sql = "SELECT * FROM conflicts WHERE 1=1"
        params: list[Any] = []
        if record_id is not None:
            sql += " AND record_id = ?"
            params.append(record_id)
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        if listed is not None:
            sql += " AND listed = ?"
            params.append(int(listed))
        return [self._note(r) for r in self._db.query(sql + " ORDER BY rowid", params)]

    def put_conflict(self, note: ConflictNote) -> None:
        self._db.execute(
            "INSERT INTO conflicts (conflict_id, record_id, seq, detail, status, received_at, "
            "listed) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (conflict_id) DO UPDATE SET "
            "record_id=excluded.record_id, seq=excluded.seq, detail=excluded.detail, "
            "status=excluded.status, listed=excluded.listed",
            [
                note.conflict_id,
                note.record_id,
                note.seq,
                _dumps(note.detail),
                note.status,
                iso_ms(note.received_at_ms),
                int(note.listed),
            ],
        )

    # --- cursors -----------------------------------------------------------------------------

    def cursors(self) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        for row in self._db.query("SELECT * FROM cursors ORDER BY scope, stream"):
            found.setdefault(row["scope"], {})[row["stream"]] = row["cursor"]
        return found

    def set_cursor(self, scope: str, stream: str, cursor: str) -> None:
        self._db.execute(
            "INSERT INTO cursors (scope, stream, cursor) VALUES (?, ?, ?) "
            "ON CONFLICT (scope, stream) DO UPDATE SET cursor = excluded.cursor",
            [scope, stream, str(cursor)],
        )

    # --- verification tasks ------------------------------------------------------------------

    def task(self, task_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT entry FROM tasks WHERE task_id = ?", [task_id])
        return None if row is None else dict(json.loads(row["entry"]))

    def put_task(self, entry: Mapping[str, Any]) -> None:
        household = entry.get("household") or {}
        self._db.execute(
            "INSERT INTO tasks (task_id, village_code, household_no, status, deadline, revision,"
            " entry, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (task_id) DO UPDATE"
            " SET status = excluded.status, deadline = excluded.deadline,"
            " revision = excluded.revision, entry = excluded.entry,"
            " received_at = excluded.received_at",
            [
                str(entry["task_id"]),
                str(household.get("village_code", "")),
                str(household.get("household_no", "")),
                str(entry.get("status", "open")),
                str(entry.get("deadline", "")),
                int(entry["revision"]),
                _dumps(dict(entry)),
                datetime.now(UTC).isoformat(timespec="milliseconds"),
            ],
        )
