"""The batch codec: round-trips for any op, typed errors for any bytes, fixed test vectors.

The op strategies here are also used by the messages and exchange tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_protocol.codec import (
    batch_from_json,
    batch_to_json,
    canonical_json,
    canonical_json_fast,
    decode_batch,
    encode_batch,
    parse_json,
)
from sync_protocol.errors import MalformedBatch
from sync_protocol.ops import TOMBSTONE, Op, is_tombstone, put_op

_ID_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
node_ids = st.text(_ID_CHARS, min_size=1, max_size=20)
stamps = st.builds(
    lambda ms, counter, node: f"{ms:012x}-{counter:04x}-{node}",
    st.integers(0, 2**48 - 1),
    st.integers(0, 2**16 - 1),
    node_ids,
)
_SEGMENT = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)
paths = st.lists(_SEGMENT, min_size=1, max_size=4).map("/".join)
_TEXT = st.text(max_size=20)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53) + 1, 2**53 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXT,
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.text(max_size=8).filter(lambda k: k != "$tombstone"), children, max_size=4
        ),
    ),
    max_leaves=12,
)
base_entries = st.one_of(st.none(), stamps, st.lists(stamps, min_size=1, max_size=3))
households = st.none() | st.fixed_dictionaries(
    {
        "village_code": st.text("0123456789", min_size=12, max_size=12),
        "household_no": st.text(min_size=1, max_size=20),
    }
)


@st.composite
def ops(draw: st.DrawFn, device_id: str | None = None, seq: int | None = None) -> Op:
    """Any valid op: every kind, tombstones, list bases, unicode values."""
    kind = draw(st.sampled_from(["put", "put", "delete", "resolve"]))
    changes: dict[str, Any] = {}
    if kind != "delete":
        drawn = draw(
            st.dictionaries(paths, json_values | st.just(TOMBSTONE), min_size=1, max_size=8)
        )
        # An op never tombstones a path and writes inside it (ops.py refuses it).
        tombstoned = [path + "/" for path, value in drawn.items() if is_tombstone(value)]
        changes = {p: v for p, v in drawn.items() if not any(p.startswith(t) for t in tombstoned)}
    base_shape = draw(st.sampled_from(["empty", "aligned", "other"]))
    if base_shape == "empty":
        base: dict[str, Any] = {}
    elif base_shape == "aligned" and changes:
        base = {path: draw(base_entries) for path in changes}
    else:
        base = draw(st.dictionaries(paths, base_entries, max_size=6))
    return Op(
        device_id=device_id or draw(node_ids),
        seq=seq or draw(st.integers(1, 2**40)),
        record_id=draw(st.uuids()).hex if draw(st.booleans()) else str(draw(st.uuids())),
        form_id=draw(st.sampled_from(["housing_safety", "household_roster", "x1"])),
        form_version=draw(st.integers(1, 40)),
        household=draw(households),
        round=draw(st.none() | st.sampled_from(["2026-annual", "monitoring-2026-11"])),
        kind=kind,
        changes=changes,
        base=base,
        base_revision=draw(st.integers(0, 2**31)),
        hlc=draw(stamps),
        conflict_id=str(draw(st.uuids())) if kind == "resolve" else None,
    )


@st.composite
def device_batches(draw: st.DrawFn, max_size: int = 12) -> list[Op]:
    """A batch as a device sends it: one device, contiguous sequence numbers."""
    device_id = draw(node_ids)
    first = draw(st.integers(1, 10_000))
    size = draw(st.integers(0, max_size))
    return [draw(ops(device_id=device_id, seq=first + k)) for k in range(size)]


@settings(max_examples=150)
@given(batch=st.lists(ops(), max_size=6))
def test_round_trip_any_ops(batch: list[Op]) -> None:
    data = encode_batch(batch)
    assert decode_batch(data) == batch
    # Deterministic: encoding the decoded ops gives the very same bytes.
    assert encode_batch(decode_batch(data)) == data


@settings(max_examples=100)
@given(batch=device_batches())
def test_round_trip_device_batches(batch: list[Op]) -> None:
    assert decode_batch(encode_batch(batch)) == batch


@settings(max_examples=300)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_malformed_batch(data: bytes) -> None:
    try:
        decoded = decode_batch(data)
    except MalformedBatch as exc:
        assert exc.code == "batch_malformed"
        assert exc.where
    else:
        assert all(isinstance(op, Op) for op in decoded)


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6) | st.floats(),
    lambda children: (
        st.lists(children, max_size=14) | st.dictionaries(st.text(max_size=4), children)
    ),
    max_leaves=40,
)


@settings(max_examples=300)
@given(value=_JSONISH)
def test_arbitrary_json_shapes_raise_only_malformed_batch(value: Any) -> None:
    # Well-formed JSON of the wrong shape must also end in the typed error.
    for candidate in (value, [1, [], [value]], [1, [value], [[1, "r", "h", 0, 0, 1, 0, 0, value]]]):
        try:
            data = json.dumps(candidate).encode()
        except ValueError:
            continue
        try:
            decode_batch(data)
        except MalformedBatch:
            pass


@settings(max_examples=100)
@given(batch=st.lists(ops(), min_size=1, max_size=3), data=st.data())
def test_mutated_batches_raise_only_malformed_batch(batch: list[Op], data: st.DataObject) -> None:
    encoded = bytearray(encode_batch(batch))
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] = data.draw(st.integers(0, 255))
    try:
        decode_batch(bytes(encoded))
    except MalformedBatch:
        pass


def _sample_op(seq: int, row: str) -> Op:
    return put_op(
        device_id="dev-7f3a",
        seq=seq,
        record_id="0b6f1f7e-3c55-4a5e-9d8e-2f1d3b7a9c01",
        form_id="household_roster",
        form_version=1,
        household={"village_code": "530102001201", "household_no": "0042"},
        round="2026-annual",
        changes={
            f"members/{row}/name": "李秀英",
            f"members/{row}/relation": "户主",
            f"members/{row}/_order": 1,
            "phone": "13888001234",
        },
        hlc=f"019a8b7c6d5e-{seq:04x}-dev-7f3a",
    )


def test_shared_values_are_written_once() -> None:
    batch = [_sample_op(1, "r1"), _sample_op(2, "r2")]
    value = batch_to_json(batch)
    version, table, coded = value
    assert version == 1
    assert table == [
        "dev-7f3a",
        "household_roster",
        {"household_no": "0042", "village_code": "530102001201"},
        "2026-annual",
    ]
    # seq as a delta, refs into the table, front-coded paths, empty base and defaults left out.
    assert coded[1][:8] == [
        1,
        "0b6f1f7e-3c55-4a5e-9d8e-2f1d3b7a9c01",
        "019a8b7c6d5e-0002-dev-7f3a",
        0,
        1,
        1,
        2,
        3,
    ]
    assert coded[1][8] == [
        0,
        "members/r2/_order",
        1,
        11,
        "name",
        "李秀英",
        11,
        "relation",
        "户主",
        0,
        "phone",
        "13888001234",
    ]
    assert len(coded[1]) == 9
    data = encode_batch(batch)
    assert data.count(b"household_roster") == 1
    assert "李秀英".encode() in data  # UTF-8, not \\u escapes


def test_aligned_and_general_bases() -> None:
    aligned = put_op(
        device_id="d",
        seq=5,
        record_id="r",
        form_id="f",
        form_version=2,
        changes={"a": 1, "b": 2},
        base={"a": "019a8b7c6d5e-0000-d", "b": None},
        hlc="019a8b7c6d5f-0000-d",
        base_revision=3,
    )
    general = put_op(
        device_id="d",
        seq=6,
        record_id="r",
        form_id="f",
        form_version=2,
        changes={"members/x": TOMBSTONE},
        base={"members/x/name": "019a8b7c6d5e-0001-e"},
        hlc="019a8b7c6d60-0000-d",
        base_revision=4,
    )
    coded = batch_to_json([aligned, general])[2]
    assert coded[0][9] == ["019a8b7c6d5e-0000-d", None]
    assert coded[1][8] == [0, "members/x", {"$tombstone": True}]
    assert coded[1][9] == {"members/x/name": "019a8b7c6d5e-0001-e"}
    assert decode_batch(encode_batch([aligned, general])) == [aligned, general]


def test_empty_batch() -> None:
    assert encode_batch([]) == b"[1,[],[]]"
    assert decode_batch(b"[1,[],[]]") == []


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b"", "batch"),
        (b"\xff\xfe", "batch"),
        (b"[1,[],[]", "batch"),
        (b'{"v":1}', "batch"),
        (b"[2,[],[]]", "batch[0]"),
        (b"[true,[],[]]", "batch[0]"),
        (b'[1,[],[[1,"r","h"]]]', "ops[0]"),
        (b'[1,["d",null],[[1,"r","h",0,5,1,1,1]]]', "ops[0].form_id"),
        (b'[1,["d","f",null],[[0,"r","019a8b7c6d5e-0000-d",0,1,1,2,2]]]', "ops[0].seq"),
        (b'[1,["d","f",null],[[1,"r","019a8b7c6d5e-0000-d",0,1,1,2,2,[0,"a"]]]]', "ops[0].changes"),
        (
            b'[1,["d","f",null],[[1,"r","019a8b7c6d5e-0000-d",0,1,1,2,2,[0,"a",1,5,"b",2]]]]',
            "ops[0].changes[3]",
        ),
        (
            b'[1,["d","f",null],[[1,"r","019a8b7c6d5e-0000-d",0,1,1,2,2,[0,"a",1],0,0,7]]]',
            "ops[0].kind",
        ),
        (b'[1,["d","f",null],[[1,"r","019a8b7c6d5e-0000-d",0,1,1,2,2,[0,"a",NaN]]]]', "batch"),
        (b'[1,["d","f",null],[[1,"r","019a8b7c6d5e-0000-d",0,1,1,2,2,[0,"a",1e999]]]]', "batch"),
        (
            b'[1,["d","f",null],[[1,"r","019a8b7c6d5e-0000-d",0,1,1,2,2,[0,"a",{"k":1,"k":2}]]]]',
            "batch",
        ),
        (b'[1,["d","f",null],[[1,"r","bad stamp",0,1,1,2,2,[0,"a",1]]]]', "ops[0]"),
        (b"[" * 50_000 + b"]" * 50_000, "batch"),
        (b'[1,[],[[1,"r","h",0,0,1,0,0,' + b"[" * 40 + b"]" * 40 + b"]]]", "ops[0]"),
        (
            b'[1,["d","f",null],[[1,"r","019a8b7c6d5e-0000-d",0,1,1,2,2,[0,"a",9007199254740993]]]]',
            "ops[0]",
        ),
    ],
)
def test_malformed_inputs_name_the_element(data: bytes, where: str) -> None:
    with pytest.raises(MalformedBatch) as info:
        decode_batch(data)
    assert info.value.where == where
    assert info.value.code == "batch_malformed"
    assert info.value.message_zh


def test_encoding_refuses_values_the_wire_cannot_carry() -> None:
    op = _sample_op(1, "r1").to_dict()
    op["changes"] = {"income": 2**60}
    with pytest.raises(MalformedBatch) as info:
        encode_batch([op])
    assert info.value.where.startswith("ops[0].changes")
    with pytest.raises(MalformedBatch):
        canonical_json({"x": float("nan")})


def test_dict_ops_are_validated_before_encoding() -> None:
    op = _sample_op(1, "r1").to_dict()
    del op["hlc"]
    with pytest.raises(MalformedBatch) as info:
        encode_batch([op])
    assert info.value.where == "ops[0]"
    assert "hlc" in info.value.message
    assert decode_batch(encode_batch([_sample_op(1, "r1").to_dict()])) == [_sample_op(1, "r1")]


def test_parse_json_refuses_lone_surrogates_when_encoded_again() -> None:
    value = parse_json(b'"\\ud800"')
    with pytest.raises(MalformedBatch):
        canonical_json(value)
    with pytest.raises(MalformedBatch):
        batch_from_json([1, ["\ud800"], []])


VECTORS = Path(__file__).resolve().parents[2] / "sync_protocol" / "vectors" / "codec.json"


def _vector_ops() -> list[tuple[str, list[Op]]]:
    roster = [_sample_op(7, "5f0c2d4e-8a1b-4c3d-9e7f-60718293a4b5")]
    edit = put_op(
        device_id="dev-7f3a",
        seq=8,
        record_id="0b6f1f7e-3c55-4a5e-9d8e-2f1d3b7a9c01",
        form_id="household_roster",
        form_version=1,
        changes={"members/5f0c2d4e-8a1b-4c3d-9e7f-60718293a4b5/health": ["长期慢性病"]},
        base={"members/5f0c2d4e-8a1b-4c3d-9e7f-60718293a4b5/health": "019a8b7c6d5e-0007-dev-7f3a"},
        hlc="019a8b7d0000-0000-dev-7f3a",
        base_revision=1,
    )
    housing = put_op(
        device_id="dev-7f3a",
        seq=9,
        record_id="6a1e4c9b-2f3d-4e8a-b7c6-d5e4f3a2b1c0",
        form_id="housing_safety",
        form_version=2,
        household={"village_code": "530102001201", "household_no": "0042"},
        round="2026-annual",
        changes={
            "appraisal_grade": "C",
            "build_year": 1998,
            "floor_area": 86.5,
            "renovation_method": "维修加固",
            "house_photo": "sha256:" + "ab" * 32,
            "location": {"lat": 25.0389, "lon": 102.7183},
        },
        hlc="019a8b7d0001-0000-dev-7f3a",
    )
    row_delete = Op.from_dict(
        {
            **edit.to_dict(),
            "seq": 10,
            "changes": {"members/5f0c2d4e-8a1b-4c3d-9e7f-60718293a4b5": TOMBSTONE},
            "hlc": "019a8b7d0002-0000-dev-7f3a",
        }
    )
    # Front coding is character-wise (the longest common prefix, os.path.commonprefix), not by
    # path segment: "build_year" → "building" shares "build"; "note_备注" → "note_备用" shares
    # 6 code points (10 UTF-8 bytes).
    prefixes = put_op(
        device_id="dev-7f3a",
        seq=11,
        record_id="6a1e4c9b-2f3d-4e8a-b7c6-d5e4f3a2b1c0",
        form_id="housing_safety",
        form_version=2,
        household={"village_code": "530102001201", "household_no": "0042"},
        round="2026-annual",
        changes={
            "b": True,
            "build_year": 1996,
            "building": "砖混",
            "buildings/r1/floors": 2,
            "note_备注": "东厢",
            "note_备用": None,
        },
        base={"build_year": "019a8b7d0001-0000-dev-7f3a"},
        hlc="019a8b7d0003-0000-dev-7f3a",
        base_revision=1,
    )
    return [
        ("one new roster record", roster),
        ("edit, new housing record, row delete", [edit, housing, row_delete]),
        ("paths sharing a prefix that is not a path segment", [prefixes]),
    ]


def write_vectors() -> None:
    """Regenerate sync_protocol/vectors/codec.json (run when the codec version changes)."""
    import zlib

    import zstandard

    from sync_protocol.compression import Method, compress

    vectors = []
    for name, batch in _vector_ops():
        encoded = encode_batch(batch)
        compressed = {}
        for method in (Method.DEFLATE_RAW, Method.ZSTD):
            chosen, produced = compress(encoded, allowed={method})
            assert chosen is method
            compressed[method.name.lower().replace("_", "-")] = {"hex": produced.hex()}
        vectors.append(
            {
                "name": name,
                "ops": [op.to_dict() for op in batch],
                "batch_text": encoded.decode("utf-8"),
                "batch_hex": encoded.hex(),
                "compressed": compressed,
            }
        )
    document = {
        "description": (
            "Batch codec test vectors (docs/protocol.md): fixed ops, their exact batch bytes, and "
            "those bytes compressed. Any implementation must produce batch_hex exactly and must "
            "decompress every compressed hex back to batch_hex; the compressed bytes themselves "
            "are what the recorded library versions produce (deflate level 9 wbits -15 memLevel "
            "9, zstd level 19 with content size, no checksum, no dict id)."
        ),
        "zlib_version": zlib.ZLIB_RUNTIME_VERSION,
        "zstd_version": zstandard.ZSTD_VERSION,
        "vectors": vectors,
    }
    VECTORS.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def test_front_coding_uses_the_longest_common_prefix_in_code_points() -> None:
    document = json.loads(VECTORS.read_text(encoding="utf-8"))
    [vector] = [v for v in document["vectors"] if v["name"].startswith("paths sharing")]
    _version, table, [coded] = json.loads(vector["batch_text"])
    triples = coded[8]
    assert [tuple(triples[k : k + 2]) for k in range(0, len(triples), 3)] == [
        (0, "b"),
        (1, "uild_year"),
        (5, "ing"),
        (8, "s/r1/floors"),
        (0, "note_备注"),
        (6, "用"),
    ]
    # One table for every role, one entry per distinct value.
    assert table == [
        "dev-7f3a",
        "housing_safety",
        {"household_no": "0042", "village_code": "530102001201"},
        "2026-annual",
    ]
    assert coded[3:8] == [0, 1, 2, 2, 3]


def test_the_table_is_shared_by_every_role_and_deduplicated_by_value() -> None:
    op = put_op(
        device_id="2026-annual",  # a device id equal to the round: one table entry
        seq=1,
        record_id="r",
        form_id="housing_safety",
        form_version=1,
        changes={"a": 1},
        hlc="019a8b7d0003-0000-dev-7f3a",
        round="2026-annual",
    )
    no_round = Op.from_dict({**op.to_dict(), "seq": 2, "round": None})
    _version, table, coded = batch_to_json([op, no_round])
    assert table == ["2026-annual", "housing_safety", None]
    assert [c[3:8] for c in coded] == [[0, 1, 1, 2, 0], [0, 1, 1, 2, 2]]


def test_codec_vectors() -> None:
    """Fixed ops → exact batch bytes; the compressed vectors decompress to them."""
    import zlib

    import zstandard

    from sync_protocol.compression import Method, compress, decompress

    document = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert len(document["vectors"]) == len(_vector_ops())
    for vector, (name, batch) in zip(document["vectors"], _vector_ops(), strict=True):
        assert vector["name"] == name
        assert [Op.from_dict(op) for op in vector["ops"]] == batch
        encoded = encode_batch(batch)
        assert encoded.hex() == vector["batch_hex"], name
        assert encoded.decode("utf-8") == vector["batch_text"]
        assert decode_batch(bytes.fromhex(vector["batch_hex"])) == batch
        same_libraries = {
            "deflate-raw": document["zlib_version"] == zlib.ZLIB_RUNTIME_VERSION,
            "zstd": tuple(document["zstd_version"]) == tuple(zstandard.ZSTD_VERSION),
        }
        for method_name, expected in vector["compressed"].items():
            method = Method[method_name.upper().replace("-", "_")]
            assert decompress(method, bytes.fromhex(expected["hex"])) == encoded
            # Compressors may legally emit other bytes in other library versions; with the
            # recorded versions the output is reproducible to the byte.
            if same_libraries[method_name]:
                assert compress(encoded, allowed={method})[1].hex() == expected["hex"]


if __name__ == "__main__":
    write_vectors()


@settings(max_examples=400)
@given(
    value=st.recursive(
        scalars
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e-3, max_value=1e-3)
        | st.text(),
        lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children),
        max_leaves=30,
    )
)
def test_canonical_json_fast_writes_the_canonical_bytes(value: Any) -> None:
    # orjson where it writes the same, the standard library where it may not (exponents, tiny
    # floats, integers past 64 bits): a reply's bytes never depend on which encoder ran.
    try:
        want = canonical_json(value)
    except MalformedBatch:
        with pytest.raises(MalformedBatch):
            canonical_json_fast(value)
        return
    assert canonical_json_fast(value) == want


def test_canonical_json_fast_falls_back_for_the_floats_orjson_spells_otherwise() -> None:
    for value in (1e-05, 2.5e-07, 1e16, -3.9e-05, {"a": [0.00001]}):
        assert canonical_json_fast(value) == canonical_json(value)
    assert canonical_json_fast({"b": 1, "a": "é", "é": 2}) == '{"a":"é","b":1,"é":2}'.encode()
