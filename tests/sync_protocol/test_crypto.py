"""Tests of sync_protocol.crypto: key wrappers, key ids, key files and primitives."""

from __future__ import annotations

import hashlib
import os

import pytest

from sync_protocol import crypto
from sync_protocol.crypto import (
    EncryptionPrivateKey,
    EncryptionPublicKey,
    KeyBundle,
    SigningPrivateKey,
    SigningPublicKey,
    generate_device_keys,
    generate_server_keys,
)
from sync_protocol.errors import InvalidKey, KeyFileError, ProtocolError, WrongRecipientKey

# RFC 7748 section 6.1 (X25519 Diffie-Hellman test vector).
ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PUBLIC = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")

# RFC 8032 section 7.1, TEST 1 (Ed25519, empty message).
ED_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
ED_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
ED_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def test_x25519_matches_rfc7748() -> None:
    alice = EncryptionPrivateKey.from_raw(ALICE_PRIVATE)
    assert alice.public_key().raw() == ALICE_PUBLIC
    assert crypto.x25519_shared_secret(alice, EncryptionPublicKey.from_raw(BOB_PUBLIC)) == SHARED


def test_ed25519_matches_rfc8032() -> None:
    key = SigningPrivateKey.from_raw(ED_SECRET)
    assert key.public_key().raw() == ED_PUBLIC
    assert crypto.sign(key, b"") == ED_SIGNATURE
    assert crypto.verify_signature(SigningPublicKey.from_raw(ED_PUBLIC), ED_SIGNATURE, b"")


def test_verify_signature_returns_false_for_wrong_message_key_or_length() -> None:
    key = SigningPrivateKey.generate()
    signature = crypto.sign(key, b"header+ciphertext")
    assert crypto.verify_signature(key.public_key(), signature, b"header+ciphertext")
    assert not crypto.verify_signature(key.public_key(), signature, b"header+ciphertexT")
    other = SigningPrivateKey.generate().public_key()
    assert not crypto.verify_signature(other, signature, b"header+ciphertext")
    assert not crypto.verify_signature(key.public_key(), signature[:-1], b"header+ciphertext")


def test_hkdf_matches_rfc5869_case_1() -> None:
    okm = crypto.hkdf_sha256(
        bytes.fromhex("0b" * 22),
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        info=bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        length=42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_key_id_is_first_8_bytes_of_sha256_of_raw_public_key() -> None:
    assert crypto.key_id(ALICE_PUBLIC) == hashlib.sha256(ALICE_PUBLIC).digest()[:8].hex()
    assert EncryptionPublicKey.from_raw(ALICE_PUBLIC).key_id() == crypto.key_id(ALICE_PUBLIC)
    assert EncryptionPrivateKey.from_raw(ALICE_PRIVATE).key_id() == crypto.key_id(ALICE_PUBLIC)
    assert len(crypto.key_id(ALICE_PUBLIC)) == 16
    assert (
        crypto.key_id_bytes(crypto.key_id(ALICE_PUBLIC))
        == hashlib.sha256(ALICE_PUBLIC).digest()[:8]
    )


@pytest.mark.parametrize("text", ["", "abc", "zz" * 8, "00" * 9])
def test_key_id_bytes_rejects_bad_text(text: str) -> None:
    with pytest.raises(InvalidKey):
        crypto.key_id_bytes(text)


@pytest.mark.parametrize(
    "cls", [EncryptionPrivateKey, EncryptionPublicKey, SigningPrivateKey, SigningPublicKey]
)
def test_raw_and_base64_round_trip_and_length_checks(cls: type) -> None:
    raw = hashlib.sha256(cls.__name__.encode()).digest()
    if cls is SigningPublicKey:
        raw = SigningPrivateKey.from_raw(raw).public_key().raw()
    key = cls.from_raw(raw)
    assert key.raw() == raw
    assert cls.from_base64(key.to_base64()).raw() == raw
    assert crypto.b64decode(key.to_base64()) == raw
    for bad in (raw[:-1], raw + b"\x00", b""):
        with pytest.raises(InvalidKey) as caught:
            cls.from_raw(bad)
        assert caught.value.code == "invalid_key"
    with pytest.raises(InvalidKey):
        cls.from_base64("not base64!")


def test_private_key_repr_does_not_reveal_secret() -> None:
    bundle = generate_device_keys()
    for text in (repr(bundle), repr(bundle.encryption), repr(bundle.signing)):
        assert bundle.encryption.to_base64() not in text
        assert bundle.signing.to_base64() not in text
        assert bundle.encryption.raw().hex() not in text
        assert bundle.signing.raw().hex() not in text


def test_generated_bundles_are_distinct_and_consistent() -> None:
    device, server = generate_device_keys(), generate_server_keys()
    assert device.encryption.raw() != server.encryption.raw()
    assert device.signing.raw() != server.signing.raw()
    doc = device.public_document()
    assert EncryptionPublicKey.from_base64(doc["encryption_public"]) == device.encryption_public
    assert SigningPublicKey.from_base64(doc["signing_public"]) == device.signing_public
    assert doc["encryption_key_id"] == device.encryption_public.key_id()
    assert doc["signing_key_id"] == device.signing_public.key_id()


def test_public_keys_compare_and_hash_by_raw_bytes() -> None:
    a = EncryptionPublicKey.from_raw(ALICE_PUBLIC)
    assert a == EncryptionPublicKey.from_raw(ALICE_PUBLIC)
    assert len({a, EncryptionPublicKey.from_raw(ALICE_PUBLIC)}) == 1
    assert a != EncryptionPublicKey.from_raw(BOB_PUBLIC)


LOW_ORDER_POINTS = [
    "00" * 32,
    "01" + "00" * 31,
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ec" + "ff" * 30 + "7f",  # p - 1
    "ed" + "ff" * 30 + "7f",  # p (non-canonical 0)
    "ee" + "ff" * 30 + "7f",  # p + 1 (non-canonical 1)
]


@pytest.mark.parametrize("point", LOW_ORDER_POINTS)
def test_low_order_x25519_points_are_refused_at_import(point: str) -> None:
    with pytest.raises(InvalidKey) as caught:
        EncryptionPublicKey.from_raw(bytes.fromhex(point))
    assert caught.value.code == "invalid_key"
    with pytest.raises(InvalidKey):
        crypto.x25519_shared_secret_with_raw(EncryptionPrivateKey.generate(), bytes.fromhex(point))


def test_shared_secret_with_raw_matches_rfc7748() -> None:
    alice = EncryptionPrivateKey.from_raw(ALICE_PRIVATE)
    assert crypto.x25519_shared_secret_with_raw(alice, BOB_PUBLIC) == SHARED
    with pytest.raises(InvalidKey):
        crypto.x25519_shared_secret_with_raw(alice, BOB_PUBLIC[:31])


@pytest.mark.parametrize("algorithm", crypto.AEAD_ALGORITHMS)
def test_aead_round_trip_and_tamper_detection(algorithm: crypto.AeadAlgorithm) -> None:
    key, nonce = os.urandom(32), os.urandom(12)
    sealed = crypto.aead_encrypt(algorithm, key, nonce, "王小红".encode(), b"aad")
    assert len(sealed) == len("王小红".encode()) + 16
    assert crypto.aead_decrypt(algorithm, key, nonce, sealed, b"aad") == "王小红".encode()
    for key2, nonce2, sealed2, aad2 in [
        (os.urandom(32), nonce, sealed, b"aad"),
        (key, os.urandom(12), sealed, b"aad"),
        (key, nonce, sealed[:-1] + bytes([sealed[-1] ^ 1]), b"aad"),
        (key, nonce, sealed, b"aaD"),
    ]:
        with pytest.raises(WrongRecipientKey):
            crypto.aead_decrypt(algorithm, key2, nonce2, sealed2, aad2)


def test_aes_gcm_matches_nist_vector() -> None:
    # NIST GCM test case 16 (AES-256, 96-bit IV, with AAD), as in McGrew & Viega's GCM spec.
    key = bytes.fromhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
    iv = bytes.fromhex("cafebabefacedbaddecaf888")
    plaintext = bytes.fromhex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
    )
    aad = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
    expected = bytes.fromhex(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
        "76fc6ece0f4e1768cddf8853bb2d551b"
    )
    assert crypto.aead_encrypt("aes-256-gcm", key, iv, plaintext, aad) == expected


