"""Sync messages: dict and wire round-trips, and validation errors that name the field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_protocol.errors import InvalidMessage
from sync_protocol.messages import (
    Ack,
    Capabilities,
    DownloadPage,
    FrameStatus,
    Hello,
    LeanStates,
    OpAck,
    Refusal,
    ServerReply,
    UploadBatch,
    decode_message,
    encode_message,
)
from sync_protocol.ops import TOMBSTONE, Op, put_op
from tests.sync_protocol.test_codec import device_batches, stamps

HELLO = Hello(
    device_id="dev-7f3a",
    cursors={"530102001201": 1841, "530102001": 0},
    high_water_mark=120,
    clock="019a8b7c6d5e-0003-dev-7f3a",
    capabilities=Capabilities(
        suites=(1, 2), compression=(0, 1, 2, 3), dictionary_ids=(0x1A2B3C4D,)
    ),
)
RECORD_STATE = {"record_id": "0b6f1f7e-3c55-4a5e-9d8e-2f1d3b7a9c01", "revision": 3, "paths": {}}
REPLY = ServerReply(
    server_time_ms=1_764_000_000_000,
    backoff_ms=0,
    frames=(FrameStatus(0, "committed"), FrameStatus(1, "committed"), FrameStatus(2, "truncated")),
    acks=(
        Ack(
            batch_seq=7,
            high_water_mark=123,
            acks=(
                OpAck(121, "applied", revision=1),
                OpAck(122, "conflict", revision=4, conflict_ids=("c-91",)),
                OpAck(
                    123,
                    "rejected",
                    reasons=(
                        {
                            "code": "required",
                            "path": "phone",
                            "field": "phone",
                            "message": {"zh": "必填", "en": "required"},
                            "severity": "error",
                        },
                    ),
                ),
            ),
            records=(RECORD_STATE,),
        ),
    ),
    downloads=(
        DownloadPage(
            scope="530102001201",
            after=1841,
            next_cursor=1900,
            more=True,
            records=(RECORD_STATE,),
            forms=({"form_id": "housing_safety", "version": 2},),
            config=({"key": "monitoring_line/53/2026", "value": 8700},),
        ),
    ),
)


@pytest.mark.parametrize("message", [HELLO, REPLY, ServerReply(server_time_ms=5)])
def test_round_trip_dict_and_wire(message: Any) -> None:
    assert type(message).from_dict(message.to_dict()) == message
    wire = encode_message(message)
    assert decode_message(wire) == message
    assert encode_message(decode_message(wire)) == wire
    assert json.loads(wire)["type"] == message.kind


@settings(max_examples=60)
@given(batch=device_batches(max_size=6), batch_seq=st.integers(1, 2**40))
def test_upload_batch_round_trip(batch: list, batch_seq: int) -> None:
    message = UploadBatch(batch_seq=batch_seq, ops=tuple(batch))
    assert decode_message(encode_message(message), expected="batch") == message


@settings(max_examples=50)
@given(clock=stamps, hwm=st.integers(0, 2**63), cursor=st.integers(0, 2**63))
def test_hello_round_trip(clock: str, hwm: int, cursor: int) -> None:
    hello = Hello("d", {"53": cursor}, hwm, clock, Capabilities((1,), (1,)))
    assert decode_message(encode_message(hello), expected="hello") == hello


def _broken(document: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    document = copy.deepcopy(document)
    target = document
    for step in path[:-1]:
        target = target[step]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


HELLO_DICT = HELLO.to_dict() | {"type": "hello"}
REPLY_DICT = REPLY.to_dict() | {"type": "reply"}


@pytest.mark.parametrize(
    ("document", "path", "value", "field"),
    [
        (HELLO_DICT, ["device_id"], "", "hello.device_id"),
        (HELLO_DICT, ["device_id"], KeyError, "hello.device_id"),
        (HELLO_DICT, ["extra"], 1, "hello.extra"),
        (HELLO_DICT, ["cursors", "530102001201"], -1, "hello.cursors['530102001201']"),
        (HELLO_DICT, ["cursors", "bad scope!"], 1, "hello.cursors"),
        (HELLO_DICT, ["high_water_mark"], True, "hello.high_water_mark"),
        (HELLO_DICT, ["clock"], "yesterday", "hello.clock"),
        (HELLO_DICT, ["capabilities", "suites", 1], "two", "hello.capabilities.suites[1]"),
        (HELLO_DICT, ["capabilities", "suites"], [], "hello.capabilities.suites"),
        (
            HELLO_DICT,
            ["capabilities", "dictionary_ids", 0],
            0,
            "hello.capabilities.dictionary_ids[0]",
        ),
        (REPLY_DICT, ["server_time_ms"], "now", "reply.server_time_ms"),
        (REPLY_DICT, ["backoff_ms"], -5, "reply.backoff_ms"),
        (REPLY_DICT, ["acks", 0, "acks", 0, "status"], "done", "reply.acks[0].acks[0].status"),
        (
            REPLY_DICT,
            ["acks", 0, "acks", 1, "conflict_ids"],
            [],
            "reply.acks[0].acks[1].conflict_ids",
        ),
        (REPLY_DICT, ["acks", 0, "acks", 2, "reasons"], [], "reply.acks[0].acks[2].reasons"),
        (
            REPLY_DICT,
            ["acks", 0, "acks", 2, "reasons", 0],
            "bad",
            "reply.acks[0].acks[2].reasons[0]",
        ),
        (REPLY_DICT, ["acks", 0, "acks", 0, "seq"], 0, "reply.acks[0].acks[0].seq"),
        (
            REPLY_DICT,
            ["acks", 0, "records", 0, "record_id"],
            5,
            "reply.acks[0].records[0].record_id",
        ),
        (REPLY_DICT, ["acks", 0, "batch_seq"], KeyError, "reply.acks[0].batch_seq"),
        (REPLY_DICT, ["downloads", 0, "next_cursor"], 3, "reply.downloads[0].next_cursor"),
        (REPLY_DICT, ["downloads", 0, "more"], "yes", "reply.downloads[0].more"),
        (
            REPLY_DICT,
            ["downloads", 0, "forms", 0],
            {"version": 2},
            "reply.downloads[0].forms[0].form_id",
        ),
        (REPLY_DICT, ["downloads", 0, "config", 0, "key"], "", "reply.downloads[0].config[0].key"),
        (REPLY_DICT, ["frames", 2, "status"], "lost", "reply.frames[2].status"),
        (REPLY_DICT, ["frames", 2, "status"], "rejected", "reply.frames[2].code"),
        (
            REPLY_DICT,
            ["refusal"],
            {"code": "device_revoked", "message": "revoked", "message_zh": "设备已吊销"},
            "reply.refusal",
        ),
        (REPLY_DICT, ["type"], "welcome", "type"),
    ],
)
def test_validation_errors_name_the_field(
    document: dict[str, Any], path: list[Any], value: Any, field: str
) -> None:
    wire = json.dumps(_broken(document, path, value), ensure_ascii=False).encode()
    with pytest.raises(InvalidMessage) as info:
        decode_message(wire)
    assert info.value.field == field
    assert info.value.code == "message_invalid"
    assert field in info.value.message
    assert field in info.value.message_zh


def test_batch_errors_point_into_the_ops() -> None:
    document = {"type": "batch", "batch_seq": 1, "ops": [1, ["d"], [[1, "r", "h", 0, 9, 1, 0, 0]]]}
    with pytest.raises(InvalidMessage) as info:
        decode_message(json.dumps(document).encode())
    assert info.value.field.startswith("batch.ops.ops[0]")
    document["batch_seq"] = 0
    with pytest.raises(InvalidMessage) as info:
        decode_message(json.dumps(document).encode())
    assert info.value.field == "batch.batch_seq"


def test_refusal_reply() -> None:
    reply = ServerReply(
        server_time_ms=1,
        backoff_ms=60_000,
        refusal=Refusal("clock_skew", "device clock is 2 h ahead", "设备时间快了 2 小时"),
    )
    assert decode_message(encode_message(reply), expected="reply") == reply


def test_expected_type_is_enforced() -> None:
    with pytest.raises(InvalidMessage) as info:
        decode_message(encode_message(HELLO), expected="reply")
    assert info.value.field == "type"


@settings(max_examples=200)
@given(data=st.binary(max_size=120))
def test_arbitrary_bytes_raise_only_invalid_message(data: bytes) -> None:
    try:
        decode_message(data)
    except InvalidMessage as exc:
        assert exc.field


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200)
@given(
    kind=st.sampled_from(["hello", "batch", "reply"]),
    key=st.sampled_from(
        [
            "device_id",
            "cursors",
            "capabilities",
            "clock",
            "high_water_mark",
            "batch_seq",
            "ops",
            "server_time_ms",
            "backoff_ms",
            "acks",
            "downloads",
            "frames",
            "refusal",
        ]
    ),
    value=_JSON,
)
def test_arbitrary_field_values_raise_only_invalid_message(kind: str, key: str, value: Any) -> None:
    base = {"hello": HELLO_DICT, "reply": REPLY_DICT, "batch": {"batch_seq": 1, "ops": [1, [], []]}}
    document = dict(base[kind]) | {"type": kind, key: value}
    try:
        decode_message(json.dumps(document).encode())
    except InvalidMessage as exc:
        assert exc.field


@pytest.mark.parametrize(
    ("raw", "got"),
    [
        (b'{"type":[]}', "an array"),
        (b'{"type":{}}', "an object"),
        (b'{"type":["hello"]}', "an array"),
        (b'{"type":{"hello":1}}', "an object"),
        (b'{"type":1}', "a number"),
        (b'{"type":true}', "a boolean"),
        (b'{"type":null}', "null"),
        (b'{"type":"HELLO"}', "'HELLO'"),
    ],
)
def test_a_type_that_is_not_a_known_string_is_invalid_message(raw: bytes, got: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        decode_message(raw)
    assert info.value.field == "type"
    assert info.value.message.endswith(f"got {got}")
    with pytest.raises(InvalidMessage) as info:
        decode_message(raw, expected="hello")
    assert info.value.field == "type"


@settings(max_examples=300)
@given(
    kind=_JSON | st.sampled_from(["hello", "batch", "reply"]),
    kind_of=st.sampled_from(["hello", "batch", "reply"]),
)
def test_arbitrary_json_in_type_raises_only_invalid_message(kind: Any, kind_of: str) -> None:
    base = {"hello": HELLO_DICT, "reply": REPLY_DICT, "batch": {"batch_seq": 1, "ops": [1, [], []]}}
    document = dict(base[kind_of]) | {"type": kind}
    data = json.dumps(document).encode()
    if kind == kind_of:
        assert decode_message(data).kind == kind_of
        return
    with pytest.raises(InvalidMessage) as info:
        decode_message(data)
    assert info.value.field
    if not isinstance(kind, str) or kind not in {"hello", "batch", "reply"}:
        # Not a known type name: refused on the type itself, never on another field.
        assert info.value.field == "type"
    else:
        # Another known type: the body does not fit that type's fields.
        assert info.value.field.startswith(kind)


def test_lean_acks_is_optional_and_absent_by_default() -> None:
    # A hello that does not ask is byte for byte what it always was: no new key.
    assert "lean_acks" not in encode_message(HELLO).decode()
    assert decode_message(encode_message(HELLO)).capabilities.lean_acks is False  # type: ignore[union-attr]
    asking = Hello(
        device_id="dev-7f3a",
        cursors={},
        high_water_mark=0,
        clock="019a8b7c6d5e-0003-dev-7f3a",
        capabilities=Capabilities(suites=(1,), compression=(0,), lean_acks=True),
    )
    data = encode_message(asking)
    assert b'"lean_acks":true' in data
    assert decode_message(data) == asking
    for bad in ("yes", 1, None):
        document = HELLO_DICT | {"capabilities": HELLO_DICT["capabilities"] | {"lean_acks": bad}}
        with pytest.raises(InvalidMessage) as info:
            Hello.from_dict(document)
        assert info.value.field == "hello.capabilities.lean_acks"


def _op(seq: int, record_id: str) -> Op:
    return put_op(
        device_id="dev-7f3a",
        seq=seq,
        record_id=record_id,
        form_id="housing_safety",
        form_version=1,
        changes={"phone": str(seq)},
        hlc=f"019a8b7c6d5e-{seq:04x}-dev-7f3a",
    )


def test_without_applied_records_keeps_what_a_device_cannot_compute() -> None:
    ops = [_op(1, "r-a"), _op(2, "r-b"), _op(3, "r-b"), _op(4, "r-c"), _op(5, "r-d")]
    states = (
        {"record_id": "r-a", "revision": 1},
        {"record_id": "r-b", "revision": 3},
        {"record_id": "r-c", "revision": 4, "warnings": [{"code": "range"}]},
        {"record_id": "r-d", "revision": 5},
    )
    ack = Ack(
        batch_seq=1,
        acks=(
            OpAck(1, "applied", revision=1),
            OpAck(2, "applied", revision=2),
            OpAck(3, "merged", revision=3),  # raced another write: the device needs the state
            OpAck(4, "applied", revision=4),  # applied, but the server has warnings for it
            OpAck(5, "conflict", revision=5, conflict_ids=("c-1",)),
        ),
        high_water_mark=5,
        records=states,
    )
    lean = ack.without_applied_records(ops)
    assert [r["record_id"] for r in lean.records] == ["r-b", "r-c", "r-d"]
    assert lean.acks == ack.acks and lean.high_water_mark == 5 and lean.batch_seq == 1
    assert Ack.from_dict(lean.to_dict()) == lean
    with pytest.raises(InvalidMessage) as info:
        ack.without_applied_records(ops[:-1])
    assert info.value.field == "ack.acks"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"seq": 1, "status": "conflict"}, "ack.conflict_ids"),
        ({"seq": 1, "status": "applied", "conflict_ids": ("c-1",)}, "ack.conflict_ids"),
        ({"seq": 1, "status": "rejected"}, "ack.reasons"),
        ({"seq": 1, "status": "merged", "reasons": ({"code": "required"},)}, "ack.reasons"),
        ({"seq": 1, "status": "rejected", "reasons": ({"path": "x"},)}, "ack.reasons[0].code"),
        ({"seq": 1, "status": "rejected", "reasons": ("required",)}, "ack.reasons[0]"),
        ({"seq": 0, "status": "applied"}, "ack.seq"),
        ({"seq": 1, "status": "applied", "revision": -1}, "ack.revision"),
        ({"seq": 1, "status": "done"}, "ack.status"),
        ({"seq": 1, "status": "conflict", "conflict_ids": ("",)}, "ack.conflict_ids[0]"),
    ],
)
def test_op_ack_is_validated_on_construction(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        OpAck(**kwargs)
    assert info.value.field == field


def test_a_constructed_op_ack_always_survives_the_device_check() -> None:
    ack = OpAck(3, "conflict", revision=2, conflict_ids=["c-1", "c-2"])  # type: ignore[arg-type]
    assert ack.conflict_ids == ("c-1", "c-2")
    rejected = OpAck(4, "rejected", reasons=[{"code": "required", "path": "phone"}])  # type: ignore[arg-type]
    for item in (ack, rejected):
        assert OpAck.from_dict(item.to_dict()) == item


def _lean_put(seq: int, record: str, changes: dict[str, Any], **kw: Any) -> Op:
    return put_op(
        device_id="dev-a",
        seq=seq,
        record_id=record,
        form_id="housing_safety",
        form_version=1,
        changes=changes,
        base=kw.get("base"),
        hlc=f"019ab697e8{seq:02x}-0000-dev-a",
        base_revision=kw.get("base_revision", 0),
    )


def test_lean_states_follow_each_records_chain_of_own_exact_ops() -> None:
    lean = LeanStates()
    applied = lambda seq, rev: OpAck(seq, "applied", revision=rev)  # noqa: E731
    # A new record, then an edit of it: a chain from revision 0.
    assert lean.observe(
        _lean_put(1, "r1", {"a": 1}), applied(1, 10), prior_revision=None, exact=True
    )
    assert lean.observe(_lean_put(2, "r1", {"b": 2}), applied(2, 11), prior_revision=10, exact=True)
    assert lean.leaves_out({"record_id": "r1", "revision": 11})
    assert not lean.leaves_out({"record_id": "r1", "revision": 12})  # changed since: it travels
    assert not lean.leaves_out({"record_id": "r1", "revision": 11, "warnings": [{"code": "x"}]})
    # Another device changed r2 after the revision this device held (5): not lean, for good.
    assert not lean.observe(
        _lean_put(3, "r2", {"a": 1}, base_revision=5), applied(3, 12), prior_revision=7, exact=True
    )
    assert not lean.observe(
        _lean_put(4, "r2", {"a": 2}, base_revision=12),
        applied(4, 13),
        prior_revision=12,
        exact=True,
    )
    assert lean.revision("r2") is None
    # Not exact (a value standardised, a warning …), a tombstone, a merged ack: never lean.
    assert not lean.observe(
        _lean_put(5, "r3", {"a": 1}), applied(5, 14), prior_revision=None, exact=False
    )
    assert not lean.observe(
        _lean_put(6, "r4", {"rows/x": TOMBSTONE}), applied(6, 15), prior_revision=None, exact=True
    )
    assert not lean.observe(
        _lean_put(7, "r5", {"a": 1}),
        OpAck(7, "merged", revision=16),
        prior_revision=None,
        exact=True,
    )
    # A batch whose acks never reach the device: its records travel after all.
    lean.forget(["r1"])
    assert not lean.leaves_out({"record_id": "r1", "revision": 11})


def test_an_ack_names_only_applied_ops_in_lean_seqs() -> None:
    ack = Ack(1, (OpAck(1, "applied", revision=3),), 1, lean_seqs=(1,))
    assert Ack.from_dict(ack.to_dict()) == ack
    assert "lean_seqs" not in Ack(1, ack.acks, 1).to_dict()  # byte for byte as before
    with pytest.raises(InvalidMessage, match="lean_seqs"):
        Ack.from_dict({**ack.to_dict(), "lean_seqs": [2]})
