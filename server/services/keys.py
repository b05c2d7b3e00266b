"""The server's key ring: X25519 + Ed25519 private keys in files outside the database.

Layout of the key folder (mode 0700, files 0600, written by ``server.storage.key_files``)::

    keys/server-<encryption key id>.json   one bundle per generation
    keys/current                          the key id of the bundle in use

Rotation writes a new bundle and points ``current`` at it; older bundles stay, so envelopes
sealed to an old key still decrypt while devices learn the new one.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from server.storage.key_files import load_key_bundle, save_key_bundle
from sync_protocol.crypto import KeyBundle, generate_server_keys

CURRENT_FILE = "current"


class KeyRingError(RuntimeError):
    """The key folder is unusable (current points at a missing bundle, unwritable folder)."""

    code = "key_ring_error"


@dataclass(frozen=True)
class KeyRing:
    """The current server bundle plus every older one, by encryption key id."""

    current: KeyBundle
    bundles: dict[str, KeyBundle]

    @property
    def current_id(self) -> str:
        """The key id devices must seal to (the current X25519 key's id)."""
        return self.current.encryption.key_id()

    def public_document(self) -> dict[str, str]:
        """The current public keys with their ids, as sent to devices at enrollment."""
        return self.current.public_document()

    def bundle_for(self, encryption_key_id: str) -> KeyBundle | None:
        """The bundle whose X25519 key has this id (current or retired), or None."""
        return self.bundles.get(encryption_key_id)


def _bundle_path(key_dir: Path, key_id: str) -> Path:
    return key_dir / f"server-{key_id}.json"


def _write_current(key_dir: Path, key_id: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".current-", dir=key_dir)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key_id + "\n")
    os.replace(tmp, key_dir / CURRENT_FILE)


def _prepare_dir(key_dir: Path) -> None:
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


def load_or_create(key_dir: Path) -> tuple[KeyRing, bool]:
    """Load the key ring from ``key_dir``, generating the first bundle if there is none.

    Returns ``(ring, created)``. Raises :class:`KeyRingError` when ``current`` names a missing
    bundle and ``sync_protocol.errors.KeyFileError`` for an unreadable or too-open key file.
    """
    _prepare_dir(key_dir)
    current_file = key_dir / CURRENT_FILE
    if not current_file.exists():
        bundle = generate_server_keys()
        key_id = bundle.encryption.key_id()
        save_key_bundle(_bundle_path(key_dir, key_id), bundle)
        _write_current(key_dir, key_id)
        return load(key_dir), True
    return load(key_dir), False


def load(key_dir: Path) -> KeyRing:
    """Load every bundle in ``key_dir`` and the one ``current`` names.

    Raises :class:`KeyRingError` if ``current`` is missing or names no bundle.
    """
    try:
        current_id = (key_dir / CURRENT_FILE).read_text(encoding="ascii").strip()
    except OSError as exc:
        raise KeyRingError(f"no current server key in {key_dir}: {exc}") from exc
    bundles: dict[str, KeyBundle] = {}
    for path in sorted(key_dir.glob("server-*.json")):
        bundle = load_key_bundle(path)
        bundles[bundle.encryption.key_id()] = bundle
    if current_id not in bundles:
        raise KeyRingError(f"{key_dir}/{CURRENT_FILE} names key {current_id}, which is not there")
    return KeyRing(bundles[current_id], bundles)


def rotate(key_dir: Path) -> KeyRing:
    """Generate a new bundle and make it current; older bundles stay for decryption."""
    _prepare_dir(key_dir)
    bundle = generate_server_keys()
    key_id = bundle.encryption.key_id()
    save_key_bundle(_bundle_path(key_dir, key_id), bundle)
    _write_current(key_dir, key_id)
    return load(key_dir)


def _stamp(key_dir: Path) -> tuple[int, int] | None:
    """Identity of the ``current`` file (inode, mtime); changes when a rotation replaces it."""
    try:
        info = (key_dir / CURRENT_FILE).stat()
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_mtime_ns)


class KeyService:
    """The running server's key ring in ``key_dir`` (the ``KEY_DIR`` setting), created on first
    use and cached.

    The cache is reloaded when ``current`` changes on disk, so ``server rotate-keys`` run beside
    a live server takes effect on its next request without a restart.
    """

    def __init__(self, key_dir: Path) -> None:
        self.key_dir = key_dir
        self._cached: tuple[KeyRing, tuple[int, int] | None] | None = None
        # Requests of one app run in threads: one of them loads the ring, the others wait.
        self._lock = threading.Lock()

    def ring(self) -> KeyRing:
        """The current key ring."""
        with self._lock:
            stamp = _stamp(self.key_dir)
            cached = self._cached
            if cached is not None and stamp is not None and cached[1] == stamp:
                return cached[0]
            ring, _created = load_or_create(self.key_dir)
            self._cached = (ring, _stamp(self.key_dir))
            return ring

    def load_or_create(self) -> tuple[KeyRing, bool]:
        """The key ring, generated first if the folder has none; ``(ring, created)``."""
        with self._lock:
            ring, created = load_or_create(self.key_dir)
            self._cached = (ring, _stamp(self.key_dir))
            return ring, created

    def rotate(self) -> KeyRing:
        """Generate a new bundle and make it current (see :func:`rotate`)."""
        with self._lock:
            ring = rotate(self.key_dir)
            self._cached = (ring, _stamp(self.key_dir))
            return ring

    def reload(self) -> KeyRing:
        """Forget the cached key ring and load it again."""
        with self._lock:
            self._cached = None
        return self.ring()
