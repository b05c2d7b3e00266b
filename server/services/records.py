"""Records for admins: query, one record with its merged data and history, the quarantine.

Sensitive fields (the form's ``sensitive: true`` fields: ID numbers, phones, health) are masked
in lists for everyone and in a record's detail and history unless the caller is a county admin
(township reviewers check and resolve, they do not need whole ID numbers). Out-of-area ids look
absent (404), as for unknown ids.

Quarantine: ops the sync refused are kept whole with their reasons. A county admin can map an op
quarantined for an unknown form version to a published version: the op is re-run through the
normal merge with that version, and released when it applies.
"""

from __future__ import annotations

from typing import Any

from forms import FormsError, validate_record
from server.errors import Conflict, NotFound, Unprocessable, ValidationFailed, from_library_error
from server.services import indicators
from server.services.access import COUNTY_ADMIN, Actor, Principal
from server.services.checking import definition, ingest_context
from server.services.masking import Sensitivity, mask_data, mask_flat
from server.services.record_ops import apply_op
from server.storage import devices as device_store
from server.storage import quarantine, records
from server.storage.database import writing
from server.storage.quarantine import QuarantinedOp
from server.storage.records import RecordChange, StoredRecord
from sync_protocol.errors import ProtocolError
from sync_protocol.merge import RecordState
from sync_protocol.ops import Op


def masked_data(
    record: StoredRecord, *, reveal: bool, sensitive: Sensitivity | None = None
) -> dict[str, Any]:
    """The record's data, sensitive fields masked unless ``reveal`` (a field sensitive in any
    version of the form is masked: ``services.masking.Sensitivity``)."""
    if reveal:
        return dict(record.data)
    try:
        return mask_data(sensitive or Sensitivity(record.form_id), record.data)
    except FormsError:
        return {}


def _reveals(principal: Principal) -> bool:
    return principal.role == COUNTY_ADMIN


def summary(
    record: StoredRecord, *, reveal: bool = False, sensitive: Sensitivity | None = None
) -> dict[str, Any]:
    """The list view of a record (data masked unless ``reveal``)."""
    return {
        "record_id": record.record_id,
        "form_id": record.form_id,
        "form_version": record.form_version,
        "village_code": record.village_code,
        "household_no": record.household_no,
        "round": record.round,
        "revision": record.revision,
        "deleted": record.deleted,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "data": masked_data(record, reveal=reveal, sensitive=sensitive),
    }


def _check_prefix(prefix: str | None) -> str | None:
    if prefix and not (prefix.isascii() and prefix.isdigit() and len(prefix) <= 12):
        raise ValidationFailed(
            en="village must be an area code prefix (digits)",
            zh="村代码前缀应为数字",
            details={"fields": {"village": ["digits, at most 12"]}},
        )
    return prefix or None


