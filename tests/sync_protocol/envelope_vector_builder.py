"""Deterministic builder of ``sync_protocol/vectors/envelope.json`` (envelope test vectors).

Every input is fixed: keys, ephemeral keys and nonces are SHA-256 digests of readable labels, so
anyone can rebuild them. Ed25519 signatures are deterministic (RFC 8032), so the whole envelope
is reproducible byte for byte. Intermediate values (shared secret, HKDF salt/info, AEAD key,
header, ciphertext, signature) are included so another implementation — a browser using
WebCrypto — can find the first step where it differs.

Regenerate (only when the format version changes; existing vectors must never change)::

    .venv/bin/python -m tests.sync_protocol.envelope_vector_builder
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sync_protocol import crypto
from sync_protocol.crypto import EncryptionPrivateKey, SigningPrivateKey, SigningPublicKey
from sync_protocol.envelope import (
    HKDF_INFO_LABEL,
    CompressionId,
    Opened,
    Suite,
    open_envelope,
    peek_header,
    seal,
)
from sync_protocol.errors import ProtocolError

VECTORS_PATH = Path(__file__).resolve().parents[2] / "sync_protocol" / "vectors" / "envelope.json"

# A fictitious household; the ID numbers have valid GB 11643 check digits but belong to no one.
HOUSEHOLD_RECORD = {
    "record_id": "0b6f8c1e-2d4a-4c47-9a51-3f2e8d7c6b5a",
    "household": {"village_code": "530102001201", "household_no": "5301020012010088"},
    "head_name": "欧阳娜娜",
    "phone": "13987654321",
    "members": [
        {"_id": "m1", "name": "欧阳娜娜", "id_number": "530102198503042316"},
        {"_id": "m2", "name": "李小龙", "id_number": "530102201309010040", "school": "在校"},
    ],
    "appraisal_grade": "C",
}


def fixed_bytes(label: str) -> bytes:
    """Return the 32-byte SHA-256 of ``"village-sync test vector: " + label`` (UTF-8)."""
    return hashlib.sha256(f"village-sync test vector: {label}".encode()).digest()


def _party(name: str) -> dict[str, Any]:
    encryption = EncryptionPrivateKey.from_raw(fixed_bytes(f"{name} x25519"))
    signing = SigningPrivateKey.from_raw(fixed_bytes(f"{name} ed25519"))
    return {
        "encryption": encryption,
        "signing": signing,
        "document": {
            "x25519_private_hex": encryption.raw().hex(),
            "x25519_public_hex": encryption.public_key().raw().hex(),
            "x25519_key_id": encryption.key_id(),
            "ed25519_private_seed_hex": signing.raw().hex(),
            "ed25519_public_hex": signing.public_key().raw().hex(),
            "ed25519_key_id": signing.key_id(),
            "derivation": (
                f'x25519 = SHA-256("village-sync test vector: {name} x25519"), '
                f'ed25519 seed = SHA-256("village-sync test vector: {name} ed25519")'
            ),
        },
    }


CASES: list[dict[str, Any]] = [
    {
        "name": "device-to-server household record, suite 1 (browser suite)",
        "direction": "device_to_server",
        "suite": 1,
        "sender_id": "tablet-yn-07",
        "sequence": 1,
        "compression": CompressionId.RAW,
        "dictionary_id": 0,
        "payload_utf8": json.dumps(HOUSEHOLD_RECORD, ensure_ascii=False, sort_keys=True),
    },
    {
        "name": "device-to-server household record, suite 2",
        "direction": "device_to_server",
        "suite": 2,
        "sender_id": "tablet-yn-07",
        "sequence": 2,
        "compression": CompressionId.RAW,
        "dictionary_id": 0,
        "payload_utf8": json.dumps(HOUSEHOLD_RECORD, ensure_ascii=False, sort_keys=True),
    },
    {
        "name": "empty payload, suite 1",
        "direction": "device_to_server",
        "suite": 1,
        "sender_id": "tablet-yn-07",
        "sequence": 0,
        "compression": CompressionId.RAW,
        "dictionary_id": 0,
        "payload_utf8": "",
    },
    {
        "name": "deflate-raw payload bytes, suite 1, large sequence",
        "direction": "device_to_server",
        "suite": 1,
        "sender_id": "tablet-yn-07",
        "sequence": 2**40 + 5,
        "compression": CompressionId.DEFLATE_RAW,
        "dictionary_id": 0,
        "payload_hex": "cb48cdc9c95728cf2fca490100",
    },
    {
        "name": "server-to-device page, suite 2, zstd with dictionary, Chinese sender id",
        "direction": "server_to_device",
        "suite": 2,
        "sender_id": "县服务器-530102",
        "sequence": 17,
        "compression": CompressionId.ZSTD_DICTIONARY,
        "dictionary_id": 0x5A7D0001,
        "payload_hex": "28b52ffd2000" + "ab" * 24,
    },
    {
        "name": "server-to-device page, suite 1 (browser suite)",
        "direction": "server_to_device",
        "suite": 1,
        "sender_id": "县服务器-530102",
        "sequence": 18,
        "compression": CompressionId.RAW,
        "dictionary_id": 0,
        "payload_utf8": '{"page":1,"records":[{"head_name":"次仁卓玛"}]}',
    },
]


def _build_case(index: int, case: dict[str, Any], device: dict, server: dict) -> dict[str, Any]:
    sender, recipient = (
        (device, server) if case["direction"] == "device_to_server" else (server, device)
    )
    payload = (
        case["payload_utf8"].encode("utf-8")
        if "payload_utf8" in case
        else bytes.fromhex(case["payload_hex"])
    )
    ephemeral = EncryptionPrivateKey.from_raw(fixed_bytes(f"ephemeral {index}"))
    nonce = fixed_bytes(f"nonce {index}")[:12]
    recipient_private: EncryptionPrivateKey = recipient["encryption"]
    recipient_public = recipient_private.public_key()
    envelope = seal(
        payload,
        recipient_public=recipient_public,
        recipient_key_id=recipient_public.key_id(),
        sender_id=case["sender_id"],
        sender_signing_key=sender["signing"],
        sequence=case["sequence"],
        suite=case["suite"],
        compression=case["compression"],
        dictionary_id=case["dictionary_id"],
        nonce=nonce,
        ephemeral_private=ephemeral,
    )
    header = peek_header(envelope)
    ephemeral_public = ephemeral.public_key().raw()
    shared = crypto.x25519_shared_secret(ephemeral, recipient_public)
    salt = ephemeral_public + recipient_public.raw()
    info = HKDF_INFO_LABEL + header.raw
    signed_length = header.header_length + header.ciphertext_length
    built: dict[str, Any] = {
        "name": case["name"],
        "direction": case["direction"],
        "suite": case["suite"],
        "suite_name": Suite(case["suite"]).name,
        "compression": int(case["compression"]),
        "dictionary_id": case["dictionary_id"],
        "sender_id": case["sender_id"],
        "sequence": case["sequence"],
        "recipient_key_id": recipient_public.key_id(),
    }
    if "payload_utf8" in case:
        built["payload_utf8"] = case["payload_utf8"]
    built.update(
        {
            "payload_hex": payload.hex(),
            "ephemeral_private_hex": ephemeral.raw().hex(),
            "ephemeral_public_hex": ephemeral_public.hex(),
            "nonce_hex": nonce.hex(),
            "shared_secret_hex": shared.hex(),
            "hkdf_salt_hex": salt.hex(),
            "hkdf_info_hex": info.hex(),
            "aead_key_hex": crypto.hkdf_sha256(shared, salt=salt, info=info).hex(),
            "header_hex": header.raw.hex(),
            "ciphertext_hex": envelope[header.header_length : signed_length].hex(),
            "signature_hex": envelope[signed_length:].hex(),
            "envelope_hex": envelope.hex(),
        }
    )
    return built


def _sealed_for_rejection(
    label: str,
    *,
    sender_id: str,
    signing: SigningPrivateKey,
    recipient_public: Any,
    claimed_key_id: str | None = None,
) -> str:
    """A suite-1 envelope of the household record with fixed ephemeral key and nonce (``label``).

    With ``claimed_key_id`` the header names that key id instead of the real recipient's, and the
    sender signs the changed header: a well-signed envelope the named key cannot decrypt.
    """
    envelope = seal(
        json.dumps(HOUSEHOLD_RECORD, ensure_ascii=False, sort_keys=True).encode("utf-8"),
        recipient_public=recipient_public,
        recipient_key_id=recipient_public.key_id(),
        sender_id=sender_id,
        sender_signing_key=signing,
        sequence=3,
        suite=Suite.X25519_HKDF_SHA256_AES256GCM_ED25519,
        compression=CompressionId.RAW,
        dictionary_id=0,
        nonce=fixed_bytes(f"nonce {label}")[:12],
        ephemeral_private=EncryptionPrivateKey.from_raw(fixed_bytes(f"ephemeral {label}")),
    )
    if claimed_key_id is not None:
        header = peek_header(envelope)
        signed_length = header.header_length + header.ciphertext_length
        signed = bytearray(envelope[:signed_length])
        signed[_KEY_ID_OFFSET : _KEY_ID_OFFSET + 8] = bytes.fromhex(claimed_key_id)
        envelope = bytes(signed) + crypto.sign(signing, bytes(signed))
    return envelope.hex()


_KEY_ID_OFFSET = 12  # header bytes 12..19: the recipient key id (protocol-envelope.md)


def _receiver_rejections(device: dict, server: dict, first: bytes) -> list[dict[str, Any]]:
    """Refusals that depend on what the receiver knows, not on damaged bytes.

    * sealed to another X25519 key under the server's key id: the signature is good, decryption
      fails;
    * signed by a sender the receiver has no key for (never enrolled, or revoked);
    * vector 0 again when the receiver has already used its sequence (``already_used``).
    """
    stranger = _party("stranger")
    server_key_id = server["encryption"].public_key().key_id()
    return [
        {
            "name": "sealed to another key under the server's key id",
            "envelope_hex": _sealed_for_rejection(
                "rejection wrong recipient key",
                sender_id="tablet-yn-07",
                signing=device["signing"],
                recipient_public=stranger["encryption"].public_key(),
                claimed_key_id=server_key_id,
            ),
            "error_code": "envelope_wrong_recipient_key",
        },
        {
            "name": "sender not enrolled (no verification key)",
            "envelope_hex": _sealed_for_rejection(
                "rejection unknown sender",
                sender_id="tablet-unknown-99",
                signing=stranger["signing"],
                recipient_public=server["encryption"].public_key(),
            ),
            "error_code": "envelope_unknown_sender",
        },
        {
            "name": "vector 0 replayed: its sequence was already used",
            "envelope_hex": first.hex(),
            "already_used": {"sender_id": peek_header(first).sender_id, "sequence": 1},
            "error_code": "envelope_replayed",
        },
    ]


def _rejections(first: bytes) -> list[dict[str, str]]:
    """Envelopes derived from vector 0 that a correct receiver must refuse, with the code."""
    header = peek_header(first)
    n = header.header_length

    def flipped(offset: int) -> str:
        changed = bytearray(first)
        changed[offset] ^= 0x01
        return changed.hex()

    def replaced(offset: int, value: int) -> str:
        changed = bytearray(first)
        changed[offset] = value
        return changed.hex()

    sequence_at = n - 60
    return [
        {
            "name": "last signature bit flipped",
            "envelope_hex": flipped(len(first) - 1),
            "error_code": "envelope_bad_signature",
        },
        {
            "name": "first ciphertext bit flipped",
            "envelope_hex": flipped(n),
            "error_code": "envelope_bad_signature",
        },
        {
            "name": "sequence changed",
            "envelope_hex": flipped(sequence_at + 7),
            "error_code": "envelope_bad_signature",
        },
        {
            "name": "recipient key id changed",
            "envelope_hex": flipped(12),
            "error_code": "envelope_unknown_key_id",
        },
        {
            "name": "version 2",
            "envelope_hex": replaced(4, 2),
            "error_code": "envelope_unsupported_version",
        },
        {
            "name": "suite 9",
            "envelope_hex": replaced(5, 9),
            "error_code": "envelope_unsupported_suite",
        },
        {
            "name": "reserved flag set",
            "envelope_hex": replaced(11, 1),
            "error_code": "envelope_malformed_header",
        },
        {
            "name": "bad magic",
            "envelope_hex": replaced(0, ord("X")),
            "error_code": "envelope_malformed_header",
        },
        {
            "name": "last byte missing",
            "envelope_hex": first[:-1].hex(),
            "error_code": "envelope_truncated",
        },
        {
            "name": "header only",
            "envelope_hex": first[:n].hex(),
            "error_code": "envelope_truncated",
        },
    ]


def open_with_vector_keys(
    document: dict[str, Any],
    envelope: bytes,
    receiver: str,
    already_used: dict[str, Any] | None = None,
) -> Opened:
    """Open ``envelope`` as ``receiver`` ("server" or "device") using only the document's keys.

    The sender table holds both parties under their sender ids, as a receiver would after
    enrollment. ``already_used`` (a rejection's ``{"sender_id", "sequence"}``) is a sequence the
    receiver has already seen from that sender. Raises the envelope's typed errors.
    """
    own = document[receiver]
    private = EncryptionPrivateKey.from_raw(bytes.fromhex(own["x25519_private_hex"]))
    senders = {
        document[party]["sender_id"]: SigningPublicKey.from_raw(
            bytes.fromhex(document[party]["ed25519_public_hex"])
        )
        for party in ("device", "server")
    }
    used = (already_used["sender_id"], already_used["sequence"]) if already_used else None
    return open_envelope(
        envelope,
        recipient_keys={own["x25519_key_id"]: private},
        sender_verify_key=senders.get,
        is_replay=lambda sender_id, sequence: (sender_id, sequence) == used,
    )


def build_vectors() -> dict[str, Any]:
    """Return the complete vector document (a pure function of the fixed labels above)."""
    device, server = _party("device"), _party("server")
    vectors = [_build_case(i, case, device, server) for i, case in enumerate(CASES)]
    first = bytes.fromhex(vectors[0]["envelope_hex"])
    rejections = [*_rejections(first), *_receiver_rejections(device, server, first)]
    # The builder checks its own rejection cases, so a wrong expectation cannot be written out.
    document = {
        "description": (
            "Village Sync envelope test vectors (format version 1). Layout, key derivation and "
            "suites: docs/protocol-envelope.md. All hex is lowercase; integers are decimal."
        ),
        "generator": "tests/sync_protocol/envelope_vector_builder.py",
        "hkdf_info_label_utf8": HKDF_INFO_LABEL.decode("ascii"),
        "device": {"sender_id": "tablet-yn-07", **device["document"]},
        "server": {"sender_id": "县服务器-530102", **server["document"]},
        "vectors": vectors,
        "rejections": rejections,
    }
    for rejection in rejections:
        try:
            open_with_vector_keys(
                document,
                bytes.fromhex(rejection["envelope_hex"]),
                "server",
                rejection.get("already_used"),
            )
        except ProtocolError as error:
            if error.code != rejection["error_code"]:
                raise AssertionError(f"{rejection['name']}: got {error.code}") from error
        else:
            raise AssertionError(f"{rejection['name']}: was accepted")
    return document


def main() -> None:
    """Write the vectors to ``sync_protocol/vectors/envelope.json``."""
    VECTORS_PATH.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(build_vectors(), ensure_ascii=False, indent=2) + "\n"
    VECTORS_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {VECTORS_PATH}")


if __name__ == "__main__":
    main()
