"""All cryptography of Village Sync, in one place.

This is the only module of the project that imports the ``cryptography`` package; everything else
(the envelope, the server, the device) calls the functions and key wrappers defined here. Keeping
it in one module keeps the audit surface small and makes swapping the backend a local change.

What it offers:

* Key wrappers for the two key kinds the protocol uses, each importable/exportable as its 32 raw
  bytes and as standard base64 text (for JSON):

  - :class:`EncryptionPrivateKey` / :class:`EncryptionPublicKey` — X25519, envelopes are sealed
    to the recipient's public key;
  - :class:`SigningPrivateKey` / :class:`SigningPublicKey` — Ed25519, envelopes are signed by the
    sender.

* Key ids: :func:`key_id` is the first 8 bytes of SHA-256 over the raw 32-byte public key, written
  as 16 lowercase hex characters. It names a key in envelope headers and in enrollment answers
  and lets a receiver keep several keys during a rotation.

* :class:`KeyBundle` (one encryption key + one signing key), :func:`generate_device_keys`,
  :func:`generate_server_keys`, and private keys as bytes (:func:`key_bundle_to_bytes` /
  :func:`key_bundle_from_bytes`, :func:`private_key_to_pem` / :func:`private_key_from_pem`).
  Keeping them in files (mode 0600, written atomically, refused when group or others may read
  them) is the server's edge, ``server.storage.key_files``; the device keeps its own in SQLite.

* Primitives used by the envelope: :func:`x25519_shared_secret`, :func:`hkdf_sha256`,
  :func:`aead_encrypt` / :func:`aead_decrypt` (AES-256-GCM and ChaCha20-Poly1305),
  :func:`sign` / :func:`verify_signature` (Ed25519), and :func:`sha256_hex` for content addresses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Final, Literal, Self

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sync_protocol.errors import InvalidKey, KeyFileError, WrongRecipientKey

RAW_KEY_LENGTH: Final = 32
"""Length in bytes of every raw X25519/Ed25519 key, public or private."""

KEY_ID_LENGTH: Final = 8
"""Length in bytes of a key id (16 hex characters in text)."""

SIGNATURE_LENGTH: Final = 64
"""Length in bytes of an Ed25519 signature."""

AEAD_KEY_LENGTH: Final = 32
AEAD_NONCE_LENGTH: Final = 12
AEAD_TAG_LENGTH: Final = 16

AeadAlgorithm = Literal["aes-256-gcm", "chacha20-poly1305"]
AEAD_ALGORITHMS: Final[tuple[AeadAlgorithm, ...]] = ("aes-256-gcm", "chacha20-poly1305")

KEY_BUNDLE_FORMAT: Final = "village-sync-keys"
KEY_BUNDLE_VERSION: Final = 1


# --- base64 and hashes ------------------------------------------------------------------------


def b64encode(data: bytes) -> str:
    """Return ``data`` as standard base64 text with padding (what browsers' ``btoa`` produces)."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Decode standard base64 text strictly.

    Raises:
        InvalidKey: if ``text`` is not valid standard base64 (wrong alphabet or padding).
    """
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError) as exc:
        raise InvalidKey("not valid base64 text", message_zh="不是有效的 base64 文本") from exc


def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 digest of ``data`` as 64 lowercase hex characters (content addresses)."""
    return hashlib.sha256(data).hexdigest()


def key_id(raw_public: bytes) -> str:
    """Return the key id of a raw 32-byte public key: hex of the first 8 bytes of its SHA-256.

    Raises:
        InvalidKey: if ``raw_public`` is not 32 bytes long.
    """
    _check_raw_length(raw_public, "public key")
    return hashlib.sha256(raw_public).digest()[:KEY_ID_LENGTH].hex()


def key_id_bytes(key_id_text: str) -> bytes:
    """Convert a key id from its 16-hex-character text to its 8 bytes.

    Raises:
        InvalidKey: if the text is not exactly 16 hex characters.
    """
    try:
        raw = bytes.fromhex(key_id_text)
    except (ValueError, TypeError) as exc:
        raise InvalidKey(
            "a key id is 16 hex characters", message_zh="密钥编号应为16位十六进制"
        ) from exc
    if len(raw) != KEY_ID_LENGTH:
        raise InvalidKey("a key id is 16 hex characters", message_zh="密钥编号应为16位十六进制")
    return raw


def _check_raw_length(raw: bytes, what: str) -> None:
    if not isinstance(raw, bytes | bytearray) or len(raw) != RAW_KEY_LENGTH:
        raise InvalidKey(
            f"a raw {what} is {RAW_KEY_LENGTH} bytes",
            message_zh=f"原始密钥应为{RAW_KEY_LENGTH}字节",
        )


# A fixed, public private key used only to detect low-order X25519 public keys.
_LOW_ORDER_PROBE: Final = X25519PrivateKey.from_private_bytes(
    hashlib.sha256(b"village-sync low-order probe").digest()
)


# --- key wrappers -----------------------------------------------------------------------------


class _PublicKey(ABC):
    """What both public-key wrappers share: raw bytes, base64, key id, value equality."""

    __slots__ = ("_key", "_raw")
    _hash_tag: str = ""

    def __init__(self, key: X25519PublicKey | Ed25519PublicKey) -> None:
        self._key = key
        self._raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @classmethod
    @abstractmethod
    def from_raw(cls, raw: bytes) -> Self:
        """Import 32 raw bytes, checked for this curve. Raises :class:`InvalidKey`."""

    @classmethod
    def from_base64(cls, text: str) -> Self:
        """Import base64 text of the 32 raw bytes. Raises :class:`InvalidKey`."""
        return cls.from_raw(b64decode(text))

    def raw(self) -> bytes:
        """Return the 32 raw bytes."""
        return self._raw

    def to_base64(self) -> str:
        """Return the 32 raw bytes as base64 text."""
        return b64encode(self._raw)

    def key_id(self) -> str:
        """Return this key's id (see :func:`key_id`)."""
        return key_id(self._raw)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash((self._hash_tag, self._raw))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_id={self.key_id()!r})"


