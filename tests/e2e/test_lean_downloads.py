"""A lean sync leaves each tablet exactly where a full sync would (issue 18, lean downloads).

Two tablets of one village ask for ``lean_downloads`` (the CLI default): the server leaves out
of its reply the states their own ops alone made, and the tablet takes the new revision from
the op's ack. Seeded rounds of work — new records, edits of ``lww`` fields on both tablets
(merges), edits of the ``review`` field on both (conflicts), syncs in a random order — and after
every sync the tablet's store is compared with a *full* sync of the same store: a copy that
downloads every state of the village again with ``lean_downloads`` off. Records (data, stamps,
revision, envelope), conflicts and outbox must be identical, row for row.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

from forms.instruments.samples import problem_household
from sync_protocol.device import RECORDS_STREAM
from tests.e2e.conftest import VILLAGE, CountyServer, new_device
from village_client_stub.records import RecordEditor
from village_client_stub.simulator import AdminSession
from village_client_stub.store import DeviceStore
from village_client_stub.sync_client import SyncClient
from village_client_stub.transport import HttpTransport

ROUNDS = 6
STRUCTURES = ("钢筋混凝土", "茅草房", "泥草房")
METHODS = ("拆除重建", "原址翻建", "选址新建")


def _rows(path: Path, sql: str) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(sql)]


def _held(path: Path) -> dict[str, Any]:
    """What a sync decides on a device: records, conflicts and outbox (times left out)."""
    records = _rows(
        path,
        "SELECT record_id, form_id, form_version, village_code, household_no, round, data,"
        " stamps, server_revision, deleted FROM records ORDER BY record_id",
    )
    for row in records:
        row["data"], row["stamps"] = json.loads(row["data"]), json.loads(row["stamps"])
    return {
        "records": records,
        "conflicts": _rows(
            path, "SELECT conflict_id, record_id, seq, detail, status FROM conflicts ORDER BY 1"
        ),
        "outbox": _rows(path, "SELECT seq, record_id, state, reasons FROM outbox ORDER BY seq"),
    }


def _full_sync_of(store: DeviceStore, path: Path, mirror: Path, url: str) -> dict[str, Any]:
    """A copy of ``store`` after a full sync: every state of its village downloaded again,
    ``lean_downloads`` off. The copy seals with envelope sequences far above the original's,
    and the original moves past them afterwards (the server accepts each sequence once)."""
    with sqlite3.connect(path) as source, sqlite3.connect(mirror) as target:
        source.backup(target)
    copy = DeviceStore.open(mirror)
    try:
        with copy.transaction():
            copy.engine.advance_cursor(VILLAGE, RECORDS_STREAM, 0)
            copy.engine.reserve_envelope_sequences(copy.engine.next_envelope_sequence() + 1000)
        SyncClient(copy, HttpTransport(url, timeout=30), lean_downloads=False).sync()
        with store.transaction():
            store.engine.reserve_envelope_sequences(copy.engine.next_envelope_sequence())
    finally:
        copy.close()
    held = _held(mirror)
    mirror.unlink()
    return held


def test_lean_sync_equals_full_sync_with_merges_and_conflicts(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    rng = random.Random(18)
    paths = {name: tmp_path / f"{name}.db" for name in ("a", "b")}
    tablets = {name: new_device(county, admin, path) for name, path in paths.items()}
    editors = {name: RecordEditor(store) for name, store in tablets.items()}
    # A new record and an edit of it, synced: the reply carries no state at all (both ops are
    # lean), and the tablet still ends where a full sync would.
    house = problem_household("dangerous_house", 1)["housing_safety"]
    first = editors["a"].fill(
        "housing_safety", house, household={"village_code": VILLAGE, "household_no": "first"}
    )
    editors["a"].edit(first.record_id, ["storeys=1"])
    report = SyncClient(tablets["a"]).sync()
    assert (report.status_counts, report.records_received) == ({"applied": 2}, 0)
    assert _held(paths["a"]) == _full_sync_of(
        tablets["a"], paths["a"], tmp_path / "a-full.db", county.url
    )
    lean_seen = 0
    record_ids: list[str] = [first.record_id]
    for round_no in range(ROUNDS):
        for name in rng.sample(sorted(tablets), 2):
            store, editor = tablets[name], editors[name]
            if rng.random() < 0.5:
                house = problem_household("dangerous_house", rng.randrange(1000))
                created = editor.fill(
                    "housing_safety",
                    house["housing_safety"],
                    household={"village_code": VILLAGE, "household_no": f"{name}{round_no:03d}"},
                )
                record_ids.append(created.record_id)
                # An edit on top of the create before any sync: a chain of two own ops.
                editor.edit(created.record_id, [f"storeys={rng.randint(1, 2)}"])
            own = [r for r in record_ids if _has(paths[name], r)]
            editor.edit(rng.choice(own), [f"floor_area={rng.randint(30, 200)}.5"])
        shared = [r for r in record_ids if all(_has(path, r) for path in paths.values())]
        if shared:
            # Both tablets edit one record offline: disjoint lww fields merge, and on odd
            # rounds the review field gets two different values (a conflict).
            target = rng.choice(shared)
            current = tablets["a"].record(target).data.get("renovation_method")
            first_method, second_method = [m for m in METHODS if m != current][:2]
            edits_a = [f"structure={rng.choice(STRUCTURES)}"]
            edits_b = [f"build_year={rng.randint(1950, 2000)}"]
            if round_no % 2:
                edits_a.append(f"renovation_method={first_method}")
                edits_b.append(f"renovation_method={second_method}")
            editors["a"].edit(target, edits_a)
            editors["b"].edit(target, edits_b)
        for name in rng.sample(sorted(tablets), 2):
            store = tablets[name]
            report = SyncClient(store).sync()
            lean_seen += report.status_counts.get("applied", 0)
            held = _held(paths[name])
            full = _full_sync_of(store, paths[name], tmp_path / f"{name}-full.db", county.url)
            assert held == full, f"round {round_no}, tablet {name}: lean sync differs from full"
    assert lean_seen > 0
    conflicts = sum(len(store.conflicts(None)) for store in tablets.values())
    assert conflicts > 0, "the seed should make at least one review conflict"


def _has(path: Path, record_id: str) -> bool:
    """The device holds the record (its own, or downloaded)."""
    with sqlite3.connect(path) as db:
        return db.execute("SELECT 1 FROM records WHERE record_id = ?", [record_id]).fetchone()
