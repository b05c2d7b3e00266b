"""The sync exchange (``POST /api/v1/sync``): open the frames, commit each batch, reply sealed.

Request: frame 0 is the device's sealed :class:`~sync_protocol.messages.Hello`, frames 1..N its
sealed upload batches (``sync_protocol.exchange``). Reply: one envelope sealed to the device and
signed by the server, carrying a :class:`~sync_protocol.messages.ServerReply`: per-batch acks with
the merged states of the records each batch touched, the first download page of each scope, the
server time (the device folds it into its clock) and a backoff hint.

What happens, in order:

1. Frame 0 is opened with the server's keys (current and retired) and the sender's registered
   signing key. Anything wrong before the device is authenticated — an empty or malformed body,
   an unknown device, a tampered, truncated or wrong-key envelope, a replayed hello — is an
   :class:`~server.errors.ApiError` (the one JSON error shape; the code is the envelope's code,
   e.g. ``envelope_bad_signature``). From here on the device is known and every answer is sealed.
2. A revoked device gets a sealed :class:`~sync_protocol.messages.Refusal` (``device_revoked``);
   cursors for scopes outside the device's scope get ``scope_denied``. The hello's envelope
   sequence is claimed (each envelope sequence is accepted once per device).
3. Each batch frame is opened, and its ops applied (:func:`server.services.record_ops.apply_op`),
   in **one write transaction** that also claims the envelope sequence, advances the device's op
   high-water mark and stores the acks. Only after the commit is the batch acknowledged. Ops at
   or below the high-water mark were processed before: they are not applied again and get their
   stored acks back verbatim, however the device re-batched them. A frame that cannot be used
   (tampered, replayed, a gap in the op sequence, ops of another device) is ``rejected`` with its
   code and the frames after it are ``skipped``; a frame cut short by the connection is
   ``truncated``. A busy database stops the exchange: that frame and the rest are ``skipped``
   and the reply carries a backoff hint.
4. Download pages: the device's scope (records changed after its cursor, tombstones included)
   and ``manifest`` (form versions published or retired after its cursor, with definitions, plus
   the monitoring configuration of the device's area); ``tasks`` (verification tasks of the
   device's scope changed after its cursor) only when the hello names that stream.

HTTP status (docs/protocol.md §2): 200 for a reply; 403 for a sealed refusal (revoked device,
denied scope, a hello clock more than ``CLOCK_SKEW_LIMIT_MS`` from server time); 400 for a sealed
``exchange_invalid`` refusal (an authentic frame 0 that is not a valid hello); JSON errors carry
their own status. A client tells a sealed reply from a JSON error by the Content-Type.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Final

from server.errors import (
    ApiError,
    Conflict,
    Unauthorized,
    ValidationFailed,
    from_library_error,
)
from server.services import tasks as task_service
from server.services.checking import IngestContext, ingest_context
from server.services.context import ServiceContext
from server.services.keys import KeyRing
from server.services.record_ops import apply_ops
from server.storage import conflicts as conflict_store
from server.storage import devices as device_store
from server.storage import forms as form_store
from server.storage import records, sync_state
from server.storage.database import end_read, writing
from server.storage.devices import Device
from server.storage.errors import StorageBusy
from server.storage.monitoring import MonitoringLine
from server.storage.records import StoredRecord
from server.storage.revisions import MANIFEST_SCOPE, current_revision
from server.storage.types import utcnow
from sync_protocol.clock import Stamp, wall_clock_ms
from sync_protocol.compression import ALL_METHODS, DictionaryStore
from sync_protocol.crypto import (
    EncryptionPrivateKey,
    EncryptionPublicKey,
    KeyBundle,
    SigningPublicKey,
)
from sync_protocol.envelope import Header, peek_header
from sync_protocol.errors import (
    InvalidMessage,
    MalformedFrame,
    ProtocolError,
)
from sync_protocol.exchange import (
    CONTENT_TYPE,
    Frame,
    build_reply,
    iter_request_frames,
    open_message,
)
from sync_protocol.merge import RecordState
from sync_protocol.messages import (
    CLOCK_SKEW_LIMIT_MS,
    Ack,
    DownloadPage,
    FrameStatus,
    Hello,
    LeanStates,
    OpAck,
    Refusal,
    ServerReply,
    UploadBatch,
)
from sync_protocol.ops import Op

log = logging.getLogger(__name__)

__all__ = [
    "CONTENT_TYPE",
    "MANIFEST_STREAM",
    "RECORDS_PER_PAGE",
    "SERVER_SENDER_ID",
    "ExchangeResult",
    "handle_exchange",
]

#: Sender id of the server's envelopes.
SERVER_SENDER_ID: Final = "county-server"
#: Download scope name of the form manifest and configuration stream.
MANIFEST_STREAM: Final = "manifest"
#: Records per download page: a few hundred KB before compression, well under a weak link's
#: patience and the envelope limit.
RECORDS_PER_PAGE: Final = 200
#: Rows a lean download page may walk past states the device holds before it ends the page.
LEAN_WALK_ROWS: Final = 5 * RECORDS_PER_PAGE
FORMS_PER_PAGE: Final = 50
#: Conflict kind record states never list (devices learn of it from acks).
DUPLICATE_KIND: Final = "duplicate_household"
#: Key of the manifest config entry announcing the server's current keys.
SERVER_KEYS_ENTRY: Final = "server_keys"
#: HTTP status of a sealed refusal (revoked device, denied scope, clock skew) and of a sealed
#: ``exchange_invalid`` refusal; a sealed reply is told from a JSON error by its Content-Type.
REFUSAL_STATUS: Final = 403
INVALID_EXCHANGE_STATUS: Final = 400


@dataclass(frozen=True)
class ExchangeResult:
    """A sealed reply body and its HTTP status.

    ``refused`` lists the codes the reply refuses with (the whole exchange's refusal, rejected
    batch frames) for the audit log, with the authenticated ``device_id`` and its ``scope``.
    """

    body: bytes
    status: int = 200
    content_type: str = CONTENT_TYPE
    refused: tuple[str, ...] = ()
    device_id: str = ""
    scope: str = ""


def _envelope_error(exc: ProtocolError, frame: int = 0) -> ApiError:
    return from_library_error(exc, details={"frame": frame, "protocol_code": exc.code})


@dataclass
class _Session:
    """One exchange in progress: the authenticated device and what the reply will carry."""

    device: Device
    ring: KeyRing
    header: Header
    hello: Hello
    ctx: IngestContext
    frames: list[FrameStatus] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    backoff_ms: int = 0
    ops_per_transaction: int = 200
    #: Set when the hello asked for ``lean_downloads``: which states the device can do without.
    lean: LeanStates | None = None

    @property
    def allowed_compression(self) -> frozenset[int]:
        return frozenset(self.hello.capabilities.compression) & ALL_METHODS

    def recipient_keys(self) -> dict[str, EncryptionPrivateKey]:
        return _recipient_keys(self.ring)

    def verify_key(self) -> Callable[[str], SigningPublicKey | None]:
        return _device_key_lookup(self.device)


def _device_key_lookup(device: Device) -> Callable[[str], SigningPublicKey | None]:
    # Only the device that signed the hello may sign the batches of its exchange.
    own_id, key = device.id, SigningPublicKey.from_base64(device.ed25519_public)
    return lambda sender: key if sender == own_id else None


def _recipient_keys(ring: KeyRing) -> dict[str, EncryptionPrivateKey]:
    return {kid: bundle.encryption for kid, bundle in ring.bundles.items()}


#: Longest app name kept (the column's length); what a device names is shown, never trusted.
_APP_NAME_LIMIT = 80


def device_app(header: str | None) -> str | None:
    """The app a sync request names (``Village-Sync-App: village-device/0.1.0``), as kept:
    printable ASCII only, at most 80 characters; None when absent or empty. It is recorded
    only after the exchange authenticates, so a stranger cannot label someone's tablet."""
    if not header:
        return None
    kept = "".join(ch for ch in header if " " <= ch <= "~").strip()[:_APP_NAME_LIMIT]
    return kept or None


