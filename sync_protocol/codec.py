"""The batch codec: a compact, deterministic byte encoding of a list of sync ops.

A batch is canonical JSON (UTF-8, no spaces, object keys sorted, no NaN/Infinity) of::

    [1, TABLE, [OP, OP, ...]]

``1`` is the codec version. ``TABLE`` lists, in order of first use, the values that repeat from
op to op: device ids, form ids, households and rounds; an op refers to them by index. Each
``OP`` is a positional array (trailing elements equal to their default are left out)::

    index  element         meaning
    0      seq delta       op.seq minus the previous op's seq in the batch (the first: minus 0)
    1      record_id       string
    2      hlc             string (contracts §6 text form)
    3      device ref      TABLE index of op.device_id
    4      form ref        TABLE index of op.form_id
    5      form_version    integer >= 1
    6      household ref   TABLE index of op.household (an object or null)
    7      round ref       TABLE index of op.round (a string or null)
    8      changes         front-coded paths, see below                  default []
    9      base            0 | [stamp...] | {path: stamp}, see below     default 0
    10     base_revision   integer >= 0                                  default 0
    11     kind            0 put, 1 delete, 2 resolve                    default 0
    12     conflict_id     string or null                                default null

``changes`` lists the paths in code-point order as flat triples ``prefix, suffix, value``: the
path is the first ``prefix`` code points of the previous path followed by ``suffix``. Paths of
one repeat row share ``members/<row uuid>/`` so the row id is written once, not once per field.

``base`` is ``0`` when it is empty (a new record: the device saw no value anywhere), a list
aligned with the changes' paths when its paths are exactly those, and otherwise an object
``{path: entry}``; an entry is a stamp text, a list of stamp texts (a resolution) or null.

Why JSON and not CBOR or a per-form positional layout: measured on 1,200 sample instrument
records (docs/protocol.md §4), compressed sizes differ by a few percent at most because the
compressor removes the same redundancy, while JSON is native in the browser app (no library),
readable in a debugger, and keeps the codec free of form definitions. The repeats that
compression handles poorly (row ids repeated once per field, the device id per op, households
across six instruments) are factored out above.

Decoding checks everything: :func:`decode_batch` raises
:class:`~sync_protocol.errors.MalformedBatch` (code ``batch_malformed``, ``where`` naming the
element) for any input that is not a valid batch, and never another exception.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import orjson

from sync_protocol.errors import MalformedBatch, ProtocolError
from sync_protocol.ops import Op

__all__ = [
    "CODEC_VERSION",
    "MAX_SAFE_INTEGER",
    "MAX_VALUE_DEPTH",
    "batch_from_json",
    "batch_to_json",
    "canonical_json",
    "canonical_json_fast",
    "decode_batch",
    "encode_batch",
    "parse_json",
]

CODEC_VERSION: Final = 1
# Record values are at most a geopoint inside a repeat row; 16 levels leaves room for nested
# repeats and keeps a hostile "[[[[..." far from Python's recursion limit.
MAX_VALUE_DEPTH: Final = 16
# Integers stay exact in the browser app's JavaScript numbers only up to 2**53 - 1.
MAX_SAFE_INTEGER: Final = 2**53 - 1
_KINDS: Final = ("put", "delete", "resolve")
_FIELDS: Final = (
    "device_id",
    "seq",
    "record_id",
    "form_id",
    "form_version",
    "household",
    "round",
    "kind",
    "changes",
    "base",
    "base_revision",
    "hlc",
    "conflict_id",
)
_FIRST_OPTIONAL: Final = 8
_OP_LENGTH: Final = 13


def _trailing_defaults() -> list[Any]:
    """Defaults of positions 8..12: changes, base, base_revision, kind, conflict_id."""
    return [[], 0, 0, 0, None]


def _is_default(position: int, value: Any) -> bool:
    default = _trailing_defaults()[position - _FIRST_OPTIONAL]
    # type() as well as ==, so that False is never taken for 0.
    return type(value) is type(default) and value == default


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON bytes: UTF-8, sorted keys, no spaces, finite numbers.

    The same value always gives the same bytes, so batches, test vectors and signatures are
    reproducible. Raises :class:`~sync_protocol.errors.MalformedBatch` (``where="value"``) when
    ``value`` holds something JSON cannot carry (NaN, infinity, sets, lone surrogates ...).
    """
    try:
        text = json.dumps(
            value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
        )
        return text.encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise MalformedBatch("value", f"not encodable as JSON: {exc}") from None