class _PrivateKey(ABC):
    """What both private-key wrappers share: raw export, base64, key id, a repr without secrets."""

    __slots__ = ("_key",)

    def __init__(self, key: X25519PrivateKey | Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    @abstractmethod
    def from_raw(cls, raw: bytes) -> Self:
        """Import 32 raw bytes, checked for this curve. Raises :class:`InvalidKey`."""

    @classmethod
    def from_base64(cls, text: str) -> Self:
        """Import base64 text of the 32 raw private bytes. Raises :class:`InvalidKey`."""
        return cls.from_raw(b64decode(text))

    def raw(self) -> bytes:
        """Return the 32 raw private bytes (handle with care)."""
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def to_base64(self) -> str:
        """Return the 32 raw private bytes as base64 text (handle with care)."""
        return b64encode(self.raw())

    @abstractmethod
    def public_key(self) -> _PublicKey:
        """Return the matching public key."""

    def key_id(self) -> str:
        """Return the id of the matching public key."""
        return self.public_key().key_id()

    def __repr__(self) -> str:
        # Never show private bytes in logs or tracebacks.
        return f"{type(self).__name__}(key_id={self.key_id()!r})"


class EncryptionPublicKey(_PublicKey):
    """An X25519 public key: envelopes are sealed to it."""

    __slots__ = ()
    _hash_tag = "x25519-public"

    @classmethod
    def from_raw(cls, raw: bytes) -> EncryptionPublicKey:
        """Import 32 raw bytes.

        Raises:
            InvalidKey: if the length is wrong or the key is a low-order point (any secret agreed
                with it would be all zeros, so an envelope sealed to it would be readable by all).
        """
        _check_raw_length(raw, "X25519 public key")
        key = X25519PublicKey.from_public_bytes(bytes(raw))
        try:
            # Every clamped scalar sends a low-order point to zero, and only those; one exchange
            # with a fixed probe key (about 40 us) rejects them at import, e.g. at enrollment.
            _LOW_ORDER_PROBE.exchange(key)
        except ValueError as exc:
            raise InvalidKey(
                "the X25519 public key is a low-order point", message_zh="无效的加密公钥"
            ) from exc
        return cls(key)


class EncryptionPrivateKey(_PrivateKey):
    """An X25519 private key: opens envelopes sealed to its public key."""

    __slots__ = ("_public",)

    def __init__(self, key: X25519PrivateKey) -> None:
        super().__init__(key)
        # Computed once: opening an envelope needs the public key (HKDF salt, key id check), and
        # deriving it is a scalar multiplication.
        self._public = EncryptionPublicKey(key.public_key())

    @classmethod
    def generate(cls) -> EncryptionPrivateKey:
        """Return a fresh random key from the operating system's CSPRNG."""
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_raw(cls, raw: bytes) -> EncryptionPrivateKey:
        """Import 32 raw bytes. Raises :class:`InvalidKey` if the length is wrong."""
        _check_raw_length(raw, "X25519 private key")
        return cls(X25519PrivateKey.from_private_bytes(bytes(raw)))

    def public_key(self) -> EncryptionPublicKey:
        """Return the matching public key."""
        return self._public


class SigningPublicKey(_PublicKey):
    """An Ed25519 public key: verifies a sender's envelope signatures."""

    __slots__ = ()
    _hash_tag = "ed25519-public"

    @classmethod
    def from_raw(cls, raw: bytes) -> SigningPublicKey:
        """Import 32 raw bytes.

        Raises:
            InvalidKey: if the length is wrong or the bytes are not a valid curve point.
        """
        _check_raw_length(raw, "Ed25519 public key")
        try:
            return cls(Ed25519PublicKey.from_public_bytes(bytes(raw)))
        except ValueError as exc:
            raise InvalidKey("not a valid Ed25519 public key", message_zh="无效的签名公钥") from exc


class SigningPrivateKey(_PrivateKey):
    """An Ed25519 private key (its 32-byte seed): signs envelopes."""

    __slots__ = ()

    @classmethod
    def generate(cls) -> SigningPrivateKey:
        """Return a fresh random key from the operating system's CSPRNG."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_raw(cls, raw: bytes) -> SigningPrivateKey:
        """Import the 32-byte Ed25519 seed. Raises :class:`InvalidKey` if the length is wrong."""
        _check_raw_length(raw, "Ed25519 private key")
        return cls(Ed25519PrivateKey.from_private_bytes(bytes(raw)))

    def public_key(self) -> SigningPublicKey:
        """Return the matching public key."""
        return SigningPublicKey(self._key.public_key())


PrivateKey = EncryptionPrivateKey | SigningPrivateKey


# --- key bundles ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyBundle:
    """The private keys of one party (a device or the server): one X25519 + one Ed25519 key."""

    encryption: EncryptionPrivateKey
    signing: SigningPrivateKey

    @property
    def encryption_public(self) -> EncryptionPublicKey:
        """The X25519 public key others seal envelopes to."""
        return self.encryption.public_key()

    @property
    def signing_public(self) -> SigningPublicKey:
        """The Ed25519 public key others verify this party's signatures with."""
        return self.signing.public_key()

    def public_document(self) -> dict[str, str]:
        """Return the public half as JSON-ready text (what enrollment exchanges).

        Keys: ``encryption_public`` and ``signing_public`` (base64 of 32 raw bytes),
        ``encryption_key_id`` and ``signing_key_id`` (16 hex characters).
        """
        return {
            "encryption_public": self.encryption_public.to_base64(),
            "encryption_key_id": self.encryption_public.key_id(),
            "signing_public": self.signing_public.to_base64(),
            "signing_key_id": self.signing_public.key_id(),
        }

    def __repr__(self) -> str:
        return (
            f"KeyBundle(encryption_key_id={self.encryption.key_id()!r}, "
            f"signing_key_id={self.signing.key_id()!r})"
        )


def generate_device_keys() -> KeyBundle:
    """Generate a device's key bundle (done once, on the device, before enrollment)."""
    return KeyBundle(EncryptionPrivateKey.generate(), SigningPrivateKey.generate())


def generate_server_keys() -> KeyBundle:
    """Generate the county server's key bundle (done once at installation, and at rotation)."""
    return KeyBundle(EncryptionPrivateKey.generate(), SigningPrivateKey.generate())


# --- key documents ----------------------------------------------------------------------------
# Bytes in, bytes out: the edges keep them (the server's key files: ``server.storage.key_files``;
# the device's SQLite: ``village_client_stub``), so this module runs where there is no file system.


def private_key_to_pem(key: PrivateKey) -> bytes:
    """One private key as an unencrypted PKCS#8 PEM (``openssl pkey -text`` reads it)."""
    return key._key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_key_from_pem(data: bytes, *, name: str = "") -> PrivateKey:
    """The private key of a PEM made by :func:`private_key_to_pem`.

    Returns an :class:`EncryptionPrivateKey` for an X25519 key, a :class:`SigningPrivateKey` for
    an Ed25519 key. ``name`` (e.g. the file it came from) is named in errors.

    Raises:
        KeyFileError: if ``data`` is not a PEM private key, or a key of another algorithm.
    """
    try:
        loaded = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(
            f"key file {name} does not hold an unencrypted PEM private key",
            message_zh=f"密钥文件 {name} 不是有效的私钥",
        ) from exc
    if isinstance(loaded, X25519PrivateKey):
        return EncryptionPrivateKey(loaded)
    if isinstance(loaded, Ed25519PrivateKey):
        return SigningPrivateKey(loaded)
    raise KeyFileError(
        f"key file {name} holds a {type(loaded).__name__}, not an X25519 or Ed25519 key",
        message_zh=f"密钥文件 {name} 的算法不受支持",
    )


def key_bundle_to_bytes(bundle: KeyBundle) -> bytes:
    """Both private keys of a party as one JSON document.

    Content: ``{"format": "village-sync-keys", "version": 1, "encryption_private": b64,
    "signing_private": b64, "encryption_key_id": hex, "signing_key_id": hex}``; the key ids are
    there for people reading the document and are checked by :func:`key_bundle_from_bytes`.
    """
    document = {
        "format": KEY_BUNDLE_FORMAT,
        "version": KEY_BUNDLE_VERSION,
        "encryption_private": bundle.encryption.to_base64(),
        "signing_private": bundle.signing.to_base64(),
        "encryption_key_id": bundle.encryption.key_id(),
        "signing_key_id": bundle.signing.key_id(),
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def key_bundle_from_bytes(data: bytes, *, name: str = "") -> KeyBundle:
    """The bundle of a document made by :func:`key_bundle_to_bytes`; ``name`` is named in errors.

    Raises:
        KeyFileError: if ``data`` is not a key bundle of a known version, or its recorded key
            ids do not match its keys.
    """
    try:
        document = json.loads(data.decode("utf-8"))
        if (
            document.get("format") != KEY_BUNDLE_FORMAT
            or document.get("version") != KEY_BUNDLE_VERSION
        ):
            raise ValueError("unknown format or version")
        bundle = KeyBundle(
            EncryptionPrivateKey.from_base64(document["encryption_private"]),
            SigningPrivateKey.from_base64(document["signing_private"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError, InvalidKey) as exc:
        raise KeyFileError(
            f"key file {name} is not a village-sync key bundle (version {KEY_BUNDLE_VERSION})",
            message_zh=f"密钥文件 {name} 格式错误",
        ) from exc
    if (
        document.get("encryption_key_id") != bundle.encryption.key_id()
        or document.get("signing_key_id") != bundle.signing.key_id()
    ):
        raise KeyFileError(
            f"key file {name} records key ids that do not match its keys (edited by hand?)",
            message_zh=f"密钥文件 {name} 中的密钥编号与密钥不符",
        )
    return bundle


# --- primitives used by the envelope ----------------------------------------------------------


def x25519_shared_secret(private: EncryptionPrivateKey, public: EncryptionPublicKey) -> bytes:
    """Return the 32-byte X25519 shared secret of ``private`` and ``public``.

    Raises:
        InvalidKey: if ``public`` is a low-order point (the secret would be all zeros, which an
            attacker could predict).
    """
    try:
        return private._key.exchange(public._key)
    except ValueError as exc:
        raise InvalidKey(
            "the X25519 public key is a low-order point", message_zh="无效的加密公钥"
        ) from exc


def x25519_shared_secret_with_raw(private: EncryptionPrivateKey, peer_raw: bytes) -> bytes:
    """Like :func:`x25519_shared_secret`, for a peer key given as 32 raw bytes.

    Saves the import-time low-order probe when the exchange itself is about to detect it (the
    envelope's ephemeral key).

    Raises:
        InvalidKey: if ``peer_raw`` is not 32 bytes or is a low-order point.
    """
    _check_raw_length(peer_raw, "X25519 public key")
    try:
        return private._key.exchange(X25519PublicKey.from_public_bytes(bytes(peer_raw)))
    except ValueError as exc:
        raise InvalidKey(
            "the X25519 public key is a low-order point", message_zh="无效的加密公钥"
        ) from exc


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int = AEAD_KEY_LENGTH) -> bytes:
    """Derive ``length`` bytes with HKDF-SHA256 (RFC 5869) from ``ikm``, ``salt`` and ``info``."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _aead(algorithm: AeadAlgorithm, key: bytes) -> AESGCM | ChaCha20Poly1305:
    if algorithm == "aes-256-gcm":
        return AESGCM(key)
    if algorithm == "chacha20-poly1305":
        return ChaCha20Poly1305(key)
    raise ValueError(f"unknown AEAD algorithm {algorithm!r}; known: {AEAD_ALGORITHMS}")


def aead_encrypt(
    algorithm: AeadAlgorithm, key: bytes, nonce: bytes, plaintext: bytes, aad: bytes
) -> bytes:
    """Encrypt and authenticate; return ciphertext followed by the 16-byte tag.

    ``key`` is 32 bytes and ``nonce`` 12 bytes for both algorithms. The output layout is the same
    as WebCrypto's AES-GCM ``encrypt`` with ``tagLength: 128``.

    Raises:
        ValueError: for an unknown algorithm or wrong key/nonce length (programming errors).
    """
    if len(nonce) != AEAD_NONCE_LENGTH:
        raise ValueError(f"nonce must be {AEAD_NONCE_LENGTH} bytes")
    return _aead(algorithm, key).encrypt(nonce, plaintext, aad)


def aead_decrypt(
    algorithm: AeadAlgorithm, key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes
) -> bytes:
    """Check the tag and decrypt ``ciphertext`` (ciphertext followed by the 16-byte tag).

    Raises:
        WrongRecipientKey: if the tag does not verify — the key is not the one the data was
            sealed with, or the ciphertext, nonce or associated data were altered.
        ValueError: for an unknown algorithm or wrong key/nonce length (programming errors).
    """
    if len(nonce) != AEAD_NONCE_LENGTH:
        raise ValueError(f"nonce must be {AEAD_NONCE_LENGTH} bytes")
    try:
        return _aead(algorithm, key).decrypt(nonce, ciphertext, aad)
    except InvalidTag as exc:
        raise WrongRecipientKey() from exc


def sign(key: SigningPrivateKey, message: bytes) -> bytes:
    """Return the 64-byte Ed25519 signature of ``message`` (deterministic, RFC 8032)."""
    return key._key.sign(message)


def verify_signature(public: SigningPublicKey, signature: bytes, message: bytes) -> bool:
    """Return whether ``signature`` is a valid Ed25519 signature of ``message`` by ``public``.

    Never raises for a bad signature; a signature of the wrong length is simply invalid.
    """
    if len(signature) != SIGNATURE_LENGTH:
        return False
    try:
        public._key.verify(signature, message)
    except InvalidSignature:
        return False
    return True
