"""Offline record editing: ``fill`` a new record and ``edit`` an existing one, as sync ops.

Both validate on the device with the form engine (``forms.validation``), store the cleaned data
(derived values included) and queue one ``put`` op in the outbox through
:meth:`DeviceStore.queue_op`, so the record, the op sequence number and the HLC stamp change
together. Input that fails validation is never thrown away: it is kept as a *draft* with its
issues, and :class:`~village_client_stub.errors.RecordInvalid` names the draft so the user can
correct it with ``edit DRAFT_ID --set …``.

Paths follow contracts §4 (``forms.paths``). On the command line a repeat row may be named by its
id, a unique prefix of its id, ``#N`` (the N-th row, 1-based, in the record's order) or ``+N`` (a
new row created by this command; every ``+N`` with the same N is the same new row).

``base`` of each changed path is the stamp of the value the device last saw there: the stamp of
its own outstanding op that last wrote the path, else the server's stamp, else ``None``.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from forms.definition import Field, FieldType, FormDefinition
from forms.errors import FormsError
from forms.expressions import EvaluationContext
from forms.identity import is_valid_household_no, is_valid_round, scope_contains
from forms.indicators import MonitoringConfig
from forms.paths import ORDER_KEY, ROW_ID_KEY, flatten, split_path, unflatten
from forms.validation import standard_changes, validate_record
from sync_protocol.device import path_under
from sync_protocol.ops import TOMBSTONE, Op, delete_op, put_op
from village_client_stub.errors import (
    BadAssignment,
    BadInput,
    RecordInvalid,
    UnknownRecord,
)
from village_client_stub.store import DeviceStore, Draft, LocalRecord

__all__ = [
    "EditResult",
    "RecordEditor",
    "coerce_value",
    "default_round",
    "ensure_row_ids",
    "issue_labels",
    "parse_assignment",
    "parse_household",
]

_TRUE = {"true", "yes", "y", "1", "是", "对", "有"}
_FALSE = {"false", "no", "n", "0", "否", "不", "无", "没有"}
_LIST_SPLIT = re.compile(r"[,，、;；]")
_SHA_RE = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class EditResult:
    """What a successful ``fill`` or ``edit`` did.

    ``op`` is None when the edit changed nothing (nothing was queued).
    ``warnings`` are the validation warnings (contracts §3 issue shape).
    """

    record_id: str
    op: Op | None
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "record_id": self.record_id,
            "seq": self.op.seq if self.op else None,
            "paths": sorted(self.op.changes) if self.op else [],
            "warnings": self.warnings,
        }


def default_round(today: date) -> str:
    """The survey round used when none is given: the annual check of ``today``'s year."""
    return f"{today.year}-annual"


def parse_household(text: str) -> dict[str, str]:
    """Parse ``VILLAGECODE/HOUSEHOLDNO`` (12-digit village code, household number as given).

    Raises:
        BadInput: not of that shape.
    """
    code, sep, number = unicodedata.normalize("NFKC", text).strip().partition("/")
    if not sep or not re.fullmatch(r"\d{12}", code) or not is_valid_household_no(number.strip()):
        raise BadInput(
            f"household must be VILLAGECODE/HOUSEHOLDNO (12-digit code, household number of "
            f"letters, digits and dashes), got {text!r}",
            message_zh=f"户编号格式应为“12位行政村代码/户编号”（户编号为字母、数字和连字符），收到 {text!r}",
        )
    return {"village_code": code, "household_no": number.strip()}


def parse_assignment(text: str) -> tuple[str, str]:
    """Split ``path=value`` at the first ``=``.

    Raises:
        BadAssignment: no ``=`` or an empty path.
    """
    path, sep, value = text.partition("=")
    if not sep or not path.strip():
        raise BadAssignment(
            f"expected path=value, got {text!r}", message_zh=f"应写成 字段=值，收到 {text!r}"
        )
    return path.strip(), value


def _label(fld: Field) -> str:
    return fld.label.zh if fld.label is not None else fld.name


