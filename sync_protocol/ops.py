"""Sync ops: one device's edit of one record (contracts §5).

An :class:`Op` names the record, the changed field paths with their new values, and for every path
the stamp(s) of the value the device last saw there (``base``). Its ``hlc`` stamp identifies each
of its writes. Three kinds:

* ``put`` — set field values. A :data:`TOMBSTONE` value on a row path ``repeat/<row_id>`` deletes
  that repeat row (``base`` then also lists the paths under the row the device saw). A put that
  names the path ``""`` with the value ``None`` (and the record tombstone's stamp as its base)
  restores a deleted record.
* ``delete`` — delete the whole record. ``changes`` is empty; ``base`` lists every path the device
  saw, with its stamp (``""`` included if it had a value), so the merge can tell which edits the
  delete did not see.
* ``resolve`` — a reviewer's resolution of conflict ``conflict_id``: ``changes`` holds the chosen or
  entered values, ``base`` lists *all* competing head stamps of each path (a list), so the
  resolution supersedes every one of them. It then propagates like any other write.

``base`` values are a stamp text, a list of stamp texts (several heads were seen, e.g. in a
resolution), or ``None`` (the device saw no value).

The tombstone marker travels in JSON as ``{"$tombstone": true}``; a field value must never be an
object whose only key is ``"$tombstone"``.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

from sync_protocol.clock import Stamp, StampFormatError
from sync_protocol.errors import ProtocolError

__all__ = [
    "KINDS",
    "TOMBSTONE",
    "TOMBSTONE_KEY",
    "Op",
    "OpFormatError",
    "base_stamps",
    "delete_op",
    "delete_row_op",
    "is_tombstone",
    "put_op",
    "resolve_op",
]

TOMBSTONE_KEY: Final = "$tombstone"
KINDS: Final = ("put", "delete", "resolve")

_FORM_ID_RE = re.compile(r"[a-z][a-z0-9_]*")
_MAX_ID_LENGTH = 128


class _TombstoneMarker(dict):
    """The read-only ``{"$tombstone": true}`` marker (a dict, so ``json.dumps`` writes it as is)."""

    def _read_only(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("TOMBSTONE is read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "TOMBSTONE"

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(TOMBSTONE_KEY)


TOMBSTONE: Final[dict[str, bool]] = _TombstoneMarker({TOMBSTONE_KEY: True})
"""Value that deletes what sits at a path: a repeat row (``repeat/<row_id>``) or the record (``""``)."""


def is_tombstone(value: Any) -> bool:
    """True when ``value`` is the tombstone marker (the Python constant or its JSON form)."""
    return isinstance(value, dict) and len(value) == 1 and value.get(TOMBSTONE_KEY) is True


class OpFormatError(ProtocolError):
    """An op (or its dict form) is malformed; ``field`` names the offending field."""

    code = "op_invalid"
    default_message = "the sync op is malformed"
    default_message_zh = "同步操作格式错误"

    def __init__(self, field_name: str, problem: str, problem_zh: str | None = None) -> None:
        self.field = field_name
        super().__init__(
            f"op field {field_name!r}: {problem}",
            message_zh=f"同步操作字段 {field_name!r} 无效"
            + (f"：{problem_zh}" if problem_zh else ""),
        )


def _fail(field_name: str, problem: str, problem_zh: str | None = None) -> NoReturn:
    raise OpFormatError(field_name, problem, problem_zh)


def _check_id(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value or len(value) > _MAX_ID_LENGTH:
        _fail(
            name, f"want a non-empty string of at most {_MAX_ID_LENGTH} characters, got {value!r}"
        )


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(name, f"want an integer >= {minimum}, got {value!r}")


#: Values :func:`_check_json_value` accepts as they are (exact types: a subclass is checked).
_PLAIN_TYPES: Final = (str, int, bool)


def _check_json_value(name: str, value: Any) -> None:
    """Accept exactly the JSON values of contracts §3 (finite numbers, string keys)."""
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            _fail(name, "numbers must be finite")
        return
    if isinstance(value, list):
        for item in value:
            _check_json_value(name, item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                _fail(name, f"object keys must be strings, got {key!r}")
            _check_json_value(name, item)
        return
    _fail(name, f"value of type {type(value).__name__} is not JSON")


def _check_stamp_text(name: str, value: Any) -> None:
    try:
        Stamp.parse(value)
    except StampFormatError as exc:
        _fail(name, exc.message, "时间戳格式无效")


def _check_base_entry(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, str):
        _check_stamp_text(name, value)
        return
    if isinstance(value, list) and value:
        for item in value:
            if not isinstance(item, str):
                _fail(name, f"want stamp texts in the list, got {item!r}")
            _check_stamp_text(name, item)
        return
    _fail(name, f"want a stamp text, a non-empty list of stamp texts or null, got {value!r}")


def _check_path(name: str, path: Any) -> None:
    # Paths are opaque to the protocol apart from the row prefix rule; only the shape that would
    # break prefix matching is refused.
    if not isinstance(path, str):
        _fail(name, f"paths must be strings, got {path!r}")
    if path and (path.startswith("/") or path.endswith("/") or "//" in path):
        _fail(name, f"malformed field path {path!r}", "字段路径格式错误")


def _check_no_edit_inside_tombstone(changes: Mapping[str, Any]) -> None:
    """Refuse an op that tombstones ``P`` and also writes a path inside ``P``.

    Such an op would conflict with itself (its tombstone has not "seen" its own edit, rule 6 of
    protocol-merge.md), so a device must send one or the other.
    """
    tombstoned = [path for path, value in changes.items() if is_tombstone(value)]
    if not tombstoned:
        return
    paths = sorted(changes)
    for scope in sorted(tombstoned):
        if scope == "":
            inside = [p for p in paths if p != ""]
        else:
            prefix = scope + "/"
            start = bisect.bisect_left(paths, prefix)
            inside = []
            for path in paths[start:]:
                if not path.startswith(prefix):
                    break
                inside.append(path)
        if inside:
            _fail(
                f"changes.{inside[0]}",
                f"the op also tombstones {scope!r}, which contains this path: an op deletes a "
                "row or record or edits inside it, never both",
                "同一操作不能既删除又修改其中的字段",
            )


def base_stamps(entry: str | Sequence[str] | None) -> tuple[str, ...]:
    """Normalise one ``base`` entry to a tuple of stamp texts (empty for ``None``)."""
    if entry is None:
        return ()
    if isinstance(entry, str):
        return (entry,)
    return tuple(entry)


@dataclass(frozen=True, slots=True)
class Op:
    """One edit of one record by one device (contracts §5); validated on construction.

    Raises:
        OpFormatError: (from the constructor) naming the first malformed field.
    """

    device_id: str
    seq: int
    record_id: str
    form_id: str
    form_version: int
    household: dict[str, str] | None
    round: str | None
    kind: str
    changes: dict[str, Any]
    base: dict[str, str | list[str] | None]
    base_revision: int
    hlc: str
    conflict_id: str | None = None
    _stamp: Stamp = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_id("device_id", self.device_id)
        _check_int("seq", self.seq, 1)
        _check_id("record_id", self.record_id)
        if not isinstance(self.form_id, str) or not _FORM_ID_RE.fullmatch(self.form_id):
            _fail("form_id", f"want [a-z][a-z0-9_]*, got {self.form_id!r}")
        _check_int("form_version", self.form_version, 1)
        if self.household is not None:
            if not isinstance(self.household, dict):
                _fail("household", f"want an object or null, got {self.household!r}")
            for key in ("village_code", "household_no"):
                if not isinstance(self.household.get(key), str) or not self.household[key]:
                    _fail(f"household.{key}", "want a non-empty string", "必须是非空字符串")
        if self.round is not None and (not isinstance(self.round, str) or not self.round):
            _fail("round", f"want a non-empty string or null, got {self.round!r}")
        if self.kind not in KINDS:
            _fail("kind", f"want one of {', '.join(KINDS)}, got {self.kind!r}")
        if not isinstance(self.changes, dict):
            _fail("changes", f"want an object, got {type(self.changes).__name__}")
        for path, value in self.changes.items():
            _check_path("changes", path)
            # The field name is formatted only for a value that needs the full check: an op
            # of a new record carries dozens of plain values, and every op is checked.
            if value is not None and type(value) not in _PLAIN_TYPES:
                _check_json_value(f"changes.{path}", value)
            if path == "" and not (value is None or is_tombstone(value)):
                _fail("changes.", "the record path '' takes only null (restore) or a tombstone")
        _check_no_edit_inside_tombstone(self.changes)
        if self.kind == "delete":
            if self.changes:
                _fail("changes", "a delete op carries no changes (its base lists what it saw)")
        elif not self.changes:
            _fail("changes", f"a {self.kind} op must change at least one path")
        if not isinstance(self.base, dict):
            _fail("base", f"want an object, got {type(self.base).__name__}")
        for path, entry in self.base.items():
            _check_path("base", path)
            if entry is not None:
                _check_base_entry(f"base.{path}", entry)
        _check_int("base_revision", self.base_revision, 0)
        try:
            stamp = Stamp.parse(self.hlc)
        except StampFormatError as exc:
            _fail("hlc", exc.message, "时间戳格式无效")
        if self.kind == "resolve":
            _check_id("conflict_id", self.conflict_id)
        elif self.conflict_id is not None:
            _fail("conflict_id", "only a resolve op carries a conflict id")
        object.__setattr__(self, "_stamp", stamp)

    @property
    def stamp(self) -> Stamp:
        """The parsed ``hlc`` stamp."""
        return self._stamp

    @property
    def key(self) -> tuple[str, int]:
        """The op's identity: ``(device_id, seq)``."""
        return (self.device_id, self.seq)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready dict form (the tombstone becomes ``{"$tombstone": true}``)."""
        return {
            "device_id": self.device_id,
            "seq": self.seq,
            "record_id": self.record_id,
            "form_id": self.form_id,
            "form_version": self.form_version,
            "household": dict(self.household) if self.household is not None else None,
            "round": self.round,
            "kind": self.kind,
            "changes": {
                path: ({TOMBSTONE_KEY: True} if is_tombstone(value) else value)
                for path, value in self.changes.items()
            },
            "base": {
                path: (list(entry) if isinstance(entry, list) else entry)
                for path, entry in self.base.items()
            },
            "base_revision": self.base_revision,
            "hlc": self.hlc,
            "conflict_id": self.conflict_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Op:
        """Build and validate an op from its dict form; unknown keys are refused.

        ``household``, ``round`` and ``conflict_id`` may be absent (null).

        Raises:
            OpFormatError: naming the missing, unknown or malformed field.
        """
        if not isinstance(data, Mapping):
            _fail("op", f"want an object, got {type(data).__name__}")
        required = (
            "device_id",
            "seq",
            "record_id",
            "form_id",
            "form_version",
            "kind",
            "changes",
            "base",
            "base_revision",
            "hlc",
        )
        optional = ("household", "round", "conflict_id")
        for name in required:
            if name not in data:
                _fail(name, "missing", "缺少此字段")
        unknown = sorted(set(data) - set(required) - set(optional))
        if unknown:
            _fail(unknown[0], "unknown field", "未知字段")
        changes = data["changes"]
        if isinstance(changes, Mapping):
            changes = {
                path: (TOMBSTONE if is_tombstone(value) else value)
                for path, value in changes.items()
            }
        base = data["base"]
        if isinstance(base, Mapping):
            base = {
                path: (list(entry) if isinstance(entry, list | tuple) else entry)
                for path, entry in base.items()
            }
        household = data.get("household")
        if isinstance(household, Mapping):
            household = dict(household)
        return cls(
            device_id=data["device_id"],
            seq=data["seq"],
            record_id=data["record_id"],
            form_id=data["form_id"],
            form_version=data["form_version"],
            household=household,
            round=data.get("round"),
            kind=data["kind"],
            changes=changes,
            base=base,
            base_revision=data["base_revision"],
            hlc=data["hlc"],
            conflict_id=data.get("conflict_id"),
        )

    def to_json(self) -> str:
        """Canonical JSON text of :meth:`to_dict` (sorted keys, no spaces)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _stamp_text(hlc: Stamp | str) -> str:
    return hlc.to_text() if isinstance(hlc, Stamp) else hlc