def list_records(
    principal: Principal,
    *,
    village: str | None = None,
    form_id: str | None = None,
    round: str | None = None,
    household_no: str | None = None,
    include_deleted: bool = False,
    indicator: str | None = None,
    failing: bool | None = None,
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    """Records of the caller's area: ``{"items": [...], "total": n}`` (sensitive data masked).

    With ``indicator`` (``housing``, ``water``, ``education``, ``insurance``, ``income``) only
    records of households whose indicator the records decide — and with ``failing`` true/false,
    only those where it fails/passes — as the indicators dashboard computes it (for ``round``
    when given, else from each household's newest records).

    Raises :class:`ValidationFailed` for a malformed village prefix or an unknown indicator,
    or ``failing`` without ``indicator``.
    """
    households = None
    if indicator is not None:
        households = indicators.household_selection(
            principal, indicator, failing=failing, area=_check_prefix(village), round=round
        )
    elif failing is not None:
        raise ValidationFailed(
            en="failing needs an indicator",
            zh="failing 需要同时指定 indicator",
            details={"fields": {"failing": ["give indicator too"]}},
        )
    rows, total = records.list_records(
        principal.area_prefix,
        village_prefix=_check_prefix(village),
        form_id=form_id,
        round=round,
        household_no=household_no,
        include_deleted=include_deleted,
        households=households,
        limit=limit,
        offset=offset,
    )
    by_form: dict[str, Sensitivity] = {}  # one look at a form's versions per page
    for row in rows:
        if row.form_id not in by_form:
            by_form[row.form_id] = Sensitivity(row.form_id)
    items = [summary(row, sensitive=by_form[row.form_id]) for row in rows]
    return {"items": items, "total": total}


def _history_entry(entry: RecordChange, sensitive: Sensitivity, reveal: bool) -> dict:
    changes = entry.changes if reveal else mask_flat(sensitive, entry.changes)
    return {
        "revision": entry.revision,
        "kind": entry.kind,
        "device_id": entry.device_id,
        "op_seq": entry.op_seq,
        "user_id": entry.user_id,
        "hlc": entry.hlc,
        "changes": changes,
        "outcome": entry.outcome,
        "at": entry.at,
    }


def show(principal: Principal, record_id: str) -> dict[str, Any]:
    """One record: merged data, per-field merge status, warnings, open conflicts and history.

    A read: storage hands out the record's read model (:class:`~server.storage.records.
    RecordDetail`) in one call, the form's sensitivity is looked up once and applied to the data
    and the history in one walk each; nothing of the write path (``record_ops``) is involved.
    Raises :class:`NotFound` (``record_not_found``) for an unknown or out-of-area id.
    """
    detail = records.record_detail(record_id, principal.area_prefix)
    if detail is None:
        raise NotFound(
            en=f"no record {record_id} in your area", zh="未找到该记录", code="record_not_found"
        )
    record = detail.record
    reveal = _reveals(principal)
    defn = definition(record.form_id, record.form_version)
    state = RecordState.from_dict(record.state)
    fields = {}
    for path, view in state.fields.items():
        if not path:
            continue
        fields[path] = {
            "status": view.status,
            "stamp": view.stamp,
            "device": view.device,
            "suspect": any(w.suspect for w in state.heads(path)),
        }
    warnings: list[dict[str, Any]] = []
    if defn is not None and not record.deleted:
        checked = validate_record(
            defn, record.data, ingest_context().evaluation(record.village_code)
        )
        warnings = [issue.to_dict() for issue in checked.warnings]
    sensitive = Sensitivity(record.form_id)
    out = summary(record, reveal=reveal, sensitive=sensitive)
    out.update(
        {
            "fields": fields,
            "warnings": warnings,
            "open_conflicts": detail.open_conflicts,
            "history": [_history_entry(e, sensitive, reveal) for e in detail.history],
        }
    )
    return out


# --- quarantine ---------------------------------------------------------------------------------

#: What a quarantined op can be held for, and its two states: the values the records API accepts
#: as filters (named here so the API needs no storage import).
QUARANTINE_KINDS = quarantine.KINDS
QUARANTINE_HELD, QUARANTINE_RELEASED = quarantine.HELD, quarantine.RELEASED


def quarantine_entry(row: QuarantinedOp) -> dict[str, Any]:
    """The admin view of a quarantined op: the op as sent, its reasons, where it came from."""
    return {
        "id": row.id,
        "kind": row.kind,
        "status": row.status,
        "device_id": row.device_id,
        "op_seq": row.op_seq,
        "village_code": row.village_code,
        "received_at": row.received_at,
        "reasons": list(row.reasons.get("issues", [])),
        "resolution": row.reasons.get("resolution"),
        "op": row.op,
    }


def list_quarantine(
    principal: Principal,
    *,
    kind: str | None = None,
    status: str | None = quarantine.HELD,
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    """Quarantined ops of the caller's area, newest first: ``{"items": [...], "total": n}``."""
    rows, total = quarantine.list_held(
        principal.area_prefix, kind=kind, status=status, limit=limit, offset=offset
    )
    return {"items": [quarantine_entry(row) for row in rows], "total": total}


def map_quarantined(actor: Actor, item_id: int, form_version: int) -> dict[str, Any]:
    """Re-run a quarantined op as if it had been made on ``form_version`` of its form; audited.

    On success the op is merged like any device op (its device, sequence and stamp kept, and the
    device's scope still checked) and the quarantine entry is released; the answer carries the
    new ack. Raises :class:`NotFound`, :class:`Conflict` (``quarantine_not_held`` for a released
    entry), :class:`ValidationFailed` (``form_version_not_published``) and
    :class:`Unprocessable` (``quarantine_rerun_rejected`` with ``details.reasons``) when the
    re-run is rejected again (an out-of-scope op stays out of scope) — the entry then stays
    held with the new reasons.
    """
    ctx = ingest_context()
    with writing():
        row = quarantine.held_in_area(item_id, actor.area_prefix, lock=True)
        if row is None:
            raise NotFound(
                en=f"no quarantined op {item_id} in your area",
                zh="未找到该隔离操作",
                code="quarantine_not_found",
            )
        if row.status != quarantine.HELD:
            raise Conflict(
                en="this op was already released", zh="该操作已处理", code="quarantine_not_held"
            )
        form_id = str(row.op.get("form_id", ""))
        if definition(form_id, form_version) is None:
            raise ValidationFailed(
                en=f"form {form_id} has no published version {form_version}",
                zh=f"表单 {form_id} 没有已发布的第{form_version}版",
                code="form_version_not_published",
                details={"fields": {"form_version": ["a published version of the op's form"]}},
            )
        try:
            op = Op.from_dict({**row.op, "form_version": form_version})
        except ProtocolError as exc:
            raise from_library_error(exc, Unprocessable) from None
        # Re-run as the device that sent it: its scope still applies.
        sender = device_store.device_for_sync(row.device_id) if row.device_id else None
        scope = sender.scope if sender is not None else None
        outcome = apply_op(op, ctx, scope=scope, by=actor.name, keep_rejected=False)
        result = {"id": row.id, "status": row.status, "ack": outcome.ack}
        actor.audit(
            "quarantine.map",
            target_type="quarantine",
            target_id=str(row.id),
            area_code=row.village_code,
            details={
                "form_id": form_id,
                "from_version": row.op.get("form_version"),
                "to_version": form_version,
                "status": outcome.status,
            },
        )
        if outcome.status == "rejected":
            quarantine.update_reasons(row, outcome.ack["reasons"])
            failure = Unprocessable(
                en="the op is still rejected with that version",
                zh="改用该版本后操作仍被拒绝",
                code="quarantine_rerun_rejected",
                details={"reasons": outcome.ack["reasons"]},
            )
        else:
            row = quarantine.release(
                row,
                reasons={
                    **row.reasons,
                    "resolution": {
                        "form_version": form_version,
                        "ack": outcome.ack,
                        "by": actor.name,
                    },
                },
            )
            failure = None
            result["status"] = row.status
    if failure is not None:
        # Raised after the commit: the new reasons and the audit entry are kept.
        raise failure
    return result