def _bad(fld: Field, text: str, want_en: str, want_zh: str) -> BadAssignment:
    return BadAssignment(
        f"{fld.name}: {want_en}, got {text!r}",
        message_zh=f"「{_label(fld)}」{want_zh}，收到 {text!r}",
    )


def _choice_value(defn: FormDefinition, fld: Field, text: str) -> str:
    choices = defn.choices_of(fld)
    for choice in choices:
        if text == choice.value or text == choice.label.zh:
            return choice.value
    allowed = "、".join(
        c.value if c.value == c.label.zh else f"{c.value}({c.label.zh})" for c in choices
    )
    raise _bad(fld, text, f"one of {[c.value for c in choices]}", f"应为以下之一：{allowed}")


def coerce_value(
    defn: FormDefinition, fld: Field, text: str, *, store: DeviceStore | None = None
) -> Any:
    """Turn typed text into the field's value (contracts §3); empty text clears the field.

    Full-width digits and punctuation are normalised; select answers accept the value or the
    Chinese label; booleans accept 是/否, yes/no, true/false, 1/0; an image takes a file path
    (registered as an attachment in ``store``) or a ``sha256:`` address.

    Raises:
        BadAssignment: the text does not fit the field's type, or the field cannot be set
            (repeat, note, calculated).
    """
    if fld.type in (FieldType.REPEAT, FieldType.NOTE, FieldType.CALCULATE) or fld.calculate:
        raise BadAssignment(
            f"{fld.name} cannot be set directly",
            message_zh=f"「{_label(fld)}」不能直接填写"
            + ("（重复组请用 行/字段 路径）" if fld.type is FieldType.REPEAT else "（自动计算）"),
        )
    raw = text
    text = unicodedata.normalize("NFKC", text).strip()
    if text == "":
        return None
    kind = fld.type
    if kind is FieldType.TEXT:
        return raw.strip()
    if kind is FieldType.INTEGER:
        try:
            return int(text.replace(",", ""))
        except ValueError:
            raise _bad(fld, raw, "a whole number", "应为整数") from None
    if kind is FieldType.DECIMAL:
        try:
            number = float(text.replace(",", ""))
        except ValueError:
            raise _bad(fld, raw, "a number", "应为数字") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise _bad(fld, raw, "a finite number", "应为有效数字")
        return int(number) if number.is_integer() and "." not in text else number
    if kind is FieldType.DATE:
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            raise _bad(fld, raw, "a date YYYY-MM-DD", "应为日期，格式 YYYY-MM-DD") from None
    if kind is FieldType.BOOLEAN:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise _bad(fld, raw, "yes or no", "应为 是 或 否")
    if kind is FieldType.SELECT_ONE:
        return _choice_value(defn, fld, text)
    if kind is FieldType.SELECT_MULTIPLE:
        parts = [p.strip() for p in _LIST_SPLIT.split(text) if p.strip()]
        values: list[str] = []
        for part in parts:
            value = _choice_value(defn, fld, part)
            if value not in values:
                values.append(value)
        return values
    if kind is FieldType.GEOPOINT:
        try:
            numbers = [float(p) for p in _LIST_SPLIT.split(text) if p.strip()]
        except ValueError:
            numbers = []
        if len(numbers) not in (2, 3, 4):
            raise _bad(fld, raw, "lat,lon[,alt[,accuracy]]", "应为 纬度,经度[,海拔[,精度]]")
        point: dict[str, float] = {"lat": numbers[0], "lon": numbers[1]}
        if len(numbers) > 2:
            point["alt"] = numbers[2]
        if len(numbers) > 3:
            point["accuracy"] = numbers[3]
        return point
    if kind is FieldType.IMAGE:
        if _SHA_RE.fullmatch(text):
            return text
        if store is None:
            raise _bad(fld, raw, "a sha256: address", "应为 sha256: 地址")
        return store.add_attachment(Path(raw.strip()))
    return raw


def ensure_row_ids(defn: FormDefinition, data: Mapping[str, Any]) -> dict[str, Any]:
    """Copy ``data`` giving every repeat row without an ``_id`` a fresh UUID (made on the device)."""
    return _with_row_ids(defn.fields, data)


