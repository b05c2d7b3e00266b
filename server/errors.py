"""The server's one error model: named exceptions with stable codes, one JSON body.

Every error leaves the server as::

    {"error": {"code": "enrollment_code_expired",
               "message": {"zh": "…", "en": "…"},
               "details": {…}}}

``code`` is stable (clients branch on it) and registered in :data:`ERROR_CODES` with its HTTP
status and default bilingual message (the registry is exported in the OpenAPI document as
``x-error-codes``); ``message`` is for people, Chinese and English apart; ``details`` carries
machine-readable context (per-field messages for validation, located issues for a form
definition). Services raise these classes (one base, :class:`ApiError`, built as
``Cls(en, zh, code=..., details=...)``); :mod:`server.http_errors` is the one place that turns
them — and Flask's own 404/405/500, oversized bodies and a busy database — into HTTP responses.

This module is the catalogue only: no Flask, no database library, so services (which raise
these) run without either.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from server.storage.errors import is_busy
from sync_protocol.errors import ProtocolError, Replayed, UnknownSender

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErrorCode:
    """One registered error code: the HTTP status it answers with and its default message."""

    code: str
    status: int
    zh: str
    en: str

    def as_dict(self) -> dict[str, Any]:
        """The code as the OpenAPI document lists it."""
        return {"code": self.code, "status": self.status, "message": {"zh": self.zh, "en": self.en}}


#: Every stable error code a client can meet, by code. Never rename or remove one.
ERROR_CODES: dict[str, ErrorCode] = {}


def register_code(code: str, status: int, zh: str, en: str) -> ErrorCode:
    """Add ``code`` to :data:`ERROR_CODES`; registering one code with another status fails."""
    entry = ErrorCode(code, status, zh, en)
    known = ERROR_CODES.get(code)
    if known is not None and known.status != status:
        raise ValueError(f"error code {code!r} registered as {known.status}, not {status}")
    ERROR_CODES.setdefault(code, entry)
    return ERROR_CODES[code]


class ApiError(Exception):
    """Base class: an error with an HTTP status, a stable code and a bilingual message.

    Subclasses fix ``status`` and a default ``code``/message; an instance may narrow the code
    (e.g. ``Gone(code="enrollment_code_expired", ...)``) and add ``details``.
    """

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"
    default_zh: ClassVar[str] = "服务器内部错误"
    default_en: ClassVar[str] = "Internal server error"
    #: Classes that always mean "try again later" set this (429, 503, 507).
    default_retry_after: ClassVar[int | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "default_code" in cls.__dict__:
            register_code(cls.default_code, cls.status, cls.default_zh, cls.default_en)

    def __init__(
        self,
        en: str | None = None,
        zh: str | None = None,
        *,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        retry_after: int | None = None,
        audited: bool = False,
    ) -> None:
        self.code = code or self.default_code
        #: True when the service raising it already wrote its own audit entry for the refusal.
        self.audited = audited
        registered = ERROR_CODES.get(self.code)
        self.message_en = en or (registered.en if registered else self.default_en)
        self.message_zh = zh or (registered.zh if registered else self.default_zh)
        self.details: dict[str, Any] = dict(details or {})
        retry = retry_after if retry_after is not None else self.default_retry_after
        #: Seconds until a retry may succeed (sent as ``Retry-After`` and ``details.retry_after``).
        self.retry_after: int | None = None if retry is None else max(1, int(retry))
        if self.retry_after is not None:
            self.details = {"retry_after": self.retry_after, **self.details}
        super().__init__(f"{self.code}: {self.message_en}")

    @property
    def message(self) -> dict[str, str]:
        """The human message, Chinese and English apart."""
        return {"zh": self.message_zh, "en": self.message_en}

    @property
    def text(self) -> str:
        """The message as one line for a terminal or a log: ``中文 / English``."""
        return f"{self.message_zh} / {self.message_en}"

    def headers(self) -> dict[str, str]:
        """Extra response headers (``Retry-After`` when the error says when to retry)."""
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ValidationFailed(ApiError):
    """400: the request body or query is malformed; ``details.fields`` maps field → messages."""

    status = 400
    default_code = "validation_failed"
    default_zh = "请求内容不合法"
    default_en = "The request is not valid"


class Unauthorized(ApiError):
    """401: missing, wrong, expired or revoked credentials (token, password, enrollment code)."""

    status = 401
    default_code = "unauthorized"
    default_zh = "需要登录或凭据无效"
    default_en = "Authentication required or credentials invalid"

    def headers(self) -> dict[str, str]:
        # RFC 6750: a 401 names the scheme the client should use.
        return {**super().headers(), "WWW-Authenticate": 'Bearer realm="village-sync"'}


class Forbidden(ApiError):
    """403: authenticated, but the role may not do this (e.g. a reviewer publishing a form)."""

    status = 403
    default_code = "forbidden"
    default_zh = "无权执行此操作"
    default_en = "You are not allowed to do this"


class NotFound(ApiError):
    """404: no such resource within the caller's area (out-of-area ids look absent too)."""

    status = 404
    default_code = "not_found"
    default_zh = "未找到"
    default_en = "Not found"


