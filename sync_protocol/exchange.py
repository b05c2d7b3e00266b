"""Framing of one sync exchange: one HTTP request, one HTTP response.

Request body (``Content-Type: application/vnd.village-sync.exchange``)::

    frame 0       the sealed Hello
    frame 1..N    the sealed UploadBatch messages, in batch order
    frame         = uint32 big-endian length L (1 .. 8 MiB) || L bytes of one envelope

Each frame is one envelope (docs/protocol-envelope.md) whose payload is a compressed message
(:mod:`sync_protocol.messages`, :mod:`sync_protocol.compression`). The server reads frames one by
one (:func:`iter_request_frames`, which accepts a byte string or a stream), opens each, commits
its batch in its own transaction and moves on, so a connection cut in the middle of frame k
loses frame k only: frames before it are committed and acknowledged next time by the op
high-water mark, frame k comes back ``truncated``.

Response body: exactly one envelope, sealed to the device and signed by the server, whose
payload is a :class:`~sync_protocol.messages.ServerReply`. Its envelope sequence is the
sequence of the request's hello envelope, which binds the reply to the request: an old reply
played back to the device is refused by :func:`open_reply`.

Envelope sequences: a device numbers every envelope it seals (hello and batches alike) from one
counter that only goes up and persists across exchanges; :func:`build_request` uses
``first_sequence`` for the hello and the following numbers for the batches.

Compression per envelope: the sender tries every method both ends allow (the hello's
``capabilities``) and keeps the smallest; for a batch or a reply, zstd uses the dictionary of
the form version it carries most, when both ends hold it. The browser suite allows raw and
deflate-raw only.
"""

from __future__ import annotations

import io
import struct
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Final, cast

from sync_protocol.compression import (
    ALL_METHODS,
    DEFAULT_MAX_SIZE,
    LARGE_PAYLOAD,
    SERVER_ZSTD_LEVEL,
    DictionaryStore,
    Method,
    ZstdDict,
    compress,
    decompress,
    deflate_raw,
)
from sync_protocol.crypto import (
    EncryptionPrivateKey,
    EncryptionPublicKey,
    KeyBundle,
    SigningPrivateKey,
    SigningPublicKey,
)
from sync_protocol.envelope import (
    BROWSER_SUITE,
    MAX_ENVELOPE_BYTES,
    MIN_HEADER_BYTES,
    Header,
    open_envelope,
    seal,
)
from sync_protocol.errors import MalformedFrame, Replayed
from sync_protocol.messages import (
    Hello,
    Message,
    ServerReply,
    UploadBatch,
    decode_message,
    encode_message,
)
from sync_protocol.ops import Op

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BATCH_WIRE_BYTES",
    "FRAME_PREFIX_BYTES",
    "DeviceEnd",
    "Frame",
    "OpenedMessage",
    "Request",
    "build_reply",
    "build_request",
    "build_request_batches",
    "envelope_overhead",
    "iter_request_frames",
    "open_message",
    "open_reply",
    "seal_message",
    "split_into_batches",
]

CONTENT_TYPE: Final = "application/vnd.village-sync.exchange"
DEFAULT_BATCH_WIRE_BYTES: Final = 32 * 1024
FRAME_PREFIX_BYTES: Final = 4
_FRAME_PREFIX: Final = struct.Struct(">I")
_SIGNATURE_AND_TAG: Final = 64 + 16


def envelope_overhead(sender_id: str) -> int:
    """Bytes an envelope adds to its (compressed) payload for this sender id, framing included."""
    return (
        FRAME_PREFIX_BYTES
        + MIN_HEADER_BYTES
        - 1
        + len(sender_id.encode("utf-8"))
        + (_SIGNATURE_AND_TAG)
    )


# --- sealing and opening one message -----------------------------------------------------------


def _form_versions(message: Message) -> list[tuple[str, int]]:
    """Form versions a message carries, most used first (the dictionaries worth trying)."""
    counts: Counter[tuple[str, int]] = Counter()
    if isinstance(message, UploadBatch):
        counts.update((op.form_id, op.form_version) for op in message.ops)
    elif isinstance(message, ServerReply):
        for page in message.downloads:
            counts.update(_record_form(r) for r in page.records)
        for ack in message.acks:
            counts.update(_record_form(r) for r in ack.records)
    return [key for key, _ in counts.most_common() if key[0]]


