"""Bearer-token authentication and role checks for admin routes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request

from server.errors import Unauthorized
from server.services import auth
from server.services.access import Actor, Principal

F = TypeVar("F", bound=Callable[..., Any])


def bearer_token() -> str:
    """The token of the ``Authorization: Bearer …`` header; raises :class:`Unauthorized`."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            en="send Authorization: Bearer <token> (POST /api/v1/auth/login gives one)",
            zh="缺少登录凭据，请先登录",
            code="missing_token",
        )
    return token.strip()


def client_ip() -> str:
    """The caller's address as the WSGI server saw it (proxies are not trusted by default)."""
    return request.remote_addr or ""


def authenticated(*roles: str) -> Callable[[F], F]:
    """Decorate a view: require a valid token (and one of ``roles`` if given).

    The view receives ``principal=`` (a :class:`Principal`). Raises :class:`Unauthorized` for a
    missing/invalid token and :class:`server.errors.Forbidden` for a role not in ``roles``.
    """

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = auth.authenticate(bearer_token())
            if roles:
                principal.require(*roles)
            g.principal = principal
            kwargs["principal"] = principal
            return view(*args, **kwargs)

        wrapper.requires_auth = True  # type: ignore[attr-defined]
        wrapper.allowed_roles = roles  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def actor_for(principal: Principal) -> Actor:
    """The audit actor of a principal calling now."""
    return Actor.of(principal, client_ip())