def handle_exchange(
    ctx: ServiceContext,
    body: bytes | IO[bytes],
    *,
    busy_retry_ms: int = 2000,
    ops_per_transaction: int = 200,
    app: str | None = None,
) -> ExchangeResult:
    """Run one sync exchange on the request ``body`` (bytes or a stream) and seal the reply.

    A batch applies at most ``ops_per_transaction`` ops per database transaction.

    Raises :class:`~server.errors.ApiError` subclasses (one JSON error shape) for everything that
    goes wrong before the device is authenticated: ``exchange_empty``, ``frame_malformed``,
    envelope codes such as ``envelope_bad_signature`` or ``envelope_truncated`` (400),
    ``device_unknown`` (401), ``envelope_replayed`` (409).
    """
    frames = iter_request_frames(body)
    try:
        first = next(frames, None)
    except MalformedFrame as exc:
        raise from_library_error(exc, ValidationFailed, details={"frame": 0}) from None
    if first is None:
        raise ValidationFailed(
            en="the request holds no frames", zh="同步请求为空", code="exchange_empty"
        )
    if first.truncated:
        raise ValidationFailed(
            en="the hello frame was cut short",
            zh="问候帧不完整",
            code="envelope_truncated",
            details={"frame": 0},
        )
    try:
        header = peek_header(first.data)
    except ProtocolError as exc:
        raise _envelope_error(exc) from None
    device = device_store.device_for_sync(header.sender_id)
    if device is None:
        raise Unauthorized(
            en=f"no device {header.sender_id!r} is enrolled here",
            zh="设备未在本服务器注册",
            code="device_unknown",
            details={"frame": 0},
        )
    ring = ctx.keys.ring()
    try:
        opened = open_message(
            first.data,
            recipient_keys=_recipient_keys(ring),
            sender_verify_key=_device_key_lookup(device),
            expected="hello",
        )
    except InvalidMessage as exc:
        # The envelope verified (the message is decoded last): the device is authenticated, so
        # the answer is sealed — the ``exchange_invalid`` refusal protocol.md §5 promises.
        return _refuse_unreadable_hello(device, ring, header, exc)
    except ProtocolError as exc:
        raise _envelope_error(exc) from None
    end_read()
    hello = opened.message
    assert isinstance(hello, Hello)  # open_message(expected="hello") returns only a Hello
    session = _Session(device, ring, opened.header, hello, ingest_context())
    session.ops_per_transaction = max(1, ops_per_transaction)
    if hello.capabilities.lean_downloads:
        session.lean = LeanStates()
    refusal = _check_hello(session)
    if refusal is not None:
        reply = ServerReply(server_time_ms=session.ctx.now_ms, refusal=refusal[0])
        return _seal(session, reply, refusal[1], refused=(refusal[0].code,))
    with writing():
        if not sync_state.claim_envelope(device.id, opened.header.sequence):
            raise Conflict(
                en=f"envelope sequence {opened.header.sequence} was already used by this device",
                zh="该同步请求已处理过（重放）",
                code="envelope_replayed",
                details={"frame": 0},
            )
        device_store.touch_last_sync(
            device.id,
            utcnow(),
            manifest_cursor=hello.cursors.get(MANIFEST_STREAM),
            app=device_app(app),
        )
    session.frames.append(FrameStatus(0, "committed"))
    try:
        _run_batches(session, frames, busy_retry_ms)
    except MalformedFrame as exc:
        # The rest of the body cannot be lined up; what was committed stays committed.
        session.frames.append(FrameStatus(len(session.frames), "rejected", exc.code))
    downloads = _downloads(session)
    reply = ServerReply(
        server_time_ms=session.ctx.now_ms,
        acks=tuple(session.acks),
        downloads=downloads,
        frames=tuple(session.frames),
        backoff_ms=session.backoff_ms,
    )
    rejected = tuple(f.code or f.status for f in session.frames if f.status == "rejected")
    return _seal(session, reply, 200, refused=rejected)


