"""Applying one sync op to the server's records: scope, form version, merge, validation, storage.

This is the one path every write to survey data takes — ops uploaded by devices, resolutions
entered by reviewers, quarantined ops an admin maps to a published form version — so every one
of them is checked, merged field by field (``sync_protocol.merge``), validated against its form
(``forms.validate_record``), logged in the record's change history and turned into queued
conflicts the same way. :func:`apply_op` runs inside the caller's write transaction and never
commits; the caller acknowledges only what its transaction committed.

Rejection rules (each rejected op gets per-field reasons in contracts §3 issue shape):

* ``household_required`` / ``household_invalid`` — a new record without a valid household
  (``forms.identity.HOUSEHOLD_NO_PATTERN``); ``round_invalid`` — a new record's round not of
  ``forms.identity.ROUND_PATTERN``;
* ``out_of_scope`` — the record's village is outside the device's scope (quarantined);
* ``unknown_form_version`` — a form version that is not published (or retired) here
  (quarantined for an admin to map);
* validation errors — the record *after* the merge has errors the record before it did not
  have (quarantined). Errors already present before the op (e.g. left by a concurrent merge)
  are not held against it: the device could not fix them. Warnings never reject; they are
  reported with the merged record.
* ``unknown_field`` — a changed path that names no field of the op's form version
  (quarantined as invalid: such data would otherwise be stored and served);
* merge errors (``op_record_mismatch``, ``stamp_reused`` …) — quarantined as invalid.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from forms import FormsError, unflatten
from forms.identity import is_valid_household_no, is_valid_round
from forms.validation import standard_changes, validate_record
from forms.verification import FORM_ID as VERIFICATION_FORM
from forms.verification import is_outcome_household_no
from server.services import indicators, tasks
from server.services.checking import IngestContext, definition
from server.storage import conflicts as conflict_store
from server.storage import quarantine, records
from server.storage.errors import StorageError
from server.storage.revisions import next_revision
from sync_protocol.clock import HybridClock
from sync_protocol.conflicts import detect_duplicate_household
from sync_protocol.errors import ProtocolError
from sync_protocol.merge import MergeResult, RecordState, current_values, merge
from sync_protocol.ops import Op, is_tombstone

log = logging.getLogger(__name__)

#: The device id server-made ops (resolutions, duplicate clean-ups) carry.
SERVER_DEVICE: Final = "server"
#: Counter scope numbering server-made ops (their ``seq``).
SERVER_OP_SCOPE: Final = "server_ops"
#: Longest record id (a UUID is 36) and survey round the records table holds.
RECORD_ID_MAX: Final = 36
ROUND_MAX: Final = 40


def _text(zh: str, en: str) -> dict[str, str]:
    return {"zh": zh, "en": en}


def reason(code: str, zh: str, en: str, *, path: str = "", field_name: str = "") -> dict[str, Any]:
    """A rejection reason in the contracts §3 issue shape (for problems outside validation)."""
    return {
        "code": code,
        "path": path,
        "row": None,
        "field": field_name,
        "message": _text(zh, en),
        "severity": "error",
    }


# --- server-made ops -------------------------------------------------------------------------------

_clock_lock = threading.Lock()
# One node id per process: two app processes resolving in the same millisecond still never
# issue the same stamp.
_server_clock = HybridClock(f"server.{uuid.uuid4().hex[:8]}")


def server_stamp() -> str:
    """A fresh HLC stamp of this server process."""
    with _clock_lock:
        return _server_clock.now().to_text()


def next_server_seq() -> int:
    """The next sequence number of a server-made op (inside a write transaction)."""
    return next_revision(SERVER_OP_SCOPE)


# --- the outcome of one op ---------------------------------------------------------------------------


@dataclass
class RecordRow:
    """A record as the merge sees it: envelope columns, revision and merged state (a dict).

    ``state`` is ``RecordState.to_dict()`` with ``revision`` set; what devices receive.
    """

    record_id: str
    form_id: str
    form_version: int
    village_code: str
    county_code: str
    household_no: str
    round: str
    revision: int
    deleted: bool
    state: dict[str, Any]

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> RecordRow:
        """From the merge columns of a stored record."""
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass
class OpOutcome:
    """What :func:`apply_ops` did with one op: the contracts §7 ack, the record, warnings.

    ``record`` is the record after the op (or as it stands, for a rejected or duplicate op; None
    when no record exists). ``warnings`` are validation warnings of the merged record.
    ``quarantine_id`` is set when the op was kept in quarantine.
    """

    ack: dict[str, Any]
    record: RecordRow | None
    warnings: list[dict[str, Any]] = field(default_factory=list)
    quarantine_id: int | None = None
    suspect: bool = False
    #: The record's revision before the op (None: it did not exist), and whether the stored
    #: state is the op merged exactly as sent onto it (``sync_protocol.messages.LeanStates``).
    prior_revision: int | None = None
    exact: bool = False

    @property
    def status(self) -> str:
        """The ack status."""
        return str(self.ack["status"])


def _valid_household(household: Any) -> tuple[str, str] | None:
    if not isinstance(household, dict):
        return None
    village, number = household.get("village_code"), household.get("household_no")
    if not (isinstance(village, str) and len(village) == 12 and village.isdigit()):
        return None
    if not is_valid_household_no(number):
        return None
    return village, number


def _issue_keys(issues: list[Any]) -> set[tuple[str, str]]:
    return {(issue.code, issue.path) for issue in issues}


class _Rejected(Exception):
    """Internal: the op is rejected with ``reasons``, quarantined as ``kind`` (if any)."""

    def __init__(self, kind: str | None, reasons: list[dict[str, Any]]) -> None:
        super().__init__(kind)
        self.kind = kind
        self.reasons = reasons


class _Batch:
    """The records a batch of ops works on, and the writes it will make, kept in memory.

    Reads happen once up front (the records named by the ops, locked; the live records of the
    households new records claim), writes once at the end (:meth:`flush`), so a batch costs a
    handful of statements whatever its size.
    """

    def __init__(self, ops: list[Op]) -> None:
        self.rows = {
            rid: RecordRow.of(row)
            for rid, row in records.lock_states([op.record_id for op in ops]).items()
        }
        self.created: set[str] = set()
        self.changed: dict[str, dict[str, Any]] = {}
        self.changes: list[dict[str, Any]] = []
        self.households: dict[tuple[str, str], dict[str, Any]] = {}
        self.to_open: list[tuple[Any, RecordRow, str]] = []
        self.to_close: list[tuple[list[str], str, dict[str, Any] | None]] = []
        self._revisions: dict[str, tuple[int, int]] = {}
        self._remaining = len(ops)
        claims = [
            found
            for op in ops
            if op.record_id not in self.rows
            for found in [_valid_household(op.household)]
            if found is not None
        ]
        self.twins: dict[tuple[str, str, str, str], list[tuple[str, str]]] = {}
        for row in records.live_household_records(claims):
            created = RecordState.from_dict(row["state"]).created_stamp or ""
            key = (row["village_code"], row["household_no"], row["form_id"], row["round"])
            self.twins.setdefault(key, []).append((row["record_id"], created))

    def revision(self, county: str) -> int:
        """The next revision of ``county``, from a block reserved once per batch."""
        next_value, last = self._revisions.get(county, (1, 0))
        if next_value > last:
            # An op takes at most two: its record's and a new household's.
            size = 2 * max(self._remaining, 1)
            next_value = records.reserve_revisions(county, size)
            last = next_value + size - 1
        self._revisions[county] = (next_value + 1, last)
        return next_value

    def done_one(self) -> None:
        """One op of the batch is done (the next reservation can be smaller)."""
        self._remaining -= 1

    def flush(self, *, by: str, ctx: IngestContext) -> None:
        """Write everything the batch decided, in foreign-key order."""
        records.add_households(list(self.households.values()))
        new = [self.changed[rid] for rid in self.changed if rid in self.created]
        changed = [self.changed[rid] for rid in self.changed if rid not in self.created]
        records.write_records(new, changed)
        for conflict, row, device_id in self.to_open:
            plain = conflict.to_dict()
            conflict_store.open_conflict(
                conflict_id=conflict.conflict_id,
                record_id=row.record_id,
                village_code=row.village_code,
                kind=conflict.kind,
                path=conflict.path,
                base=plain["base"],
                mine=plain["mine"],
                theirs=plain["theirs"],
                device_id=device_id,
            )
        for ids, status, resolution in self.to_close:
            conflict_store.close_conflicts(ids, status=status, by=by, resolution=resolution)
        records.add_changes(self.changes)
        # A verification outcome worked on a tablet settles its task in this same transaction.
        tasks.record_outcomes(self.changed.values())
        # The dashboard's household rows change in this same transaction, once per batch.
        indicators.refresh_households(
            ((row["village_code"], row["household_no"]) for row in self.changed.values()),
            today=ctx.today,
            config=ctx.monitoring,
        )


def apply_op(
    op: Op,
    ctx: IngestContext,
    *,
    scope: str | None,
    by: str,
    keep_rejected: bool = True,
    user_id: int | None = None,
) -> OpOutcome:
    """:func:`apply_ops` for a single op."""
    return apply_ops([op], ctx, scope=scope, by=by, keep_rejected=keep_rejected, user_id=user_id)[0]


def apply_ops(
    ops: list[Op],
    ctx: IngestContext,
    *,
    scope: str | None,
    by: str,
    keep_rejected: bool = True,
    user_id: int | None = None,
) -> list[OpOutcome]:
    """Check, merge, validate and store ``ops`` in order; return one outcome (ack) per op.

    ``scope`` is the device's village-code prefix (None for server-made ops, whose area the
    caller checked). ``by`` names who closes the conflicts these ops resolve (audit name). With
    ``keep_rejected`` a rejected op is kept in quarantine. Must run inside a write transaction;
    nothing is committed here. Never raises for a bad op: rejections are acks.
    """
    batch = _Batch(ops)
    outcomes = []
    for op in ops:
        existing = batch.rows.get(op.record_id)
        try:
            outcome = _apply(op, ctx, batch, existing, scope=scope, user_id=user_id)
        except _Rejected as rejected:
            outcome = _rejection(op, existing, rejected, keep=keep_rejected)
        except StorageError:
            raise  # the transaction is broken (or busy): the whole batch fails and is retried
        except Exception:
            # A fault in the merge or the form engine on this op's data. Failing the batch would
            # fail it again on every retry and block the device; the op is kept for an admin.
            log.exception("op %s#%s could not be applied", op.device_id, op.seq)
            fault = _Rejected(
                quarantine.INVALID,
                [
                    reason(
                        "server_fault",
                        "服务器处理此操作时出错，已保留待管理员处理",
                        "the server failed on this op; it is kept for an administrator",
                    )
                ],
            )
            outcome = _rejection(op, existing, fault, keep=keep_rejected)
        batch.done_one()
        outcomes.append(outcome)
    batch.flush(by=by, ctx=ctx)
    return outcomes


def _rejection(op: Op, existing: RecordRow | None, rejected: _Rejected, *, keep: bool) -> OpOutcome:
    village = existing.village_code if existing is not None else ""
    if existing is None and op.household is not None:
        found = _valid_household(op.household)
        village = found[0] if found is not None else ""
    outcome = OpOutcome(
        ack={
            "seq": op.seq,
            "status": "rejected",
            "revision": 0,  # contracts §7: a rejected op made no revision
            "reasons": rejected.reasons,
        },
        record=existing,
    )
    if keep and rejected.kind is not None:
        row = quarantine.hold(
            kind=rejected.kind,
            op=_without_nul(op.to_dict()),
            reasons=rejected.reasons,
            device_id=op.device_id,
            op_seq=op.seq,
            village_code=village,
        )
        outcome.quarantine_id = row.id
    return outcome


def _has_nul(value: Any) -> bool:
    """True when a string anywhere in ``value`` (keys included) holds U+0000.

    PostgreSQL text and JSONB cannot store it; one such op would otherwise fail its whole batch
    on every retry.
    """
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        for key, item in value.items():
            # Texts inline: an op of a new record is dozens of them, checked for every op.
            if isinstance(key, str) and "\x00" in key:
                return True
            if type(item) is str:
                if "\x00" in item:
                    return True
            elif item is not None and _has_nul(item):
                return True
        return False
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def _without_nul(value: Any) -> Any:
    """``value`` with every U+0000 replaced by U+FFFD, so a refused op can still be kept."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


