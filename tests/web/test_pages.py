"""Every page with real data: the dashboard, households, devices and enrolment, conflicts,
forms, exports, the quarantine, users and the audit log — and township scoping on each."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections.abc import Callable

import openpyxl
import pytest
from flask import Flask
from flask.testing import FlaskClient

from forms.instruments.samples import problem_household, sample_household
from server.web.devices import enrolment_payload
from sync_protocol.crypto import generate_device_keys
from tests.server.conftest import login
from tests.server.survey_data import store_household
from tests.server.sync_device import HOUSE_A, SyncDevice
from tests.web.conftest import Browser, add_account, text
from tests.web.qr import read_qr
from tests.web.xlsform_files import housing_form

V1, V2, FAR = "530102001201", "530102001202", "530102002301"
TOWNSHIP, OTHER_TOWNSHIP = "530102001", "530102002"


@pytest.fixture
def surveyed(app: Flask) -> Flask:
    """Households in two villages of one township and one of another township."""
    for village, number, household in [
        (V1, "H1", sample_household(3, village_code=V1)),
        (V1, "H2", problem_household("dangerous_house", 4, village_code=V1)),
        (V2, "H3", problem_household("too_little_water", 5, village_code=V2)),
        (FAR, "H9", problem_household("dangerous_house", 6, village_code=FAR)),
    ]:
        store_household(app, household, village_code=village, household_no=number)
    return app


@pytest.fixture
def reviewer(app: Flask, browser_for: Callable[[str], Browser]) -> Browser:
    """A township reviewer of TOWNSHIP, signed in."""
    add_account(app, "reviewer", "township_reviewer", TOWNSHIP)
    return browser_for("reviewer")


@pytest.fixture
def api_admin(app: Flask, admin: Browser) -> dict[str, str]:
    """The admin's API header (for the devices that make conflicts)."""
    return login(app.test_client(), "admin")


def test_the_dashboard_counts_by_township_then_village_and_links_the_households(
    surveyed: Flask, admin: Browser
) -> None:
    county = text(admin.get("/"))
    assert "<svg" in county and "住房不安全" in county
    # By township at the top: the township links down to its villages.
    assert f'href="/?area={TOWNSHIP}"' in county and f'href="/?area={OTHER_TOWNSHIP}"' in county
    township = text(admin.get(f"/?area={TOWNSHIP}"))
    assert V1 in township and V2 in township and FAR not in township
    link = f"/households?area={V1}&amp;problem=housing"
    assert link in township
    listed = text(admin.get(link.replace("&amp;", "&")))
    assert "H2" in listed and "H1" not in listed and "共 1 户" in listed


def test_a_household_page_shows_every_record_its_indicators_and_history(
    surveyed: Flask, admin: Browser
) -> None:
    page = admin.get(f"/households/{V1}/H2")
    assert page.status_code == 200
    body = text(page)
    assert "housing_safety" in body and "修改历史" in body and "未清零问题" in body
    assert "住房安全" in body and "未达标" in body
    search = admin.get(f"/households?area={V1}&household_no=H2")
    assert search.status_code == 302 and search.location == f"/households/{V1}/H2"


def test_a_reviewer_sees_only_its_township_and_other_areas_look_absent(
    surveyed: Flask, reviewer: Browser
) -> None:
    home = text(reviewer.get("/"))
    assert V1 in home and FAR not in home
    for path in [
        f"/households/{FAR}/H9",
        f"/?area={OTHER_TOWNSHIP}",
        f"/households?area={FAR}",
        f"/exports/housing_safety.xlsx?village={FAR}",
    ]:
        response = reviewer.get(path)
        assert response.status_code == 404, path
        assert "H9" not in text(response) and "Traceback" not in text(response)
    for path in ["/users", "/quarantine"]:
        assert reviewer.get(path).status_code == 403
    refused = reviewer.post("/devices/codes", {"scope": V1})
    assert refused.status_code == 403 and "当前角色无权执行此操作" in text(refused)
    masked = reviewer.get("/exports/housing_safety.xlsx?unmasked=1")
    assert masked.status_code == 403