def _record_form(record: Mapping[str, object]) -> tuple[str, int]:
    form_id, version = record.get("form_id"), record.get("form_version")
    if isinstance(form_id, str) and isinstance(version, int):
        return (form_id, version)
    return ("", 0)


def _smallest(
    payload: bytes,
    allowed: frozenset[Method],
    candidates: Sequence[ZstdDict],
    level: int | None = None,
) -> tuple[Method, bytes, int]:
    """The smallest encoding: raw, deflate-raw, then zstd with the first dictionary or without.

    zstd at level 19 is the costly step (~14 ms per 32 KiB batch here), so it runs once: with
    the dictionary of the most used form version when there is one and the payload is small
    enough for dictionaries to matter (with a dictionary zstd is never meaningfully larger than
    without), else plain.
    """
    if candidates and Method.ZSTD_DICTIONARY in allowed and len(payload) <= LARGE_PAYLOAD:
        dictionary = candidates[0]
        method, best = compress(
            payload, allowed=allowed - {Method.ZSTD}, dictionary=dictionary, level=level
        )
        return method, best, dictionary.dictionary_id if method is Method.ZSTD_DICTIONARY else 0
    method, best = compress(payload, allowed=allowed - {Method.ZSTD_DICTIONARY}, level=level)
    return method, best, 0


def seal_message(
    message: Message,
    *,
    recipient_public: EncryptionPublicKey,
    sender_id: str,
    signing_key: SigningPrivateKey,
    sequence: int,
    suite: int = BROWSER_SUITE,
    allowed: Iterable[int] = ALL_METHODS,
    dictionaries: DictionaryStore | None = None,
    peer_dictionary_ids: Collection[int] | None = None,
    level: int | None = None,
) -> bytes:
    """Encode, compress (smallest allowed method) and seal one message; return the envelope.

    ``level`` is the zstd level (:func:`sync_protocol.compression.compress`'s default when None).

    A dictionary is used only if ``dictionaries`` has one for the message's most used form
    version and, when ``peer_dictionary_ids`` is given, the recipient holds it (a device lists
    its dictionaries in the hello; the server holds every packaged dictionary). Raises the envelope's errors (:func:`sync_protocol.envelope.seal`) and
    :class:`~sync_protocol.errors.InvalidMessage` for a message JSON cannot carry.
    """
    permitted = frozenset(Method(m) for m in allowed if m in Method._value2member_map_)
    payload = encode_message(message)
    candidates: list[ZstdDict] = []
    if dictionaries is not None:
        for form_id, version in _form_versions(message):
            dictionary = dictionaries.for_form(form_id, version)
            if dictionary is not None and (
                peer_dictionary_ids is None or dictionary.dictionary_id in peer_dictionary_ids
            ):
                candidates.append(dictionary)
                break
    method, compressed, dictionary_id = _smallest(payload, permitted, candidates, level)
    return seal(
        compressed,
        recipient_public=recipient_public,
        sender_id=sender_id,
        sender_signing_key=signing_key,
        sequence=sequence,
        suite=suite,
        compression=method,
        dictionary_id=dictionary_id,
    )


@dataclass(frozen=True)
class OpenedMessage:
    """An opened envelope: its verified header and the decoded message."""

    header: Header
    message: Message


