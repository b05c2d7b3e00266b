"""Deterministic builder of ``sync_protocol/vectors/device_engine.json`` (device-engine vectors).

Each scenario is a script of engine steps (``sync_protocol.device_vectors`` lists the kinds);
the builder runs it on the in-memory storage and writes what every step returned and what the
storage held afterwards. Every input is fixed (times, ids, stamps), so the file is reproducible
byte for byte. A scenario's ``description`` says which promise of ``sync_protocol.device`` it
pins.

Regenerate after a deliberate change of the engine's behaviour (and say why in the commit)::

    .venv/bin/python -m tests.sync_protocol.device_engine_vector_builder
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from sync_protocol.device_memory import MemoryStorage
from sync_protocol.device_vectors import FORMAT, record_scenario
from sync_protocol.merge import merge
from sync_protocol.messages import Ack, DownloadPage, OpAck, ServerReply
from sync_protocol.ops import put_op

VECTORS_PATH = (
    Path(__file__).resolve().parents[2] / "sync_protocol" / "vectors" / "device_engine.json"
)

T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z: every time below is T0 + a few seconds
DEVICE = "dev-a"
OTHER = "dev-b"
VILLAGE = "530102001201"
HOUSEHOLD = {"village_code": VILLAGE, "household_no": "0007"}
ROUND = "2026-annual"
R1 = "11111111-1111-4111-8111-111111111111"
R2 = "22222222-2222-4222-8222-222222222222"
TOMB = {"$tombstone": True}


def stamp(ms: int, node: str, counter: int = 0) -> str:
    """The stamp text (contracts §6: 12 hex ms, 4 hex counter, node)."""
    return f"{ms:012x}-{counter:04x}-{node}"


def put(record_id: str, changes: dict[str, Any], base: dict[str, Any] | None = None, **kw: Any):
    """An op template for a ``queue`` step: a put without ``seq`` and ``hlc``."""
    return {
        "device_id": DEVICE,
        "record_id": record_id,
        "form_id": "household_survey",
        "form_version": 1,
        "household": HOUSEHOLD,
        "round": ROUND,
        "kind": "put",
        "changes": changes,
        "base": base if base is not None else dict.fromkeys(changes),
        "base_revision": kw.get("base_revision", 0),
    }


def head(record_id: str, values: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """The record an edge writes with a queued op (head fields + flat local values)."""
    return {
        "record_id": record_id,
        "form_id": "household_survey",
        "form_version": 1,
        "household": HOUSEHOLD,
        "round": ROUND,
        "stamps": kw.get("stamps", {}),
        "server_revision": kw.get("server_revision", 0),
        "deleted": kw.get("deleted", False),
        "values": values,
    }


def view(record_id: str, revision: int, values: dict[str, Any], stamps: dict[str, str], **kw: Any):
    """A record state in its device-view shape (``merge.device_view``)."""
    return {
        "record_id": record_id,
        "form_id": "household_survey",
        "form_version": 1,
        "household": HOUSEHOLD,
        "round": ROUND,
        "revision": revision,
        "deleted": kw.get("deleted", False),
        "values": values,
        "stamps": stamps,
        "conflicts": kw.get("conflicts", []),
        **({"closed_conflicts": kw["closed"]} if "closed" in kw else {}),
    }


def _queue(record_id: str, changes: dict[str, Any], values: dict[str, Any], t: int, **kw: Any):
    return {
        "do": "queue",
        "now_ms": T0 + t,
        "op": put(record_id, changes, kw.get("base"), base_revision=kw.get("base_revision", 0)),
        "corrects": kw.get("corrects", []),
        "record": head(record_id, values, **kw.get("head", {})),
    }


def _outbox_lifecycle() -> dict[str, Any]:
    first = {"head_name": "欧阳娜娜", "members/m1/_order": 1, "members/m1/name": "欧阳娜娜"}
    second = {**first, "phone": "13987654321"}
    return {
        "name": "outbox_lifecycle",
        "description": "pending → sent (attempts count resends) → acked and removed; an ack's "
        "stamp becomes the record's stamp; a lean ack without conflict_ids/reasons is accepted; "
        "a replayed ack changes nothing; missing, extra or malformed acks change nothing",
        "device_id": DEVICE,
        "steps": [
            _queue(R1, first, first, 1_000),
            {"do": "put_base", "record_id": R1, "changes": {"phone": "1"}, "old_paths": []},
            _queue(R1, {"phone": "13987654321"}, second, 2_000),
            {"do": "pending_ops", "limit": None},
            {"do": "mark_sent", "seqs": [1, 2], "now_ms": T0 + 3_000},
            {"do": "mark_sent", "seqs": [1], "now_ms": T0 + 9_000},
            {
                "do": "fold_acks",
                "seqs": [1, 2],
                "acks": [{"seq": 1, "status": "applied"}],
                "now_ms": T0 + 10_000,
            },
            {
                "do": "fold_acks",
                "seqs": [1, 2],
                "acks": [
                    {"seq": 1, "status": "applied", "revision": 1},
                    {"seq": 2, "status": "bogus", "revision": 2},
                ],
                "now_ms": T0 + 10_000,
            },
            {
                "do": "fold_acks",
                "seqs": [1],
                "acks": [{"seq": 1, "status": "applied"}, {"seq": 3, "status": "applied"}],
                "now_ms": T0 + 10_000,
            },
            {
                "do": "fold_acks",
                "seqs": [1, 2],
                "acks": [
                    {"seq": 1, "status": "applied", "revision": 1},
                    {
                        "seq": 2,
                        "status": "merged",
                        "revision": 2,
                        "conflict_ids": [],
                        "reasons": [],
                    },
                ],
                "now_ms": T0 + 10_000,
            },
            {
                "do": "fold_acks",
                "seqs": [1, 2],
                "acks": [{"seq": 1, "status": "duplicate"}, {"seq": 2, "status": "duplicate"}],
                "now_ms": T0 + 11_000,
            },
            {"do": "pending_ops", "limit": None},
            {"do": "put_base", "record_id": R1, "changes": {"phone": "2"}, "old_paths": []},
        ],
    }


def _rejection() -> dict[str, Any]:
    values = {"head_name": "张三", "income": -5}
    corrected = {"head_name": "张三", "income": 500, "phone": "1"}
    return {
        "name": "rejection_and_correction",
        "description": "a rejected op stays with its reasons and holds acked_through back; the "
        "next edit re-sends its paths and moves it to corrected; rejecting a settled op is an "
        "ack_mismatch",
        "device_id": DEVICE,
        "steps": [
            _queue(R1, values, values, 1_000),
            {"do": "mark_sent", "seqs": [1], "now_ms": T0 + 2_000},
            {
                "do": "fold_acks",
                "seqs": [1],
                "acks": [
                    {
                        "seq": 1,
                        "status": "rejected",
                        "reasons": [{"path": "income", "code": "below_minimum"}],
                    }
                ],
                "now_ms": T0 + 3_000,
            },
            {
                "do": "resend_rejected",
                "record_id": R1,
                "changes": {"income": 500, "phone": "1"},
                "new_values": corrected,
            },
            _queue(
                R1,
                {"head_name": "张三", "income": 500, "phone": "1"},
                corrected,
                4_000,
                corrects=[1],
            ),
            {"do": "mark_rejected", "seq": 1, "reasons": []},
            {"do": "mark_rejected", "seq": 2, "reasons": [{"path": "phone", "code": "pattern"}]},
            {"do": "pending_ops", "limit": None},
        ],
    }


def _rebase() -> dict[str, Any]:
    s_old = stamp(T0 - 50_000, OTHER)
    s_new = stamp(T0 + 5_000, OTHER)
    local = {"head_name": "李四", "phone": "139"}
    return {
        "name": "rebase_and_listed_conflicts",
        "description": "a server state replaces the record and the device's outstanding ops are "
        "laid on top; an older revision is ignored; the state's conflict list becomes the "
        "record's open listed conflicts; closed_conflicts closes whatever the revision",
        "device_id": DEVICE,
        "steps": [
            _queue(
                R1,
                {"phone": "139"},
                local,
                1_000,
                base={"phone": s_old},
                base_revision=3,
                head={"stamps": {"head_name": s_old, "phone": s_old}, "server_revision": 3},
            ),
            {
                "do": "apply_state",
                "state": view(
                    R1,
                    4,
                    {
                        "head_name": "李四",
                        "phone": "138",
                        "members/m9/_order": 1,
                        "members/m9/name": "王五",
                    },
                    {
                        "head_name": s_old,
                        "phone": s_new,
                        "members/m9/_order": s_new,
                        "members/m9/name": s_new,
                    },
                    conflicts=["c-phone"],
                ),
                "now_ms": T0 + 6_000,
            },
            {
                "do": "apply_state",
                "state": view(R1, 2, {"head_name": "旧"}, {"head_name": s_old}),
                "now_ms": T0 + 7_000,
            },
            {
                "do": "put_base",
                "record_id": R1,
                "changes": {"members/m9": TOMB},
                "old_paths": ["members/m9/_order", "members/m9/name"],
            },
            {
                "do": "delete_base",
                "record_id": R1,
                "paths": ["head_name", "phone", "members/m9/_order", "members/m9/name"],
            },
            {
                "do": "apply_state",
                "state": view(
                    R1,
                    5,
                    {"head_name": "李四", "phone": "138"},
                    {"head_name": s_old, "phone": s_new},
                ),
                "now_ms": T0 + 8_000,
            },
            {
                "do": "apply_state",
                "state": view(
                    R1, 6, {"head_name": "李四"}, {"head_name": s_old}, conflicts=["c-again"]
                ),
                "now_ms": T0 + 9_000,
            },
            {
                "do": "apply_state",
                "state": view(R1, 1, {}, {}, closed=["c-again"]),
                "now_ms": T0 + 10_000,
            },
            {
                "do": "apply_state",
                "state": {"record_id": R1, "revision": "x"},
                "now_ms": T0 + 11_000,
            },
        ],
    }


def _duplicate() -> dict[str, Any]:
    s_twin = stamp(T0 + 500, OTHER)
    mine = {"head_name": "赵六"}
    return {
        "name": "duplicate_household",
        "description": "a duplicate conflict known only from an ack stays open through record "
        "states (they never list it), remembers the twin (the other live record of the same "
        "household, form and round) and closes when one of the two comes back deleted",
        "device_id": DEVICE,
        "steps": [
            _queue(R1, mine, mine, 1_000),
            {"do": "mark_sent", "seqs": [1], "now_ms": T0 + 2_000},
            {
                "do": "fold_acks",
                "seqs": [1],
                "acks": [
                    {"seq": 1, "status": "conflict", "revision": 1, "conflict_ids": ["dup-1"]}
                ],
                "now_ms": T0 + 3_000,
            },
            {
                "do": "apply_state",
                "state": view(R2, 1, {"head_name": "赵 六"}, {"head_name": s_twin}),
                "now_ms": T0 + 4_000,
            },
            {
                "do": "apply_state",
                "state": view(
                    R1, 2, {"head_name": "赵六"}, {"head_name": stamp(T0 + 1_000, DEVICE)}
                ),
                "now_ms": T0 + 5_000,
            },
            {
                "do": "apply_state",
                "state": view(R2, 2, {}, {"": stamp(T0 + 6_000, "county-server")}, deleted=True),
                "now_ms": T0 + 7_000,
            },
        ],
    }


def _full_state() -> dict[str, Any]:
    """A review conflict built by the server's own merge, sent as a full RecordState."""
    hh = HOUSEHOLD
    created = put_op(
        device_id=OTHER,
        seq=1,
        record_id=R1,
        form_id="household_survey",
        form_version=1,
        changes={"head_name": "孙七", "phone": "1"},
        hlc=stamp(T0, OTHER),
        household=hh,
        round=ROUND,
    )
    mine = put_op(
        device_id=DEVICE,
        seq=1,
        record_id=R1,
        form_id="household_survey",
        form_version=1,
        changes={"phone": "2"},
        base={"phone": stamp(T0, OTHER)},
        hlc=stamp(T0 + 1_000, DEVICE),
        base_revision=1,
    )
    theirs = put_op(
        device_id=OTHER,
        seq=2,
        record_id=R1,
        form_id="household_survey",
        form_version=1,
        changes={"phone": "3"},
        base={"phone": stamp(T0, OTHER)},
        hlc=stamp(T0 + 2_000, OTHER),
        base_revision=1,
    )
    state = merge(None, created, lambda _p: "review", reference_ms=T0).state
    state.revision = 1
    for op in (theirs, mine):
        state = merge(state, op, lambda _p: "review", reference_ms=T0 + 3_000).state
    state.revision = 3
    full = state.to_dict()
    return {
        "name": "full_state_conflict",
        "description": "a full RecordState (not the device view) is read the same way; its open "
        "conflicts become listed conflicts described with this device's and the other value",
        "device_id": DEVICE,
        "steps": [
            {
                "do": "apply_state",
                "state": view(
                    R1,
                    1,
                    {"head_name": "孙七", "phone": "1"},
                    {"head_name": stamp(T0, OTHER), "phone": stamp(T0, OTHER)},
                ),
                "now_ms": T0 + 500,
            },
            {"do": "apply_state", "state": full, "now_ms": T0 + 4_000},
        ],
    }


