"""The county admin's whole job in a real browser, against a real server and real tablets.

Debian's Chromium (``/usr/bin/chromium``) driven by Playwright for Python — never a downloaded
browser. Without Chromium the test is skipped on a developer machine and fails with ``CI=true``
(``make install-browser`` installs it as root). The story: log in with the password printed at
first start and change it; upload and publish an XLSForm; issue an enrolment code and read it
back from the QR image; enrol two real ``village-device`` tablets with codes from the page, fill
and sync a household; see it on the dashboard and on the household page; resolve the tablets'
conflict in the browser and see both tablets receive the outcome; download an XLSX export and
check its cells. Screenshots at 360 px and 1280 px go to ``tests/artifacts/browser/``, and at
360 px no page may be wider than the screen.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import openpyxl

from bench.harness.county_server import CountyServer
from forms.instruments.samples import problem_household
from tests.e2e.conftest import VILLAGE, cli_json, device_cli
from tests.web.admin_session import ARTIFACTS, Shots
from tests.web.qr import read_qr
from tests.web.xlsform_files import housing_form

TOWNSHIP = VILLAGE[:9]
NEW_PASSWORD = "village-sync-2026"


def _issue_code(page: Any, base: str, shots: Shots | None = None) -> tuple[str, str]:
    """Issue a code on the devices page; (server, code) as read from the QR image."""
    page.goto(base + "/devices")
    page.fill("input[name=scope]", VILLAGE)
    page.fill("input[name=days]", "3")
    page.fill("input[name=label]", "第一工作队")
    page.click("form[action='/devices/codes'] button")
    page.wait_for_selector("#enrolment-qr")
    if shots is not None:
        shots.take("enrolment-code")
    shown = page.inner_text("#enrolment-code").strip()
    payload = read_qr(page.locator("#enrolment-qr").screenshot())
    assert payload.startswith("villagesync:enroll?"), payload
    query = parse_qs(urlsplit(payload).query)
    (server,), (code,) = query["server"], query["code"]
    assert code == shown
    return server, code


def test_a_county_admin_does_the_whole_job_in_the_browser(
    chromium: Any, county: CountyServer, tmp_path: Path
) -> None:
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    refused: list[str] = []  # anything the page tried that the browser blocked or failed
    page.on("console", lambda msg: refused.append(msg.text) if msg.type == "error" else None)
    page.on(
        "requestfailed",
        lambda request: None if "/exports/" in request.url else refused.append(request.url),
    )  # a download ends its navigation with a "failed" request; anything else counts
    shots = Shots(page)
    base = county.url

    # The printed URL opens the login page; the printed password works and must be changed.
    page.goto(base)
    assert "/login" in page.url
    shots.take("login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "wrong-password")
    page.click("form button[type=submit]")
    assert "用户名或密码错误" in page.inner_text("main")
    page.fill("input[name=password]", county.admin_password)
    page.click("form button[type=submit]")
    page.wait_for_url(base + "/")
    assert "您仍在使用初始密码" in page.inner_text("main")
    page.click("text=立即修改密码")
    page.fill("input[name=current_password]", county.admin_password)
    page.fill("input[name=new_password]", NEW_PASSWORD)
    page.fill("input[name=repeat_password]", NEW_PASSWORD)
    page.click("main form button[type=submit]")
    assert "密码已修改" in page.inner_text("main")

    # Upload an XLSForm as a draft, publish it.
    form_file = tmp_path / "housing_safety_v2.xlsx"
    form_file.write_bytes(housing_form(2, break_it=True))
    page.goto(base + "/forms")
    page.set_input_files("input[name=file]", str(form_file))
    page.click("form[action='/forms/upload'] button")
    assert "XLSForm 表格无法导入" in page.inner_text("main")
    assert "survey" in page.inner_text("table.issues")
    shots.take("form-problems")
    form_file.write_bytes(housing_form(2))
    page.set_input_files("input[name=file]", str(form_file))
    page.click("form[action='/forms/upload'] button")
    assert "已保存为草稿：housing_safety 第2版" in page.inner_text("main")
    page.click("form[action='/forms/housing_safety/2/publish'] button")
    page.wait_for_url(base + "/forms")
    shots.take("forms")

    # Two tablets enrol with codes read from the QR image, one fills a household and syncs.
    server_a, code_a = _issue_code(page, base, shots)
    assert server_a == base
    tablet_a, tablet_b = tmp_path / "tablet-a.db", tmp_path / "tablet-b.db"
    assert cli_json(device_cli(tablet_a, "init"))["ok"]
    assert cli_json(device_cli(tablet_a, "enroll", "--server", server_a, "--code", code_a))["ok"]
    house = problem_household("dangerous_house", 3, village_code=VILLAGE)["housing_safety"]
    record_file = tmp_path / "house.json"
    record_file.write_text(json.dumps(house, ensure_ascii=False), encoding="utf-8")
    filled = cli_json(
        device_cli(
            tablet_a,
            "fill",
            "housing_safety",
            "--household",
            f"{VILLAGE}/0042",
            "--round",
            "2026-annual",
            "--from",
            str(record_file),
        )
    )
    record_id = filled["record_id"]
    assert cli_json(device_cli(tablet_a, "sync"))["ok"]
    server_b, code_b = _issue_code(page, base)
    assert cli_json(device_cli(tablet_b, "init"))["ok"]
    assert cli_json(device_cli(tablet_b, "enroll", "--server", server_b, "--code", code_b))["ok"]
    assert cli_json(device_cli(tablet_b, "sync"))["ok"]
    page.goto(base + "/devices")
    assert page.locator("main table tbody tr").count() == 2
    shots.take("devices")

    # The dashboard counts the household; its numbers lead down to the household page.
    page.goto(base + "/")
    assert "<svg" in page.content()
    shots.take("dashboard-county")
    page.click(f"main table a[href='/?area={TOWNSHIP}']")
    page.wait_for_url(f"**/?area={TOWNSHIP}")
    row = page.locator("main table tbody tr", has_text=VILLAGE)
    assert row.locator("td").nth(1).inner_text().strip() == "1"
    shots.take("dashboard-township")
    page.click(f"main table a[href='/households?area={VILLAGE}&problem=housing']")
    page.click("text=0042")
    page.wait_for_url(f"**/households/{VILLAGE}/0042")
    body = page.inner_text("main")
    assert "housing_safety 第2版" in body and "未达标" in body and "拆除重建" in body
    shots.take("household")

    # Both tablets change the renovation method offline: a conflict for the county.
    assert cli_json(device_cli(tablet_a, "edit", record_id, "--set", "renovation_method=原址翻建"))
    assert cli_json(device_cli(tablet_b, "edit", record_id, "--set", "renovation_method=选址新建"))
    assert cli_json(device_cli(tablet_a, "sync"))["ok"]
    synced_b = cli_json(device_cli(tablet_b, "sync"))
    assert synced_b["status_counts"] == {"conflict": 1}, synced_b
    page.goto(base + "/conflicts")
    shots.take("conflicts")
    page.click("main table tbody tr a >> nth=1")
    assert "原值（共同基础）" in page.inner_text("main")
    shots.take("conflict")
    page.locator("label", has_text="原址翻建").locator("input[type=radio]").check()
    page.fill("textarea[name=comment]", "入户核实：原址翻建")
    page.click("main form button[type=submit]")
    assert "已处理" in page.inner_text("main")
    for tablet in (tablet_b, tablet_a):
        assert cli_json(device_cli(tablet, "sync"))["ok"]
        shown = cli_json(device_cli(tablet, "show", record_id))["record"]
        assert shown["data"]["renovation_method"] == "原址翻建"
        assert cli_json(device_cli(tablet, "status"))["conflicts"] == []
    page.goto(base + "/audit?action=conflict.resolve")
    assert "入户核实：原址翻建" in page.inner_text("main")
    shots.take("audit")

    # The XLSX export carries the resolved value, sensitive fields masked.
    page.goto(base + "/exports")
    shots.take("exports")
    with page.expect_download() as download_info:
        page.locator("form[data-form=housing_safety] button", has_text="下载 XLSX").click()
    download = download_info.value
    target = ARTIFACTS / "housing_safety.xlsx"
    download.save_as(str(target))
    sheet = openpyxl.load_workbook(target, read_only=True).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    header, (only,) = rows[0], rows[1:]
    cells = dict(zip(header, only, strict=True))
    assert (cells["行政村代码"], cells["户编号"], cells["表单版本"]) == (VILLAGE, "0042", 2)
    assert "原址翻建" in only
    assert re.match(r"\d{4}-\d{2}-\d{2}T", cells["更新时间"])
    # The other pages, photographed too.
    page.goto(base + "/forms/housing_safety/2")
    assert "房屋安全性鉴定等级" in page.inner_text("main")
    shots.take("form-preview")
    for name in ("users", "quarantine"):
        page.goto(f"{base}/{name}")
        shots.take(name)
    # Refusals the story provoked on purpose (wrong password 401, broken form 422) are fine;
    # a blocked or missing resource is not.
    assert [r for r in refused if not re.search(r"status of (401|422)", r)] == []
    context.close()