def _check_hello(session: _Session) -> tuple[Refusal, int] | None:
    device, hello = session.device, session.hello
    if device.status != "active":
        return (
            Refusal(
                "device_revoked",
                "this device has been revoked; enrol it again with a new code",
                "此设备已被停用，请使用新的注册码重新注册",
            ),
            REFUSAL_STATUS,
        )
    skew_ms = Stamp.parse(hello.clock).ms - session.ctx.now_ms
    if abs(skew_ms) > CLOCK_SKEW_LIMIT_MS:
        hours = skew_ms / 3_600_000
        return (
            Refusal(
                "clock_skew",
                f"the device clock is {abs(hours):.0f} h {'ahead of' if hours > 0 else 'behind'}"
                " the server; fix the clock and sync again",
                f"设备时钟比服务器{'快' if hours > 0 else '慢'}了约 {abs(hours):.0f} 小时，"
                "请校准时间后再同步",
            ),
            REFUSAL_STATUS,
        )
    if hello.device_id != device.id:
        return (
            Refusal(
                "exchange_invalid",
                "the hello names another device than the envelope's sender",
                "问候消息中的设备编号与信封发送方不符",
            ),
            INVALID_EXCHANGE_STATUS,
        )
    for scope in hello.cursors:
        if scope in (MANIFEST_STREAM, task_service.TASKS_STREAM):
            continue
        if not (scope.isdigit() and scope.startswith(device.scope)):
            return (
                Refusal(
                    "scope_denied",
                    f"scope {scope} is outside this device's scope {device.scope}",
                    f"范围 {scope} 不在本设备的范围 {device.scope} 内",
                ),
                REFUSAL_STATUS,
            )
    return None


