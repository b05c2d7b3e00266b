"""The sync envelope: a payload sealed to the recipient's X25519 key and signed by the sender.

Wire layout (all integers big-endian; offsets for a sender id of ``n`` bytes)::

    offset      size  field
    0           4     magic  b"VSE\\x00"
    4           1     version (1)
    5           1     suite (1 = X25519-HKDF-SHA256-AES256GCM-Ed25519,
                             2 = X25519-HKDF-SHA256-CHACHA20POLY1305-Ed25519)
    6           1     compression id of the payload (0 raw, 1 deflate-raw, 2 zstd,
                      3 zstd with dictionary) — chosen by the batch codec, only authenticated here
    7           4     dictionary id (uint32; non-zero exactly when compression is 3)
    11          1     flags (reserved, must be 0)
    12          8     recipient key id (first 8 bytes of SHA-256 of the recipient X25519 public key)
    20          1     sender id length n (1..255)
    21          n     sender id (UTF-8)
    21+n        8     sequence (uint64, the sender's batch sequence number)
    29+n        32    ephemeral X25519 public key
    61+n        12    AEAD nonce
    73+n        4     plaintext length (uint32)
    77+n        4     ciphertext length (uint32, = plaintext length + 16)
    81+n        c     ciphertext (AEAD output: encrypted payload followed by the 16-byte tag)
    81+n+c      64    Ed25519 signature by the sender over bytes [0, 81+n+c)

Key derivation: ``shared = X25519(ephemeral_private, recipient_public)``;
``key = HKDF-SHA256(ikm=shared, salt=ephemeral_public || recipient_public,
info=b"village-sync envelope v1" || header)`` (32 bytes), where ``header`` is bytes
``[0, 81+n)``. The AEAD uses ``key``, the header's nonce and the header as associated data.

Opening checks, in order: size limit, header syntax (:func:`peek_header`), recipient key id,
sender, signature (**before** any decryption), the caller's replay check, then decryption.
See ``docs/protocol-envelope.md`` for the full description and the browser recipe.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from sync_protocol import crypto
from sync_protocol.crypto import (
    AEAD_NONCE_LENGTH,
    AEAD_TAG_LENGTH,
    KEY_ID_LENGTH,
    RAW_KEY_LENGTH,
    SIGNATURE_LENGTH,
    AeadAlgorithm,
    EncryptionPrivateKey,
    EncryptionPublicKey,
    SigningPrivateKey,
    SigningPublicKey,
)
from sync_protocol.errors import (
    BadSignature,
    InvalidKey,
    MalformedHeader,
    Replayed,
    TooLarge,
    Truncated,
    UnknownKeyId,
    UnknownSender,
    UnsupportedSuite,
    UnsupportedVersion,
    WrongRecipientKey,
)

MAGIC: Final = b"VSE\x00"
VERSION: Final = 1
MAX_ENVELOPE_BYTES: Final = 8 * 1024 * 1024
"""Largest envelope accepted or produced, signature included (8 MiB)."""
MAX_SENDER_ID_BYTES: Final = 255
HKDF_INFO_LABEL: Final = b"village-sync envelope v1"

# Fixed-size parts before and after the sender id.
_PREFIX = struct.Struct(">4sBBBIB8sB")  # magic … sender id length: 21 bytes
_SUFFIX = struct.Struct(f">Q{RAW_KEY_LENGTH}s{AEAD_NONCE_LENGTH}sII")  # sequence … lengths: 60
MIN_HEADER_BYTES: Final = _PREFIX.size + 1 + _SUFFIX.size
MAX_PAYLOAD_BYTES: Final = (
    (MAX_ENVELOPE_BYTES - (_PREFIX.size + MAX_SENDER_ID_BYTES + _SUFFIX.size))
    - AEAD_TAG_LENGTH
    - SIGNATURE_LENGTH
)
"""Largest payload :func:`seal` accepts whatever the sender id (just under 8 MiB)."""

_UINT64_MAX: Final = 2**64 - 1


class Suite(enum.IntEnum):
    """Cipher suites. Suite 1 uses only what WebCrypto offers natively."""

    X25519_HKDF_SHA256_AES256GCM_ED25519 = 1
    X25519_HKDF_SHA256_CHACHA20POLY1305_ED25519 = 2

    @property
    def aead(self) -> AeadAlgorithm:
        """The AEAD algorithm of this suite."""
        if self is Suite.X25519_HKDF_SHA256_AES256GCM_ED25519:
            return "aes-256-gcm"
        return "chacha20-poly1305"


BROWSER_SUITE: Final = Suite.X25519_HKDF_SHA256_AES256GCM_ED25519


class CompressionId(enum.IntEnum):
    """How the payload was compressed before sealing (the batch codec decides and undoes it)."""

    RAW = 0
    DEFLATE_RAW = 1
    ZSTD = 2
    ZSTD_DICTIONARY = 3


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed envelope header. ``raw`` is its exact bytes (the AEAD associated data)."""

    version: int
    suite: Suite
    compression: CompressionId
    dictionary_id: int
    flags: int
    recipient_key_id: str
    sender_id: str
    sequence: int
    ephemeral_public: bytes
    nonce: bytes
    plaintext_length: int
    ciphertext_length: int
    raw: bytes

    @property
    def header_length(self) -> int:
        """Length of the header in bytes."""
        return len(self.raw)

    @property
    def envelope_length(self) -> int:
        """Total envelope length the header announces (header, ciphertext, signature)."""
        return len(self.raw) + self.ciphertext_length + SIGNATURE_LENGTH


