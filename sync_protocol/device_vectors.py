"""Run the device-engine vectors (``sync_protocol/vectors/device_engine.json``) against a storage.

The vectors are scripted scenarios: each step calls one engine operation with JSON inputs, and
records what it returned (``result``, or ``error`` with the engine's error code) and everything
the storage holds afterwards (``state``, :meth:`~sync_protocol.device_memory.MemoryStorage.
snapshot` shape). A second implementation of the engine (the browser app's) replays the same
steps against its own engine and compares; this module is the Python replay, and it runs the
Python engine over any storage that also offers ``transaction()`` and ``snapshot()``.

Step kinds (``"do"``) and their inputs — every time is milliseconds since the epoch:

==========================  ==============================================================
``queue``                   ``now_ms``, ``op`` (an op's JSON without ``seq`` and ``hlc``:
                            the engine's next seq and fresh stamp fill them), ``corrects``,
                            ``record`` (head fields + flat ``values``: the record the edge
                            writes with the op). Result: the op's JSON.
``mark_sent``               ``seqs``, ``now_ms``. Result: null.
``fold_acks``               ``seqs``, ``acks`` (OpAck JSON), ``now_ms``. Result: the summary.
``mark_rejected``           ``seq``, ``reasons``. Result: null.
``apply_state``             ``state`` (RecordState JSON or device view), ``now_ms``.
                            Result: whether the record was written.
``fold_reply``              ``reply`` (ServerReply JSON), ``sent_batches`` (batch_seq as text →
                            op seqs), ``now_ms``. Result: the fold, manifest pages by scope
                            and cursor, ``tasks_applied`` when a tasks page stored any.
``observe_server_time``     ``server_ms``, ``now_ms``. Result: the new last stamp.
``hello``                   ``own_scope``, ``now_ms``, optional ``tasks`` (ask for the
                            tasks stream). Result: ``cursors``, ``clock``,
                            ``high_water_mark``.
``pending_ops``             ``limit``. Result: the seqs.
``put_base``                ``record_id``, ``changes``, ``old_paths``. Result: the base.
``delete_base``             ``record_id``, ``paths``. Result: the base.
``resend_rejected``         ``record_id``, ``changes``, ``new_values``, ``deleted_rows``.
                            Result: ``changes`` and ``corrects``.
``envelope``                ``action``: ``next``, ``reserve`` (with ``value``) or ``skip``.
                            Result: the next sequence afterwards.
==========================  ==============================================================

A step that raises writes nothing: the runner runs each step in one ``transaction()``, and
``state`` after an ``error`` step equals the state before it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sync_protocol.device import DeviceEngine, DeviceEngineError, DeviceStorage, RecordHead
from sync_protocol.messages import ServerReply
from sync_protocol.ops import TOMBSTONE, TOMBSTONE_KEY, Op, is_tombstone

__all__ = ["FORMAT", "VectorStorage", "execute_step", "record_scenario", "run_scenario"]

#: The ``format`` of the vectors document this runner understands.
FORMAT = "village-sync device-engine vectors 1"


class VectorStorage(DeviceStorage, Protocol):
    """A :class:`DeviceStorage` the vectors can run on: one unit of work per step, and a way to
    read back everything it holds."""

    def transaction(self) -> Any:
        """A context manager: everything written inside is undone when it raises."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """Everything held, in the shape of ``MemoryStorage.snapshot``."""
        ...


def _decode(value: Any) -> Any:
    """``{"$tombstone": true}`` in JSON inputs → the engine's TOMBSTONE."""
    if isinstance(value, Mapping) and dict(value) == {TOMBSTONE_KEY: True}:
        return TOMBSTONE
    return value


def _encode(value: Any) -> Any:
    return {TOMBSTONE_KEY: True} if is_tombstone(value) else value


def _flat(values: Mapping[str, Any]) -> dict[str, Any]:
    return {str(path): _decode(value) for path, value in values.items()}


