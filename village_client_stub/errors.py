"""Typed errors of the village device.

Every error the device library raises to its callers is a :class:`DeviceError` with a stable
machine ``code`` (snake_case, never changed once published), an English ``message`` and the
Chinese ``message_zh`` a field worker reads. The CLI prints exactly one line per error (Chinese,
then English) and never a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class DeviceError(Exception):
    """Base of every device error.

    Attributes:
        code: stable machine-readable code.
        message: English explanation.
        message_zh: Chinese explanation shown to the user.
    """

    code = "device_error"
    default_message = "device error"
    default_message_zh = "设备错误"

    def __init__(self, message: str | None = None, *, message_zh: str | None = None) -> None:
        self.message = message or type(self).default_message
        self.message_zh = message_zh or type(self).default_message_zh
        super().__init__(f"[{self.code}] {self.message}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape the CLI prints with ``--json``."""
        return {"code": self.code, "message": {"zh": self.message_zh, "en": self.message}}


class StoreNotFound(DeviceError):
    """No device store exists at the given path (run ``village-device init`` first)."""

    code = "store_not_found"
    default_message = "no device store here; run `village-device init` first"
    default_message_zh = "找不到设备数据文件，请先运行 village-device init"


class StoreExists(DeviceError):
    """``init`` was asked to create a store where one already exists."""

    code = "store_exists"
    default_message = "a device store already exists at this path"
    default_message_zh = "该位置已有设备数据文件"


class StoreCorrupt(DeviceError):
    """The file is not a device store this code can use (not SQLite, or a newer schema)."""

    code = "store_unusable"
    default_message = "the device store cannot be used"
    default_message_zh = "设备数据文件无法使用"


class UnknownForm(DeviceError):
    """The form (or that version of it) is not on this device."""

    code = "unknown_form"
    default_message = "this form is not on the device"
    default_message_zh = "设备上没有该表单"


class UnknownRecord(DeviceError):
    """No record or draft with that id is on this device."""

    code = "unknown_record"
    default_message = "no such record on this device"
    default_message_zh = "设备上没有该记录"


class BadAssignment(DeviceError):
    """A ``--set path=value`` (or a typed answer) cannot be understood for its field."""

    code = "bad_assignment"
    default_message = "the value cannot be set"
    default_message_zh = "无法设置该值"


class BadInput(DeviceError):
    """Input outside a form's fields: a malformed household id, unreadable JSON file, …"""

    code = "bad_input"
    default_message = "the input is not valid"
    default_message_zh = "输入无效"


class RecordInvalid(DeviceError):
    """The record fails validation; what was typed is kept as draft ``draft_id``.

    Attributes:
        draft_id: the draft holding the typed data (correct it with ``edit DRAFT_ID --set``).
        issues: the validation issues (contracts §3 shape), errors first.
    """

    code = "record_invalid"

    def __init__(
        self,
        draft_id: str,
        issues: Sequence[Mapping[str, Any]],
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """``labels`` maps an issue's path to its field's Chinese label, for the message."""
        self.draft_id = draft_id
        self.issues = [dict(issue) for issue in issues]
        self.labels = dict(labels or {})
        errors = [i for i in self.issues if i.get("severity", "error") == "error"]
        first = errors[0] if errors else {}
        text = first.get("message") or {}
        row = f"第{first['row']}行" if first.get("row") else ""
        label = self.labels.get(first.get("path") or "") or first.get("field") or ""
        where_zh = f"{row}「{label}」" if label else row
        where_en = first.get("path") or first.get("field") or "the record"
        super().__init__(
            f"{len(errors)} error(s), first at {where_en}: {text.get('en', '')}; "
            f"kept as draft {draft_id}",
            message_zh=f"有 {len(errors)} 处错误，{where_zh}：{text.get('zh', '')}；"
            f"已保存为草稿 {draft_id}",
        )

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["draft_id"] = self.draft_id
        body["issues"] = self.issues
        return body


class AckMismatch(DeviceError):
    """Acks that do not match the ops they claim to acknowledge; nothing was changed."""

    code = "ack_mismatch"
    default_message = "the acknowledgements do not match the sent ops"
    default_message_zh = "服务器确认与已发送的操作不一致"
