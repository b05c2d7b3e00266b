"""Kill points during a photo upload (part of the "kill points" proof of issue 16): the device
process is killed (SIGKILL) in the middle of uploading a 2 MB photo, then the server process is
killed twice between chunks and restarted on the same database and folders; the upload resumes
from the offset the server confirmed each time and the stored file is byte-identical.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from bench.harness.county_server import REPO
from forms.instruments.samples import sample_household
from tests.e2e.conftest import VILLAGE, CountyServer, new_device
from tests.e2e.test_kill_points import restart
from village_client_stub.records import RecordEditor
from village_client_stub.simulator import AdminSession
from village_client_stub.store import DeviceStore
from village_client_stub.sync_client import Backoff, SyncClient
from village_client_stub.uploads import UploadClient

PHOTO_BYTES = 2 * 1024 * 1024
CHUNK = 128 * 1024

#: The device side, as its own process: upload with 128 KiB chunks, print each confirmed offset.
UPLOADER = """
import sys
from pathlib import Path
from village_client_stub.store import DeviceStore
from village_client_stub.uploads import UploadClient
with DeviceStore.open(Path(sys.argv[1])) as store:
    UploadClient(store, chunk_bytes=int(sys.argv[2]),
                 on_chunk=lambda _s, offset, _n: print(offset, flush=True)).upload_all()
"""


def test_device_and_server_killed_during_a_photo_upload_resume_to_identical_bytes(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    db = tmp_path / "tablet.db"
    store = new_device(county, admin, db)
    photo = tmp_path / "house-front.jpg"
    photo.write_bytes(random.Random(1616).randbytes(PHOTO_BYTES))
    digest = hashlib.sha256(photo.read_bytes()).hexdigest()
    address = store.add_attachment(photo)
    house = sample_household(22, village_code=VILLAGE)["housing_safety"]
    house["photos"] = [{"photo": address, "caption": "正面"}]
    where = {"village_code": VILLAGE, "household_no": "0022"}
    RecordEditor(store).fill("housing_safety", house, household=where)
    SyncClient(store).sync()
    store.close()

    # 1. The device process dies after the server confirmed 4 chunks.
    device = subprocess.Popen(
        [sys.executable, "-c", UPLOADER, str(db), str(CHUNK)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert device.stdout is not None
    seen = [int(device.stdout.readline()) for _ in range(4)]
    os.kill(device.pid, signal.SIGKILL)
    device.wait(30)
    device.stdout.close()
    assert device.returncode == -signal.SIGKILL and seen[-1] == 4 * CHUNK

    # 2. The device starts again; the server is killed and restarted after chunks 6 and 10.
    server_kills: list[int] = []

    def on_chunk(_sha: str, offset: int, _size: int) -> None:
        confirmed.append(offset)
        if offset in (6 * CHUNK, 10 * CHUNK):
            os.kill(county.process.pid, signal.SIGKILL)
            county.process.wait(30)
            server_kills.append(offset)
            restart(county)

    confirmed: list[int] = []
    with DeviceStore.open(db) as store:
        uploader = UploadClient(
            store,
            chunk_bytes=CHUNK,
            max_failures=30,
            backoff=Backoff(base_s=0.05, cap_s=0.5),
            on_chunk=on_chunk,
        )
        report = uploader.upload_all()
        assert report.failed == {} and report.uploaded == [digest]
        assert store.attachments(unfinished=True) == []
    # Resumed where the killed device left off, never from 0.
    assert confirmed[0] > seen[-1] and confirmed == sorted(confirmed)
    assert confirmed[-1] == PHOTO_BYTES
    assert report.bytes_sent <= PHOTO_BYTES - seen[-1] + 2 * CHUNK
    stored = county.log_path.parent / "attachments" / digest[:2] / digest
    assert stored.read_bytes() == photo.read_bytes()
    print(
        f"photo upload: device SIGKILLed at {seen[-1]} B, server SIGKILLed at {server_kills} B "
        f"and restarted; resumed each time, {report.bytes_sent} B sent after the device kill, "
        f"{PHOTO_BYTES} B stored byte-identical"
    )
    assert len(server_kills) == 2