def _with_row_ids(fields: Sequence[Field], data: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(data)
    for fld in fields:
        rows = out.get(fld.name)
        if fld.is_repeat and isinstance(rows, list):
            fixed = []
            for row in rows:
                if isinstance(row, Mapping):
                    row = _with_row_ids(fld.fields, row)
                    if not row.get(ROW_ID_KEY):
                        row[ROW_ID_KEY] = str(uuid.uuid4())
                fixed.append(row)
            out[fld.name] = fixed
    return out


def issue_labels(defn: FormDefinition, issues: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Map each issue's path to the Chinese label of the field it names (for messages)."""
    labels: dict[str, str] = {}
    for issue in issues:
        path = issue.get("path") or ""
        fld = defn.find_field(path) if path else None
        if fld is not None and fld.label is not None:
            labels[path] = fld.label.zh
    return labels


def _issue_dicts(items: Iterable[Any]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        if hasattr(item, "to_dict"):
            out.append(dict(item.to_dict()))
        else:
            out.append(dict(item))
    return out


class RecordEditor:
    """Validates and queues record changes on one device store.

    ``today`` fixes the date expressions see (``today()``); default: the real date.
    """

    def __init__(self, store: DeviceStore, *, today: date | None = None) -> None:
        self.store = store
        self.today = today or date.today()

    # --- validation ------------------------------------------------------------------------

    def context(self, household: Mapping[str, str] | None) -> EvaluationContext:
        """The evaluation context: today and the configuration for the household's village.

        Plain configuration keys apply everywhere; a ``monitoring`` entry (the county's
        :class:`forms.indicators.MonitoringConfig` mapping) adds the values for the village
        and year (monitoring line, water region type).
        """
        config = self.store.config()
        values = {k: v for k, v in config.items() if k != "monitoring"}
        if "monitoring" in config and household:
            try:
                monitoring = MonitoringConfig.from_mapping(config["monitoring"])
                values.update(
                    monitoring.evaluation_config(household["village_code"], self.today.year)
                )
            except FormsError:
                pass  # a bad stored config must not block data entry; the server re-validates
        return EvaluationContext(today=self.today, config=values)

    def validate(
        self, defn: FormDefinition, data: Mapping[str, Any], household: Mapping[str, str] | None
    ) -> tuple[bool, list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        """Validate ``data``: (ok, errors, warnings, cleaned data)."""
        result = validate_record(defn, data, self.context(household))
        return (
            bool(result.ok),
            _issue_dicts(result.errors),
            _issue_dicts(result.warnings),
            dict(result.cleaned),
        )

    # --- fill ------------------------------------------------------------------------------

    def resolve_household(
        self, defn: FormDefinition, data: Mapping[str, Any], household: Mapping[str, str] | None
    ) -> dict[str, str] | None:
        """The household of a new record: the one given, else the record's own code fields.

        Raises:
            BadInput: given and in the data, but different; or a household number not of
                ``forms.identity.HOUSEHOLD_NO_PATTERN``'s shape (the server refuses it too).
        """
        own_code, own_no = data.get("village_code"), data.get("household_no")
        for number in (own_no, household and household.get("household_no")):
            if number and not is_valid_household_no(number):
                raise BadInput(
                    f"a household number is letters, digits and dashes, got {number!r}",
                    message_zh=f"户编号应为字母、数字和连字符，收到 {number!r}",
                )
        if household is not None:
            if (own_code and own_code != household["village_code"]) or (
                own_no and own_no != household["household_no"]
            ):
                raise BadInput(
                    "the household given differs from the one in the record",
                    message_zh="指定的户与记录中填写的户不一致",
                )
            return dict(household)
        if isinstance(own_code, str) and isinstance(own_no, str) and own_code and own_no:
            return {"village_code": own_code, "household_no": own_no}
        return None

    def check_scope(self, household: Mapping[str, str] | None) -> None:
        """Refuse a household outside the device's enrolled scope (the server would too).

        Raises:
            BadInput: the device is enrolled for a scope that does not contain the household.
        """
        scope = self.store.identity().scope
        if scope and household and not scope_contains(scope, household["village_code"]):
            raise BadInput(
                f"household {household['village_code']}/{household['household_no']} is outside "
                f"this device's scope {scope}",
                message_zh=f"户 {household['village_code']}/{household['household_no']} "
                f"不在本设备的数据范围 {scope} 内",
            )

    def fill(
        self,
        form_id: str,
        data: Mapping[str, Any],
        *,
        household: Mapping[str, str] | None = None,
        round: str | None = None,
        form_version: int | None = None,
        draft_id: str | None = None,
        record_id: str | None = None,
    ) -> EditResult:
        """Create a new record from ``data`` and queue its ``put`` op (every base ``None``).

        ``record_id``: the id of the new record when it is derived rather than random (a
        verification task's outcome, ``forms.verification.outcome_record_id``).

        Raises:
            UnknownForm: the form is not on the device.
            BadInput: the household is missing for a household form, or contradicts the data.
            RecordInvalid: validation failed; the data is kept as a draft (``draft_id`` reused).
        """
        defn = self.store.form(form_id, form_version)
        data = ensure_row_ids(defn, data)
        round = round or default_round(self.today)
        if not is_valid_round(round):
            raise BadInput(
                f"a survey round is letters, digits, '-' and '_' (e.g. 2026-annual), got {round!r}",
                message_zh=f"调查轮次应为字母、数字、连字符或下划线（如 2026-annual），收到 {round!r}",
            )
        try:
            household = self.resolve_household(defn, data, household)
        except BadInput:
            self._keep_draft(defn, data, [], None, round, None, draft_id)
            raise
        self.check_scope(household)
        ok, errors, warnings, cleaned = self.validate(defn, data, household)
        if ok and household is None and defn.subject == "household":
            ok = False
            errors = [_household_issue()]
        if not ok:
            kept = self._keep_draft(defn, data, errors, household, round, None, draft_id)
            raise RecordInvalid(kept, errors + warnings, issue_labels(defn, errors + warnings))
        twins = self._same_household_records(defn.id, household, round)
        if twins:
            warnings = [*warnings, _duplicate_issue(twins)]
        record_id = record_id or str(uuid.uuid4())
        changes = self._as_typed(
            defn, {p: v for p, v in flatten(cleaned).items() if v is not None}, data
        )
        if not changes:
            kept = self._keep_draft(defn, data, [_empty_issue()], household, round, None, draft_id)
            raise RecordInvalid(kept, [_empty_issue()])
        store = self.store
        op = store.queue_op(
            lambda seq, stamp: put_op(
                device_id=store.device_id,
                seq=seq,
                record_id=record_id,
                form_id=defn.id,
                form_version=defn.version,
                changes=changes,
                base=dict.fromkeys(changes),
                hlc=stamp,
                base_revision=0,
                household=household,
                round=round,
            ),
            record={
                "record_id": record_id,
                "form_id": defn.id,
                "form_version": defn.version,
                "household": household,
                "round": round,
                "data": cleaned,
            },
            draft_id=draft_id,
        )
        return EditResult(record_id, op, warnings)

    def _as_typed(
        self, defn: FormDefinition, changes: Mapping[str, Any], typed: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The op's changes with each ID number as the person typed it (``５３０１…ｘ``).

        The record keeps the standard form validation made of it; the op is the field history
        and keeps what was typed. The server stores the standard form in its state
        (``forms.validation.standard_changes``), so both sides hold the same value.
        """
        typed_flat = flatten(typed)
        out = dict(changes)
        for path, value in changes.items():
            raw = typed_flat.get(path)
            if not isinstance(raw, str) or raw == value:
                continue
            if standard_changes(defn, {path: raw}, self.today)[path] == value:
                out[path] = raw
        return out

    def _same_household_records(
        self, form_id: str, household: Mapping[str, str] | None, round: str | None
    ) -> list[str]:
        """Ids of live records of this form, household and round already on the device."""
        if household is None:
            return []
        return [
            r.record_id
            for r in self.store.records(form_id=form_id)
            if r.household == dict(household) and r.round == round
        ]

    def _keep_draft(
        self,
        defn: FormDefinition,
        data: Mapping[str, Any],
        issues: Sequence[Mapping[str, Any]],
        household: Mapping[str, str] | None,
        round: str | None,
        record_id: str | None,
        draft_id: str | None,
    ) -> str:
        return self.store.save_draft(
            form_id=defn.id,
            form_version=defn.version,
            data=data,
            issues=issues,
            household=household,
            round=round,
            record_id=record_id,
            draft_id=draft_id,
        )

    # --- edit ------------------------------------------------------------------------------

    def edit(
        self, target: str, assignments: Sequence[str] = (), deletions: Sequence[str] = ()
    ) -> EditResult:
        """Apply ``path=value`` assignments and row deletions to a record or a draft.

        ``target`` is a record id (or a unique prefix of one) or a draft id. A draft of a new
        record becomes a record once it validates; a draft of an edit becomes that edit.

        Raises:
            UnknownRecord: no record or draft matches ``target``.
            BadAssignment: a path names no field, a row does not exist, or a value does not fit.
            RecordInvalid: the result fails validation; it is kept as a draft.
        """
        draft = self.store.draft(target)
        if draft is not None:
            return self._edit_draft(draft, assignments, deletions)
        record = self.store.find_record(target)
        if record.deleted:
            raise UnknownRecord(
                f"record {record.record_id} was deleted", message_zh="该记录已被删除"
            )
        defn = self.store.form(record.form_id, record.form_version)
        new_data = self._apply(defn, record.data, assignments, deletions)
        return self._commit_edit(defn, record, new_data, draft_id=None)

    def replace_data(self, record_id: str, data: Mapping[str, Any]) -> EditResult:
        """Make a record's data ``data`` (fields absent from it are cleared), as one edit.

        Raises:
            UnknownRecord: no such record, or it was deleted.
            RecordInvalid: the result fails validation; it is kept as a draft.
        """
        record = self.store.record(record_id)
        if record.deleted:
            raise UnknownRecord(
                f"record {record.record_id} was deleted", message_zh="该记录已被删除"
            )
        defn = self.store.form(record.form_id, record.form_version)
        return self._commit_edit(defn, record, dict(data), draft_id=None)

    def _edit_draft(
        self, draft: Draft, assignments: Sequence[str], deletions: Sequence[str]
    ) -> EditResult:
        defn = self.store.form(draft.form_id, draft.form_version)
        new_data = self._apply(defn, draft.data, assignments, deletions)
        if draft.record_id is None:
            return self.fill(
                draft.form_id,
                new_data,
                household=draft.household,
                round=draft.round,
                form_version=draft.form_version,
                draft_id=draft.draft_id,
            )
        record = self.store.record(draft.record_id)
        return self._commit_edit(defn, record, new_data, draft_id=draft.draft_id)

    def _apply(
        self,
        defn: FormDefinition,
        data: Mapping[str, Any],
        assignments: Sequence[str],
        deletions: Sequence[str],
    ) -> dict[str, Any]:
        flat = flatten(ensure_row_ids(defn, data))
        new_rows: dict[tuple[str, str], str] = {}
        for text in assignments:
            raw_path, value_text = parse_assignment(text)
            path = self._resolve_path(defn, flat, raw_path, new_rows)
            fld = defn.find_field(path)
            if fld is None or path.endswith("/" + ORDER_KEY):
                raise BadAssignment(
                    f"form {defn.key} has no field {raw_path!r}",
                    message_zh=f"表单 {defn.title.zh} 中没有字段 {raw_path}",
                )
            flat[path] = coerce_value(defn, fld, value_text, store=self.store)
        for raw_path in deletions:
            path = self._resolve_path(defn, flat, raw_path, new_rows)
            segments = split_path(path)
            if len(segments) % 2 != 0:
                raise BadAssignment(
                    f"{raw_path!r} is not a repeat row", message_zh=f"{raw_path} 不是重复组的一行"
                )
            flat = {p: v for p, v in flat.items() if not path_under(p, path)}
        return unflatten(flat)

    def _resolve_path(
        self,
        defn: FormDefinition,
        flat: dict[str, Any],
        raw_path: str,
        new_rows: dict[tuple[str, str], str],
    ) -> str:
        """Replace ``#N``, ``+N`` and id prefixes in row positions with real row ids."""
        try:
            segments = split_path(raw_path)
        except FormsError:
            raise BadAssignment(
                f"malformed path {raw_path!r}", message_zh=f"字段路径格式错误：{raw_path}"
            ) from None
        resolved: list[str] = []
        for index, segment in enumerate(segments):
            if index % 2 == 0:
                resolved.append(segment)
                continue
            repeat_path = "/".join(resolved)
            fld = defn.find_field(repeat_path)
            if fld is None or not fld.is_repeat:
                raise BadAssignment(
                    f"{repeat_path!r} is not a repeat group",
                    message_zh=f"{repeat_path} 不是重复组",
                )
            resolved.append(self._row_id(flat, repeat_path, segment, new_rows))
        return "/".join(resolved)

    @staticmethod
    def _row_id(
        flat: dict[str, Any], repeat_path: str, token: str, new_rows: dict[tuple[str, str], str]
    ) -> str:
        prefix = repeat_path + "/"
        orders = {
            p[len(prefix) : -len("/" + ORDER_KEY)]: v
            for p, v in flat.items()
            if p.startswith(prefix)
            and p.endswith("/" + ORDER_KEY)
            and p.count("/") == repeat_path.count("/") + 2
        }
        ordered = sorted(orders, key=lambda r: (orders[r], r))
        if token.startswith("+") and token[1:].isdigit():
            key = (repeat_path, token)
            if key not in new_rows:
                row_id = str(uuid.uuid4())
                flat[f"{prefix}{row_id}/{ORDER_KEY}"] = (
                    max((o for o in orders.values() if isinstance(o, int | float)), default=-1) + 1
                )
                new_rows[key] = row_id
            return new_rows[key]
        if token.startswith("#") and token[1:].isdigit():
            number = int(token[1:])
            if not 1 <= number <= len(ordered):
                raise BadAssignment(
                    f"{repeat_path} has {len(ordered)} rows, no row {token}",
                    message_zh=f"{repeat_path} 只有 {len(ordered)} 行，没有第 {number} 行",
                )
            return ordered[number - 1]
        matches = [r for r in ordered if r == token] or [r for r in ordered if r.startswith(token)]
        if len(matches) != 1:
            raise BadAssignment(
                f"no single row of {repeat_path} matches {token!r}",
                message_zh=f"{repeat_path} 中找不到唯一匹配 {token} 的行",
            )
        return matches[0]

    def _commit_edit(
        self,
        defn: FormDefinition,
        record: LocalRecord,
        new_data: Mapping[str, Any],
        *,
        draft_id: str | None,
    ) -> EditResult:
        ok, errors, warnings, cleaned = self.validate(defn, new_data, record.household)
        if not ok:
            kept = self._keep_draft(
                defn,
                new_data,
                errors,
                record.household,
                record.round,
                record.record_id,
                draft_id,
            )
            raise RecordInvalid(kept, errors + warnings, issue_labels(defn, errors + warnings))
        old = flatten(record.data)
        new = flatten(cleaned)
        deleted_rows = self._deleted_rows(old, new)
        changes: dict[str, Any] = {row: TOMBSTONE for row in deleted_rows}
        stable = _order_kept(old, new)
        for path in sorted(set(old) | set(new)):
            if any(path_under(path, row) for row in deleted_rows) or path in stable:
                continue
            if old.get(path) != new.get(path):
                changes[path] = new.get(path)
        changes = self._as_typed(defn, changes, new_data)
        # A rejected op never reached the server: its paths go out again with this correction.
        changes, corrected = self.store.engine.resend_rejected(
            record.record_id, changes, new, deleted_rows
        )
        if not changes:
            if draft_id is not None:
                self.store.delete_draft(draft_id)
            return EditResult(record.record_id, None, warnings)
        base = self.store.engine.put_base(record.record_id, changes, old)
        store = self.store
        op = store.queue_op(
            lambda seq, stamp: put_op(
                device_id=store.device_id,
                seq=seq,
                record_id=record.record_id,
                form_id=record.form_id,
                form_version=record.form_version,
                changes=changes,
                base=base,
                hlc=stamp,
                base_revision=record.server_revision,
                household=record.household,
                round=record.round,
            ),
            record={
                "record_id": record.record_id,
                "form_id": record.form_id,
                "form_version": record.form_version,
                "household": record.household,
                "round": record.round,
                "data": cleaned,
            },
            corrects=corrected,
            draft_id=draft_id,
        )
        return EditResult(record.record_id, op, warnings)

    def delete(self, target: str) -> EditResult:
        """Delete a whole record: queue a ``delete`` op whose base lists every path seen.

        The record is kept locally, marked deleted, until the server's state says otherwise
        (a delete racing an unseen edit becomes a conflict there).

        Raises:
            UnknownRecord: no record matches ``target``, or it is already deleted.
        """
        record = self.store.find_record(target)
        if record.deleted:
            raise UnknownRecord(
                f"record {record.record_id} is already deleted", message_zh="该记录已被删除"
            )
        base = self.store.engine.delete_base(record.record_id, flatten(record.data))
        store = self.store
        op = store.queue_op(
            lambda seq, stamp: delete_op(
                device_id=store.device_id,
                seq=seq,
                record_id=record.record_id,
                form_id=record.form_id,
                form_version=record.form_version,
                base=base,
                hlc=stamp,
                base_revision=record.server_revision,
            ),
            record={
                "record_id": record.record_id,
                "form_id": record.form_id,
                "form_version": record.form_version,
                "household": record.household,
                "round": record.round,
                "data": record.data,
                "deleted": True,
            },
        )
        return EditResult(record.record_id, op, [])

    @staticmethod
    def _deleted_rows(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
        """Row paths present before and gone now (outermost only)."""

        def rows(flat: Mapping[str, Any]) -> set[str]:
            return {p[: -len("/" + ORDER_KEY)] for p in flat if p.endswith("/" + ORDER_KEY)}

        gone = sorted(rows(old) - rows(new))
        return [r for r in gone if not any(r != o and path_under(r, o) for o in gone)]


def _order_kept(old: Mapping[str, Any], new: Mapping[str, Any]) -> set[str]:
    """``_order`` paths of surviving rows whose relative order did not change.

    ``flatten`` numbers rows 0, 1, 2 … so deleting a row renumbers the rows after it; sending
    those renumberings would turn every delete into writes on other rows. Only a real reordering
    of existing rows is sent.
    """
    suffix = "/" + ORDER_KEY
    by_repeat: dict[str, list[str]] = {}
    for path in old:
        if path.endswith(suffix) and path in new:
            repeat = path[: -len(suffix)].rpartition("/")[0]
            by_repeat.setdefault(repeat, []).append(path)
    kept: set[str] = set()
    for paths in by_repeat.values():
        before = sorted(paths, key=lambda p: (old[p], p))
        after = sorted(paths, key=lambda p: (new[p], p))
        if before == after:
            kept.update(paths)
    return kept


def _household_issue() -> dict[str, Any]:
    return {
        "code": "household_required",
        "path": "",
        "row": None,
        "field": None,
        "message": {
            "zh": "请指定户：--household 行政村代码/户编号",
            "en": "give the household: --household VILLAGECODE/HOUSEHOLDNO",
        },
        "severity": "error",
    }


def _duplicate_issue(record_ids: Sequence[str]) -> dict[str, Any]:
    """A warning (never a refusal): the household already has this form for the round here."""
    ids = "、".join(record_ids)
    return {
        "code": "duplicate_household",
        "path": "",
        "row": None,
        "field": None,
        "message": {
            "zh": f"该户本轮已有此表的记录（{ids}），同步后将作为重复记录交审核员处理",
            "en": f"this household already has a record of this form and round ({', '.join(record_ids)}); "
            "the server will hold both for review as a duplicate",
        },
        "severity": "warning",
    }


def _empty_issue() -> dict[str, Any]:
    return {
        "code": "empty_record",
        "path": "",
        "row": None,
        "field": None,
        "message": {"zh": "记录是空的，没有填写任何内容", "en": "the record is empty"},
        "severity": "error",
    }
