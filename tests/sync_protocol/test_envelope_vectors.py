"""The published envelope test vectors (sync_protocol/vectors/envelope.json) hold, byte for byte."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from sync_protocol import crypto
from sync_protocol.crypto import (
    EncryptionPrivateKey,
    EncryptionPublicKey,
    SigningPrivateKey,
    SigningPublicKey,
)
from sync_protocol.envelope import HKDF_INFO_LABEL, Suite, peek_header, seal
from sync_protocol.errors import ProtocolError
from tests.sync_protocol.envelope_vector_builder import build_vectors, open_with_vector_keys


def _load() -> dict[str, Any]:
    # Read through importlib.resources: proves the file ships with the package.
    text = (resources.files("sync_protocol") / "vectors" / "envelope.json").read_text("utf-8")
    return json.loads(text)


DOCUMENT = _load()
VECTORS = DOCUMENT["vectors"]


def _h(text: str) -> bytes:
    return bytes.fromhex(text)


def _parties(vector: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    device, server = DOCUMENT["device"], DOCUMENT["server"]
    return (device, server) if vector["direction"] == "device_to_server" else (server, device)


def test_vectors_file_is_exactly_what_the_builder_produces() -> None:
    assert build_vectors() == DOCUMENT


def test_vectors_cover_both_suites_both_directions_and_a_chinese_record() -> None:
    assert {v["suite"] for v in VECTORS} == {1, 2}
    assert {v["direction"] for v in VECTORS} == {"device_to_server", "server_to_device"}
    texts = " ".join(v.get("payload_utf8", "") for v in VECTORS)
    assert "欧阳娜娜" in texts and "530102198503042316" in texts


def test_party_keys_match_their_public_halves_and_ids() -> None:
    for party in (DOCUMENT["device"], DOCUMENT["server"]):
        enc = EncryptionPrivateKey.from_raw(_h(party["x25519_private_hex"]))
        sig = SigningPrivateKey.from_raw(_h(party["ed25519_private_seed_hex"]))
        assert enc.public_key().raw().hex() == party["x25519_public_hex"]
        assert sig.public_key().raw().hex() == party["ed25519_public_hex"]
        assert crypto.key_id(_h(party["x25519_public_hex"])) == party["x25519_key_id"]
        assert crypto.key_id(_h(party["ed25519_public_hex"])) == party["ed25519_key_id"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_sealing_fixed_inputs_gives_exactly_the_vector_bytes(vector: dict[str, Any]) -> None:
    sender, recipient = _parties(vector)
    envelope = seal(
        _h(vector["payload_hex"]),
        recipient_public=EncryptionPublicKey.from_raw(_h(recipient["x25519_public_hex"])),
        recipient_key_id=recipient["x25519_key_id"],
        sender_id=vector["sender_id"],
        sender_signing_key=SigningPrivateKey.from_raw(_h(sender["ed25519_private_seed_hex"])),
        sequence=vector["sequence"],
        suite=vector["suite"],
        compression=vector["compression"],
        dictionary_id=vector["dictionary_id"],
        nonce=_h(vector["nonce_hex"]),
        ephemeral_private=EncryptionPrivateKey.from_raw(_h(vector["ephemeral_private_hex"])),
    )
    assert envelope.hex() == vector["envelope_hex"]
    assert (
        envelope.hex() == vector["header_hex"] + vector["ciphertext_hex"] + vector["signature_hex"]
    )


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_each_derivation_step_matches_the_vector(vector: dict[str, Any]) -> None:
    """Recompute every intermediate from primitives, the way a second implementation would."""
    sender, recipient = _parties(vector)
    ephemeral = EncryptionPrivateKey.from_raw(_h(vector["ephemeral_private_hex"]))
    recipient_public = _h(recipient["x25519_public_hex"])
    assert ephemeral.public_key().raw().hex() == vector["ephemeral_public_hex"]
    shared = crypto.x25519_shared_secret(ephemeral, EncryptionPublicKey.from_raw(recipient_public))
    assert shared.hex() == vector["shared_secret_hex"]
    # The recipient reaches the same secret from its private key and the ephemeral public key.
    recipient_private = EncryptionPrivateKey.from_raw(_h(recipient["x25519_private_hex"]))
    ephemeral_public = EncryptionPublicKey.from_raw(_h(vector["ephemeral_public_hex"]))
    assert crypto.x25519_shared_secret(recipient_private, ephemeral_public) == shared
    header = _h(vector["header_hex"])
    salt = _h(vector["ephemeral_public_hex"]) + recipient_public
    info = HKDF_INFO_LABEL + header
    assert salt.hex() == vector["hkdf_salt_hex"]
    assert info.hex() == vector["hkdf_info_hex"]
    key = crypto.hkdf_sha256(shared, salt=salt, info=info, length=32)
    assert key.hex() == vector["aead_key_hex"]
    aead = Suite(vector["suite"]).aead
    ciphertext = crypto.aead_encrypt(
        aead, key, _h(vector["nonce_hex"]), _h(vector["payload_hex"]), header
    )
    assert ciphertext.hex() == vector["ciphertext_hex"]
    signer = SigningPublicKey.from_raw(_h(sender["ed25519_public_hex"]))
    assert crypto.verify_signature(signer, _h(vector["signature_hex"]), header + ciphertext)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_opening_each_vector_gives_its_payload_and_header(vector: dict[str, Any]) -> None:
    receiver = "server" if vector["direction"] == "device_to_server" else "device"
    opened = open_with_vector_keys(DOCUMENT, _h(vector["envelope_hex"]), receiver)
    assert opened.payload.hex() == vector["payload_hex"]
    if "payload_utf8" in vector:
        assert opened.payload.decode("utf-8") == vector["payload_utf8"]
    header = opened.header
    assert header == peek_header(_h(vector["envelope_hex"]))
    assert header.sender_id == vector["sender_id"]
    assert header.sequence == vector["sequence"]
    assert header.suite == vector["suite"]
    assert header.compression == vector["compression"]
    assert header.dictionary_id == vector["dictionary_id"]
    assert header.recipient_key_id == vector["recipient_key_id"]


@pytest.mark.parametrize(
    "rejection", DOCUMENT["rejections"], ids=[r["name"] for r in DOCUMENT["rejections"]]
)
def test_rejection_vectors_fail_with_their_code(rejection: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as caught:
        open_with_vector_keys(
            DOCUMENT, _h(rejection["envelope_hex"]), "server", rejection.get("already_used")
        )
    assert caught.value.code == rejection["error_code"]


def test_rejections_cover_what_a_receiver_knows() -> None:
    codes = {r["error_code"] for r in DOCUMENT["rejections"]}
    assert {
        "envelope_wrong_recipient_key",
        "envelope_unknown_sender",
        "envelope_replayed",
        "envelope_bad_signature",
        "envelope_unknown_key_id",
        "envelope_truncated",
    } <= codes
    # Each receiver-side refusal is a well-formed envelope: only the receiver's knowledge refuses it.
    by_code = {r["error_code"]: r for r in DOCUMENT["rejections"]}
    wrong_key = peek_header(_h(by_code["envelope_wrong_recipient_key"]["envelope_hex"]))
    assert wrong_key.recipient_key_id == DOCUMENT["server"]["x25519_key_id"]
    assert wrong_key.sender_id == DOCUMENT["device"]["sender_id"]
    unknown = peek_header(_h(by_code["envelope_unknown_sender"]["envelope_hex"]))
    assert unknown.sender_id not in {
        DOCUMENT["device"]["sender_id"],
        DOCUMENT["server"]["sender_id"],
    }
    replayed = by_code["envelope_replayed"]
    assert replayed["envelope_hex"] == VECTORS[0]["envelope_hex"]
    # The same bytes open when the sequence is fresh.
    opened = open_with_vector_keys(DOCUMENT, _h(replayed["envelope_hex"]), "server")
    assert opened.header.sequence == replayed["already_used"]["sequence"]


def test_vector_envelopes_do_not_show_the_record_in_clear() -> None:
    for vector in VECTORS:
        envelope = _h(vector["envelope_hex"])
        for value in ("欧阳娜娜", "李小龙", "530102198503042316", "13987654321", "在校"):
            assert value.encode("utf-8") not in envelope
