"""Payload compression for sealed envelopes: raw, deflate-raw, zstd and zstd with a dictionary.

Errors are the classes of :mod:`sync_protocol.errors` (``UnknownCompression``,
``UnknownDictionary``, ``DecompressedTooLarge``, ``CorruptCompressedData``,
``DictionaryTrainingFailed``).

The envelope header carries one compression byte (see docs/protocol-envelope.md):

====  ===================  ==============================================================
 id    name                 what the bytes are
====  ===================  ==============================================================
 0     raw                  the payload itself
 1     deflate-raw          RFC 1951 deflate, no zlib/gzip wrapper (``wbits=-15``): what a
                            browser's ``CompressionStream('deflate-raw')`` reads and writes
 2     zstd                 one zstd frame (RFC 8878), content size declared, no checksum
 3     zstd-dictionary      one zstd frame compressed with the dictionary named by the
                            header's dictionary id
====  ===================  ==============================================================

The browser cipher suite uses deflate-raw only: browsers have neither zstd nor preset
dictionaries for deflate. :func:`compress` tries every method the peer allows and keeps the
smallest, falling back to raw when nothing is smaller, so small payloads never grow.

Dictionaries are trained per form version from sample records (:func:`train_dictionary`),
stored as files under ``sync_protocol/dictionaries/`` and named by a stable id derived from
their content (:func:`dictionary_id_for`), so both ends agree on an id without coordination.

:func:`decompress` refuses decompression bombs: output larger than ``max_size`` raises
:class:`DecompressedTooLarge` before more than ``max_size`` bytes are produced.
"""

from __future__ import annotations

import hashlib
import io
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cache
from importlib import resources

import zstandard

from sync_protocol.errors import (
    CorruptCompressedData,
    DecompressedTooLarge,
    DictionaryTrainingFailed,
    UnknownCompression,
    UnknownDictionary,
)

__all__ = [
    "ALL_METHODS",
    "BROWSER_METHODS",
    "DEFAULT_MAX_SIZE",
    "LARGE_PAYLOAD",
    "DictionaryStore",
    "Method",
    "ZstdDict",
    "compress",
    "decompress",
    "deflate_raw",
    "dictionary_id_for",
    "train_dictionary",
]


class Method(IntEnum):
    """Compression method ids, as written in the envelope header's compression byte."""

    RAW = 0
    DEFLATE_RAW = 1
    ZSTD = 2
    ZSTD_DICTIONARY = 3


ALL_METHODS: frozenset[Method] = frozenset(Method)
# What a browser has natively (CompressionStream); the browser suite is limited to these.
BROWSER_METHODS: frozenset[Method] = frozenset({Method.RAW, Method.DEFLATE_RAW})

# 8 MiB: far above a 32 KiB batch (ratios of 10-30x are normal for survey JSON), far below
# what would hurt a 2-core county server handling many devices at once.
DEFAULT_MAX_SIZE = 8 * 1024 * 1024

# zstd level 19 costs ~14 ms on a 32 KiB batch here and saves ~6 % over level 12: worth it for
# what crosses a weak link (a 32 KiB wire batch is ~150 KiB of JSON). Past 256 KiB (large download
# pages the server builds often) level 19 would cost the server ~0.4 s per MiB, so bigger
# payloads use level 9, and skip dictionaries, whose gain fades once a payload holds many records.
_ZSTD_LEVEL = 19
#: The level the county server compresses its replies with (issue 18). Measured on download
#: pages of sample households with the packaged dictionary: 50 records 9,184 B in 0.5 ms at
#: level 6 against 8,283 B in 12 ms at 19 (200 records: 32,967 B / 1.8 ms against 28,419 B /
#: 54 ms); level 3 saves another 0.4 ms but costs 7 % more bytes. Level 19 was a third of the
#: server's CPU with 50 tablets syncing; tablets keep level 19 for what they send.
SERVER_ZSTD_LEVEL = 6
_ZSTD_LEVEL_LARGE = 9
LARGE_PAYLOAD = 256 * 1024
_DEFLATE_LEVEL = 9


_ID_FILE_RE = re.compile(
    r"^(?P<form>[a-z][a-z0-9_]*)-v(?P<version>\d+)-(?P<id>[0-9a-f]{8})\.zdict$"
)


