"""Enrollment: admins issue one-time codes for a scope; a tablet trades one for a device id.

Codes are 16 characters from an alphabet without look-alikes (no 0/O, 1/I/L), shown in groups
of four (``K7QM-R2XD-9HWT-C4NP``, ~80 bits). Only their SHA-256 is stored, so a leaked database
does not leak usable codes. Typing is forgiving: case, spaces and dashes are ignored.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn

from server.errors import ApiError, Conflict, Gone, Unauthorized, ValidationFailed
from server.services import throttle
from server.services.access import DEVICE_SCOPE_LENGTHS, Actor, Principal, check_scope
from server.services.context import ServiceContext
from server.storage import devices, enrollment
from server.storage import forms as form_store
from server.storage.database import writing
from server.storage.enrollment import EnrollmentCode
from sync_protocol.crypto import EncryptionPublicKey, SigningPublicKey
from sync_protocol.errors import ProtocolError

CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 16
MAX_CODE_DAYS = 90


@dataclass(frozen=True)
class IssuedCode:
    """A freshly issued code. ``code`` is the only time the plain code is available."""

    id: int
    code: str
    scope: str
    expires_at: datetime
    label: str = ""


@dataclass(frozen=True)
class Enrollment:
    """What an enrolled device needs: its id, scope, the server's keys and the form manifest."""

    device_id: str
    scope: str
    server_keys: dict[str, str]
    forms: list[dict[str, Any]] = field(default_factory=list)
    #: The server's clock at enrollment, for the tablet's first hybrid-logical-clock reading.
    server_time: datetime | None = None


def normalize_code(text: str) -> str:
    """Upper-case and strip spaces/dashes, the form codes are hashed in."""
    return "".join(ch for ch in text.upper() if ch.isalnum())


def code_hash(text: str) -> str:
    """SHA-256 hex of the normalised code (the stored form)."""
    return hashlib.sha256(normalize_code(text).encode("ascii", "ignore")).hexdigest()


def _new_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, CODE_LENGTH, 4))


def issue_code(
    ctx: ServiceContext, scope: str, *, days: int | None, actor: Actor, label: str = ""
) -> IssuedCode:
    """Issue a one-time code for a village (12 digits) or township (9) ``scope``, valid for
    ``days`` (default: the setting); audited.

    Raises :class:`ValidationFailed` for another scope or a validity outside 1-90 days and
    :class:`server.errors.Forbidden` for a scope outside the actor's area.
    """
    scope = check_scope(scope, lengths=DEVICE_SCOPE_LENGTHS)
    actor.require_area(scope)
    days = int(days if days is not None else ctx.settings["ENROLLMENT_CODE_DAYS"])
    if not 1 <= days <= MAX_CODE_DAYS:
        raise ValidationFailed(
            en=f"a code is valid for 1 to {MAX_CODE_DAYS} days",
            zh=f"有效期应为1至{MAX_CODE_DAYS}天",
            details={"fields": {"days": [f"1-{MAX_CODE_DAYS}"]}},
        )
    code = _new_code()
    expires_at = ctx.now() + timedelta(days=days)
    with writing():
        row = enrollment.add_code(
            code_hash=code_hash(code),
            scope=scope,
            expires_at=expires_at,
            created_by=actor.name,
            label=label,
        )
        actor.audit(
            "enrollment_code.issue",
            target_type="enrollment_code",
            target_id=str(row.id),
            area_code=scope,
            details={"days": days, "label": label},
        )
        return IssuedCode(row.id, code, scope, expires_at, label)


def list_codes(principal: Principal) -> list[EnrollmentCode]:
    """Unused codes for scopes in the principal's area (hashes only; plain codes are gone)."""
    return enrollment.list_codes(principal.area_prefix)


def _check_public_key(kind: str, text: str) -> str:
    loader = EncryptionPublicKey if kind == "x25519_public" else SigningPublicKey
    try:
        return loader.from_base64(text).to_base64()
    except (ProtocolError, ValueError, TypeError):
        raise ValidationFailed(
            en=f"{kind} must be a base64 32-byte public key",
            zh="设备公钥格式错误",
            code="invalid_public_key",
            details={"fields": {kind: ["base64 of 32 raw bytes"]}},
        ) from None