def put_op(
    *,
    device_id: str,
    seq: int,
    record_id: str,
    form_id: str,
    form_version: int,
    changes: Mapping[str, Any],
    base: Mapping[str, str | list[str] | None] | None = None,
    hlc: Stamp | str,
    base_revision: int = 0,
    household: Mapping[str, str] | None = None,
    round: str | None = None,
) -> Op:
    """Build a ``put`` op. A path missing from ``base`` means the device saw no value there.

    Raises:
        OpFormatError: when any field is malformed.
    """
    return Op(
        device_id=device_id,
        seq=seq,
        record_id=record_id,
        form_id=form_id,
        form_version=form_version,
        household=dict(household) if isinstance(household, Mapping) else household,  # type: ignore[arg-type]
        round=round,
        kind="put",
        changes=dict(changes),
        base=dict(base or {}),
        base_revision=base_revision,
        hlc=_stamp_text(hlc),
    )


def delete_op(
    *,
    device_id: str,
    seq: int,
    record_id: str,
    form_id: str,
    form_version: int,
    base: Mapping[str, str | list[str] | None],
    hlc: Stamp | str,
    base_revision: int,
) -> Op:
    """Build a ``delete`` op for the whole record; ``base`` must list every path the device saw.

    Raises:
        OpFormatError: when any field is malformed.
    """
    return Op(
        device_id=device_id,
        seq=seq,
        record_id=record_id,
        form_id=form_id,
        form_version=form_version,
        household=None,
        round=None,
        kind="delete",
        changes={},
        base=dict(base),
        base_revision=base_revision,
        hlc=_stamp_text(hlc),
    )


