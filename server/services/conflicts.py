"""The review queue for admins: list conflicts, compare base/mine/theirs, resolve.

A resolution is not a direct write: it becomes a server-made ``resolve`` op (for field and
delete conflicts) or ``delete`` op (the duplicate record of a household), merged through the
same path as device ops (:func:`server.services.record_ops.apply_op`). It therefore supersedes
every competing value, is validated against the form, lands in the record's history with a new
revision, and reaches every device in scope in its next download page. Every resolution is
audited. Out-of-area conflicts look absent (404), as for unknown ids.
"""

from __future__ import annotations

from typing import Any

from server.errors import Conflict, NotFound, Unprocessable, ValidationFailed
from server.services.access import COUNTY_ADMIN, Actor, Principal
from server.services.checking import definition, ingest_context
from server.services.masking import Sensitivity, mask_conflict
from server.services.record_ops import (
    SERVER_DEVICE,
    OpOutcome,
    apply_op,
    next_server_seq,
    server_stamp,
)
from server.storage import conflicts as store
from server.storage import records
from server.storage.conflicts import ConflictItem, ConflictRow
from server.storage.database import writing
from server.storage.records import StoredRecord
from sync_protocol.errors import ProtocolError
from sync_protocol.merge import RecordState, resolution
from sync_protocol.ops import TOMBSTONE, Op, delete_op, is_tombstone

#: The states a conflict can be in (the conflicts API filters by them).
STATUSES = store.STATUSES

DUPLICATE = "duplicate_household"
DELETE_KINDS = ("delete_edit", "row_delete_edit")


def _not_found(conflict_id: str) -> NotFound:
    return NotFound(
        en=f"no conflict {conflict_id} in your area",
        zh="未找到该冲突",
        code="conflict_not_found",
    )


def _check_prefix(prefix: str | None, field: str) -> str | None:
    if prefix and not (prefix.isascii() and prefix.isdigit() and len(prefix) <= 12):
        raise ValidationFailed(
            en=f"{field} must be an area code prefix (digits)",
            zh="地区代码前缀应为数字",
            details={"fields": {field: ["digits, at most 12"]}},
        )
    return prefix or None


def summary(row: ConflictRow) -> dict[str, Any]:
    """The list view of a conflict (no values: those are in :func:`show`)."""
    item = row.item
    return {
        "id": item.id,
        "record_id": item.record_id,
        "kind": item.kind,
        "path": item.path,
        "status": item.status,
        "village_code": item.village_code,
        "household_no": row.household_no,
        "form_id": row.form_id,
        "form_version": row.form_version,
        "round": row.round,
        "device_id": item.device_id,
        "created_at": item.created_at,
        "resolved_at": item.resolved_at,
        "resolved_by": item.resolved_by,
    }


