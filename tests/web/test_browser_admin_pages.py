"""The admin pages added for issue 14's remaining work, in a real browser against a real
server and a real ``village-device``: area names loaded from a CSV, a tablet's outbox file
imported on the devices page, the household found by a member's name, a background export
watched until its link appears. Screenshots at 360 px and 1280 px (``tests/artifacts/browser``),
and no page wider than a 360 px screen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.harness.county_server import CountyServer
from forms.instruments.samples import sample_household
from tests.e2e.conftest import VILLAGE, cli_json, device_cli
from tests.web.admin_session import signed_in_admin

TOWNSHIP = VILLAGE[:9]


def test_area_names_outbox_import_search_and_background_export_in_the_browser(
    chromium: Any, county: CountyServer, tmp_path: Path
) -> None:
    # A tablet far from any link fills the household roster and writes its outbox to a file.
    roster = sample_household(5, village_code=VILLAGE)["household_roster"]
    head, number = roster["members"][0], roster["household_no"]
    tablet = tmp_path / "tablet.db"
    assert cli_json(device_cli(tablet, "init"))["ok"]
    code = county.admin().issue_code(VILLAGE)
    assert cli_json(device_cli(tablet, "enroll", "--server", county.url, "--code", code))["ok"]
    record = tmp_path / "roster.json"
    record.write_text(json.dumps(roster, ensure_ascii=False), encoding="utf-8")
    filled = device_cli(
        tablet,
        "fill",
        "household_roster",
        "--household",
        f"{VILLAGE}/{number}",
        "--from",
        str(record),
    )
    assert filled.returncode == 0, filled.stdout + filled.stderr
    outbox = tmp_path / "tablet-outbox.vsync"
    assert cli_json(device_cli(tablet, "export-outbox", str(outbox)))["ops"] == 1

    with signed_in_admin(chromium, county, accept_downloads=True) as admin:
        page, base, shots, errors = admin.page, admin.base, admin.shots, admin.errors

        # Names for the township and the village, from a CSV as the county office keeps them.
        names = tmp_path / "names.csv"
        names.write_text(f"代码,名称\n{TOWNSHIP},太平镇\n{VILLAGE},小寨村\n", encoding="utf-8")
        page.goto(base + "/areas")
        page.set_input_files("input[name=table]", str(names))
        page.click("form[action='/areas/import'] button")
        assert "已导入 2 个名称" in page.inner_text("main")
        shots.take("area-names")

        # The township office imports the tablet's file; a second import changes nothing.
        page.goto(base + "/devices")
        page.set_input_files("input[name=outbox]", str(outbox))
        page.click("form[action='/devices/outbox'] button")
        assert "新确认 1 项" in page.inner_text("#outbox-import")
        assert f"小寨村（{VILLAGE}）" in page.inner_text("main")
        shots.take("devices-outbox-import")
        page.set_input_files("input[name=outbox]", str(outbox))
        page.click("form[action='/devices/outbox'] button")
        assert "已导入过，未做任何改动" in page.inner_text("#outbox-import")

        # The household is found by a member's name (the ID shown whole to a county admin).
        page.goto(base + "/households")
        page.fill("input[name=name]", head["name"])
        page.click("main form button[type=submit]")
        results = page.inner_text("#search-results")
        assert number in results and head["name"] in results and f"小寨村（{VILLAGE}）" in results
        shots.take("household-search")
        page.click("#search-results a")
        assert f"小寨村（{VILLAGE}）" in page.inner_text("main")

        # A background export: the page reloads itself until the link appears.
        page.goto(base + "/exports")
        page.click("form[data-form=household_roster] button:has-text('后台导出')")
        page.wait_for_selector("#export-job[data-status=done]", timeout=60_000)
        assert "已处理 1 / 1 条记录" in page.inner_text("#export-job")
        shots.take("export-job")
        with page.expect_download() as download:
            page.click("#export-download")
        assert download.value.suggested_filename == "household_roster.xlsx"

        # The tablet hears the ack on its next ordinary sync.
        synced = cli_json(device_cli(tablet, "sync"))
        assert synced["ok"] and synced["ops_acked"] == 1 and synced["pending_ops"] == 0
        assert errors == []
