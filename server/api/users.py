"""``/api/v1/users``: county admins create accounts (township reviewers, other admins)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from marshmallow import Schema, fields, validate

from server.api import API_PREFIX
from server.api.auth import PrincipalSchema
from server.api.guard import actor_for, authenticated
from server.api.wire import accepts, returns
from server.errors import Forbidden
from server.services import auth
from server.services.access import COUNTY_ADMIN, ROLES, Principal

blueprint = Blueprint("users", __name__, url_prefix=f"{API_PREFIX}/users")


class NewUserSchema(Schema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=80))
    password = fields.String(required=True, load_only=True, validate=validate.Length(max=1024))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    area_prefix = fields.String(load_default="")
    display_name = fields.String(load_default="", validate=validate.Length(max=120))


class AccountSchema(Schema):
    user_id = fields.Integer(dump_only=True)
    username = fields.String(dump_only=True)
    role = fields.String(dump_only=True)
    area_prefix = fields.String(dump_only=True)
    display_name = fields.String(dump_only=True)
    active = fields.Boolean(dump_only=True)
    created_at = fields.DateTime(dump_only=True)


@blueprint.get("")
@authenticated(COUNTY_ADMIN)
@returns(AccountSchema(many=True))
def list_users(principal: Principal) -> Any:
    """Accounts inside your area."""
    return AccountSchema(many=True).dump(auth.list_accounts(principal))


@blueprint.post("/<int:user_id>/disable")
@authenticated(COUNTY_ADMIN)
@returns(AccountSchema())
def disable_user(principal: Principal, user_id: int) -> Any:
    """Disable an account: its tokens are refused at once and it cannot log in."""
    return AccountSchema().dump(auth.set_account_active(actor_for(principal), user_id, False))


@blueprint.post("/<int:user_id>/enable")
@authenticated(COUNTY_ADMIN)
@returns(AccountSchema())
def enable_user(principal: Principal, user_id: int) -> Any:
    """Enable a disabled account again (it logs in with its old password)."""
    return AccountSchema().dump(auth.set_account_active(actor_for(principal), user_id, True))


@blueprint.post("")
@authenticated(COUNTY_ADMIN)
@accepts(NewUserSchema())
@returns(PrincipalSchema(), 201)
def create_user(principal: Principal, body: dict[str, Any]) -> Any:
    """Create an account inside the admin's own area (409 when the name is taken)."""
    area = body["area_prefix"] or principal.area_prefix
    if not area.startswith(principal.area_prefix):
        raise Forbidden(
            en="the new account's area must lie inside yours",
            zh="新账号的管辖范围须在您的范围之内",
            code="outside_area",
        )
    created = auth.create_user(
        username=body["username"],
        password=body["password"],
        role=body["role"],
        area_prefix=area,
        display_name=body["display_name"],
        actor=principal.actor,
        actor_user_id=principal.user_id,
    )
    return PrincipalSchema().dump(created), 201