def _qr_text(page: str) -> str:
    data_uri = re.search(r'id="enrolment-qr" src="data:image/png;base64,([^"]+)"', page)
    assert data_uri, page
    return read_qr(base64.b64decode(data_uri.group(1)))


def test_an_enrolment_code_is_shown_as_text_and_qr_and_enrols_a_tablet(
    app: Flask, admin: Browser
) -> None:
    bad = admin.post("/devices/codes", {"scope": "5301", "days": "7", "label": "第一工作队"})
    assert bad.status_code == 400 and "数据范围应为" in text(bad)
    assert 'value="第一工作队"' in text(bad)  # nothing typed is lost
    page = admin.post("/devices/codes", {"scope": V1, "days": "3", "label": "第一工作队"})
    assert page.status_code == 200
    body = text(page)
    code = re.search(r'id="enrolment-code">([A-Z0-9-]+)<', body).group(1)
    assert _qr_text(body) == enrolment_payload("http://localhost", code)
    keys = generate_device_keys()
    enrolled = admin.client.post(
        "/api/v1/devices/enroll",
        json={
            "code": code,
            "x25519_public": keys.encryption_public.to_base64(),
            "ed25519_public": keys.signing_public.to_base64(),
            "label": "平板1",
        },
    )
    assert enrolled.status_code == 201
    device_id = enrolled.get_json()["device_id"]
    devices = text(admin.get("/devices"))
    assert device_id[:8] in devices and "在用" in devices
    confirm = admin.get(f"/devices/{device_id}/revoke")
    assert "确认停用" in text(confirm)
    assert admin.post(f"/devices/{device_id}/revoke").status_code == 302
    assert "已停用" in text(admin.get("/devices"))
    assert admin.post(f"/devices/{device_id}/revoke").status_code == 409


def _grade_conflict(client: FlaskClient, headers: dict[str, str], village: str) -> str:
    first = SyncDevice.enroll(client, headers, village)
    second = SyncDevice.enroll(client, headers, village, clock_offset_ms=1000)
    record_id = first.create("housing_safety", HOUSE_A, village=village, household_no="H7")
    first.sync()
    second.sync()
    first.put(record_id, "housing_safety", {"appraisal_grade": "B"})
    second.put(record_id, "housing_safety", {"appraisal_grade": "A", "storeys": 2})
    first.sync()
    (ack,) = second.sync().acks[0].acks
    (conflict_id,) = ack.conflict_ids
    return conflict_id


def test_a_conflict_is_compared_side_by_side_and_resolved_with_a_comment(
    app: Flask, admin: Browser, api_admin: dict[str, str], browser_for: Callable[[str], Browser]
) -> None:
    conflict_id = _grade_conflict(admin.client, api_admin, V1)
    far_conflict = _grade_conflict(admin.client, api_admin, FAR)
    queue = text(admin.get("/conflicts"))
    assert conflict_id in queue and "0 天" in queue
    devices = text(admin.get("/devices"))
    assert f'<a href="/conflicts?village={V1}">1</a>' in devices  # the device whose edit clashed
    page = text(admin.get(f"/conflicts/{conflict_id}"))
    assert "原值（共同基础）" in page and "本方" in page and "对方" in page
    stamps = re.findall(r'value="candidate:([^"]+)"', page)
    assert len(stamps) == 2
    # A typed value the form refuses: the reason is shown and what was typed is kept.
    refused = admin.post(
        f"/conflicts/{conflict_id}/resolve",
        {"choice": "value", "value": "Z", "comment": "核实后填写"},
    )
    assert refused.status_code == 422 and "按此处理后记录无法通过校验" in text(refused)
    assert 'value="Z"' in text(refused) and "核实后填写" in text(refused)
    done = admin.post(
        f"/conflicts/{conflict_id}/resolve",
        {"choice": f"candidate:{stamps[0]}", "comment": "入户核实为B级"},
    )
    assert done.status_code == 302
    assert "已处理" in text(admin.get(done.location))
    audit = text(admin.get("/audit?action=conflict.resolve"))
    assert "入户核实为B级" in audit
    twice = admin.post(f"/conflicts/{conflict_id}/resolve", {"choice": f"candidate:{stamps[1]}"})
    assert twice.status_code == 409
    add_account(app, "reviewer", "township_reviewer", TOWNSHIP)
    reviewer = browser_for("reviewer")
    assert reviewer.get(f"/conflicts/{far_conflict}").status_code == 404
    assert (
        reviewer.post(f"/conflicts/{far_conflict}/resolve", {"choice": "keep"}).status_code == 404
    )
    assert far_conflict not in text(reviewer.get("/conflicts?status=all"))


