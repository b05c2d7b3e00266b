"""The Python reference implementation behind the conformance vectors' line protocol.

Every conformance case is ``{"check": NAME, "input": {...}}``; an implementation answers with
one JSON object, which must equal the case's ``expect`` (docs/protocol.md §11). This module
answers every check with the project's own engines (``sync_protocol``, ``forms``), so it both
generates the vectors (``conformance_builder``) and is the first implementation the runner
checks (``conformance``). Run as a program it speaks the protocol on stdin/stdout, one JSON
object per line, exactly as a second implementation would:

    .venv/bin/python -m tests.sync_protocol.conformance_python
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from datetime import date
from io import BytesIO
from typing import Any

from forms.definition import load_definition
from forms.errors import EvaluationError, ExpressionError
from forms.expressions import Environment, EvaluationContext, parse_expression
from forms.indicators import MonitoringConfig, household_indicators
from forms.instruments import load_builtin
from forms.paths import flatten, unflatten
from forms.validation import prefill, validate_record
from sync_protocol.clock import HybridClock, Stamp, is_suspect
from sync_protocol.codec import canonical_json
from sync_protocol.compression import DictionaryStore
from sync_protocol.crypto import EncryptionPrivateKey, SigningPublicKey
from sync_protocol.errors import InvalidMessage, MalformedFrame, ProtocolError
from sync_protocol.exchange import iter_request_frames, open_message
from sync_protocol.merge import RecordState, device_view, merge, resolution
from sync_protocol.messages import decode_message, encode_message
from sync_protocol.ops import Op

__all__ = ["CHECKS", "answer", "main"]


def _error(exc: ProtocolError) -> dict[str, Any]:
    out: dict[str, Any] = {"code": exc.code}
    where = getattr(exc, "field", None) or getattr(exc, "where", None)
    if isinstance(where, str) and where:
        out["where"] = where
    return {"error": out}


def _message_decode(data: Mapping[str, Any]) -> dict[str, Any]:
    try:
        message = decode_message(data["payload_text"].encode("utf-8"))
    except InvalidMessage as exc:
        return _error(exc)
    return {"type": message.kind, "canonical_text": encode_message(message).decode("utf-8")}


def _frames_encode(data: Mapping[str, Any]) -> dict[str, Any]:
    body = b"".join(
        len(bytes.fromhex(h)).to_bytes(4, "big") + bytes.fromhex(h) for h in data["envelopes_hex"]
    )
    return {"body_hex": body.hex()}


def _frames_decode(data: Mapping[str, Any]) -> dict[str, Any]:
    frames: list[dict[str, Any]] = []
    try:
        for frame in iter_request_frames(BytesIO(bytes.fromhex(data["body_hex"]))):
            frames.append(
                {"index": frame.index, "data_hex": frame.data.hex(), "truncated": frame.truncated}
            )
    except MalformedFrame as exc:
        return {"frames": frames, **_error(exc)}
    return {"frames": frames}


def _stamp_parse(data: Mapping[str, Any]) -> dict[str, Any]:
    try:
        stamp = Stamp.parse(data["text"])
    except ProtocolError as exc:
        return _error(exc)
    return {
        "ms": stamp.ms,
        "counter": stamp.counter,
        "node": stamp.node,
        "bytes_hex": stamp.to_bytes().hex(),
    }


def _clock_run(data: Mapping[str, Any]) -> dict[str, Any]:
    wall = {"ms": 0}
    last = Stamp.parse(data["last"]) if data.get("last") else None
    clock = HybridClock(data["node"], now_ms=lambda: wall["ms"], last=last)
    stamps = []
    for event in data["events"]:
        wall["ms"] = event["wall"]
        if "observe" in event:
            remote = event["observe"]
            seen = clock.observe(remote if isinstance(remote, int) else Stamp.parse(remote))
            stamps.append(seen.to_text())
        else:
            stamps.append(clock.now().to_text())
    return {"stamps": stamps}


def _clock_suspect(data: Mapping[str, Any]) -> dict[str, Any]:
    return {"suspect": is_suspect(data["stamp"], data["server_ms"], data["max_drift_ms"])}


def _result_dict(result: Any) -> dict[str, Any]:
    return {
        "status": result.status,
        "changed": result.changed,
        "suspect": result.suspect,
        "field_outcomes": dict(sorted(result.field_outcomes.items())),
        "conflicts": [c.to_dict() for c in result.conflicts],
        "closed_conflict_ids": sorted(result.closed_conflict_ids),
    }


def _merge_run(data: Mapping[str, Any]) -> dict[str, Any]:
    policies = data["policies"]

    def policy(path: str) -> str:
        return policies.get(path, policies.get("*", "lww"))

    state = RecordState.from_dict(data["state"]) if data.get("state") else None
    results = []
    for step in data["steps"]:
        op = Op.from_dict(step["op"])
        try:
            result = merge(state, op, policy, reference_ms=step["server_ms"])
        except ProtocolError as exc:
            results.append(_error(exc))
            continue
        state = result.state
        results.append(_result_dict(result))
    assert state is not None  # every merge case starts with a creating op
    return {"results": results, "state": state.to_dict(), "device_view": device_view(state)}


def _state_decode(data: Mapping[str, Any]) -> dict[str, Any]:
    try:
        state = RecordState.from_dict(data["state"])
    except ProtocolError as exc:
        return _error(exc)
    return {"canonical": state.to_dict(), "device_view": device_view(state)}


def _state_bases(data: Mapping[str, Any]) -> dict[str, Any]:
    state = RecordState.from_dict(data["state"])
    return {
        "base_for": state.base_for(data["paths"]),
        "delete_base": {scope: state.delete_base(scope) for scope in data["delete_scopes"]},
    }


def _state_resolution(data: Mapping[str, Any]) -> dict[str, Any]:
    state = RecordState.from_dict(data["state"])
    changes, base = resolution(state, data["conflict_id"], data["chosen"])
    return {"changes": changes, "base": base}


def _paths(data: Mapping[str, Any]) -> dict[str, Any]:
    flat = flatten(data["data"])
    return {"flat": flat, "unflattened": unflatten(flat)}


def _record_validate(data: Mapping[str, Any]) -> dict[str, Any]:
    if "definition" in data:  # a form of its own (choice_filter, repeat_count, ...)
        defn = load_definition(data["definition"])
    else:
        defn = load_builtin(data["form_id"])
    assert defn.version == data["form_version"]  # the vectors name the packaged version
    context = EvaluationContext(today=date.fromisoformat(data["today"]), config=data["config"])
    result = validate_record(defn, data["data"], context)
    return {
        "errors": [i.to_dict() for i in result.errors],
        "warnings": [i.to_dict() for i in result.warnings],
        "cleaned": result.cleaned,
    }


def _record_prefill(data: Mapping[str, Any]) -> dict[str, Any]:
    defn = load_definition(data["definition"])
    context = EvaluationContext(today=date.fromisoformat(data["today"]), config=data["config"])
    return {"data": prefill(defn, data["data"], context)}


def _household_indicators(data: Mapping[str, Any]) -> dict[str, Any]:
    picture = household_indicators(
        data["records"],
        data["village_code"],
        data["year"],
        MonitoringConfig.from_mapping(data["monitoring"]),
        on=date.fromisoformat(data["on"]) if data.get("on") else None,
    )
    return picture.to_dict()


def _sealed_open(data: Mapping[str, Any]) -> dict[str, Any]:
    """Open every frame of a body (or one envelope) to the message it carries."""
    own = EncryptionPrivateKey.from_raw(bytes.fromhex(data["recipient_x25519_private_hex"]))
    sender_key = SigningPublicKey.from_raw(bytes.fromhex(data["sender_ed25519_public_hex"]))
    if "envelope_hex" in data:
        envelopes = [bytes.fromhex(data["envelope_hex"])]
    else:
        body = BytesIO(bytes.fromhex(data["body_hex"]))
        envelopes = [frame.data for frame in iter_request_frames(body)]
    opened: list[dict[str, Any]] = []
    for envelope in envelopes:
        try:
            message = open_message(
                envelope,
                recipient_keys={own.public_key().key_id(): own},
                sender_verify_key=lambda sender: (
                    sender_key if sender == data["sender_id"] else None
                ),
                dictionaries=DictionaryStore(),
            )
        except ProtocolError as exc:
            opened.append(_error(exc))
            continue
        header = message.header
        opened.append(
            {
                "sender_id": header.sender_id,
                "sequence": header.sequence,
                "suite": int(header.suite),
                "compression": int(header.compression),
                "type": message.message.kind,
                "canonical_text": encode_message(message.message).decode("utf-8"),
            }
        )
    return {"opened": opened}


def _typed(value: Any) -> dict[str, Any]:
    if value is None:
        return {"kind": "empty", "value": None}
    if isinstance(value, bool):
        return {"kind": "boolean", "value": value}
    if isinstance(value, int | float):
        return {"kind": "number", "value": value}
    if isinstance(value, date):
        return {"kind": "date", "value": value.isoformat()}
    if isinstance(value, str):
        return {"kind": "string", "value": value}
    return {"kind": "list", "value": list(value)}


def _expression_evaluate(data: Mapping[str, Any]) -> dict[str, Any]:
    try:
        expression = parse_expression(data["expression"])
    except ExpressionError as exc:
        return {"error": {"code": exc.code, "position": exc.position}}
    context = EvaluationContext(today=date.fromisoformat(data["today"]), config=data["config"])
    names = data.get("level_names")
    env = Environment(
        data["values"],
        None,
        context,
        {path: frozenset(n) for path, n in names.items()} if names is not None else None,
    )
    for scope in data.get("rows", []):
        env = env.in_row(scope["repeat"], scope["row"])
    if data.get("choice") is not None:  # the choice a choice_filter is testing
        env = env.with_choice(data["choice"])
    if data.get("labels") is not None or data.get("tables") is not None:
        # choice labels by field (jr:choice-name), data tables (pulldata)
        env = Environment(
            env.values,
            env.current,
            env.context,
            env.level_names,
            env.rows,
            env.choice,
            data.get("labels"),
            data.get("tables"),
        )
    try:
        value = expression.evaluate(env.with_current(data.get("current")))
    except EvaluationError as exc:
        return {"error": {"code": exc.code}}
    return _typed(value)


CHECKS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "expression.evaluate": _expression_evaluate,
    "sealed.open": _sealed_open,
    "message.decode": _message_decode,
    "frames.encode": _frames_encode,
    "frames.decode": _frames_decode,
    "stamp.parse": _stamp_parse,
    "clock.run": _clock_run,
    "clock.suspect": _clock_suspect,
    "merge.run": _merge_run,
    "state.decode": _state_decode,
    "state.bases": _state_bases,
    "state.resolution": _state_resolution,
    "paths.flatten": _paths,
    "record.validate": _record_validate,
    "record.prefill": _record_prefill,
    "household.indicators": _household_indicators,
}


def answer(check: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """This implementation's answer to one case, as plain JSON (round-tripped)."""
    return json.loads(canonical_json(CHECKS[check](data)))


def main() -> None:
    """The line protocol: one ``{"check", "input"}`` per line in, one answer per line out."""
    for line in sys.stdin:
        if line.strip():
            case = json.loads(line)
            sys.stdout.write(json.dumps(answer(case["check"], case["input"]), ensure_ascii=False))
            sys.stdout.write("\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
