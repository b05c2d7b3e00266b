"""Tests of sync_protocol.envelope: seal/open, header layout, typed rejections, properties."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_protocol.crypto import (
    EncryptionPrivateKey,
    KeyBundle,
    SigningPrivateKey,
    SigningPublicKey,
    generate_device_keys,
    generate_server_keys,
)
from sync_protocol.envelope import (
    MAGIC,
    MAX_ENVELOPE_BYTES,
    MAX_PAYLOAD_BYTES,
    CompressionId,
    Opened,
    Suite,
    open_envelope,
    peek_header,
    seal,
)
from sync_protocol.errors import (
    BadSignature,
    InvalidKey,
    MalformedHeader,
    ProtocolError,
    Replayed,
    TooLarge,
    Truncated,
    UnknownKeyId,
    UnknownSender,
    UnsupportedSuite,
    UnsupportedVersion,
    WrongRecipientKey,
)

SERVER = generate_server_keys()
DEVICE = generate_device_keys()
DEVICE_ID = "tablet-yn-07"
SENDERS = {DEVICE_ID: DEVICE.signing_public}
SUITES = list(Suite)

# Record values that must never appear in clear on the wire.
SECRET_RECORD = {
    "household_no": "5301020012010088",
    "head_name": "欧阳娜娜",
    "members": [
        {"_id": "6f1c", "name": "买买提·艾力", "id_number": "53010219850304231X"},
        {"_id": "7a2d", "name": "次仁卓玛", "id_number": "540102200007151226"},
    ],
    "phone": "13987654321",
}


def _server_keys() -> dict[str, EncryptionPrivateKey]:
    return {SERVER.encryption.key_id(): SERVER.encryption}


def _seal(
    payload: bytes, suite: Suite = Suite.X25519_HKDF_SHA256_AES256GCM_ED25519, **overrides: object
) -> bytes:
    arguments: dict[str, object] = {
        "recipient_public": SERVER.encryption_public,
        "recipient_key_id": SERVER.encryption.key_id(),
        "sender_id": DEVICE_ID,
        "sender_signing_key": DEVICE.signing,
        "sequence": 42,
        "suite": suite,
    }
    arguments.update(overrides)
    return seal(payload, **arguments)  # type: ignore[arg-type]


def _open(
    data: bytes,
    *,
    recipient_keys: dict[str, EncryptionPrivateKey] | None = None,
    senders: dict[str, SigningPublicKey] | None = None,
    is_replay: Callable[[str, int], bool] | None = None,
) -> Opened:
    return open_envelope(
        data,
        recipient_keys=_server_keys() if recipient_keys is None else recipient_keys,
        sender_verify_key=(SENDERS if senders is None else senders).get,
        is_replay=is_replay,
    )


@pytest.mark.parametrize("suite", SUITES)
def test_round_trip_both_suites(suite: Suite) -> None:
    payload = json.dumps(SECRET_RECORD, ensure_ascii=False).encode("utf-8")
    data = _seal(payload, suite, sequence=7)
    opened = _open(data)
    assert opened.payload == payload
    header = opened.header
    assert header.suite is suite
    assert header.sender_id == DEVICE_ID
    assert header.sequence == 7
    assert header.recipient_key_id == SERVER.encryption.key_id()
    assert header.compression is CompressionId.RAW
    assert header.plaintext_length == len(payload)
    assert len(data) == header.header_length + len(payload) + 16 + 64


def test_header_layout_byte_by_byte() -> None:
    data = _seal(
        b"abc",
        Suite(2),
        sequence=0x0102030405060708,
        compression=CompressionId.ZSTD_DICTIONARY,
        dictionary_id=0xA1B2C3D4,
    )
    sender = DEVICE_ID.encode()
    n = len(sender)
    assert data[0:4] == MAGIC == b"VSE\x00"
    assert data[4] == 1  # version
    assert data[5] == 2  # suite
    assert data[6] == 3  # compression
    assert data[7:11] == bytes.fromhex("a1b2c3d4")  # dictionary id
    assert data[11] == 0  # flags
    assert data[12:20].hex() == SERVER.encryption.key_id()
    assert data[20] == n
    assert data[21 : 21 + n] == sender
    assert data[21 + n : 29 + n] == bytes.fromhex("0102030405060708")
    header = peek_header(data)
    assert data[29 + n : 61 + n] == header.ephemeral_public
    assert data[61 + n : 73 + n] == header.nonce
    assert struct.unpack(">II", data[73 + n : 81 + n]) == (3, 19)
    assert header.header_length == 81 + n
    assert len(data) == 81 + n + 19 + 64


def test_fresh_randomness_makes_each_seal_different() -> None:
    first, second = _seal(b"same"), _seal(b"same")
    assert first != second
    assert _open(first).payload == _open(second).payload == b"same"


def test_server_to_device_direction() -> None:
    data = seal(
        b"download page 1",
        recipient_public=DEVICE.encryption_public,
        recipient_key_id=DEVICE.encryption.key_id(),
        sender_id="county-530102",
        sender_signing_key=SERVER.signing,
        sequence=1,
        suite=Suite(1),
    )
    opened = open_envelope(
        data,
        recipient_keys={DEVICE.encryption.key_id(): DEVICE.encryption},
        sender_verify_key={"county-530102": SERVER.signing_public}.get,
    )
    assert opened.payload == b"download page 1"


def test_key_rotation_picks_the_key_by_id() -> None:
    old, new = EncryptionPrivateKey.generate(), EncryptionPrivateKey.generate()
    keys = {old.key_id(): old, new.key_id(): new}
    for key in (old, new):
        data = _seal(b"x", recipient_public=key.public_key(), recipient_key_id=key.key_id())
        assert _open(data, recipient_keys=keys).payload == b"x"


# --- typed rejections -------------------------------------------------------------------------


def test_unknown_key_id() -> None:
    other = EncryptionPrivateKey.generate()
    with pytest.raises(UnknownKeyId) as caught:
        _open(_seal(b"x"), recipient_keys={other.key_id(): other})
    assert caught.value.code == "envelope_unknown_key_id"


def test_wrong_recipient_key_when_mapping_holds_another_key_under_the_id() -> None:
    other = EncryptionPrivateKey.generate()
    with pytest.raises(WrongRecipientKey) as caught:
        _open(_seal(b"x"), recipient_keys={SERVER.encryption.key_id(): other})
    assert caught.value.code == "envelope_wrong_recipient_key"


def test_unknown_sender_and_revoked_device() -> None:
    with pytest.raises(UnknownSender) as caught:
        _open(_seal(b"x"), senders={})
    assert caught.value.code == "envelope_unknown_sender"


def test_bad_signature_from_an_impostor_with_the_device_id() -> None:
    impostor = SigningPrivateKey.generate()
    data = _seal(b"forged", sender_signing_key=impostor)
    with pytest.raises(BadSignature) as caught:
        _open(data)
    assert caught.value.code == "envelope_bad_signature"


def test_signature_is_verified_before_decrypting() -> None:
    # A ciphertext change breaks both the signature and the AEAD tag; the signature error wins,
    # proving no decryption was attempted on unauthenticated data.
    data = bytearray(_seal(b"payload"))
    header = peek_header(bytes(data))
    data[header.header_length] ^= 0x01
    with pytest.raises(BadSignature):
        _open(bytes(data))


def test_replayed_sequence_refused_only_when_callers_check_says_so() -> None:
    seen: set[tuple[str, int]] = set()

    def is_replay(sender: str, sequence: int) -> bool:
        return (sender, sequence) in seen

    data = _seal(b"batch", sequence=9)
    opened = _open(data, is_replay=is_replay)
    seen.add((opened.header.sender_id, opened.header.sequence))
    with pytest.raises(Replayed) as caught:
        _open(data, is_replay=is_replay)
    assert caught.value.code == "envelope_replayed"
    assert _open(_seal(b"batch", sequence=10), is_replay=is_replay).payload == b"batch"


def test_replay_check_is_not_consulted_for_unauthentic_envelopes() -> None:
    calls: list[tuple[str, int]] = []
    impostor = SigningPrivateKey.generate()
    with pytest.raises(BadSignature):
        _open(
            _seal(b"x", sender_signing_key=impostor),
            is_replay=lambda s, q: calls.append((s, q)) is None,
        )
    assert calls == []


def test_truncated_every_length() -> None:
    data = _seal(b"0123456789")
    for cut in range(len(data)):
        with pytest.raises(Truncated) as caught:
            _open(data[:cut])
        assert caught.value.code == "envelope_truncated"


def test_trailing_bytes_are_malformed() -> None:
    with pytest.raises(MalformedHeader):
        _open(_seal(b"x") + b"\x00")


def test_bad_magic_version_suite_flags_compression() -> None:
    data = _seal(b"x")
    cases: list[tuple[int, int, type[ProtocolError]]] = [
        (0, ord("W"), MalformedHeader),
        (4, 2, UnsupportedVersion),
        (5, 3, UnsupportedSuite),
        (5, 0, UnsupportedSuite),
        (6, 4, MalformedHeader),
        (6, 3, MalformedHeader),  # zstd+dictionary without a dictionary id
        (11, 1, MalformedHeader),
    ]
    for offset, value, error in cases:
        changed = bytearray(data)
        changed[offset] = value
        with pytest.raises(error):
            peek_header(bytes(changed))


def test_inconsistent_lengths_and_bad_sender_id_are_malformed() -> None:
    data = bytearray(_seal(b"x", sender_id="d1"))
    lengths_at = 21 + 2 + 8 + 32 + 12
    changed = bytearray(data)
    changed[lengths_at + 7] ^= 0x01  # ciphertext length no longer plaintext + 16
    with pytest.raises(MalformedHeader):
        peek_header(bytes(changed))
    changed = bytearray(data)
    changed[21] = 0xFF  # not UTF-8
    with pytest.raises(MalformedHeader):
        peek_header(bytes(changed))
    changed = bytearray(data)
    changed[20] = 0  # empty sender id
    with pytest.raises(MalformedHeader):
        peek_header(bytes(changed))


def test_too_large_is_checked_from_the_header_before_reading_further() -> None:
    data = bytearray(_seal(b"x", sender_id="d1"))
    lengths_at = 21 + 2 + 8 + 32 + 12
    struct.pack_into(">II", data, lengths_at, 0xFFFFFFF0 - 16, 0xFFFFFFF0)
    with pytest.raises(TooLarge) as caught:
        peek_header(bytes(data))
    assert caught.value.code == "envelope_too_large"
    with pytest.raises(TooLarge):
        peek_header(bytes(MAX_ENVELOPE_BYTES + 1))


def test_seal_refuses_bad_arguments_with_typed_errors() -> None:
    with pytest.raises(TooLarge):
        _seal(bytes(MAX_PAYLOAD_BYTES + 1))
    with pytest.raises(UnsupportedSuite):
        _seal(b"x", suite=9)  # type: ignore[arg-type]
    with pytest.raises(MalformedHeader):
        _seal(b"x", compression=7)
    with pytest.raises(MalformedHeader):
        _seal(b"x", compression=CompressionId.ZSTD, dictionary_id=5)
    with pytest.raises(MalformedHeader):
        _seal(b"x", sender_id="")
    with pytest.raises(MalformedHeader):
        _seal(b"x", sender_id="村" * 86)  # 258 UTF-8 bytes
    with pytest.raises(MalformedHeader):
        _seal(b"x", sequence=-1)
    with pytest.raises(MalformedHeader):
        _seal(b"x", sequence=2**64)
    with pytest.raises(MalformedHeader):
        _seal(b"x", nonce=b"short")
    with pytest.raises(InvalidKey):
        _seal(b"x", recipient_key_id=DEVICE.encryption.key_id())


def test_largest_payload_fits_under_the_limit_with_longest_sender() -> None:
    data = _seal(bytes(MAX_PAYLOAD_BYTES), sender_id="d" * 255)
    assert len(data) == MAX_ENVELOPE_BYTES
    assert len(_open(data, senders={"d" * 255: DEVICE.signing_public}).payload) == MAX_PAYLOAD_BYTES


def test_maximum_sequence_and_unicode_sender_round_trip() -> None:
    sender = "设备-云南-0001"
    data = _seal(b"x", sender_id=sender, sequence=2**64 - 1)
    opened = _open(data, senders={sender: DEVICE.signing_public})
    assert opened.header.sender_id == sender
    assert opened.header.sequence == 2**64 - 1


# --- properties -------------------------------------------------------------------------------

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    payload=st.binary(max_size=2048), suite=st.sampled_from(SUITES), seq=st.integers(0, 2**64 - 1)
)
def test_property_round_trip(payload: bytes, suite: Suite, seq: int) -> None:
    opened = _open(_seal(payload, suite, sequence=seq))
    assert opened.payload == payload
    assert opened.header.sequence == seq


_FIXED_ENVELOPES = {suite: _seal(b'{"head_name": "\xe6\xac\xa7"}', suite) for suite in SUITES}


@FAST
@given(suite=st.sampled_from(SUITES), data=st.data())
def test_property_any_flipped_bit_is_rejected_with_a_protocol_error(
    suite: Suite, data: st.DataObject
) -> None:
    envelope = bytearray(_FIXED_ENVELOPES[suite])
    position = data.draw(st.integers(0, len(envelope) * 8 - 1))
    envelope[position // 8] ^= 1 << (position % 8)
    with pytest.raises(ProtocolError):
        _open(bytes(envelope))


def test_every_single_bit_flip_is_rejected_exhaustively() -> None:
    envelope = _FIXED_ENVELOPES[Suite(1)]
    codes: set[str] = set()
    for position in range(len(envelope) * 8):
        changed = bytearray(envelope)
        changed[position // 8] ^= 1 << (position % 8)
        with pytest.raises(ProtocolError) as caught:
            _open(bytes(changed))
        codes.add(caught.value.code)
    assert "envelope_bad_signature" in codes
    assert "envelope_unknown_key_id" in codes


@FAST
@given(suite=st.sampled_from(SUITES), data=st.data())
def test_property_any_truncation_is_rejected(suite: Suite, data: st.DataObject) -> None:
    envelope = _FIXED_ENVELOPES[suite]
    cut = data.draw(st.integers(0, len(envelope) - 1))
    with pytest.raises(Truncated):
        _open(envelope[:cut])


@FAST
@given(garbage=st.binary(max_size=400))
def test_property_arbitrary_bytes_never_crash(garbage: bytes) -> None:
    for candidate in (garbage, MAGIC + b"\x01" + garbage):
        with pytest.raises(ProtocolError):
            _open(candidate)


def _with_field(envelope: bytes, field: str, value: int) -> bytes:
    """Re-encode one header field of a sealed envelope, keeping the rest byte for byte."""
    header = peek_header(envelope)
    n = len(header.sender_id.encode())
    raw = bytearray(envelope)
    if field == "suite":
        raw[5] = value
    elif field == "compression":
        raw[6] = value
        if value == CompressionId.ZSTD_DICTIONARY:
            struct.pack_into(">I", raw, 7, 1)
    elif field == "sequence":
        struct.pack_into(">Q", raw, 21 + n, value)
    elif field == "key_id":
        raw[12:20] = value.to_bytes(8, "big")
    return bytes(raw)


@FAST
@given(
    suite=st.sampled_from(SUITES),
    field=st.sampled_from(["suite", "compression", "sequence", "key_id"]),
    value=st.integers(0, 2**64 - 1),
)
def test_property_swapping_a_header_field_is_rejected(suite: Suite, field: str, value: int) -> None:
    envelope = _FIXED_ENVELOPES[suite]
    limits = {"suite": 2, "compression": 3}
    if field in limits:
        value = 1 + value % limits[field]
    swapped = _with_field(envelope, field, value)
    if swapped == envelope:
        return
    with pytest.raises(ProtocolError):
        _open(swapped)


def test_swapping_key_id_to_another_held_key_is_rejected() -> None:
    other = EncryptionPrivateKey.generate()
    keys = {**_server_keys(), other.key_id(): other}
    envelope = _seal(b"x")
    swapped = _with_field(envelope, "key_id", int(other.key_id(), 16))
    with pytest.raises(BadSignature):
        _open(swapped, recipient_keys=keys)


def test_swapping_sender_to_another_enrolled_device_is_rejected() -> None:
    other_device: KeyBundle = generate_device_keys()
    senders = {**SENDERS, "tablet-yn-08": other_device.signing_public}
    envelope = _seal(b"x")
    swapped = envelope.replace(DEVICE_ID.encode(), b"tablet-yn-08", 1)
    with pytest.raises(BadSignature):
        _open(swapped, senders=senders)


def _secret_strings(record: object) -> list[str]:
    if isinstance(record, dict):
        return [s for v in record.values() for s in _secret_strings(v)]
    if isinstance(record, list):
        return [s for v in record for s in _secret_strings(v)]
    return [record] if isinstance(record, str) else []


# derandomize + nonce and ephemeral key derived from the payload make this test reproducible: a
# 4-byte window of random ciphertext matches a given value with probability about 2**-32 per
# position, which over many runs would otherwise make it fail by chance once in a while.
@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    suite=st.sampled_from(SUITES),
    names=st.lists(
        st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=2),
        min_size=1,
        max_size=5,
    ),
    id_number=st.from_regex(r"\A[1-6][0-9]{16}[0-9X]\Z"),
)
def test_property_sealed_payload_never_shows_plaintext_values(
    suite: Suite, names: list[str], id_number: str
) -> None:
    record = {**SECRET_RECORD, "extra_names": names, "extra_id": id_number}
    payload = json.dumps(record, ensure_ascii=False).encode("utf-8")
    digest = hashlib.sha256(payload).digest()
    envelope = _seal(
        payload,
        suite,
        nonce=digest[:12],
        ephemeral_private=EncryptionPrivateKey.from_raw(hashlib.sha256(digest).digest()),
    )
    for value in _secret_strings(record):
        encoded = value.encode("utf-8")
        if len(encoded) < 4:
            continue
        for start in range(len(encoded) - 3):
            assert encoded[start : start + 4] not in envelope


class _AnyKey(dict[str, EncryptionPrivateKey]):
    """A key table that answers every key id with the server key (a maximally lenient lookup)."""

    def get(self, key: str, default: object = None) -> EncryptionPrivateKey:  # type: ignore[override]
        return SERVER.encryption


@FAST
@given(
    suite=st.sampled_from(SUITES),
    field=st.sampled_from(["suite", "compression", "sequence", "key_id", "sender"]),
    value=st.integers(0, 2**64 - 1),
    sender=st.text(min_size=1, max_size=40).filter(lambda s: len(s.encode()) <= 255),
)
def test_property_header_swaps_fail_the_signature_even_with_lenient_lookups(
    suite: Suite, field: str, value: int, sender: str
) -> None:
    """With every key id and every sender resolving to the right keys, a changed header field
    can only be caught by the signature: prove it is."""
    envelope = _FIXED_ENVELOPES[suite]
    if field == "sender":
        swapped = envelope.replace(DEVICE_ID.encode(), sender.encode(), 1)
        # Re-encode the length byte so the header still parses.
        swapped = swapped[:20] + bytes([len(sender.encode())]) + swapped[21:]
    else:
        limits = {"suite": 2, "compression": 3}
        swapped = _with_field(
            envelope, field, 1 + value % limits[field] if field in limits else value
        )
    if swapped == envelope:
        return
    with pytest.raises(BadSignature):
        open_envelope(
            swapped, recipient_keys=_AnyKey(), sender_verify_key=lambda _: DEVICE.signing_public
        )


def test_error_catalogue_codes_are_unique_and_bilingual() -> None:
    from sync_protocol import errors

    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, errors.ProtocolError)
    ]
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes)), sorted(codes)
    # Other parts' errors may need constructor arguments; the envelope's all have defaults.
    for cls in (c for c in classes if issubclass(c, errors.EnvelopeError)):
        error = cls()
        assert error.code == cls.code and error.message and error.message_zh
    explicit = errors.ProtocolError("custom_code", "custom message", message_zh="自定义")
    assert (explicit.code, explicit.message, explicit.message_zh) == (
        "custom_code",
        "custom message",
        "自定义",
    )
    assert str(BadSignature("details")) == "[envelope_bad_signature] details"
    with pytest.raises(TypeError):
        errors.ProtocolError("a", "b", "c")


def test_signed_envelope_with_low_order_ephemeral_key_is_malformed() -> None:
    """Even a correctly signed envelope (a faulty or hostile sender) cannot use a weak key."""
    from sync_protocol import crypto

    envelope = _seal(b"x")
    header = peek_header(envelope)
    at = header.header_length - 60 + 8  # ephemeral key follows the sequence
    tampered = envelope[:at] + bytes(32) + envelope[at + 32 : -64]
    resigned = tampered + crypto.sign(DEVICE.signing, tampered)
    with pytest.raises(MalformedHeader):
        _open(resigned)