def test_aead_rejects_unknown_algorithm_and_bad_nonce() -> None:
    with pytest.raises(ValueError):
        crypto.aead_encrypt("rot13", bytes(32), bytes(12), b"x", b"")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        crypto.aead_encrypt("aes-256-gcm", bytes(32), bytes(8), b"x", b"")


def test_sha256_hex() -> None:
    assert crypto.sha256_hex(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


# --- key files --------------------------------------------------------------------------------


def test_key_bundle_bytes_round_trip() -> None:
    bundle = generate_server_keys()
    loaded = crypto.key_bundle_from_bytes(crypto.key_bundle_to_bytes(bundle))
    assert isinstance(loaded, KeyBundle)
    assert loaded.encryption.raw() == bundle.encryption.raw()
    assert loaded.signing.raw() == bundle.signing.raw()


def test_pem_private_keys_round_trip_by_kind() -> None:
    enc, sig = EncryptionPrivateKey.generate(), SigningPrivateKey.generate()
    assert crypto.private_key_to_pem(enc).startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded_enc = crypto.private_key_from_pem(crypto.private_key_to_pem(enc))
    loaded_sig = crypto.private_key_from_pem(crypto.private_key_to_pem(sig))
    assert isinstance(loaded_enc, EncryptionPrivateKey) and loaded_enc.raw() == enc.raw()
    assert isinstance(loaded_sig, SigningPrivateKey) and loaded_sig.raw() == sig.raw()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b'{"format": "village-sync-keys", "version": 2}',
        b'{"format": "other", "version": 1}',
        b'{"format": "village-sync-keys", "version": 1, "encryption_private": "AAAA"}',
        b"[]",
    ],
)
def test_malformed_key_bundles_are_key_file_errors(content: bytes) -> None:
    with pytest.raises(KeyFileError, match="county-keys"):
        crypto.key_bundle_from_bytes(content, name="county-keys")


def test_key_bundle_with_mismatched_key_ids_is_refused() -> None:
    data = crypto.key_bundle_to_bytes(generate_device_keys())
    edited = data.replace(b'"signing_key_id": "', b'"signing_key_id": "f')
    with pytest.raises(KeyFileError, match="key ids"):
        crypto.key_bundle_from_bytes(edited)


def test_garbage_pem_is_key_file_error() -> None:
    with pytest.raises(KeyFileError):
        crypto.private_key_from_pem(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )


def test_every_error_is_a_protocol_error_with_code_and_both_languages() -> None:
    for error in (KeyFileError(), InvalidKey(), WrongRecipientKey()):
        assert isinstance(error, ProtocolError)
        assert error.code and error.message and error.message_zh