class MethodNotAllowed(ApiError):
    """405: the route exists but not for this HTTP method."""

    status = 405
    default_code = "method_not_allowed"
    default_zh = "不支持该请求方法"
    default_en = "Method not allowed"


class Conflict(ApiError):
    """409: the request clashes with the current state (code already used, duplicate version)."""

    status = 409
    default_code = "conflict"
    default_zh = "与现有数据冲突"
    default_en = "Conflicts with the current state"


class Gone(ApiError):
    """410: the thing existed but has expired (e.g. an enrollment code past its expiry)."""

    status = 410
    default_code = "gone"
    default_zh = "已过期"
    default_en = "Expired or no longer available"


class PayloadTooLarge(ApiError):
    """413: the request body exceeds ``MAX_REQUEST_BYTES``."""

    status = 413
    default_code = "payload_too_large"
    default_zh = "请求内容过大"
    default_en = "Request body too large"


class Unprocessable(ApiError):
    """422: well-formed but semantically invalid (e.g. a form definition with located issues)."""

    status = 422
    default_code = "unprocessable"
    default_zh = "内容无法处理"
    default_en = "The content cannot be processed"


class RateLimited(ApiError):
    """429: too many attempts; ``Retry-After`` says when to try again (seconds)."""

    status = 429
    default_code = "rate_limited"
    default_zh = "尝试次数过多，请稍后再试"
    default_en = "Too many attempts, try again later"
    default_retry_after = 1


class ServiceBusy(ApiError):
    """503: the database is busy (SQLite lock timeout, PostgreSQL serialization); retry later."""

    status = 503
    default_code = "database_busy"
    default_zh = "服务器繁忙，请稍后重试"
    default_en = "The server is busy, retry shortly"
    default_retry_after = 1


class StorageFull(ApiError):
    """507: the server's disk (or database) is full; nothing was stored, retry later."""

    status = 507
    default_code = "storage_full"
    default_zh = "服务器存储空间已满，数据未保存，请稍后重试"
    default_en = "The server's storage is full; nothing was stored, retry later"
    default_retry_after = 1


class InternalError(ApiError):
    """500: an unexpected fault; the details are logged, never sent."""


register_code(ApiError.default_code, ApiError.status, ApiError.default_zh, ApiError.default_en)