def open_message(
    envelope: bytes,
    *,
    recipient_keys: Mapping[str, EncryptionPrivateKey],
    sender_verify_key: Callable[[str], SigningPublicKey | None],
    is_replay: Callable[[str, int], bool] | None = None,
    dictionaries: DictionaryStore | None = None,
    expected: str | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> OpenedMessage:
    """Verify, decrypt, decompress and decode one envelope.

    ``dictionaries`` defaults to the packaged ones (what the server holds).

    Raises the envelope errors of :func:`sync_protocol.envelope.open_envelope` (bad signature,
    wrong key, replay ...), the compression errors (bomb, unknown dictionary ...), and
    :class:`~sync_protocol.errors.InvalidMessage` for a payload that is not a valid message of
    the ``expected`` type.
    """
    opened = open_envelope(
        envelope,
        recipient_keys=recipient_keys,
        sender_verify_key=sender_verify_key,
        is_replay=is_replay,
    )
    payload = decompress(
        opened.header.compression,
        opened.payload,
        dictionaries if dictionaries is not None else DictionaryStore.packaged(),
        max_size,
        dictionary_id=opened.header.dictionary_id,
    )
    return OpenedMessage(opened.header, decode_message(payload, expected))


# --- the request: device side --------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceEnd:
    """What a device needs to build requests and open replies."""

    device_id: str
    keys: KeyBundle
    server_encryption: EncryptionPublicKey
    server_signing: SigningPublicKey
    suite: int = BROWSER_SUITE
    compression: frozenset[int] = ALL_METHODS
    dictionaries: DictionaryStore = field(default_factory=DictionaryStore)


@dataclass(frozen=True)
class Request:
    """A built request: the body bytes and the envelope sequences it used."""

    body: bytes
    hello_sequence: int
    next_sequence: int
    frame_sizes: tuple[int, ...]

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers that go with the body."""
        return {"Content-Type": CONTENT_TYPE, "Content-Length": str(len(self.body))}


def _frame(envelope: bytes) -> bytes:
    return _FRAME_PREFIX.pack(len(envelope)) + envelope


def build_request(
    device: DeviceEnd,
    hello: Hello,
    batches: Sequence[UploadBatch],
    *,
    first_sequence: int,
) -> Request:
    """Seal the hello and each batch and frame them into one request body.

    The hello is sealed with ``first_sequence``, batch k with ``first_sequence + 1 + k``; the
    caller stores :attr:`Request.next_sequence` before sending. Raises
    :class:`~sync_protocol.errors.MalformedFrame` if a batch belongs to another device, and the
    sealing errors of :func:`seal_message`.
    """
    if hello.device_id != device.device_id:
        raise MalformedFrame(
            f"hello.device_id {hello.device_id!r} is not this device ({device.device_id!r})",
            message_zh="问候消息中的设备编号与本设备不符",
        )
    for batch in batches:
        for op in batch.ops:
            if op.device_id != device.device_id:
                raise MalformedFrame(
                    f"batch {batch.batch_seq} holds an op of device {op.device_id!r}",
                    message_zh="上传批次包含其他设备的操作",
                )
    frames: list[bytes] = []
    sequence = first_sequence
    for message in (hello, *batches):
        envelope = seal_message(
            message,
            recipient_public=device.server_encryption,
            sender_id=device.device_id,
            signing_key=device.keys.signing,
            sequence=sequence,
            suite=device.suite,
            allowed=device.compression,
            dictionaries=device.dictionaries,
        )
        frames.append(_frame(envelope))
        sequence += 1
    return Request(
        body=b"".join(frames),
        hello_sequence=first_sequence,
        next_sequence=sequence,
        frame_sizes=tuple(len(f) for f in frames),
    )


def split_into_batches(
    ops: Sequence[Op],
    max_wire_bytes: int = DEFAULT_BATCH_WIRE_BYTES,
    *,
    sender_id: str,
    first_batch_seq: int = 1,
    allowed: Iterable[int] = ALL_METHODS,
    ops_per_batch: int = 1,
) -> list[UploadBatch]:
    """Cut ``ops`` (in order) into batches whose frames fit ``max_wire_bytes`` on the wire.

    ``ops_per_batch`` is where the search for the first batch starts (a caller that has cut
    batches from the same outbox before knows about how many fit); the batches are the same
    whatever it is, only the number of trial encodings changes.

    The size is measured, not guessed: each candidate batch is encoded and compressed, and its
    envelope and frame overhead added. An op too large to fit alone still gets a batch of its
    own (ops are never split). Raises :class:`~sync_protocol.errors.MalformedBatch` for ops the
    codec cannot carry.
    """
    permitted = frozenset(Method(m) for m in allowed if m in Method._value2member_map_)
    overhead = envelope_overhead(sender_id)

    def wire_size(start: int, stop: int, batch_seq: int) -> int:
        message = UploadBatch(batch_seq=batch_seq, ops=tuple(ops[start:stop]))
        payload = encode_message(message)
        if len(payload) + overhead <= max_wire_bytes:
            return len(payload) + overhead  # fits even uncompressed: no need to compress
        if Method.DEFLATE_RAW in permitted:
            # The final choice is never larger than deflate-raw, and deflate is the fast probe.
            return len(deflate_raw(payload)) + overhead
        return len(compress(payload, allowed=permitted)[1]) + overhead

    batches: list[UploadBatch] = []
    start = 0
    batch_seq = first_batch_seq
    # Ops of one outbox are alike, so the previous batch's length is a good first guess, and a
    # batch's size grows about in proportion to its ops: each trial predicts the length that
    # fills the limit from the size it measured (a secant step), kept strictly inside the
    # bracket of what is known to fit and not to fit, and bisects when the prediction falls
    # outside. Most batches cost three or four encodings; growing from the guess in steps of
    # 1, 2, 4 … and bisecting cost nine on a syncing tablet (profiled on bench weak_link),
    # each a canonical encoding and compression of the whole candidate.
    guess = ops_per_batch
    while start < len(ops):
        low, high = start + 1, len(ops) + 1  # start+1 always goes (an op alone gets a batch)
        probe = start + max(1, min(guess, len(ops) - start))
        while high - low > 1:
            if not low < probe < high:
                probe = (low + high) // 2
            size = wire_size(start, probe, batch_seq)
            if size <= max_wire_bytes:
                low = probe
            else:
                high = probe
            predicted = start + int((probe - start) * max_wire_bytes / max(size, 1))
            if size <= max_wire_bytes and predicted <= low:
                predicted = low + 1  # about full: the next op decides
            elif size > max_wire_bytes and predicted >= high:
                predicted = high - 1
            probe = predicted
        batches.append(UploadBatch(batch_seq=batch_seq, ops=tuple(ops[start:low])))
        guess = low - start
        start = low
        batch_seq += 1
    return batches


# --- the request: server side --------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One frame of a request body: ``index`` 0 is the hello.

    ``data`` is the envelope; for a ``truncated`` frame, the part of it that arrived (empty when
    the cut fell inside the length prefix). Opening a truncated frame raises
    :class:`~sync_protocol.errors.Truncated`.
    """

    index: int
    data: bytes
    truncated: bool = False


def iter_request_frames(
    body: bytes | BinaryIO,
    *,
    disconnect_errors: tuple[type[BaseException], ...] = (OSError,),
) -> Iterator[Frame]:
    """Yield the frames of a request body in order, reading a stream as it arrives.

    A body cut short (the connection dropped) ends with one frame marked ``truncated`` holding
    the bytes that did arrive; every complete frame before it is yielded intact. A read that
    raises one of ``disconnect_errors`` counts as the end of the body (pass the WSGI server's
    "client disconnected" exception, e.g. werkzeug's ``ClientDisconnected``). Raises
    :class:`~sync_protocol.errors.MalformedFrame` for a length of 0 or above the envelope size
    limit (such a body was never a request; nothing after it can be trusted to line up).
    """
    stream: BinaryIO = (
        io.BytesIO(body) if isinstance(body, bytes | bytearray | memoryview) else body
    )
    index = 0
    while True:
        prefix = _read_exactly(stream, FRAME_PREFIX_BYTES, disconnect_errors)
        if not prefix:
            return
        if len(prefix) < FRAME_PREFIX_BYTES:
            yield Frame(index, b"", truncated=True)  # cut inside the length: no envelope bytes
            return
        (length,) = _FRAME_PREFIX.unpack(prefix)
        if not 0 < length <= MAX_ENVELOPE_BYTES:
            raise MalformedFrame(
                f"frame {index} announces {length} bytes (allowed 1..{MAX_ENVELOPE_BYTES})",
                message_zh=f"第 {index} 帧长度 {length} 无效",
            )
        data = _read_exactly(stream, length, disconnect_errors)
        if len(data) < length:
            yield Frame(index, data, truncated=True)
            return
        yield Frame(index, data)
        index += 1


def _read_exactly(
    stream: BinaryIO, size: int, disconnect_errors: tuple[type[BaseException], ...]
) -> bytes:
    """Read ``size`` bytes, fewer only at the end of the stream (short reads are retried)."""
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        try:
            chunk = stream.read(remaining)
        except disconnect_errors:
            break
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# --- the reply ------------------------------------------------------------------------------------


def build_reply(
    reply: ServerReply,
    *,
    server_id: str,
    server_keys: KeyBundle,
    device_public: EncryptionPublicKey,
    hello_sequence: int,
    suite: int = BROWSER_SUITE,
    allowed: Iterable[int] = ALL_METHODS,
    dictionaries: DictionaryStore | None = None,
    peer_dictionary_ids: Collection[int] | None = None,
) -> bytes:
    """Seal the reply to the device; its envelope sequence is the request's hello sequence.

    ``allowed`` should be the intersection of the server's methods and the hello's
    ``capabilities.compression``, ``peer_dictionary_ids`` the hello's
    ``capabilities.dictionary_ids``, ``suite`` the suite the hello came in. Raises the sealing
    errors of :func:`seal_message`. zstd runs at
    :data:`~sync_protocol.compression.SERVER_ZSTD_LEVEL`: the server's CPU is the scarce part.
    """
    permitted = {int(m) for m in allowed}
    if Method.ZSTD in permitted:
        # zstd at the server's level is smaller than deflate-raw on every reply we measured;
        # trying deflate-raw (level 9) as well only to lose was 7 % of the server's CPU under
        # ingest (py-spy, bench ingest). A browser (no zstd) still gets deflate-raw.
        permitted.discard(Method.DEFLATE_RAW)
    return seal_message(
        reply,
        level=SERVER_ZSTD_LEVEL,
        recipient_public=device_public,
        sender_id=server_id,
        signing_key=server_keys.signing,
        sequence=hello_sequence,
        suite=suite,
        allowed=permitted,
        dictionaries=dictionaries,
        peer_dictionary_ids=peer_dictionary_ids,
    )


def open_reply(
    body: bytes,
    device: DeviceEnd,
    *,
    hello_sequence: int,
    max_size: int = DEFAULT_MAX_SIZE,
) -> ServerReply:
    """Verify and open the server's reply to the request whose hello used ``hello_sequence``.

    Returns the reply, refusal included (see :meth:`ServerReply.raise_for_refusal`). Raises the
    envelope errors (tampering, wrong key, truncated body ...), :class:`Replayed` when the reply
    answers another request, the compression errors, and
    :class:`~sync_protocol.errors.InvalidMessage`.
    """
    own_key = device.keys.encryption

    def server_key(sender_id: str) -> SigningPublicKey | None:
        return device.server_signing

    def answers_another_request(_sender: str, sequence: int) -> bool:
        return sequence != hello_sequence

    try:
        opened = open_message(
            body,
            recipient_keys={own_key.key_id(): own_key},
            sender_verify_key=server_key,
            is_replay=answers_another_request,
            dictionaries=device.dictionaries,
            expected="reply",
            max_size=max_size,
        )
    except Replayed:
        raise Replayed(
            f"the reply does not answer the request whose hello had sequence {hello_sequence}",
            message_zh="服务器应答与本次请求不对应（可能是重放）",
        ) from None
    # decode_message(expected="reply") only returns a ServerReply.
    return cast(ServerReply, opened.message)


def build_request_batches(
    device: DeviceEnd,
    hello: Hello,
    ops: Sequence[Op],
    *,
    first_sequence: int,
    first_batch_seq: int,
    max_wire_bytes: int = DEFAULT_BATCH_WIRE_BYTES,
) -> Request:
    """Split ``ops`` with :func:`split_into_batches` and build the request carrying them all."""
    batches = split_into_batches(
        ops,
        max_wire_bytes,
        sender_id=device.device_id,
        first_batch_seq=first_batch_seq,
        allowed=device.compression,
    )
    return build_request(device, hello, batches, first_sequence=first_sequence)
