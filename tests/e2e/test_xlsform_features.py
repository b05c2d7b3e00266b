"""An ODK XLSForm with a computed ``repeat_count``, a ``choice_filter`` and a
``select_one_from_file`` goes from the admin's upload to a tablet and back (issue 19).

The workbook and its villages.csv are uploaded to a real county server (multipart, as the admin
page sends them), published, downloaded by an enrolled ``village-device``, filled there, synced,
and the values show on the server; a record whose village is not one of the chosen county's, and
with one row too few, is refused on the tablet with both reasons and kept as a draft.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import requests
from pyxform.xls2json_backends import md_table_to_workbook

from tests.e2e.conftest import VILLAGE, CountyServer, cli_json, device_cli, server_record
from village_client_stub.simulator import AdminSession

FORM = """
| survey |
|        | type                              | name    | label::中文 (zh) | choice_filter    | repeat_count |
|        | select_one county                 | county  | 县               |                  |              |
|        | select_one_from_file villages.csv | village | 村               | county=${county} |              |
|        | integer                           | size    | 人数             |                  |              |
|        | begin_repeat                      | member  | 成员             |                  | ${size}      |
|        | text                              | mname   | 姓名             |                  |              |
|        | end_repeat                        |         |                  |                  |              |
| choices |
|         | list_name | name | label::中文 (zh) |
|         | county    | c1   | 一县             |
|         | county    | c2   | 二县             |
| settings |
|          | form_id        | version    | form_title |
|          | Village-Pick.v | 2026112501 | 选村       |
"""
VILLAGES = "name,label::中文 (zh),county\nv1,上寨,c1\nv2,下寨,c2\nv3,河边,c1\n"


# SQLite only: the storage paths are the ones every e2e test covers on both backends; what is
# new here is the form, and the suite's time budget is shared.
@pytest.mark.parametrize("county", ["sqlite"], indirect=True)
def test_a_cascading_repeat_counted_form_from_files_is_filled_on_the_tablet_and_synced(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    workbook = io.BytesIO()
    md_table_to_workbook(FORM).save(workbook)
    uploaded = requests.post(
        f"{county.url}/api/v1/forms",
        files=[
            ("file", ("village_pick.xlsx", workbook.getvalue())),
            ("attachment", ("villages.csv", VILLAGES.encode())),
        ],
        headers=admin.headers,
        timeout=30,
    )
    assert uploaded.status_code == 201, uploaded.text
    form_id = uploaded.json()["form_id"]
    assert form_id == "village_pick_v"  # Village-Pick.v, kept lower-case with _
    version = uploaded.json()["version"]
    admin.post(f"/api/v1/forms/{form_id}/versions/{version}/publish", {})

    db = tmp_path / "tablet.db"
    device_cli(db, "init")
    enrolled = cli_json(
        device_cli(db, "enroll", "--server", county.url, "--code", admin.issue_code(VILLAGE))
    )
    assert f"{form_id}@{version}" in enrolled["forms_on_device"]

    def fill(household: str, data: dict) -> dict:
        record_file = tmp_path / f"{household}.json"
        record_file.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        return cli_json(
            device_cli(
                db,
                "fill",
                form_id,
                "--household",
                f"{VILLAGE}/{household}",
                "--from",
                str(record_file),
            )
        )

    rows = [{"_id": "m1", "mname": "李秀英"}, {"_id": "m2", "mname": "王强"}]
    good = fill("0001", {"county": "c1", "village": "v3", "size": 2, "member": rows})
    assert good["ok"], good
    synced = cli_json(device_cli(db, "sync"))
    assert synced["ok"] and synced["pending_ops"] == 0, synced
    on_server = server_record(admin, good["record_id"])
    assert on_server["data"] == {"county": "c1", "village": "v3", "size": 2, "member": rows}

    # The tablet validates with the same engine: a village of the other county, one row short.
    wrong = fill("0002", {"county": "c1", "village": "v2", "size": 3, "member": rows})
    assert not wrong["ok"] and wrong["error"]["code"] == "record_invalid"
    codes = sorted((i["code"], i["path"]) for i in wrong["error"]["issues"])
    assert codes == [("choice", "village"), ("rows", "member")]
    assert wrong["error"]["draft_id"]  # nothing typed is lost: kept as a draft to correct