def _refuse_unreadable_hello(
    device: Device, ring: KeyRing, header: Header, exc: InvalidMessage
) -> ExchangeResult:
    """A sealed ``exchange_invalid`` refusal for an authentic frame 0 that is not a valid hello.

    No hello means no capabilities: the reply is sealed in the hello envelope's suite, raw.
    """
    refusal = Refusal(
        "exchange_invalid",
        f"frame 0 is not a valid hello: {exc.field}: {exc.message}"[:2000],
        f"第 0 帧不是有效的问候消息：{exc.field}"[:2000],
    )
    reply = ServerReply(server_time_ms=wall_clock_ms(), refusal=refusal)
    body = build_reply(
        reply,
        server_id=SERVER_SENDER_ID,
        server_keys=ring.bundle_for(header.recipient_key_id) or ring.current,
        device_public=EncryptionPublicKey.from_base64(device.x25519_public),
        hello_sequence=header.sequence,
        suite=int(header.suite),
        allowed={0},
    )
    return ExchangeResult(
        body=body,
        status=INVALID_EXCHANGE_STATUS,
        refused=("exchange_invalid",),
        device_id=device.id,
        scope=device.scope,
    )


def _run_batches(session: _Session, frames: Iterator[Frame], busy_retry_ms: int) -> None:
    stop: str | None = None
    for frame in frames:
        if stop is not None:
            session.frames.append(FrameStatus(frame.index, "skipped"))
            continue
        if frame.truncated:
            session.frames.append(FrameStatus(frame.index, "truncated"))
            continue
        try:
            ack = _commit_batch(session, frame)
        except _FrameRejected as rejected:
            session.frames.append(FrameStatus(frame.index, "rejected", rejected.code))
            stop = rejected.code
            continue
        except StorageBusy:
            # Not the batch's fault: "skipped" tells the device to send it again, after the
            # backoff ("rejected" would tell it the batch can never be accepted).
            session.frames.append(FrameStatus(frame.index, "skipped"))
            session.backoff_ms = busy_retry_ms
            stop = "busy"
            continue
        session.frames.append(FrameStatus(frame.index, "committed"))
        session.acks.append(ack)


