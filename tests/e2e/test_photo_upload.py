"""A 2 MB house photo through a link that keeps dropping arrives whole, checksum verified.

The photo is registered on the tablet by content (``sha256:<hex>``), referenced from a housing
record, and uploaded in chunks through the fault proxy, which resets each connection after a
random number of bytes. After every drop the device asks the server for the confirmed offset
and goes on from there; the server fsyncs each chunk, checks each chunk's checksum and, at the
end, the whole file's SHA-256 against its address. The stored file is byte-for-byte the photo.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from bench.harness.faultproxy import FaultProxy, LinkProfile
from forms.instruments.samples import sample_household
from tests.e2e.conftest import VILLAGE, CountyServer, new_device, server_record
from village_client_stub.records import RecordEditor
from village_client_stub.simulator import AdminSession
from village_client_stub.sync_client import Backoff, SyncClient
from village_client_stub.transport import HttpTransport
from village_client_stub.uploads import UploadClient

PHOTO_BYTES = 2 * 1024 * 1024


def test_a_2mb_photo_through_a_cutting_link_arrives_whole(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    store = new_device(county, admin, tmp_path / "tablet.db")
    photo = tmp_path / "house-front.jpg"
    photo.write_bytes(random.Random(5301).randbytes(PHOTO_BYTES))
    digest = hashlib.sha256(photo.read_bytes()).hexdigest()

    address = store.add_attachment(photo)
    assert address == f"sha256:{digest}"
    house = sample_household(21, village_code=VILLAGE)["housing_safety"]
    house["photos"] = [{"photo": address, "caption": "正面"}]
    record_id = (
        RecordEditor(store)
        .fill("housing_safety", house, household={"village_code": VILLAGE, "household_no": "0021"})
        .record_id
    )
    SyncClient(store).sync()
    assert server_record(admin, record_id)["data"]["photos"][0]["photo"] == address

    host, port = county.url.removeprefix("http://").split(":")
    # Connections die after 100-400 KB: no single connection can carry the whole photo.
    profile = LinkProfile(delay_ms=5, cut_after_bytes=(100_000, 400_000), seed=7)
    confirmed: list[int] = []
    with FaultProxy((host, int(port)), profile) as proxy:
        uploader = UploadClient(
            store,
            HttpTransport(f"http://127.0.0.1:{proxy.port}", timeout=20),
            chunk_bytes=128 * 1024,
            max_failures=30,
            backoff=Backoff(base_s=0.05, cap_s=0.2),
            on_chunk=lambda _sha, offset, _size: confirmed.append(offset),
        )
        report = uploader.upload_all()
        cuts = proxy.counters().cuts

    assert cuts >= 3
    assert report.failed == {}
    assert report.uploaded == [digest]
    assert report.retries >= 3
    # Offsets only went forward, and the upload resumed instead of starting over: the bytes
    # sent stay well under twice the photo even though the link dropped again and again.
    assert confirmed == sorted(confirmed) and confirmed[-1] == PHOTO_BYTES
    assert PHOTO_BYTES <= report.bytes_sent < 2 * PHOTO_BYTES
    assert store.attachments(unfinished=True) == []
    stored = county.log_path.parent / "attachments" / digest[:2] / digest
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest
    assert stored.read_bytes() == photo.read_bytes()

    # A second run finds nothing to do; uploading the same photo again is answered "held".
    assert UploadClient(store).upload_all().to_dict()["uploaded"] == []
    again = UploadClient(store)
    again.upload(digest)
    assert again.report.already_held == [digest]
    store.close()
