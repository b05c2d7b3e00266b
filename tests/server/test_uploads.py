"""Resumable attachment uploads over HTTP, signed by an enrolled device, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.services import uploads
from server.services.context import EXTENSION_KEY
from server.storage import devices as device_store
from server.storage.database import writing
from server.storage.types import utcnow
from sync_protocol.crypto import KeyBundle, generate_device_keys
from tests.server.conftest import add_user, assert_error, login

URL = "/api/v1/uploads"
MAX_BYTES = 64 * 1024
V1 = "530102001201"


class Device:
    """A test tablet: its keys and id, signing each request as the real one would."""

    def __init__(self, client: FlaskClient, device_id: str, keys: KeyBundle) -> None:
        self.client, self.id, self.keys = client, device_id, keys

    def _auth(self, method: str, path: str, sha: str, offset: str, body: bytes, **kw: Any) -> str:
        return uploads.authorization_header(
            self.keys.signing,
            self.id,
            method=method,
            path=path,
            sha256=sha,
            offset=offset,
            body=body,
            **kw,
        )

    def start(
        self,
        content: bytes,
        *,
        sha: str | None = None,
        size: int | None = None,
        content_type: str = "image/jpeg",
    ) -> Any:
        sha = sha or hashlib.sha256(content).hexdigest()
        body = json.dumps(
            {
                "sha256": sha,
                "size": len(content) if size is None else size,
                "content_type": content_type,
            }
        ).encode()
        return self.client.post(
            URL,
            data=body,
            content_type="application/json",
            headers={"Authorization": self._auth("POST", URL, sha, "0", body)},
        )

    def head(self, sha: str) -> Any:
        path = f"{URL}/{sha}"
        return self.client.head(
            path, headers={"Authorization": self._auth("HEAD", path, sha, "", b"")}
        )

    def patch(
        self, sha: str, offset: int, chunk: bytes, *, checksum_of: bytes | None = None
    ) -> Any:
        path = f"{URL}/{sha}"
        digest = hashlib.sha256(chunk if checksum_of is None else checksum_of).digest()
        return self.client.patch(
            path,
            data=chunk,
            content_type="application/offset+octet-stream",
            headers={
                "Authorization": self._auth("PATCH", path, sha, str(offset), chunk),
                "Upload-Offset": str(offset),
                "Upload-Checksum": "sha256 " + base64.b64encode(digest).decode(),
            },
        )


@pytest.fixture
def upload_app(database_url: str, app_on: Any, tmp_path: Path) -> Flask:
    return app_on(
        database_url,
        ATTACHMENTS_DIR=str(tmp_path / "attachments"),
        ATTACHMENT_MAX_BYTES=MAX_BYTES,
    )


def _enrol(app: Flask, device_id: str = "dev-1", scope: str = V1) -> KeyBundle:
    keys = generate_device_keys()
    with app.app_context(), writing():
        device_store.add_device(
            device_id=device_id,
            x25519_public=keys.encryption_public.to_base64(),
            ed25519_public=keys.signing_public.to_base64(),
            scope=scope,
            enrolled_at=utcnow(),
            enrollment_code_id=None,
        )
    return keys


@pytest.fixture
def device(upload_app: Flask) -> Device:
    return Device(upload_app.test_client(), "dev-1", _enrol(upload_app))


def _photo(size: int = 40_000, seed: int = 1) -> bytes:
    return hashlib.shake_256(f"photo-{seed}".encode()).digest(size)


def test_upload_in_chunks_is_stored_under_its_address(upload_app: Flask, device: Device) -> None:
    photo = _photo()
    sha = hashlib.sha256(photo).hexdigest()
    started = device.start(photo)
    assert started.status_code == 201, started.json
    assert started.json == {
        "sha256": sha,
        "size": len(photo),
        "offset": 0,
        "complete": False,
        "content_type": "image/jpeg",
    }
    assert started.headers["Location"] == f"{URL}/{sha}"
    offset = 0
    for start in range(0, len(photo), 16_000):
        reply = device.patch(sha, offset, photo[start : start + 16_000])
        assert reply.status_code == 200, reply.json
        offset = int(reply.headers["Upload-Offset"])
    assert reply.json["complete"] is True and offset == len(photo)
    stored = Path(upload_app.config["ATTACHMENTS_DIR"]) / sha[:2] / sha
    assert stored.read_bytes() == photo
    assert oct(stored.stat().st_mode & 0o777) == "0o600"
    head = device.head(sha)
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(photo))
    again = device.start(photo)
    assert again.status_code == 200 and again.json["complete"] is True


def test_interrupted_upload_resumes_from_the_confirmed_offset(
    upload_app: Flask, device: Device
) -> None:
    photo = _photo(50_000, seed=2)
    sha = hashlib.sha256(photo).hexdigest()
    assert device.start(photo).status_code == 201
    assert device.patch(sha, 0, photo[:10_000]).status_code == 200
    assert device.patch(sha, 10_000, photo[10_000:25_000]).status_code == 200
    # The link drops; a new connection (a new client) asks where to go on from.
    resumed = Device(upload_app.test_client(), device.id, device.keys)
    head = resumed.head(sha)
    assert head.headers["Upload-Offset"] == "25000"
    stale = resumed.patch(sha, 10_000, photo[10_000:25_000])
    error = assert_error(stale, 409, "upload_offset_mismatch")
    assert error["details"]["offset"] == 25_000
    again = resumed.start(photo)
    assert again.status_code == 200 and again.json["offset"] == 25_000
    done = resumed.patch(sha, 25_000, photo[25_000:])
    assert done.status_code == 200 and done.json["complete"] is True
    stored = Path(upload_app.config["ATTACHMENTS_DIR"]) / sha[:2] / sha
    assert stored.read_bytes() == photo


def test_corrupted_chunk_is_refused_and_nothing_is_confirmed(
    upload_app: Flask, device: Device
) -> None:
    photo = _photo(30_000, seed=3)
    sha = hashlib.sha256(photo).hexdigest()
    device.start(photo)
    damaged = bytearray(photo[:15_000])
    damaged[100] ^= 0xFF
    refused = device.patch(sha, 0, bytes(damaged), checksum_of=photo[:15_000])
    assert_error(refused, 422, "chunk_checksum_mismatch")
    assert device.head(sha).headers["Upload-Offset"] == "0"
    assert device.patch(sha, 0, photo[:15_000]).status_code == 200
    assert device.patch(sha, 15_000, photo[15_000:]).json["complete"] is True


def test_final_checksum_is_verified(upload_app: Flask, device: Device) -> None:
    photo, other = _photo(20_000, seed=4), _photo(20_000, seed=5)
    sha = hashlib.sha256(photo).hexdigest()
    device.start(photo)
    assert device.patch(sha, 0, other[:10_000]).status_code == 200
    refused = device.patch(sha, 10_000, other[10_000:])
    error = assert_error(refused, 422, "upload_checksum_mismatch")
    assert error["details"]["offset"] == 0
    assert device.head(sha).headers["Upload-Offset"] == "0"
    root = Path(upload_app.config["ATTACHMENTS_DIR"])
    assert not (root / sha[:2] / sha).exists()
    assert not uploads.partial_path(sha, "dev-1", root).exists()


def test_oversize_uploads_and_chunks_get_413(upload_app: Flask, device: Device) -> None:
    big = _photo(MAX_BYTES + 1, seed=6)
    assert_error(device.start(big), 413, "attachment_too_large")
    photo = _photo(1_000, seed=7)
    sha = hashlib.sha256(photo).hexdigest()
    device.start(photo)
    assert_error(device.patch(sha, 0, photo + b"extra"), 413, "attachment_too_large")


def test_requests_must_be_signed_by_an_active_device(upload_app: Flask, device: Device) -> None:
    photo = _photo(1_000, seed=8)
    sha = hashlib.sha256(photo).hexdigest()
    client = upload_app.test_client()
    assert client.head(f"{URL}/{sha}").status_code == 401
    unsigned = client.get(f"{URL}/{sha}")
    assert_error(unsigned, 401, "device_signature_missing")
    device.start(photo)
    # A signature over another offset does not authorise this chunk.
    path = f"{URL}/{sha}"
    forged = client.patch(
        path,
        data=photo,
        headers={
            "Authorization": device._auth("PATCH", path, sha, "500", photo),
            "Upload-Offset": "0",
            "Upload-Checksum": "sha256 "
            + base64.b64encode(hashlib.sha256(photo).digest()).decode(),
        },
    )
    assert_error(forged, 401, "device_signature_invalid")
    old = client.get(
        path,
        headers={
            "Authorization": device._auth(
                "GET", path, sha, "", b"", timestamp=int(time.time()) - 3600
            )
        },
    )
    assert_error(old, 401, "device_signature_expired")
    stranger = Device(client, "dev-x", generate_device_keys())
    assert_error(stranger.start(photo), 401, "device_unknown")
    with upload_app.app_context(), writing():
        device_store.revoke(device.id, "", utcnow())
    assert_error(device.start(photo), 403, "device_revoked")


def test_missing_checksum_and_offset_are_400(upload_app: Flask, device: Device) -> None:
    photo = _photo(1_000, seed=9)
    sha = hashlib.sha256(photo).hexdigest()
    device.start(photo)
    path = f"{URL}/{sha}"
    no_checksum = device.client.patch(
        path,
        data=photo,
        headers={
            "Authorization": device._auth("PATCH", path, sha, "0", photo),
            "Upload-Offset": "0",
        },
    )
    assert_error(no_checksum, 400, "chunk_checksum_missing")
    no_offset = device.client.patch(
        path, data=photo, headers={"Authorization": device._auth("PATCH", path, sha, "", photo)}
    )
    assert_error(no_offset, 400, "validation_failed")
    assert_error(device.client.get(f"{URL}/{'0' * 63}"), 400, "validation_failed")


def test_lost_bytes_on_disk_resume_from_what_is_there(upload_app: Flask, device: Device) -> None:
    photo = _photo(30_000, seed=10)
    sha = hashlib.sha256(photo).hexdigest()
    device.start(photo)
    device.patch(sha, 0, photo[:20_000])
    part = uploads.partial_path(sha, "dev-1", Path(upload_app.config["ATTACHMENTS_DIR"]))
    os.truncate(part, 12_000)
    assert device.start(photo).json["offset"] == 12_000
    assert device.patch(sha, 12_000, photo[12_000:]).json["complete"] is True


def test_purge_removes_abandoned_uploads_only(upload_app: Flask, device: Device) -> None:
    done, waiting = _photo(2_000, seed=11), _photo(2_000, seed=12)
    done_sha, waiting_sha = (hashlib.sha256(p).hexdigest() for p in (done, waiting))
    device.start(done)
    device.patch(done_sha, 0, done)
    device.start(waiting)
    device.patch(waiting_sha, 0, waiting[:500])
    root = Path(upload_app.config["ATTACHMENTS_DIR"])
    with upload_app.app_context():
        context = upload_app.extensions[EXTENSION_KEY]
        assert uploads.purge_abandoned(context, timedelta(hours=72)) == 0
        later = utcnow() + timedelta(hours=73)
        assert uploads.purge_abandoned(context, timedelta(hours=72), now=later) == 1
    assert not uploads.partial_path(waiting_sha, "dev-1", root).exists()
    assert (root / done_sha[:2] / done_sha).exists()
    assert device.head(waiting_sha).status_code == 404
    assert device.head(done_sha).status_code == 200


def test_a_lost_stored_file_is_uploaded_again(upload_app: Flask, device: Device) -> None:
    photo = _photo(3_000, seed=13)
    sha = hashlib.sha256(photo).hexdigest()
    device.start(photo)
    device.patch(sha, 0, photo)
    (Path(upload_app.config["ATTACHMENTS_DIR"]) / sha[:2] / sha).unlink()
    again = device.start(photo)
    assert again.json["complete"] is False and again.json["offset"] == 0
    assert device.patch(sha, 0, photo).json["complete"] is True


def test_two_connections_sending_the_same_chunk_confirm_it_once(
    upload_app: Flask, device: Device
) -> None:
    photo = _photo(40_000, seed=14)
    sha = hashlib.sha256(photo).hexdigest()
    device.start(photo)
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def send() -> None:
        tablet = Device(upload_app.test_client(), device.id, device.keys)
        barrier.wait()
        statuses.append(tablet.patch(sha, 0, photo[:20_000]).status_code)

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 409]
    assert device.head(sha).headers["Upload-Offset"] == "20000"
    assert device.patch(sha, 20_000, photo[20_000:]).json["complete"] is True
    stored = Path(upload_app.config["ATTACHMENTS_DIR"]) / sha[:2] / sha
    assert stored.read_bytes() == photo


def test_admins_view_completed_photos_of_their_area(upload_app: Flask, device: Device) -> None:
    photo = JPEG_MAGIC + _photo(5_000, seed=15)
    sha = hashlib.sha256(photo).hexdigest()
    device.start(photo)
    device.patch(sha, 0, photo[:1_000])
    add_user(upload_app, "admin")
    add_user(upload_app, "near", role="township_reviewer", area="530102001")
    add_user(upload_app, "far", role="township_reviewer", area="530102002")
    client = upload_app.test_client()
    admin, near, far = (login(client, name) for name in ("admin", "near", "far"))
    unfinished = client.get(f"{URL}/{sha}/content", headers=admin)
    assert_error(unfinished, 404, "attachment_not_found")
    device.patch(sha, 1_000, photo[1_000:])
    for headers in (near, admin):
        shown = client.get(f"{URL}/{sha}/content", headers=headers)
        try:
            assert shown.status_code == 200 and shown.data == photo
            assert shown.headers["Content-Type"] == "image/jpeg"
        finally:
            shown.close()  # send_file streams from an open file
    assert_error(client.get(f"{URL}/{sha}/content", headers=far), 404, "attachment_not_found")
    assert_error(client.get(f"{URL}/{sha}/content"), 401, "missing_token")


JPEG_MAGIC = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("content", "claimed", "served"),
    [
        (b"<html><script>alert(document.cookie)</script></html>", "text/html", None),
        (b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>", "image/svg+xml", None),
        (JPEG_MAGIC + b"photo bytes", "text/html", "image/jpeg"),
        (PNG_MAGIC + b"photo bytes", "application/javascript", "image/png"),
    ],
)
def test_attachments_are_served_as_what_they_are_never_as_the_device_claims(
    upload_app: Flask, device: Device, content: bytes, claimed: str, served: str | None
) -> None:
    """Leak 9: the device-chosen content type is never served; the bytes decide."""
    sha = hashlib.sha256(content).hexdigest()
    assert device.start(content, content_type=claimed).status_code in (200, 201)
    assert device.patch(sha, 0, content).status_code in (200, 204)
    add_user(upload_app, "admin")
    client = upload_app.test_client()
    shown = client.get(f"{URL}/{sha}/content", headers=login(client, "admin"))
    try:
        assert shown.status_code == 200 and shown.data == content
        assert shown.headers["Content-Type"] == (served or "application/octet-stream")
        assert shown.headers["Content-Disposition"].startswith("attachment;")
        assert shown.headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'none'" in shown.headers["Content-Security-Policy"]
    finally:
        shown.close()


def test_every_response_of_the_admin_origin_carries_nosniff_and_a_csp(upload_app: Flask) -> None:
    response = upload_app.test_client().get("/api/v1/openapi.json")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    policy = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy


def test_a_full_disk_is_507_with_retry_after_and_logged_once(
    upload_app: Flask, device: Device, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Leak 11: ENOSPC while writing a chunk (a fault-injected write error) is no 500."""
    import errno
    import logging

    from server import errors

    photo = _photo(60_000, seed=31)
    sha = hashlib.sha256(photo).hexdigest()
    device.start(photo)

    def full(path: Path, offset: int, chunk: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(uploads, "_write_chunk", full)
    monkeypatch.setattr(errors, "_storage_full_logged_at", None)
    caplog.set_level(logging.WARNING)
    for _ in range(50):
        response = device.patch(sha, 0, photo[:1_000])
        error = assert_error(response, 507, "storage_full")
        assert int(response.headers["Retry-After"]) > 0
        assert error["details"]["retry_after"] == int(response.headers["Retry-After"])
    logged = [r for r in caplog.records if "disk" in r.getMessage().lower() or r.exc_info]
    assert len(logged) == 1, [r.getMessage() for r in caplog.records]
    assert logged[0].exc_info is None  # one line, no traceback per request
    monkeypatch.undo()
    # Space again: the upload goes on from what was confirmed (nothing).
    assert device.head(sha).headers["Upload-Offset"] == "0"
    assert device.patch(sha, 0, photo).status_code == 200


def test_uploads_are_scoped_per_device_not_shared_by_hash(upload_app: Flask) -> None:
    """Leak 8: a device of another township that knows a hash cannot see, spoil, reset or
    squat another device's upload, nor make the photo visible in its own area."""
    owner = Device(upload_app.test_client(), "dev-1", _enrol(upload_app))
    other = Device(
        upload_app.test_client(), "dev-9", _enrol(upload_app, "dev-9", scope="530102002201")
    )
    photo = JPEG_MAGIC + _photo(20_000, seed=41)
    sha = hashlib.sha256(photo).hexdigest()
    # Squatting: announcing the hash first with a wrong size does not block the owner.
    assert other.start(photo, size=len(photo) + 1).status_code == 201
    assert owner.start(photo).status_code == 201
    assert owner.patch(sha, 0, photo[:5_000]).json["offset"] == 5_000
    # The other device sees only its own (empty) upload: no status, bytes or reset of the owner's.
    assert other.head(sha).headers["Upload-Offset"] == "0"
    assert_error(other.patch(sha, 5_000, photo[5_000:10_000]), 409, "upload_offset_mismatch")
    other.patch(sha, 0, b"wrong bytes")
    assert owner.head(sha).headers["Upload-Offset"] == "5000"
    assert owner.patch(sha, 5_000, photo[5_000:]).json["complete"] is True
    # Only the owner's area sees the photo: knowing the hash gives the other area nothing.
    add_user(upload_app, "near", role="township_reviewer", area="530102001")
    add_user(upload_app, "far", role="township_reviewer", area="530102002")
    client = upload_app.test_client()
    assert_error(
        client.get(f"{URL}/{sha}/content", headers=login(client, "far")),
        404,
        "attachment_not_found",
    )
    shown = client.get(f"{URL}/{sha}/content", headers=login(client, "near"))
    try:
        assert shown.status_code == 200 and shown.data == photo
    finally:
        shown.close()
    # A device that announces a stored hash must still send the bytes itself.
    third = Device(
        upload_app.test_client(), "dev-8", _enrol(upload_app, "dev-8", scope="530102002202")
    )
    started = third.start(photo)
    assert started.json["complete"] is False and started.json["offset"] == 0
