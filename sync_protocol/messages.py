"""The messages of one sync exchange, with their dict forms and field-naming validation.

A device sends a :class:`Hello` and zero or more :class:`UploadBatch` messages; the server
answers with one :class:`ServerReply` carrying an :class:`Ack` per batch it committed, the first
:class:`DownloadPage` of each scope, server time and a backoff hint — or a :class:`Refusal`.
Every message is one envelope payload: canonical JSON (see :func:`encode_message`) of its
``to_dict()`` plus a ``"type"`` key, with the ops of a batch in the compact codec form of
:mod:`sync_protocol.codec`. Field by field descriptions: docs/protocol.md.

Every ``from_dict`` validates and raises :class:`~sync_protocol.errors.InvalidMessage`
whose ``field`` names the offending field as a path (``hello.capabilities.suites[1]``,
``reply.acks[0].acks[3].status`` ...). Record states, form manifest entries and configuration
entries are carried as JSON objects (``RecordState.to_dict()`` of :mod:`sync_protocol.merge`
and the server's manifest/config dicts); only their identifying keys are checked here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from sync_protocol.clock import Stamp
from sync_protocol.codec import (
    batch_from_json,
    batch_to_json,
    canonical_json,
    canonical_json_fast,
    parse_json,
)
from sync_protocol.errors import InvalidMessage, MalformedBatch, ProtocolError, ServerRefused
from sync_protocol.ops import Op, is_tombstone

__all__ = [
    "ACK_STATUSES",
    "CLOCK_SKEW_LIMIT_MS",
    "FRAME_STATUSES",
    "MAX_ITEMS",
    "PROTOCOL_VERSION",
    "REFUSAL_CODES",
    "Ack",
    "Capabilities",
    "DownloadPage",
    "FrameStatus",
    "Hello",
    "LeanStates",
    "Message",
    "OpAck",
    "Refusal",
    "ServerReply",
    "UploadBatch",
    "decode_message",
    "encode_message",
]

ACK_STATUSES: Final = ("applied", "merged", "duplicate", "conflict", "rejected")
FRAME_STATUSES: Final = ("committed", "truncated", "rejected", "skipped")
REFUSAL_CODES: Final = (
    "device_revoked",
    "device_unknown",
    "clock_skew",
    "unknown_form_version",
    "scope_denied",
    "busy",
    "exchange_invalid",
)
#: The protocol version this module speaks: the ``v1`` of ``/api/v1/sync``, the envelope version
#: byte, the batch codec version and the ``format`` of record states (docs/protocol.md §10).
PROTOCOL_VERSION: Final = 1
#: A hello whose clock is further than this from the server's time, either way, is refused with
#: ``clock_skew`` (two years: a mis-set year is accepted and its stamps are suspect; a clock
#: beyond this is broken, e.g. an RTC reset to 1970). docs/protocol.md §5.
CLOCK_SKEW_LIMIT_MS: Final = 2 * 365 * 24 * 3600 * 1000
# Upper bound of every list in a message: a 32 KiB batch holds a few hundred ops, a download
# page a few hundred records; ten thousand is generous and still bounds the work of validation.
MAX_ITEMS: Final = 10_000
_MAX_ID: Final = 128
_SCOPE_RE: Final = re.compile(r"[0-9A-Za-z_.:-]{1,64}")
# A device id is also the node id of its clock stamps: 1-64 printable ASCII without spaces.
_DEVICE_ID_RE: Final = re.compile(r"[!-~]{1,64}")
_CODE_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_UINT32: Final = 2**32 - 1
_UINT64: Final = 2**64 - 1


# --- validation helpers: each names the field it checks --------------------------------------


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidMessage(where, "must be an object")
    return value


def _keys(
    data: Mapping[str, Any], where: str, required: Sequence[str], optional: Sequence[str] = ()
) -> None:
    for name in required:
        if name not in data:
            raise InvalidMessage(f"{where}.{name}", "missing")
    unknown = sorted(set(data) - set(required) - set(optional) - {"type"})
    if unknown:
        raise InvalidMessage(f"{where}.{unknown[0]}", "unknown field")


def _int(value: Any, where: str, minimum: int = 0, maximum: int = _UINT64) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidMessage(where, "must be an integer")
    if not minimum <= value <= maximum:
        raise InvalidMessage(where, f"must be between {minimum} and {maximum}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidMessage(where, "must be true or false")
    return value


def _text(
    value: Any, where: str, *, max_length: int = _MAX_ID, pattern: re.Pattern[str] | None = None
) -> str:
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise InvalidMessage(
            where, f"must be a non-empty string of at most {max_length} characters"
        )
    if pattern is not None and not pattern.fullmatch(value):
        raise InvalidMessage(where, f"must match {pattern.pattern}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise InvalidMessage(where, "must be a list")
    if len(value) > MAX_ITEMS:
        raise InvalidMessage(where, f"more than {MAX_ITEMS} items")
    return list(value)


def _stamp(value: Any, where: str) -> str:
    try:
        return Stamp.parse(value).to_text()
    except ProtocolError as exc:
        raise InvalidMessage(where, exc.message) from None


def _objects(value: Any, where: str, key: str | None = None) -> tuple[dict[str, Any], ...]:
    items = []
    for i, item in enumerate(_list(value, where)):
        entry = dict(_mapping(item, f"{where}[{i}]"))
        if key is not None:
            _text(entry.get(key), f"{where}[{i}].{key}")
        items.append(entry)
    return tuple(items)


def _json_ready(value: Any, where: str) -> Any:
    try:
        canonical_json(value)
    except MalformedBatch as exc:
        raise InvalidMessage(where, exc.message) from None
    return value


# --- the messages ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Capabilities:
    """What a device can speak: cipher suites, compression methods, dictionary ids held.

    ``lean_acks`` (optional, default false): the device asks the server to leave out of each
    :class:`Ack` the states of records that only ``applied`` ops touched
    (:meth:`Ack.without_applied_records`); it computes those itself and gets any other change
    through its downloads. It is written only when true, so a hello without it is byte for byte
    what it always was.

    ``lean_downloads`` (optional, default false): the device asks the server to leave out of the
    whole reply (acks and download pages) the state of every record whose stored state is
    exactly what the device's own ops of this exchange made of the revision it held
    (:class:`LeanStates`); the server names those ops in :attr:`Ack.lean_seqs` and the device
    takes the record's new revision from their :class:`OpAck`. Written only when true.
    """

    suites: tuple[int, ...]
    compression: tuple[int, ...]
    dictionary_ids: tuple[int, ...] = ()
    lean_acks: bool = False
    lean_downloads: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Dict form (lists sorted; ``lean_acks`` and ``lean_downloads`` only when true)."""
        out: dict[str, Any] = {
            "suites": sorted(self.suites),
            "compression": sorted(self.compression),
            "dictionary_ids": sorted(self.dictionary_ids),
        }
        if self.lean_acks:
            out["lean_acks"] = True
        if self.lean_downloads:
            out["lean_downloads"] = True
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "capabilities") -> Capabilities:
        """Validate and build; raises :class:`InvalidMessage` naming the field."""
        data = _mapping(data, where)
        _keys(
            data,
            where,
            ("suites", "compression"),
            ("dictionary_ids", "lean_acks", "lean_downloads"),
        )
        suites = tuple(
            _int(s, f"{where}.suites[{i}]", 1, 255)
            for i, s in enumerate(_list(data["suites"], f"{where}.suites"))
        )
        if not suites:
            raise InvalidMessage(f"{where}.suites", "must name at least one suite")
        compression = tuple(
            _int(c, f"{where}.compression[{i}]", 0, 255)
            for i, c in enumerate(_list(data["compression"], f"{where}.compression"))
        )
        dictionary_ids = tuple(
            _int(d, f"{where}.dictionary_ids[{i}]", 1, _UINT32)
            for i, d in enumerate(_list(data.get("dictionary_ids", []), f"{where}.dictionary_ids"))
        )
        lean_acks = _bool(data.get("lean_acks", False), f"{where}.lean_acks")
        lean_downloads = _bool(data.get("lean_downloads", False), f"{where}.lean_downloads")
        return cls(
            suites=suites,
            compression=compression,
            dictionary_ids=dictionary_ids,
            lean_acks=lean_acks,
            lean_downloads=lean_downloads,
        )


