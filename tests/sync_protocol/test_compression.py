"""Compression: smallest-of choice, round-trips, bomb refusal and dictionaries by id."""

from __future__ import annotations

import json
import zlib

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_protocol.compression import (
    ALL_METHODS,
    BROWSER_METHODS,
    DictionaryStore,
    Method,
    ZstdDict,
    compress,
    decompress,
    deflate_raw,
    dictionary_id_for,
    train_dictionary,
)
from sync_protocol.errors import (
    CorruptCompressedData,
    DecompressedTooLarge,
    DictionaryTrainingFailed,
    ProtocolError,
    UnknownCompression,
    UnknownDictionary,
)


def _record_payload(i: int) -> bytes:
    """A small survey-like payload: the kind of bytes a single-record batch holds."""
    record = {
        "record_id": f"{i:08x}-5d1c-4b8e-9a77-{i * 7919:012x}",
        "form": "housing_safety",
        "changes": {
            "appraisal_grade": "ABCD"[i % 4],
            "structure_type": ["砖混（有构造柱/圈梁）", "钢筋混凝土", "砖木/石木/土木（木框架）"][
                i % 3
            ],
            "build_year": 1980 + i % 40,
            "storeys": 1 + i % 2,
            "floor_area": 60 + i % 90,
            "safety_basis": "鉴定安全",
        },
    }
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


@pytest.fixture(scope="module")
def housing_dictionary() -> ZstdDict:
    return train_dictionary(
        "housing_safety", 1, [_record_payload(i) for i in range(400)], size=4096
    )


@settings(max_examples=150)
@given(data=st.binary(max_size=4096))
def test_round_trip_any_bytes_every_method(data: bytes) -> None:
    method, encoded = compress(data, allowed=ALL_METHODS)
    assert len(encoded) <= len(data)
    assert decompress(method, encoded) == data


@settings(max_examples=60)
@given(data=st.binary(max_size=2048))
def test_round_trip_with_dictionary(housing_dictionary: ZstdDict, data: bytes) -> None:
    store = DictionaryStore([housing_dictionary])
    method, encoded = compress(data, dictionary=housing_dictionary)
    assert (
        decompress(method, encoded, store, dictionary_id=housing_dictionary.dictionary_id) == data
    )


def test_small_payload_stays_raw() -> None:
    assert compress(b"{}") == (Method.RAW, b"{}")


def test_smallest_method_wins_and_dictionary_helps_small_records(
    housing_dictionary: ZstdDict,
) -> None:
    payload = _record_payload(10_001)
    sizes = {
        Method.DEFLATE_RAW: len(compress(payload, allowed={Method.DEFLATE_RAW})[1]),
        Method.ZSTD: len(compress(payload, allowed={Method.ZSTD})[1]),
    }
    method, encoded = compress(payload, dictionary=housing_dictionary)
    assert method is Method.ZSTD_DICTIONARY
    assert len(encoded) < min(sizes.values())
    # A dictionary is worth a lot on one small record: at least a third smaller.
    assert len(encoded) * 3 < min(sizes.values()) * 2


def test_browser_suite_only_uses_deflate_raw(housing_dictionary: ZstdDict) -> None:
    payload = b"".join(_record_payload(i) for i in range(20))
    method, encoded = compress(payload, allowed=BROWSER_METHODS, dictionary=housing_dictionary)
    assert method is Method.DEFLATE_RAW
    # What CompressionStream('deflate-raw') produces and reads: raw RFC 1951, no zlib header.
    assert zlib.decompress(encoded, wbits=-15) == payload


def test_deflate_raw_has_no_wrapper() -> None:
    payload = b"village " * 100
    encoded = deflate_raw(payload)
    with pytest.raises(zlib.error):
        zlib.decompress(encoded)  # a zlib-wrapped reader refuses raw deflate
    assert zlib.decompress(encoded, wbits=-15) == payload


@pytest.mark.parametrize("method", [Method.DEFLATE_RAW, Method.ZSTD])
def test_bomb_is_refused(method: Method) -> None:
    bomb = compress(b"\0" * 5_000_000, allowed={method})[1]
    assert len(bomb) < 6000
    with pytest.raises(DecompressedTooLarge) as info:
        decompress(method, bomb, max_size=64 * 1024)
    assert info.value.code == "decompressed_too_large"
    assert "65536" in info.value.message


def test_zstd_bomb_without_declared_size_is_refused() -> None:
    streaming = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    bomb = streaming.compress(b"\0" * 3_000_000) + streaming.flush()
    assert zstandard.get_frame_parameters(bomb).content_size == zstandard.CONTENTSIZE_UNKNOWN
    with pytest.raises(DecompressedTooLarge):
        decompress(Method.ZSTD, bomb, max_size=10_000)
    assert len(decompress(Method.ZSTD, bomb, max_size=3_000_000)) == 3_000_000


def test_dictionary_bomb_is_refused(housing_dictionary: ZstdDict) -> None:
    bomb = housing_dictionary.compressor().compress(b"A" * 2_000_000)
    store = DictionaryStore([housing_dictionary])
    with pytest.raises(DecompressedTooLarge):
        decompress(
            Method.ZSTD_DICTIONARY,
            bomb,
            store,
            max_size=1000,
            dictionary_id=housing_dictionary.dictionary_id,
        )


