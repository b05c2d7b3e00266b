"""Who is calling: the authenticated principal, its role and its area."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.errors import Forbidden, ValidationFailed
from server.storage import audit as audit_store

COUNTY_ADMIN = "county_admin"
TOWNSHIP_REVIEWER = "township_reviewer"
ROLES = (COUNTY_ADMIN, TOWNSHIP_REVIEWER)

#: Lengths of the area prefixes a scope or an account may have (county, township, village).
AREA_LENGTHS = {COUNTY_ADMIN: (0, 6), TOWNSHIP_REVIEWER: (9,)}
AREA_RULES = {
    COUNTY_ADMIN: ("空（不限）或6位县级代码", "empty (no limit) or a 6-digit county code"),
    TOWNSHIP_REVIEWER: ("9位乡镇代码", "a 9-digit township code"),
}
SCOPE_LENGTHS = (6, 9, 12)
#: A tablet works for one village team or one township team, never a whole county (DESIGN §3).
DEVICE_SCOPE_LENGTHS = (9, 12)


@dataclass(frozen=True)
class Principal:
    """An authenticated admin user (what a request may do is decided from this alone)."""

    user_id: int
    username: str
    role: str
    area_prefix: str  # "" = the whole database (a county admin without county limit)

    @property
    def actor(self) -> str:
        """How the audit log names this principal."""
        return self.username

    def require(self, *roles: str) -> None:
        """Raise :class:`Forbidden` unless this principal has one of ``roles``."""
        if self.role not in roles:
            raise Forbidden(
                en=f"this needs the role {' or '.join(roles)}",
                zh="当前角色无权执行此操作",
                code="role_forbidden",
                details={"required_roles": list(roles), "role": self.role},
            )


def check_scope(scope: str, field: str = "scope", lengths: tuple[int, ...] = SCOPE_LENGTHS) -> str:
    """Return ``scope`` stripped if it is an area code prefix of one of ``lengths`` digits
    (county 6, township 9, village 12).

    Raises :class:`ValidationFailed` with ``details.fields[field]`` otherwise.
    """
    scope = (scope or "").strip()
    if not (scope.isascii() and scope.isdigit() and len(scope) in lengths):
        names = {
            6: ("6位（县）", "6 (county)"),
            9: ("9位（乡镇）", "9 (township)"),
            12: ("12位（村）", "12 (village)"),
        }
        raise ValidationFailed(
            en="a scope is an area code of "
            + " or ".join(names[n][1] for n in lengths)
            + " digits",
            zh="数据范围应为" + "或".join(names[n][0] for n in lengths) + "行政区划代码",
            details={"fields": {field: [" or ".join(str(n) for n in lengths) + " digits"]}},
        )
    return scope


def check_area(role: str, area_prefix: str) -> str:
    """Validate an account's area prefix for its role; returns it stripped.

    County admins: empty (no limit) or a 6-digit county; township reviewers: 9 digits.
    Raises :class:`ValidationFailed` for a mismatch or an unknown role.
    """
    area_prefix = (area_prefix or "").strip()
    if role not in ROLES:
        raise ValidationFailed(
            en=f"role must be one of {', '.join(ROLES)}",
            zh="角色无效",
            details={"fields": {"role": [f"one of {', '.join(ROLES)}"]}},
        )
    ok_digits = area_prefix == "" or (area_prefix.isascii() and area_prefix.isdigit())
    if not ok_digits or len(area_prefix) not in AREA_LENGTHS[role]:
        expected = AREA_RULES[role]
        raise ValidationFailed(
            en=f"the area of a {role} is {expected[1]}",
            zh=f"该角色的管辖范围应为{expected[0]}",
            details={"fields": {"area_prefix": [expected[1]]}},
        )
    return area_prefix


@dataclass(frozen=True)
class Actor:
    """Who performs an audited action: an admin over HTTP, or the command line."""

    name: str
    user_id: int | None = None
    area_prefix: str = ""
    ip: str = ""

    @classmethod
    def of(cls, principal: Principal, ip: str = "") -> Actor:
        """The actor for an authenticated admin calling from ``ip``."""
        return cls(principal.actor, principal.user_id, principal.area_prefix, ip)

    def audit(
        self,
        action: str,
        *,
        target_type: str = "",
        target_id: str = "",
        area_code: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        """Log ``action`` as done by this actor (name, user id, address), inside the caller's
        write transaction, so the entry commits with the action or not at all."""
        audit_store.add_entry(
            actor=self.name,
            actor_user_id=self.user_id,
            ip=self.ip,
            action=action,
            target_type=target_type,
            target_id=target_id,
            area_code=area_code,
            details=details,
        )

    def require_area(self, code: str) -> None:
        """Raise :class:`Forbidden` unless ``code`` lies inside this actor's area."""
        if not code.startswith(self.area_prefix):
            raise Forbidden(
                en=f"{code} is outside your area {self.area_prefix}",
                zh=f"{code} 不在您的管辖范围 {self.area_prefix} 内",
                code="outside_area",
            )


#: The command line (``server issue-code`` …): operators with shell access see everything.
CLI_ACTOR = Actor("cli")
#: The scheduled jobs (``server.jobs``).
SCHEDULER_ACTOR = Actor("scheduler")
#: The command line as a principal (``server export``): a county admin over the whole database.
CLI_PRINCIPAL = Principal(user_id=0, username=CLI_ACTOR.name, role=COUNTY_ADMIN, area_prefix="")