def _run(engine: DeviceEngine, storage: VectorStorage, step: Mapping[str, Any]) -> Any:
    kind = step["do"]
    if kind == "queue":
        template = dict(step["op"])
        op = engine.queue_op(
            lambda seq, stamp: Op.from_dict({**template, "seq": seq, "hlc": stamp.to_text()}),
            now_ms=step["now_ms"],
            corrects=step.get("corrects", ()),
        )
        record = dict(step["record"])
        values = _flat(record.pop("values", {}))
        storage.write_record(RecordHead(**record), values)
        return op.to_dict()
    if kind == "mark_sent":
        engine.mark_sent(step["seqs"], now_ms=step["now_ms"])
        return None
    if kind == "fold_acks":
        summary = engine.fold_acks(step["seqs"], step["acks"], now_ms=step["now_ms"])
        return {
            "removed": summary.removed,
            "rejected": summary.rejected,
            "conflicts": summary.conflicts,
            "acked_through": summary.acked_through,
        }
    if kind == "mark_rejected":
        engine.mark_rejected(step["seq"], step["reasons"])
        return None
    if kind == "apply_state":
        return engine.apply_server_state(step["state"], now_ms=step["now_ms"])
    if kind == "fold_reply":
        reply = ServerReply.from_dict(step["reply"])
        sent = {int(k): list(v) for k, v in step["sent_batches"].items()}
        fold = engine.fold_reply(reply, sent, now_ms=step["now_ms"])
        result: dict[str, Any] = {
            "ops_acked": fold.ops_acked,
            "ops_rejected": fold.ops_rejected,
            "conflicts": fold.conflicts,
            "status_counts": dict(sorted(fold.status_counts.items())),
            "records_applied": fold.records_applied,
            "more": fold.more,
            "manifest_pages": [
                {"scope": p.scope, "next_cursor": p.next_cursor} for p in fold.manifest_pages
            ],
        }
        if fold.tasks_applied:
            result["tasks_applied"] = fold.tasks_applied
        return result
    if kind == "observe_server_time":
        return engine.observe_server_time(step["server_ms"], now_ms=step["now_ms"]).to_text()
    if kind == "hello":
        return {
            "cursors": engine.hello_cursors(step["own_scope"], tasks=step.get("tasks", False)),
            "clock": engine.hello_clock(now_ms=step["now_ms"]),
            "high_water_mark": storage.counters().acked_through,
        }
    if kind == "pending_ops":
        return [op.seq for op in engine.pending_ops(step.get("limit"))]
    if kind == "put_base":
        return engine.put_base(step["record_id"], _flat(step["changes"]), step["old_paths"])
    if kind == "delete_base":
        return engine.delete_base(step["record_id"], step["paths"])
    if kind == "resend_rejected":
        changes, corrects = engine.resend_rejected(
            step["record_id"],
            _flat(step["changes"]),
            _flat(step["new_values"]),
            step.get("deleted_rows", ()),
        )
        return {
            "changes": {p: _encode(v) for p, v in sorted(changes.items())},
            "corrects": corrects,
        }
    if kind == "envelope":
        action = step["action"]
        if action == "reserve":
            engine.reserve_envelope_sequences(step["value"])
        elif action == "skip":
            engine.skip_envelope_sequences()
        elif action != "next":
            raise ValueError(f"unknown envelope action {action!r}")
        return engine.next_envelope_sequence()
    raise ValueError(f"unknown step kind {kind!r}")


def execute_step(
    engine: DeviceEngine, storage: VectorStorage, step: Mapping[str, Any]
) -> dict[str, Any]:
    """Run one step in one unit of work; return ``{"result": …}`` or ``{"error": code}``, with
    the storage's ``state`` afterwards."""
    outcome: dict[str, Any]
    try:
        with storage.transaction():
            outcome = {"result": _run(engine, storage, step)}
    except DeviceEngineError as exc:
        outcome = {"error": exc.code}
    outcome["state"] = storage.snapshot()
    # Compare as JSON values (tuples become lists, keys text), exactly as the file holds them.
    return json.loads(json.dumps(outcome, ensure_ascii=False))


def record_scenario(
    script: Mapping[str, Any], make_storage: Callable[[], VectorStorage]
) -> dict[str, Any]:
    """Run a scenario's steps and write what each did into ``expect`` (the vector generator)."""
    storage = make_storage()
    engine = DeviceEngine(storage, script["device_id"])
    steps = []
    for step in script["steps"]:
        inputs = {k: v for k, v in step.items() if k != "expect"}
        steps.append({**inputs, "expect": execute_step(engine, storage, inputs)})
    return {**script, "steps": steps}


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def run_scenario(
    scenario: Mapping[str, Any], make_storage: Callable[[], VectorStorage]
) -> list[str]:
    """Replay one scenario on a fresh storage; return the mismatches (empty: it passes).

    Each mismatch names the step (index and kind) and which part differed (``result``,
    ``error`` or a top-level part of ``state``), so the first divergence is easy to find.
    """
    storage = make_storage()
    engine = DeviceEngine(storage, scenario["device_id"])
    problems: list[str] = []
    for index, step in enumerate(scenario["steps"]):
        inputs = {k: v for k, v in step.items() if k != "expect"}
        got = execute_step(engine, storage, inputs)
        want = step["expect"]
        where = f"{scenario['name']} step {index} ({step['do']})"
        for key in ("result", "error"):
            if got.get(key) != want.get(key):
                problems.append(f"{where}: {key} {_text(got.get(key))} != {_text(want.get(key))}")
        for part in sorted(set(got["state"]) | set(want["state"])):
            if got["state"].get(part) != want["state"].get(part):
                problems.append(f"{where}: state.{part} differs")
    return problems