@dataclass(frozen=True, slots=True)
class Opened:
    """The result of :func:`open_envelope`: the verified header and the decrypted payload."""

    header: Header
    payload: bytes


def _encode_header(
    *,
    suite: Suite,
    compression: CompressionId,
    dictionary_id: int,
    recipient_key_id: bytes,
    sender_id: bytes,
    sequence: int,
    ephemeral_public: bytes,
    nonce: bytes,
    plaintext_length: int,
) -> bytes:
    prefix = _PREFIX.pack(
        MAGIC,
        VERSION,
        suite,
        compression,
        dictionary_id,
        0,
        recipient_key_id,
        len(sender_id),
    )
    suffix = _SUFFIX.pack(
        sequence, ephemeral_public, nonce, plaintext_length, plaintext_length + AEAD_TAG_LENGTH
    )
    return prefix + sender_id + suffix


def _validate_compression(compression: int, dictionary_id: int) -> CompressionId:
    try:
        compression_id = CompressionId(compression)
    except ValueError:
        raise MalformedHeader(
            f"unknown compression id {compression}", message_zh="未知的压缩方式"
        ) from None
    if not 0 <= dictionary_id <= 0xFFFFFFFF:
        raise MalformedHeader("dictionary id must fit in 32 bits", message_zh="字典编号超出范围")
    if (compression_id is CompressionId.ZSTD_DICTIONARY) != (dictionary_id != 0):
        raise MalformedHeader(
            "a dictionary id is given exactly when compression is zstd with a dictionary",
            message_zh="字典编号与压缩方式不一致",
        )
    return compression_id


def _derive_key(
    shared_secret: bytes, ephemeral_public: bytes, recipient_public: bytes, header: bytes
) -> bytes:
    # Salt binds both public keys (so a secret re-used against another recipient key gives another
    # key); info binds the whole header, so any header change also changes the key.
    return crypto.hkdf_sha256(
        shared_secret,
        salt=ephemeral_public + recipient_public,
        info=HKDF_INFO_LABEL + header,
    )


