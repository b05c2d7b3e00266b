"""Enrollment: trade a one-time code and the device's public keys for a place on a server.

``enroll(store, server_url, code)``:

1. sends the device's X25519 and Ed25519 public keys (made at ``init``; the private halves
   never leave the store) with the code to ``POST /api/v1/devices/enroll``;
2. stores what the server answers — the device id it assigned, the server's public keys and
   key id, the scope (a village or township code) — in one transaction
   (``DeviceStore.set_enrollment``; queued ops are rewritten to the new device id);
3. runs a first sync, which downloads the form definitions of the manifest, the monitoring
   configuration and the records of the scope. If the link drops there, the enrollment stands
   and ``village-device sync`` finishes the download later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sync_protocol.crypto import b64decode, key_id
from village_client_stub.errors import DeviceError
from village_client_stub.store import DeviceStore
from village_client_stub.sync_client import SyncClient, SyncFailed, SyncProgress, SyncReport
from village_client_stub.transport import HttpTransport, ServerError

__all__ = ["ENROLL_PATH", "AlreadyEnrolled", "EnrollResult", "EnrollmentFailed", "enroll"]

ENROLL_PATH: Final = "/api/v1/devices/enroll"

# One line per enrollment error the server can give, for the person holding the tablet.
_REASONS: Final[dict[str, tuple[str, str]]] = {
    "invalid_enrollment_code": ("注册码无效，请核对后重新输入", "the enrollment code is not valid"),
    "enrollment_code_expired": (
        "注册码已过期，请向县里申请新的注册码",
        "the enrollment code has expired; ask the county for a new one",
    ),
    "enrollment_code_used": (
        "注册码已被使用过，每个注册码只能注册一台设备",
        "the enrollment code was already used; each code enrols one device",
    ),
    "rate_limited": (
        "尝试次数过多，请稍后再试",
        "too many attempts from this address; wait and try again",
    ),
}


class AlreadyEnrolled(DeviceError):
    """The store is already enrolled with a server (one store = one tablet = one enrollment)."""

    code = "already_enrolled"
    default_message = "this device is already enrolled; create a new store with `init`"
    default_message_zh = "本设备已经注册过；如需重新注册，请用 init 新建设备数据文件"


class EnrollmentFailed(DeviceError):
    """The server refused the enrollment; ``code`` is the server's error code."""

    code = "enrollment_failed"
    default_message = "enrollment failed"
    default_message_zh = "注册失败"

    def __init__(self, code: str, message: str, *, message_zh: str | None = None) -> None:
        super().__init__(message, message_zh=message_zh)
        self.code = code


@dataclass(frozen=True)
class EnrollResult:
    """What enrollment stored, and how the first download went."""

    device_id: str
    scope: str
    server_url: str
    server_key_id: str
    forms_manifest: list[dict[str, Any]]
    first_sync: SyncReport | None
    first_sync_error: str | None = None
    forms_on_device: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "device_id": self.device_id,
            "scope": self.scope,
            "server_url": self.server_url,
            "server_key_id": self.server_key_id,
            "forms_manifest": self.forms_manifest,
            "forms_on_device": self.forms_on_device,
            "first_sync": self.first_sync.to_dict() if self.first_sync else None,
            "first_sync_error": self.first_sync_error,
        }


def enroll(
    store: DeviceStore,
    server_url: str,
    code: str,
    *,
    label: str = "",
    transport: HttpTransport | None = None,
    download: bool = True,
    on_progress: Callable[[SyncProgress], None] | None = None,
) -> EnrollResult:
    """Enrol the device of ``store`` with the server at ``server_url`` using ``code``.

    Raises:
        AlreadyEnrolled: the store already belongs to a server.
        EnrollmentFailed: the server refused (code wrong, expired, used; too many attempts).
        TransportError: the server could not be reached (nothing was stored).
        BadInput: ``server_url`` is not an http(s) URL.
        sync_protocol.errors.ProtocolError: the server's keys are not valid public keys (nothing was stored).
    """
    identity = store.identity()
    if identity.server_url is not None:
        raise AlreadyEnrolled(
            f"this device is already enrolled with {identity.server_url} (scope {identity.scope})",
            message_zh=f"本设备已在 {identity.server_url} 注册（范围 {identity.scope}）；"
            "如需重新注册，请用 init 新建设备数据文件",
        )
    transport = transport or HttpTransport(server_url)
    keys = identity.public_keys
    try:
        answer = transport.post_json(
            ENROLL_PATH,
            {
                "code": code,
                "x25519_public": keys["encryption_public"],
                "ed25519_public": keys["signing_public"],
                "label": label,
            },
        )
    except ServerError as exc:
        zh, en = _REASONS.get(exc.server_code, (exc.message_zh, exc.message))
        raise EnrollmentFailed(exc.server_code, en, message_zh=zh) from exc
    device_id, scope, server_keys, manifest = _parse(answer)
    encryption_public = b64decode(server_keys["encryption_public"])
    signing_public = b64decode(server_keys["signing_public"])
    server_key_id = str(server_keys.get("encryption_key_id") or key_id(encryption_public))
    store.set_enrollment(
        server_url=transport.base_url,
        server_encryption_public=encryption_public,
        server_signing_public=signing_public,
        server_key_id=server_key_id,
        scope=scope,
        device_id=device_id,
    )
    report: SyncReport | None = None
    error: str | None = None
    if download:
        try:
            report = SyncClient(store, transport, on_progress=on_progress, max_failures=4).sync()
        except SyncFailed as exc:
            error = exc.message
    return EnrollResult(
        device_id=store.device_id,
        scope=scope,
        server_url=transport.base_url,
        server_key_id=server_key_id,
        forms_manifest=manifest,
        first_sync=report,
        first_sync_error=error,
        forms_on_device=sorted({f"{f.form_id}@{f.version}" for f in store.forms()}),
    )


def _parse(answer: Any) -> tuple[str, str, Mapping[str, str], list[dict[str, Any]]]:
    """Check the shape of the enroll answer; raises EnrollmentFailed for anything else."""
    try:
        device_id = answer["device_id"]
        scope = answer["scope"]
        server_keys = answer["server_keys"]
        manifest = answer.get("forms") or []
        if not (
            isinstance(device_id, str)
            and isinstance(scope, str)
            and isinstance(server_keys, Mapping)
            and isinstance(server_keys.get("encryption_public"), str)
            and isinstance(server_keys.get("signing_public"), str)
            and isinstance(manifest, list)
        ):
            raise TypeError("unexpected field types")
    except (KeyError, TypeError) as exc:
        raise EnrollmentFailed(
            "enrollment_answer_invalid",
            f"the server's enrollment answer is not understood: {exc}",
            message_zh="服务器的注册应答格式不对",
        ) from exc
    return device_id, scope, server_keys, [dict(m) for m in manifest if isinstance(m, Mapping)]
