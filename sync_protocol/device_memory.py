"""An in-memory :class:`~sync_protocol.device.DeviceStorage`: plain dicts, no persistence.

A complete second implementation of the storage interface (the SQLite edge of the CLI is the
first): the engine's unit tests and the device-engine vectors run on it, and a simulator can use
it for devices that need no file. Records keep their local view as the flat paths the engine
wrote (tombstones included), which is what :meth:`MemoryStorage.snapshot` shows.

``transaction()`` gives the all-or-nothing promise the engine expects of a unit of work: on an
exception every dict is put back as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sync_protocol.device import ConflictNote, Counters, OutboxItem, RecordHead
from sync_protocol.ops import is_tombstone

__all__ = ["MemoryStorage"]


class MemoryStorage:
    """Device storage in dicts (insertion order = the order things were first stored)."""

    def __init__(self) -> None:
        self._counters = Counters()
        self._outbox: dict[int, OutboxItem] = {}
        self._heads: dict[str, RecordHead] = {}
        self._values: dict[str, dict[str, Any]] = {}
        self._conflicts: dict[str, ConflictNote] = {}
        self._cursors: dict[str, dict[str, str]] = {}
        self._tasks: dict[str, dict[str, Any]] = {}

    @contextmanager
    def transaction(self) -> Iterator[MemoryStorage]:
        """Run a unit of work; on an exception, restore everything as it was before."""
        # Every stored item is immutable (frozen dataclasses, replaced value dicts), so copying
        # the containers is enough to restore them.
        saved = {
            name: (
                {k: dict(v) for k, v in value.items()} if name == "_cursors" else copy.copy(value)
            )
            for name, value in self.__dict__.items()
        }
        try:
            yield self
        except BaseException:
            self.__dict__.update(saved)
            raise

    # --- DeviceStorage ----------------------------------------------------------------------

    def counters(self) -> Counters:
        return self._counters

    def set_counters(self, counters: Counters) -> None:
        self._counters = counters

    def outbox_item(self, seq: int) -> OutboxItem | None:
        return self._outbox.get(seq)

    def outbox_items(
        self, states: Sequence[str], *, record_id: str | None = None, limit: int | None = None
    ) -> list[OutboxItem]:
        found = [
            item
            for seq, item in sorted(self._outbox.items())
            if item.state in states and (record_id is None or item.op.record_id == record_id)
        ]
        return found if limit is None else found[:limit]

    def put_outbox_item(self, item: OutboxItem) -> None:
        self._outbox[item.seq] = item

    def remove_outbox_item(self, seq: int) -> None:
        self._outbox.pop(seq, None)

    def record_head(self, record_id: str) -> RecordHead | None:
        return self._heads.get(record_id)

    def write_record(self, head: RecordHead, values: Mapping[str, Any] | None) -> None:
        self._heads[head.record_id] = head
        if values is not None or head.record_id not in self._values:
            self._values[head.record_id] = dict(values or {})

    def live_twins(
        self, record_id: str, form_id: str, household: Mapping[str, str] | None, round: str | None
    ) -> list[str]:
        wanted = dict(household) if household is not None else None
        return [
            head.record_id
            for head in self._heads.values()
            if head.record_id != record_id
            and head.form_id == form_id
            and head.household == wanted
            and head.round == round
            and not head.deleted
        ]

    def conflict(self, conflict_id: str) -> ConflictNote | None:
        return self._conflicts.get(conflict_id)

    def conflict_notes(
        self,
        *,
        record_id: str | None = None,
        status: str | None = None,
        listed: bool | None = None,
    ) -> list[ConflictNote]:
        return [
            note
            for note in self._conflicts.values()
            if (record_id is None or note.record_id == record_id)
            and (status is None or note.status == status)
            and (listed is None or note.listed == listed)
        ]

    def put_conflict(self, note: ConflictNote) -> None:
        self._conflicts[note.conflict_id] = note

    def cursors(self) -> dict[str, dict[str, str]]:
        return {scope: dict(streams) for scope, streams in self._cursors.items()}

    def set_cursor(self, scope: str, stream: str, cursor: str) -> None:
        self._cursors.setdefault(scope, {})[stream] = cursor

    def task(self, task_id: str) -> dict[str, Any] | None:
        return self._tasks.get(task_id)

    def put_task(self, entry: Mapping[str, Any]) -> None:
        # A fresh dict per write: the transaction's shallow copy can then restore the old one.
        self._tasks[str(entry["task_id"])] = dict(entry)

    # --- reading back ------------------------------------------------------------------------

    def values(self, record_id: str) -> dict[str, Any]:
        """The record's local view as the engine last wrote it (flat paths)."""
        return dict(self._values.get(record_id, {}))

    def snapshot(self) -> dict[str, Any]:
        """Everything held, as JSON-ready data (what the device-engine vectors compare).

        Tombstones appear as ``{"$tombstone": true}``; conflicts and records are sorted by id,
        outbox entries by seq; times are left out of the outbox (an edge's own bookkeeping)
        but kept on conflicts as ``received_at_ms``.
        """
        out: dict[str, Any] = {
            "counters": counters_json(self._counters),
            "outbox": [outbox_item_json(item) for _, item in sorted(self._outbox.items())],
            "records": {
                record_id: {
                    "form_id": head.form_id,
                    "form_version": head.form_version,
                    "household": head.household,
                    "round": head.round,
                    "server_revision": head.server_revision,
                    "deleted": head.deleted,
                    "stamps": dict(sorted(head.stamps.items())),
                    "values": {
                        path: ({"$tombstone": True} if is_tombstone(value) else value)
                        for path, value in sorted(self._values.get(record_id, {}).items())
                    },
                }
                for record_id, head in sorted(self._heads.items())
            },
            "conflicts": {
                conflict_id: {
                    "record_id": note.record_id,
                    "seq": note.seq,
                    "status": note.status,
                    "listed": note.listed,
                    "detail": note.detail,
                    "received_at_ms": note.received_at_ms,
                }
                for conflict_id, note in sorted(self._conflicts.items())
            },
            "cursors": {
                scope: dict(sorted(s.items())) for scope, s in sorted(self._cursors.items())
            },
        }
        if self._tasks:
            # Only when held: the scenarios from before the tasks stream keep their state.
            out["tasks"] = {task_id: self._tasks[task_id] for task_id in sorted(self._tasks)}
        return out


def counters_json(counters: Counters) -> dict[str, Any]:
    """The counters as the device-engine vectors' storage snapshots write them."""
    return {
        "last_seq": counters.last_seq,
        "acked_through": counters.acked_through,
        "hlc_last": counters.hlc_last,
        "server_time_ms": counters.server_time_ms,
    }


def outbox_item_json(item: OutboxItem) -> dict[str, Any]:
    """One outbox entry as the snapshots write it (times left out: an edge's bookkeeping)."""
    return {
        "seq": item.seq,
        "record_id": item.op.record_id,
        "kind": item.op.kind,
        "hlc": item.op.hlc,
        "state": item.state,
        "attempts": item.attempts,
        "reasons": None if item.reasons is None else [dict(r) for r in item.reasons],
        "corrected_by": item.corrected_by,
    }