def seal(
    payload: bytes,
    *,
    recipient_public: EncryptionPublicKey,
    recipient_key_id: str | None = None,
    sender_id: str,
    sender_signing_key: SigningPrivateKey,
    sequence: int,
    suite: int = BROWSER_SUITE,
    compression: int = CompressionId.RAW,
    dictionary_id: int = 0,
    nonce: bytes | None = None,
    ephemeral_private: EncryptionPrivateKey | None = None,
) -> bytes:
    """Seal ``payload`` to ``recipient_public`` and sign it; return the envelope bytes.

    ``recipient_key_id`` defaults to the id of ``recipient_public`` and, when given, must equal
    it. ``nonce`` and ``ephemeral_private`` are injectable only so test vectors are reproducible;
    production callers leave them ``None`` (fresh random values each call). The payload is
    expected to be already compressed as ``compression`` says.

    Raises:
        UnsupportedSuite: if ``suite`` is not a known suite.
        MalformedHeader: for a bad compression id/dictionary id pair, a sender id that is empty or
            longer than 255 UTF-8 bytes, a sequence outside uint64, or a nonce of the wrong size.
        InvalidKey: if ``recipient_key_id`` does not match ``recipient_public``, or the recipient
            key is a low-order point.
        TooLarge: if the envelope would exceed :data:`MAX_ENVELOPE_BYTES`.
    """
    try:
        suite_id = Suite(suite)
    except ValueError:
        raise UnsupportedSuite(
            f"unknown cipher suite {suite}", message_zh="未知的加密套件"
        ) from None
    compression_id = _validate_compression(compression, dictionary_id)
    actual_key_id = recipient_public.key_id()
    if recipient_key_id is not None and recipient_key_id != actual_key_id:
        raise InvalidKey(
            f"recipient key id {recipient_key_id!r} is not the id of the recipient key "
            f"({actual_key_id!r})",
            message_zh="接收方密钥编号与公钥不符",
        )
    sender_bytes = sender_id.encode("utf-8")
    if not 1 <= len(sender_bytes) <= MAX_SENDER_ID_BYTES:
        raise MalformedHeader(
            f"sender id must be 1..{MAX_SENDER_ID_BYTES} UTF-8 bytes",
            message_zh="发送方编号长度错误",
        )
    if not 0 <= sequence <= _UINT64_MAX:
        raise MalformedHeader("sequence must fit in 64 bits", message_zh="序号超出范围")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise TooLarge(
            f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}", message_zh="数据过大"
        )
    if nonce is None:
        nonce = os.urandom(AEAD_NONCE_LENGTH)
    elif len(nonce) != AEAD_NONCE_LENGTH:
        raise MalformedHeader(
            f"nonce must be {AEAD_NONCE_LENGTH} bytes", message_zh="随机数长度错误"
        )
    if ephemeral_private is None:
        ephemeral_private = EncryptionPrivateKey.generate()
    ephemeral_public = ephemeral_private.public_key().raw()

    header = _encode_header(
        suite=suite_id,
        compression=compression_id,
        dictionary_id=dictionary_id,
        recipient_key_id=bytes.fromhex(actual_key_id),
        sender_id=sender_bytes,
        sequence=sequence,
        ephemeral_public=ephemeral_public,
        nonce=nonce,
        plaintext_length=len(payload),
    )
    shared = crypto.x25519_shared_secret(ephemeral_private, recipient_public)
    key = _derive_key(shared, ephemeral_public, recipient_public.raw(), header)
    ciphertext = crypto.aead_encrypt(suite_id.aead, key, nonce, payload, header)
    signed = header + ciphertext
    envelope = signed + crypto.sign(sender_signing_key, signed)
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise TooLarge(
            f"envelope of {len(envelope)} bytes exceeds {MAX_ENVELOPE_BYTES}",
            message_zh="数据包过大",
        )
    return envelope


