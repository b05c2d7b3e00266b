"""The department lists page: a county admin uploads a 医保 list, sees the round's counts and
its unmatched rows (IDs masked), edits the column mapping; a township reviewer sees only its
townships; in a real browser at 360 px and 1280 px, with screenshots."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask

from bench.harness.county_server import CountyServer
from tests.server.department_files import COUNTY, ROUND, county_households, load_county, workbook
from tests.server.test_department_lists import MEDICAL_HEADERS, medical_rows
from tests.web.admin_session import signed_in_admin
from tests.web.conftest import Browser, add_account, text

TOWNSHIP = "530102001"


def _upload(browser: Browser, content: bytes, **fields: str) -> Any:
    form = {
        "department": "medical_insurance",
        "period": "2026-11",
        "as_of": "2026-11-30",
        "area": COUNTY,
        **fields,
        "file": (io.BytesIO(content), "医保2026-11.xlsx"),
    }
    return browser.post("/department-lists", form, content_type="multipart/form-data")


def test_upload_counts_unmatched_rows_and_scoping_on_the_page(
    app: Flask, admin: Browser, browser_for: Callable[[str], Browser]
) -> None:
    households = county_households()
    load_county(app, households)
    content = workbook(MEDICAL_HEADERS, medical_rows(households))

    done = _upload(admin, content)
    page = text(done)
    assert done.status_code == 200, page
    assert "已导入第1批" in page and "共 23 行，匹配 18 行" in page
    assert "户生成或补充核实任务" in page  # the findings became verification tasks
    again = text(_upload(admin, content))
    assert "该文件已导入过（第1批），未做任何改动" in again

    round_page = text(admin.get("/department-lists/1"))
    assert "花名册中没有此人" in round_page and "与第4行是同一人" in round_page
    ids = {m["id_number"] for h in households for m in h["household_roster"]["members"]}
    assert not any(i in round_page for i in ids)
    assert "李四" in round_page and "530102*" in round_page

    add_account(app, "reviewer", "township_reviewer", TOWNSHIP)
    reviewer = browser_for("reviewer")
    listed = text(reviewer.get("/department-lists"))
    assert "第1批" in listed and 'name="file"' not in listed  # no upload form for a reviewer
    theirs = text(reviewer.get("/department-lists/1"))
    assert "王五" not in theirs  # the row of another county is not in their townships
    assert "仅本人管辖范围" in theirs
    refused = _upload(reviewer, content)
    assert refused.status_code == 403

    # A bad period is shown beside the form, what was typed kept.
    bad = _upload(admin, content, period="2026-13")
    assert bad.status_code == 400 and "期别应为" in text(bad) and 'value="2026-13"' in text(bad)


def test_the_mapping_is_edited_on_its_page(admin: Browser) -> None:
    shown = text(admin.get("/department-lists/mapping", query_string={"area": COUNTY}))
    assert 'name="col_id_number" value="证件号码"' in shown and "尚未保存" in shown
    saved = admin.post(
        "/department-lists/mapping",
        {
            "department": "medical_insurance",
            "area": COUNTY,
            "col_id_number": "身份证号",
            "col_name": "姓名",
            "col_out_of_pocket": "自付金额",
        },
    )
    assert saved.status_code == 302
    page = text(admin.get(saved.headers["Location"]))
    assert 'name="col_id_number" value="身份证号"' in page and "已保存" in page
    refused = admin.post(
        "/department-lists/mapping",
        {
            "department": "medical_insurance",
            "area": COUNTY,
            "col_id_number": "",
            "col_name": "姓名",
        },
    )
    assert refused.status_code == 400 and "必须填写证件号码" in text(refused)
    no_csrf = admin.post(
        "/department-lists/mapping", {"department": "medical_insurance", "area": COUNTY}, csrf=False
    )
    assert no_csrf.status_code in (400, 403)


def test_the_department_page_in_a_real_browser(
    chromium: Any, county: CountyServer, tmp_path: Path
) -> None:
    households = county_households()
    lines = tmp_path / "county.jsonl"
    lines.write_text(
        "\n".join(
            json.dumps(
                {
                    "village_code": h["household_roster"]["village_code"],
                    "household_no": h["household_roster"]["household_no"],
                    "round": ROUND,
                    "records": h,
                },
                ensure_ascii=False,
            )
            for h in households
        ),
        encoding="utf-8",
    )
    loaded = county.cli("load-households", str(lines))
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    medical = tmp_path / "医保2026-11.xlsx"
    medical.write_bytes(workbook(MEDICAL_HEADERS, medical_rows(households)))

    with signed_in_admin(chromium, county) as admin:
        page, base, shots, errors = admin.page, admin.base, admin.shots, admin.errors

        page.goto(base + "/department-lists")
        page.fill("input[name=period]", "2026-11")
        page.fill("input[name=as_of]", "2026-11-30")
        page.fill("input[name=area]", COUNTY)
        page.set_input_files("input[name=file]", str(medical))
        page.click("form[action='/department-lists'] button")
        main = page.inner_text("main")
        assert "已导入第1批" in main and "共 23 行，匹配 18 行" in main, main
        shots.take("department-lists")

        page.click("a[href='/department-lists/1']")
        main = page.inner_text("main")
        assert "未匹配的行" in main and "花名册中没有此人" in main
        shots.take("department-round")

        page.goto(base + f"/department-lists/mapping?department=medical_insurance&area={COUNTY}")
        page.fill("input[name=col_out_of_pocket]", "自付金额")
        page.click("form[action='/department-lists/mapping'][method=post] button")
        assert "已保存" in page.inner_text("main")
        shots.take("department-mapping")
        assert errors == []
