"""Conflicts the merge puts in front of a reviewer, and the duplicate-household check.

A :class:`Conflict` is derived from a record's writes, never stored on its own: the same set of
writes always yields the same conflicts with the same ids, whatever order the ops arrived in. Its
id is a hash of the record id, the kind, the path and the sorted competing stamps, so when a new
competing write arrives the conflict gets a new id (the server closes the old one).

Kinds:

* ``field`` — a ``review`` field changed concurrently to different values, or an ``lww`` race
  whose winner carries a suspect (future) clock stamp;
* ``delete_edit`` — the record was deleted by an op that did not see some edits;
* ``row_delete_edit`` — a repeat row was deleted by an op that did not see some edits in it;
* ``duplicate_household`` — two records claim the same household in one form and round
  (:func:`detect_duplicate_household`; the server calls it, the merge does not).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sync_protocol.clock import Stamp, StampFormatError
from sync_protocol.errors import ProtocolError
from sync_protocol.ops import TOMBSTONE, Op, OpFormatError, _check_json_value, is_tombstone

__all__ = [
    "CONFLICT_KINDS",
    "CONFLICT_REASONS",
    "Conflict",
    "ConflictFormatError",
    "ExistingRecord",
    "conflict_id_for",
    "detect_duplicate_household",
    "household_key",
]

CONFLICT_KINDS: Final = ("field", "delete_edit", "row_delete_edit", "duplicate_household")
CONFLICT_REASONS: Final = ("review", "suspect_clock", "delete", "duplicate")


class ConflictFormatError(ProtocolError):
    """A conflict's dict form is malformed."""

    code = "conflict_invalid"
    default_message = "the conflict description is malformed"
    default_message_zh = "冲突记录格式错误"


