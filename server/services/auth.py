"""Admin accounts, passwords (werkzeug scrypt) and bearer tokens (random, SHA-256 at rest)."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from werkzeug.security import check_password_hash, generate_password_hash

from server.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from server.services import throttle
from server.services.access import Actor, Principal, check_area
from server.services.context import ServiceContext
from server.storage import users
from server.storage.database import end_read, writing
from server.storage.errors import StorageBusy, StorageUnavailable
from server.storage.types import utcnow

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 10
TOKEN_PREFIX = "vs_"
#: How stale ``api_tokens.last_used_at`` may get before a request refreshes it.
LAST_USED_GRANULARITY = timedelta(minutes=5)

# Verified against when the user name is unknown, so a wrong name costs the same time as a
# wrong password and response timing does not reveal which accounts exist.
_DUMMY_HASH = generate_password_hash("not-a-real-password", method="scrypt")


@dataclass(frozen=True)
class LoginResult:
    """A fresh token (shown once) for a user, and when it expires."""

    token: str
    expires_at: datetime
    principal: Principal


def hash_password(password: str) -> str:
    """Hash a password with scrypt (werkzeug's format, salt included)."""
    return generate_password_hash(password, method="scrypt")


def token_hash(token: str) -> str:
    """The stored form of a token: SHA-256 hex (tokens are random, so no salt is needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_password() -> str:
    """A random password for a new or reset account (16 URL-safe characters, ~96 bits)."""
    return secrets.token_urlsafe(12)


def _check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(
            en=f"the password needs at least {MIN_PASSWORD_LENGTH} characters",
            zh=f"密码至少需要{MIN_PASSWORD_LENGTH}个字符",
            details={"fields": {"password": [f"at least {MIN_PASSWORD_LENGTH} characters"]}},
        )


def create_user(
    *,
    username: str,
    password: str,
    role: str,
    area_prefix: str,
    actor: str,
    actor_user_id: int | None = None,
    display_name: str = "",
) -> Principal:
    """Create an admin account; audited. Returns the new principal.

    Raises :class:`ValidationFailed` (bad role/area/password/name) or :class:`Conflict`
    (``username_taken``).
    """
    username = username.strip()
    if not username or len(username) > 80:
        raise ValidationFailed(
            en="a user name is 1-80 characters",
            zh="用户名长度应为1至80个字符",
            details={"fields": {"username": ["1-80 characters"]}},
        )
    area_prefix = check_area(role, area_prefix)
    _check_password_strength(password)
    with writing():
        if users.user_by_name(username) is not None:
            raise Conflict(
                en=f"user {username} already exists",
                zh=f"用户 {username} 已存在",
                code="username_taken",
            )
        user = users.add_user(
            username=username,
            password_hash=hash_password(password),
            role=role,
            area_prefix=area_prefix,
            display_name=display_name,
        )
        Actor(actor, actor_user_id).audit(
            "user.create",
            target_type="user",
            target_id=str(user.id),
            area_code=area_prefix,
            details={"username": username, "role": role},
        )
        return Principal(user.id, user.username, user.role, user.area_prefix)


def reset_password(username: str, password: str, *, actor: str) -> bool:
    """Set a new password and revoke the user's tokens; audited. A disabled account stays
    disabled (``set_account_active`` enables it). Returns whether the account is active.

    Raises :class:`NotFound` for an unknown user, :class:`ValidationFailed` for a short password.
    """
    _check_password_strength(password)
    with writing():
        user = users.user_by_name(username)
        if user is None:
            raise NotFound(en=f"no user {username}", zh=f"用户 {username} 不存在")
        users.set_password_hash(user.id, hash_password(password))
        Actor(actor).audit(
            "user.reset_password",
            target_type="user",
            target_id=str(user.id),
            area_code=user.area_prefix,
        )
        return bool(user.active)


def login(ctx: ServiceContext, username: str, password: str, *, ip: str) -> LoginResult:
    """Check a user name and password and issue a token; audited.

    Raises :class:`RateLimited` after too many failures from this address for this name (or
    for any names), and
    :class:`Unauthorized` (``invalid_credentials``) for a wrong name or password or a disabled
    account (the same answer for each, so names cannot be probed).
    """
    claimed = throttle.claim(ctx, throttle.login_limits(ctx, ip, username))
    user = users.user_by_name(username.strip())
    ok = check_password_hash(user.password_hash if user else _DUMMY_HASH, password)
    if user is None or not ok or not user.active:
        with writing():  # the attempt stays counted
            Actor(f"ip:{ip}", ip=ip).audit(
                "auth.login_failed",
                target_type="user",
                target_id="" if user is None else str(user.id),
                area_code="" if user is None else user.area_prefix,
                details={} if user is None else {"username": user.username},
            )
        raise Unauthorized(
            en="wrong user name or password",
            zh="用户名或密码错误",
            code="invalid_credentials",
            audited=True,
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = ctx.now() + timedelta(hours=int(ctx.settings["TOKEN_TTL_HOURS"]))
    with writing():
        throttle.release(claimed)
        users.add_token(user_id=user.id, token_hash=token_hash(token), expires_at=expires_at)
        Actor(user.username, user.id, ip=ip).audit(
            "auth.login", target_type="user", target_id=str(user.id), area_code=user.area_prefix
        )
    principal = Principal(user.id, user.username, user.role, user.area_prefix)
    return LoginResult(token, expires_at, principal)


def authenticate(token: str) -> Principal:
    """The principal a bearer token belongs to; the read transaction of the lookup is ended.

    Raises :class:`Unauthorized` (``invalid_token``) when the token is unknown, revoked, expired
    or its user disabled.
    """
    found = users.token_with_user(token_hash(token)) if token else None
    now = utcnow()
    if found is not None:
        row, user = found
        if row.revoked_at is None and row.expires_at > now and user.active:
            principal = Principal(user.id, user.username, user.role, user.area_prefix)
            if row.last_used_at is None or now - row.last_used_at > LAST_USED_GRANULARITY:
                # Coarse on purpose: one small write per token every few minutes, not per read.
                token_id = row.id
                try:
                    with writing():
                        users.touch_token(token_id, now)
                except (StorageBusy, StorageUnavailable):
                    # Best effort: a busy database must not turn a read into a 503.
                    log.info("last_used_at of token %s not recorded (database busy)", token_id)
            # The token lookup was a read; end it so a write that follows starts its own
            # (immediate) transaction instead of upgrading a stale read snapshot.
            end_read()
            return principal
    raise Unauthorized(
        en="the token is missing, expired or revoked; log in again",
        zh="登录凭据缺失、过期或已注销，请重新登录",
        code="invalid_token",
    )


def logout(token: str, principal: Principal, *, ip: str) -> None:
    """Revoke the token at once (later requests with it get 401); audited."""
    with writing():
        users.revoke_token(token_hash(token))
        Actor.of(principal, ip).audit(
            "auth.logout",
            target_type="user",
            target_id=str(principal.user_id),
            area_code=principal.area_prefix,
        )


@dataclass(frozen=True)
class Account:
    """An admin account as other admins see it (never the password hash)."""

    user_id: int
    username: str
    role: str
    area_prefix: str
    display_name: str
    active: bool
    created_at: datetime


def list_accounts(principal: Principal) -> list[Account]:
    """Accounts inside the principal's area."""
    return [
        Account(u.id, u.username, u.role, u.area_prefix, u.display_name, u.active, u.created_at)
        for u in users.list_users(principal.area_prefix)
    ]


def set_account_active(actor: Actor, user_id: int, active: bool) -> Account:
    """Disable (tokens revoked at once) or re-enable an account inside the actor's area; audited.

    Raises :class:`NotFound` for an unknown or out-of-area account (unrestricted accounts are
    out of every county admin's area) and :class:`Conflict` (``cannot_disable_self``) when an
    admin would lock themself out.
    """
    with writing():
        user = users.user_by_id(user_id)
        visible = user is not None and (
            actor.area_prefix == ""
            or (user.area_prefix != "" and user.area_prefix.startswith(actor.area_prefix))
        )
        if user is None or not visible:
            raise NotFound(en=f"no user {user_id}", zh="用户不存在", code="user_not_found")
        if not active and user.id == actor.user_id:
            raise Conflict(
                en="you cannot disable your own account",
                zh="不能停用自己的账号",
                code="cannot_disable_self",
            )
        users.set_active(user.id, active)
        actor.audit(
            "user.enable" if active else "user.disable",
            target_type="user",
            target_id=str(user.id),
            area_code=user.area_prefix,
            details={"username": user.username},
        )
        return Account(
            user.id,
            user.username,
            user.role,
            user.area_prefix,
            user.display_name,
            active,
            user.created_at,
        )


def has_users() -> bool:
    """True once any admin account exists (first-start detection)."""
    return users.count_users() > 0


def change_password(
    ctx: ServiceContext, principal: Principal, current: str, new: str, *, ip: str
) -> LoginResult:
    """Replace the principal's own password after checking the current one; audited.

    Every token of the account (other browsers, API clients) is revoked and a fresh one is
    issued for the caller. Raises :class:`RateLimited` after too many wrong current passwords
    (the login limit), :class:`Unauthorized` (``invalid_credentials``) for a wrong one and
    :class:`ValidationFailed` for a new password that is too short or unchanged.
    """
    claimed = throttle.claim(ctx, throttle.login_limits(ctx, ip, principal.username))
    user = users.user_by_id(principal.user_id)
    if user is None or not user.active or not check_password_hash(user.password_hash, current):
        with writing():  # the attempt stays counted
            Actor.of(principal, ip).audit(
                "auth.password_change_failed",
                target_type="user",
                target_id=str(principal.user_id),
                area_code=principal.area_prefix,
            )
        raise Unauthorized(
            en="the current password is wrong",
            zh="当前密码不正确",
            code="invalid_credentials",
            details={"fields": {"current_password": ["wrong password"]}},
            audited=True,
        )
    # The current password was right: the attempt does not count against the limit.
    throttle.release(claimed)
    _check_password_strength(new)
    if new == current:
        raise ValidationFailed(
            en="choose a password different from the current one",
            zh="新密码不能与当前密码相同",
            details={"fields": {"new_password": ["same as the current password"]}},
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = ctx.now() + timedelta(hours=int(ctx.settings["TOKEN_TTL_HOURS"]))
    with writing():
        users.set_password_hash(user.id, hash_password(new))
        users.add_token(user_id=user.id, token_hash=token_hash(token), expires_at=expires_at)
        Actor.of(principal, ip).audit(
            "user.change_password",
            target_type="user",
            target_id=str(user.id),
            area_code=user.area_prefix,
        )
    return LoginResult(token, expires_at, principal)


def needs_password_change(principal: Principal) -> bool:
    """True while the account still has the password it was created with (printed at first
    start or chosen by another admin): the pages ask its owner to choose their own."""
    user = users.user_by_id(principal.user_id)
    return user is not None and user.password_changed_at <= user.created_at