def _reply() -> dict[str, Any]:
    values = {"head_name": "周八"}
    s_mine = stamp(T0 + 1_000, DEVICE)
    state1 = view(R1, 1, values, {"head_name": s_mine})
    state2 = view(
        R1,
        2,
        {"head_name": "周八", "phone": "5"},
        {"head_name": s_mine, "phone": stamp(T0 + 1_500, OTHER)},
    )
    ack = Ack(
        batch_seq=2,
        acks=(OpAck(seq=1, status="applied", revision=1),),
        high_water_mark=1,
        records=(state1,),
    )
    pages = (
        DownloadPage(scope=VILLAGE, after=0, next_cursor=17, more=True, records=(state2,)),
        DownloadPage(scope="manifest", after=0, next_cursor=4, more=False),
    )
    reply = ServerReply(server_time_ms=T0 + 3_000, acks=(ack,), downloads=pages).to_dict()
    stray = ServerReply(
        server_time_ms=T0 + 3_000, acks=(dataclasses.replace(ack, batch_seq=9),)
    ).to_dict()
    return {
        "name": "whole_reply_and_cursors",
        "description": "one reply: the batch's acks, then each record's newest state once (the "
        "ack's copy and the page's copy of the same record), then the page cursor; manifest "
        "pages go back to the edge; hello cursors name the own scope and manifest; an ack of a "
        "batch the request did not carry changes nothing",
        "device_id": DEVICE,
        "steps": [
            {"do": "hello", "own_scope": VILLAGE, "now_ms": T0},
            {"do": "envelope", "action": "next"},
            _queue(R1, values, values, 1_000),
            {"do": "envelope", "action": "reserve", "value": 3},
            {"do": "mark_sent", "seqs": [1], "now_ms": T0 + 2_000},
            {"do": "fold_reply", "reply": stray, "sent_batches": {"2": [1]}, "now_ms": T0 + 3_100},
            {"do": "observe_server_time", "server_ms": T0 + 3_000, "now_ms": T0 + 3_100},
            {"do": "fold_reply", "reply": reply, "sent_batches": {"2": [1]}, "now_ms": T0 + 3_100},
            {"do": "hello", "own_scope": VILLAGE, "now_ms": T0 + 4_000},
            {"do": "envelope", "action": "skip"},
        ],
    }