# Where orjson spells a float otherwise than the standard library: a small number in plain
# notation (``0.00001`` against ``1e-05``) or a one-digit negative exponent (``2.5e-7`` against
# ``2.5e-07``). Every other JSON value both write byte for byte alike — sorted keys by code
# point, the same escapes, the same digits (checked on 1.5 million random floats). The check
# looks for those two spellings anywhere (a string holding one only costs the slow path); it
# starts on a literal, so it scans a 300 KB page in about a millisecond.
_SMALL_FLOAT: Final = b"0.0000"
_SHORT_EXPONENT: Final = re.compile(rb"e-\d(?:[,\]}]|$)")


def canonical_json_fast(value: Any) -> bytes:
    """The bytes :func:`canonical_json` gives, made by orjson (about 7x faster) where it
    writes the same, else by :func:`canonical_json`.

    For messages built from stored data (a server reply: a download page is 200 record
    states, whose canonical encoding was a fifth of a page's server time). One difference:
    orjson writes a non-finite float as ``null`` where :func:`canonical_json` refuses it, so
    a value only an old server could have stored does not fail a whole reply.

    Raises :class:`~sync_protocol.errors.MalformedBatch` as :func:`canonical_json` for what
    neither encoder can carry.
    """
    try:
        out = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # non-text keys, integers past 64 bits, lone surrogates …
        return canonical_json(value)
    if _SMALL_FLOAT in out or _SHORT_EXPONENT.search(out):
        return canonical_json(value)
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in object")
    return result


def parse_json(data: bytes, where: str = "batch") -> Any:
    """Parse UTF-8 JSON strictly: no NaN/Infinity, no duplicate keys, no lone surrogates.

    Raises :class:`~sync_protocol.errors.MalformedBatch` with ``where`` for any bytes that are
    not such JSON (including nesting deep enough to exhaust the parser).
    """
    try:
        text = bytes(data).decode("utf-8")
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedBatch(where, f"not valid JSON: {exc}") from None
    return value


def _check_value(value: Any, where: str, depth: int = 0) -> None:
    """Check that ``value`` is a plain JSON value a record may hold, at a bounded depth."""
    if depth > MAX_VALUE_DEPTH:
        raise MalformedBatch(where, f"value nested deeper than {MAX_VALUE_DEPTH}")
    kind = type(value)
    if kind is str:
        # An ASCII text holds no lone surrogate: ids, stamps, paths and codes skip the encode.
        if not value.isascii():
            _check_text(value, where)
        return
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise MalformedBatch(where, "integer beyond 2**53 - 1 (not exact in JavaScript)")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MalformedBatch(where, "number is not finite")
        return
    if isinstance(value, str):
        _check_text(value, where)
        return
    if isinstance(value, list):
        if value and depth >= MAX_VALUE_DEPTH:
            raise MalformedBatch(where, f"value nested deeper than {MAX_VALUE_DEPTH}")
        for item in value:
            kind = type(item)
            # The common items, without a call per item.
            if (kind is str and item.isascii()) or (
                kind is int and -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER
            ):
                continue
            _check_value(item, where, depth + 1)
        return
    if isinstance(value, dict):
        if value and depth >= MAX_VALUE_DEPTH:
            raise MalformedBatch(where, f"value nested deeper than {MAX_VALUE_DEPTH}")
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                if not isinstance(key, str):
                    raise MalformedBatch(where, "object keys must be strings")
                _check_text(key, where)
            if type(item) is str and item.isascii():
                continue
            _check_value(item, where, depth + 1)
        return
    raise MalformedBatch(where, f"{type(value).__name__} is not a JSON value")


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedBatch(where, "text holds a lone surrogate") from None


def _front_code(paths: Sequence[str]) -> list[tuple[int, str]]:
    coded: list[tuple[int, str]] = []
    previous = ""
    for path in paths:
        # Character by character on purpose: front coding counts code points, not segments.
        shared = len(os.path.commonprefix((previous, path)))  # noqa: RUF071
        coded.append((shared, path[shared:]))
        previous = path
    return coded


def _op_dict(op: Op | Mapping[str, Any], where: str) -> dict[str, Any]:
    if isinstance(op, Mapping):
        # A dict is validated as an Op first, so encoding never writes what decoding refuses.
        try:
            return Op.from_dict(op).to_dict()
        except ProtocolError as exc:
            raise MalformedBatch(where, exc.message) from None
    return op.to_dict()


