"""Area names: set on a page or loaded as a CSV, shown as "name（code）" on every page."""

from __future__ import annotations

import io
from collections.abc import Callable

from flask import Flask

from forms.instruments.samples import sample_household
from tests.server.survey_data import store_household
from tests.web.conftest import Browser, add_account, text

V1, FAR = "530102001201", "530102002301"
TOWNSHIP = "530102001"


def _upload(browser: Browser, content: bytes) -> object:
    return browser.post(
        "/areas/import",
        {"table": (io.BytesIO(content), "names.csv")},
        content_type="multipart/form-data",
    )


def test_names_set_on_the_page_show_beside_the_codes_everywhere(app: Flask, admin: Browser) -> None:
    store_household(app, sample_household(3, village_code=V1), village_code=V1, household_no="H1")
    assert admin.post("/areas", {"code": TOWNSHIP, "name": "太平镇"}).status_code == 302
    assert admin.post("/areas", {"code": V1, "name": "  小寨村 "}).status_code == 302
    assert "小寨村" in text(admin.get("/areas"))
    assert f"太平镇（{TOWNSHIP}）" in text(admin.get("/"))
    assert f"小寨村（{V1}）" in text(admin.get(f"/?area={TOWNSHIP}"))
    assert f"小寨村（{V1}）" in text(admin.get(f"/households?area={V1}"))
    assert f"小寨村（{V1}）" in text(admin.get(f"/households/{V1}/H1"))
    # Unnamed codes stay bare; an empty name forgets the name.
    assert admin.post("/areas", {"code": V1, "name": ""}).status_code == 302
    page = text(admin.get(f"/households?area={V1}"))
    assert "小寨村" not in page and V1 in page
    assert f"{V1}" in text(admin.get("/audit?action=area_name.set"))
    assert f"{V1}" in text(admin.get("/audit?action=area_name.delete"))


def test_a_bad_code_is_refused_in_chinese_and_keeps_what_was_typed(admin: Browser) -> None:
    refused = admin.post("/areas", {"code": "5301x", "name": "太平镇"})
    body = text(refused)
    assert refused.status_code == 400
    assert "地区代码应为6、9或12位数字" in body and 'value="太平镇"' in body
    assert "Traceback" not in body


def test_a_csv_loads_all_rows_or_none_and_locates_each_problem(admin: Browser) -> None:
    table = f"代码,名称\n{TOWNSHIP},太平镇\n{V1},小寨村\n".encode()
    loaded = _upload(admin, table)
    assert loaded.status_code == 302
    assert "已导入 2 个名称" in text(admin.get(loaded.location))
    broken = f"{FAR},河口村\n12345,坏行\n{V1},\n".encode("gb18030")
    refused = _upload(admin, broken)
    body = text(refused)
    assert refused.status_code == 400 and "未导入任何一行" in body
    assert "第2行第A列：地区代码应为6、9或12位数字" in body
    assert "第3行第B列：名称不能为空" in body
    assert "河口村" not in text(admin.get("/areas"))  # nothing of the broken file was kept
    not_csv = _upload(admin, b"PK\x03\x04\x00\x00binary")
    assert not_csv.status_code == 400 and "文件不是文本表格" in text(not_csv)
    assert "area_names.import" in text(admin.get("/audit?action=area_names.import"))


def test_a_county_admin_names_only_inside_its_county(
    app: Flask, browser_for: Callable[[str], Browser]
) -> None:
    add_account(app, "county", area="530102")
    county = browser_for("county")
    refused = county.post("/areas", {"code": "530103001", "name": "别县镇"})
    assert refused.status_code == 403 and "不在您的管辖范围" in text(refused)
    refused = _upload(county, b"530103001201,\xe5\x88\xab\xe6\x9d\x91\n")
    assert refused.status_code == 400 and "第1行第A列" in text(refused)


def test_reviewers_may_not_name_and_forms_need_csrf(
    app: Flask, admin: Browser, browser_for: Callable[[str], Browser]
) -> None:
    add_account(app, "reviewer", "township_reviewer", TOWNSHIP)
    reviewer = browser_for("reviewer")
    assert reviewer.get("/areas").status_code == 403
    assert reviewer.post("/areas", {"code": V1, "name": "小寨村"}).status_code == 403
    refused = admin.post("/areas", {"code": V1, "name": "小寨村"}, csrf=False)
    assert refused.status_code == 400 and "小寨村" not in text(admin.get("/areas"))
    assert admin.post("/areas", {"code": V1, "name": "小寨村"}).status_code == 302
    # The reviewer sees the name its county admin gave, in its own header.
    assert f"小寨村（{V1}）" in text(reviewer.get(f"/households?area={V1}"))