def dictionary_id_for(content: bytes) -> int:
    """Return the stable 32-bit id of a dictionary: the first 4 bytes of its SHA-256.

    Never 0, because 0 in the header means "no dictionary"; a hash starting with four zero
    bytes (one chance in 4 billion) is mapped to 1.
    """
    value = int.from_bytes(hashlib.sha256(content).digest()[:4], "big")
    return value or 1


@dataclass(frozen=True)
class ZstdDict:
    """A trained zstd dictionary for one form version, named by its content hash."""

    form_id: str
    form_version: int
    content: bytes
    dictionary_id: int = field(init=False)
    _compiled: zstandard.ZstdCompressionDict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dictionary_id", dictionary_id_for(self.content))
        compiled = zstandard.ZstdCompressionDict(self.content)
        # Precomputed once (read-only afterwards, so threads may share it); compressors are
        # made per call because a ZstdCompressor must not be used by two threads at once.
        compiled.precompute_compress(level=_ZSTD_LEVEL)
        object.__setattr__(self, "_compiled", compiled)

    @property
    def file_name(self) -> str:
        """``<form_id>-v<version>-<id as 8 hex>.zdict``: the name :class:`DictionaryStore` reads."""
        return f"{self.form_id}-v{self.form_version}-{self.dictionary_id:08x}.zdict"

    def compressor(self, level: int = _ZSTD_LEVEL) -> zstandard.ZstdCompressor:
        """A compressor bound to this dictionary (frames omit the dict id: the header has it).

        A dictionary precomputed for one level forces that level's parameters, so each other
        level gets its own precomputed copy, made once and kept (read-only afterwards).
        """
        if level == _ZSTD_LEVEL:
            return _zstd_compressor(self._compiled, level)
        cache: dict[int, zstandard.ZstdCompressionDict] = self.__dict__.setdefault("_per_level", {})
        compiled = cache.get(level)
        if compiled is None:
            compiled = zstandard.ZstdCompressionDict(self.content)
            compiled.precompute_compress(level=level)
            cache[level] = compiled
        return _zstd_compressor(compiled, level)

    def decompressor(self) -> zstandard.ZstdDecompressor:
        """A decompressor bound to this dictionary."""
        return zstandard.ZstdDecompressor(dict_data=self._compiled)


class DictionaryStore:
    """Dictionaries by id, loaded from ``*.zdict`` files (default: the packaged ones).

    Files are named ``<form_id>-v<version>-<id>.zdict``; a file whose content does not hash
    to the id in its name is ignored, so a renamed or damaged file can never be used under a
    wrong id.
    """

    def __init__(self, dictionaries: Iterable[ZstdDict] = ()) -> None:
        self._by_id: dict[int, ZstdDict] = {}
        self._by_form: dict[tuple[str, int], ZstdDict] = {}
        for dictionary in dictionaries:
            self.add(dictionary)

    @classmethod
    def from_files(cls, files: Iterable[tuple[str, bytes]]) -> DictionaryStore:
        """A store of every well-named ``.zdict`` file of ``files`` (name, content) whose content
        matches its id; other names are skipped. The caller reads the files (a folder, package
        data, a browser's cache): this module touches none."""
        store = cls()
        for name, content in sorted(files):
            match = _ID_FILE_RE.match(name)
            if match is None:
                continue
            dictionary = ZstdDict(match["form"], int(match["version"]), content)
            if dictionary.dictionary_id == int(match["id"], 16):
                store.add(dictionary)
        return store

    @classmethod
    def packaged(cls) -> DictionaryStore:
        """A new store holding the dictionaries shipped in ``sync_protocol/dictionaries/``.

        The files are read once per process; each call returns its own store.
        """
        return cls(_packaged_dictionaries())

    def add(self, dictionary: ZstdDict) -> None:
        """Register ``dictionary``. Several dictionaries of one form version may be held (old
        ones stay readable); :meth:`for_form` returns the one added last."""
        self._by_id[dictionary.dictionary_id] = dictionary
        self._by_form[(dictionary.form_id, dictionary.form_version)] = dictionary

    def get(self, dictionary_id: int) -> ZstdDict:
        """Return the dictionary with this id; raises :class:`UnknownDictionary`."""
        try:
            return self._by_id[dictionary_id]
        except KeyError:
            raise _unknown_dictionary(dictionary_id) from None

    def for_form(self, form_id: str, form_version: int) -> ZstdDict | None:
        """The dictionary trained for this form version, or None when there is none."""
        return self._by_form.get((form_id, form_version))

    def ids(self) -> list[int]:
        """All dictionary ids, sorted (what a Hello advertises)."""
        return sorted(self._by_id)

    def __contains__(self, dictionary_id: object) -> bool:
        return dictionary_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)


