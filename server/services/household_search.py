"""Finding a household by village, household number, a member's name or an ID number.

The search runs inside the caller's area (a reviewer never finds another township's
household, and naming another area's village is refused as outside the area, which pages show
as absent). The database narrows the candidates (``storage.household_search``); this module
confirms each one on the member rows themselves. An ID number is matched on its normalised
spelling (full-width digits, spaces, dashes and a lower-case ``x`` all fold away) and shown
masked unless the role may see sensitive fields, exactly as record views mask it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from forms.identity import IdNumberError, normalize_id_number
from forms.instruments import ROSTER
from server.errors import ValidationFailed
from server.services.access import COUNTY_ADMIN, Principal
from server.services.indicators import effective_area
from server.services.masking import mask
from server.storage import household_search as store

#: At most this many households are shown; a search wider than that asks for more detail.
MAX_RESULTS = 50
#: How many candidate rosters the database may hand over for one search.
MAX_CANDIDATES = 500
#: Shorter than a full ID number could match many people: refused rather than listed.
MIN_ID_LENGTH = 15


@dataclass(frozen=True)
class FoundMember:
    """A member whose name or ID number matched (ID masked unless the caller may see it)."""

    name: str
    relation: str
    id_number: str


@dataclass(frozen=True)
class FoundHousehold:
    """One household found, with the members that matched (none for a number search)."""

    village_code: str
    household_no: str
    round: str = ""
    members: list[FoundMember] = field(default_factory=list)


@dataclass(frozen=True)
class SearchResult:
    """The households found (at most :data:`MAX_RESULTS`) and whether there were more."""

    households: list[FoundHousehold]
    more: bool


def _id_key(value: Any) -> str | None:
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    try:
        return normalize_id_number(value)[:18]
    except IdNumberError:
        return None


def _members(data: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    rows = data.get("members")
    if isinstance(rows, Mapping):  # keyed by row id in some stored shapes
        rows = list(rows.values())
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, Mapping):
            yield row


def _query_id(id_number: str) -> str:
    try:
        key = normalize_id_number(id_number)[:18]
    except IdNumberError as exc:
        raise ValidationFailed(
            en=str(exc), zh=exc.message_zh, details={"fields": {"id_number": [str(exc)]}}
        ) from None
    if len(key) < MIN_ID_LENGTH:
        raise ValidationFailed(
            en="give the whole ID number (15 or 18 characters)",
            zh="请输入完整的身份证号（15或18位）",
            details={"fields": {"id_number": ["15 or 18 characters"]}},
        )
    return key


def search(
    principal: Principal,
    *,
    area: str | None = None,
    household_no: str | None = None,
    name: str | None = None,
    id_number: str | None = None,
) -> SearchResult:
    """Households inside the principal's area (narrowed to ``area``) whose number starts with
    ``household_no``, with a member whose name contains ``name`` and whose ID number is
    ``id_number`` (each filter only when given; at least one must be).

    Raises :class:`ValidationFailed` for an area that is not digits, a search with no filter, or
    an ID number that is not one; :class:`server.errors.Forbidden` (``outside_area``) for an
    area outside the principal's.
    """
    prefix = effective_area(principal, area)
    number = (household_no or "").strip()
    name = " ".join((name or "").split())
    key = _query_id(id_number) if (id_number or "").strip() else None
    if not (number or name or key):
        raise ValidationFailed(
            en="give a household number, a name or an ID number",
            zh="请填写户编号、姓名或身份证号",
            details={"fields": {"name": ["required"]}},
        )
    if not (name or key):
        pairs = store.households_numbered(prefix, number, limit=MAX_RESULTS + 1)
        found = [FoundHousehold(v, h) for v, h in pairs]
        return SearchResult(found[:MAX_RESULTS], len(found) > MAX_RESULTS)
    reveal = principal.role == COUNTY_ADMIN
    candidates = store.rosters_containing(
        prefix, ROSTER, fragment=name or None, characters=key, limit=MAX_CANDIDATES
    )
    households: dict[tuple[str, str], FoundHousehold] = {}
    for row in candidates:
        where = (row.village_code, row.household_no)
        if where in households or not row.household_no.startswith(number):
            continue  # rosters come newest round first: the first one found is shown
        members = [
            FoundMember(
                name=str(m.get("name") or ""),
                relation=str(m.get("relation") or ""),
                id_number=str(m.get("id_number") or "")
                if reveal
                else (mask(str(m.get("id_number") or "")) or ""),
            )
            for m in _members(row.data)
            if (not name or name in str(m.get("name") or ""))
            and (key is None or _id_key(m.get("id_number")) == key)
        ]
        if members:
            households[where] = FoundHousehold(*where, round=row.round, members=members)
    found = list(households.values())
    return SearchResult(
        found[:MAX_RESULTS], len(found) > MAX_RESULTS or len(candidates) >= MAX_CANDIDATES
    )
