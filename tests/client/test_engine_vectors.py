"""The device-engine vectors replay on the CLI's SQLite file: the edge keeps the engine's rules.

The SQLite storage is the production implementation of ``sync_protocol.device.DeviceStorage``;
replaying every scenario on it (and comparing with what the in-memory storage produced) shows it
stores and returns exactly what the engine wrote. Record data is nested JSON in the file, so
local values are compared in the form the file can hold them: ``flatten(unflatten(values))``
(tombstoned rows gone, row order renumbered).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from forms.paths import flatten, unflatten
from sync_protocol.device import OP_STATES, DeviceEngine
from sync_protocol.device_memory import counters_json, outbox_item_json
from sync_protocol.device_vectors import execute_step
from sync_protocol.ops import TOMBSTONE, TOMBSTONE_KEY, is_tombstone
from tests.client.conftest import START_MS, FakeClock
from village_client_stub.engine_storage import SqliteEngineStorage
from village_client_stub.store import DeviceStore

DOCUMENT = json.loads(
    (resources.files("sync_protocol") / "vectors" / "device_engine.json").read_text("utf-8")
)


class SqliteVectorStorage(SqliteEngineStorage):
    """The production SQLite storage plus what the vectors need: a unit of work and a read-back."""

    def __init__(self, store: DeviceStore) -> None:
        super().__init__(store)
        self.store = store

    def transaction(self) -> Any:
        return self.store.transaction()

    def snapshot(self) -> dict[str, Any]:
        snapshot = self._snapshot()
        tasks = {t["task_id"]: t for t in self.store.tasks()}
        if tasks:
            snapshot["tasks"] = dict(sorted(tasks.items()))
        return snapshot

    def _snapshot(self) -> dict[str, Any]:
        counters = self.counters()
        records = {}
        for record_id in sorted(r.record_id for r in self.store.records(include_deleted=True)):
            head = self.record_head(record_id)
            assert head is not None
            records[record_id] = {
                "form_id": head.form_id,
                "form_version": head.form_version,
                "household": head.household,
                "round": head.round,
                "server_revision": head.server_revision,
                "deleted": head.deleted,
                "stamps": dict(sorted(head.stamps.items())),
                "values": dict(sorted(flatten(self.store.record(record_id).data).items())),
            }
        return {
            "counters": counters_json(counters),
            "outbox": [outbox_item_json(item) for item in self.outbox_items(OP_STATES)],
            "records": records,
            "conflicts": {
                note.conflict_id: {
                    "record_id": note.record_id,
                    "seq": note.seq,
                    "status": note.status,
                    "listed": note.listed,
                    "detail": note.detail,
                    "received_at_ms": note.received_at_ms,
                }
                for note in sorted(self.conflict_notes(), key=lambda n: n.conflict_id)
            },
            "cursors": self.cursors(),
        }


def _as_stored(state: dict[str, Any]) -> dict[str, Any]:
    """The memory storage's state with local values as nested data can hold them."""
    out = json.loads(json.dumps(state))
    for record in out["records"].values():
        values = {
            path: (TOMBSTONE if value == {TOMBSTONE_KEY: True} else value)
            for path, value in record["values"].items()
        }
        record["values"] = dict(
            sorted(flatten(unflatten(values, is_tombstone=is_tombstone)).items())
        )
    return out


@pytest.mark.parametrize("scenario", DOCUMENT["scenarios"], ids=lambda s: s["name"])
def test_scenario_replays_on_the_sqlite_file(scenario: dict[str, Any], tmp_path: Path) -> None:
    clock = FakeClock(START_MS)
    with DeviceStore.create(tmp_path / "device.db", now_ms=clock) as store:
        storage = SqliteVectorStorage(store)
        engine = DeviceEngine(storage, scenario["device_id"])
        for index, step in enumerate(scenario["steps"]):
            clock.advance(1)  # records' created_at order = the order the steps wrote them
            inputs = {k: v for k, v in step.items() if k != "expect"}
            got = execute_step(engine, storage, inputs)
            want = step["expect"]
            where = f"step {index} ({step['do']})"
            assert (got.get("result"), got.get("error")) == (
                want.get("result"),
                want.get("error"),
            ), where
            assert got["state"] == _as_stored(want["state"]), where
