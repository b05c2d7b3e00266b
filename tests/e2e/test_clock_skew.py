"""A tablet whose clock runs a year ahead: its edits are accepted and flagged, never silently win.

Tablet F's wall clock is 365 days in the future, so every stamp it issues is far ahead of the
server's time. Alone, its edit is applied and marked suspect. Racing a correct tablet's later
edit of the same ``lww`` field, F's stamp would win by its wrong clock alone — so the server
turns the race into a ``suspect_clock`` conflict for review instead, and both tablets see it.
Its photos still upload: the upload signature's time follows the server's clock.
"""

from __future__ import annotations

import random
from pathlib import Path

from forms.instruments.samples import sample_household
from sync_protocol.clock import wall_clock_ms
from tests.e2e.conftest import VILLAGE, CountyServer, new_device, server_record
from village_client_stub.records import RecordEditor
from village_client_stub.simulator import AdminSession
from village_client_stub.sync_client import Backoff, SyncClient
from village_client_stub.uploads import UploadClient

YEAR_MS = 365 * 24 * 3600 * 1000


def _year_ahead() -> int:
    return wall_clock_ms() + YEAR_MS


def test_a_year_ahead_clock_is_accepted_flagged_and_does_not_win(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    honest = new_device(county, admin, tmp_path / "honest.db")
    house = sample_household(11, village_code=VILLAGE)["housing_safety"]
    record_id = (
        RecordEditor(honest)
        .fill("housing_safety", house, household={"village_code": VILLAGE, "household_no": "0011"})
        .record_id
    )
    SyncClient(honest).sync()

    future = new_device(county, admin, tmp_path / "future.db", now_ms=_year_ahead)
    assert future.record(record_id).data == honest.record(record_id).data

    # Alone, the future tablet's edit is accepted — and flagged.
    RecordEditor(future).edit(record_id, ["floor_area=88.8"])
    alone = SyncClient(future).sync()
    assert alone.status_counts == {"applied": 1}
    fields = server_record(admin, record_id)["fields"]
    assert fields["floor_area"]["suspect"] is True
    assert fields["floor_area"]["device"] == future.device_id
    assert server_record(admin, record_id)["data"]["floor_area"] == 88.8

    # A race on an lww field: the honest tablet edits later in real time, but the future
    # tablet's stamp is a year "newer". It must not win silently.
    SyncClient(honest).sync()
    RecordEditor(future).edit(record_id, ["structure=轻钢"])
    RecordEditor(honest).edit(record_id, ["structure=钢筋混凝土"])
    SyncClient(future).sync()
    raced = SyncClient(honest).sync()
    assert raced.status_counts == {"conflict": 1}
    (conflict_id,) = raced.conflicts

    detail = admin.get(f"/api/v1/conflicts/{conflict_id}")
    assert (detail["kind"], detail["path"], detail["reason"]) == (
        "field",
        "structure",
        "suspect_clock",
    )
    suspect = {c["device"]: c["suspect"] for c in detail["candidates"]}
    assert suspect == {future.device_id: True, honest.device_id: False}
    on_server = server_record(admin, record_id)
    assert on_server["open_conflicts"] == [conflict_id]
    assert on_server["fields"]["structure"]["status"] == "conflict"

    SyncClient(future).sync()
    for tablet in (honest, future):
        assert [c["conflict_id"] for c in tablet.conflicts("open")] == [conflict_id]
        assert tablet.record(record_id).data == on_server["data"]

    # Its photo still uploads: the signed request time follows the server's Date header.
    photo = tmp_path / "roof.jpg"
    photo.write_bytes(random.Random(9).randbytes(150_000))
    digest = future.add_attachment(photo).removeprefix("sha256:")
    uploads = UploadClient(future, backoff=Backoff(base_s=0.05, cap_s=0.1)).upload_all()
    assert uploads.uploaded == [digest] and uploads.failed == {}
    assert uploads.retries >= 1  # the first, year-ahead signature was refused as expired
    stored = county.log_path.parent / "attachments" / digest[:2] / digest
    assert stored.read_bytes() == photo.read_bytes()
    honest.close()
    future.close()