#: The codes services raise by name (``NotFound(code="record_not_found", ...)``), with the
#: status of the class that raises them and the default message a client may show. A site
#: usually says more (which id, which version); the default is what a client without the body
#: would say.
_SERVICE_CODES: tuple[tuple[str, int, str, str], ...] = (
    # 400
    (
        "chunk_checksum_missing",
        400,
        "缺少或错误的分块校验值 Upload-Checksum",
        "Upload-Checksum is missing or malformed",
    ),
    ("envelope_truncated", 400, "同步请求不完整", "The request was cut short"),
    ("exchange_empty", 400, "同步请求为空", "The request holds no frames"),
    (
        "form_version_not_published",
        400,
        "表单没有该已发布版本",
        "The form has no such published version",
    ),
    (
        "area_names_invalid",
        400,
        "地区名称表有误，未导入任何一行",
        "The area-name table has errors; nothing was imported",
    ),
    ("invalid_public_key", 400, "设备公钥格式错误", "The device public key is malformed"),
    (
        "outbox_file_invalid",
        400,
        "不是可读取的待发送数据文件",
        "Not a readable outbox file",
    ),
    (
        "monitoring_config_invalid",
        400,
        "监测标准配置无效",
        "The monitoring configuration is invalid",
    ),
    ("resolution_choice_invalid", 400, "冲突处理选项无效", "The resolution choice is invalid"),
    ("roster_area_invalid", 400, "导入范围无效", "The import area is not inside yours"),
    (
        "no_published_forms",
        400,
        "尚无已发布的表单：请先启动一次服务器（会发布内置表单）",
        "No form is published yet; start the server once (it publishes the built-ins)",
    ),
    (
        "roster_header_missing",
        400,
        "花名册中未找到表头行",
        "The roster has no header row with the required columns",
    ),
    ("roster_unreadable", 400, "花名册文件无法读取", "The roster file is not a readable workbook"),
    ("department_unknown", 400, "未知的部门", "Unknown department"),
    ("department_mapping_invalid", 400, "列对应关系有误", "The column mapping is invalid"),
    (
        "department_header_missing",
        400,
        "部门名单中缺少列对应关系中的表头",
        "The department file lacks a mapped header",
    ),
    ("department_file_unreadable", 400, "部门名单文件无法读取", "Not a readable workbook"),
    ("department_import_invalid", 400, "导入参数有误", "The import parameters are invalid"),
    # 401
    ("device_unknown", 401, "设备未在本服务器注册", "The device is not enrolled here"),
    ("device_signature_missing", 401, "缺少设备签名", "The device signature is missing"),
    ("device_signature_invalid", 401, "设备签名无效", "The device signature is invalid"),
    (
        "device_signature_expired",
        401,
        "签名时间与服务器时间相差过大",
        "The signed time is too far off",
    ),
    ("invalid_credentials", 401, "用户名或密码错误", "Wrong user name or password"),
    ("invalid_enrollment_code", 401, "注册码无效", "Unknown enrollment code"),
    (
        "invalid_token",
        401,
        "登录凭据缺失、过期或已注销，请重新登录",
        "The token is missing, expired or revoked; log in again",
    ),
    ("missing_token", 401, "缺少登录凭据，请先登录", "Send Authorization: Bearer <token>"),
    # 403
    ("device_revoked", 403, "该设备已被停用", "This device is revoked"),
    ("form_not_yours", 403, "表单不属于您的管理区域", "The form belongs to another area"),
    ("outside_area", 403, "不在您的管辖范围内", "Outside your area"),
    ("role_forbidden", 403, "当前角色无权执行此操作", "Your role may not do this"),
    (
        "unmasked_export_forbidden",
        403,
        "只有县级管理员可以导出未脱敏的数据",
        "Only a county admin may export unmasked data",
    ),
    # 404
    ("attachment_not_found", 404, "附件不存在", "No such attachment"),
    ("conflict_not_found", 404, "未找到该冲突", "No such conflict in your area"),
    ("department_round_not_found", 404, "没有该批次", "No such department round in your area"),
    ("device_not_found", 404, "设备不存在", "No such device"),
    ("form_not_found", 404, "表单不存在", "No such form"),
    ("form_version_not_found", 404, "表单没有该版本", "No such form version"),
    ("task_not_found", 404, "没有该核查任务", "No such verification task in your area"),
    ("monitoring_line_not_found", 404, "没有该监测标准", "No such monitoring line"),
    ("quarantine_not_found", 404, "未找到该隔离操作", "No such quarantined op in your area"),
    ("record_not_found", 404, "未找到该记录", "No such record in your area"),
    (
        "round_alert_run_not_found",
        404,
        "您的管辖范围内没有该轮次比对运行",
        "No such round-alert run in your area",
    ),
    ("round_not_found", 404, "该地区没有这一轮次的记录", "No record of that round in the area"),
    ("upload_not_found", 404, "没有该上传", "No such upload"),
    ("user_not_found", 404, "用户不存在", "No such user"),
    # 409
    ("cannot_disable_self", 409, "不能停用自己的账号", "You cannot disable your own account"),
    (
        "conflict_not_open",
        409,
        "该冲突已处理或已被新的修改取代",
        "The conflict is already resolved or superseded",
    ),
    ("device_already_revoked", 409, "该设备已被停用", "The device is already revoked"),
    ("task_not_worked", 409, "只有已核查的任务才能关闭", "Only a worked task can be closed"),
    ("enrollment_code_used", 409, "该注册码已被使用", "This enrollment code has already been used"),
    (
        "envelope_replayed",
        409,
        "该同步请求已处理过（重放）",
        "The envelope sequence was already used",
    ),
    ("form_already_retired", 409, "表单该版本已停用", "The form version is already retired"),
    ("form_not_publishable", 409, "表单该版本不能发布", "The form version cannot be published"),
    (
        "form_version_exists",
        409,
        "表单该版本已存在，请提高版本号",
        "The form version exists; upload a new version",
    ),
    ("form_version_not_increasing", 409, "版本号只能增加", "Form versions only go up"),
    ("quarantine_not_held", 409, "该操作已处理", "This op was already released"),
    (
        "upload_offset_mismatch",
        409,
        "请从服务器已确认的位置继续上传",
        "Continue from the offset the server confirmed",
    ),
    (
        "upload_size_mismatch",
        409,
        "该附件已以不同大小登记",
        "The attachment was announced with another size",
    ),
    ("username_taken", 409, "用户已存在", "The user name is taken"),
    # 410
    (
        "enrollment_code_expired",
        410,
        "该注册码已过期，请重新申请",
        "This enrollment code has expired; ask for a new one",
    ),
    # 413
    ("attachment_too_large", 413, "附件过大", "The attachment is too large"),
    # 422
    (
        "chunk_checksum_mismatch",
        422,
        "分块校验失败，请重新发送",
        "The chunk's SHA-256 does not match Upload-Checksum; send it again",
    ),
    ("form_invalid", 422, "表单定义有误", "The form definition has issues"),
    (
        "quarantine_rerun_rejected",
        422,
        "改用该版本后操作仍被拒绝",
        "The op is still rejected with that version",
    ),
    (
        "resolution_invalid",
        422,
        "按此处理后记录无法通过校验",
        "The resolution would leave the record invalid",
    ),
    (
        "sensitive_flag_dropped",
        422,
        "以前版本中的敏感字段必须保持敏感",
        "Fields sensitive in an earlier version must stay sensitive",
    ),
    (
        "upload_checksum_mismatch",
        422,
        "文件校验失败，请从头重新上传",
        "The file's SHA-256 is not its address; upload it again from 0",
    ),
    # 500
    (
        "sealed_data_unreadable",
        500,
        "加密存储的数据无法解密（密钥缺失或数据被改动）",
        "Sealed data could not be opened (missing key or altered data)",
    ),
)

