"""Field paths: the unit of merge shared by forms, sync_protocol, server and device (contracts §4).

A record's data (a JSON object) is turned into a flat map *path → value*:

* ``name`` — a top-level field;
* ``repeat/<row_id>/name`` — a field inside a repeat row (nested repeats extend the same way:
  ``members/<r1>/visits/<r2>/date``);
* ``repeat/<row_id>/_order`` — the row's position (a number; rows sort by it, then by id);
* ``repeat/<row_id>`` — the row itself. ``flatten`` never writes it; ``unflatten`` reads it as
  a row marker, where a tombstone value (``None`` by default) deletes the row and everything
  under it, so sync can express "this row was removed".

A value is a repeat when it is a non-empty list whose items are all objects; each row must carry a
string ``"_id"`` without ``/``. An empty list stays an ordinary value at its own path (it reads back
as ``[]``), and when rows are present under a path whose own value is ``None`` or ``[]``, the rows
win. With these rules ``unflatten(flatten(data)) == data`` for every record shaped per contracts §3.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from forms.errors import PathError

ROW_ID_KEY = "_id"
ORDER_KEY = "_order"
SEPARATOR = "/"

__all__ = [
    "ORDER_KEY",
    "ROW_ID_KEY",
    "SEPARATOR",
    "flatten",
    "is_row_path",
    "join_path",
    "row_prefix",
    "schema_path",
    "split_path",
    "unflatten",
]


def split_path(path: str) -> list[str]:
    """Split a field path into its segments.

    Raises:
        PathError: when the path is empty or has an empty segment.
    """
    segments = path.split(SEPARATOR)
    if not path or "" in segments:
        raise PathError(
            message=f"malformed field path {path!r}", message_zh=f"字段路径格式错误：{path!r}"
        )
    return segments


def join_path(*segments: str) -> str:
    """Join segments into a field path."""
    return SEPARATOR.join(segments)


def schema_path(path: str) -> str:
    """Drop the row ids of a data path: ``members/<row_id>/name`` → ``members/name``.

    Data paths alternate name / row id, so the names are the even segments. ``_order`` paths map
    to ``members/_order``; a row path ``members/<row_id>`` maps to ``members``.

    Raises:
        PathError: when the path is malformed.
    """
    return SEPARATOR.join(split_path(path)[0::2])


def is_row_path(path: str) -> bool:
    """True when ``path`` names a repeat row itself (``repeat/<row_id>``, even segment count)."""
    return len(split_path(path)) % 2 == 0


def row_prefix(path: str) -> str | None:
    """Return the path of the innermost row containing ``path`` (``None`` at the top level).

    ``members/r1/name`` → ``members/r1``; ``members/r1`` → ``None`` (a row is not inside itself
    unless nested: ``a/r1/b/r2`` → ``a/r1``).
    """
    segments = split_path(path)
    if len(segments) % 2 == 0:
        segments = segments[:-2]
    else:
        segments = segments[:-1]
    return SEPARATOR.join(segments) if segments else None


def _is_repeat_value(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _check_row_id(row_id: Any, where: str) -> str:
    if not isinstance(row_id, str) or not row_id or SEPARATOR in row_id:
        raise PathError(
            "bad_row_id",
            f"repeat row at {where} needs a string {ROW_ID_KEY!r} without '/'; got {row_id!r}",
            message_zh=f"{where} 处的重复组行缺少有效的 _id",
        )
    return row_id


def flatten(data: Mapping[str, Any]) -> dict[str, Any]:
    """Turn record data into a flat map path → value (see the module docstring).

    Row order becomes ``repeat/<row_id>/_order`` = 0, 1, 2, ...

    Raises:
        PathError: when a repeat row lacks a valid ``_id``, two rows of one repeat share an id,
            a row contains the reserved key ``_order``, or a key contains ``/``.
    """
    flat: dict[str, Any] = {}
    _flatten_into(flat, data, "")
    return flat


def _flatten_into(flat: dict[str, Any], obj: Mapping[str, Any], prefix: str) -> None:
    for key, value in obj.items():
        if not isinstance(key, str) or not key or SEPARATOR in key:
            raise PathError(
                "bad_key",
                f"field key {key!r} under {prefix or 'the record'} must be a non-empty string without '/'",
                message_zh=f"字段名 {key!r} 不合法",
            )
        if prefix and key == ROW_ID_KEY:
            continue
        if prefix and key == ORDER_KEY:
            raise PathError(
                "reserved_key",
                f"row {prefix} uses the reserved key {ORDER_KEY!r}",
                message_zh=f"行 {prefix} 使用了保留字段 _order",
            )
        path = prefix + key
        if _is_repeat_value(value):
            seen: set[str] = set()
            for index, row in enumerate(value):
                row_id = _check_row_id(row.get(ROW_ID_KEY), f"{path}[{index}]")
                if row_id in seen:
                    raise PathError(
                        "duplicate_row_id",
                        f"two rows of {path} share the id {row_id!r}",
                        message_zh=f"{path} 中有两行使用相同的 _id：{row_id}",
                    )
                seen.add(row_id)
                row_path = f"{path}{SEPARATOR}{row_id}"
                flat[f"{row_path}{SEPARATOR}{ORDER_KEY}"] = index
                _flatten_into(flat, row, row_path + SEPARATOR)
        else:
            flat[path] = value


class _Node:
    """A level of the record being rebuilt: its plain values and its repeats' rows."""

    __slots__ = ("order", "repeats", "values")

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.repeats: dict[str, dict[str, _Node]] = {}
        self.order: Any = None