def delete_row_op(
    *,
    device_id: str,
    seq: int,
    record_id: str,
    form_id: str,
    form_version: int,
    row_path: str,
    base: Mapping[str, str | list[str] | None],
    hlc: Stamp | str,
    base_revision: int,
) -> Op:
    """Build a ``put`` that deletes repeat row ``row_path`` (``repeat/<row_id>``).

    ``base`` should list the row path and every path under it that the device saw; edits under the
    row that are not listed make the delete a ``row_delete_edit`` conflict.

    Raises:
        OpFormatError: when any field is malformed.
    """
    if not row_path:
        _fail("changes", "a row path is required", "缺少行路径")
    return put_op(
        device_id=device_id,
        seq=seq,
        record_id=record_id,
        form_id=form_id,
        form_version=form_version,
        changes={row_path: TOMBSTONE},
        base=base,
        hlc=hlc,
        base_revision=base_revision,
    )


def resolve_op(
    *,
    device_id: str,
    seq: int,
    record_id: str,
    form_id: str,
    form_version: int,
    conflict_id: str,
    changes: Mapping[str, Any],
    base: Mapping[str, str | list[str] | None],
    hlc: Stamp | str,
    base_revision: int,
) -> Op:
    """Build a ``resolve`` op: ``changes`` are the chosen values, ``base`` all competing heads.

    Raises:
        OpFormatError: when any field is malformed.
    """
    return Op(
        device_id=device_id,
        seq=seq,
        record_id=record_id,
        form_id=form_id,
        form_version=form_version,
        household=None,
        round=None,
        kind="resolve",
        changes=dict(changes),
        base={p: (list(e) if isinstance(e, list | tuple) else e) for p, e in base.items()},
        base_revision=base_revision,
        hlc=_stamp_text(hlc),
        conflict_id=conflict_id,
    )