def conflict_id_for(record_id: str, kind: str, path: str, stamps: Iterable[str]) -> str:
    """Deterministic conflict id: ``c-`` + 32 hex of SHA-256 over record, kind, path, stamps."""
    material = json.dumps(
        [record_id, kind, path, sorted(set(stamps))], separators=(",", ":"), ensure_ascii=False
    )
    return "c-" + hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Conflict:
    """One open conflict with the values a reviewer compares.

    ``candidates`` lists every competing write, oldest stamp first, as dicts with ``path``,
    ``stamp``, ``device``, ``value`` and ``suspect``. For a ``field`` conflict, ``mine`` is the value
    of the newest competing write (the provisional value the record shows), ``theirs`` the next
    newest, ``base`` the value they both replaced (``None`` if unknown). For delete conflicts,
    ``mine`` is the tombstone, ``theirs`` maps each unseen edited path to its value, and ``base``
    maps each path the delete saw to the value it saw. ``reason`` says why: ``review``,
    ``suspect_clock``, ``delete`` or ``duplicate``.
    """

    conflict_id: str
    record_id: str
    kind: str
    path: str
    base: Any
    mine: Any
    theirs: Any
    candidates: tuple[Mapping[str, Any], ...] = field(default=())
    stamps: tuple[str, ...] = field(default=())
    reason: str = "review"

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready dict form."""
        return {
            "conflict_id": self.conflict_id,
            "record_id": self.record_id,
            "kind": self.kind,
            "path": self.path,
            "reason": self.reason,
            "base": _plain_deep(self.base),
            "mine": _plain_deep(self.mine),
            "theirs": _plain_deep(self.theirs),
            "candidates": [_plain_deep(dict(candidate)) for candidate in self.candidates],
            "stamps": list(self.stamps),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Conflict:
        """Rebuild a conflict from :meth:`to_dict` output.

        Strict: every key :meth:`to_dict` writes must be there with its type — ``conflict_id``
        ``c-`` + 32 hex, ``kind`` and ``reason`` from their lists, ``candidates`` a list of
        objects, ``stamps`` a list of strings (stamp texts, except for a duplicate household,
        whose stamps are the records' created stamps and may be empty), values JSON.

        Raises:
            ConflictFormatError: naming the key, for anything else.
        """
        if not isinstance(data, Mapping):
            raise ConflictFormatError(f"a conflict must be an object, got {type(data).__name__}")
        missing = [key for key in _CONFLICT_KEYS if key not in data]
        if missing:
            raise ConflictFormatError(f"conflict keys missing: {', '.join(missing)}")
        kind = data["kind"]
        if not isinstance(kind, str) or kind not in CONFLICT_KINDS:
            raise ConflictFormatError(f"unknown conflict kind {_short(kind)}")
        conflict_id = data["conflict_id"]
        if not isinstance(conflict_id, str) or not _CONFLICT_ID_RE.fullmatch(conflict_id):
            raise ConflictFormatError(f"conflict_id: want c- and 32 hex, got {_short(conflict_id)}")
        record_id, path = data["record_id"], data["path"]
        if not isinstance(record_id, str) or not record_id:
            raise ConflictFormatError(
                f"record_id: want a non-empty string, got {_short(record_id)}"
            )
        if not isinstance(path, str):
            raise ConflictFormatError(f"path: want a string, got {_short(path)}")
        reason = data.get("reason", "review")
        if not isinstance(reason, str) or reason not in CONFLICT_REASONS:
            raise ConflictFormatError(
                f"reason: want one of {CONFLICT_REASONS}, got {_short(reason)}"
            )
        raw_stamps = data["stamps"]
        if not isinstance(raw_stamps, list) or not all(isinstance(s, str) for s in raw_stamps):
            raise ConflictFormatError(f"stamps: want a list of strings, got {_short(raw_stamps)}")
        if kind != "duplicate_household":
            for stamp in raw_stamps:
                try:
                    Stamp.parse(stamp)
                except StampFormatError as exc:
                    raise ConflictFormatError(f"stamps: {exc.message}") from None
        raw_candidates = data["candidates"]
        if not isinstance(raw_candidates, list):
            raise ConflictFormatError(f"candidates: want a list, got {_short(raw_candidates)}")
        candidates = []
        for k, candidate in enumerate(raw_candidates):
            if not isinstance(candidate, Mapping) or not all(isinstance(c, str) for c in candidate):
                raise ConflictFormatError(
                    f"candidates[{k}]: want an object, got {_short(candidate)}"
                )
            _conflict_json(candidate, f"candidates[{k}]")
            candidates.append(_marker_deep(dict(candidate)))
        for key in ("base", "mine", "theirs"):
            _conflict_json(data[key], key)
        return cls(
            conflict_id=conflict_id,
            record_id=record_id,
            kind=kind,
            path=path,
            base=_marker_deep(data["base"]),
            mine=_marker_deep(data["mine"]),
            theirs=_marker_deep(data["theirs"]),
            candidates=tuple(candidates),
            stamps=tuple(raw_stamps),
            reason=reason,
        )


_CONFLICT_KEYS: Final = (
    "conflict_id",
    "record_id",
    "kind",
    "path",
    "base",
    "mine",
    "theirs",
    "candidates",
    "stamps",
)
_CONFLICT_ID_RE: Final = re.compile(r"c-[0-9a-f]{32}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _conflict_json(value: Any, where: str) -> None:
    try:
        _check_json_value(where, value)
    except OpFormatError as exc:
        raise ConflictFormatError(f"{where}: {exc.message}") from None


def _plain_deep(value: Any) -> Any:
    # The JSON form of the tombstone is a plain dict; keep Python's read-only marker out of output.
    if is_tombstone(value):
        return {"$tombstone": True}
    if isinstance(value, dict):
        return {key: _plain_deep(item) for key, item in value.items()}
    return value


def _marker_deep(value: Any) -> Any:
    if is_tombstone(value):
        return TOMBSTONE
    if isinstance(value, dict):
        return {key: _marker_deep(item) for key, item in value.items()}
    return value


def household_key(household: Mapping[str, str]) -> str:
    """The identity of a household: ``"<village_code>:<household_no>"``."""
    return f"{household['village_code']}:{household['household_no']}"


ExistingRecord = tuple[str, "str | Mapping[str, str]", str, "str | None", str]
"""``(record_id, household key or household dict, form_id, round, created stamp text)``."""


def detect_duplicate_household(existing: Iterable[Sequence[Any]], op: Op) -> Conflict | None:
    """Return a ``duplicate_household`` conflict when ``op`` creates a second record of a household.

    ``existing`` yields ``(record_id, household, form_id, round, created_stamp)`` for records the
    server already holds (``household`` as a dict or as :func:`household_key` text). Only records
    of the same form and round with the same household and another record id count; when several
    match, the earliest created (then the smallest record id) is named. The conflict id depends on
    the two record ids, not on which arrived first, so both sides of a race report the same id.
    Returns ``None`` when ``op`` names no household or nothing matches.
    """
    if op.household is None:
        return None
    key = household_key(op.household)
    matches: list[tuple[str, str]] = []
    for record_id, household, form_id, round_, created in existing:
        other_key = household if isinstance(household, str) else household_key(household)
        if (
            other_key == key
            and form_id == op.form_id
            and round_ == op.round
            and record_id != op.record_id
        ):
            matches.append((created, record_id))
    if not matches:
        return None
    created, other_id = min(matches)
    first, second = sorted((op.record_id, other_id))
    conflict_id = conflict_id_for(
        first, "duplicate_household", f"{op.form_id}/{op.round or ''}/{key}", [first, second]
    )
    candidates = tuple(
        sorted(
            (
                {"record_id": other_id, "stamp": created, "household": key},
                {"record_id": op.record_id, "stamp": op.hlc, "household": key},
            ),
            key=lambda c: (c["stamp"], c["record_id"]),
        )
    )
    return Conflict(
        conflict_id=conflict_id,
        record_id=op.record_id,
        kind="duplicate_household",
        path="",
        base=None,
        mine={"record_id": op.record_id, "created": op.hlc},
        theirs={"record_id": other_id, "created": created},
        candidates=candidates,
        stamps=tuple(sorted({created, op.hlc})),
        reason="duplicate",
    )