def test_forms_upload_shows_located_problems_then_publishes_and_retires(admin: Browser) -> None:
    broken = admin.post(
        "/forms/upload",
        {"file": (io.BytesIO(housing_form(2, break_it=True)), "housing_v2.xlsx")},
        content_type="multipart/form-data",
    )
    assert broken.status_code == 422
    body = text(broken)
    assert "XLSForm 表格无法导入" in body and "housing_v2.xlsx" in body
    assert re.search(r"<td>survey</td><td class=\"num\">3</td>", body), body
    garbage = admin.post(
        "/forms/upload",
        {"file": (io.BytesIO(b"\xff\xfe not a form"), "notes.txt")},
        content_type="multipart/form-data",
    )
    assert garbage.status_code == 400 and "既不是 .xlsx 表格也不是 JSON" in text(garbage)
    uploaded = admin.post(
        "/forms/upload",
        {"file": (io.BytesIO(housing_form(2)), "housing_v2.xlsx")},
        content_type="multipart/form-data",
    )
    assert uploaded.status_code == 201 and "已保存为草稿" in text(uploaded)
    wrong_time = admin.post("/forms/housing_safety/2/publish", {"at": "next tuesday"})
    assert wrong_time.status_code == 400 and "发布时间格式不正确" in text(wrong_time)
    assert admin.post("/forms/housing_safety/2/publish", {"at": ""}).status_code == 302
    listing = text(admin.get("/forms"))
    assert listing.count("已发布") >= 7
    unconfirmed = admin.post("/forms/housing_safety/1/retire")
    assert unconfirmed.status_code == 400 and "请勾选" in text(unconfirmed)
    assert admin.post("/forms/housing_safety/1/retire", {"confirm": "1"}).status_code == 302
    assert "已停用" in text(admin.get("/forms"))
    again = admin.post("/forms/housing_safety/1/retire", {"confirm": "1"})
    assert again.status_code == 409 and "已停用" in text(again)


def test_an_xlsx_export_downloads_with_masked_cells(surveyed: Flask, admin: Browser) -> None:
    assert "下载 XLSX" in text(admin.get("/exports"))
    response = admin.get(f"/exports/household_roster.xlsx?village={V1}")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == 'attachment; filename="household_roster.xlsx"'
    book = openpyxl.load_workbook(io.BytesIO(response.data), read_only=True)
    main = list(book.worksheets[0].iter_rows(values_only=True))
    assert main[0][:3] == ("记录ID", "行政村代码", "户编号")
    assert sorted(row[2] for row in main[1:]) == ["H1", "H2"]
    members = list(book.worksheets[1].iter_rows(values_only=True))
    ids = [cell for row in members[1:] for cell in row if isinstance(cell, str) and "*" in cell]
    assert ids, "ID numbers are masked"
    csv = admin.get(f"/exports/household_roster.csv?village={V1}")
    assert csv.status_code == 200 and "记录ID" in csv.get_data(as_text=True)
    assert "export" in text(admin.get("/audit"))