@dataclass(frozen=True)
class Hello:
    """Opens an exchange: who the device is, where its downloads stand, what it can speak.

    ``cursors`` maps each scope (a village-code prefix) to the last download cursor the device
    applied (0 = nothing yet). ``high_water_mark`` is the highest op sequence the device has
    seen acknowledged (every op ``<=`` it is done). ``clock`` is the device's current HLC stamp;
    the server refuses with ``clock_skew`` when it is too far ahead.
    """

    device_id: str
    cursors: dict[str, int]
    high_water_mark: int
    clock: str
    capabilities: Capabilities
    kind: str = field(default="hello", init=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Dict form (the ``type`` key is added by :func:`encode_message`)."""
        return {
            "device_id": self.device_id,
            "cursors": dict(sorted(self.cursors.items())),
            "high_water_mark": self.high_water_mark,
            "clock": self.clock,
            "capabilities": self.capabilities.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Hello:
        """Validate and build; raises :class:`InvalidMessage` naming the field."""
        where = "hello"
        data = _mapping(data, where)
        _keys(data, where, ("device_id", "cursors", "high_water_mark", "clock", "capabilities"))
        cursors_in = _mapping(data["cursors"], f"{where}.cursors")
        if len(cursors_in) > 64:
            raise InvalidMessage(f"{where}.cursors", "more than 64 scopes")
        cursors = {
            _text(scope, f"{where}.cursors", pattern=_SCOPE_RE): _int(
                cursor, f"{where}.cursors[{scope!r}]"
            )
            for scope, cursor in cursors_in.items()
        }
        return cls(
            device_id=_text(data["device_id"], f"{where}.device_id", pattern=_DEVICE_ID_RE),
            cursors=cursors,
            high_water_mark=_int(data["high_water_mark"], f"{where}.high_water_mark"),
            clock=_stamp(data["clock"], f"{where}.clock"),
            capabilities=Capabilities.from_dict(data["capabilities"], f"{where}.capabilities"),
        )


@dataclass(frozen=True)
class UploadBatch:
    """One batch of ops, committed atomically by the server. ``batch_seq`` counts batches."""

    batch_seq: int
    ops: tuple[Op, ...]
    kind: str = field(default="batch", init=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Dict form; ``ops`` is the compact codec value (``[1, table, ops]``)."""
        return {"batch_seq": self.batch_seq, "ops": batch_to_json(self.ops)}

    @classmethod
    def from_dict(cls, data: Any) -> UploadBatch:
        """Validate and build; raises :class:`InvalidMessage` naming the field (``batch.ops``
        with the codec's own location in the message for a malformed op)."""
        where = "batch"
        data = _mapping(data, where)
        _keys(data, where, ("batch_seq", "ops"))
        batch_seq = _int(data["batch_seq"], f"{where}.batch_seq", 1)
        try:
            op_dicts = batch_from_json(data["ops"])
            ops = tuple(Op.from_dict(op) for op in op_dicts)
        except MalformedBatch as exc:
            raise InvalidMessage(f"{where}.ops.{exc.where}", exc.message) from None
        except ProtocolError as exc:
            raise InvalidMessage(f"{where}.ops", exc.message) from None
        if len(ops) > MAX_ITEMS:
            raise InvalidMessage(f"{where}.ops", f"more than {MAX_ITEMS} ops")
        return cls(batch_seq=batch_seq, ops=ops)


@dataclass(frozen=True)
class OpAck:
    """The outcome of one op (contracts §7).

    ``conflict_ids`` is non-empty exactly when ``status`` is ``conflict``; ``reasons`` (validation
    issues, contracts §3) is non-empty exactly when ``status`` is ``rejected``; ``revision`` is
    the record revision after the op (0 for a rejected op).
    """

    seq: int
    status: str
    revision: int = 0
    conflict_ids: tuple[str, ...] = ()
    reasons: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        """Validate on construction, so a server never encodes an ack a device would refuse.

        Raises:
            InvalidMessage: naming the field (``ack.status``, ``ack.conflict_ids`` …).
        """
        where = "ack"
        _int(self.seq, f"{where}.seq", 1)
        _int(self.revision, f"{where}.revision")
        if not isinstance(self.status, str) or self.status not in ACK_STATUSES:
            raise InvalidMessage(f"{where}.status", f"must be one of {', '.join(ACK_STATUSES)}")
        conflict_ids = tuple(
            _text(c, f"{where}.conflict_ids[{i}]")
            for i, c in enumerate(_list(self.conflict_ids, f"{where}.conflict_ids"))
        )
        reasons = _objects(self.reasons, f"{where}.reasons", key="code")
        _json_ready(reasons, f"{where}.reasons")
        if (self.status == "conflict") != bool(conflict_ids):
            raise InvalidMessage(
                f"{where}.conflict_ids", "given exactly when the status is conflict"
            )
        if (self.status == "rejected") != bool(reasons):
            raise InvalidMessage(f"{where}.reasons", "given exactly when the status is rejected")
        object.__setattr__(self, "conflict_ids", conflict_ids)
        object.__setattr__(self, "reasons", reasons)

    def to_dict(self) -> dict[str, Any]:
        """Dict form (contracts §7): ``conflict_ids`` only for a conflict, ``reasons`` only for a
        rejection — a strict decoder built from the spec accepts every ack the server sends;
        :meth:`from_dict` also reads acks that carry empty lists (servers before v1 froze)."""
        out: dict[str, Any] = {"seq": self.seq, "status": self.status, "revision": self.revision}
        if self.conflict_ids:
            out["conflict_ids"] = list(self.conflict_ids)
        if self.reasons:
            out["reasons"] = [dict(reason) for reason in self.reasons]
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "ack") -> OpAck:
        """Validate and build; raises :class:`InvalidMessage` naming the field."""
        data = _mapping(data, where)
        _keys(data, where, ("seq", "status"), ("revision", "conflict_ids", "reasons"))
        status = data["status"]
        if status not in ACK_STATUSES:
            raise InvalidMessage(f"{where}.status", f"must be one of {', '.join(ACK_STATUSES)}")
        conflict_ids = tuple(
            _text(c, f"{where}.conflict_ids[{i}]")
            for i, c in enumerate(_list(data.get("conflict_ids", []), f"{where}.conflict_ids"))
        )
        reasons = _objects(data.get("reasons", []), f"{where}.reasons", key="code")
        _json_ready(reasons, f"{where}.reasons")
        if (status == "conflict") != bool(conflict_ids):
            raise InvalidMessage(
                f"{where}.conflict_ids", "given exactly when the status is conflict"
            )
        if (status == "rejected") != bool(reasons):
            raise InvalidMessage(f"{where}.reasons", "given exactly when the status is rejected")
        return cls(
            seq=_int(data["seq"], f"{where}.seq", 1),
            status=status,
            revision=_int(data.get("revision", 0), f"{where}.revision"),
            conflict_ids=conflict_ids,
            reasons=reasons,
        )