def peek_header(data: bytes) -> Header:
    """Parse and check the header of an envelope without verifying or decrypting anything.

    Lets a receiver learn the sender id and key id (to look up the device) before doing any
    cryptography. The header is *not* authenticated yet: trust nothing in it until
    :func:`open_envelope` has verified the signature. Also checks that ``data`` has exactly the
    length the header announces.

    Raises:
        TooLarge: if ``data`` or the announced payload exceeds the size limit.
        Truncated: if ``data`` ends before the header, ciphertext or signature it announces.
        MalformedHeader: bad magic, non-zero flags, unknown compression, bad dictionary id, empty
            or non-UTF-8 sender id, inconsistent lengths, or trailing bytes.
        UnsupportedVersion: if the version is not 1.
        UnsupportedSuite: if the suite is not 1 or 2.
    """
    data = bytes(data)
    if len(data) > MAX_ENVELOPE_BYTES:
        raise TooLarge(
            f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE_BYTES}", message_zh="数据包过大"
        )
    # Magic and version are checked on whatever prefix is present, so that a foreign or future
    # message is reported as such rather than as truncated.
    if data[: len(MAGIC)] != MAGIC[: len(data)]:
        raise MalformedHeader(
            "not a village-sync envelope (bad magic)", message_zh="不是同步数据包"
        )
    if len(data) > len(MAGIC) and data[len(MAGIC)] != VERSION:
        raise UnsupportedVersion(
            f"envelope version {data[len(MAGIC)]} is not supported (expected {VERSION})",
            message_zh=f"不支持的数据包版本 {data[len(MAGIC)]}",
        )
    if len(data) < _PREFIX.size:
        raise Truncated(f"envelope of {len(data)} bytes ends inside its header")
    (_, version, suite, compression, dictionary_id, flags, key_id_raw, sender_length) = (
        _PREFIX.unpack_from(data, 0)
    )
    try:
        suite_id = Suite(suite)
    except ValueError:
        raise UnsupportedSuite(
            f"unknown cipher suite {suite}", message_zh="未知的加密套件"
        ) from None
    compression_id = _validate_compression(compression, dictionary_id)
    if flags != 0:
        raise MalformedHeader(f"reserved flags set ({flags:#04x})", message_zh="保留标志位非零")
    if sender_length == 0:
        raise MalformedHeader("empty sender id", message_zh="发送方编号为空")
    header_length = _PREFIX.size + sender_length + _SUFFIX.size
    if len(data) < header_length:
        raise Truncated(f"envelope of {len(data)} bytes ends inside its header")
    try:
        sender_id = data[_PREFIX.size : _PREFIX.size + sender_length].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedHeader("sender id is not UTF-8", message_zh="发送方编号编码错误") from None
    sequence, ephemeral_public, nonce, plaintext_length, ciphertext_length = _SUFFIX.unpack_from(
        data, _PREFIX.size + sender_length
    )
    if ciphertext_length != plaintext_length + AEAD_TAG_LENGTH:
        raise MalformedHeader(
            "ciphertext length is not plaintext length + 16", message_zh="数据包长度字段不一致"
        )
    envelope_length = header_length + ciphertext_length + SIGNATURE_LENGTH
    if envelope_length > MAX_ENVELOPE_BYTES:
        raise TooLarge(
            f"announced envelope of {envelope_length} bytes exceeds {MAX_ENVELOPE_BYTES}",
            message_zh="数据包过大",
        )
    if len(data) < envelope_length:
        raise Truncated(
            f"envelope of {len(data)} bytes is shorter than the {envelope_length} it announces"
        )
    if len(data) > envelope_length:
        raise MalformedHeader(
            f"{len(data) - envelope_length} trailing bytes after the signature",
            message_zh="数据包末尾有多余数据",
        )
    return Header(
        version=version,
        suite=suite_id,
        compression=compression_id,
        dictionary_id=dictionary_id,
        flags=flags,
        recipient_key_id=key_id_raw.hex(),
        sender_id=sender_id,
        sequence=sequence,
        ephemeral_public=ephemeral_public,
        nonce=nonce,
        plaintext_length=plaintext_length,
        ciphertext_length=ciphertext_length,
        raw=data[:header_length],
    )