def batch_to_json(ops: Iterable[Op | Mapping[str, Any]]) -> list[Any]:
    """Return the batch as the JSON value ``[1, TABLE, OPS]`` described in the module docs.

    Accepts :class:`~sync_protocol.ops.Op` objects or their ``to_dict()`` form. Raises
    :class:`~sync_protocol.errors.MalformedBatch` (``where`` = ``ops[i].<field>``) when an op
    lacks a field or holds a value the wire cannot carry.
    """
    table: list[Any] = []
    table_index: dict[bytes, int] = {}

    def ref(value: Any, where: str) -> int:
        _check_value(value, where)
        key = canonical_json(value)
        if key not in table_index:
            table_index[key] = len(table)
            table.append(value)
        return table_index[key]

    encoded_ops: list[list[Any]] = []
    previous_seq = 0
    for i, op in enumerate(ops):
        where = f"ops[{i}]"
        fields = _op_dict(op, where)
        missing = [name for name in _FIELDS if name not in fields]
        if missing:
            raise MalformedBatch(f"{where}.{missing[0]}", "missing")
        changes = fields["changes"] or {}
        base = fields["base"] or {}
        if not isinstance(changes, Mapping) or not isinstance(base, Mapping):
            raise MalformedBatch(f"{where}.changes", "changes and base must be objects")
        paths = sorted(changes)
        coded_changes: list[Any] = []
        for path, (shared, suffix) in zip(paths, _front_code(paths), strict=True):
            _check_value(changes[path], f"{where}.changes[{path!r}]")
            coded_changes.extend((shared, suffix, changes[path]))
        coded_base: Any
        if not base:
            coded_base = 0
        elif set(base) == set(paths):
            coded_base = [base[path] for path in paths]
        else:
            coded_base = dict(base)
        _check_value(coded_base, f"{where}.base")
        if fields["kind"] not in _KINDS:
            raise MalformedBatch(f"{where}.kind", f"must be one of {', '.join(_KINDS)}")
        seq = fields["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise MalformedBatch(f"{where}.seq", "must be an integer")
        encoded = [
            seq - previous_seq,
            fields["record_id"],
            fields["hlc"],
            ref(fields["device_id"], f"{where}.device_id"),
            ref(fields["form_id"], f"{where}.form_id"),
            fields["form_version"],
            ref(fields["household"], f"{where}.household"),
            ref(fields["round"], f"{where}.round"),
            coded_changes,
            coded_base,
            fields["base_revision"],
            _KINDS.index(fields["kind"]),
            fields["conflict_id"],
        ]
        _check_value(encoded, where)
        while len(encoded) > _FIRST_OPTIONAL and _is_default(len(encoded) - 1, encoded[-1]):
            encoded.pop()
        encoded_ops.append(encoded)
        previous_seq = seq
    return [CODEC_VERSION, table, encoded_ops]


def encode_batch(ops: Iterable[Op | Mapping[str, Any]]) -> bytes:
    """Encode ``ops`` as batch bytes (uncompressed; :mod:`sync_protocol.compression` follows).

    Deterministic: equal ops in the same order always give the same bytes. Raises
    :class:`~sync_protocol.errors.MalformedBatch` for an op that cannot be carried.
    """
    return canonical_json(batch_to_json(ops))


def _int(value: Any, where: str, minimum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedBatch(where, "must be an integer")
    if minimum is not None and value < minimum:
        raise MalformedBatch(where, f"must be >= {minimum}")
    return value


def _str(value: Any, where: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise MalformedBatch(where, "must be a string" + (" or null" if optional else ""))
    return value


def _table_entry(table: list[Any], index: Any, where: str) -> Any:
    position = _int(index, where, 0)
    if position >= len(table):
        raise MalformedBatch(where, f"table index {position} out of range")
    return table[position]


def _decode_changes(coded: Any, where: str) -> dict[str, Any]:
    if not isinstance(coded, list) or len(coded) % 3:
        raise MalformedBatch(where, "must be a list of prefix, suffix, value triples")
    changes: dict[str, Any] = {}
    previous = ""
    for k in range(0, len(coded), 3):
        shared, suffix = coded[k], coded[k + 1]
        # Types tested inline: the error locations are formatted only for a bad triple.
        if type(shared) is not int or shared < 0:
            _int(shared, f"{where}[{k}]", 0)
        if shared > len(previous):
            raise MalformedBatch(f"{where}[{k}]", "prefix longer than the previous path")
        if type(suffix) is not str:
            suffix = str(_str(suffix, f"{where}[{k + 1}]"))
        path = previous[:shared] + suffix
        if path in changes:
            raise MalformedBatch(f"{where}[{k + 1}]", f"path {path!r} repeated")
        changes[path] = coded[k + 2]
        previous = path
    return changes


def _decode_base(coded: Any, paths: list[str], where: str) -> dict[str, Any]:
    # Entries are a stamp, a list of stamps or null; Op.from_dict checks the stamps themselves.
    if coded == 0 and not isinstance(coded, bool):
        return {}
    if isinstance(coded, list):
        if len(coded) != len(paths) or not paths:
            raise MalformedBatch(where, "stamp list does not match the changes")
        return dict(zip(paths, coded, strict=True))
    if isinstance(coded, dict):
        return dict(coded)
    raise MalformedBatch(where, "must be 0, a list aligned with the changes or an object")


def batch_from_json(value: Any) -> list[dict[str, Any]]:
    """Turn the JSON value of a batch back into op dicts (the ``Op.to_dict()`` shape).

    Raises :class:`~sync_protocol.errors.MalformedBatch` naming the first element that is wrong.
    """
    if not isinstance(value, list) or len(value) != 3:
        raise MalformedBatch("batch", "must be [version, table, ops]")
    version, table, coded_ops = value
    if version != CODEC_VERSION or isinstance(version, bool):
        raise MalformedBatch("batch[0]", f"unsupported codec version {version!r}")
    if not isinstance(table, list) or not isinstance(coded_ops, list):
        raise MalformedBatch("batch", "table and ops must be lists")
    _check_value(table, "table")
    ops: list[dict[str, Any]] = []
    previous_seq = 0
    for i, coded in enumerate(coded_ops):
        where = f"ops[{i}]"
        if not isinstance(coded, list) or not _FIRST_OPTIONAL <= len(coded) <= _OP_LENGTH:
            raise MalformedBatch(where, f"must be a list of {_FIRST_OPTIONAL}..{_OP_LENGTH} items")
        _check_value(coded, where)
        coded = coded + _trailing_defaults()[len(coded) - _FIRST_OPTIONAL :]
        seq = previous_seq + _int(coded[0], f"{where}.seq")
        if seq < 1:
            raise MalformedBatch(f"{where}.seq", "must be >= 1")
        changes = _decode_changes(coded[8], f"{where}.changes")
        kind_index = _int(coded[11], f"{where}.kind", 0)
        if kind_index >= len(_KINDS):
            raise MalformedBatch(f"{where}.kind", f"unknown kind {kind_index}")
        household = _table_entry(table, coded[6], f"{where}.household")
        if household is not None and not isinstance(household, dict):
            raise MalformedBatch(f"{where}.household", "must be an object or null")
        ops.append(
            {
                "device_id": _str(
                    _table_entry(table, coded[3], f"{where}.device_id"), f"{where}.device_id"
                ),
                "seq": seq,
                "record_id": _str(coded[1], f"{where}.record_id"),
                "form_id": _str(
                    _table_entry(table, coded[4], f"{where}.form_id"), f"{where}.form_id"
                ),
                "form_version": _int(coded[5], f"{where}.form_version", 1),
                "household": household,
                "round": _str(
                    _table_entry(table, coded[7], f"{where}.round"), f"{where}.round", optional=True
                ),
                "kind": _KINDS[kind_index],
                "changes": changes,
                "base": _decode_base(coded[9], list(changes), f"{where}.base"),
                "base_revision": _int(coded[10], f"{where}.base_revision", 0),
                "hlc": _str(coded[2], f"{where}.hlc"),
                "conflict_id": _str(coded[12], f"{where}.conflict_id", optional=True),
            }
        )
        previous_seq = seq
    return ops


def decode_batch(data: bytes) -> list[Op]:
    """Decode batch bytes (already decompressed) into ops, in the order they were encoded.

    Raises :class:`~sync_protocol.errors.MalformedBatch` for any bytes that are not a valid
    batch — bad JSON, a wrong shape, an out-of-range reference, or an op that
    :meth:`Op.from_dict <sync_protocol.ops.Op.from_dict>` refuses — and never another exception.
    """
    op_dicts = batch_from_json(parse_json(data))
    ops: list[Op] = []
    for i, fields in enumerate(op_dicts):
        try:
            ops.append(Op.from_dict(fields))
        except ProtocolError as exc:
            raise MalformedBatch(f"ops[{i}]", exc.message) from None
        except (TypeError, ValueError, KeyError) as exc:
            # Op.from_dict validates with plain exceptions for some shapes; they all mean the
            # batch holds an op the protocol does not accept.
            raise MalformedBatch(f"ops[{i}]", str(exc)) from None
    return ops