def _envelope(op: Op, existing: RecordRow | None, scope: str | None) -> tuple[str, str, str]:
    """The record's village, household number and round; raises :class:`_Rejected`."""
    # Column sizes the protocol does not bound as tightly: PostgreSQL would refuse the row and
    # with it the whole batch, on every retry.
    if len(op.record_id) > RECORD_ID_MAX or len(op.round or "") > ROUND_MAX or len(op.hlc) > 64:
        raise _Rejected(
            quarantine.INVALID,
            [
                reason(
                    "identifier_too_long",
                    f"记录编号最长{RECORD_ID_MAX}个字符，调查轮次最长{ROUND_MAX}个字符",
                    f"a record id has at most {RECORD_ID_MAX} characters, a round {ROUND_MAX}, "
                    "a clock stamp 64",
                )
            ],
        )
    if existing is not None:
        village, household_no, round_ = (
            existing.village_code,
            existing.household_no,
            existing.round,
        )
        claimed = _valid_household(op.household) if op.household is not None else None
        villages = {village} | ({claimed[0]} if claimed else set())
    else:
        if op.household is None:
            raise _Rejected(
                quarantine.INVALID,
                [
                    reason(
                        "household_required",
                        "新记录须注明所属农户（村代码和户编号）",
                        "a new record must name its household (village code and number)",
                    )
                ],
            )
        found = _valid_household(op.household)
        if found is None:
            raise _Rejected(
                quarantine.INVALID,
                [
                    reason(
                        "household_invalid",
                        "农户标识无效：村代码应为12位数字，户编号为字母、数字和连字符",
                        "household invalid: a 12-digit village code and a household number "
                        "of letters, digits and dashes",
                    )
                ],
            )
        village, household_no = found
        round_ = op.round or ""
        if op.round is not None and not is_valid_round(op.round):
            raise _Rejected(
                quarantine.INVALID,
                [
                    reason(
                        "round_invalid",
                        "调查轮次应为字母、数字、连字符或下划线，如 2026-annual",
                        "a survey round is letters, digits, '-' and '_', e.g. 2026-annual",
                    )
                ],
            )
        villages = {village}
    if scope is not None and not all(v.startswith(scope) for v in villages):
        outside = sorted(v for v in villages if not v.startswith(scope))[0]
        raise _Rejected(
            quarantine.OUT_OF_SCOPE,
            [
                reason(
                    "out_of_scope",
                    f"村 {outside} 不在本设备的范围 {scope} 内",
                    f"village {outside} is outside this device's scope {scope}",
                )
            ],
        )
    return village, household_no, round_


