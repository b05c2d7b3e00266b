"""Two tablets edit the same household offline; the county resolves the one true conflict.

Tablet A records a D-grade house and syncs; tablet B (same village) downloads it. Both go
offline: A changes the structure, B the floor area (different ``lww`` fields: they merge), and
both change the renovation method (a ``review`` field: a conflict for the county). After both
sync, both tablets hold both disjoint edits and see the open conflict; an admin resolves it
through the API, and after their next sync both tablets hold the resolved value and no open
conflict.
"""

from __future__ import annotations

from pathlib import Path

from forms.instruments.samples import problem_household
from tests.e2e.conftest import VILLAGE, CountyServer, new_device, server_record
from village_client_stub.records import RecordEditor
from village_client_stub.simulator import AdminSession
from village_client_stub.sync_client import SyncClient


def test_disjoint_fields_merge_and_a_review_conflict_is_resolved_for_both(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    tablet_a = new_device(county, admin, tmp_path / "a.db")
    house = problem_household("dangerous_house", 3, village_code=VILLAGE)["housing_safety"]
    assert house["renovation_method"] == "拆除重建"
    created = RecordEditor(tablet_a).fill(
        "housing_safety", house, household={"village_code": VILLAGE, "household_no": "0042"}
    )
    record_id = created.record_id
    SyncClient(tablet_a).sync()

    tablet_b = new_device(county, admin, tmp_path / "b.db")
    assert tablet_b.record(record_id).data == tablet_a.record(record_id).data

    # Offline on both tablets (no sync in between).
    editor_a, editor_b = RecordEditor(tablet_a), RecordEditor(tablet_b)
    editor_a.edit(record_id, ["structure=钢筋混凝土"])
    editor_a.edit(record_id, ["renovation_method=原址翻建"])
    editor_b.edit(record_id, ["floor_area=120.5"])
    editor_b.edit(record_id, ["renovation_method=选址新建"])

    report_a = SyncClient(tablet_a).sync()
    assert report_a.status_counts == {"applied": 2}
    report_b = SyncClient(tablet_b).sync()
    assert report_b.status_counts == {"applied": 1, "conflict": 1}
    (conflict_id,) = report_b.conflicts
    SyncClient(tablet_a).sync()  # A downloads B's edits

    for tablet in (tablet_a, tablet_b):
        data = tablet.record(record_id).data
        assert data["structure"] == "钢筋混凝土"  # A's edit
        assert data["floor_area"] == 120.5  # B's edit
        assert [c["conflict_id"] for c in tablet.conflicts("open")] == [conflict_id]

    listed = admin.get(f"/api/v1/conflicts?village={VILLAGE}")
    assert listed["total"] == 1
    (item,) = listed["items"]
    assert item["id"] == conflict_id
    assert (item["kind"], item["path"], item["status"]) == ("field", "renovation_method", "open")
    detail = admin.get(f"/api/v1/conflicts/{conflict_id}")
    assert detail["reason"] == "review"
    assert detail["base"] == "拆除重建"
    assert {detail["mine"], detail["theirs"]} == {"原址翻建", "选址新建"}
    by_device = {c["device"]: c for c in detail["candidates"]}
    chosen = by_device[tablet_a.device_id]
    assert chosen["value"] == "原址翻建"
    assert server_record(admin, record_id)["open_conflicts"] == [conflict_id]

    resolved = admin.post(
        f"/api/v1/conflicts/{conflict_id}/resolve", {"candidate": chosen["stamp"]}
    )
    assert resolved["status"] == "resolved"

    for tablet in (tablet_b, tablet_a):
        SyncClient(tablet).sync()
        assert tablet.record(record_id).data["renovation_method"] == "原址翻建"
        assert tablet.conflicts("open") == []
    on_server = server_record(admin, record_id)
    assert on_server["open_conflicts"] == []
    assert on_server["data"] == tablet_a.record(record_id).data == tablet_b.record(record_id).data
    assert admin.get(f"/api/v1/conflicts?village={VILLAGE}")["total"] == 0
    tablet_a.close()
    tablet_b.close()