class _FrameRejected(Exception):
    """Internal: this batch frame is refused with ``code``; nothing of it was committed."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _commit_batch(session: _Session, frame: Frame) -> Ack:
    """Open one batch and apply it in one transaction; return its ack after the commit.

    The envelope is verified, decrypted, decompressed and decoded *before* the write
    transaction: that is pure CPU work on the frame's bytes, and on SQLite every other writer
    waits while a transaction is open. Only the replay claim of its sequence needs the
    transaction (it is rolled back with the batch if anything fails).
    """
    device = session.device
    try:
        opened = open_message(
            frame.data,
            recipient_keys=session.recipient_keys(),
            sender_verify_key=session.verify_key(),
            expected="batch",
        )
    except ProtocolError as exc:
        raise _FrameRejected(exc.code) from None
    with writing():
        mark = sync_state.lock_marks(device.id)
        if device_store.device_status(device.id) != "active":
            raise _FrameRejected("device_revoked")
        if not sync_state.claim_envelope(device.id, opened.header.sequence):
            raise _FrameRejected("envelope_replayed")
        batch = opened.message
        assert isinstance(batch, UploadBatch)  # expected="batch"
        if session.acks and batch.batch_seq <= session.acks[-1].batch_seq:
            # An Ack is paired with its frame by batch_seq: within one request they go up.
            # (Across requests a batch_seq may repeat: replays are recognised by op seq.)
            raise _FrameRejected("batch_seq_reused")
        ops = list(batch.ops)
        _check_sequence(ops, device.id, mark.high_water)
        done = [op for op in ops if op.seq <= mark.high_water]
        fresh = [op for op in ops if op.seq > mark.high_water]
        stored = sync_state.stored_acks(device.id, [op.seq for op in done])
        acks: dict[int, dict[str, Any]] = {}
        touched: dict[str, dict[str, Any]] = {}
        lean_seqs: list[int] = []
        for op in done:
            acks[op.seq] = stored.get(op.seq) or _lost_ack(op)
            record = records.get_record(op.record_id)
            if acks[op.seq]["status"] != "rejected" and not _same_op(record, op):
                # A sequence number the server already processed, carrying another op: the device
                # was restored from an old backup and numbers new edits again. Acking it as done
                # would drop the edit silently.
                raise _FrameRejected("op_sequence_reused")
            if record is not None:
                touched[record.record_id] = dict(record.state)
            if session.lean is not None:
                # A replayed op was not merged here: its record's state travels, and its chain
                # is broken for the rest of the exchange.
                session.lean.observe(
                    op, OpAck.from_dict(acks[op.seq]), prior_revision=None, exact=False
                )
        # Bounded work per transaction: a batch of thousands of ops commits in slices, so one
        # device never holds the (SQLite) write lock for seconds; each slice commits its ops,
        # high-water mark and acks together, so a crash between slices loses nothing.
        limit = session.ops_per_transaction
        _apply_fresh(session, mark, fresh[:limit], acks, touched, lean_seqs)
        high = mark.high_water
    try:
        for start in range(limit, len(fresh), limit):
            with writing():
                mark = sync_state.lock_marks(device.id)
                _apply_fresh(session, mark, fresh[start : start + limit], acks, touched, lean_seqs)
                high = mark.high_water
    except BaseException:
        if session.lean is not None:
            # The slices before are committed but this batch gets no Ack in the reply: the
            # device cannot take their revisions, so their states must not be left out.
            session.lean.forget(op.record_id for op in ops)
        raise
    op_acks = tuple(OpAck.from_dict(acks[op.seq]) for op in ops)
    states = tuple(touched.values())
    if session.lean is not None:
        states = tuple(s for s in states if not session.lean.leaves_out(s))
    ack = Ack(
        batch_seq=batch.batch_seq,
        acks=op_acks,
        high_water_mark=high,
        records=states,
        lean_seqs=tuple(lean_seqs),
    )
    if session.hello.capabilities.lean_acks:
        # The device merges its own applied ops locally; only the other states travel.
        return ack.without_applied_records(ops)
    return ack


def _apply_fresh(
    session: _Session,
    mark: Any,
    ops: list[Op],
    acks: dict[int, dict[str, Any]],
    touched: dict[str, dict[str, Any]],
    lean_seqs: list[int],
) -> None:
    """Apply ``ops`` (after the locked ``mark``) in the current transaction, advancing the mark
    and keeping their acks; an op another exchange of the device applied meanwhile gets its
    stored ack. With ``lean_downloads`` the ops whose state is the device's own view are
    appended to ``lean_seqs``."""
    device = session.device
    stored = sync_state.stored_acks(device.id, [op.seq for op in ops if op.seq <= mark.high_water])
    acks.update(stored)
    if session.lean is not None:
        for op in ops:
            if op.seq in stored:
                session.lean.observe(
                    op, OpAck.from_dict(stored[op.seq]), prior_revision=None, exact=False
                )
    ops = [op for op in ops if op.seq > mark.high_water]
    if not ops:
        return
    outcomes = apply_ops(ops, session.ctx, scope=device.scope, by=f"device:{device.id}")
    for op, outcome in zip(ops, outcomes, strict=True):
        acks[op.seq] = outcome.ack
        if session.lean is not None and session.lean.observe(
            op,
            OpAck.from_dict(outcome.ack),
            prior_revision=outcome.prior_revision,
            exact=outcome.exact,
        ):
            lean_seqs.append(op.seq)
        if outcome.record is not None:
            touched[outcome.record.record_id] = _state_with_warnings(
                outcome.record.state, outcome.warnings
            )
    sync_state.set_high_water(mark, ops[-1].seq)
    sync_state.store_acks(device.id, [acks[op.seq] for op in ops])


def _check_sequence(ops: list[Op], device_id: str, high_water: int) -> None:
    previous = None
    for op in ops:
        if op.device_id != device_id:
            raise _FrameRejected("op_device_mismatch")
        if previous is not None and op.seq != previous + 1:
            raise _FrameRejected("op_sequence_gap")
        previous = op.seq
    fresh = [op.seq for op in ops if op.seq > high_water]
    if fresh and fresh[0] != high_water + 1:
        raise _FrameRejected("op_sequence_gap")


def _same_op(record: StoredRecord | None, op: Op) -> bool:
    """True when the stored record holds ``op`` itself (same device, sequence and stamp)."""
    if record is None:
        return False
    return RecordState.from_dict(record.state).op_for_stamp(op.hlc) == (op.device_id, op.seq)


def _lost_ack(op: Op) -> dict[str, Any]:
    # Only a database restored from an older backup lacks the ack of a processed op; "duplicate"
    # tells the device the op is done without inventing an outcome.
    record = records.get_record(op.record_id)
    return {"seq": op.seq, "status": "duplicate", "revision": record.revision if record else 0}


def _state_with_warnings(
    state: dict[str, Any], warnings: list[dict[str, Any]] | None
) -> dict[str, Any]:
    state = dict(state)
    if warnings:
        state["warnings"] = warnings
    return state


# --- downloads -------------------------------------------------------------------------------------


def _downloads(session: _Session) -> tuple[DownloadPage, ...]:
    """The first page of the device's records scope(s) and of the manifest stream."""
    device, cursors = session.device, session.hello.cursors
    streams = (MANIFEST_STREAM, task_service.TASKS_STREAM)
    scopes = sorted({device.scope, *(s for s in cursors if s not in streams)})
    pages = []
    for scope in scopes:
        after = cursors.get(scope, 0)
        states: list[dict[str, Any]] = []
        walked, since = 0, after
        while True:
            page = records.changes_since(scope, since, limit=RECORDS_PER_PAGE - len(states))
            walked += len(page.records)
            closed = conflict_store.closed_ids_by_record(
                [r.record_id for r in page.records], DUPLICATE_KIND
            )
            found = [_with_closed(r.state, closed.get(r.record_id)) for r in page.records]
            if session.lean is not None:
                # The device holds these already: its own ops made them (Ack.lean_seqs).
                found = [s for s in found if not session.lean.leaves_out(s)]
            states.extend(found)
            since = page.next_since
            # States left out cost no bytes: walk on past them (an exchange of 250 own ops
            # fills more than one page of rows), or the cursor stops among this exchange's own
            # records and the next exchange sends them as states the device already holds.
            if not page.more or len(states) >= RECORDS_PER_PAGE or walked >= LEAN_WALK_ROWS:
                break
        pages.append(
            DownloadPage(
                scope=scope,
                after=after,
                next_cursor=since,
                more=page.more,
                records=tuple(states),
            )
        )
    pages.append(
        _manifest_page(device, cursors.get(MANIFEST_STREAM, 0), session.ring, session.ctx.lines)
    )
    if task_service.TASKS_STREAM in cursors:
        # Only a device that asks for the stream gets it: an older one would refuse the page.
        tasks = task_service.download_page(device.scope, cursors[task_service.TASKS_STREAM])
        pages.append(
            DownloadPage(
                scope=task_service.TASKS_STREAM,
                after=tasks.after,
                next_cursor=tasks.next_cursor,
                more=tasks.more,
                tasks=tuple(tasks.tasks),
            )
        )
    end_read()
    return tuple(pages)