@dataclass(frozen=True)
class Ack:
    """The server's answer to one committed batch.

    ``high_water_mark``: the highest seq of this device such that every op ``<=`` it is
    processed (after this batch). ``records``: the merged states (``RecordState.to_dict()``)
    of the records the batch touched, for the device to apply. ``lean_seqs`` (only for a device
    whose hello asked for ``lean_downloads``; written only when non-empty): the ``applied`` ops
    of this batch after which the record's stored state is exactly the device's own view
    (:class:`LeanStates`) — the device takes the op's ack ``revision`` as the record's server
    revision, and the reply carries that state nowhere unless it changed again since.
    """

    batch_seq: int
    acks: tuple[OpAck, ...]
    high_water_mark: int
    records: tuple[dict[str, Any], ...] = ()
    lean_seqs: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Dict form (``lean_seqs`` only when there are some)."""
        out: dict[str, Any] = {
            "batch_seq": self.batch_seq,
            "acks": [ack.to_dict() for ack in self.acks],
            "high_water_mark": self.high_water_mark,
            "records": [dict(record) for record in self.records],
        }
        if self.lean_seqs:
            out["lean_seqs"] = list(self.lean_seqs)
        return out

    def without_applied_records(self, ops: Sequence[Op]) -> Ack:
        """This ack without the states a device that asked for ``lean_acks`` can do without.

        ``ops`` are the batch's ops, in the order of :attr:`acks`. A record state is left out
        when every op of this batch on that record was ``applied`` (the device merges its own op
        locally: that is the state it already shows, apart from other devices' changes, which its
        downloads bring) and the state carries no server ``warnings``. Every other state stays.

        Raises:
            InvalidMessage: when ``ops`` do not match :attr:`acks` one to one (by ``seq``).
        """
        if [op.seq for op in ops] != [ack.seq for ack in self.acks]:
            raise InvalidMessage("ack.acks", "the ops do not match the acks one to one")
        needed: set[str] = set()
        lean: set[str] = set()
        for op, ack in zip(ops, self.acks, strict=True):
            (lean if ack.status == "applied" else needed).add(op.record_id)
        kept = tuple(
            record
            for record in self.records
            if record.get("record_id") not in lean - needed or record.get("warnings")
        )
        return Ack(self.batch_seq, self.acks, self.high_water_mark, kept, self.lean_seqs)

    @classmethod
    def from_dict(cls, data: Any, where: str = "ack") -> Ack:
        """Validate and build; raises :class:`InvalidMessage` naming the field."""
        data = _mapping(data, where)
        _keys(data, where, ("batch_seq", "acks", "high_water_mark"), ("records", "lean_seqs"))
        acks = tuple(
            OpAck.from_dict(item, f"{where}.acks[{i}]")
            for i, item in enumerate(_list(data["acks"], f"{where}.acks"))
        )
        records = _objects(data.get("records", []), f"{where}.records", key="record_id")
        _json_ready(records, f"{where}.records")
        lean_seqs = tuple(
            _int(seq, f"{where}.lean_seqs[{i}]", 1)
            for i, seq in enumerate(_list(data.get("lean_seqs", []), f"{where}.lean_seqs"))
        )
        acked = {ack.seq: ack.status for ack in acks}
        for i, seq in enumerate(lean_seqs):
            if acked.get(seq) != "applied":
                raise InvalidMessage(
                    f"{where}.lean_seqs[{i}]", "must name an applied op of the batch"
                )
        return cls(
            batch_seq=_int(data["batch_seq"], f"{where}.batch_seq", 1),
            acks=acks,
            high_water_mark=_int(data["high_water_mark"], f"{where}.high_water_mark"),
            records=records,
            lean_seqs=lean_seqs,
        )


@dataclass
class LeanStates:
    """Which record states a device that asked for ``lean_downloads`` can do without.

    The server feeds it every op of the exchange as it applies them (:meth:`observe`), then asks
    it about each state it is about to send (:meth:`leaves_out`). A record is *lean* when every
    op of this device on it in this exchange was an exact ``applied`` put and the ops form an
    unbroken chain from the revision the device held: the first op's ``base_revision`` is the
    record's revision before it (0: a new record), each later op follows the previous one's
    revision. Then the stored state is the device's own view (its values, the ops' stamps at
    the written paths, the same envelope and open conflicts), and the device only needs the
    revision, which the op's ack carries.

    ``exact`` is the server's word that the merge stored the op as sent: status ``applied``, no
    value rewritten (ID numbers standardised), not suspect, no warnings, no conflict closed,
    form version, household and round unchanged. On top of that an op is never lean when it is
    not a plain ``put``, writes the record path ``""`` or a tombstone (a delete changes what the
    device shows in ways its local edit does not), or names several stamps in a base entry (it
    settles competing heads). Anything else — a merge with another device's change, a conflict,
    a rejection, a duplicate, a resolution — breaks the record's chain for the rest of the
    exchange, and its state travels as before.
    """

    _held: dict[str, int | None] = field(default_factory=dict)

    def observe(self, op: Op, ack: OpAck, *, prior_revision: int | None, exact: bool) -> bool:
        """Note one processed op of the exchange (in order); True when it leaves the device's
        view exact. ``prior_revision``: the record's revision before the op (None: no record)."""
        held = self._held.get(op.record_id, -1)
        if held is None:
            return False
        expected = op.base_revision if held == -1 else held
        lean = (
            exact
            and ack.status == "applied"
            and op.kind == "put"
            and op.conflict_id is None
            and (prior_revision or 0) == expected
            and "" not in op.changes
            and not any(is_tombstone(value) for value in op.changes.values())
            and not any(isinstance(entry, (list, tuple)) for entry in op.base.values())
        )
        self._held[op.record_id] = ack.revision if lean else None
        return lean

    def forget(self, record_ids: Iterable[str]) -> None:
        """Break these records' chains: their ops were committed but will not be acknowledged
        in this reply (a later slice of their batch failed), so their states must travel."""
        for record_id in record_ids:
            self._held[record_id] = None

    def revision(self, record_id: str) -> int | None:
        """The revision the device holds of a lean record after this exchange's ops, or None."""
        held = self._held.get(record_id)
        return held if held is not None and held >= 0 else None

    def leaves_out(self, state: Mapping[str, Any]) -> bool:
        """True when ``state`` (a record state about to be sent) is the one the device already
        holds: a lean record at exactly the revision its last op made, with nothing added
        (no ``warnings``, no ``closed_conflicts``)."""
        held = self.revision(str(state.get("record_id")))
        return (
            held is not None
            and state.get("revision") == held
            and not state.get("warnings")
            and not state.get("closed_conflicts")
        )


