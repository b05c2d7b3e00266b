"""The device engine: every sync rule a field device applies, with no I/O.

A device (the ``village-device`` CLI on SQLite, the browser field app on IndexedDB) keeps an
outbox of ops, the server's view of each record, the conflicts the server reported and download
cursors. This module decides how those change; it never opens a file, a socket or a database,
never reads a clock and never draws a random number. Time comes in as ``now_ms`` arguments, and
storage is whatever object implements :class:`DeviceStorage` — the SQLite edge
(``village_client_stub.engine_storage``) and the in-memory one (:mod:`sync_protocol.device_memory`)
are two such implementations. The browser app ports this module line by line; the scripted
scenarios in ``sync_protocol/vectors/device_engine.json`` pin its behaviour
(:mod:`sync_protocol.device_vectors` runs them against any storage).

Units of work: every public method of :class:`DeviceEngine` that writes is **one unit of work**.
The edge runs it inside one storage transaction and rolls the transaction back when it raises;
methods check their input before the first write where they can, so a refusal of malformed
input (:class:`AckMismatch`, :class:`StateInvalid`) writes nothing even without a transaction.

The outbox state machine (one entry per op, numbered ``seq`` 1, 2, 3 … with no gaps, a number
never reused)::

    pending --mark_sent--> sent --ack applied/merged/duplicate/conflict--> (removed)
       |                    |  \\--mark_sent (a resend: attempts + 1)
       |                    \\--ack rejected--> rejected --a later edit corrects it--> corrected
       \\--ack (a reply to an earlier send of the same op) as for sent

Only a well-formed ack naming exactly the ops of its batch removes an op: nothing is lost
before the server's signed, committed acknowledgement.

Record views: the engine reads a record's *head* (:class:`RecordHead`: form, household, round,
the server's stamps and revision, deleted) and writes the record's local view as **flat paths**
(contracts §4): the server's values with the device's outstanding ops laid on top, a
``TOMBSTONE`` on a row path deleting that row. Turning flat paths into nested record data is the
edge's business (``forms.paths.unflatten`` in Python).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from sync_protocol.clock import HybridClock, Stamp
from sync_protocol.errors import ProtocolError
from sync_protocol.merge import RecordState, device_view
from sync_protocol.messages import Ack, DownloadPage, ServerReply
from sync_protocol.ops import TOMBSTONE, Op, is_tombstone

__all__ = [
    "ACK_STATUSES",
    "ENVELOPE_SCOPE",
    "ENVELOPE_STREAM",
    "FORMS_STREAM",
    "MANIFEST_SCOPE",
    "OP_STATES",
    "RECORDS_STREAM",
    "SEQUENCE_JUMP",
    "TASKS_SCOPE",
    "TASKS_STREAM",
    "AckMismatch",
    "AckSummary",
    "ConflictNote",
    "Counters",
    "DeviceEngine",
    "DeviceEngineError",
    "DeviceStorage",
    "OutboxItem",
    "RecordHead",
    "ReplyFold",
    "StateInvalid",
    "UnexpectedBatch",
    "path_under",
]

#: Outbox entry states. ``pending``: never sent; ``sent``: sent, no ack yet; ``rejected``: the
#: server refused it (kept with its reasons); ``corrected``: a later op re-sent its paths.
OP_STATES: Final = ("pending", "sent", "rejected", "corrected")
#: Op ack statuses (contracts §7). All but ``rejected`` settle the op.
ACK_STATUSES: Final = ("applied", "merged", "duplicate", "conflict", "rejected")
#: Download scope of the form manifest and the configuration entries.
MANIFEST_SCOPE: Final = "manifest"
#: Pseudo-scope of the device's own envelope counter in the cursor table (never a village code).
ENVELOPE_SCOPE: Final = "exchange"
ENVELOPE_STREAM: Final = "envelope"
RECORDS_STREAM: Final = "records"
FORMS_STREAM: Final = "forms"
#: Download scope and cursor stream of the verification tasks (docs/protocol.md §4): asked for
#: only by a device that keeps tasks (``hello_cursors(..., tasks=True)``).
TASKS_SCOPE: Final = "tasks"
TASKS_STREAM: Final = "tasks"
#: How far the envelope counter jumps when the server says a sequence was already used (a device
#: store restored from an old copy): far past anything the old copy can have sent since.
SEQUENCE_JUMP: Final = 1 << 20

_OUTSTANDING: Final = ("pending", "sent")
_UNAPPLIED: Final = ("pending", "sent", "rejected")


# --- errors -------------------------------------------------------------------------------------


class DeviceEngineError(ProtocolError):
    """Base of the errors the device engine raises."""

    code = "device_engine_error"
    default_message = "the device cannot apply what the server sent"
    default_message_zh = "设备无法处理服务器的数据"


class AckMismatch(DeviceEngineError):
    """Acks that do not match the ops they claim to acknowledge; nothing was changed."""

    code = "ack_mismatch"
    default_message = "the acknowledgements do not match the sent ops"
    default_message_zh = "服务器确认与已发送的操作不一致"


class StateInvalid(DeviceEngineError):
    """A record state from the server is malformed; nothing was changed."""

    code = "state_invalid"
    default_message = "a record state from the server is malformed"
    default_message_zh = "服务器返回的记录格式错误"


class UnexpectedBatch(DeviceEngineError):
    """A reply acknowledges a batch the request did not carry."""

    code = "unexpected_batch"
    default_message = "the server acknowledged a batch this request did not carry"
    default_message_zh = "服务器确认了本次未发送的批次"


# --- what storage holds -------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxItem:
    """One op in the outbox with its delivery state (see the state machine in the module doc).

    ``reasons`` are the server's per-field reasons of a rejection; ``corrected_by`` the seq of
    the op that re-sent a rejected op's paths. Times are milliseconds since the epoch.
    """

    seq: int
    op: Op
    state: str = "pending"
    attempts: int = 0
    reasons: tuple[dict[str, Any], ...] | None = None
    corrected_by: int | None = None
    created_at_ms: int = 0
    sent_at_ms: int | None = None


@dataclass(frozen=True)
class RecordHead:
    """What the engine knows of a record besides its values.

    ``stamps``: per path, the HLC stamp of the value last seen from the server (the ``base`` of
    the next op there unless an outstanding op wrote it since). ``server_revision``: the
    revision last received from the server (0 = never).
    """

    record_id: str
    form_id: str
    form_version: int
    household: dict[str, str] | None = None
    round: str | None = None
    stamps: dict[str, str] = field(default_factory=dict)
    server_revision: int = 0
    deleted: bool = False


@dataclass(frozen=True)
class ConflictNote:
    """A conflict the server reported for a record on this device.

    ``listed``: the conflict was named in a record state (a field or delete conflict of the
    merge), so record states are its authority; ``False`` for a conflict known only from an ack
    (``duplicate_household``). ``detail``: what the device can show (``paths`` of the op,
    ``kind``/``path``/``mine``/``theirs`` of a field conflict, ``twin`` of a duplicate).
    """

    conflict_id: str
    record_id: str
    seq: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    status: str = "open"
    listed: bool = True
    received_at_ms: int = 0


@dataclass(frozen=True)
class Counters:
    """The device's sync counters.

    ``last_seq``: the last op sequence number issued; ``acked_through``: the highest seq with
    every op at or below it settled (the hello's ``high_water_mark``); ``hlc_last``: the last
    HLC stamp issued or observed (text form); ``server_time_ms``: the last server time seen.
    """

    last_seq: int = 0
    acked_through: int = 0
    hlc_last: str | None = None
    server_time_ms: int | None = None


class DeviceStorage(Protocol):
    """What the engine needs from storage. Every method is plain reads and writes, no rules.

    Implementations: ``village_client_stub.engine_storage.SqliteEngineStorage`` (the CLI's
    SQLite file) and :class:`sync_protocol.device_memory.MemoryStorage` (tests, vectors).
    """

    def counters(self) -> Counters:
        """The current counters (all zero / None on a new device)."""
        ...

    def set_counters(self, counters: Counters) -> None:
        """Replace the counters."""
        ...

    def outbox_item(self, seq: int) -> OutboxItem | None:
        """The outbox entry ``seq``, or None once it was removed."""
        ...

    def outbox_items(
        self, states: Sequence[str], *, record_id: str | None = None, limit: int | None = None
    ) -> list[OutboxItem]:
        """Entries in ``states`` (of one record, if given), lowest seq first, at most ``limit``."""
        ...

    def put_outbox_item(self, item: OutboxItem) -> None:
        """Insert the entry, or replace the one with the same seq."""
        ...

    def remove_outbox_item(self, seq: int) -> None:
        """Remove an entry (its op was settled by an ack)."""
        ...

    def record_head(self, record_id: str) -> RecordHead | None:
        """The record's head, or None when the device does not hold the record."""
        ...

    def write_record(self, head: RecordHead, values: Mapping[str, Any] | None) -> None:
        """Create or replace the record's head and, unless ``values`` is None, its local data
        from flat paths (a ``TOMBSTONE`` on a row path deletes that row)."""
        ...

    def live_twins(
        self, record_id: str, form_id: str, household: Mapping[str, str] | None, round: str | None
    ) -> list[str]:
        """Ids of the other live (not deleted) records of the same form, household and round,
        the one stored first first."""
        ...

    def conflict(self, conflict_id: str) -> ConflictNote | None:
        """One conflict by id, or None."""
        ...

    def conflict_notes(
        self,
        *,
        record_id: str | None = None,
        status: str | None = None,
        listed: bool | None = None,
    ) -> list[ConflictNote]:
        """Conflicts matching every filter given, in the order they were first received."""
        ...

    def put_conflict(self, note: ConflictNote) -> None:
        """Insert the conflict, or replace the one with the same id."""
        ...

    def cursors(self) -> dict[str, dict[str, str]]:
        """Every stored cursor: scope → stream → cursor text."""
        ...

    def set_cursor(self, scope: str, stream: str, cursor: str) -> None:
        """Store one cursor."""
        ...

    def task(self, task_id: str) -> Mapping[str, Any] | None:
        """A verification task as last received (its ``tasks`` stream entry), or None."""
        ...

    def put_task(self, entry: Mapping[str, Any]) -> None:
        """Insert the task entry, or replace the one with the same ``task_id``."""
        ...


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AckSummary:
    """What :meth:`DeviceEngine.fold_acks` did: seqs removed and rejected, conflict ids
    recorded, and the new ``acked_through``."""

    removed: list[int]
    rejected: list[int]
    conflicts: list[str]
    acked_through: int


@dataclass
class ReplyFold:
    """What :meth:`DeviceEngine.fold_reply` did with one verified server reply.

    ``manifest_pages`` are left to the edge (form definitions and configuration are the edge's
    to store); it sets their cursor with :meth:`DeviceEngine.advance_cursor` in the same unit
    of work. ``more``: some download page says more follows.
    """

    ops_acked: int = 0
    ops_rejected: list[int] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    status_counts: dict[str, int] = field(default_factory=dict)
    records_applied: int = 0
    more: bool = False
    manifest_pages: list[DownloadPage] = field(default_factory=list)
    tasks_applied: int = 0


def path_under(path: str, row_path: str) -> bool:
    """True when ``path`` is ``row_path`` itself or lies below it (``row_path/…``)."""
    return path == row_path or path.startswith(row_path + "/")


# --- the engine ---------------------------------------------------------------------------------


class DeviceEngine:
    """The sync rules of one device over one :class:`DeviceStorage`.

    ``device_id`` is the device's id: the HLC node of its stamps and the ``device`` its own
    conflict candidates carry. The engine holds no state of its own between calls.
    """

    def __init__(self, storage: DeviceStorage, device_id: str) -> None:
        self.storage = storage
        self.device_id = device_id

    # --- clock --------------------------------------------------------------------------------

    def _clock(self, now_ms: int) -> HybridClock:
        last = self.storage.counters().hlc_last
        return HybridClock(self.device_id, lambda: now_ms, last=Stamp.parse(last) if last else None)

    def observe_server_time(self, server_ms: int, *, now_ms: int) -> Stamp:
        """Fold the server's clock (every reply carries it) into the HLC; returns the new last
        stamp. Stamps only go up, even when ``now_ms`` goes backwards between calls."""
        stamp = self._clock(now_ms).observe(int(server_ms))
        counters = self.storage.counters()
        self.storage.set_counters(
            replace(counters, hlc_last=stamp.to_text(), server_time_ms=int(server_ms))
        )
        return stamp

    def hello_clock(self, *, now_ms: int) -> str:
        """A fresh stamp for a hello. It names no write, so it is not stored."""
        return self._clock(now_ms).now().to_text()

    # --- the outbox ---------------------------------------------------------------------------

    def queue_op(
        self,
        build: Callable[[int, Stamp], Op],
        *,
        now_ms: int,
        corrects: Iterable[int] = (),
    ) -> Op:
        """Append one op: ``build(seq, stamp)`` gets the next sequence number (``last_seq + 1``)
        and a fresh HLC stamp and returns the op, which enters the outbox as ``pending``.

        ``corrects`` lists rejected ops whose paths this op re-sends: they become ``corrected``
        (``corrected_by`` = the new seq); entries in another state are left alone. The caller
        writes the record's new local data in the same unit of work.

        Raises:
            sync_protocol.ops.OpFormatError: ``build`` made a malformed op (nothing written).
        """
        counters = self.storage.counters()
        seq = counters.last_seq + 1
        stamp = self._clock(now_ms).now()
        op = build(seq, stamp)
        self.storage.put_outbox_item(OutboxItem(seq=seq, op=op, created_at_ms=now_ms))
        self.storage.set_counters(replace(counters, last_seq=seq, hlc_last=stamp.to_text()))
        for old in corrects:
            item = self.storage.outbox_item(old)
            if item is not None and item.state == "rejected":
                self.storage.put_outbox_item(replace(item, state="corrected", corrected_by=seq))
        return op

    def pending_ops(self, limit: int | None = None) -> list[Op]:
        """Ops still to deliver (``pending``, and ``sent`` without an ack), lowest seq first.

        Sent-but-unacked ops are included: the exchange that carried them may have been lost,
        and the server answers a replay with its stored ack (``duplicate``).
        """
        return [item.op for item in self.storage.outbox_items(_OUTSTANDING, limit=limit)]

    def mark_sent(self, seqs: Iterable[int], *, now_ms: int) -> None:
        """These ops leave in an exchange: state ``sent``, ``attempts`` + 1. Seqs that are not
        outstanding (settled, rejected, unknown) are ignored."""
        for seq in seqs:
            item = self.storage.outbox_item(seq)
            if item is not None and item.state in _OUTSTANDING:
                self.storage.put_outbox_item(
                    replace(item, state="sent", attempts=item.attempts + 1, sent_at_ms=now_ms)
                )

    def fold_acks(
        self,
        seqs: Sequence[int],
        acks: Iterable[Mapping[str, Any]],
        *,
        now_ms: int,
        settle: bool = True,
    ) -> AckSummary:
        """Fold the acks of one committed batch (contracts §7) into the outbox, all or nothing.

        Every seq in ``seqs`` (the ops the batch carried) needs exactly one ack, and every ack
        must name one of them with a known ``status``; otherwise :class:`AckMismatch` and nothing
        changes. ``conflict_ids`` and ``reasons`` may be absent (read as empty).

        - ``applied``, ``merged``, ``duplicate``, ``conflict``: the op leaves the outbox; its
          stamp becomes the record's stamp at every path it wrote (unless the record already
          holds a newer one); each conflict id is recorded as an open, unlisted conflict of
          the record with the op's paths as detail (a known id is left as it is).
        - ``rejected``: the op stays, state ``rejected``, with the ack's reasons.
        - an ack for an op already removed, rejected or corrected changes nothing (a replayed
          exchange).

        Then ``acked_through`` becomes the highest seq with every op at or below it settled,
        and open duplicate conflicts are re-checked (:meth:`settle_duplicates`; ``settle=False``
        leaves that to the caller, as :meth:`fold_reply` does once per reply).

        Raises:
            AckMismatch: missing, extra, duplicate or malformed acks; nothing is changed.
        """
        wanted = list(seqs)
        by_seq: dict[int, Mapping[str, Any]] = {}
        for ack in acks:
            seq = ack.get("seq") if isinstance(ack, Mapping) else None
            status = ack.get("status") if isinstance(ack, Mapping) else None
            if isinstance(seq, bool) or not isinstance(seq, int) or status not in ACK_STATUSES:
                raise AckMismatch(f"malformed ack {ack!r}", message_zh="服务器确认格式错误")
            if seq in by_seq or seq not in wanted:
                raise AckMismatch(
                    f"ack for seq {seq} was not expected", message_zh=f"收到意外的确认：{seq}"
                )
            by_seq[seq] = ack
        missing = [s for s in wanted if s not in by_seq]
        if missing:
            raise AckMismatch(
                f"no ack for seq {missing}", message_zh=f"缺少对操作 {missing} 的确认"
            )
        removed: list[int] = []
        rejected: list[int] = []
        conflict_ids: list[str] = []
        for seq in wanted:
            ack = by_seq[seq]
            item = self.storage.outbox_item(seq)
            if item is None or item.state not in _OUTSTANDING:
                continue  # a replayed ack for an op already settled
            if ack["status"] == "rejected":
                reasons = tuple(dict(r) for r in ack.get("reasons") or ())
                self.storage.put_outbox_item(replace(item, state="rejected", reasons=reasons))
                rejected.append(seq)
                continue
            self._fold_own_stamps(item.op)
            for conflict_id in ack.get("conflict_ids") or ():
                conflict_id = str(conflict_id)
                if self.storage.conflict(conflict_id) is None:
                    self.storage.put_conflict(
                        ConflictNote(
                            conflict_id=conflict_id,
                            record_id=item.op.record_id,
                            seq=seq,
                            detail={"paths": sorted(item.op.changes)},
                            listed=False,
                            received_at_ms=now_ms,
                        )
                    )
                conflict_ids.append(conflict_id)
            self.storage.remove_outbox_item(seq)
            removed.append(seq)
        through = self._update_acked_through()
        if settle:
            self.settle_duplicates()
        return AckSummary(removed, rejected, conflict_ids, through)

    def mark_rejected(self, seq: int, reasons: Sequence[Mapping[str, Any]]) -> None:
        """Keep outstanding op ``seq`` for correction with the server's per-field reasons.

        Raises:
            AckMismatch: no pending or sent op has that seq.
        """
        item = self.storage.outbox_item(seq)
        if item is None or item.state not in _OUTSTANDING:
            raise AckMismatch(
                f"no outstanding op {seq} to reject", message_zh=f"没有待确认的操作 {seq}"
            )
        self.storage.put_outbox_item(
            replace(item, state="rejected", reasons=tuple(dict(r) for r in reasons))
        )
        self._update_acked_through()

    def _fold_own_stamps(self, op: Op) -> None:
        """After an ack, the op's own writes are what the device last saw at those paths."""
        head = self.storage.record_head(op.record_id)
        if head is None:
            return
        stamps = dict(head.stamps)
        for path in op.changes:
            # Stamp texts order like the stamps they name (fixed-width fields).
            if stamps.get(path, "") < op.hlc:
                stamps[path] = op.hlc
        self.storage.write_record(replace(head, stamps=stamps), None)

    def _update_acked_through(self) -> int:
        counters = self.storage.counters()
        oldest = self.storage.outbox_items(_OUTSTANDING, limit=1)
        through = oldest[0].seq - 1 if oldest else counters.last_seq
        self.storage.set_counters(replace(counters, acked_through=through))
        return through

    # --- what the next edit is based on -------------------------------------------------------

    def seen_stamps(self, record_id: str) -> dict[str, str]:
        """Per path, the stamp of the value the device last saw there: the stamp of its own
        outstanding (pending or sent) op that last wrote the path, else the server's stamp."""
        head = self.storage.record_head(record_id)
        seen = dict(head.stamps) if head is not None else {}
        for item in self.storage.outbox_items(_OUTSTANDING, record_id=record_id):
            for path in item.op.changes:
                seen[path] = item.op.hlc
        return seen

    def put_base(
        self, record_id: str, changes: Mapping[str, Any], old_paths: Iterable[str]
    ) -> dict[str, str | None]:
        """The ``base`` of a put: per changed path the stamp seen there (None = never seen).

        A row tombstone's base also lists every path under the row the device saw (its old
        values ``old_paths`` and every stamped path), so a delete racing an edit the device
        did not see becomes a conflict on the server.
        """
        seen = self.seen_stamps(record_id)
        old = set(old_paths)
        base: dict[str, str | None] = {}
        for path, value in changes.items():
            base[path] = seen.get(path)
            if is_tombstone(value):
                for other in old | set(seen):
                    if other != path and path_under(other, path):
                        base[other] = seen.get(other)
        return base

    def delete_base(self, record_id: str, paths: Iterable[str]) -> dict[str, str | None]:
        """The ``base`` of a record delete: every path of the local data (``paths``) and every
        stamped path, each with the stamp seen there (None = never seen)."""
        seen = self.seen_stamps(record_id)
        base: dict[str, str | None] = {path: seen.get(path) for path in paths}
        base.update(seen)
        return base

    def resend_rejected(
        self,
        record_id: str,
        changes: Mapping[str, Any],
        new_values: Mapping[str, Any],
        deleted_rows: Sequence[str] = (),
    ) -> tuple[dict[str, Any], list[int]]:
        """Add the paths of the record's rejected ops to an edit's ``changes``.

        A rejected op never reached the server, so the next edit of the record sends its paths
        again: a written path with its value in the edited data ``new_values`` (flat; None when
        absent), a row tombstone only if no path of the row survives. Paths the edit changes
        itself, and paths under a row this edit deletes (``deleted_rows``), keep the edit's
        value. Returns the changes and the seqs of the rejected ops (to pass as ``corrects``).
        """
        out = dict(changes)
        rejected = self.storage.outbox_items(("rejected",), record_id=record_id)
        for item in rejected:
            for path, value in item.op.changes.items():
                if path in out:
                    continue
                if is_tombstone(value):
                    if not any(path_under(p, path) for p in new_values):
                        out[path] = TOMBSTONE
                elif not any(path_under(path, row) for row in deleted_rows):
                    out[path] = new_values.get(path)
        return out, [item.seq for item in rejected]

    # --- applying server record states --------------------------------------------------------

    def apply_server_state(
        self, state: Mapping[str, Any], *, now_ms: int, settle: bool = True
    ) -> bool:
        """Replace a record with the server's merged state, keeping outstanding local edits.

        ``state`` is a full record state (``RecordState.to_dict()``: has ``format`` and
        ``paths``) or its device view (``merge.device_view``: flat ``values``, ``stamps``,
        ``revision``, ``deleted``, ``conflicts``), optionally with ``closed_conflicts``.

        1. Every id in ``closed_conflicts`` that is open becomes resolved, whatever the
           state's revision (a closed conflict stays closed).
        2. A state older than the revision held is ignored (returns False).
        3. The record's head becomes the server's (form, household, round, stamps, revision,
           deleted) and its local view the server's values with every unapplied (pending,
           sent or rejected) op's changes laid on top in seq order — fold the acks of the same
           reply first, so acked ops are no longer laid on top.
        4. The record's open *listed* conflicts become exactly the state's ``conflicts``: new
           ids are recorded open and listed, known ones reopened, the others resolved.
           Unlisted (duplicate) conflicts are left to :meth:`settle_duplicates`, which runs last
           (``settle=False``: the caller runs it, as :meth:`fold_reply` does once per reply).
        5. A full state's conflicts describe themselves in the detail (``kind``, ``path``,
           ``mine`` = this device's newest candidate value, ``theirs`` = another device's).

        Returns True when the record was written.

        Raises:
            StateInvalid: the state is malformed; nothing is changed.
        """
        described: dict[str, dict[str, Any]] = {}
        try:
            closed_ids = [str(c) for c in state.get("closed_conflicts") or []]
            if "paths" in state and "format" in state:
                full = RecordState.from_dict(state)
                described = {c.conflict_id: self._describe(c.to_dict()) for c in full.conflicts}
                state = device_view(full)
            head = RecordHead(
                record_id=str(state["record_id"]),
                form_id=str(state["form_id"]),
                form_version=int(state["form_version"]),
                household=_household(state.get("household")),
                round=None if state.get("round") is None else str(state["round"]),
                stamps={str(k): str(v) for k, v in dict(state.get("stamps") or {}).items()},
                server_revision=int(state["revision"]),
                deleted=bool(state.get("deleted", False)),
            )
            values = {str(k): v for k, v in dict(state["values"]).items()}
            open_ids = [str(c) for c in state.get("conflicts") or []]
        except (KeyError, TypeError, ValueError, AttributeError, ProtocolError) as exc:
            raise StateInvalid(
                f"server record state is malformed: {exc}", message_zh="服务器返回的记录格式错误"
            ) from exc
        for conflict_id in closed_ids:
            note = self.storage.conflict(conflict_id)
            if note is not None and note.status == "open":
                self.storage.put_conflict(replace(note, status="resolved"))
        held = self.storage.record_head(head.record_id)
        if held is not None and held.server_revision > head.server_revision:
            return False
        view = dict(values)
        for item in self.storage.outbox_items(_UNAPPLIED, record_id=head.record_id):
            view.update(item.op.changes)
        if held is not None and head.round is None:
            head = replace(head, round=held.round)
        if held is not None and head.household is None:
            head = replace(head, household=held.household)
        self.storage.write_record(head, view)
        self._sync_listed(head.record_id, open_ids, now_ms)
        for conflict_id, description in described.items():
            note = self.storage.conflict(conflict_id)
            if note is not None:
                self.storage.put_conflict(replace(note, detail={**note.detail, **description}))
        if settle:
            self.settle_duplicates()
        return True

    def _describe(self, conflict: Mapping[str, Any]) -> dict[str, Any]:
        mine, theirs = conflict.get("mine"), conflict.get("theirs")
        candidates = conflict.get("candidates") or []
        own = [c for c in candidates if c.get("device") == self.device_id]
        other = [c for c in candidates if c.get("device") != self.device_id]
        if own and other:
            mine, theirs = own[-1].get("value"), other[-1].get("value")
        return {
            "kind": conflict.get("kind"),
            "path": conflict.get("path"),
            "mine": mine,
            "theirs": theirs,
        }

    def _sync_listed(self, record_id: str, open_ids: Sequence[str], now_ms: int) -> None:
        """Make the record's open listed conflicts exactly ``open_ids``."""
        for conflict_id in open_ids:
            note = self.storage.conflict(conflict_id)
            if note is None:
                note = ConflictNote(conflict_id, record_id, received_at_ms=now_ms)
            self.storage.put_conflict(replace(note, status="open", listed=True))
        for note in self.storage.conflict_notes(record_id=record_id, status="open", listed=True):
            if note.conflict_id not in open_ids:
                self.storage.put_conflict(replace(note, status="resolved"))

    def settle_duplicates(self) -> list[str]:
        """Close the open duplicate (unlisted) conflicts the server's records show settled.

        Such a conflict stays open until one of its two records is deleted (an admin kept the
        other one). The twin is the other live record of the same household, form and round;
        it is remembered as ``detail.twin`` when first seen, and a conflict whose twin this
        device has not seen yet stays open. Returns the ids closed.
        """
        closed: list[str] = []
        for note in self.storage.conflict_notes(status="open", listed=False):
            own = self.storage.record_head(note.record_id)
            if own is None:
                continue
            twin_id = note.detail.get("twin")
            if twin_id is None and not own.deleted:
                twins = self.storage.live_twins(
                    own.record_id, own.form_id, own.household, own.round
                )
                if twins:
                    twin_id = twins[0]
                    note = replace(note, detail={**note.detail, "twin": twin_id})
                    self.storage.put_conflict(note)
            twin = None if twin_id is None else self.storage.record_head(str(twin_id))
            if own.deleted or (twin is not None and twin.deleted):
                self.storage.put_conflict(replace(note, status="resolved"))
                closed.append(note.conflict_id)
        return closed

    # --- a whole reply ------------------------------------------------------------------------

    def fold_reply(
        self, reply: ServerReply, sent_batches: Mapping[int, Sequence[int]], *, now_ms: int
    ) -> ReplyFold:
        """Apply one verified reply: every batch's acks, then the record states, then each
        record download page with its cursor.

        ``sent_batches`` maps each batch_seq the request carried to the seqs of its ops. A
        record often comes twice in one reply (in its batch's ack and in the download page):
        only its newest state is applied, once. Manifest pages are returned for the edge.

        Raises:
            UnexpectedBatch: an ack names a batch the request did not carry.
            AckMismatch: a batch's acks do not name exactly its ops.
            StateInvalid: a record state is malformed.
        """
        fold = ReplyFold()
        for ack in reply.acks:
            if ack.batch_seq not in sent_batches:
                raise UnexpectedBatch(
                    f"the server acknowledged batch {ack.batch_seq}, which this request did "
                    "not carry",
                    message_zh=f"服务器确认了本次未发送的批次 {ack.batch_seq}",
                )
        newest: dict[str, int] = {}
        for state in [
            *(s for ack in reply.acks for s in ack.records),
            *(s for page in reply.downloads for s in page.records),
        ]:
            record_id, revision = str(state.get("record_id")), state.get("revision")
            if isinstance(revision, int) and revision >= newest.get(record_id, -1):
                newest[record_id] = revision
        applied: set[tuple[str, Any]] = set()

        def apply(state: Mapping[str, Any]) -> None:
            record_id, revision = str(state.get("record_id")), state.get("revision")
            if (record_id, revision) in applied or (
                isinstance(revision, int) and revision < newest.get(record_id, -1)
            ):
                return  # an older or already applied copy of the same record in this reply
            if self.apply_server_state(state, now_ms=now_ms, settle=False):
                fold.records_applied += 1
            applied.add((record_id, revision))

        for ack in reply.acks:
            own = self._lean_revisions(ack)
            summary = self.fold_acks(
                sent_batches[ack.batch_seq],
                [a.to_dict() for a in ack.acks],
                now_ms=now_ms,
                settle=False,
            )
            for record_id, revision in own.items():
                self._take_own_revision(record_id, revision)
            fold.ops_acked += len(summary.removed)
            fold.ops_rejected.extend(summary.rejected)
            fold.conflicts.extend(c for c in summary.conflicts if c not in fold.conflicts)
            for op_ack in ack.acks:
                fold.status_counts[op_ack.status] = fold.status_counts.get(op_ack.status, 0) + 1
            for state in ack.records:
                apply(state)
        for page in reply.downloads:
            fold.more = fold.more or page.more
            if page.scope == MANIFEST_SCOPE:
                fold.manifest_pages.append(page)
                continue
            if page.scope == TASKS_SCOPE:
                fold.tasks_applied += sum(1 for entry in page.tasks if self.apply_task(entry))
                self.advance_cursor(TASKS_SCOPE, TASKS_STREAM, page.next_cursor)
                continue
            for state in page.records:
                apply(state)
            self.advance_cursor(page.scope, RECORDS_STREAM, page.next_cursor)
        # Once for the whole reply: after every state was written each duplicate conflict is
        # checked against its twin once, instead of every open duplicate after every state
        # (quadratic: a second tablet re-creating 300 households spent 18 s of a 25 s sync here).
        self.settle_duplicates()
        return fold

    def _lean_revisions(self, ack: Ack) -> dict[str, int]:
        """Record id → revision of the ops an ack names in ``lean_seqs`` that are still
        outstanding here (read before :meth:`fold_acks` removes them from the outbox)."""
        revisions = {op_ack.seq: op_ack.revision for op_ack in ack.acks}
        own: dict[str, int] = {}
        for seq in ack.lean_seqs:
            item = self.storage.outbox_item(seq)
            if item is None or item.state not in _OUTSTANDING or seq not in revisions:
                continue  # a replayed ack: the op was settled by an earlier reply
            record_id = item.op.record_id
            own[record_id] = max(own.get(record_id, 0), revisions[seq])
        return own

    def _take_own_revision(self, record_id: str, revision: int) -> None:
        """A lean op (``Ack.lean_seqs``): the server's state is the device's own view, whose
        stamps :meth:`fold_acks` just folded; only the revision is new."""
        head = self.storage.record_head(record_id)
        if head is not None and head.server_revision < revision:
            self.storage.write_record(replace(head, server_revision=revision), None)

    # --- verification tasks -------------------------------------------------------------------

    def apply_task(self, entry: Mapping[str, Any]) -> bool:
        """Store a task of the ``tasks`` stream unless the device holds a newer revision of it.

        A task's outcome is worked as an ordinary record (form ``verification_outcome``, record
        id ``entry["record_id"]``): nothing here touches the outbox. Returns True when stored.

        Raises:
            StateInvalid: the entry has no ``task_id`` or no integer ``revision``.
        """
        task_id, revision = entry.get("task_id"), entry.get("revision")
        if not isinstance(task_id, str) or not task_id or not isinstance(revision, int):
            raise StateInvalid(
                "a task entry needs a task_id and an integer revision",
                message_zh="服务器返回的核查任务格式错误",
            )
        held = self.storage.task(task_id)
        if held is not None and int(held.get("revision", 0)) > revision:
            return False
        self.storage.put_task(dict(entry))
        return True

    # --- cursors ------------------------------------------------------------------------------

    def advance_cursor(self, scope: str, stream: str, cursor: int) -> None:
        """Store the download cursor a page ends at (in the unit of work that applied it)."""
        self.storage.set_cursor(scope, stream, str(int(cursor)))

    def hello_cursors(self, own_scope: str, *, tasks: bool = False) -> dict[str, int]:
        """The ``cursors`` of the next hello: the device's own scope and ``manifest`` always
        (0 before any page), then every stored download cursor (``records`` or ``forms``
        stream) under its scope. The envelope pseudo-scope never appears. With ``tasks`` the
        ``tasks`` stream is asked for too (its stored cursor, 0 before any page); without it
        the hello is what a device from before the tasks stream sends."""
        cursors: dict[str, int] = {own_scope: 0, MANIFEST_SCOPE: 0}
        if tasks:
            stored = self.storage.cursors().get(TASKS_SCOPE, {}).get(TASKS_STREAM, "0")
            cursors[TASKS_SCOPE] = int(stored) if stored.isdigit() else 0
        for scope, streams in self.storage.cursors().items():
            if scope == ENVELOPE_SCOPE:
                continue
            for stream, value in streams.items():
                if stream in (RECORDS_STREAM, FORMS_STREAM) and value.isdigit():
                    cursors[scope] = int(value)
        return cursors

    def next_envelope_sequence(self) -> int:
        """The sequence number of the next envelope the device seals (1 on a new device)."""
        stored = self.storage.cursors().get(ENVELOPE_SCOPE, {}).get(ENVELOPE_STREAM)
        return int(stored) if stored and stored.isdigit() else 1

    def reserve_envelope_sequences(self, next_sequence: int) -> None:
        """Store the first unused envelope sequence; call *before* the request leaves, so a
        crash right after sending can never make the next run reuse a number."""
        self.storage.set_cursor(ENVELOPE_SCOPE, ENVELOPE_STREAM, str(int(next_sequence)))

    def skip_envelope_sequences(self) -> int:
        """The server had already seen a sequence (a store restored from an old copy): jump
        :data:`SEQUENCE_JUMP` ahead. Returns the new next sequence."""
        jumped = self.next_envelope_sequence() + SEQUENCE_JUMP
        self.reserve_envelope_sequences(jumped)
        return jumped


def _household(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    return {"village_code": str(value["village_code"]), "household_no": str(value["household_no"])}
