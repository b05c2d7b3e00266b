"""The device's sync client: drive the outbox through sealed exchanges until it is empty.

One :meth:`SyncClient.sync` call runs exchanges (``POST /api/v1/sync``, docs/protocol.md §6)
until nothing is left to upload and no download page says ``more``:

1. Take the pending ops (``DeviceStore.pending_ops``: pending, and sent-but-unacknowledged,
   lowest ``seq`` first) and cut them into batches sized for the link
   (``sync_protocol.exchange.split_into_batches``). The request carries as many batches as fit
   the **request budget**: the measured link speed times a target exchange time (default 8 s),
   so on a 64 kbit/s link that drops every ~20 s an exchange is short enough to finish between
   drops, and a drop costs at most one short exchange. On a fast link the budget grows to
   eight 32 KiB batches.
2. Persist the next envelope sequence, mark the ops sent, POST.
3. No reply (reset, timeout, a cut-short body, a reply that does not verify): keep every op,
   wait with exponential backoff and jitter (1 s, 2 s, 4 s … capped at 5 min) and try again.
   The server answers ops it already committed with their stored acks (``duplicate``), so a
   replay never doubles anything, and only ops without a verified ack are ever resent.
4. A reply: verify and open it (``open_reply``: the server's signature, and the envelope
   sequence that binds it to this request), fold the server time into the HLC, apply each
   batch's acks (``mark_acked`` — an op leaves the outbox only here, all or nothing per batch,
   after checking the acks name exactly the ops that batch carried), then the merged record
   states, then each download page with its cursor in one local transaction.
5. A refusal (revoked device, clock far off, unknown device, scope, unknown form version) stops
   the sync with :class:`SyncRefused`, whose message is one clear line in Chinese and English.

Envelope sequences: every envelope the device seals gets the next number of one counter that
survives restarts. It lives in the device store's cursor table as the stream
``envelope`` of the pseudo-scope ``exchange`` (not a village code, so it can never be mistaken
for a download cursor) and is written *before* each request leaves.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.metadata
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from forms.errors import FormsError
from forms.indicators import MonitoringConfig
from sync_protocol.compression import DictionaryStore, Method
from sync_protocol.crypto import EncryptionPublicKey, SigningPublicKey
from sync_protocol.device import (
    ENVELOPE_SCOPE,
    FORMS_STREAM,
    MANIFEST_SCOPE,
    StateInvalid,
    UnexpectedBatch,
)
from sync_protocol.device import AckMismatch as EngineAckMismatch
from sync_protocol.envelope import BROWSER_SUITE
from sync_protocol.errors import ProtocolError
from sync_protocol.exchange import (
    CONTENT_TYPE,
    DeviceEnd,
    build_request,
    open_reply,
)
from sync_protocol.messages import (
    Capabilities,
    DownloadPage,
    Hello,
    ServerReply,
    UploadBatch,
)
from sync_protocol.ops import Op
from sync_protocol.pacing import Backoff as EngineBackoff
from sync_protocol.pacing import (
    BatchPlanner,
    LinkEstimate,
)
from village_client_stub.errors import AckMismatch, BadInput, DeviceError, StoreCorrupt
from village_client_stub.store import DeviceStore
from village_client_stub.transport import HttpResponse, HttpTransport, TransportError


def _app_name() -> str:
    try:
        return f"village-device/{importlib.metadata.version('village-sync')}"
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "village-device"


#: What this device names itself on every sync (``Village-Sync-App``; the devices page shows it).
APP_NAME: Final = _app_name()

__all__ = [
    "ENVELOPE_SCOPE",
    "MANIFEST_SCOPE",
    "SYNC_PATH",
    "Backoff",
    "ExchangeTiming",
    "LinkEstimate",
    "NotEnrolled",
    "SyncClient",
    "SyncFailed",
    "SyncProgress",
    "SyncRefused",
    "SyncReport",
    "refusal_line",
]

SYNC_PATH: Final = "/api/v1/sync"
#: Manifest config entry announcing the server's current keys (docs/protocol.md §6).
SERVER_KEYS_ENTRY: Final = "server_keys"
#: Ops considered per exchange (more than eight 32 KiB batches ever hold).
_OPS_PER_EXCHANGE: Final = 4000


class NotEnrolled(DeviceError):
    """The device has no server yet: run ``village-device enroll --server URL --code CODE``."""

    code = "not_enrolled"
    default_message = "this device is not enrolled; run `village-device enroll` first"
    default_message_zh = "本设备尚未注册，请先运行 village-device enroll"


class SyncRefused(DeviceError):
    """The server refused the exchange; ``code`` is the server's refusal code.

    Known codes and what the user should do: ``device_revoked`` (contact the county),
    ``device_unknown`` (enrol again), ``clock_skew`` (fix the tablet's clock),
    ``scope_denied``, ``unknown_form_version`` (update forms), ``exchange_invalid`` (a bug).

    Attributes:
        backoff_ms: the server's wait hint (0 = none).
    """

    code = "server_refused"
    default_message = "the server refused to sync"
    default_message_zh = "服务器拒绝同步"

    def __init__(
        self, code: str, message: str, *, message_zh: str | None = None, backoff_ms: int = 0
    ) -> None:
        super().__init__(message, message_zh=message_zh)
        self.code = code
        self.backoff_ms = backoff_ms


class SyncFailed(DeviceError):
    """Sync gave up: too many failed attempts in a row, or a batch the server can never accept.

    Nothing is lost: every op without a verified ack is still in the outbox.
    """

    code = "sync_failed"
    default_message = "sync did not finish; every unsent edit is kept"
    default_message_zh = "同步未完成，未发送的修改都已保留"


# --- one-line reasons -----------------------------------------------------------------------------

_REFUSALS: Final[dict[str, tuple[str, str]]] = {
    "device_revoked": (
        "此设备已被县级管理员停用，请联系县里重新注册",
        "this device was revoked by the county; contact the county admin to enrol again",
    ),
    "device_unknown": (
        "服务器不认识本设备，请用新的注册码重新注册（village-device enroll）",
        "the server does not know this device; enrol again with a new code",
    ),
    "scope_denied": (
        "同步范围超出本设备注册的村/乡范围",
        "a download scope lies outside this device's enrolled area",
    ),
    "unknown_form_version": (
        "服务器没有发布本设备使用的表单版本，请先更新表单再同步",
        "the server never published a form version this device uses; update forms and retry",
    ),
    "exchange_invalid": (
        "同步请求无效（程序错误），请报告给县里",
        "the sync request is not valid (a program bug); please report it",
    ),
    "busy": ("服务器繁忙，请稍后再试", "the server is busy; try again later"),
}


def refusal_line(
    code: str, *, server_time_ms: int | None = None, device_ms: int | None = None
) -> tuple[str, str]:
    """The one-line (Chinese, English) reason shown for a refusal ``code``.

    For ``clock_skew`` the line says how far the tablet's clock is off when both times are known.
    """
    if code == "clock_skew":
        if server_time_ms is not None and device_ms is not None:
            hours = (device_ms - server_time_ms) / 3_600_000
            ahead_zh = "快" if hours > 0 else "慢"
            ahead_en = "ahead" if hours > 0 else "behind"
            return (
                f"设备时钟比服务器{ahead_zh}了约 {abs(hours):.1f} 小时，请校准时间后再同步",
                f"the tablet clock is about {abs(hours):.1f} h {ahead_en} of the server; "
                "fix the clock and sync again",
            )
        return (
            "设备时钟与服务器相差太大，请校准时间后再同步",
            "the tablet clock is far off; fix it",
        )
    return _REFUSALS.get(
        code, (f"服务器拒绝同步（{code}）", f"the server refused to sync ({code})")
    )


# --- progress, report, pacing ---------------------------------------------------------------------


@dataclass(frozen=True)
class SyncProgress:
    """Where a sync stands, for a progress bar.

    ``ops_total`` counts the ops to deliver (those pending when the sync started and any queued
    meanwhile); ``ops_done`` those with a verified ack. Bytes count the whole HTTP traffic.
    """

    ops_total: int
    ops_done: int
    bytes_up: int
    bytes_down: int
    exchanges: int
    failures: int
    records_received: int
    waiting_s: float = 0.0


@dataclass
class ExchangeTiming:
    """Where one exchange's time went, as the device saw it (``SyncReport.timeline``).

    ``wait_s``: request start → the reply's head (upload, a round trip, the server's work);
    ``elapsed_s``: → the end of the reply; ``server_s``: the server's own time from its
    ``Server-Timing`` header (None: not sent, or no reply); ``pause_s``: the wait after the
    exchange (backoff after a failure, or the server's hint). ``outcome`` is ``ok`` or why
    the exchange failed.
    """

    index: int
    started_s: float
    ops: int
    bytes_up: int = 0
    bytes_down: int = 0
    wait_s: float = 0.0
    elapsed_s: float = 0.0
    server_s: float | None = None
    budget_bytes: int = 0
    pause_s: float = 0.0
    outcome: str = "ok"
    #: The lowest op seq it carried (None: no ops).
    first_seq: int | None = None
    #: Its batches were cut while the previous exchange was on the link.
    cut_ahead: bool = False
    #: The device's own time before the request left (cutting, sealing, marking the ops sent)
    #: and after the reply's last byte (verifying, opening and applying it).
    prepare_s: float = 0.0
    apply_s: float = 0.0


@dataclass
class SyncReport:
    """What one :meth:`SyncClient.sync` did."""

    exchanges: int = 0
    failures: int = 0
    ops_acked: int = 0
    ops_rejected: list[int] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    records_received: int = 0
    forms_received: int = 0
    #: Verification tasks received (new or changed) from the ``tasks`` stream.
    tasks_received: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    elapsed_s: float = 0.0
    pending_left: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    #: ``form@version`` the server sent with other content than the device's copy (kept).
    forms_kept_local: list[str] = field(default_factory=list)
    #: The key id this device switched to after the server announced rotated keys.
    server_keys_adopted: str | None = None
    #: One entry per exchange attempted, in order (for benchmarks and diagnosis).
    timeline: list[ExchangeTiming] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "exchanges": self.exchanges,
            "failures": self.failures,
            "ops_acked": self.ops_acked,
            "ops_rejected": list(self.ops_rejected),
            "conflicts": list(self.conflicts),
            "records_received": self.records_received,
            "forms_received": self.forms_received,
            "tasks_received": self.tasks_received,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "elapsed_s": round(self.elapsed_s, 3),
            "pending_left": self.pending_left,
            "status_counts": dict(sorted(self.status_counts.items())),
            "last_error": self.last_error,
            "server_keys_adopted": self.server_keys_adopted,
            "forms_kept_local": list(self.forms_kept_local),
        }


class Backoff(EngineBackoff):
    """:class:`sync_protocol.pacing.Backoff` drawing its jitter from ``random.Random()``
    unless ``rng`` is given (the engine itself never draws randomness)."""

    def __init__(
        self, base_s: float = 1.0, cap_s: float = 300.0, rng: random.Random | None = None
    ) -> None:
        super().__init__(base_s, cap_s, rng=rng or random.Random())


# --- the client -------------------------------------------------------------------------------------


@dataclass
class _Ahead:
    """The next request's batches, cut in a worker thread while an exchange is on the link.

    Cutting batches (each trial an encoding and compression of the candidate) is most of the
    device's own work between exchanges; done while the socket waits, it costs no link time.
    Two plans are cut, one per outcome: the outbox after the exchange in flight at today's
    budget (it is answered), and the same ops again at half the budget (it drops, and a drop
    halves the budget). ``plans`` holds ``(budget, batches)``; a plan is used only if the next
    request starts with exactly its ops and the budget is about the same
    (:meth:`SyncClient._take_ahead`).
    """

    thread: threading.Thread | None = None
    plans: list[tuple[int, list[UploadBatch]]] = field(default_factory=list)


@dataclass
class _Sent:
    """One request in flight: its batches by batch_seq and its hello sequence."""

    hello_sequence: int
    batches: dict[int, list[int]]
    body_bytes: int


class SyncClient:
    """Runs sync exchanges for one device store.

    ``transport`` defaults to an :class:`HttpTransport` to the enrolled server URL. ``sleep``
    and ``rng`` are injectable so tests can fault-inject time; ``on_progress`` is called after
    every exchange and as request bytes leave.
    """

    def __init__(
        self,
        store: DeviceStore,
        transport: HttpTransport | None = None,
        *,
        on_progress: Callable[[SyncProgress], None] | None = None,
        max_failures: int = 10,
        link: LinkEstimate | None = None,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
        dictionaries: DictionaryStore | None = None,
        suite: int = BROWSER_SUITE,
        refused_limit: int | None = 3,
        on_retry: Callable[[float, str, str], None] | None = None,
        lean_downloads: bool = True,
    ) -> None:
        """Prepare a client for an enrolled ``store``.

        ``lean_downloads`` (default on): ask the server to leave out the states our own ops
        alone made (docs/protocol.md §5); off, every state travels (as a device before it).

        ``refused_limit``: while no exchange of this run has succeeded, give up after this many
        refused connections in a row (nothing listens at the server address: most likely the
        wrong address or the server is down); ``None`` keeps trying up to ``max_failures``.
        ``on_retry(delay_s, reason_en, reason_zh)`` is called before each pause after a failure.

        ``dictionaries``: zstd dictionaries the device compresses batches with and advertises
        for replies; default the packaged ones (one per built-in form version), which every
        server holds.

        Raises:
            NotEnrolled: the store has no server keys.
        """
        identity = store.identity()
        keys = store.server_keys()
        if keys is None or identity.server_url is None or identity.scope is None:
            raise NotEnrolled()
        self.store = store
        self.transport = transport or HttpTransport(identity.server_url)
        self.scope = identity.scope
        self.on_progress = on_progress
        self.max_failures = max_failures
        self.refused_limit = refused_limit
        self.on_retry = on_retry
        self.lean_downloads = lean_downloads
        self.link = link or LinkEstimate()
        self.backoff = backoff or Backoff()
        self._sleep = sleep
        dictionaries = dictionaries if dictionaries is not None else DictionaryStore.packaged()
        compression = {int(Method.RAW), int(Method.DEFLATE_RAW), int(Method.ZSTD)}
        if len(dictionaries):
            compression.add(int(Method.ZSTD_DICTIONARY))
        self.end = DeviceEnd(
            device_id=store.device_id,
            keys=store.key_bundle(),
            server_encryption=keys[0],
            server_signing=keys[1],
            suite=suite,
            compression=frozenset(compression),
            dictionaries=dictionaries,
        )
        self._report = SyncReport()
        self._started = time.monotonic()
        self._ops_total = 0
        self._hint_s = 0.0
        self._planner = BatchPlanner()
        self._ahead: _Ahead | None = None
        #: Cut the next request's batches while an exchange is on the link (tests may turn
        #: it off to pin the planning order).
        self.cut_ahead = True
        #: Ask for the verification-task stream; cleared for this client when the server is
        #: from before the stream (it refuses the unknown cursor with ``scope_denied``).
        self.asks_tasks = True

    # --- the loop --------------------------------------------------------------------------

    def sync(self) -> SyncReport:
        """Exchange until the outbox is delivered and every download page is applied.

        Returns the report (rejected ops stay in the outbox for correction; conflicts are
        recorded in the store). Raises:
            SyncRefused: the server refused the device (revoked, unknown, clock far off …).
            SyncFailed: ``max_failures`` attempts in a row failed, or the server rejected a batch
                as it stands (tampered, malformed): retrying the same bytes cannot help.
        """
        started = time.monotonic()
        sent_before = self.transport.bytes_sent
        received_before = self.transport.bytes_received
        self._report = report = SyncReport()
        self._started = started
        self._ops_total = self.store.pending_count()
        more_to_download = True
        succeeded = False
        refused = 0
        try:
            while True:
                self._join_ahead()
                # Only what the next request can carry is read (and decoded) from the outbox.
                window = min(_OPS_PER_EXCHANGE, self._planner.window(self.link) + 1)
                pending = self.store.pending_ops(limit=window)
                if not pending and not more_to_download:
                    break
                self._ops_total = max(
                    self._ops_total, report.ops_acked + self.store.pending_count()
                )
                try:
                    more_to_download = self._exchange(pending)
                except _RetryableFailure as failure:
                    report.failures += 1
                    report.last_error = failure.reason
                    self.link.failed(failure.dropped_after_s)
                    refused = refused + 1 if failure.refused and not succeeded else 0
                    if self.refused_limit is not None and refused >= self.refused_limit:
                        raise SyncFailed(
                            f"the server refused the connection {refused} times in a row "
                            f"(is it running, is the address right?); last: {failure.reason}",
                            message_zh=f"服务器连续 {refused} 次拒绝连接（服务器未运行或地址有误？）"
                            f"；最后一次：{failure.reason_zh}。未发送的修改都已保留",
                        ) from None
                    if self.backoff.failures + 1 >= self.max_failures:
                        raise SyncFailed(
                            f"gave up after {self.max_failures} failed attempts in a row; "
                            f"last: {failure.reason}",
                            message_zh=f"连续 {self.max_failures} 次同步失败，已停止；"
                            f"最后一次：{failure.reason_zh}。未发送的修改都已保留",
                        ) from None
                    delay = max(self.backoff.next_delay(), failure.wait_s)
                    if report.timeline:
                        report.timeline[-1].pause_s = delay
                    if self.on_retry is not None:
                        self.on_retry(delay, failure.reason, failure.reason_zh)
                    self._progress(waiting_s=delay)
                    self._sleep(delay)
                    continue
                succeeded = True
                self.backoff.reset()
                if self._hint_s and (more_to_download or self.store.pending_count()):
                    # The server asked for a pause before the next exchange.
                    report.timeline[-1].pause_s = self._hint_s
                    self._progress(waiting_s=self._hint_s)
                    self._sleep(self._hint_s)
        except DeviceError as exc:
            report.last_error = exc.message
            self.store.record_sync_result(
                ok=False,
                error=f"{exc.code}: {exc.message}",
                error_zh=exc.message_zh,
                code=exc.code,
            )
            raise
        finally:
            self._join_ahead()
            self._ahead = None
            report.elapsed_s = time.monotonic() - started
            report.bytes_up = self.transport.bytes_sent - sent_before
            report.bytes_down = self.transport.bytes_received - received_before
            report.pending_left = self.store.pending_count()
        self.store.record_sync_result(ok=True)
        self._progress()
        return report

    # --- one exchange -------------------------------------------------------------------------

    def _exchange(self, pending: Sequence[Op]) -> bool:
        """Run one exchange; return True when a download page says more follows.

        Raises :class:`_RetryableFailure` when there was no usable reply, and the terminal
        errors of :meth:`sync`.
        """
        report = self._report
        prepare_started = time.monotonic()
        ahead = self._take_ahead(pending)
        batches = ahead if ahead is not None else self._batches(pending)
        hello = self._hello()
        first_sequence = self._next_sequence()
        # Batch seq = the batch's own envelope sequence: unique, increasing, and tells which
        # request a batch ack answers.
        batches = [
            UploadBatch(batch_seq=first_sequence + 1 + i, ops=batch.ops)
            for i, batch in enumerate(batches)
        ]
        request = build_request(self.end, hello, batches, first_sequence=first_sequence)
        # The sequence is stored before the request leaves, so a crash right after sending can
        # never make the next run reuse it.
        self._store_sequence(request.next_sequence)
        sent = _Sent(
            hello_sequence=request.hello_sequence,
            batches={b.batch_seq: [op.seq for op in b.ops] for b in batches},
            body_bytes=len(request.body),
        )
        self.store.mark_sent([seq for seqs in sent.batches.values() for seq in seqs])
        started = time.monotonic()
        up_before, down_before = self.transport.bytes_sent, self.transport.bytes_received
        report.exchanges += 1
        timing = ExchangeTiming(
            index=report.exchanges,
            started_s=started - self._started,
            ops=sum(len(seqs) for seqs in sent.batches.values()),
            prepare_s=started - prepare_started,
            first_seq=min((s for seqs in sent.batches.values() for s in seqs), default=None),
        )
        timing.cut_ahead = ahead is not None
        report.timeline.append(timing)
        self._cut_ahead({seq for seqs in sent.batches.values() for seq in seqs}, pending)
        try:
            response = self.transport.request(
                "POST",
                SYNC_PATH,
                request.body,
                {
                    "Content-Type": CONTENT_TYPE,
                    "Accept": CONTENT_TYPE,
                    "Village-Sync-App": APP_NAME,
                },
                on_sent=lambda _n: self._progress(),
            )
        except TransportError as exc:
            timing.outcome = exc.message
            timing.elapsed_s = time.monotonic() - started
            timing.bytes_up = self.transport.bytes_sent - up_before
            timing.bytes_down = self.transport.bytes_received - down_before
            raise _RetryableFailure(
                exc.message,
                exc.message_zh,
                refused=exc.refused,
                # A refused connection never reached the link; anything else dropped on it.
                dropped_after_s=None if exc.refused else timing.elapsed_s,
            ) from exc
        timing.bytes_up = self.transport.bytes_sent - up_before
        timing.bytes_down = self.transport.bytes_received - down_before
        timing.wait_s, timing.elapsed_s = response.wait_s, response.elapsed_s
        timing.server_s = response.server_s
        try:
            reply = self._open(response, sent)
        except _RetryableFailure as failure:
            timing.outcome = failure.reason
            raise
        self.store.observe_server_time(reply.server_time_ms)
        if reply.refusal is not None:
            self._refused(reply)
        more = self._apply(reply, sent)
        timing.apply_s = time.monotonic() - started - response.elapsed_s
        # The link's time only: the bytes crossed it while the transport waited for them, the
        # server's own time (its Server-Timing header) left the link idle.
        self.link.observe(
            timing.bytes_up,
            timing.bytes_down,
            response.elapsed_s or time.monotonic() - started,
            uploaded=bool(sent.batches),
            server_s=response.server_s,
        )
        timing.budget_bytes = self.link.request_bytes
        self._progress()
        self._check_frames(reply)
        self._hint_s = reply.backoff_ms / 1000.0
        # Guards against a loop that never advances: batches sent but none committed, or a
        # page that promises more without moving its cursor. Both back off like a drop.
        if sent.batches and not reply.acks:
            raise _RetryableFailure(
                "the server committed none of the batches", "服务器未接收任何批次"
            )
        if any(page.more and page.next_cursor <= page.after for page in reply.downloads):
            raise _RetryableFailure("the download did not advance", "下载没有进展")
        return more

    def seal_outbox(self) -> tuple[bytes, list[Op]]:
        """The whole pending outbox sealed as one ``/sync`` request body, without sending it
        (the sneakernet file, ``village-device export-outbox``), and the ops it carries.

        Batched and sealed exactly as :meth:`_exchange` does; the envelope sequences it uses
        are stored first, so a later sync never reuses them. The ops stay in the outbox: the
        device learns their acks on its next sync, after the file is imported (the server
        answers a replayed op with its stored ack).
        """
        pending = self.store.pending_ops()
        batches = self._batches(pending) if pending else []
        first_sequence = self._next_sequence()
        batches = [
            UploadBatch(batch_seq=first_sequence + 1 + i, ops=batch.ops)
            for i, batch in enumerate(batches)
        ]
        # Every pending op, however many batches the link budget allows per exchange.
        carried = {op.seq for batch in batches for op in batch.ops}
        rest = [op for op in pending if op.seq not in carried]
        while rest:
            more = self._batches(rest)
            start = first_sequence + 1 + len(batches)
            batches += [
                UploadBatch(batch_seq=start + i, ops=batch.ops) for i, batch in enumerate(more)
            ]
            carried = {op.seq for batch in more for op in batch.ops}
            rest = [op for op in rest if op.seq not in carried]
        request = build_request(self.end, self._hello(), batches, first_sequence=first_sequence)
        self._store_sequence(request.next_sequence)
        return request.body, [op for batch in batches for op in batch.ops]

    def _cut_ahead(self, carried: set[int], pending: Sequence[Op]) -> None:
        """Start cutting the batches of the request after this one, in a worker thread: for
        the outbox after ``carried`` if this exchange is answered, for ``pending`` (this
        exchange's ops first) at half the budget if it drops.

        Only pure work runs there (the planner on ops already read, with copies of the link
        estimate); the store stays on this thread.
        """
        self._ahead = None
        if not self.cut_ahead:
            return
        window = self._planner.window(self.link) + 1
        upcoming = [
            op
            for op in self.store.pending_ops(limit=min(_OPS_PER_EXCHANGE, len(carried) + window))
            if op.seq not in carried
        ]
        answered = copy.copy(self.link)
        dropped = copy.copy(self.link)
        dropped.failed()  # the budget a drop leaves (the drop-interval estimate is not used)
        jobs = [(answered, upcoming), (dropped, list(pending))]
        ahead = _Ahead()

        def cut() -> None:
            for link, ops in jobs:
                if not ops:
                    continue
                try:
                    batches = self._planner.plan(
                        ops, link, sender_id=self.end.device_id, allowed=self.end.compression
                    )
                except ProtocolError:
                    continue  # cut again on the sync thread, where the error is raised
                ahead.plans.append((link.request_bytes, batches))

        ahead.thread = threading.Thread(target=cut, name="village-sync-cut-ahead", daemon=True)
        ahead.thread.start()
        self._ahead = ahead

    def _join_ahead(self) -> None:
        if self._ahead is not None and self._ahead.thread is not None:
            self._ahead.thread.join()

    def _take_ahead(self, pending: Sequence[Op]) -> list[UploadBatch] | None:
        """A plan cut ahead that is still right for ``pending``: the same outbox prefix (the
        outcome it was cut for happened, no op changed) and a budget within a quarter of what
        the link allows now."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        for budget, batches in ahead.plans:
            if not 0.8 <= self.link.request_bytes / max(budget, 1) <= 1.25:
                continue
            carried = [op for batch in batches for op in batch.ops]
            if carried and list(pending[: len(carried)]) == carried:
                return batches
        return None

    def _batches(self, pending: Sequence[Op]) -> list[UploadBatch]:
        """The batches of the next request: as many as the link budget allows, at least one."""
        return self._planner.plan(
            pending, self.link, sender_id=self.end.device_id, allowed=self.end.compression
        )

    def _hello(self) -> Hello:
        engine = self.store.engine
        return Hello(
            device_id=self.store.device_id,
            # The device keeps verification tasks: it asks for the ``tasks`` stream too.
            cursors=engine.hello_cursors(self.scope, tasks=self.asks_tasks),
            high_water_mark=self.store.sync_state().acked_through,
            clock=engine.hello_clock(now_ms=self.store.now_ms()),
            capabilities=Capabilities(
                suites=(1, 2),
                compression=tuple(sorted(self.end.compression)),
                dictionary_ids=tuple(self.end.dictionaries.ids()),
                # Lean acks (protocol §5): the states of records only our own applied ops
                # touched stay out of the Ack; the download page of the same reply carries
                # them, so asking for them twice only cost the server and the link.
                lean_acks=True,
                # Lean downloads: a record our own ops alone made travels back as its ack's
                # revision only (Ack.lean_seqs), not as a copy of the state we already show.
                lean_downloads=self.lean_downloads,
            ),
        )

    def _next_sequence(self) -> int:
        return self.store.engine.next_envelope_sequence()

    def _store_sequence(self, value: int) -> None:
        with self.store.transaction():
            self.store.engine.reserve_envelope_sequences(value)

    def _skip_sequences(self) -> None:
        with self.store.transaction():
            self.store.engine.skip_envelope_sequences()

    # --- reading the reply ----------------------------------------------------------------------

    def _open(self, response: HttpResponse, sent: _Sent) -> ServerReply:
        """The verified reply, or the right exception for an HTTP-level answer."""
        if response.content_type == CONTENT_TYPE:
            try:
                return open_reply(response.body, self.end, hello_sequence=sent.hello_sequence)
            except ProtocolError as exc:
                # A reply that does not verify is no reply: nothing in it may be trusted.
                raise _RetryableFailure(
                    f"the reply did not verify ({exc.code})", f"服务器应答校验失败（{exc.code}）"
                ) from exc
        error = response.error()
        code = error.server_code
        if code == "envelope_replayed":
            # Our counter is behind what the server saw (a store restored from an old copy).
            self._skip_sequences()
            raise _RetryableFailure(
                "the server had already seen this envelope sequence", "信封序号已被使用，已跳过"
            )
        if code == "device_unknown":
            zh, en = refusal_line(code)
            raise SyncRefused(code, en, message_zh=zh)
        if response.status in (429, 503) or response.status >= 500:
            wait = _retry_after(response.headers)
            raise _RetryableFailure(
                f"the server is busy (HTTP {response.status})",
                f"服务器繁忙（HTTP {response.status}）",
                wait_s=wait,
            )
        if response.status == 413:
            self.link.failed()
            raise _RetryableFailure("the request was too large", "请求过大，已减小批次")
        raise SyncFailed(
            f"the server refused the request: {error.message}",
            message_zh=f"服务器拒绝了同步请求：{error.message_zh}",
        )

    def _refused(self, reply: ServerReply) -> None:
        refusal = reply.refusal
        assert refusal is not None  # only called with a refusal
        if refusal.code == "busy":
            raise _RetryableFailure(
                "the server is busy", "服务器繁忙", wait_s=reply.backoff_ms / 1000.0
            )
        if refusal.code == "scope_denied" and self.asks_tasks and "tasks" in refusal.message:
            # A county server from before the tasks stream knows no "tasks" cursor: keep
            # syncing records and forms without it (nothing of the exchange was applied).
            self.asks_tasks = False
            raise _RetryableFailure(
                "the server does not offer verification tasks yet", "服务器尚不支持核查任务"
            )
        zh, en = refusal_line(
            refusal.code, server_time_ms=reply.server_time_ms, device_ms=self.store.now_ms()
        )
        raise SyncRefused(refusal.code, en, message_zh=zh, backoff_ms=reply.backoff_ms)

    def _apply(self, reply: ServerReply, sent: _Sent) -> bool:
        """Apply acks, merged states and download pages; return True if a page has more.

        One local transaction (:meth:`DeviceEngine.fold_reply` states the rules): a crash
        halfway leaves the store as before the reply, and the next exchange gets the same acks
        back. The manifest pages — forms and configuration — are this edge's to store.
        """
        report = self._report
        with self.store.transaction():
            try:
                fold = self.store.engine.fold_reply(reply, sent.batches, now_ms=self.store.now_ms())
            except UnexpectedBatch as exc:
                raise SyncFailed(exc.message, message_zh=exc.message_zh) from exc
            except EngineAckMismatch as exc:
                raise AckMismatch(exc.message, message_zh=exc.message_zh) from exc
            except StateInvalid as exc:
                raise BadInput(exc.message, message_zh=exc.message_zh) from exc
            report.ops_acked += fold.ops_acked
            report.ops_rejected.extend(fold.ops_rejected)
            report.conflicts.extend(c for c in fold.conflicts if c not in report.conflicts)
            for status, count in fold.status_counts.items():
                report.status_counts[status] = report.status_counts.get(status, 0) + count
            report.records_received += fold.records_applied
            report.tasks_received += fold.tasks_applied
            for page in fold.manifest_pages:
                self._apply_manifest(page)
        return fold.more

    def _apply_manifest(self, page: DownloadPage) -> None:
        """Store the forms and configuration of one manifest page, then its cursor."""
        for entry in page.forms:
            definition = entry.get("definition")
            if isinstance(definition, Mapping):
                try:
                    self.store.put_form(definition)
                    self._report.forms_received += 1
                except FormsError:
                    # A definition this program cannot read must not block the records;
                    # the form stays unavailable here until the program is updated.
                    continue
                except StoreCorrupt:
                    # Another document under the same id and version is already here
                    # (loaded by hand): keep it, say so, and go on with the sync.
                    name = f"{entry.get('form_id')}@{entry.get('version')}"
                    if name not in self._report.forms_kept_local:
                        self._report.forms_kept_local.append(name)
                    continue
        self._apply_config(page.config)
        self.store.engine.advance_cursor(MANIFEST_SCOPE, FORMS_STREAM, page.next_cursor)

    def _apply_config(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Monitoring lines of the device's area → the store's ``monitoring`` configuration."""
        lines: dict[str, dict[int, float]] = {}
        water: dict[str, str] = {}
        drops: dict[str, dict[int, float]] = {}
        rises: dict[str, dict[int, float]] = {}
        for entry in entries:
            if entry.get("key") == SERVER_KEYS_ENTRY:
                self._adopt_server_keys(entry)
                continue
            region, year = entry.get("region_code"), entry.get("year")
            if not isinstance(region, str) or not isinstance(year, int):
                continue
            if isinstance(entry.get("income_line"), int | float):
                lines.setdefault(region, {})[year] = float(entry["income_line"])
            settings = entry.get("settings") or {}
            if isinstance(settings.get("water_region_type"), str):
                water[region] = settings["water_region_type"]
            if isinstance(settings.get("income_drop_percent"), int | float):
                drops.setdefault(region, {})[year] = float(settings["income_drop_percent"])
            if isinstance(settings.get("expense_rise_percent"), int | float):
                rises.setdefault(region, {})[year] = float(settings["expense_rise_percent"])
        try:
            config = MonitoringConfig(
                monitoring_lines=lines,
                water_region_types=water,
                income_drop_percents=drops,
                expense_rise_percents=rises,
            )
        except FormsError:
            return  # the server validated these lines; a mismatch must not stop the sync
        self.store.set_config({"monitoring": config.to_mapping()})

    def _adopt_server_keys(self, entry: Mapping[str, Any]) -> None:
        """The server's current keys, announced in a reply signed by a key this device trusts:
        store them and seal the following hellos to them (their replies are signed with the
        new signing key). A malformed entry is ignored: the old keys keep working."""
        try:
            encryption = EncryptionPublicKey.from_base64(str(entry["encryption_public"]))
            signing = SigningPublicKey.from_base64(str(entry["signing_public"]))
        except (KeyError, TypeError, ValueError, ProtocolError):
            return
        key_id = encryption.key_id()
        if entry.get("encryption_key_id") not in (None, key_id):
            return
        if self.store.adopt_server_keys(
            encryption_public=encryption.raw(), signing_public=signing.raw(), key_id=key_id
        ):
            self.end = dataclasses.replace(
                self.end, server_encryption=encryption, server_signing=signing
            )
            self._report.server_keys_adopted = key_id

    def _check_frames(self, reply: ServerReply) -> None:
        """Stop on a batch the server can never accept as sent; busy frames wait and retry."""
        for frame in reply.frames:
            if frame.status != "rejected":
                continue
            if frame.code == "busy":
                raise _RetryableFailure(
                    "the server is busy", "服务器繁忙", wait_s=reply.backoff_ms / 1000.0
                )
            if frame.code == "envelope_replayed":
                self._skip_sequences()
                raise _RetryableFailure(
                    "the server had already seen a batch sequence", "批次序号已被使用，已跳过"
                )
            raise SyncFailed(
                f"the server rejected batch frame {frame.index} ({frame.code}); its ops are kept "
                "for inspection",
                message_zh=f"服务器拒收第 {frame.index} 批（{frame.code}），相关修改保留待查",
            )

    def _progress(self, waiting_s: float = 0.0) -> None:
        if self.on_progress is None:
            return
        report = self._report
        self.on_progress(
            SyncProgress(
                ops_total=self._ops_total,
                ops_done=report.ops_acked + len(report.ops_rejected),
                bytes_up=self.transport.bytes_sent,
                bytes_down=self.transport.bytes_received,
                exchanges=report.exchanges,
                failures=report.failures,
                records_received=report.records_received,
                waiting_s=waiting_s,
            )
        )


class _RetryableFailure(Exception):
    """Internal: no usable reply this time; back off and try again."""

    def __init__(
        self,
        reason: str,
        reason_zh: str,
        *,
        wait_s: float = 0.0,
        refused: bool = False,
        dropped_after_s: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reason_zh = reason_zh
        self.wait_s = wait_s
        self.refused = refused
        #: The link dropped this many seconds into the exchange (None: not a drop).
        self.dropped_after_s = dropped_after_s


def _retry_after(headers: Mapping[str, str]) -> float:
    value = headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return 0.0
