"""Field-level merge of sync ops into a record's state (DESIGN §2; rules in docs/protocol-merge.md).

Every field path is a *multi-value register*. Each op writes its changed paths, stamped with the
op's HLC stamp, and each write names the stamp(s) it replaced (the op's ``base`` for that path).
A path's *heads* are its writes that no other write replaced. Then:

* one head → its value (the edit was made on top of everything known: "untouched since base");
* several heads with the same value → that value (no conflict);
* several heads, ``lww`` policy → the highest stamp wins; the others stay in the history. If the
  winner's stamp was *suspect* (more than ``max_drift_ms`` ahead of the server when it arrived) it
  does not win silently: the path is in conflict instead;
* several heads, ``review`` policy → conflict; the provisional value is the highest stamp's;
* a tombstone head on the record (``""``) or on a row (``repeat/<row_id>``) that did not see an edit
  head under it (or that races another write on the same path) → a delete conflict.

Every write is kept, so nothing a person typed is lost, and everything derived (values, conflicts
and their ids) is a pure function of the *set* of writes: delivering the same ops in any order,
with duplicates, yields the same state. The server assigns ``revision``; :func:`merge` never
changes it and reports ``changed`` so the server knows when to bump it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

from sync_protocol.clock import DEFAULT_MAX_DRIFT_MS, Stamp, StampFormatError, is_suspect
from sync_protocol.conflicts import Conflict, conflict_id_for
from sync_protocol.errors import ProtocolError
from sync_protocol.ops import (
    _FORM_ID_RE,
    TOMBSTONE,
    Op,
    OpFormatError,
    _check_json_value,
    base_stamps,
    is_tombstone,
)

__all__ = [
    "POLICIES",
    "STATE_FORMAT",
    "FieldState",
    "MergeError",
    "MergePolicyError",
    "MergeResult",
    "RecordMismatchError",
    "RecordState",
    "StampReusedError",
    "StateFormatError",
    "Write",
    "current_values",
    "device_view",
    "merge",
    "resolution",
]

POLICIES: Final = ("lww", "review")
STATE_FORMAT: Final = 1
_NODE_OFFSET: Final = 18  # a stamp text is 12 hex, '-', 4 hex, '-', then the node id

Policy = Callable[[str], str]


class MergeError(ProtocolError):
    """Base of the errors :func:`merge` raises; the op is rejected and the state is unchanged."""

    code = "merge_error"
    default_message = "the op could not be merged"
    default_message_zh = "无法合并此操作"


class RecordMismatchError(MergeError):
    """The op names another record or another form than the state it is merged into."""

    code = "op_record_mismatch"
    default_message = "the op belongs to another record or form"
    default_message_zh = "此操作属于另一条记录或另一张表单"


class StampReusedError(MergeError):
    """Another op already wrote the same path with the same HLC stamp (a broken device clock)."""

    code = "stamp_reused"
    default_message = "another op already used this clock stamp"
    default_message_zh = "该时间戳已被另一操作使用"


class MergePolicyError(MergeError):
    """The policy callable returned something other than ``"lww"`` or ``"review"``."""

    code = "merge_policy_invalid"
    default_message = "the merge policy is not lww or review"
    default_message_zh = "合并策略必须是 lww 或 review"


class StateFormatError(MergeError):
    """A stored record state (the dict form) is malformed."""

    code = "record_state_invalid"
    default_message = "the stored record state is malformed"
    default_message_zh = "记录状态数据格式错误"


def _normalised(value: Any) -> Any:
    # Numbers compare by value (a tablet may send 9000.0 for 9000), but a boolean is never a
    # number: ``true`` and ``1`` are different answers on a form.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _normalised(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalised(item) for item in value]
    return value


def _canonical(value: Any) -> str:
    """Text that is equal for two values exactly when the merge treats them as the same value."""
    if value is None or isinstance(value, str | bool | int):
        return repr(value)  # fast path for the common scalar values
    return json.dumps(_normalised(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _plain(value: Any) -> Any:
    return {"$tombstone": True} if is_tombstone(value) else value


def _in_scope(scope: str, path: str) -> bool:
    """True when ``path`` lies under the thing at ``scope`` (the record ``""`` or a row)."""
    if scope == "":
        return path != ""
    return path.startswith(scope + "/")


@dataclass(frozen=True, slots=True)
class Write:
    """One value written to one path by one op; writes are never removed.

    ``replaces`` are the stamps it superseded (the op's ``base`` for the path). For a tombstone,
    ``seen`` maps each path under it to the stamps the deleting device had seen there.
    ``conflict_id`` is set on writes made by a ``resolve`` op.
    """

    path: str
    stamp: str
    value: Any
    device: str
    seq: int
    replaces: tuple[str, ...] = ()
    suspect: bool = False
    seen: Mapping[str, tuple[str, ...]] | None = None
    conflict_id: str | None = None

    @property
    def is_tombstone(self) -> bool:
        """True when this write deletes what is at its path."""
        return is_tombstone(self.value)


@dataclass(frozen=True, slots=True)
class FieldState:
    """The merged view of one path.

    ``value``/``stamp``/``device`` come from the winning write (for a conflict: the provisional
    one, the highest stamp). ``heads`` are the stamps of all competing writes, oldest first.
    ``status`` is ``ok`` (one head), ``same`` (several heads, one value), ``lww`` (resolved by the
    highest stamp) or ``conflict``.
    """

    path: str
    value: Any
    stamp: str
    device: str
    heads: tuple[str, ...]
    status: str


def _heads(writes: Mapping[str, Write]) -> list[Write]:
    """The writes no other write replaced, oldest stamp first."""
    if len(writes) == 1:
        return list(writes.values())
    replaced: set[str] = set()
    for write in writes.values():
        replaced.update(write.replaces)
    heads = [w for s, w in writes.items() if s not in replaced]
    if not heads:
        # Only a corrupt history (two writes replacing each other) gets here; the newest write
        # stands so the state stays deterministic.
        heads = [writes[max(writes)]]
    heads.sort(key=lambda w: w.stamp)
    return heads


def _needs_policy(heads: Sequence[Write]) -> bool:
    """True when heads carry several values and no tombstone: only then lww/review matters."""
    if len(heads) < 2 or any(w.is_tombstone for w in heads):
        return False
    return len({_canonical(w.value) for w in heads}) > 1


def _view(path: str, heads: Sequence[Write], policy: str) -> FieldState:
    top = heads[-1]
    stamps = tuple(w.stamp for w in heads)
    if len(heads) == 1:
        status = "ok"
    elif len({_canonical(w.value) for w in heads}) == 1:
        status = "same"
    elif any(w.is_tombstone for w in heads) or policy == "review" or top.suspect:
        status = "conflict"
    else:
        status = "lww"
    return FieldState(path, top.value, top.stamp, top.device, stamps, status)


def _candidate(write: Write) -> dict[str, Any]:
    return {
        "path": write.path,
        "stamp": write.stamp,
        "device": write.device,
        "value": write.value,
        "suspect": write.suspect,
    }


class RecordState:
    """Everything known about one record: envelope, every write per path, derived views.

    Build one with :func:`merge` (from ``None``) or :meth:`from_dict`. The derived views
    (:attr:`fields`, :attr:`conflicts`, :attr:`deleted`) are computed on demand and cached.
    ``revision`` belongs to the server: set it after a merge that ``changed`` the state.
    """

    def __init__(
        self,
        *,
        record_id: str,
        form_id: str,
        form_version: int,
        household: dict[str, str] | None = None,
        round: str | None = None,
        revision: int = 0,
        envelope_stamp: str | None = None,
        writes: dict[str, dict[str, Write]] | None = None,
        policies: dict[str, str] | None = None,
    ) -> None:
        self.record_id = record_id
        self.form_id = form_id
        self.form_version = form_version
        self.household = household
        self.round = round
        self.revision = revision
        # Stamp of the op that set household/round: the earliest one that carried them wins, so
        # the envelope does not depend on delivery order.
        self.envelope_stamp = envelope_stamp
        self._writes: dict[str, dict[str, Write]] = writes or {}
        # Policy remembered only for paths whose heads carry several values (where it matters).
        self._policies: dict[str, str] = policies or {}
        self._heads_cache: dict[str, tuple[Write, ...]] = {}
        self._views: dict[str, FieldState] = {}
        self._conflicts: dict[str, Conflict] | None = None
        # stamp -> (device, seq) of the op that wrote it; one stamp belongs to one op.
        self._op_index: dict[str, tuple[str, int]] | None = None

    # --- derived views -------------------------------------------------------------------

    def heads(self, path: str) -> tuple[Write, ...]:
        """The competing writes at ``path`` (empty when never written), oldest first."""
        cached = self._heads_cache.get(path)
        if cached is None:
            writes = self._writes.get(path)
            cached = tuple(_heads(writes)) if writes else ()
            self._heads_cache[path] = cached
        return cached

    def field(self, path: str) -> FieldState | None:
        """The merged view of ``path``, or ``None`` when it was never written."""
        view = self._views.get(path)
        if view is None:
            heads = self.heads(path)
            if not heads:
                return None
            view = _view(path, heads, self._policies.get(path, "lww"))
            self._views[path] = view
        return view

    @property
    def fields(self) -> dict[str, FieldState]:
        """Every written path's merged view, by path."""
        views: dict[str, FieldState] = {}
        for path in sorted(self._writes):
            view = self.field(path)
            if view is not None:
                views[path] = view
        return views

    @property
    def paths(self) -> list[str]:
        """Every path ever written, sorted."""
        return sorted(self._writes)

    def history(self, path: str | None = None) -> list[Write]:
        """Every write (of ``path``, or of the whole record), ordered by stamp then path."""
        if path is not None:
            return sorted(self._writes.get(path, {}).values(), key=lambda w: w.stamp)
        return sorted(
            (w for writes in self._writes.values() for w in writes.values()),
            key=lambda w: (w.stamp, w.path),
        )

    def _ops(self) -> dict[str, tuple[str, int]]:
        if self._op_index is None:
            self._op_index = {
                w.stamp: (w.device, w.seq)
                for writes in self._writes.values()
                for w in writes.values()
            }
        return self._op_index

    def has_op(self, device_id: str, seq: int) -> bool:
        """True when the op ``(device_id, seq)`` is already merged into this state."""
        return (device_id, seq) in self._ops().values()

    def op_for_stamp(self, stamp: str) -> tuple[str, int] | None:
        """The ``(device_id, seq)`` of the op stamped ``stamp``, or ``None``."""
        return self._ops().get(stamp)

    @property
    def created_stamp(self) -> str | None:
        """The smallest stamp of any write (when the record was first made), or ``None``."""
        stamps = [s for writes in self._writes.values() for s in writes]
        return min(stamps) if stamps else None

    @property
    def conflicts(self) -> list[Conflict]:
        """Open conflicts, sorted by id."""
        return sorted(self._conflict_map().values(), key=lambda c: c.conflict_id)

    def conflict(self, conflict_id: str) -> Conflict | None:
        """The open conflict with this id, or ``None`` (resolved, superseded or unknown)."""
        return self._conflict_map().get(conflict_id)

    @property
    def deleted(self) -> bool:
        """True when the record is deleted and no delete conflict is open on it."""
        return self._scope_deleted("")

    def _scope_deleted(self, scope: str) -> bool:
        view = self.field(scope)
        if view is None or view.status == "conflict" or not is_tombstone(view.value):
            return False
        return not any(
            c.path == scope and c.kind in ("delete_edit", "row_delete_edit")
            for c in self._conflict_map().values()
        )

    def _conflict_map(self) -> dict[str, Conflict]:
        if self._conflicts is None:
            found: dict[str, Conflict] = {}
            for path in self._writes:
                heads = self.heads(path)
                if any(w.is_tombstone for w in heads):
                    conflict = self._delete_conflict(path, heads)
                else:
                    conflict = self._field_conflict(path, heads)
                if conflict is not None:
                    found[conflict.conflict_id] = conflict
            self._conflicts = self._without_settled_by_enclosing_delete(found)
        return self._conflicts

    def _without_settled_by_enclosing_delete(
        self, found: dict[str, Conflict]
    ) -> dict[str, Conflict]:
        """Drop conflicts inside a deleted scope whose delete saw every one of their candidates.

        A record (or row) delete made with ``delete_base`` lists every head inside it; a conflict
        inside it (a row delete against an edit, a review race) whose competing writes that delete
        had all seen has been judged by the deleter: the values are gone with the scope. The test
        uses only the set of writes (the tombstone heads of the enclosing scope and their
        ``seen``), so it is independent of delivery order like everything else here. When the
        delete stops being a head (a "keep" resolution restores the scope), the conflict returns.
        """
        if not found:
            return found
        seen_by_scope: dict[str, dict[str, set[str]]] = {}
        for scope in self._writes:
            tombstones = [w for w in self.heads(scope) if w.is_tombstone]
            if not tombstones:
                continue
            seen: dict[str, set[str]] = {}
            for tomb in tombstones:
                for path, stamps in (tomb.seen or {}).items():
                    seen.setdefault(path, set()).update(stamps)
            seen_by_scope[scope] = seen
        if not seen_by_scope:
            return found
        kept: dict[str, Conflict] = {}
        for conflict_id, conflict in found.items():
            settled = conflict.kind != "duplicate_household" and any(
                scope != conflict.path
                and _in_scope(scope, conflict.path)
                and all(
                    candidate["stamp"] in seen.get(candidate["path"], ())
                    for candidate in conflict.candidates
                )
                for scope, seen in seen_by_scope.items()
            )
            if not settled:
                kept[conflict_id] = conflict
        return kept

    def _field_conflict(self, path: str, heads: Sequence[Write]) -> Conflict | None:
        view = self.field(path)
        if view is None or view.status != "conflict":
            return None
        replaced = {s for w in heads for s in w.replaces}
        known = [s for s in replaced if s in self._writes[path]]
        base = self._writes[path][max(known)].value if known else None
        stamps = tuple(w.stamp for w in heads)
        return Conflict(
            conflict_id=conflict_id_for(self.record_id, "field", path, stamps),
            record_id=self.record_id,
            kind="field",
            path=path,
            base=base,
            mine=heads[-1].value,
            theirs=heads[-2].value,
            candidates=tuple(_candidate(w) for w in heads),
            stamps=stamps,
            reason="review" if self._policies.get(path) == "review" else "suspect_clock",
        )

    def _delete_conflict(self, scope: str, heads: Sequence[Write]) -> Conflict | None:
        tombstones = [w for w in heads if w.is_tombstone]
        rivals = [w for w in heads if not w.is_tombstone]
        seen: dict[str, set[str]] = {}
        for tomb in tombstones:
            for path, stamps in (tomb.seen or {}).items():
                seen.setdefault(path, set()).update(stamps)
        unseen: list[Write] = []
        for path in self._writes:
            if _in_scope(scope, path):
                seen_here = seen.get(path, set())
                unseen.extend(
                    w for w in self.heads(path) if not w.is_tombstone and w.stamp not in seen_here
                )
        if not rivals and not unseen:
            return None
        involved = sorted(tombstones + rivals + unseen, key=lambda w: (w.stamp, w.path))
        kind = "delete_edit" if scope == "" else "row_delete_edit"
        base: dict[str, Any] = {}
        for write in unseen:
            known = [s for s in seen.get(write.path, ()) if s in self._writes[write.path]]
            base[write.path] = self._writes[write.path][max(known)].value if known else None
        theirs = {w.path: w.value for w in sorted(rivals + unseen, key=lambda w: w.stamp)}
        stamps = tuple(sorted({w.stamp for w in involved}))
        return Conflict(
            conflict_id=conflict_id_for(self.record_id, kind, scope, stamps),
            record_id=self.record_id,
            kind=kind,
            path=scope,
            base=base,
            mine=TOMBSTONE,
            theirs=theirs,
            candidates=tuple(_candidate(w) for w in involved),
            stamps=stamps,
            reason="delete",
        )

    def is_hidden(self, path: str) -> bool:
        """True when ``path`` lies in a deleted record or row (and no delete conflict is open)."""
        if self.deleted:
            return True
        for scope in self._tombstoned_scopes():
            if scope == path or _in_scope(scope, path):
                return True
        return False

    def _tombstoned_scopes(self) -> list[str]:
        return [p for p in self._writes if p and self._scope_deleted(p)]

    # --- helpers to build ops -------------------------------------------------------------

    def base_for(self, paths: Iterable[str]) -> dict[str, str | None]:
        """The ``base`` a ``put`` of ``paths`` should carry: each path's displayed stamp."""
        out: dict[str, str | None] = {}
        for path in paths:
            view = self.field(path)
            out[path] = view.stamp if view is not None else None
        return out

    def heads_for(self, paths: Iterable[str]) -> dict[str, str | list[str] | None]:
        """Every head stamp of each path (a list when several): the base that supersedes all."""
        out: dict[str, str | list[str] | None] = {}
        for path in paths:
            stamps = [w.stamp for w in self.heads(path)]
            out[path] = None if not stamps else stamps[0] if len(stamps) == 1 else stamps
        return out

    def delete_base(self, scope: str = "") -> dict[str, str | list[str] | None]:
        """The ``base`` that deletes the record (``""``) or a row, having seen everything in it."""
        paths = [p for p in self._writes if p == scope or _in_scope(scope, p)]
        return self.heads_for(sorted(paths))

    # --- (de)serialisation -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Canonical, compact JSON-ready form; :meth:`from_dict` reads it back.

        ``ops`` lists each op that wrote to the record once, by stamp: ``{"s": stamp, "q": seq}``
        plus ``"d"`` (device, when it differs from the stamp's node), ``"x": true`` (suspect) and
        ``"c"`` (conflict id of a resolution). ``paths`` maps each path to its writes, oldest
        first, each ``[op index, value]`` extended by ``replaced stamps`` and, for a tombstone,
        ``{path: seen stamps}``. ``policies`` holds the merge policy of paths whose heads carry
        several values. Paths and ops are sorted, so equal states give equal dicts.
        """
        # Each path's writes oldest first (one write needs no sort: most paths of most records);
        # any write of a stamp describes its op, since one stamp belongs to one op.
        ordered: dict[str, list[Write]] = {}
        first: dict[str, Write] = {}
        for path in sorted(self._writes):
            path_writes = self._writes[path]
            if len(path_writes) == 1:
                history = list(path_writes.values())
            else:
                history = sorted(path_writes.values(), key=lambda w: w.stamp)
            ordered[path] = history
            for write in history:
                first.setdefault(write.stamp, write)
        stamps = sorted(first)
        index = {stamp: i for i, stamp in enumerate(stamps)}
        ops: list[dict[str, Any]] = []
        for stamp in stamps:
            write = first[stamp]
            row: dict[str, Any] = {"s": stamp, "q": write.seq}
            if write.device != stamp[_NODE_OFFSET:]:
                row["d"] = write.device
            if write.suspect:
                row["x"] = True
            if write.conflict_id is not None:
                row["c"] = write.conflict_id
            ops.append(row)
        paths: dict[str, list[list[Any]]] = {}
        for path, history in ordered.items():
            rows = []
            for write in history:
                row_: list[Any] = [index[write.stamp], _plain(write.value)]
                if write.replaces or write.seen:
                    row_.append(list(write.replaces))
                if write.seen:
                    row_.append({p: list(seen) for p, seen in sorted(write.seen.items())})
                rows.append(row_)
            paths[path] = rows
        return {
            "format": STATE_FORMAT,
            "record_id": self.record_id,
            "form_id": self.form_id,
            "form_version": self.form_version,
            "household": self.household,
            "round": self.round,
            "revision": self.revision,
            "envelope_stamp": self.envelope_stamp,
            "ops": ops,
            "paths": paths,
            "policies": dict(sorted(self._policies.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordState:
        """Rebuild a state from :meth:`to_dict` output (no policy callable needed: it is stored).

        Strict: devices read states from server replies, so every field is checked against the
        shape :meth:`to_dict` writes (§8 of protocol-merge.md) — types, stamp texts, op indexes
        in range, writes oldest first, ops sorted by stamp and unique. Keys :meth:`to_dict` does
        not write are ignored (the server adds ``warnings`` to the states of an ack).

        Raises:
            StateFormatError: when the dict is not a record state of a known format; the message
                names the culprit (``ops[2].q``, ``paths['members/r1'][0][2]`` …).
        """
        if not isinstance(data, Mapping):
            raise StateFormatError(f"a record state must be an object, got {_kind(data)}")
        if data.get("format") != STATE_FORMAT:
            raise StateFormatError(f"unknown record state format {_short(data.get('format'))}")
        record_id = _state_id(data, "record_id")
        form_id = _state_field(data, "form_id")
        if not isinstance(form_id, str) or not _FORM_ID_RE.fullmatch(form_id):
            _bad("form_id", "[a-z][a-z0-9_]*", form_id)
        form_version = _state_int(data.get("form_version"), "form_version", 1)
        household = _state_household(data.get("household"))
        round_ = data.get("round")
        if round_ is not None and (not isinstance(round_, str) or not round_):
            _bad("round", "a non-empty string or null", round_)
        revision = _state_int(data.get("revision", 0), "revision", 0)
        envelope_stamp = data.get("envelope_stamp")
        if envelope_stamp is not None:
            _state_stamp(envelope_stamp, "envelope_stamp")
        ops = _state_ops(_state_field(data, "ops"))
        writes = _state_writes(_state_field(data, "paths"), ops)
        policies_in = data.get("policies", {})
        if not isinstance(policies_in, Mapping):
            _bad("policies", "an object", policies_in)
        policies: dict[str, str] = {}
        for path, chosen in policies_in.items():
            if not isinstance(path, str) or chosen not in POLICIES:
                raise StateFormatError(
                    f"policies: unknown merge policy {_short(chosen)} at {_short(path)}"
                )
            policies[path] = chosen
        return cls(
            record_id=record_id,
            form_id=form_id,
            form_version=form_version,
            household=household,
            round=round_,
            revision=revision,
            envelope_stamp=envelope_stamp,
            writes=writes,
            policies=policies,
        )

    def _copy_with(self, new_writes: list[Write], op: Op) -> RecordState:
        """A new state with ``new_writes`` added; untouched paths share their write maps."""
        writes = dict(self._writes)
        for write in new_writes:
            path_writes = dict(writes.get(write.path, {}))
            path_writes[write.stamp] = write
            writes[write.path] = path_writes
        household, round_, envelope_stamp = self.household, self.round, self.envelope_stamp
        if op.household is not None and (envelope_stamp is None or op.hlc < envelope_stamp):
            household, round_, envelope_stamp = dict(op.household), op.round, op.hlc
        state = RecordState(
            record_id=self.record_id,
            form_id=self.form_id,
            form_version=max(self.form_version, op.form_version),
            household=household,
            round=round_,
            revision=self.revision,
            envelope_stamp=envelope_stamp,
            writes=writes,
            policies=dict(self._policies),
        )
        touched = {w.path for w in new_writes}
        state._heads_cache = {p: h for p, h in self._heads_cache.items() if p not in touched}
        state._views = {p: v for p, v in self._views.items() if p not in touched}
        if self._op_index is not None:
            state._op_index = {**self._op_index, **{w.stamp: (w.device, w.seq) for w in new_writes}}
        return state


@dataclass(frozen=True, slots=True)
class MergeResult:
    """What :func:`merge` did.

    ``status``: ``applied`` (every change landed cleanly), ``merged`` (some change raced another
    and was settled automatically: lww, same value, or already superseded), ``duplicate`` (the op
    was merged before; nothing changed) or ``conflict`` (some change is now in an open conflict).
    ``field_outcomes`` per written path: ``applied``, ``unchanged``, ``won``, ``lost``,
    ``superseded``, ``conflict`` or ``duplicate``. ``conflicts`` are the open conflicts this op
    created or takes part in; ``closed_conflict_ids`` the conflicts that were open before and are
    not any more (resolved, or replaced by a conflict with a new id). ``suspect`` says the op's
    stamp was too far ahead of the server time.
    """

    state: RecordState
    changed: bool
    status: str
    field_outcomes: dict[str, str]
    conflicts: list[Conflict] = field(default_factory=list)
    suspect: bool = False
    closed_conflict_ids: list[str] = field(default_factory=list)


def _op_paths(op: Op) -> list[str]:
    return [""] if op.kind == "delete" else list(op.changes)


def _op_writes(op: Op, suspect: bool) -> list[Write]:
    writes = []
    base = op.base
    for path in _op_paths(op):
        value = TOMBSTONE if op.kind == "delete" else op.changes[path]
        seen = None
        if is_tombstone(value):
            value = TOMBSTONE
            seen = {
                p: base_stamps(entry)
                for p, entry in base.items()
                if _in_scope(path, p) and entry is not None
            }
        writes.append(
            Write(
                path,
                op.hlc,
                value,
                op.device_id,
                op.seq,
                base_stamps(base.get(path)) if base else (),
                suspect,
                seen or None,
                op.conflict_id,
            )
        )
    return writes


def merge(
    state: RecordState | None,
    op: Op,
    policy: Policy,
    *,
    reference_ms: int,
    max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
) -> MergeResult:
    """Merge ``op`` into ``state`` (``None`` for a record not seen yet) and return a new state.

    ``policy(path)`` gives ``"lww"`` or ``"review"``; it is asked only for paths where writes with
    different values compete. ``reference_ms`` is the server time used to flag a suspect stamp.
    The input state is never modified. Merging an op already merged returns ``duplicate``.

    Raises:
        RecordMismatchError: when ``op`` is for another record id or form id than ``state``.
        StampReusedError: when another op already wrote one of the paths with the same stamp.
        MergePolicyError: when ``policy`` returns something other than ``lww``/``review``.
    """
    suspect = is_suspect(op.stamp, reference_ms, max_drift_ms)
    if state is None and _is_plain_create(op):
        return _merge_create(op, suspect)
    return _merge_into(state, op, policy, suspect)


def _is_plain_create(op: Op) -> bool:
    """True for a put without tombstones: merged into no state, it races nothing."""
    return (
        op.kind == "put"
        and op.conflict_id is None
        and not any(is_tombstone(value) for value in op.changes.values())
    )


def _merge_create(op: Op, suspect: bool) -> MergeResult:
    """:func:`merge` of a plain create (:func:`_is_plain_create`) into a record not seen yet.

    Every path then has exactly one write, so each is its own only head (status ``ok``), no
    policy is asked, no conflict can open or close and every change is ``applied``. The state
    is built with those views already in place, instead of walking heads, policies and the
    conflict map twice: a county's records arrive as creates (tests/sync_protocol/
    test_merge_fast_path.py proves the result equal to the general merge).
    """
    new_writes = _op_writes(op, suspect)
    claims = op.household is not None
    state = RecordState(
        record_id=op.record_id,
        form_id=op.form_id,
        form_version=op.form_version,
        household=dict(op.household) if op.household is not None else None,
        round=op.round if claims else None,
        envelope_stamp=op.hlc if claims else None,
        writes={write.path: {write.stamp: write} for write in new_writes},
    )
    state._heads_cache = {write.path: (write,) for write in new_writes}
    state._views = {
        write.path: FieldState(
            write.path, write.value, write.stamp, write.device, (write.stamp,), "ok"
        )
        for write in new_writes
    }
    state._conflicts = {}
    state._op_index = {op.hlc: (op.device_id, op.seq)} if new_writes else {}
    return MergeResult(
        state=state,
        changed=True,
        status="applied",
        field_outcomes=dict.fromkeys((write.path for write in new_writes), "applied"),
        suspect=suspect,
    )


def _merge_into(state: RecordState | None, op: Op, policy: Policy, suspect: bool) -> MergeResult:
    """The general :func:`merge`: three-way against every write the state holds."""
    if state is None:
        state = RecordState(
            record_id=op.record_id, form_id=op.form_id, form_version=op.form_version
        )
    elif op.record_id != state.record_id or op.form_id != state.form_id:
        raise RecordMismatchError(
            f"op {op.device_id}#{op.seq} is for {op.form_id}/{op.record_id}, "
            f"not {state.form_id}/{state.record_id}"
        )
    if state.has_op(op.device_id, op.seq):
        involved = [c for c in state.conflicts if op.hlc in c.stamps]
        return MergeResult(
            state=state,
            changed=False,
            status="duplicate",
            field_outcomes=dict.fromkeys(_op_paths(op), "duplicate"),
            conflicts=involved,
            suspect=suspect,
        )
    owner = state.op_for_stamp(op.hlc)
    if owner is not None:
        raise StampReusedError(
            f"op {op.device_id}#{op.seq} reuses stamp {op.hlc} of op {owner[0]}#{owner[1]}"
        )
    new_writes = _op_writes(op, suspect)
    before = state._conflict_map()
    previous = {w.path: state.field(w.path) for w in new_writes}
    merged = state._copy_with(new_writes, op)
    for write in new_writes:
        heads = merged.heads(write.path)
        if _needs_policy(heads):
            chosen = policy(write.path)
            if chosen not in POLICIES:
                raise MergePolicyError(f"policy for {write.path!r} is {chosen!r}")
            merged._policies[write.path] = chosen
        else:
            merged._policies.pop(write.path, None)
    after = merged._conflict_map()
    in_conflict = {
        (candidate["path"], candidate["stamp"])
        for conflict in after.values()
        for candidate in conflict.candidates
    }
    outcomes: dict[str, str] = {}
    for write in new_writes:
        view = merged.field(write.path)
        prior = previous[write.path]
        if view is None or write.stamp not in view.heads:
            outcome = "superseded"
        elif (write.path, write.stamp) in in_conflict:
            outcome = "conflict"
        elif len(view.heads) == 1:
            same = prior is not None and _canonical(prior.value) == _canonical(write.value)
            outcome = "unchanged" if same else "applied"
        elif view.status == "same":
            outcome = "unchanged"
        elif view.status == "lww":
            outcome = "won" if view.stamp == write.stamp else "lost"
        else:
            outcome = "conflict"
        outcomes[write.path] = outcome
    values = set(outcomes.values())
    if "conflict" in values:
        status = "conflict"
    elif values <= {"applied", "unchanged"}:
        status = "applied"
    else:
        status = "merged"
    conflicts = [c for cid, c in sorted(after.items()) if cid not in before or op.hlc in c.stamps]
    return MergeResult(
        state=merged,
        changed=True,
        status=status,
        field_outcomes=outcomes,
        conflicts=conflicts,
        suspect=suspect,
        closed_conflict_ids=sorted(set(before) - set(after)),
    )


def current_values(state: RecordState) -> dict[str, Any]:
    """The merged data as flat paths (contracts §4): what a device shows and the server exports.

    Empty (``None``) values, the record path ``""``, tombstones and everything inside a deleted
    row are left out; a deleted record gives ``{}``. While a delete conflict is open the record or
    row stays visible with all its data, and a conflicted field shows its provisional value.
    """
    if state.deleted:
        return {}
    hidden = state._tombstoned_scopes()
    out: dict[str, Any] = {}
    for path in state.paths:
        if path == "":
            continue
        if hidden and any(scope == path or _in_scope(scope, path) for scope in hidden):
            continue
        view = state.field(path)
        if view is None or view.value is None or is_tombstone(view.value):
            continue
        out[path] = view.value
    return out


def resolution(
    state: RecordState, conflict_id: str, chosen: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str | list[str] | None]]:
    """The ``changes`` and ``base`` of a ``resolve`` op settling an open conflict.

    For a ``field`` conflict, ``chosen`` is ``{path: value}`` (one of the candidates or a newly
    entered value). For a delete conflict, ``chosen`` is ``{scope: TOMBSTONE}`` to delete after
    all (the new tombstone has then seen every edit in the scope) or ``{scope: None}`` to keep the
    record or row with its edits. The base names every competing head, so the resolution
    supersedes them all.

    Raises:
        MergeError: when the conflict is not open in ``state`` or ``chosen`` names other paths.
    """
    conflict = state.conflict(conflict_id)
    if conflict is None:
        raise MergeError(
            "conflict_not_open",
            f"conflict {conflict_id} is not open on record {state.record_id}",
        )
    if set(chosen) != {conflict.path}:
        raise MergeError(
            "resolution_paths_invalid",
            f"a resolution of {conflict_id} sets exactly {conflict.path!r}",
        )
    value = chosen[conflict.path]
    changes = {conflict.path: TOMBSTONE if is_tombstone(value) else value}
    if conflict.kind == "field" or not is_tombstone(value):
        return changes, state.heads_for([conflict.path])
    return changes, state.delete_base(conflict.path)


def device_view(state: RecordState) -> dict[str, Any]:
    """What a device needs to show and edit a record, without the history.

    ``{"record_id", "form_id", "form_version", "household", "round", "revision", "deleted",
    "values": current_values(state), "stamps": {path: displayed stamp}, "conflicts": [ids]}``.
    ``stamps`` covers every written path, hidden ones included (a deleted row's fields, the
    record path ``""``), because those are the bases of the device's next ops
    (:meth:`RecordState.base_for`, :meth:`RecordState.delete_base`). ``values`` are flat paths;
    ``forms.paths.unflatten`` turns them into record data.
    """
    return {
        "record_id": state.record_id,
        "form_id": state.form_id,
        "form_version": state.form_version,
        "household": state.household,
        "round": state.round,
        "revision": state.revision,
        "deleted": state.deleted,
        "values": current_values(state),
        "stamps": {path: view.stamp for path, view in state.fields.items()},
        "conflicts": [conflict.conflict_id for conflict in state.conflicts],
    }


# --- reading a stored state strictly -----------------------------------------------------------

_STATE_MAX_ID_LENGTH: Final = 128
_OpRow = tuple[str, str, int, bool, "str | None"]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(where: str, wanted: str, got: Any) -> NoReturn:
    raise StateFormatError(f"{where}: want {wanted}, got {_short(got)}")


def _state_field(data: Mapping[str, Any], key: str) -> Any:
    if key not in data:
        raise StateFormatError(f"{key}: missing")
    return data[key]


def _state_id(data: Mapping[str, Any], key: str) -> str:
    value = _state_field(data, key)
    if not isinstance(value, str) or not value or len(value) > _STATE_MAX_ID_LENGTH:
        _bad(key, f"a non-empty string of at most {_STATE_MAX_ID_LENGTH} characters", value)
    return value


def _state_int(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _bad(where, f"an integer >= {minimum}", value)
    return value


def _state_stamp(value: Any, where: str) -> str:
    if not isinstance(value, str):
        _bad(where, "a stamp text", value)
    try:
        Stamp.parse(value)
    except StampFormatError as exc:
        raise StateFormatError(f"{where}: {exc.message}") from None
    return value


def _state_household(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        _bad("household", "an object or null", value)
    # The same rule as Op.household: both keys non-empty strings; other keys are carried as sent.
    household: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            _bad("household", "an object with string keys", key)
        try:
            _check_json_value("household", item)
        except OpFormatError as exc:
            raise StateFormatError(f"household.{key}: {exc.message}") from None
        household[key] = item
    for key in ("village_code", "household_no"):
        item = household.get(key)
        if not isinstance(item, str) or not item:
            _bad(f"household.{key}", "a non-empty string", item)
    return household


def _state_ops(value: Any) -> list[_OpRow]:
    if not isinstance(value, list):
        _bad("ops", "a list", value)
    ops: list[_OpRow] = []
    for i, row in enumerate(value):
        where = f"ops[{i}]"
        if not isinstance(row, Mapping):
            _bad(where, "an object", row)
        unknown = set(row) - {"s", "q", "d", "x", "c"}
        if unknown:
            raise StateFormatError(f"{where}: unknown keys {sorted(map(str, unknown))}")
        stamp = _state_stamp(row.get("s"), f"{where}.s")
        if ops and stamp <= ops[-1][0]:
            raise StateFormatError(f"{where}.s: ops must be sorted by stamp, each stamp once")
        seq = _state_int(row.get("q"), f"{where}.q", 1)
        device = row.get("d", stamp[_NODE_OFFSET:])
        if not isinstance(device, str) or not device or len(device) > _STATE_MAX_ID_LENGTH:
            _bad(f"{where}.d", "a non-empty device id", device)
        suspect = row.get("x", False)
        if not isinstance(suspect, bool):
            _bad(f"{where}.x", "a boolean", suspect)
        conflict_id = row.get("c")
        if conflict_id is not None and (not isinstance(conflict_id, str) or not conflict_id):
            _bad(f"{where}.c", "a conflict id", conflict_id)
        ops.append((stamp, device, seq, suspect, conflict_id))
    return ops


def _state_stamp_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        _bad(where, "a list of stamp texts", value)
    return tuple(_state_stamp(item, f"{where}[{k}]") for k, item in enumerate(value))


def _state_path(path: Any, where: str) -> str:
    if not isinstance(path, str) or (
        path and (path.startswith("/") or path.endswith("/") or "//" in path)
    ):
        _bad(where, "a field path", path)
    return path


def _state_writes(value: Any, ops: list[_OpRow]) -> dict[str, dict[str, Write]]:
    if not isinstance(value, Mapping):
        _bad("paths", "an object", value)
    writes: dict[str, dict[str, Write]] = {}
    for path, rows in value.items():
        _state_path(path, f"paths key {_short(path)}")
        where = f"paths[{_short(path)}]"
        if not isinstance(rows, list) or not rows:
            _bad(where, "a non-empty list of writes", rows)
        path_writes: dict[str, Write] = {}
        previous = -1
        for k, row in enumerate(rows):
            at = f"{where}[{k}]"
            if not isinstance(row, list) or not 2 <= len(row) <= 4:
                _bad(at, "[op index, value, replaced stamps?, seen?]", row)
            index = row[0]
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(ops):
                _bad(f"{at}[0]", f"an op index in 0..{len(ops) - 1}", index)
            if index <= previous:
                raise StateFormatError(f"{at}[0]: writes must be oldest first, each op once")
            previous = index
            stamp, device, seq, suspect, conflict_id = ops[index]
            raw = row[1]
            try:
                _check_json_value("value", raw)
            except OpFormatError as exc:
                raise StateFormatError(f"{at}[1]: {exc.message}") from None
            tombstone = is_tombstone(raw)
            replaces = _state_stamp_list(row[2], f"{at}[2]") if len(row) > 2 else ()
            seen: dict[str, tuple[str, ...]] | None = None
            if len(row) > 3:
                if not tombstone:
                    raise StateFormatError(f"{at}[3]: only a tombstone keeps seen stamps")
                if not isinstance(row[3], Mapping):
                    _bad(f"{at}[3]", "an object {path: [stamps]}", row[3])
                seen = {
                    _state_path(p, f"{at}[3] key"): _state_stamp_list(v, f"{at}[3][{_short(p)}]")
                    for p, v in row[3].items()
                }
            path_writes[stamp] = Write(
                path=path,
                stamp=stamp,
                value=TOMBSTONE if tombstone else raw,
                device=device,
                seq=seq,
                replaces=replaces,
                suspect=suspect,
                seen=seen or None,
                conflict_id=conflict_id,
            )
        writes[path] = path_writes
    return writes