def _apply(
    op: Op,
    ctx: IngestContext,
    batch: _Batch,
    existing: RecordRow | None,
    *,
    scope: str | None,
    user_id: int | None,
) -> OpOutcome:
    if scope is not None and op.kind == "resolve":
        # Resolving is a reviewer's decision (county admin, township reviewer: the conflicts
        # API); a field device's resolve op would close a review conflict on its own say.
        raise _Rejected(
            None,
            [
                reason(
                    "resolve_not_permitted",
                    "冲突只能由县、乡镇审核人员处理，设备不能提交处理结果",
                    "only a county or township reviewer resolves conflicts; devices cannot",
                )
            ],
        )
    plain_op = op.to_dict()
    if _has_nul(plain_op):
        raise _Rejected(
            quarantine.INVALID,
            [
                reason(
                    "invalid_character",
                    "内容含有空字符（U+0000），无法保存",
                    "the op contains a NUL character (U+0000), which cannot be stored",
                )
            ],
        )
    village, household_no, round_ = _envelope(op, existing, scope)
    defn = definition(op.form_id, op.form_version)
    if defn is None:
        raise _Rejected(
            quarantine.UNKNOWN_FORM_VERSION,
            [
                reason(
                    "unknown_form_version",
                    f"服务器上没有已发布的表单 {op.form_id} 第{op.form_version}版",
                    f"form {op.form_id} version {op.form_version} is not published on this server",
                )
            ],
        )
    # The path "" names the record itself (a delete, or a resolution that keeps the record).
    unknown = [path for path in op.changes if path and defn.find_field(path) is None]
    if unknown:
        raise _Rejected(
            quarantine.INVALID,
            [
                reason(
                    "unknown_field",
                    f"表单 {op.form_id} 第{op.form_version}版没有字段 {path}",
                    f"form {op.form_id} version {op.form_version} has no field {path}",
                    path=path,
                    field_name=path.rpartition("/")[2],
                )
                for path in unknown
            ],
        )
    state = RecordState.from_dict(existing.state) if existing is not None else None
    # The state holds ID numbers in standard form; the op (the record's change log) keeps what
    # was typed (docs/protocol-merge.md §5, docs/forms.md).
    standard = standard_changes(defn, op.changes, ctx.today)
    merged_op = op if standard == op.changes else replace(op, changes=standard)
    try:
        result = merge(
            state,
            merged_op,
            defn.merge_policy,
            reference_ms=ctx.now_ms,
            max_drift_ms=ctx.max_drift_ms,
        )
    except ProtocolError as exc:
        raise _Rejected(
            quarantine.INVALID, [reason(exc.code, exc.message_zh, exc.message)]
        ) from None
    if result.status == "duplicate":
        return OpOutcome(
            ack={
                "seq": op.seq,
                "status": "duplicate",
                "revision": existing.revision if existing else 0,
            },
            record=existing,
            suspect=result.suspect,
        )
    data, warnings = _validated(result, state, ctx, village, op)
    duplicate = None
    county = records.county_of(village)
    if existing is None:
        key = (village, household_no, op.form_id, round_)
        duplicate = _duplicate_household(op, batch.twins.get(key, []))
        batch.twins.setdefault(key, []).append((op.record_id, result.state.created_stamp or op.hlc))
        batch.created.add(op.record_id)
        # A village-level task's outcome is filed under a 户编号 of its own (``task-<id>``):
        # not a household of the roster, so not one the households stream hands out.
        village_task = op.form_id == VERIFICATION_FORM and is_outcome_household_no(household_no)
        if (village, household_no) not in batch.households and not village_task:
            batch.households[(village, household_no)] = {
                "village_code": village,
                "household_no": household_no,
                "county_code": county,
                "revision": batch.revision(county),
                "created_by_device": op.device_id,
            }
    revision = batch.revision(county)
    result.state.revision = revision
    row = RecordRow(
        record_id=op.record_id,
        form_id=result.state.form_id,
        form_version=result.state.form_version,
        village_code=village,
        county_code=county,
        household_no=household_no,
        round=round_,
        revision=revision,
        deleted=result.state.deleted,
        state=result.state.to_dict(),
    )
    batch.rows[op.record_id] = row
    batch.changed[op.record_id] = {
        "record_id": row.record_id,
        "form_id": row.form_id,
        "form_version": row.form_version,
        "village_code": row.village_code,
        "county_code": row.county_code,
        "household_no": row.household_no,
        "round": row.round,
        "revision": row.revision,
        "deleted": row.deleted,
        "state": row.state,
        "data": data,
    }
    conflict_ids = _queue_conflicts(op, result, row, duplicate, batch)
    if conflict_ids:
        status = "conflict"
    else:
        status = "merged" if result.status == "conflict" else result.status
    batch.changes.append(
        {
            "record_id": row.record_id,
            "revision": revision,
            "kind": op.kind,
            "changes": plain_op["changes"],
            "outcome": {
                "status": status,
                "fields": result.field_outcomes,
                "suspect": result.suspect,
                "conflict_ids": conflict_ids,
                "closed_conflict_ids": result.closed_conflict_ids,
            },
            "device_id": op.device_id,
            "op_seq": op.seq,
            "user_id": user_id,
            "hlc": op.hlc,
        }
    )
    ack: dict[str, Any] = {"seq": op.seq, "status": status, "revision": revision}
    if conflict_ids:
        ack["conflict_ids"] = conflict_ids
    exact = (
        status == "applied"
        and merged_op is op
        and not result.suspect
        and not warnings
        and not result.closed_conflict_ids
        and (
            existing is None
            or (
                existing.form_version,
                existing.village_code,
                existing.household_no,
                existing.round,
                existing.deleted,
            )
            == (row.form_version, row.village_code, row.household_no, row.round, row.deleted)
        )
    )
    return OpOutcome(
        ack=ack,
        record=row,
        warnings=warnings,
        suspect=result.suspect,
        prior_revision=existing.revision if existing is not None else None,
        exact=exact,
    )