def list_conflicts(
    principal: Principal,
    *,
    status: str | None = store.OPEN,
    village: str | None = None,
    form_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    """Conflicts of the caller's area, oldest first: ``{"items": [...], "total": n}``.

    Raises :class:`ValidationFailed` for a malformed village prefix or status.
    """
    if status is not None and status not in store.STATUSES:
        raise ValidationFailed(
            en=f"status must be one of {', '.join(store.STATUSES)}",
            zh="状态无效",
            details={"fields": {"status": list(store.STATUSES)}},
        )
    rows, total = store.list_conflicts(
        principal.area_prefix,
        status=status,
        village_prefix=_check_prefix(village, "village"),
        form_id=form_id,
        limit=limit,
        offset=offset,
    )
    return {"items": [summary(row) for row in rows], "total": total}


def show(principal: Principal, conflict_id: str) -> dict[str, Any]:
    """One conflict with the values to compare: ``base``, ``mine``, ``theirs``, ``candidates``.

    For an open field or delete conflict the values come from the record's current merged
    state (each candidate with its stamp, device and whether its clock was suspect); for a
    closed one, from what was stored when it was queued. Sensitive values are masked
    (``services.masking``) unless the caller is a county admin. Raises :class:`NotFound`.
    """
    row = store.conflict_in_area(conflict_id, principal.area_prefix)
    if row is None:
        raise _not_found(conflict_id)
    item = row.item
    out = summary(row)
    out.update(
        {
            "base": item.base,
            "mine": item.mine,
            "theirs": item.theirs,
            "candidates": [],
            "reason": "duplicate" if item.kind == DUPLICATE else None,
            "resolution": item.resolution,
            "label": _label(row.form_id, row.form_version, item.path),
        }
    )
    if item.kind == DUPLICATE:
        out["candidates"] = [
            {"record_id": side["record_id"], "stamp": side.get("created")}
            for side in (item.theirs, item.mine)
            if isinstance(side, dict)
        ]
    elif item.status == store.OPEN:
        record = records.get_record(item.record_id)
        live = RecordState.from_dict(record.state).conflict(item.id) if record else None
        if live is not None:
            plain = live.to_dict()
            out.update({k: plain[k] for k in ("base", "mine", "theirs", "candidates", "reason")})
    if principal.role != COUNTY_ADMIN:
        # The records API's rule: only a county admin sees whole ID numbers, phones, health.
        out = mask_conflict(Sensitivity(row.form_id), out)
    return out


def _label(form_id: str, version: int, path: str) -> dict[str, str] | None:
    defn = definition(form_id, version)
    found = defn.find_field(path) if defn is not None and path else None
    return found.label.to_dict() if found is not None else None


def resolve(actor: Actor, conflict_id: str, choice: dict[str, Any]) -> dict[str, Any]:
    """Resolve an open conflict of the actor's area; audited. Returns the resolved conflict.

    ``choice`` by kind:

    * ``field``: ``{"candidate": <stamp>}`` to keep one competing value, or ``{"value": v}`` to
      enter another (``null`` clears the field);
    * ``delete_edit`` / ``row_delete_edit``: ``{"action": "delete"}`` (delete after all) or
      ``{"action": "keep"}`` (keep the record or row with its edits);
    * ``duplicate_household``: ``{"keep": <record_id>}`` (the other record is deleted) or
      ``{"action": "keep_both"}``;

    and optionally ``"comment"``: the reviewer's reason, kept in the audit entry.

    Raises :class:`NotFound` (``conflict_not_found``), :class:`Conflict` (``conflict_not_open``:
    resolved or superseded meanwhile), :class:`ValidationFailed` (``resolution_choice_invalid``)
    for a choice that does not fit the conflict, and :class:`Unprocessable`
    (``resolution_invalid``, with ``details.reasons``) when the resolved record would fail its
    form's validation.
    """
    ctx = ingest_context()
    with writing():
        found = store.conflict_in_area(conflict_id, actor.area_prefix)
        if found is None:
            raise _not_found(conflict_id)
        # Records first, in the sorted order device batches use, then the queue row: a device
        # batch closing this conflict holds the record and then touches the row, so taking them
        # in the same order means the two wait for each other instead of deadlocking.
        records.lock_states([found.item.record_id, *_sides(found.item)])
        item = store.lock_conflict(conflict_id)
        if item is None:  # pragma: no cover - conflicts are never deleted without their record
            raise _not_found(conflict_id)
        if item.status != store.OPEN:
            raise Conflict(
                en=f"conflict {conflict_id} is already {item.status}",
                zh="该冲突已处理或已被新的修改取代",
                code="conflict_not_open",
                details={"status": item.status},
            )
        record = records.lock_record(item.record_id)
        if record is None:  # pragma: no cover - the foreign key keeps the record
            raise _not_found(conflict_id)
        if item.kind == DUPLICATE:
            detail = _resolve_duplicate(actor, item, choice, ctx)
        else:
            detail = _resolve_in_record(actor, item, record, choice, ctx)
        actor.audit(
            "conflict.resolve",
            target_type="conflict",
            target_id=conflict_id,
            area_code=item.village_code,
            details={
                "record_id": item.record_id,
                "kind": item.kind,
                "path": item.path,
                **detail,
                **_comment(choice),
            },
        )
    return {"id": conflict_id, "status": store.RESOLVED, "record_id": item.record_id, **detail}


def _comment(choice: dict[str, Any]) -> dict[str, str]:
    """The reviewer's note on a resolution (kept in the audit log), if one was given."""
    text = str(choice.get("comment") or "").strip()
    return {"comment": text[:500]} if text else {}


def _bad_choice(en: str, zh: str) -> ValidationFailed:
    return ValidationFailed(en=en, zh=zh, code="resolution_choice_invalid")


def _checked(outcome: OpOutcome) -> OpOutcome:
    if outcome.status == "rejected":
        raise Unprocessable(
            en="the resolution would leave the record invalid",
            zh="按此处理后记录无法通过校验",
            code="resolution_invalid",
            details={"reasons": outcome.ack["reasons"]},
        )
    return outcome


def _resolve_in_record(
    actor: Actor, item: ConflictItem, record: StoredRecord, choice: dict[str, Any], ctx: Any
) -> dict[str, Any]:
    state = RecordState.from_dict(record.state)
    conflict = state.conflict(item.id)
    if conflict is None:
        # The queue row is open but the merged state moved on; treat it as superseded.
        raise Conflict(
            en=f"conflict {item.id} was superseded by a newer edit",
            zh="该冲突已被新的修改取代",
            code="conflict_not_open",
        )
    detail: dict[str, Any]
    if conflict.kind == "field":
        if "candidate" in choice:
            picked = [c for c in conflict.candidates if c["stamp"] == choice["candidate"]]
            if not picked:
                raise _bad_choice(
                    "candidate must be the stamp of one competing value",
                    "所选值不在冲突候选中",
                )
            value = picked[0]["value"]
            detail = {"choice": "candidate", "candidate": choice["candidate"]}
        elif "value" in choice:
            value = choice["value"]
            detail = {"choice": "value"}
        else:
            raise _bad_choice("give candidate or value", "请选择候选值或输入新值")
    else:
        action = choice.get("action")
        if action not in ("delete", "keep"):
            raise _bad_choice('action must be "delete" or "keep"', "请选择删除或保留")
        value = TOMBSTONE if action == "delete" else None
        detail = {"choice": action}
    try:
        changes, base = resolution(state, item.id, {conflict.path: value})
        op = Op(
            device_id=SERVER_DEVICE,
            seq=next_server_seq(),
            record_id=record.record_id,
            form_id=state.form_id,
            form_version=state.form_version,
            household=None,
            round=None,
            kind="resolve",
            changes=changes,
            base=base,
            base_revision=record.revision,
            hlc=server_stamp(),
            conflict_id=item.id,
        )
    except ProtocolError as exc:
        raise _bad_choice(exc.message, exc.message_zh) from None
    outcome = _checked(
        apply_op(op, ctx, scope=None, by=actor.name, keep_rejected=False, user_id=actor.user_id)
    )
    detail["revision"] = outcome.ack["revision"]
    detail["deleted"] = is_tombstone(value)
    return detail


def _sides(item: ConflictItem) -> list[str]:
    """The record ids a duplicate-household conflict names (none for other kinds)."""
    if item.kind != DUPLICATE:
        return []
    return [
        str(side["record_id"])
        for side in (item.mine, item.theirs)
        if isinstance(side, dict) and "record_id" in side
    ]


def _resolve_duplicate(
    actor: Actor, item: ConflictItem, choice: dict[str, Any], ctx: Any
) -> dict[str, Any]:
    sides = _sides(item)
    if choice.get("action") == "keep_both":
        store.close_conflicts(
            [item.id], status=store.RESOLVED, by=actor.name, resolution={"keep_both": True}
        )
        # No record changes, yet devices must learn the conflict is closed: each record gets a
        # new revision (and a change-log entry) in this transaction, so it travels in the next
        # download page, which names the record's closed duplicate conflicts.
        revision = None
        for record_id in dict.fromkeys([item.record_id, *sides]):
            touched = records.touch_record(record_id)
            if touched is None:
                continue
            records.add_change(
                record_id=record_id,
                revision=touched.revision,
                kind="resolve",
                changes={},
                outcome={"status": "resolved", "conflict_id": item.id, "choice": "keep_both"},
                user_id=actor.user_id,
            )
            if record_id == item.record_id:
                revision = touched.revision
        return {"choice": "keep_both", "revision": revision}
    keep = choice.get("keep")
    if keep not in sides:
        raise _bad_choice(
            "keep must be one of the two record ids, or action keep_both",
            "请选择保留其中一条记录，或两条都保留",
        )
    drop = next(side for side in sides if side != keep)
    other = records.lock_record(drop)
    revision = None
    if other is not None and not other.deleted:
        state = RecordState.from_dict(other.state)
        op = delete_op(
            device_id=SERVER_DEVICE,
            seq=next_server_seq(),
            record_id=drop,
            form_id=state.form_id,
            form_version=state.form_version,
            base=state.delete_base(""),
            hlc=server_stamp(),
            base_revision=other.revision,
        )
        outcome = _checked(
            apply_op(op, ctx, scope=None, by=actor.name, keep_rejected=False, user_id=actor.user_id)
        )
        revision = outcome.ack["revision"]
    store.close_conflicts(
        [item.id],
        status=store.RESOLVED,
        by=actor.name,
        resolution={"keep": keep, "deleted": drop},
    )
    return {"choice": "keep", "keep": keep, "deleted_record": drop, "revision": revision}