def test_users_are_created_with_messages_on_the_page(admin: Browser) -> None:
    short = admin.post(
        "/users",
        {
            "username": "li",
            "password": "short",
            "role": "township_reviewer",
            "area_prefix": TOWNSHIP,
        },
    )
    assert short.status_code == 400 and "密码至少需要10个字符" in text(short)
    assert 'value="li"' in text(short)
    wrong_area = admin.post(
        "/users",
        {
            "username": "li",
            "password": "long-enough-1",
            "role": "township_reviewer",
            "area_prefix": "53",
        },
    )
    assert wrong_area.status_code == 400 and "管辖范围" in text(wrong_area)
    created = admin.post(
        "/users",
        {
            "username": "li",
            "password": "long-enough-1",
            "role": "township_reviewer",
            "area_prefix": TOWNSHIP,
        },
    )
    assert created.status_code == 201 and "已创建 li" in text(created)
    taken = admin.post(
        "/users",
        {
            "username": "li",
            "password": "long-enough-1",
            "role": "township_reviewer",
            "area_prefix": TOWNSHIP,
        },
    )
    assert taken.status_code == 409 and "已存在" in text(taken)


def test_the_quarantine_lists_and_refuses_unknown_items(admin: Browser) -> None:
    assert "隔离区为空" in text(admin.get("/quarantine"))
    missing = admin.post("/quarantine/99/map", {"form_version": "1"})
    assert missing.status_code == 404 and "未找到该隔离操作" in text(missing)
    blank = admin.post("/quarantine/99/map", {"form_version": ""})
    assert blank.status_code == 400


def test_every_state_change_from_the_pages_is_audited(app: Flask, admin: Browser) -> None:
    admin.post("/devices/codes", {"scope": V1})
    admin.post(
        "/forms/upload",
        {"file": (io.BytesIO(housing_form(2)), "housing_v2.xlsx")},
        content_type="multipart/form-data",
    )
    admin.post("/forms/housing_safety/2/publish", {"at": "2030-01-01T08:00"})
    log = text(admin.get("/audit"))
    for action in ["auth.login", "enrollment_code.issue", "form.upload", "form.schedule"]:
        assert action in log, action
    assert "待发布" in text(admin.get("/forms"))


WELL_CHECK = {
    "id": "well_check",
    "version": 1,
    "title": {"zh": "水井检查", "ug": "قۇدۇق تەكشۈرۈش"},
    "subject": "household",
    "fields": [
        {
            "name": "has_well",
            "type": "boolean",
            "label": {"zh": "是否有水井", "ug": "قۇدۇق بارمۇ"},
            "required": True,
        },
        {
            "name": "depth",
            "type": "integer",
            "label": {"zh": "井深", "ug": "چوڭقۇرلۇقى"},
            "hint": {"zh": "单位：米"},
            "relevant": "${has_well} = true()",
        },
    ],
}


def test_a_form_preview_shows_labels_skip_logic_and_each_language(admin: Browser) -> None:
    payload = json.dumps(WELL_CHECK, ensure_ascii=False).encode("utf-8")
    uploaded = admin.post(
        "/forms/upload",
        {"file": (io.BytesIO(payload), "well.json")},
        content_type="multipart/form-data",
    )
    assert uploaded.status_code == 201
    assert 'href="/forms/well_check/1"' in text(uploaded)
    page = text(admin.get("/forms/well_check/1"))
    assert "水井检查" in page and "是否有水井" in page and "单位：米" in page
    assert "显示条件" in page and "${has_well} = true()" in page and "草稿" in page
    uyghur = text(admin.get("/forms/well_check/1?lang=ug"))
    assert 'lang="ug" dir="rtl"' in uyghur and "قۇدۇق بارمۇ" in uyghur
    assert admin.get("/forms/well_check/9").status_code == 404


def test_pages_load_nothing_from_elsewhere_and_run_no_script(admin: Browser) -> None:
    response = admin.get("/")
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'none'" in policy
    assert response.headers["Cache-Control"] == "no-store"
    assert "<script" not in text(response) and "http://" not in text(response).split("</head>")[0]
    with admin.get("/static/web/web.css") as stylesheet:
        assert stylesheet.status_code == 200 and stylesheet.mimetype == "text/css"