@cache
def _packaged_dictionaries() -> tuple[ZstdDict, ...]:
    root = resources.files("sync_protocol").joinpath("dictionaries")
    if not root.is_dir():
        return ()
    names = [entry.name for entry in root.iterdir() if entry.name.endswith(".zdict")]
    store = DictionaryStore.from_files(
        (name, resources.files("sync_protocol").joinpath("dictionaries", name).read_bytes())
        for name in names
    )
    return tuple(store.get(dictionary_id) for dictionary_id in store.ids())


def _zstd_compressor(
    dictionary: zstandard.ZstdCompressionDict | None, level: int
) -> zstandard.ZstdCompressor:
    # No checksum (the AEAD tag already authenticates every byte) and no dict id (the envelope
    # header names the dictionary): 4-8 bytes saved per frame. The content size stays in the
    # frame so the receiver can refuse a bomb before decompressing.
    return zstandard.ZstdCompressor(
        level=level,
        dict_data=dictionary,
        write_checksum=False,
        write_content_size=True,
        write_dict_id=False,
    )


def deflate_raw(data: bytes) -> bytes:
    """Compress ``data`` as raw deflate (RFC 1951), the format of ``CompressionStream('deflate-raw')``."""
    compressor = zlib.compressobj(_DEFLATE_LEVEL, zlib.DEFLATED, -15, 9)
    return compressor.compress(data) + compressor.flush()


def compress(
    data: bytes,
    *,
    allowed: Iterable[int] = ALL_METHODS,
    dictionary: ZstdDict | None = None,
    level: int | None = None,
) -> tuple[Method, bytes]:
    """Return ``(method, compressed)`` for the smallest allowed encoding of ``data``.

    ``level`` is the zstd level (with or without the dictionary); by default level 19, and 9
    past :data:`LARGE_PAYLOAD`. The county server passes :data:`SERVER_ZSTD_LEVEL`.

    Raw is always a candidate (and wins ties), so the result is never longer than ``data``.
    zstd-with-dictionary is tried only when ``dictionary`` is given and allowed, and ``data`` is
    at most :data:`LARGE_PAYLOAD` bytes. Safe to call from several threads. Never raises for
    any bytes.
    """
    permitted = {Method(m) for m in allowed if m in Method._value2member_map_}
    best: tuple[Method, bytes] = (Method.RAW, bytes(data))
    candidates: list[tuple[Method, bytes]] = []
    if Method.DEFLATE_RAW in permitted:
        candidates.append((Method.DEFLATE_RAW, deflate_raw(data)))
    if Method.ZSTD in permitted:
        plain_level = level or (_ZSTD_LEVEL if len(data) <= LARGE_PAYLOAD else _ZSTD_LEVEL_LARGE)
        candidates.append((Method.ZSTD, _zstd_compressor(None, plain_level).compress(data)))
    if (
        dictionary is not None
        and Method.ZSTD_DICTIONARY in permitted
        and len(data) <= LARGE_PAYLOAD
    ):
        compressor = dictionary.compressor(level or _ZSTD_LEVEL)
        candidates.append((Method.ZSTD_DICTIONARY, compressor.compress(data)))
    for method, encoded in candidates:
        if len(encoded) < len(best[1]):
            best = (method, encoded)
    return best


def decompress(
    method_id: int,
    data: bytes,
    dictionaries: DictionaryStore | Mapping[int, ZstdDict] | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    *,
    dictionary_id: int = 0,
) -> bytes:
    """Decompress ``data`` written with ``method_id``, producing at most ``max_size`` bytes.

    ``dictionary_id`` (from the envelope header) selects the dictionary for method 3.

    Raises :class:`UnknownCompression` for an unknown method, :class:`UnknownDictionary` for a
    dictionary this side does not hold, :class:`DecompressedTooLarge` when the output would
    exceed ``max_size`` (checked before the output is produced, so a bomb costs no memory),
    and :class:`CorruptCompressedData` for truncated, trailing or malformed input.
    """
    if method_id == Method.RAW:
        if len(data) > max_size:
            raise _too_large(max_size)
        return bytes(data)
    if method_id == Method.DEFLATE_RAW:
        return _inflate_raw(data, max_size)
    if method_id == Method.ZSTD:
        return _unzstd(zstandard.ZstdDecompressor(), data, max_size)
    if method_id == Method.ZSTD_DICTIONARY:
        if dictionaries is None:
            raise _unknown_dictionary(dictionary_id)
        if isinstance(dictionaries, DictionaryStore):
            dictionary = dictionaries.get(dictionary_id)
        else:
            dictionary = dictionaries.get(dictionary_id)
            if dictionary is None:
                raise _unknown_dictionary(dictionary_id)
        return _unzstd(dictionary.decompressor(), data, max_size)
    raise UnknownCompression(
        f"compression method {method_id} is not supported",
        message_zh=f"不支持的压缩方式 {method_id}",
    )


