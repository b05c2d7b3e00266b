"""One exchange end to end with real keys: framing, truncated tails, batch sizing, replies."""

from __future__ import annotations

import io
import random
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_protocol.compression import BROWSER_METHODS, DictionaryStore, Method, train_dictionary
from sync_protocol.crypto import generate_device_keys, generate_server_keys
from sync_protocol.errors import (
    BadSignature,
    MalformedFrame,
    ProtocolError,
    Replayed,
    ServerRefused,
    Truncated,
)
from sync_protocol.exchange import (
    CONTENT_TYPE,
    DeviceEnd,
    Frame,
    build_reply,
    build_request,
    build_request_batches,
    iter_request_frames,
    open_message,
    open_reply,
    seal_message,
    split_into_batches,
)
from sync_protocol.messages import (
    Ack,
    Capabilities,
    FrameStatus,
    Hello,
    OpAck,
    Refusal,
    ServerReply,
    UploadBatch,
)
from sync_protocol.ops import Op, put_op

SERVER_ID = "county-530102"
SERVER = generate_server_keys()
DEVICE_KEYS = generate_device_keys()
DEVICE_ID = "tablet-yn-07"


def _device(**overrides) -> DeviceEnd:
    settings_ = {
        "device_id": DEVICE_ID,
        "keys": DEVICE_KEYS,
        "server_encryption": SERVER.encryption_public,
        "server_signing": SERVER.signing_public,
    } | overrides
    return DeviceEnd(**settings_)


def _hello() -> Hello:
    return Hello(
        device_id=DEVICE_ID,
        cursors={"530102001201": 0},
        high_water_mark=0,
        clock="019a8b7c6d5e-0000-tablet-yn-07",
        capabilities=Capabilities(suites=(1, 2), compression=(0, 1, 2, 3)),
    )


def _ops(count: int, seed: int = 1, first_seq: int = 1) -> list[Op]:
    rng = random.Random(seed)
    ops = []
    for k in range(count):
        row = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        ops.append(
            put_op(
                device_id=DEVICE_ID,
                seq=first_seq + k,
                record_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                form_id="household_roster",
                form_version=1,
                household={"village_code": "530102001201", "household_no": f"{k:04d}"},
                round="2026-annual",
                changes={
                    "household_type": rng.choice(["脱贫户", "普通农户"]),
                    "phone": f"138{rng.randrange(10**8):08d}",
                    f"members/{row}/name": rng.choice(["李秀英", "王建华", "张志强"]),
                    f"members/{row}/relation": "户主",
                    f"members/{row}/_order": 1,
                },
                hlc=f"{0x019A8B7C6D5E + k * 1000:012x}-0000-{DEVICE_ID}",
            )
        )
    return ops


def _server_open(frame: Frame, expected: str, seen: set[int] | None = None):
    def is_replay(_sender: str, sequence: int) -> bool:
        return seen is not None and sequence in seen

    return open_message(
        frame.data,
        recipient_keys={SERVER.encryption.key_id(): SERVER.encryption},
        sender_verify_key=lambda sender: (
            DEVICE_KEYS.signing_public if sender == DEVICE_ID else None
        ),
        is_replay=is_replay,
        expected=expected,
    )


def test_request_round_trip_through_the_server_side() -> None:
    ops = _ops(30)
    batches = [UploadBatch(1, tuple(ops[:10])), UploadBatch(2, tuple(ops[10:]))]
    request = build_request(_device(), _hello(), batches, first_sequence=41)
    assert request.hello_sequence == 41 and request.next_sequence == 44
    assert request.headers == {
        "Content-Type": CONTENT_TYPE,
        "Content-Length": str(len(request.body)),
    }
    frames = list(iter_request_frames(request.body))
    assert [f.index for f in frames] == [0, 1, 2]
    assert not any(f.truncated for f in frames)
    assert [len(f.data) + 4 for f in frames] == list(request.frame_sizes)
    hello = _server_open(frames[0], "hello")
    assert hello.message == _hello()
    assert hello.header.sequence == 41
    opened = [_server_open(f, "batch") for f in frames[1:]]
    assert [o.message for o in opened] == batches
    assert [o.header.sequence for o in opened] == [42, 43]
    # The device allowed everything: the batches went compressed.
    assert all(o.header.compression != Method.RAW for o in opened)


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 100, -1])
def test_truncated_tail_keeps_the_complete_frames(cut: int) -> None:
    batches = [UploadBatch(1, tuple(_ops(5))), UploadBatch(2, tuple(_ops(5, seed=2, first_seq=6)))]
    request = build_request(_device(), _hello(), batches, first_sequence=1)
    sizes = request.frame_sizes
    end_of_second = sizes[0] + sizes[1]
    body = request.body[: end_of_second + cut] if cut > 0 else request.body[:cut]
    frames = list(iter_request_frames(body))
    assert [f.truncated for f in frames] == [False, False, True]
    assert _server_open(frames[1], "batch").message == batches[0]
    with pytest.raises(Truncated):
        _server_open(frames[2], "batch")


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, 2000))
def test_any_cut_yields_complete_frames_then_at_most_one_truncated(cut: int) -> None:
    body = _BODY[: min(cut * 3, len(_BODY))]
    frames = list(iter_request_frames(body))
    complete = [f for f in frames if not f.truncated]
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(f.truncated for f in frames[len(complete) :])
    assert len(frames) - len(complete) <= 1
    assert (
        b"".join(len(f.data).to_bytes(4, "big") + f.data for f in complete)
        == body[: sum(_REQUEST.frame_sizes[: len(complete)])]
    )