def open_envelope(
    data: bytes,
    *,
    recipient_keys: Mapping[str, EncryptionPrivateKey],
    sender_verify_key: Callable[[str], SigningPublicKey | None],
    is_replay: Callable[[str, int], bool] | None = None,
) -> Opened:
    """Verify and decrypt an envelope.

    ``recipient_keys`` maps key id (16 hex characters) to the receiver's private keys (several
    during a key rotation). ``sender_verify_key(sender_id)`` returns the sender's Ed25519 key
    from enrollment, or ``None`` if the sender is unknown or revoked. ``is_replay(sender_id,
    sequence)`` — called only once the signature is verified — returns whether the sequence was
    already used; the caller records the sequence itself, after it has processed the payload.

    Raises:
        TooLarge, Truncated, MalformedHeader, UnsupportedVersion, UnsupportedSuite: see
            :func:`peek_header`.
        UnknownKeyId: if the header's key id is not in ``recipient_keys``.
        UnknownSender: if ``sender_verify_key`` returns ``None``.
        BadSignature: if the signature does not verify (checked before decrypting).
        Replayed: if ``is_replay`` says the sequence was already seen.
        WrongRecipientKey: if decryption fails (sealed to another key).
    """
    header = peek_header(data)
    private = recipient_keys.get(header.recipient_key_id)
    if private is None:
        raise UnknownKeyId(
            f"no private key with id {header.recipient_key_id}",
            message_zh=f"没有编号为 {header.recipient_key_id} 的私钥",
        )
    verify_key = sender_verify_key(header.sender_id)
    if verify_key is None:
        raise UnknownSender(
            f"unknown or revoked sender {header.sender_id!r}",
            message_zh=f"未知或已吊销的发送方 {header.sender_id}",
        )
    signed_length = header.header_length + header.ciphertext_length
    data = bytes(data)
    if not crypto.verify_signature(verify_key, data[signed_length:], data[:signed_length]):
        raise BadSignature(
            f"signature of sender {header.sender_id!r} does not verify",
            message_zh="数据包签名验证失败",
        )
    if is_replay is not None and is_replay(header.sender_id, header.sequence):
        raise Replayed(
            f"sequence {header.sequence} of sender {header.sender_id!r} was already used",
            message_zh=f"序号 {header.sequence} 已使用过",
        )
    recipient_public = private.public_key()
    if recipient_public.key_id() != header.recipient_key_id:
        # The mapping put a key under the wrong id: decrypting would fail anyway; say why.
        raise WrongRecipientKey(
            f"the key stored under id {header.recipient_key_id} has id {recipient_public.key_id()}"
        )
    try:
        shared = crypto.x25519_shared_secret_with_raw(private, header.ephemeral_public)
    except InvalidKey:
        raise MalformedHeader(
            "the ephemeral key is a low-order point", message_zh="临时公钥无效"
        ) from None
    key = _derive_key(shared, header.ephemeral_public, recipient_public.raw(), header.raw)
    payload = crypto.aead_decrypt(
        header.suite.aead,
        key,
        header.nonce,
        data[header.header_length : signed_length],
        header.raw,
    )
    return Opened(header=header, payload=payload)


__all__ = [
    "BROWSER_SUITE",
    "HKDF_INFO_LABEL",
    "KEY_ID_LENGTH",
    "MAGIC",
    "MAX_ENVELOPE_BYTES",
    "MAX_PAYLOAD_BYTES",
    "MAX_SENDER_ID_BYTES",
    "MIN_HEADER_BYTES",
    "VERSION",
    "CompressionId",
    "Header",
    "Opened",
    "Suite",
    "open_envelope",
    "peek_header",
    "seal",
]
