"""The server's key files (``server.storage.key_files``): mode 0600, atomic, refused when open."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from server.storage import key_files
from sync_protocol.crypto import (
    EncryptionPrivateKey,
    KeyBundle,
    SigningPrivateKey,
    generate_device_keys,
    generate_server_keys,
)
from sync_protocol.errors import KeyFileError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_bundle_file_round_trip_with_mode_0600(tmp_path: Path) -> None:
    bundle = generate_server_keys()
    path = tmp_path / "server-keys.json"
    key_files.save_key_bundle(path, bundle)
    assert _mode(path) == 0o600
    loaded = key_files.load_key_bundle(path)
    assert isinstance(loaded, KeyBundle)
    assert loaded.encryption.raw() == bundle.encryption.raw()
    assert loaded.signing.raw() == bundle.signing.raw()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".key-")]


def test_key_bundle_file_refuses_overwrite_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first, second = generate_device_keys(), generate_device_keys()
    key_files.save_key_bundle(path, first)
    with pytest.raises(KeyFileError) as caught:
        key_files.save_key_bundle(path, second)
    assert caught.value.code == "key_file_error"
    assert key_files.load_key_bundle(path).signing.raw() == first.signing.raw()
    key_files.save_key_bundle(path, second, overwrite=True)
    assert key_files.load_key_bundle(path).signing.raw() == second.signing.raw()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o610])
def test_loading_refuses_group_or_world_accessible_files(tmp_path: Path, mode: int) -> None:
    bundle_path, pem_path = tmp_path / "keys.json", tmp_path / "key.pem"
    key_files.save_key_bundle(bundle_path, generate_device_keys())
    key_files.save_private_key(pem_path, SigningPrivateKey.generate())
    for path, load in [
        (bundle_path, key_files.load_key_bundle),
        (pem_path, key_files.load_private_key),
    ]:
        os.chmod(path, mode)
        with pytest.raises(KeyFileError) as caught:
            load(path)
        assert "chmod 600" in caught.value.message
        assert caught.value.message_zh


def test_loading_accepts_owner_only_read(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    bundle = generate_device_keys()
    key_files.save_key_bundle(path, bundle)
    os.chmod(path, 0o400)
    assert key_files.load_key_bundle(path).encryption.raw() == bundle.encryption.raw()


def test_pem_private_keys_round_trip_by_kind(tmp_path: Path) -> None:
    enc, sig = EncryptionPrivateKey.generate(), SigningPrivateKey.generate()
    key_files.save_private_key(tmp_path / "enc.pem", enc)
    key_files.save_private_key(tmp_path / "sig.pem", sig)
    assert (tmp_path / "enc.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded_enc = key_files.load_private_key(tmp_path / "enc.pem")
    loaded_sig = key_files.load_private_key(tmp_path / "sig.pem")
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
def test_malformed_key_bundle_files_are_key_file_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "keys.json"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError):
        key_files.load_key_bundle(path)


def test_key_bundle_with_mismatched_key_ids_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key_files.save_key_bundle(path, generate_device_keys())
    text = path.read_text().replace('"signing_key_id": "', '"signing_key_id": "f')
    path.write_text(text)
    with pytest.raises(KeyFileError, match="key ids"):
        key_files.load_key_bundle(path)


def test_missing_or_garbage_pem_is_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        key_files.load_private_key(tmp_path / "absent.pem")
    path = tmp_path / "garbage.pem"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError):
        key_files.load_private_key(path)