def _lean_downloads() -> dict[str, Any]:
    created = {"head_name": "郑十"}
    edited = {"head_name": "郑十", "phone": "7"}
    other = {"head_name": "冯一"}
    s_other = stamp(T0 + 1_200, OTHER)
    # R2 merged another device's edit: its state travels; R1's own ops alone made its state.
    merged = view(
        R2,
        9,
        {**other, "phone": "8"},
        {"head_name": stamp(T0 + 1_500, DEVICE), "phone": s_other},
    )
    ack = Ack(
        batch_seq=1,
        acks=(
            OpAck(seq=1, status="applied", revision=7),
            OpAck(seq=2, status="applied", revision=8),
            OpAck(seq=3, status="applied", revision=9),
        ),
        high_water_mark=3,
        lean_seqs=(1, 2),
    )
    pages = (
        DownloadPage(scope=VILLAGE, after=0, next_cursor=9, more=False, records=(merged,)),
        DownloadPage(scope="manifest", after=0, next_cursor=4, more=False),
    )
    reply = ServerReply(server_time_ms=T0 + 3_000, acks=(ack,), downloads=pages).to_dict()
    return {
        "name": "lean_downloads",
        "description": "lean_downloads: the ops an ack names in lean_seqs leave the outbox and "
        "their record takes the newest of their ack revisions, keeping its local values and "
        "the ops' stamps (no state of it in the reply); a record whose state travels applies "
        "it as before; the same reply folded again changes nothing",
        "device_id": DEVICE,
        "steps": [
            _queue(R1, created, created, 1_000),
            _queue(R1, {"phone": "7"}, edited, 1_100),
            _queue(R2, other, other, 1_500),
            {"do": "mark_sent", "seqs": [1, 2, 3], "now_ms": T0 + 2_000},
            {
                "do": "fold_reply",
                "reply": reply,
                "sent_batches": {"1": [1, 2, 3]},
                "now_ms": T0 + 3_100,
            },
            {
                "do": "fold_reply",
                "reply": reply,
                "sent_batches": {"1": [1, 2, 3]},
                "now_ms": T0 + 3_200,
            },
        ],
    }


