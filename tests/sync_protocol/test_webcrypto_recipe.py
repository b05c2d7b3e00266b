"""The browser recipe of docs/protocol-envelope.md: raw 32-byte private keys wrapped as PKCS#8.

WebCrypto imports X25519 and Ed25519 private keys only as PKCS#8; the document gives the fixed
DER prefixes. Checked here with an independent implementation (``cryptography``'s DER reader),
against the fixed keys of ``sync_protocol/vectors/envelope.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "sync_protocol" / "vectors" / "envelope.json").read_text())
DOC = (ROOT / "docs" / "protocol-envelope.md").read_text(encoding="utf-8")

PKCS8_X25519 = bytes.fromhex("302e020100300506032b656e04220420")
PKCS8_ED25519 = bytes.fromhex("302e020100300506032b657004220420")


def _spaced(prefix: bytes) -> str:
    return " ".join(f"{b:02x}" for b in prefix)


def test_the_document_gives_these_prefixes() -> None:
    assert f"| X25519 | `{_spaced(PKCS8_X25519)}` |" in DOC
    assert f"| Ed25519 | `{_spaced(PKCS8_ED25519)}` |" in DOC


@pytest.mark.parametrize("party", ["device", "server"])
def test_prefix_plus_raw_key_is_the_pkcs8_encoding_of_the_vector_keys(party: str) -> None:
    keys = VECTORS[party]
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    x25519 = serialization.load_der_private_key(
        PKCS8_X25519 + bytes.fromhex(keys["x25519_private_hex"]), password=None
    )
    assert x25519.public_key().public_bytes(*raw).hex() == keys["x25519_public_hex"]
    ed25519 = serialization.load_der_private_key(
        PKCS8_ED25519 + bytes.fromhex(keys["ed25519_private_seed_hex"]), password=None
    )
    assert ed25519.public_key().public_bytes(*raw).hex() == keys["ed25519_public_hex"]
    # And it is exactly what a standard PKCS#8 writer produces (48 bytes, no optional fields).
    der = x25519.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert der == PKCS8_X25519 + bytes.fromhex(keys["x25519_private_hex"])