#: Protocol codes (``sync_protocol.errors``) the server passes through unchanged: a request
#: body that cannot be opened is a 400 (a replay a 409, above); an op that no longer parses when
#: an admin re-runs a quarantined op is a 422.
_PROTOCOL_CODES: tuple[tuple[str, int], ...] = (
    ("protocol_error", 400),
    ("envelope_error", 400),
    ("envelope_malformed_header", 400),
    ("envelope_unsupported_version", 400),
    ("envelope_unsupported_suite", 400),
    ("envelope_unknown_key_id", 400),
    ("envelope_unknown_sender", 400),
    ("envelope_wrong_recipient_key", 400),
    ("envelope_bad_signature", 400),
    ("envelope_too_large", 400),
    ("key_file_error", 400),
    ("invalid_key", 400),
    ("compression_error", 400),
    ("unknown_compression", 400),
    ("unknown_dictionary", 400),
    ("decompressed_too_large", 400),
    ("corrupt_compressed_data", 400),
    ("dictionary_training_failed", 400),
    ("batch_malformed", 400),
    ("message_invalid", 400),
    ("frame_malformed", 400),
    ("server_refused", 400),
    ("op_invalid", 422),
    ("stamp_invalid", 422),
    ("clock_out_of_range", 422),
    ("merge_error", 422),
    ("op_record_mismatch", 422),
    ("stamp_reused", 422),
    ("merge_policy_invalid", 422),
    ("record_state_invalid", 422),
    ("conflict_invalid", 422),
)