_REQUEST = build_request(
    _device(),
    _hello(),
    [UploadBatch(1, tuple(_ops(8))), UploadBatch(2, tuple(_ops(8, seed=3, first_seq=9)))],
    first_sequence=1,
)
_BODY = _REQUEST.body


class _Trickle(io.RawIOBase):
    """A stream that hands out at most 7 bytes per read, like a slow socket."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(size, 7) if size >= 0 else 7)


def test_frames_read_from_a_trickling_stream() -> None:
    frames = list(iter_request_frames(_Trickle(_BODY)))
    assert [len(f.data) + 4 for f in frames] == list(_REQUEST.frame_sizes)


@pytest.mark.parametrize("prefix", [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff"])
def test_impossible_frame_length_is_malformed(prefix: bytes) -> None:
    with pytest.raises(MalformedFrame) as info:
        list(iter_request_frames(_BODY[: _REQUEST.frame_sizes[0]] + prefix + b"x"))
    assert info.value.code == "frame_malformed"


def test_empty_body_has_no_frames() -> None:
    assert list(iter_request_frames(b"")) == []


def test_request_refuses_other_devices_ops() -> None:
    foreign = Op.from_dict(_ops(1)[0].to_dict() | {"device_id": "someone-else"})
    with pytest.raises(MalformedFrame):
        build_request(_device(), _hello(), [UploadBatch(1, (foreign,))], first_sequence=1)


def test_replayed_batch_envelope_is_refused() -> None:
    frames = list(iter_request_frames(_BODY))
    with pytest.raises(Replayed):
        _server_open(frames[1], "batch", seen={2})


def test_split_into_batches_respects_the_wire_limit() -> None:
    ops = _ops(400)
    limit = 6 * 1024
    batches = split_into_batches(ops, limit, sender_id=DEVICE_ID, first_batch_seq=5)
    assert [b.batch_seq for b in batches] == list(range(5, 5 + len(batches)))
    assert [op for b in batches for op in b.ops] == ops
    assert len(batches) > 2
    request = build_request(_device(), _hello(), batches, first_sequence=1)
    assert max(request.frame_sizes[1:]) <= limit
    # Batches are filled: each but the last is over half the limit.
    assert min(request.frame_sizes[1:-1]) > limit // 2


def test_split_browser_suite_and_oversized_op() -> None:
    ops = _ops(60)
    batches = split_into_batches(ops, 2048, sender_id=DEVICE_ID, allowed=BROWSER_METHODS)
    request = build_request(
        _device(compression=BROWSER_METHODS), _hello(), batches, first_sequence=1
    )
    assert max(request.frame_sizes[1:]) <= 2048
    # An op larger than the limit travels alone rather than being split or dropped.
    alone = split_into_batches(ops[:3], 100, sender_id=DEVICE_ID)
    assert [len(b.ops) for b in alone] == [1, 1, 1]
    assert split_into_batches([], sender_id=DEVICE_ID) == []


def test_browser_suite_device_only_uses_deflate_raw() -> None:
    device = _device(compression=BROWSER_METHODS)
    request = build_request_batches(device, _hello(), _ops(50), first_sequence=1, first_batch_seq=1)
    frames = list(iter_request_frames(request.body))
    methods = {_server_open(f, None).header.compression for f in frames}
    assert methods <= {Method.RAW, Method.DEFLATE_RAW}
    assert Method.DEFLATE_RAW in methods


def test_dictionary_is_used_when_both_ends_hold_it() -> None:
    samples = [UploadBatch(1, (op,)) for op in _ops(300, seed=9)]
    from sync_protocol.messages import encode_message

    dictionary = train_dictionary(
        "household_roster", 1, [encode_message(s) for s in samples], size=4096
    )
    store = DictionaryStore([dictionary])
    device = _device(dictionaries=store)
    request = build_request(device, _hello(), [UploadBatch(1, tuple(_ops(1)))], first_sequence=1)
    frame = list(iter_request_frames(request.body))[1]
    opened = open_message(
        frame.data,
        recipient_keys={SERVER.encryption.key_id(): SERVER.encryption},
        sender_verify_key=lambda sender: DEVICE_KEYS.signing_public,
        dictionaries=store,
        expected="batch",
    )
    assert opened.header.compression == Method.ZSTD_DICTIONARY
    assert opened.header.dictionary_id == dictionary.dictionary_id
    assert opened.message == UploadBatch(1, tuple(_ops(1)))


REPLY = ServerReply(
    server_time_ms=1_764_000_000_000,
    frames=(FrameStatus(0, "committed"), FrameStatus(1, "committed")),
    acks=(Ack(1, (OpAck(1, "applied", revision=1),), high_water_mark=1),),
)


def _reply_bytes(reply: ServerReply, hello_sequence: int) -> bytes:
    return build_reply(
        reply,
        server_id=SERVER_ID,
        server_keys=SERVER,
        device_public=DEVICE_KEYS.encryption_public,
        hello_sequence=hello_sequence,
    )


def test_reply_round_trip_and_binding_to_the_request() -> None:
    body = _reply_bytes(REPLY, 41)
    assert open_reply(body, _device(), hello_sequence=41) == REPLY
    with pytest.raises(Replayed) as info:
        open_reply(body, _device(), hello_sequence=45)
    assert "41" not in info.value.message or "45" in info.value.message


def test_tampered_reply_is_refused() -> None:
    body = bytearray(_reply_bytes(REPLY, 7))
    body[-70] ^= 0x01
    with pytest.raises(BadSignature):
        open_reply(bytes(body), _device(), hello_sequence=7)
    impostor = generate_server_keys()
    forged = build_reply(
        REPLY,
        server_id=SERVER_ID,
        server_keys=impostor,
        device_public=DEVICE_KEYS.encryption_public,
        hello_sequence=7,
    )
    with pytest.raises(BadSignature):
        open_reply(forged, _device(), hello_sequence=7)


def test_refusal_reply_raises_with_code_and_backoff() -> None:
    refusal = ServerReply(
        server_time_ms=1,
        backoff_ms=3_600_000,
        refusal=Refusal("device_revoked", "this device was revoked", "此设备已被吊销"),
    )
    reply = open_reply(_reply_bytes(refusal, 3), _device(), hello_sequence=3)
    with pytest.raises(ServerRefused) as info:
        reply.raise_for_refusal()
    assert info.value.code == "device_revoked"
    assert info.value.message_zh == "此设备已被吊销"
    assert info.value.backoff_ms == 3_600_000
    REPLY.raise_for_refusal()  # an ordinary reply does not raise


def test_seal_message_never_grows_the_payload() -> None:
    from sync_protocol.messages import encode_message

    message = ServerReply(server_time_ms=1)
    raw_length = len(encode_message(message))
    for allowed, methods in [
        ({Method.RAW}, {Method.RAW}),
        ({Method.RAW, Method.ZSTD}, {Method.RAW, Method.ZSTD}),
        (set(Method), set(Method)),
    ]:
        envelope = seal_message(
            message,
            recipient_public=DEVICE_KEYS.encryption_public,
            sender_id=SERVER_ID,
            signing_key=SERVER.signing,
            sequence=1,
            allowed=allowed,
        )
        opened = open_message(
            envelope,
            recipient_keys={DEVICE_KEYS.encryption.key_id(): DEVICE_KEYS.encryption},
            sender_verify_key=lambda sender: SERVER.signing_public,
        )
        assert opened.header.compression in methods
        assert opened.header.plaintext_length <= raw_length
        assert opened.message == message


@settings(max_examples=200)
@given(body=st.binary(max_size=300))
def test_arbitrary_bodies_give_frames_or_malformed_frame(body: bytes) -> None:
    try:
        frames = list(iter_request_frames(body))
    except MalformedFrame:
        return
    assert sum(4 + len(f.data) for f in frames if not f.truncated) <= len(body)
    # Only the last frame may be truncated.
    assert not any(f.truncated for f in frames[:-1])


@settings(max_examples=100, deadline=None)
@given(position=st.integers(0, 10_000), value=st.integers(0, 255))
def test_damaged_envelopes_raise_only_protocol_errors(position: int, value: int) -> None:
    frame = bytearray(list(iter_request_frames(_BODY))[1].data)
    frame[position % len(frame)] ^= value or 1
    try:
        _server_open(Frame(1, bytes(frame)), "batch")
    except ProtocolError as exc:
        assert exc.code.startswith(
            ("envelope_", "unknown_", "corrupt_", "decompressed_", "message_")
        )


def test_large_reply_with_a_dictionary_still_gets_plain_zstd() -> None:
    from sync_protocol.compression import LARGE_PAYLOAD
    from sync_protocol.messages import DownloadPage, encode_message

    samples = [encode_message(UploadBatch(1, (op,))) for op in _ops(300, seed=11)]
    dictionary = train_dictionary("household_roster", 1, samples, size=4096)
    states = tuple(
        {"record_id": op.record_id, "form_id": "household_roster", "form_version": 1}
        | {"values": op.to_dict()["changes"], "note": "x" * 200}
        for op in _ops(1500, seed=12)
    )
    reply = ServerReply(
        server_time_ms=1,
        downloads=(DownloadPage("530102001201", 0, 1500, False, records=states),),
    )
    assert len(encode_message(reply)) > LARGE_PAYLOAD
    envelope = build_reply(
        reply,
        server_id=SERVER_ID,
        server_keys=SERVER,
        device_public=DEVICE_KEYS.encryption_public,
        hello_sequence=1,
        dictionaries=DictionaryStore([dictionary]),
    )
    opened = open_message(
        envelope,
        recipient_keys={DEVICE_KEYS.encryption.key_id(): DEVICE_KEYS.encryption},
        sender_verify_key=lambda sender: SERVER.signing_public,
    )
    assert opened.header.compression == Method.ZSTD
    assert opened.message == reply


def test_reply_uses_only_dictionaries_the_device_holds() -> None:
    from sync_protocol.messages import encode_message

    samples = [encode_message(UploadBatch(1, (op,))) for op in _ops(300, seed=13)]
    dictionary = train_dictionary("household_roster", 1, samples, size=4096)
    state = {"record_id": "r-1", "form_id": "household_roster", "form_version": 1}
    reply = ServerReply(
        server_time_ms=1,
        acks=(Ack(1, (OpAck(1, "applied", revision=1),), 1, records=(state,)),),
    )
    methods = {}
    for held in ([], [dictionary.dictionary_id]):
        envelope = build_reply(
            reply,
            server_id=SERVER_ID,
            server_keys=SERVER,
            device_public=DEVICE_KEYS.encryption_public,
            hello_sequence=1,
            dictionaries=DictionaryStore([dictionary]),
            peer_dictionary_ids=held,
        )
        device = _device(dictionaries=DictionaryStore([dictionary]) if held else DictionaryStore())
        assert open_reply(envelope, device, hello_sequence=1) == reply
        methods[len(held)] = envelope[6]  # the header's compression byte
    assert methods[0] != Method.ZSTD_DICTIONARY
    assert methods[1] == Method.ZSTD_DICTIONARY


def test_server_side_opens_packaged_dictionary_batches_by_default() -> None:
    store = DictionaryStore.packaged()
    assert store.for_form("household_roster", 1) is not None
    device = _device(dictionaries=store)
    request = build_request(device, _hello(), [UploadBatch(1, tuple(_ops(1)))], first_sequence=1)
    opened = _server_open(list(iter_request_frames(request.body))[1], "batch")
    assert opened.header.compression == Method.ZSTD_DICTIONARY
    assert opened.message == UploadBatch(1, tuple(_ops(1)))


class _Disconnected(Exception):
    """Stands for a WSGI server's "client disconnected" error."""


class _CutStream(io.RawIOBase):
    """Delivers ``limit`` bytes of ``data`` and then fails the way a dropped socket does."""

    def __init__(self, data: bytes, limit: int, error: type[BaseException]) -> None:
        self._data = io.BytesIO(data[:limit])
        self._error = error

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._data.read(min(size, 100) if size >= 0 else 100)
        if not chunk:
            raise self._error("connection reset")
        return chunk


@pytest.mark.parametrize("error", [ConnectionResetError, _Disconnected])
def test_a_read_error_counts_as_the_end_of_the_body(error: type[BaseException]) -> None:
    cut = _REQUEST.frame_sizes[0] + _REQUEST.frame_sizes[1] + 10
    frames = list(
        iter_request_frames(
            _CutStream(_BODY, cut, error), disconnect_errors=(OSError, _Disconnected)
        )
    )
    assert [(f.index, f.truncated) for f in frames] == [(0, False), (1, False), (2, True)]
    assert len(frames[2].data) == 6
    with pytest.raises(_Disconnected):
        list(iter_request_frames(_CutStream(_BODY, cut, _Disconnected)))