def record_data(state: RecordState) -> dict[str, Any]:
    """The merged record as nested data (contracts §3); raises ``forms.PathError`` for paths
    that do not form a record."""
    return unflatten(current_values(state))


def _validated(
    result: MergeResult,
    before: RecordState | None,
    ctx: IngestContext,
    village: str,
    op: Op,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The cleaned data and the warnings of the merged record; raises :class:`_Rejected` when
    the op brought new validation errors."""
    if result.state.deleted:
        return {}, []
    defn = definition(result.state.form_id, result.state.form_version) or definition(
        op.form_id, op.form_version
    )
    if defn is None:  # pragma: no cover - the op's own version was found just before
        raise _Rejected(quarantine.UNKNOWN_FORM_VERSION, [])
    evaluation = ctx.evaluation(village)
    try:
        checked = validate_record(defn, record_data(result.state), evaluation)
    except FormsError as exc:
        raise _Rejected(
            quarantine.INVALID, [reason(exc.code, exc.message_zh, exc.message)]
        ) from None
    errors = checked.errors
    if errors and before is not None and not before.deleted:
        try:
            earlier = validate_record(defn, record_data(before), evaluation).errors
        except FormsError:
            earlier = []
        known = _issue_keys(earlier)
        errors = [issue for issue in errors if (issue.code, issue.path) not in known]
    if errors:
        raise _Rejected(quarantine.INVALID, [issue.to_dict() for issue in errors])
    return checked.cleaned, [issue.to_dict() for issue in checked.warnings]


def _duplicate_household(op: Op, twins: list[tuple[str, str]]) -> Any:
    if not twins or op.household is None:
        return None
    existing = [
        (record_id, dict(op.household), op.form_id, op.round, created or op.hlc)
        for record_id, created in twins
    ]
    return detect_duplicate_household(existing, op)


def _plain(value: Any) -> Any:
    if is_tombstone(value):
        return {"$tombstone": True}
    return value


def _queue_conflicts(
    op: Op, result: MergeResult, row: RecordRow, duplicate: Any, batch: _Batch
) -> list[str]:
    """Queue the conflicts the op takes part in, close the ones it settled; return open ids."""
    ids: list[str] = []
    for conflict in [*result.conflicts, *([duplicate] if duplicate is not None else [])]:
        batch.to_open.append((conflict, row, op.device_id))
        ids.append(conflict.conflict_id)
    closed = list(result.closed_conflict_ids)
    if op.kind == "resolve" and op.conflict_id in closed:
        resolution = {"changes": {p: _plain(v) for p, v in op.changes.items()}, "hlc": op.hlc}
        batch.to_close.append(([op.conflict_id], conflict_store.RESOLVED, resolution))
        closed.remove(op.conflict_id)
    if closed:
        batch.to_close.append((closed, conflict_store.SUPERSEDED, None))
    return sorted(set(ids))