@dataclass(frozen=True)
class DownloadPage:
    """Changes in one scope after cursor ``after``, up to ``next_cursor`` (exclusive cursors).

    ``records`` are record states, ``forms`` form manifest entries (``form_id``, ``version``,
    ...), ``config`` configuration entries such as monitoring lines (``key``, ...), ``tasks``
    verification tasks of the ``tasks`` stream (``task_id``, ...). ``more`` says another page
    follows: the device asks again from ``next_cursor``.
    """

    scope: str
    after: int
    next_cursor: int
    more: bool
    records: tuple[dict[str, Any], ...] = ()
    forms: tuple[dict[str, Any], ...] = ()
    config: tuple[dict[str, Any], ...] = ()
    tasks: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Dict form (``tasks`` only when there are some: a page of another stream is byte for
        byte what it always was, and a device that never asks for tasks never meets the key)."""
        out = {
            "scope": self.scope,
            "after": self.after,
            "next_cursor": self.next_cursor,
            "more": self.more,
            "records": [dict(r) for r in self.records],
            "forms": [dict(f) for f in self.forms],
            "config": [dict(c) for c in self.config],
        }
        if self.tasks:
            out["tasks"] = [dict(t) for t in self.tasks]
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "download") -> DownloadPage:
        """Validate and build; raises :class:`InvalidMessage` naming the field."""
        data = _mapping(data, where)
        _keys(
            data,
            where,
            ("scope", "after", "next_cursor", "more"),
            ("records", "forms", "config", "tasks"),
        )
        after = _int(data["after"], f"{where}.after")
        next_cursor = _int(data["next_cursor"], f"{where}.next_cursor")
        if next_cursor < after:
            raise InvalidMessage(f"{where}.next_cursor", "must not be before the cursor asked")
        records = _objects(data.get("records", []), f"{where}.records", key="record_id")
        forms = _objects(data.get("forms", []), f"{where}.forms", key="form_id")
        config = _objects(data.get("config", []), f"{where}.config", key="key")
        tasks = _objects(data.get("tasks", []), f"{where}.tasks", key="task_id")
        _json_ready([records, forms, config, tasks], where)
        return cls(
            scope=_text(data["scope"], f"{where}.scope", pattern=_SCOPE_RE),
            after=after,
            next_cursor=next_cursor,
            more=_bool(data["more"], f"{where}.more"),
            records=records,
            forms=forms,
            config=config,
            tasks=tasks,
        )


@dataclass(frozen=True)
class FrameStatus:
    """What the server did with one request frame (0 = the hello, 1.. = the batches).

    ``committed``: opened and committed (its :class:`Ack` is in the reply); ``truncated``: the
    connection cut it short, resend; ``rejected``: refused with ``code`` (resending the same
    bytes will not help); ``skipped``: not looked at because an earlier frame failed.
    """

    index: int
    status: str
    code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Dict form (``code`` only when set)."""
        out: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.code is not None:
            out["code"] = self.code
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "frame") -> FrameStatus:
        """Validate and build; raises :class:`InvalidMessage` naming the field."""
        data = _mapping(data, where)
        _keys(data, where, ("index", "status"), ("code",))
        if data["status"] not in FRAME_STATUSES:
            raise InvalidMessage(f"{where}.status", f"must be one of {', '.join(FRAME_STATUSES)}")
        code = data.get("code")
        if code is not None:
            _text(code, f"{where}.code", pattern=_CODE_RE)
        if data["status"] == "rejected" and code is None:
            raise InvalidMessage(f"{where}.code", "a rejected frame names its error code")
        return cls(index=_int(data["index"], f"{where}.index"), status=data["status"], code=code)


