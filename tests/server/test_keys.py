"""Server keys live in 0600 files outside the database; rotation keeps old keys usable."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from server.services import keys
from server.services.context import EXTENSION_KEY
from sync_protocol.errors import KeyFileError


def test_first_load_creates_one_private_bundle(tmp_path: Path) -> None:
    ring, created = keys.load_or_create(tmp_path / "keys")
    assert created
    files = sorted(p.name for p in (tmp_path / "keys").iterdir())
    assert files == ["current", f"server-{ring.current_id}.json"]
    for path in (tmp_path / "keys").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    again, created_again = keys.load_or_create(tmp_path / "keys")
    assert not created_again and again.current_id == ring.current_id
    document = ring.public_document()
    assert document["encryption_key_id"] == ring.current_id
    assert set(document) == {
        "encryption_public",
        "encryption_key_id",
        "signing_public",
        "signing_key_id",
    }


def test_rotation_makes_a_new_current_key_and_keeps_the_old(tmp_path: Path) -> None:
    old, _ = keys.load_or_create(tmp_path)
    new = keys.rotate(tmp_path)
    assert new.current_id != old.current_id
    assert new.bundle_for(old.current_id).encryption.raw() == old.current.encryption.raw()
    assert keys.load(tmp_path).current_id == new.current_id
    assert new.bundle_for("0" * 16) is None


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    ring, _ = keys.load_or_create(tmp_path)
    (tmp_path / f"server-{ring.current_id}.json").chmod(0o644)
    with pytest.raises(KeyFileError):
        keys.load(tmp_path)


def test_current_pointing_nowhere_is_an_error(tmp_path: Path) -> None:
    keys.load_or_create(tmp_path)
    (tmp_path / "current").write_text("ffffffffffffffff\n")
    with pytest.raises(keys.KeyRingError):
        keys.load(tmp_path)


def test_a_running_app_picks_up_a_rotation_without_restart(sqlite_url: str, app_on) -> None:
    from server.settings import resolve_key_dir

    app = app_on(sqlite_url)
    service = app.extensions[EXTENSION_KEY].keys
    before = service.ring()
    assert service.ring() is before  # cached while nothing changes
    rotated = keys.rotate(resolve_key_dir(app.config))  # as `server rotate-keys` beside it does
    after = service.ring()
    assert after.current_id == rotated.current_id != before.current_id
    assert after.bundle_for(before.current_id) is not None
