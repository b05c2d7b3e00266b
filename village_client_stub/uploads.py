"""Resumable photo uploads from the device (docs/attachments.md): chunks, offsets, checksums.

House photos are stored in records as content addresses (``"sha256:<hex>"``); the bytes are
registered in the device store (``DeviceStore.add_attachment``) and travel outside the sync
exchange, to ``/api/v1/uploads``:

1. ``POST /uploads`` announces the file (SHA-256, size); the answer carries the offset the
   server has already confirmed (0 for a new upload, more when resuming, ``complete`` when the
   county already holds those bytes).
2. ``PATCH /uploads/<sha256>`` sends the next chunk from that offset with
   ``Upload-Checksum: sha256 <base64>``; the server fsyncs it before confirming the new offset,
   which the device records (``confirm_upload_offset``, only ever forward).
3. After a drop the device asks ``GET /uploads/<sha256>`` where to go on from and resends from
   there, never from the beginning. A ``409`` names the confirmed offset; a chunk whose checksum
   failed is sent again. When the last byte arrives the server checks the whole file's SHA-256.

Every request is signed with the device's Ed25519 key over the method, path, file hash, offset,
body hash and time. The time is the server's as far as the device can tell: a tablet whose clock
is off learns the offset from the server's ``Date`` header and signs with corrected time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from sync_protocol.crypto import sign
from village_client_stub.errors import DeviceError
from village_client_stub.store import DeviceStore
from village_client_stub.sync_client import Backoff, NotEnrolled
from village_client_stub.transport import HttpResponse, HttpTransport, TransportError

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "SIGNATURE_CONTEXT",
    "UploadClient",
    "UploadFailed",
    "UploadReport",
    "signature_message",
]

UPLOADS_PATH: Final = "/api/v1/uploads"
SIGNATURE_CONTEXT: Final = "village-sync-upload-v1"
SCHEME: Final = "VillageSync-Device"
#: Chunk size on a good link; a failed chunk halves it (down to 8 KiB, ~1 s at 64 kbit/s).
DEFAULT_CHUNK_BYTES: Final = 256 * 1024
MIN_CHUNK_BYTES: Final = 8 * 1024


class UploadFailed(DeviceError):
    """A photo could not be uploaded; what the server confirmed so far is kept for next time."""

    code = "upload_failed"
    default_message = "the photo upload did not finish"
    default_message_zh = "照片上传未完成"


def signature_message(
    *, method: str, path: str, sha256: str, offset: str, body_sha256: str, timestamp: int
) -> bytes:
    """The bytes a device signs for one upload request (docs/attachments.md, "Device signature").

    Lines joined by ``\\n``: ``village-sync-upload-v1``, the method in upper case, the request
    path, the file's SHA-256 (hex), the offset (PATCH: ``Upload-Offset``; POST: ``0``; GET and
    HEAD: empty), the SHA-256 (hex) of the body (empty without one) and the Unix time.
    """
    lines = [SIGNATURE_CONTEXT, method.upper(), path, sha256, offset, body_sha256, str(timestamp)]
    return "\n".join(lines).encode("utf-8")


@dataclass
class UploadReport:
    """What :meth:`UploadClient.upload_all` did."""

    uploaded: list[str] = field(default_factory=list)
    already_held: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bytes_sent: int = 0
    chunks: int = 0
    retries: int = 0
    resumed_from: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "uploaded": list(self.uploaded),
            "already_held": list(self.already_held),
            "failed": dict(self.failed),
            "bytes_sent": self.bytes_sent,
            "chunks": self.chunks,
            "retries": self.retries,
            "resumed_from": dict(self.resumed_from),
        }


class UploadClient:
    """Uploads the store's unfinished attachments, resuming each from the confirmed offset."""

    def __init__(
        self,
        store: DeviceStore,
        transport: HttpTransport | None = None,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        max_failures: int = 10,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_chunk: Callable[[str, int, int], None] | None = None,
    ) -> None:
        """Prepare uploads for an enrolled ``store``.

        ``on_chunk(sha256, confirmed_offset, size)`` is called after each confirmed chunk.

        Raises:
            NotEnrolled: the store has no server.
        """
        identity = store.identity()
        if identity.server_url is None:
            raise NotEnrolled()
        self.store = store
        self.transport = transport or HttpTransport(identity.server_url)
        self.chunk_bytes = max(MIN_CHUNK_BYTES, chunk_bytes)
        self._max_chunk = self.chunk_bytes
        self.max_failures = max_failures
        self.backoff = backoff or Backoff()
        self._sleep = sleep
        self.on_chunk = on_chunk
        self._keys = store.key_bundle()
        self._prefix = urlsplit(self.transport.base_url).path.rstrip("/")
        self._clock_offset_s = 0.0
        self.report = UploadReport()

    # --- public --------------------------------------------------------------------------

    def upload_all(self) -> UploadReport:
        """Upload every attachment not yet fully confirmed; one failing does not stop the rest."""
        self.report = UploadReport()
        for attachment in self.store.attachments(unfinished=True):
            try:
                self.upload(attachment["sha256"])
            except UploadFailed as exc:
                self.report.failed[attachment["sha256"]] = exc.message
                self.store.note_upload_error(attachment["sha256"], exc.message_zh, exc.message)
            else:
                self.store.note_upload_error(attachment["sha256"], None)
        return self.report

    def upload(self, sha256_hex: str) -> None:
        """Upload one registered attachment to the end, resuming after drops.

        Raises:
            UploadFailed: the file is gone or changed, the server refuses it, or
                ``max_failures`` attempts in a row failed.
        """
        attachment = next((a for a in self.store.attachments() if a["sha256"] == sha256_hex), None)
        if attachment is None:
            raise UploadFailed(
                f"no attachment {sha256_hex} on this device", message_zh="设备上没有该照片"
            )
        path, size = Path(attachment["path"]), int(attachment["size"])
        offset = self._attempt(lambda: self._announce(sha256_hex, size))
        if offset >= size:
            self.report.already_held.append(sha256_hex)
            self.store.confirm_upload_offset(sha256_hex, size)
            return
        if offset:
            self.report.resumed_from[sha256_hex] = offset
        while offset < size:
            chunk = _read(path, offset, self.chunk_bytes)
            start = offset
            offset = self._attempt(
                lambda start=start, chunk=chunk: self._send_chunk(sha256_hex, start, chunk),
                recover=lambda: self._confirmed(sha256_hex),
            )
            self.store.confirm_upload_offset(sha256_hex, offset)
            if self.on_chunk is not None:
                self.on_chunk(sha256_hex, offset, size)
        self.report.uploaded.append(sha256_hex)

    # --- requests ------------------------------------------------------------------------

    def _announce(self, sha256_hex: str, size: int) -> int:
        body = json.dumps(
            {"sha256": sha256_hex, "size": size, "content_type": "image/jpeg"}
        ).encode()
        response = self._signed("POST", UPLOADS_PATH, sha256_hex, "0", body)
        if response.status in (200, 201):
            status = response.json()
            return size if status.get("complete") else int(status["offset"])
        raise self._refusal(response)

    def _confirmed(self, sha256_hex: str) -> int:
        response = self._signed("GET", f"{UPLOADS_PATH}/{sha256_hex}", sha256_hex, "", b"")
        if response.status == 200:
            status = response.json()
            return int(status["size"]) if status.get("complete") else int(status["offset"])
        raise self._refusal(response)

    def _send_chunk(self, sha256_hex: str, offset: int, chunk: bytes) -> int:
        checksum = base64.b64encode(hashlib.sha256(chunk).digest()).decode("ascii")
        # Counted before sending: a chunk lost with the link cost its bytes all the same.
        self.report.chunks += 1
        self.report.bytes_sent += len(chunk)
        response = self._signed(
            "PATCH",
            f"{UPLOADS_PATH}/{sha256_hex}",
            sha256_hex,
            str(offset),
            chunk,
            {"Upload-Offset": str(offset), "Upload-Checksum": f"sha256 {checksum}"},
        )
        if response.status == 200:
            status = response.json()
            return int(status["size"]) if status.get("complete") else int(status["offset"])
        error = response.error()
        if error.server_code == "upload_offset_mismatch" and "offset" in error.details:
            # The server confirmed another offset (a chunk landed though its answer was lost).
            return int(error.details["offset"])
        if error.server_code == "chunk_checksum_mismatch":
            raise _Retry("the chunk arrived damaged")
        raise self._refusal(response)

    def _signed(
        self,
        method: str,
        path: str,
        sha256_hex: str,
        offset: str,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        timestamp = int(self.store.now_ms() / 1000 + self._clock_offset_s)
        message = signature_message(
            method=method,
            path=self._prefix + path,
            sha256=sha256_hex,
            offset=offset,
            body_sha256=hashlib.sha256(body).hexdigest() if body else "",
            timestamp=timestamp,
        )
        signature = base64.b64encode(sign(self._keys.signing, message)).decode("ascii")
        all_headers = {
            "Authorization": f'{SCHEME} device="{self.store.device_id}", ts="{timestamp}", '
            f'sig="{signature}"',
            **(headers or {}),
        }
        if method == "POST":
            all_headers["Content-Type"] = "application/json"
        response = self.transport.request(method, path, body or None, all_headers)
        self._learn_clock(response)
        if response.status == 401 and response.error().server_code == "device_signature_expired":
            raise _Retry("the tablet clock is off; signing again with the server's time")
        if response.status in (429, 503) or response.status >= 500:
            raise _Retry(f"the server is busy (HTTP {response.status})")
        return response

    def _learn_clock(self, response: HttpResponse) -> None:
        """Follow the server's ``Date``: the signature time must be within minutes of it."""
        date = response.headers.get("date")
        if not date:
            return
        try:
            server_s = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            return
        offset = server_s - self.store.now_ms() / 1000
        # The header has 1 s resolution: only a real difference moves the correction.
        if abs(offset - self._clock_offset_s) > 2:
            self._clock_offset_s = offset

    def _refusal(self, response: HttpResponse) -> UploadFailed:
        error = response.error()
        return UploadFailed(
            f"the server refused the upload: {error.message}",
            message_zh=f"服务器拒绝了照片上传：{error.message_zh}",
        )

    def _attempt(self, action: Callable[[], int], recover: Callable[[], int] | None = None) -> int:
        """Run ``action`` until it succeeds, backing off; after a drop, ask ``recover`` first."""
        failures = 0
        self.backoff.reset()
        while True:
            try:
                result = action()
                self.chunk_bytes = min(self._max_chunk, self.chunk_bytes * 2)
                return result
            except (TransportError, _Retry) as exc:
                failures += 1
                self.report.retries += 1
                if isinstance(exc, TransportError):
                    # A smaller chunk has a better chance between two drops.
                    self.chunk_bytes = max(MIN_CHUNK_BYTES, self.chunk_bytes // 2)
                if failures >= self.max_failures:
                    raise UploadFailed(
                        f"gave up after {failures} failed attempts: {exc}",
                        message_zh=f"连续 {failures} 次上传失败，已停止；已确认的部分会保留",
                    ) from None
                self._sleep(self.backoff.next_delay())
                if recover is not None and isinstance(exc, TransportError):
                    try:
                        return recover()
                    except (TransportError, _Retry):
                        continue


class _Retry(Exception):
    """Internal: worth trying again after a pause."""


def _read(path: Path, offset: int, size: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(size)
    except OSError as exc:
        raise UploadFailed(
            f"cannot read {path}: {exc.strerror}", message_zh=f"无法读取照片文件 {path}"
        ) from exc
