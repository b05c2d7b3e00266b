"""Private-key files of the server: the edge that keeps ``sync_protocol.crypto``'s key documents.

Key-file policy (POSIX): files are written with mode 0600 (created that way, never chmod-ed
afterwards, so no window exists where the key is readable by others) and written atomically
(temporary file + rename). Loading **refuses** a key file whose mode grants any permission to
group or others, with :class:`~sync_protocol.errors.KeyFileError` — a warning would be ignored
in a server log, and a leaked server key lets anyone read every village's data.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from sync_protocol.crypto import (
    KeyBundle,
    PrivateKey,
    key_bundle_from_bytes,
    key_bundle_to_bytes,
    private_key_from_pem,
    private_key_to_pem,
)
from sync_protocol.errors import KeyFileError


def write_secret_file(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` to ``path`` atomically, created with mode 0600.

    Raises:
        KeyFileError: if ``path`` exists and ``overwrite`` is false, or the write fails.
    """
    if path.exists() and not overwrite:
        raise KeyFileError(
            f"key file {path} already exists; refusing to overwrite it",
            message_zh=f"密钥文件 {path} 已存在，拒绝覆盖",
        )
    directory = path.parent
    try:
        # mkstemp creates the file with mode 0600 from the start, so the key is never readable by
        # others even for an instant; os.replace makes the new file appear whole or not at all.
        fd, tmp_name = tempfile.mkstemp(prefix=".key-", dir=directory)
    except OSError as exc:
        raise KeyFileError(
            f"cannot create a key file in {directory}: {exc}",
            message_zh=f"无法在 {directory} 创建密钥文件",
        ) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o600)
        os.replace(tmp_name, path)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        raise KeyFileError(
            f"cannot write key file {path}: {exc}", message_zh=f"无法写入密钥文件 {path}"
        ) from exc


def read_secret_file(path: Path) -> bytes:
    """Read a key file after checking that only its owner may read it.

    Raises:
        KeyFileError: if the file is missing, unreadable, or group/world accessible.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise KeyFileError(
            f"cannot read key file {path}: {exc}", message_zh=f"无法读取密钥文件 {path}"
        ) from exc
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
            "run: chmod 600 " + str(path),
            message_zh=f"密钥文件 {path} 权限过宽（{stat.S_IMODE(mode):04o}），请执行 chmod 600",
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(
            f"cannot read key file {path}: {exc}", message_zh=f"无法读取密钥文件 {path}"
        ) from exc


def save_private_key(
    path: str | os.PathLike[str], key: PrivateKey, *, overwrite: bool = False
) -> None:
    """Save one private key as an unencrypted PKCS#8 PEM file with mode 0600.

    Raises:
        KeyFileError: if the file exists and ``overwrite`` is false, or it cannot be written.
    """
    write_secret_file(Path(path), private_key_to_pem(key), overwrite=overwrite)


def load_private_key(path: str | os.PathLike[str]) -> PrivateKey:
    """Load a private key written by :func:`save_private_key`.

    Raises:
        KeyFileError: if the file is missing, group/world accessible, not a PEM private key, or a
            key of another algorithm.
    """
    return private_key_from_pem(read_secret_file(Path(path)), name=str(path))


def save_key_bundle(
    path: str | os.PathLike[str], bundle: KeyBundle, *, overwrite: bool = False
) -> None:
    """Save both private keys of a party in one JSON file with mode 0600
    (``sync_protocol.crypto.key_bundle_to_bytes``).

    Raises:
        KeyFileError: if the file exists and ``overwrite`` is false, or it cannot be written.
    """
    write_secret_file(Path(path), key_bundle_to_bytes(bundle), overwrite=overwrite)


def load_key_bundle(path: str | os.PathLike[str]) -> KeyBundle:
    """Load a key bundle written by :func:`save_key_bundle`.

    Raises:
        KeyFileError: if the file is missing, group/world accessible, not a key bundle of a known
            version, or its recorded key ids do not match its keys.
    """
    return key_bundle_from_bytes(read_secret_file(Path(path)), name=str(path))
