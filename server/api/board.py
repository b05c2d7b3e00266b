"""``/api/v1/board``: the 动态清零 board of the caller's area (open problems with age, cleared
with evidence, recurring, false positives per department and rule)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from marshmallow import Schema, fields, validate

from server.api import API_PREFIX
from server.api.guard import authenticated
from server.api.wire import load_query
from server.services import board
from server.services.access import Principal

blueprint = Blueprint("board", __name__, url_prefix=f"{API_PREFIX}/board")


class BoardQuerySchema(Schema):
    area = fields.String(load_default=None)
    level = fields.String(load_default="village", validate=validate.OneOf(board.LEVELS))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=0, max=5000))


@blueprint.get("")
@authenticated()
def show(principal: Principal) -> Any:
    """The 动态清零 board (``?level=village|township&area=&limit=``).

    Open problems by type with their age per village or township, oldest first; problems
    awaiting the next round with the record that shows them solved; cleared ones with their
    evidence; recurring problems (back in the next round); false-positive rates of the
    verification tasks per department and rule.
    """
    return board.board(principal, **load_query(BoardQuerySchema()))