def _unknown_dictionary(dictionary_id: int) -> UnknownDictionary:
    return UnknownDictionary(
        f"compression dictionary {dictionary_id:#010x} is unknown",
        message_zh=f"未知的压缩字典 {dictionary_id:#010x}",
    )


def _too_large(max_size: int) -> DecompressedTooLarge:
    return DecompressedTooLarge(
        f"the payload decompresses to more than {max_size} bytes",
        message_zh=f"解压后的数据超过 {max_size} 字节上限",
    )


def _corrupt(detail: str) -> CorruptCompressedData:
    return CorruptCompressedData(
        f"corrupt compressed data: {detail}", message_zh="压缩数据损坏或不完整"
    )


def _inflate_raw(data: bytes, max_size: int) -> bytes:
    inflater = zlib.decompressobj(-15)
    try:
        # max_length bounds the output: a bomb stops here with input left unconsumed.
        out = inflater.decompress(data, max_size + 1)
    except zlib.error as exc:
        raise _corrupt(f"deflate-raw: {exc}") from None
    if len(out) > max_size or inflater.unconsumed_tail:
        raise _too_large(max_size)
    if not inflater.eof:
        raise _corrupt("deflate-raw stream is truncated")
    if inflater.unused_data:
        raise _corrupt("bytes after the end of the deflate-raw stream")
    return out


def _unzstd(decompressor: zstandard.ZstdDecompressor, data: bytes, max_size: int) -> bytes:
    try:
        declared = zstandard.get_frame_parameters(data).content_size
    except zstandard.ZstdError as exc:
        raise _corrupt(f"zstd frame header: {exc}") from None
    if declared == zstandard.CONTENTSIZE_UNKNOWN:
        # Without a declared size, zstd reports "ran out of output room" and "stream cut short"
        # alike; a bounded streaming read of max_size + 1 bytes tells a bomb apart first.
        if _exceeds(decompressor, data, max_size):
            raise _too_large(max_size)
    elif declared > max_size:
        raise _too_large(max_size)
    try:
        return decompressor.decompress(
            data, max_output_size=max_size, read_across_frames=False, allow_extra_data=False
        )
    except zstandard.ZstdError as exc:
        raise _corrupt(f"zstd: {exc}") from None


def _exceeds(decompressor: zstandard.ZstdDecompressor, data: bytes, max_size: int) -> bool:
    """True when ``data`` yields more than ``max_size`` bytes (reads at most ``max_size + 1``)."""
    reader = decompressor.stream_reader(io.BytesIO(data), read_across_frames=False)
    try:
        produced = reader.read(max_size + 1)
    except zstandard.ZstdError:
        return False
    return len(produced) > max_size


def train_dictionary(
    form_id: str,
    form_version: int,
    samples: Sequence[bytes],
    *,
    size: int = 8 * 1024,
) -> ZstdDict:
    """Train a zstd dictionary for one form version from encoded sample payloads.

    ``samples`` should be what will really be compressed: single-record batches encoded by
    :mod:`sync_protocol.codec`. Training is deterministic for the same samples, so the
    dictionary id is reproducible. Raises
    :class:`~sync_protocol.errors.DictionaryTrainingFailed` when zstd cannot train from the
    samples (too few or too small).
    """
    try:
        trained = zstandard.train_dictionary(size, list(samples), level=_ZSTD_LEVEL, threads=1)
    except zstandard.ZstdError as exc:
        raise DictionaryTrainingFailed(
            f"cannot train a dictionary for {form_id} v{form_version}: {exc}",
            message_zh=f"无法为 {form_id} 第 {form_version} 版训练压缩字典",
        ) from None
    return ZstdDict(form_id, form_version, trained.as_bytes())