def _default_tombstone(value: Any) -> bool:
    return value is None


def unflatten(
    flat: Mapping[str, Any], *, is_tombstone: Callable[[Any], bool] = _default_tombstone
) -> dict[str, Any]:
    """Rebuild record data from a flat path map (the inverse of :func:`flatten`).

    Rows are ordered by their ``_order`` number (rows without one come last), then by row id.
    A key ``repeat/<row_id>`` whose value ``is_tombstone`` accepts deletes that row (and any values
    under it); any other value there only says the row exists.

    Raises:
        PathError: on a malformed path, or when a path holds a plain value (other than ``None`` or
            ``[]``) and rows at the same time.
    """
    root = _Node()
    deleted: set[str] = set()
    # Each path is split once; a top-level field (most of a record) has one segment.
    split: list[tuple[list[str], Any]] = []
    for path, value in flat.items():
        if path and SEPARATOR not in path:
            root.values[path] = value
            continue
        segments = split_path(path)
        if len(segments) % 2 == 0 and is_tombstone(value):
            deleted.add(path)
        split.append((segments, value))

    for segments, value in split:
        if deleted and any(
            SEPARATOR.join(segments[:end]) in deleted for end in range(2, len(segments) + 1, 2)
        ):
            continue
        node = root
        # Walk name/row-id pairs down to the level holding the last segment.
        for i in range(0, len(segments) - 1, 2):
            rows = node.repeats.setdefault(segments[i], {})
            node = rows.setdefault(segments[i + 1], _Node())
        if len(segments) % 2 == 0:
            continue  # a live row marker: the walk above already created the row
        last = segments[-1]
        if last == ORDER_KEY and len(segments) > 1:
            node.order = value
        else:
            node.values[last] = value

    return _build(root, is_row=False, where="")


def _order_key(item: tuple[str, _Node]) -> tuple[bool, float, str]:
    row_id, node = item
    order = node.order
    if isinstance(order, bool) or not isinstance(order, int | float):
        return (True, 0.0, row_id)
    return (False, float(order), row_id)


def _build(node: _Node, *, is_row: bool, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.values.items():
        out[key] = value
    for name, rows in node.repeats.items():
        existing = out.get(name)
        if name in out and existing is not None and existing != []:
            raise PathError(
                "value_and_rows",
                f"{where}{name} holds both a value and repeat rows",
                message_zh=f"{where}{name} 同时有值和重复组行",
            )
        built = []
        for row_id, row_node in sorted(rows.items(), key=_order_key):
            row = {ROW_ID_KEY: row_id}
            row.update(_build(row_node, is_row=True, where=f"{where}{name}/{row_id}/"))
            built.append(row)
        if built:
            out[name] = built
    return out
