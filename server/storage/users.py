"""Admin users and their API tokens (hashed at rest)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from server.storage.database import db
from server.storage.models import ApiToken, User
from server.storage.scoping import under_prefix
from server.storage.types import utcnow


def add_user(
    *, username: str, password_hash: str, role: str, area_prefix: str, display_name: str = ""
) -> User:
    """Insert a user (inside the caller's write transaction) and return it with its id.

    Raises :class:`~server.storage.errors.Duplicate` when the user name is taken.
    """
    now = utcnow()
    user = User(
        username=username,
        password_hash=password_hash,
        role=role,
        area_prefix=area_prefix,
        display_name=display_name,
        active=True,
        created_at=now,
        password_changed_at=now,
    )
    db.session.add(user)
    db.session.flush()
    return user


def user_by_name(username: str) -> User | None:
    """The user with this name, or None."""
    return db.session.scalar(sa.select(User).where(User.username == username))


def user_by_id(user_id: int) -> User | None:
    """The user with this id, or None."""
    return db.session.get(User, user_id)


def list_users(area_prefix: str) -> list[User]:
    """Accounts whose area lies under ``area_prefix`` (an unrestricted admin sees all), by name."""
    query = sa.select(User).where(under_prefix(User.area_prefix, area_prefix))
    if area_prefix:
        # Unrestricted accounts (empty area) are above every county admin, never below one.
        query = query.where(User.area_prefix != "")
    return list(db.session.scalars(query.order_by(User.username)))


def set_active(user_id: int, active: bool) -> None:
    """Enable or disable an account; disabling also revokes all its live tokens at once."""
    db.session.execute(sa.update(User).where(User.id == user_id).values(active=active))
    if not active:
        db.session.execute(
            sa.update(ApiToken)
            .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )


def count_users() -> int:
    """How many user accounts exist (0 on a fresh database)."""
    return db.session.scalar(sa.select(sa.func.count()).select_from(User)) or 0


def set_password_hash(user_id: int, password_hash: str) -> bool:
    """Replace a user's password hash and revoke all their tokens; False if no such user.

    A disabled account stays disabled (enabling is its own, audited decision)."""
    now = utcnow()
    changed = db.session.execute(
        sa.update(User)
        .where(User.id == user_id)
        .values(password_hash=password_hash, password_changed_at=now)
    ).rowcount
    db.session.execute(
        sa.update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return bool(changed)


def add_token(*, user_id: int, token_hash: str, expires_at: datetime) -> ApiToken:
    """Store a new token's hash for ``user_id``."""
    token = ApiToken(
        user_id=user_id, token_hash=token_hash, created_at=utcnow(), expires_at=expires_at
    )
    db.session.add(token)
    db.session.flush()
    return token


def token_with_user(token_hash: str) -> tuple[ApiToken, User] | None:
    """The token row with this hash and its user, whatever their state; None if unknown."""
    row = db.session.execute(
        sa.select(ApiToken, User)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == token_hash)
    ).first()
    return (row[0], row[1]) if row else None


def touch_token(token_id: int, now: datetime) -> None:
    """Record when a token was last used."""
    db.session.execute(sa.update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))


def revoke_token(token_hash: str) -> bool:
    """Mark the token revoked now; True if a live token was revoked."""
    return bool(
        db.session.execute(
            sa.update(ApiToken)
            .where(ApiToken.token_hash == token_hash, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        ).rowcount
    )