for _code, _status, _zh, _en in _SERVICE_CODES:
    register_code(_code, _status, _zh, _en)
for _code, _status in _PROTOCOL_CODES:
    _base = ValidationFailed if _status == 400 else Unprocessable
    register_code(_code, _status, _base.default_zh, _base.default_en)


#: Every error class, one per HTTP status (the handlers map Flask's own errors by status).
ERROR_CLASSES: tuple[type[ApiError], ...] = (
    ValidationFailed,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    Gone,
    PayloadTooLarge,
    Unprocessable,
    RateLimited,
    ServiceBusy,
    StorageFull,
    InternalError,
)

#: How long a client waits after a full disk before trying again (an operator must act).
STORAGE_FULL_RETRY_AFTER_SECONDS = 300
#: A full disk is logged once per this many seconds per process, not once per request.
STORAGE_FULL_LOG_EVERY_SECONDS = 600
_DISK_FULL_MARKERS = (
    "database or disk is full",  # SQLite SQLITE_FULL
    "no space left on device",
    "could not extend file",  # PostgreSQL disk_full (53100)
    "disk full",
)
_storage_full_logged_at: float | None = None


def is_storage_full(exc: BaseException) -> bool:
    """True when ``exc`` means the disk or database is full (ENOSPC, EDQUOT, SQLITE_FULL …)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    original = getattr(exc, "orig", None)
    if isinstance(original, OSError) and original.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if getattr(original, "pgcode", None) == "53100":
        return True
    if original is None and not isinstance(exc, OSError):
        return False  # only a database driver's or the OS's own words count
    text = str(original if original is not None else exc).lower()
    return any(marker in text for marker in _DISK_FULL_MARKERS)


def storage_full(exc: BaseException) -> StorageFull:
    """The 507 answer to a full disk, logged (one line, no traceback) at most once a while."""
    global _storage_full_logged_at
    now = time.monotonic()
    if _storage_full_logged_at is None or now - _storage_full_logged_at > (
        STORAGE_FULL_LOG_EVERY_SECONDS
    ):
        _storage_full_logged_at = now
        log.error("storage full, requests answered 507 until space is freed: %s", exc)
    return StorageFull(retry_after=STORAGE_FULL_RETRY_AFTER_SECONDS)


def is_busy_fault(exc: BaseException) -> bool:
    """True when a database error means "busy, try again" rather than a bug.

    A connection the database closed under the request (PostgreSQL restarted, the backend
    terminated) counts too: SQLAlchemy invalidates it and the next checkout gets a fresh one.
    """
    return is_busy(exc)


def from_library_error(
    exc: Any,
    cls: type[ApiError] | None = None,
    *,
    code: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> ApiError:
    """The API error for a pure library's error (``ProtocolError``, ``FormsError``).

    Those carry ``code``, an English ``message`` and a Chinese ``message_zh``; they keep them.
    Without ``cls``, a replayed envelope is a 409, an unknown sender a 401 ``device_unknown``
    and anything else a 400.
    """
    if cls is None:
        if isinstance(exc, Replayed):
            cls = Conflict
        elif isinstance(exc, UnknownSender):
            cls, code = Unauthorized, code or "device_unknown"
        else:
            cls = ValidationFailed
    if not isinstance(exc, ProtocolError) and not hasattr(exc, "message_zh"):
        raise TypeError(f"{type(exc).__name__} carries no bilingual message")
    return cls(en=exc.message, zh=exc.message_zh, code=code or exc.code, details=details)