def forms_manifest() -> list[dict[str, Any]]:
    """The published form versions, as devices receive them at enrollment."""
    return [
        {
            "form_id": row.form_id,
            "version": row.version,
            "title": row.definition.get("title", {}),
            "manifest_revision": row.manifest_revision,
        }
        for row in form_store.published_versions()
    ]


def _refuse(error: ApiError, *, ip: str, scope: str = "", code_id: int | None = None) -> NoReturn:
    """Audit a failed enrollment in the code's area and raise (the attempt stays counted)."""
    with writing():
        Actor(f"ip:{ip}", ip=ip).audit(
            "device.enroll_refused",
            target_type="enrollment_code",
            target_id="" if code_id is None else str(code_id),
            area_code=scope,
            details={"reason": error.code},
        )
    error.audited = True  # the refusal's entry is this one, with the code's area
    raise error


def enroll(
    ctx: ServiceContext,
    code: str,
    *,
    x25519_public: str,
    ed25519_public: str,
    ip: str,
    label: str = "",
) -> Enrollment:
    """Trade a one-time code and the device's public keys for a device id; audited.

    Raises, after counting the failure against the address:
    :class:`Unauthorized` (``invalid_enrollment_code``) for an unknown code,
    :class:`Gone` (``enrollment_code_expired``) for an expired one,
    :class:`Conflict` (``enrollment_code_used``) for a used one;
    :class:`RateLimited` when the address has failed too often; :class:`ValidationFailed` for
    malformed keys (not counted: that is a client bug, not a guess).
    """
    claimed = throttle.claim(ctx, throttle.enrollment_limits(ctx, ip))
    try:
        x_pub = _check_public_key("x25519_public", x25519_public)
        ed_pub = _check_public_key("ed25519_public", ed25519_public)
    except ValidationFailed:
        throttle.release(claimed)  # a client bug, not a guess
        raise
    now = ctx.now()
    row = enrollment.code_by_hash(code_hash(code))
    if row is None:
        _refuse(
            Unauthorized(
                en="unknown enrollment code", zh="注册码无效", code="invalid_enrollment_code"
            ),
            ip=ip,
        )
    failure: ApiError | None = None
    if row.used_at is not None:
        failure = Conflict(
            en="this enrollment code has already been used",
            zh="该注册码已被使用",
            code="enrollment_code_used",
        )
    elif row.expires_at <= now:
        failure = Gone(
            en="this enrollment code has expired; ask for a new one",
            zh="该注册码已过期，请重新申请",
            code="enrollment_code_expired",
            details={"expired_at": row.expires_at.isoformat()},
        )
    if failure is not None:
        _refuse(failure, ip=ip, scope=row.scope, code_id=row.id)
    # Plain values: the write transaction below starts afresh and expires the ORM row.
    code_id, scope, code_label = row.id, row.scope, row.label
    device_id = str(uuid.uuid4())
    with writing():
        if not enrollment.claim(code_id, device_id, now):
            # Another tablet won the race for the same code between our read and this write.
            failure = Conflict(
                en="this enrollment code has already been used",
                zh="该注册码已被使用",
                code="enrollment_code_used",
            )
        else:
            throttle.release(claimed)
            devices.add_device(
                device_id=device_id,
                x25519_public=x_pub,
                ed25519_public=ed_pub,
                scope=scope,
                enrolled_at=now,
                enrollment_code_id=code_id,
                label=label or code_label,
            )
            Actor(f"device:{device_id}", ip=ip).audit(
                "device.enroll",
                target_type="device",
                target_id=device_id,
                area_code=scope,
                details={"enrollment_code_id": code_id},
            )
    if failure is not None:
        _refuse(failure, ip=ip, scope=scope, code_id=code_id)
    ring = ctx.keys.ring()
    # The same shape as the manifest's server_keys config entry (protocol.md §6), minus "key".
    server_keys = {"current_key_id": ring.current_id, **ring.public_document()}
    return Enrollment(device_id, scope, server_keys, forms_manifest(), ctx.now())
