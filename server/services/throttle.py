"""Rate limiting of login and enrollment attempts: a sliding window stored in the database.

Only failed attempts count, keyed by client address (plus user name for logins, with a wider
limit per address across names), so one mistyping clerk does not lock out a colleague behind
the same township NAT, and several app processes behind one WSGI server see the same counts.
An attempt is counted (:func:`claim`) before it is judged and un-counted (:func:`release`) when
it succeeds, so parallel attempts cannot slip past the limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from server.errors import RateLimited
from server.services.context import ServiceContext
from server.storage import throttle as store
from server.storage.database import writing


def _limits(ctx: ServiceContext) -> tuple[int, int]:
    config = ctx.settings
    return int(config["RATE_LIMIT_ATTEMPTS"]), int(config["RATE_LIMIT_WINDOW_SECONDS"])


@dataclass(frozen=True)
class Claim:
    """The attempts :func:`claim` counted; :func:`release` them when the attempt succeeds."""

    hit_ids: list[int]


def claim(ctx: ServiceContext, limits: list[tuple[str, int]]) -> Claim:
    """Count one attempt against every ``(key, allowed)`` of ``limits``, in one transaction with
    the check, before the attempt is judged.

    Raises :class:`RateLimited` (with ``retry_after`` seconds; nothing counted) when a key
    already has ``allowed`` attempts in the window. Counting first, under a lock per key, means
    40 parallel guesses cannot all be checked against a count of 9: the 11th of a limit of 10
    is refused whatever the timing.
    """
    _attempts, window = _limits(ctx)
    now = ctx.now()
    since = store.window_start(now, window)
    with writing():
        store.lock_keys([key for key, _ in limits])
        for key, allowed in limits:
            store.purge_before(key, since)
            count, oldest = store.hits_since(key, since)
            if count >= allowed and oldest is not None:
                retry = math.ceil(window - (now - oldest).total_seconds())
                raise RateLimited(
                    retry_after=max(retry, 1),
                    details={"limit": allowed, "window_seconds": window},
                )
        return Claim([store.add_hit(key, now) for key, _ in limits])


def release(claimed: Claim) -> None:
    """Un-count a claimed attempt that succeeded: only failures count against a limit."""
    with writing():
        store.delete_hits(claimed.hit_ids)


def login_limits(ctx: ServiceContext, ip: str, username: str) -> list[tuple[str, int]]:
    """The limits a login attempt counts against: per address and user name (one mistyping
    clerk does not lock out a colleague behind the same NAT), and per address across names
    (spraying many user names from one address is limited too)."""
    attempts, _window = _limits(ctx)
    per_address = int(ctx.settings["RATE_LIMIT_ADDRESS_ATTEMPTS"])
    return [(login_key(ip, username), attempts), (f"login-address:{ip}", per_address)]


def enrollment_limits(ctx: ServiceContext, ip: str) -> list[tuple[str, int]]:
    """The limit an enrollment attempt counts against: per address."""
    attempts, _window = _limits(ctx)
    return [(enrollment_key(ip), attempts)]


def login_key(ip: str, username: str) -> str:
    """The counter key of login attempts for a user name from an address."""
    return f"login:{ip}:{username.strip().lower()}"


def enrollment_key(ip: str) -> str:
    """The counter key of enrollment attempts from an address."""
    return f"enroll:{ip}"