@dataclass(frozen=True)
class Refusal:
    """The server refused the whole exchange; ``code`` is one of :data:`REFUSAL_CODES`."""

    code: str
    message: str
    message_zh: str

    def to_dict(self) -> dict[str, Any]:
        """Dict form."""
        return {"code": self.code, "message": self.message, "message_zh": self.message_zh}

    @classmethod
    def from_dict(cls, data: Any, where: str = "refusal") -> Refusal:
        """Validate and build; raises :class:`InvalidMessage` naming the field."""
        data = _mapping(data, where)
        _keys(data, where, ("code", "message", "message_zh"))
        return cls(
            code=_text(data["code"], f"{where}.code", pattern=_CODE_RE),
            message=_text(data["message"], f"{where}.message", max_length=2000),
            message_zh=_text(data["message_zh"], f"{where}.message_zh", max_length=2000),
        )


@dataclass(frozen=True)
class ServerReply:
    """The one reply of an exchange.

    ``server_time_ms`` (the client folds it into its HLC), ``backoff_ms`` (wait at least this
    long before the next exchange; 0 = none), ``frames`` (one status per request frame),
    ``acks`` (one per committed batch), ``downloads`` (the first page of each scope in the
    hello). With a ``refusal`` there are no acks and no downloads.
    """

    server_time_ms: int
    acks: tuple[Ack, ...] = ()
    downloads: tuple[DownloadPage, ...] = ()
    frames: tuple[FrameStatus, ...] = ()
    backoff_ms: int = 0
    refusal: Refusal | None = None
    kind: str = field(default="reply", init=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Dict form (``refusal`` only when set)."""
        out: dict[str, Any] = {
            "server_time_ms": self.server_time_ms,
            "backoff_ms": self.backoff_ms,
            "frames": [f.to_dict() for f in self.frames],
            "acks": [a.to_dict() for a in self.acks],
            "downloads": [d.to_dict() for d in self.downloads],
        }
        if self.refusal is not None:
            out["refusal"] = self.refusal.to_dict()
        return out

    def raise_for_refusal(self) -> None:
        """Raise :class:`~sync_protocol.errors.ServerRefused` (its ``code`` the refusal's code,
        its ``backoff_ms`` this reply's) when the server refused the exchange; else do nothing.
        """
        if self.refusal is not None:
            error = ServerRefused(
                self.refusal.code, self.refusal.message, message_zh=self.refusal.message_zh
            )
            error.backoff_ms = self.backoff_ms
            raise error

    @classmethod
    def from_dict(cls, data: Any) -> ServerReply:
        """Validate and build; raises :class:`InvalidMessage` naming the field."""
        where = "reply"
        data = _mapping(data, where)
        _keys(
            data,
            where,
            ("server_time_ms",),
            ("backoff_ms", "frames", "acks", "downloads", "refusal"),
        )
        refusal = None
        if data.get("refusal") is not None:
            refusal = Refusal.from_dict(data["refusal"], f"{where}.refusal")
        acks = tuple(
            Ack.from_dict(a, f"{where}.acks[{i}]")
            for i, a in enumerate(_list(data.get("acks", []), f"{where}.acks"))
        )
        downloads = tuple(
            DownloadPage.from_dict(d, f"{where}.downloads[{i}]")
            for i, d in enumerate(_list(data.get("downloads", []), f"{where}.downloads"))
        )
        frames = tuple(
            FrameStatus.from_dict(f, f"{where}.frames[{i}]")
            for i, f in enumerate(_list(data.get("frames", []), f"{where}.frames"))
        )
        if refusal is not None and (acks or downloads):
            raise InvalidMessage(f"{where}.refusal", "a refusal carries no acks and no downloads")
        return cls(
            server_time_ms=_int(data["server_time_ms"], f"{where}.server_time_ms"),
            acks=acks,
            downloads=downloads,
            frames=frames,
            backoff_ms=_int(data.get("backoff_ms", 0), f"{where}.backoff_ms", 0, 86_400_000),
            refusal=refusal,
        )


Message: TypeAlias = Hello | UploadBatch | ServerReply
_TYPES: Final[dict[str, type[Hello] | type[UploadBatch] | type[ServerReply]]] = {
    "hello": Hello,
    "batch": UploadBatch,
    "reply": ServerReply,
}


def encode_message(message: Message) -> bytes:
    """The payload bytes of ``message``: canonical JSON of its dict plus ``"type"``.

    Raises :class:`InvalidMessage` when the message holds a value JSON cannot carry.
    """
    body = message.to_dict()
    body["type"] = message.kind
    try:
        if message.kind == "reply":
            # Built from stored states: the same bytes, by orjson (codec.canonical_json_fast).
            return canonical_json_fast(body)
        return canonical_json(body)
    except MalformedBatch as exc:
        raise InvalidMessage(message.kind, exc.message) from None


def decode_message(data: bytes, expected: str | None = None) -> Message:
    """Parse payload bytes into a message; ``expected`` (``hello``/``batch``/``reply``) if given
    is the only type accepted.

    Raises :class:`InvalidMessage` naming the field for anything that is not a valid message
    (``message`` for bytes that are not JSON, ``type`` for an unknown or unexpected type).
    """
    try:
        value = parse_json(data, "message")
    except MalformedBatch as exc:
        raise InvalidMessage("message", exc.message) from None
    body = _mapping(value, "message")
    kind = body.get("type")
    # Membership is tested only on strings: a list or object is unhashable, and the error must
    # stay InvalidMessage whatever JSON value a peer put there.
    if (
        not isinstance(kind, str)
        or kind not in _TYPES
        or (expected is not None and kind != expected)
    ):
        wanted = expected or ", ".join(_TYPES)
        got = repr(kind[:40]) if isinstance(kind, str) else _json_type_name(kind)
        raise InvalidMessage("type", f"must be {wanted}, got {got}")
    return _TYPES[kind].from_dict(body)


def _json_type_name(value: object) -> str:
    """How a parsed JSON value that is not a string is named in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    return "an object"