def _tasks() -> dict[str, Any]:
    def task(revision: int, status: str) -> dict[str, Any]:
        return {
            "task_id": "task-1",
            "household": {"village_code": VILLAGE, "household_no": "0017"},
            "status": status,
            "reasons": [
                {
                    "code": "insurance_not_enrolled",
                    "source": "dept:medical_insurance",
                    "message": {"zh": "户籍成员在医保名单中未参保", "en": "not enrolled"},
                    "details": {},
                }
            ],
            "deadline": "2026-12-14",
            "escalated": False,
            "outcome": None,
            "record_id": "rec-task-1",
            "round": "task-task1",
            "revision": revision,
        }

    def reply(*entries: dict[str, Any], after: int, cursor: int) -> dict[str, Any]:
        pages = (
            DownloadPage(scope=VILLAGE, after=0, next_cursor=0, more=False),
            DownloadPage(scope="manifest", after=0, next_cursor=0, more=False),
            DownloadPage(scope="tasks", after=after, next_cursor=cursor, more=False, tasks=entries),
        )
        return ServerReply(server_time_ms=T0, downloads=pages).to_dict()

    return {
        "name": "tasks_stream",
        "description": "the tasks stream is asked for only with tasks=true (a device without it "
        "sends the hello it always sent); a tasks page stores each task and moves the tasks "
        "cursor, not a records one; a task older than the one held is ignored, a newer one "
        "replaces it; an entry without an integer revision is refused and changes nothing",
        "device_id": DEVICE,
        "steps": [
            {"do": "hello", "own_scope": VILLAGE, "now_ms": T0},
            {"do": "hello", "own_scope": VILLAGE, "now_ms": T0, "tasks": True},
            {
                "do": "fold_reply",
                "reply": reply(task(5, "open"), after=0, cursor=5),
                "sent_batches": {},
                "now_ms": T0,
            },
            {"do": "hello", "own_scope": VILLAGE, "now_ms": T0 + 1, "tasks": True},
            {
                "do": "fold_reply",
                "reply": reply(task(4, "closed"), after=5, cursor=6),
                "sent_batches": {},
                "now_ms": T0 + 2,
            },
            {
                "do": "fold_reply",
                "reply": reply(task(7, "worked"), after=6, cursor=7),
                "sent_batches": {},
                "now_ms": T0 + 3,
            },
            {
                "do": "fold_reply",
                "reply": reply({"task_id": "task-2", "revision": "8"}, after=7, cursor=8),
                "sent_batches": {},
                "now_ms": T0 + 4,
            },
            {"do": "hello", "own_scope": VILLAGE, "now_ms": T0 + 5},
        ],
    }


