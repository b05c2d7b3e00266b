"""Resumable, content-addressed attachment uploads (house photos), tus-like; see docs/attachments.md.

A device announces a file by its SHA-256 and size (``start_upload``), sends it in chunks, each
with the offset it starts at and its own SHA-256 (``append_chunk``), and after a dropped link
asks how much the server has confirmed (``upload_status``) and goes on from there. When the last
byte arrives the server hashes the whole file; only a file whose SHA-256 is its address is kept,
under ``ATTACHMENTS_DIR/<first 2 hex>/<sha256>``. Partial files wait in ``ATTACHMENTS_DIR/partial``.

Devices authenticate every request with an Ed25519 signature made with the signing key they
registered at enrollment (:func:`signature_message`): no session, no token, and a request
cannot be replayed outside a few minutes or changed in transit.

Durability: a chunk is written and fsynced before the database confirms it, inside the upload
row's lock, so the confirmed offset never covers bytes that are not on disk; bytes past the
confirmed offset (a chunk whose commit failed) are cut off before the next chunk is written.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from server.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unprocessable,
    ValidationFailed,
)
from server.services.context import ServiceContext
from server.settings import sqlite_path
from server.storage import devices as device_store
from server.storage import uploads as store
from server.storage.database import end_read, writing
from server.storage.devices import Device
from server.storage.uploads import Attachment
from sync_protocol.crypto import SigningPrivateKey, SigningPublicKey, sign, verify_signature

#: Authorization scheme of a device-signed upload request.
SCHEME: Final = "VillageSync-Device"
#: First line of every signed message: binds the signature to this use and version.
SIGNATURE_CONTEXT: Final = "village-sync-upload-v1"
_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")
_PARAM: Final = re.compile(r'(\w+)="([^"]*)"')
_HASH_BLOCK: Final = 1024 * 1024


# --- request signatures --------------------------------------------------------------------------


def signature_message(
    *, method: str, path: str, sha256: str, offset: str, body_sha256: str, timestamp: int
) -> bytes:
    """The bytes a device signs for one upload request.

    Lines joined by ``\\n``: the context ``village-sync-upload-v1``, the HTTP method (upper
    case), the request path (no query), the file's SHA-256 (hex), the offset (``Upload-Offset``
    of a PATCH, ``0`` for the POST that starts an upload, empty for HEAD/GET), the SHA-256 (hex)
    of the request body (empty without a body) and the Unix time in seconds.
    """
    lines = [
        SIGNATURE_CONTEXT,
        method.upper(),
        path,
        sha256,
        offset,
        body_sha256,
        str(int(timestamp)),
    ]
    return "\n".join(lines).encode("utf-8")


def authorization_header(
    key: SigningPrivateKey,
    device_id: str,
    *,
    method: str,
    path: str,
    sha256: str,
    offset: str = "",
    body: bytes = b"",
    timestamp: int | None = None,
) -> str:
    """The ``Authorization`` header value a device sends (what a client library calls)."""
    ts = int(time.time()) if timestamp is None else timestamp
    message = signature_message(
        method=method,
        path=path,
        sha256=sha256,
        offset=offset,
        body_sha256=hashlib.sha256(body).hexdigest() if body else "",
        timestamp=ts,
    )
    signature = base64.b64encode(sign(key, message)).decode("ascii")
    return f'{SCHEME} device="{device_id}", ts="{ts}", sig="{signature}"'


def _unauthorized(en: str, zh: str, code: str = "device_signature_invalid") -> Unauthorized:
    return Unauthorized(en=en, zh=zh, code=code)


def authenticate_device(
    ctx: ServiceContext,
    header: str,
    *,
    method: str,
    path: str,
    sha256: str,
    offset: str,
    body: bytes,
    now: float | None = None,
) -> Device:
    """The active device whose signature the ``Authorization`` header carries.

    Raises :class:`Unauthorized` (``device_signature_missing``, ``device_signature_invalid``,
    ``device_signature_expired``, ``device_unknown``) and :class:`Forbidden`
    (``device_revoked``).
    """
    scheme, _, rest = (header or "").partition(" ")
    if scheme != SCHEME:
        raise _unauthorized(
            f"send Authorization: {SCHEME} device=…, ts=…, sig=…",
            "缺少设备签名",
            "device_signature_missing",
        )
    params = dict(_PARAM.findall(rest))
    device_id, ts_text, sig_text = params.get("device"), params.get("ts", ""), params.get("sig")
    if not device_id or not ts_text.isdigit() or not sig_text:
        raise _unauthorized("malformed device signature header", "设备签名格式错误")
    max_age = ctx.settings["UPLOAD_SIGNATURE_MAX_AGE_SECONDS"]
    clock = time.time() if now is None else now
    if abs(clock - int(ts_text)) > max_age:
        raise _unauthorized(
            f"the signed time is more than {max_age} s from server time; sync the clock",
            "签名时间与服务器时间相差过大，请先同步时间",
            "device_signature_expired",
        )
    device = device_store.device_for_sync(device_id)
    if device is None:
        raise _unauthorized("unknown device", "设备未登记", "device_unknown")
    try:
        signature = base64.b64decode(sig_text, validate=True)
    except (binascii.Error, ValueError):
        raise _unauthorized("the signature is not base64", "设备签名格式错误") from None
    message = signature_message(
        method=method,
        path=path,
        sha256=sha256,
        offset=offset,
        body_sha256=hashlib.sha256(body).hexdigest() if body else "",
        timestamp=int(ts_text),
    )
    public = SigningPublicKey.from_base64(device.ed25519_public)
    if not verify_signature(public, signature, message):
        raise _unauthorized("the device signature does not match", "设备签名无效")
    if device.status != "active":
        raise Forbidden(en="this device is revoked", zh="该设备已被停用", code="device_revoked")
    # The device lookup was a read; a write that follows starts its own transaction.
    end_read()
    return device


# --- files -----------------------------------------------------------------------------------------


def attachments_root(config: Mapping[str, Any]) -> Path:
    """The attachments folder: the setting, else ``attachments`` next to the SQLite file."""
    if config.get("ATTACHMENTS_DIR"):
        return Path(config["ATTACHMENTS_DIR"]).resolve()
    db_file = sqlite_path(config["DATABASE_URL"])
    if db_file is not None:
        return db_file.parent / "attachments"
    return Path("var/attachments").resolve()


def attachment_path(sha256: str, root: Path) -> Path:
    """Where a completed attachment is kept under the attachments folder ``root``."""
    return root / sha256[:2] / sha256


def partial_path(sha256: str, device_id: str, root: Path) -> Path:
    """Where the bytes of a device's unfinished upload wait (one file per device and address,
    so no device can append to or reset another's)."""
    return root / "partial" / f"{device_id}-{sha256}.part"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _write_chunk(path: Path, offset: int, chunk: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # Bytes past the confirmed offset belong to a chunk whose commit failed: drop them.
        os.ftruncate(fd, offset)
        written = 0
        while written < len(chunk):
            written += os.pwrite(fd, chunk[written:], offset + written)
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the upload protocol ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadStatus:
    """Where an upload stands: confirmed ``offset`` of ``size`` bytes."""

    sha256: str
    size: int
    offset: int
    complete: bool
    content_type: str

    @classmethod
    def of(cls, row: Attachment) -> UploadStatus:
        """The status of a stored row."""
        return cls(
            row.sha256,
            int(row.size),
            int(row.received_bytes),
            row.completed_at is not None,
            row.content_type,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "sha256": self.sha256,
            "size": self.size,
            "offset": self.offset,
            "complete": self.complete,
            "content_type": self.content_type,
        }


def check_sha256(value: str, field: str = "sha256") -> str:
    """``value`` if it is 64 lower-case hex digits; raises :class:`ValidationFailed`."""
    if not isinstance(value, str) or not _SHA256.match(value):
        raise ValidationFailed(
            en="a content address is 64 lower-case hex digits (SHA-256)",
            zh="内容地址应为64位小写十六进制SHA-256",
            details={"fields": {field: ["64 lower-case hex digits"]}},
        )
    return value


def _too_large(ctx: ServiceContext, size: int) -> PayloadTooLarge:
    limit = ctx.settings["ATTACHMENT_MAX_BYTES"]
    return PayloadTooLarge(
        en=f"an attachment may have at most {limit} bytes",
        zh=f"附件不能超过 {limit} 字节",
        code="attachment_too_large",
        details={"max_bytes": limit, "size": size},
    )


def start_upload(
    ctx: ServiceContext, device: Device, sha256: str, size: int, content_type: str
) -> tuple[UploadStatus, bool]:
    """Announce an upload; returns its status and whether it is new.

    Uploads are per device: this device's upload of the address, if it began one, is resumed
    or reported complete; another device's upload of the same address is invisible to it (a
    device must send the bytes it claims to have). Raises
    :class:`PayloadTooLarge` (``attachment_too_large``) beyond ``ATTACHMENT_MAX_BYTES`` and
    :class:`Conflict` (``upload_size_mismatch``) when this device announced the address with
    another size.
    """
    check_sha256(sha256)
    if size > ctx.settings["ATTACHMENT_MAX_BYTES"]:
        raise _too_large(ctx, size)
    with writing():
        row, created = store.create_upload(
            sha256=sha256,
            size=size,
            content_type=content_type,
            device_id=device.id,
            village_code=device.scope,
        )
        if int(row.size) != size:
            raise Conflict(
                en=f"this device announced this address with {row.size} bytes",
                zh="该附件已以不同大小登记",
                code="upload_size_mismatch",
                details={"size": int(row.size)},
            )
        row = _recover(attachments_root(ctx.settings), row)
        return UploadStatus.of(row), created


def _recover(root: Path, row: Attachment) -> Attachment:
    """Make a locked row agree with the files after a crash between file and commit, or
    after files were lost (a disk restored from an older backup); returns it as now stored."""
    final = attachment_path(row.sha256, root)
    part = partial_path(row.sha256, str(row.device_id), root)
    if row.completed_at is not None:
        if not final.exists():
            # The stored photo is gone: let the next device that has it upload it again.
            return store.set_received(row, 0)
        return row
    if (
        row.received_bytes > 0
        and not part.exists()
        and final.exists()
        and _file_sha256(final) == row.sha256
    ):
        # This device's last chunk was moved into place and the commit was lost in a crash.
        return store.set_received(row, int(row.size), complete=True)
    on_disk = part.stat().st_size if part.exists() else 0
    if on_disk < row.received_bytes:
        # Confirmed bytes that are gone (a disk restored from backup): resume from what is there.
        return store.set_received(row, on_disk)
    return row


def upload_status(device: Device, sha256: str) -> UploadStatus:
    """The confirmed offset of an upload. Raises :class:`NotFound` (``upload_not_found``)."""
    check_sha256(sha256)
    row = store.get_upload(sha256, device.id)
    if row is None:
        raise NotFound(en="no such upload", zh="没有该上传", code="upload_not_found")
    return UploadStatus.of(row)


def _parse_checksum(header: str | None) -> bytes:
    algorithm, _, value = (header or "").strip().partition(" ")
    if algorithm.lower() != "sha256" or not value:
        raise ValidationFailed(
            en="send Upload-Checksum: sha256 <base64 of the chunk's SHA-256>",
            zh="缺少分块校验值 Upload-Checksum",
            code="chunk_checksum_missing",
            details={"fields": {"Upload-Checksum": ["sha256 <base64>"]}},
        )
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 32:
        raise ValidationFailed(
            en="Upload-Checksum must carry a base64 SHA-256 (32 bytes)",
            zh="分块校验值格式错误",
            code="chunk_checksum_missing",
            details={"fields": {"Upload-Checksum": ["base64 of 32 bytes"]}},
        )
    return digest


def append_chunk(
    ctx: ServiceContext,
    device: Device,
    sha256: str,
    offset: int,
    checksum: str | None,
    chunk: bytes,
) -> UploadStatus:
    """Write ``chunk`` at ``offset`` and return the new status (complete after the last byte).

    Raises :class:`NotFound` (``upload_not_found``); :class:`Conflict`
    (``upload_offset_mismatch``, ``details.offset`` = the confirmed offset) unless ``offset`` is
    the confirmed offset; :class:`ValidationFailed` (``chunk_checksum_missing``) without a
    usable ``Upload-Checksum``; :class:`Unprocessable` (``chunk_checksum_mismatch``) when the
    chunk's SHA-256 differs (nothing is written); :class:`PayloadTooLarge`
    (``attachment_too_large``) when the chunk runs past the announced size; and
    :class:`Unprocessable` (``upload_checksum_mismatch``) when the whole file's SHA-256 is not
    its address — the upload then starts again from 0.
    """
    check_sha256(sha256)
    expected = _parse_checksum(checksum)
    if hashlib.sha256(chunk).digest() != expected:
        raise Unprocessable(
            en="the chunk's SHA-256 does not match Upload-Checksum; send it again",
            zh="分块校验失败，请重新发送",
            code="chunk_checksum_mismatch",
        )
    with writing():
        row = store.lock_upload(sha256, device.id)
        if row is None:
            raise NotFound(en="no such upload", zh="没有该上传", code="upload_not_found")
        row = _recover(attachments_root(ctx.settings), row)
        confirmed = int(row.received_bytes)
        if offset != confirmed or (row.completed_at is not None and chunk):
            raise Conflict(
                en=f"the server has confirmed {confirmed} bytes; continue from there",
                zh=f"服务器已确认 {confirmed} 字节，请从该位置继续",
                code="upload_offset_mismatch",
                details={"offset": confirmed},
            )
        if offset + len(chunk) > int(row.size):
            raise _too_large(ctx, offset + len(chunk))
        if row.completed_at is not None:
            return UploadStatus.of(row)
        part = partial_path(sha256, device.id, attachments_root(ctx.settings))
        _write_chunk(part, offset, chunk)
        received = offset + len(chunk)
        if received < int(row.size):
            return UploadStatus.of(store.set_received(row, received))
        if _file_sha256(part) != sha256:
            # Every chunk matched its checksum, yet the whole does not: start again from 0.
            part.unlink(missing_ok=True)
            row = store.set_received(row, 0)
            failed = True
        else:
            final = attachment_path(sha256, attachments_root(ctx.settings))
            final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.replace(part, final)
            row = store.set_received(row, received, complete=True)
            failed = False
        status = UploadStatus.of(row)
    if failed:
        raise Unprocessable(
            en="the file's SHA-256 is not its address; upload it again from 0",
            zh="文件校验失败，请从头重新上传",
            code="upload_checksum_mismatch",
            details={"offset": 0},
        )
    return status


#: Image formats served as themselves, recognised by their first bytes (never by the type the
#: device announced: a ``text/html`` "photo" would otherwise run on the admin origin).
_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
#: What anything else is served as: a download, never rendered.
OPAQUE_TYPE = "application/octet-stream"


def sniff_type(path: Path) -> str:
    """The content type to serve ``path`` as: JPEG, PNG, GIF or WebP by magic bytes, else
    :data:`OPAQUE_TYPE`."""
    with path.open("rb") as handle:
        head = handle.read(16)
    for magic, content_type in _IMAGE_MAGIC:
        if head.startswith(magic):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return OPAQUE_TYPE


def stored_attachment(ctx: ServiceContext, area_prefix: str, sha256: str) -> tuple[Path, str]:
    """The file of a completed attachment uploaded within ``area_prefix`` and the type to serve
    it as (:func:`sniff_type`, never the device's announced ``content_type``).

    For admins viewing a record's photos. Raises :class:`NotFound` (``attachment_not_found``)
    for an unknown, unfinished or out-of-area attachment, or one whose file is gone.
    """
    check_sha256(sha256)
    row = store.completed_in_area(sha256, area_prefix)
    path = attachment_path(sha256, attachments_root(ctx.settings))
    if row is None or not path.is_file():
        raise NotFound(en="no such attachment", zh="附件不存在", code="attachment_not_found")
    content_type = sniff_type(path)
    # Streaming the file can take long on a slow link; hold no read transaction meanwhile.
    end_read()
    return path, content_type


def purge_abandoned(ctx: ServiceContext, older_than: timedelta, now: datetime | None = None) -> int:
    """Delete unfinished uploads untouched for ``older_than`` (rows and partial files).

    Returns how many went. An upload resumed while the job runs is kept.
    """
    before = (now or ctx.now()) - older_than
    root = attachments_root(ctx.settings)
    removed = 0
    with writing():
        for row in store.abandoned(before):
            if store.delete_if_abandoned(row.sha256, str(row.device_id), before):
                partial_path(row.sha256, str(row.device_id), root).unlink(missing_ok=True)
                removed += 1
    return removed
