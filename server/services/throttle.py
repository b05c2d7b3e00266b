"""Rate limiting of login and enrollment attempts: a sliding window stored in the database.

Only failed attempts count, keyed by client address (plus user name for logins), so one
mistyping clerk does not lock out a colleague behind the same township NAT, and several app
processes behind one WSGI server see the same counts.
"""

from __future__ import annotations

import math

from flask import current_app

from server.errors import RateLimited
from server.storage import throttle as store
from server.storage.database import writing
from server.storage.types import utcnow


def _limits() -> tuple[int, int]:
    config = current_app.config
    return int(config["RATE_LIMIT_ATTEMPTS"]), int(config["RATE_LIMIT_WINDOW_SECONDS"])


def check(key: str) -> None:
    """Raise :class:`RateLimited` (with ``retry_after`` seconds) if ``key`` is over its limit."""
    attempts, window = _limits()
    now = utcnow()
    count, oldest = store.hits_since(key, store.window_start(now, window))
    if count >= attempts and oldest is not None:
        retry = math.ceil(window - (now - oldest).total_seconds())
        raise RateLimited(
            retry_after=retry,
            details={"limit": attempts, "window_seconds": window},
        )


def record_failure(key: str) -> None:
    """Count one failed attempt for ``key`` (committed at once, whatever the request does next)."""
    _attempts, window = _limits()
    now = utcnow()
    with writing():
        store.purge_before(key, store.window_start(now, window))
        store.add_hit(key, now)


def login_key(ip: str, username: str) -> str:
    """The counter key of login attempts for a user name from an address."""
    return f"login:{ip}:{username.strip().lower()}"


def enrollment_key(ip: str) -> str:
    """The counter key of enrollment attempts from an address."""
    return f"enroll:{ip}"