def _clock() -> dict[str, Any]:
    v = {"head_name": "吴九"}
    return {
        "name": "clock_only_goes_up",
        "description": "the server's time folds into the HLC; stamps keep going up when the "
        "tablet clock is behind the server or goes backwards between calls",
        "device_id": DEVICE,
        "steps": [
            {"do": "observe_server_time", "server_ms": T0 + 60_000, "now_ms": T0},
            _queue(R1, v, v, 0),
            _queue(
                R1,
                {"head_name": "吴 九"},
                {"head_name": "吴 九"},
                -30_000,
                base={"head_name": stamp(T0 + 60_000, DEVICE, 1)},
            ),
            {"do": "hello", "own_scope": VILLAGE, "now_ms": T0 - 90_000},
        ],
    }


SCRIPTS = (
    _outbox_lifecycle,
    _rejection,
    _rebase,
    _duplicate,
    _full_state,
    _reply,
    _clock,
    _tasks,
    _lean_downloads,
)


def build_vectors() -> dict[str, Any]:
    """The whole vectors document, built from the scripts above."""
    return {
        "format": FORMAT,
        "about": "Scripted scenarios of the sans-I/O device engine (sync_protocol/device.py). "
        "Each step names an engine operation (do) and its JSON inputs; expect holds what it "
        "returned (result, or error = the engine's error code) and everything the device's "
        "storage held afterwards (state). A step that fails writes nothing. Replay every "
        "scenario on a fresh device and compare step by step (sync_protocol/device_vectors.py "
        "documents each step kind). Times are milliseconds since the epoch; stamps are HLC "
        'texts; {"$tombstone": true} deletes a row.',
        "scenarios": [record_scenario(script(), MemoryStorage) for script in SCRIPTS],
    }


def main() -> None:
    """Write the vectors file."""
    text = json.dumps(build_vectors(), ensure_ascii=False, indent=1, sort_keys=True)
    VECTORS_PATH.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