def test_raw_over_limit_is_refused() -> None:
    with pytest.raises(DecompressedTooLarge):
        decompress(Method.RAW, b"x" * 11, max_size=10)


@pytest.mark.parametrize("method", [Method.DEFLATE_RAW, Method.ZSTD])
def test_truncated_and_trailing_data_are_corrupt(method: Method) -> None:
    payload = b"".join(_record_payload(i) for i in range(5))
    encoded = compress(payload, allowed={method})[1]
    assert compress(payload, allowed={method})[0] is method
    with pytest.raises(CorruptCompressedData):
        decompress(method, encoded[:-4])
    with pytest.raises(CorruptCompressedData):
        decompress(method, encoded + b"\x00junk")


@settings(max_examples=150)
@given(method=st.integers(min_value=0, max_value=5), data=st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_the_error_hierarchy(method: int, data: bytes) -> None:
    try:
        out = decompress(method, data, max_size=100_000)
    except ProtocolError as exc:
        assert exc.code in {
            "unknown_compression",
            "unknown_dictionary",
            "decompressed_too_large",
            "corrupt_compressed_data",
        }
    else:
        assert method in (Method.RAW, Method.DEFLATE_RAW, Method.ZSTD)
        assert len(out) <= 100_000


def test_unknown_method_and_dictionary(housing_dictionary: ZstdDict) -> None:
    with pytest.raises(UnknownCompression) as info:
        decompress(9, b"abc")
    assert info.value.code == "unknown_compression"
    assert info.value.message_zh
    encoded = housing_dictionary.compressor().compress(_record_payload(1))
    with pytest.raises(UnknownDictionary):
        decompress(Method.ZSTD_DICTIONARY, encoded, DictionaryStore(), dictionary_id=1234)
    with pytest.raises(UnknownDictionary):
        decompress(Method.ZSTD_DICTIONARY, encoded, None, dictionary_id=1234)
    with pytest.raises(UnknownDictionary):
        decompress(Method.ZSTD_DICTIONARY, encoded, {}, dictionary_id=1234)


def test_dictionary_id_is_content_hash_and_files_round_trip(housing_dictionary: ZstdDict) -> None:
    assert housing_dictionary.dictionary_id == dictionary_id_for(housing_dictionary.content)
    assert housing_dictionary.dictionary_id != 0
    files = [
        (housing_dictionary.file_name, housing_dictionary.content),
        # A file whose name does not match its content is never trusted under that id.
        ("housing_safety-v2-00000001.zdict", housing_dictionary.content),
        ("notes.txt", b"ignored"),
    ]
    store = DictionaryStore.from_files(files)
    assert store.ids() == [housing_dictionary.dictionary_id]
    loaded = store.get(housing_dictionary.dictionary_id)
    assert loaded.content == housing_dictionary.content
    assert store.for_form("housing_safety", 1) == loaded
    assert store.for_form("housing_safety", 2) is None


def test_training_is_deterministic() -> None:
    samples = [_record_payload(i) for i in range(300)]
    first = train_dictionary("housing_safety", 1, samples, size=2048)
    second = train_dictionary("housing_safety", 1, samples, size=2048)
    assert first.dictionary_id == second.dictionary_id


def test_training_from_too_little_fails_with_a_code() -> None:
    with pytest.raises(DictionaryTrainingFailed) as info:
        train_dictionary("housing_safety", 1, [b"ab", b"cd"], size=4096)
    assert info.value.code == "dictionary_training_failed"


def test_packaged_store_loads() -> None:
    store = DictionaryStore.packaged()
    for dictionary_id in store.ids():
        assert store.get(dictionary_id).dictionary_id == dictionary_id


def _batch_payload(records: int) -> bytes:
    return b"[" + b",".join(_record_payload(i) for i in range(records)) + b"]"


def test_a_chosen_level_is_the_level_used_plain_and_with_a_dictionary(
    housing_dictionary: ZstdDict,
) -> None:
    from sync_protocol.compression import SERVER_ZSTD_LEVEL

    payload = _batch_payload(50)
    method, plain = compress(payload, allowed={Method.ZSTD}, level=SERVER_ZSTD_LEVEL)
    expected = zstandard.ZstdCompressor(
        level=SERVER_ZSTD_LEVEL, write_checksum=False, write_content_size=True, write_dict_id=False
    ).compress(payload)
    assert (method, plain) == (Method.ZSTD, expected)
    method, with_dict = compress(
        payload,
        allowed={Method.ZSTD_DICTIONARY},
        dictionary=housing_dictionary,
        level=SERVER_ZSTD_LEVEL,
    )
    compiled = zstandard.ZstdCompressionDict(housing_dictionary.content)
    compiled.precompute_compress(level=SERVER_ZSTD_LEVEL)
    expected_dict = zstandard.ZstdCompressor(
        level=SERVER_ZSTD_LEVEL,
        dict_data=compiled,
        write_checksum=False,
        write_content_size=True,
        write_dict_id=False,
    ).compress(payload)
    assert (method, with_dict) == (Method.ZSTD_DICTIONARY, expected_dict)
    store = {housing_dictionary.dictionary_id: housing_dictionary}
    opened = decompress(method, with_dict, store, dictionary_id=housing_dictionary.dictionary_id)
    assert opened == payload
    # The default (what a tablet sends over a weak link) stays the strongest level.
    assert len(compress(payload, allowed={Method.ZSTD})[1]) <= len(plain)
