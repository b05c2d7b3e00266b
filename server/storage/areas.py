"""Area names: township and village codes and the names a county admin gave them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from server.storage.database import db
from server.storage.models import AreaName
from server.storage.scoping import under_prefix
from server.storage.types import utcnow


@dataclass(frozen=True)
class NamedArea:
    """One named code, as the service hands it on."""

    code: str
    name: str
    updated_at: datetime
    updated_by: str


def set_names(names: dict[str, str], *, updated_by: str) -> None:
    """Create or replace the name of every code in ``names`` (inside a write transaction)."""
    if not names:
        return
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    statement = insert(AreaName).values(
        [
            {"code": code, "name": name, "updated_at": now, "updated_by": updated_by}
            for code, name in names.items()
        ]
    )
    db.session.execute(
        statement.on_conflict_do_update(
            index_elements=["code"],
            set_={
                "name": statement.excluded.name,
                "updated_at": statement.excluded.updated_at,
                "updated_by": statement.excluded.updated_by,
            },
        )
    )


def delete_name(code: str) -> bool:
    """Forget the name of ``code``; False when it had none."""
    return bool(db.session.execute(sa.delete(AreaName).where(AreaName.code == code)).rowcount)


def names_under(prefix: str) -> dict[str, str]:
    """Code → name of every named code inside ``prefix`` (the prefix itself included)."""
    rows = db.session.execute(
        sa.select(AreaName.code, AreaName.name).where(under_prefix(AreaName.code, prefix))
    )
    return {code: name for code, name in rows}


def list_names(prefix: str) -> list[NamedArea]:
    """Every named code inside ``prefix``, by code."""
    rows = db.session.scalars(
        sa.select(AreaName).where(under_prefix(AreaName.code, prefix)).order_by(AreaName.code)
    )
    return [NamedArea(r.code, r.name, r.updated_at, r.updated_by) for r in rows]
