"""A photo attached on the tablet reaches the server even if the original file is deleted."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from forms.instruments.samples import sample_household
from tests.e2e.conftest import VILLAGE, CountyServer, cli_json, device_cli, new_device
from village_client_stub.records import RecordEditor
from village_client_stub.simulator import AdminSession


def test_a_photo_deleted_after_attaching_still_uploads(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    db = tmp_path / "tablet.db"
    store = new_device(county, admin, db)
    photo = tmp_path / "house-front.jpg"
    content = random.Random(77).randbytes(300_000)
    photo.write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    address = store.add_attachment(photo)
    house = sample_household(22, village_code=VILLAGE)["housing_safety"]
    house["photos"] = [{"photo": address, "caption": "正面"}]
    RecordEditor(store).fill(
        "housing_safety", house, household={"village_code": VILLAGE, "household_no": "0022"}
    )
    store.close()
    photo.unlink()

    synced = cli_json(device_cli(db, "sync"))
    assert synced["attachments"]["uploaded"] == [digest]
    assert cli_json(device_cli(db, "status"))["photos_unfinished"] == []
    stored = county.log_path.parent / "attachments" / digest[:2] / digest
    assert stored.read_bytes() == content