def _with_closed(state: dict[str, Any], closed: list[str] | None) -> dict[str, Any]:
    """A record state for a download page, with ``closed_conflicts`` when it has any.

    Record states list only the open conflicts of the merge; a ``duplicate_household``
    conflict is known to devices from an ack alone, so its closing (``keep_both`` changes no
    record) travels as this optional list of closed conflict ids.
    """
    state = dict(state)
    if closed:
        state["closed_conflicts"] = list(closed)
    return state


def _server_keys_entry(ring: KeyRing) -> dict[str, Any]:
    """The ``server_keys`` config entry: the current key id and public keys.

    It travels in every manifest page, inside a reply signed by the key the device trusts, so a
    device enrolled before a rotation learns the new keys and can switch to them.
    """
    return {"key": SERVER_KEYS_ENTRY, "current_key_id": ring.current_id, **ring.public_document()}


def _manifest_page(
    device: Device, after: int, ring: KeyRing, lines: tuple[MonitoringLine, ...]
) -> DownloadPage:
    """The manifest page after ``after``, with ``lines`` — the monitoring lines the exchange
    read once at its start (``IngestContext.lines``), not another read of the table."""
    high = current_revision(MANIFEST_SCOPE)
    rows = [r for r in form_store.manifest_changes_since(after, FORMS_PER_PAGE + 1)]
    rows = [r for r in rows if r.manifest_revision <= high]
    more = len(rows) > FORMS_PER_PAGE
    rows = rows[:FORMS_PER_PAGE]
    entries = []
    for row in rows:
        entry: dict[str, Any] = {
            "form_id": row.form_id,
            "version": row.version,
            "status": row.status,
            "manifest_revision": row.manifest_revision,
        }
        if row.status in (form_store.PUBLISHED, form_store.RETIRED):
            entry["definition"] = row.definition
        entries.append(entry)
    next_cursor = rows[-1].manifest_revision if more else max(high, after)
    config = [
        {
            "key": f"monitoring_line:{line.region_code}:{line.year}",
            "region_code": line.region_code,
            "year": line.year,
            "income_line": float(line.income_line),
            "settings": dict(line.settings or {}),
        }
        for line in lines
        if device.scope.startswith(line.region_code) or line.region_code.startswith(device.scope)
    ]
    config.append(_server_keys_entry(ring))
    return DownloadPage(
        scope=MANIFEST_STREAM,
        after=after,
        next_cursor=next_cursor,
        more=more,
        forms=tuple(entries),
        config=tuple(config),
    )


def _reply_keys(session: _Session) -> KeyBundle:
    """The bundle the device's hello was sealed to: the device knows (and verifies) only that
    key's signing half until it switches to the keys announced in the manifest."""
    return session.ring.bundle_for(session.header.recipient_key_id) or session.ring.current


def _seal(
    session: _Session, reply: ServerReply, status: int, *, refused: tuple[str, ...] = ()
) -> ExchangeResult:
    device_public = EncryptionPublicKey.from_base64(session.device.x25519_public)
    body = build_reply(
        reply,
        server_id=SERVER_SENDER_ID,
        server_keys=_reply_keys(session),
        device_public=device_public,
        hello_sequence=session.header.sequence,
        suite=int(session.header.suite),
        allowed=session.allowed_compression or {0},
        # The packaged per-form dictionaries, used only when the hello says the device has them.
        dictionaries=DictionaryStore.packaged(),
        peer_dictionary_ids=session.hello.capabilities.dictionary_ids,
    )
    return ExchangeResult(
        body=body,
        status=status,
        refused=refused,
        device_id=session.device.id,
        scope=session.device.scope,
    )