def test_an_unexpected_fault_is_a_page_without_a_traceback(
    surveyed: Flask, admin: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.services import indicators

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(indicators, "rollup", broken)  # the one injected fault
    response = admin.get("/")
    assert response.status_code == 500 and response.mimetype == "text/html"
    body = text(response)
    assert "服务器出错" in body and "secret internals" not in body and "Traceback" not in body


def test_a_quarantined_op_is_mapped_to_a_published_version_from_the_page(
    app: Flask, admin: Browser, api_admin: dict[str, str]
) -> None:
    device = SyncDevice.enroll(admin.client, api_admin, V1)
    device.create("housing_safety", HOUSE_A, village=V1, household_no="H5", version=7)
    (ack,) = device.sync().acks[0].acks
    assert ack.status == "rejected"
    page = text(admin.get("/quarantine"))
    item_id = re.search(r'action="/quarantine/(\d+)/map"', page).group(1)
    assert "unknown_form_version" in page and "housing_safety 第7版" in page
    unpublished = admin.post(f"/quarantine/{item_id}/map", {"form_version": "5"})
    assert unpublished.status_code == 400 and "没有已发布的第5版" in text(unpublished)
    assert admin.post(f"/quarantine/{item_id}/map", {"form_version": "1"}).status_code == 302
    assert "隔离区为空" in text(admin.get("/quarantine"))
    assert "H5" in text(admin.get(f"/households?area={V1}"))


def test_a_double_submit_is_a_message_not_a_second_action(admin: Browser) -> None:
    admin.post(
        "/forms/upload",
        {"file": (io.BytesIO(housing_form(2)), "housing_v2.xlsx")},
        content_type="multipart/form-data",
    )
    assert admin.post("/forms/housing_safety/2/publish", {"at": ""}).status_code == 302
    again = admin.post("/forms/housing_safety/2/publish", {"at": ""})
    assert again.status_code == 409 and "不能发布" in text(again)
    assert text(admin.get("/audit?action=form.publish")).count("housing_safety@2") == 1


def test_the_dashboard_table_downloads_as_csv(surveyed: Flask, admin: Browser) -> None:
    response = admin.get(f"/dashboard.csv?area={TOWNSHIP}")
    assert response.status_code == 200
    assert (
        response.headers["Content-Disposition"]
        == f'attachment; filename="dashboard-{TOWNSHIP}.csv"'
    )
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0][:3] == ["地区", "农户", "住房不安全"]
    by_area = {row[0]: row for row in rows[1:]}
    assert by_area[V1][1:3] == ["2", "1"] and by_area[V2][1] == "1"
    assert FAR not in by_area


def test_the_audit_log_filters_by_actor_action_area_and_day(
    app: Flask, admin: Browser, browser_for: Callable[[str], Browser]
) -> None:
    admin.post("/devices/codes", {"scope": V1, "label": "一队"})
    admin.post("/devices/codes", {"scope": FAR, "label": "远村队"})
    add_account(app, "zhang", "county_admin", "530102")
    browser_for("zhang").post("/devices/codes", {"scope": V2, "label": "二队"})
    everything = text(admin.get("/audit?action=enrollment_code.issue"))
    assert all(label in everything for label in ("一队", "远村队", "二队"))
    by_actor = text(admin.get("/audit?action=enrollment_code.issue&actor=zhang"))
    assert "二队" in by_actor and "一队" not in by_actor
    by_area = text(admin.get(f"/audit?action=enrollment_code.issue&area={OTHER_TOWNSHIP}"))
    assert "远村队" in by_area and "一队" not in by_area and "二队" not in by_area
    today = text(admin.get("/audit")).split("<td>")[1][:10]  # the newest entry's day
    assert "一队" in text(admin.get(f"/audit?since={today}&until={today}"))
    assert "一队" not in text(admin.get("/audit?since=2000-01-01&until=2000-01-02"))
    bad = admin.get("/audit?since=yesterday&actor=zhang")
    assert bad.status_code == 400 and "日期格式不正确" in text(bad) and 'value="zhang"' in text(bad)
    assert admin.get("/audit?area=530199").status_code == 200
    add_account(app, "reviewer", "township_reviewer", TOWNSHIP)
    reviewer = browser_for("reviewer")
    assert reviewer.get(f"/audit?area={OTHER_TOWNSHIP}").status_code == 404
    assert "远村队" not in text(reviewer.get("/audit"))
