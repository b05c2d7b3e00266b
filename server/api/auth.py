"""``/api/v1/auth``: log in for a bearer token, log out (revokes it), who am I."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from marshmallow import Schema, fields, validate

from server.api import API_PREFIX
from server.api.guard import authenticated, bearer_token, client_ip
from server.api.wire import accepts, returns, service_context
from server.services import auth
from server.services.access import Principal

blueprint = Blueprint("auth", __name__, url_prefix=f"{API_PREFIX}/auth")


class LoginSchema(Schema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=80))
    password = fields.String(required=True, load_only=True, validate=validate.Length(max=1024))


class PrincipalSchema(Schema):
    user_id = fields.Integer(dump_only=True)
    username = fields.String(dump_only=True)
    role = fields.String(dump_only=True)
    area_prefix = fields.String(dump_only=True)


class TokenSchema(Schema):
    token = fields.String(dump_only=True)
    token_type = fields.String(dump_only=True)
    expires_at = fields.DateTime(dump_only=True)
    user = fields.Nested(PrincipalSchema, dump_only=True)


@blueprint.post("/login")
@accepts(LoginSchema())
@returns(TokenSchema())
def login(body: dict[str, Any]) -> Any:
    """Log in with user name and password; returns a bearer token (401 wrong, 429 too many)."""
    result = auth.login(service_context(), body["username"], body["password"], ip=client_ip())
    return TokenSchema().dump(
        {
            "token": result.token,
            "token_type": "Bearer",
            "expires_at": result.expires_at,
            "user": result.principal,
        }
    )


@blueprint.post("/logout")
@authenticated()
def logout(principal: Principal) -> Any:
    """Revoke the token used for this request; it is refused from now on."""
    auth.logout(bearer_token(), principal, ip=client_ip())
    return {"revoked": True}


@blueprint.get("/me")
@authenticated()
@returns(PrincipalSchema())
def me(principal: Principal) -> Any:
    """The account the token belongs to."""
    return PrincipalSchema().dump(principal)
