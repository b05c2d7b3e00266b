"""Verification tasks in the browser field app (issue 17), Debian's Chromium against a real county
server process.

The county loads its households, the browser enrols for one village and syncs (no task yet), the
county imports a 医保 list through ``python -m server import-department`` (the real matching and
task service), the next sync brings the village's tasks — only that village's — listed on the
home with household, reasons (Chinese, department), deadline. Offline, one task is worked: the
household shown from its records, the coded outcome 数据错误：人员已死亡, an evidence photo in the
form's own photo row, a note; the outbox holds the op the CLI would send. Online again the sync
takes it, the task shows 已核查 on the tablet, and the server holds the outcome on the task
(API and 核查任务 page) with the photo uploaded byte for byte. The escalation job then marks
the open tasks overdue on the tablet. ``verification_outcome`` is never offered as a new
record; IndexedDB read raw holds none of the task's text, ids or the household in clear.
Screenshots at 360 and 1280 px in ``tests/artifacts/field/``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.harness.county_server import CountyServer, start_county_server
from forms.verification import outcome_data
from server import create_app
from server.services import tasks as task_service
from server.services.access import CLI_ACTOR
from server.services.context import EXTENSION_KEY
from server.storage.database import db
from tests.client.server_before_tasks import server_before_tasks_stream
from tests.e2e.conftest import VILLAGE
from tests.e2e.test_field_app import RAW_INDEXEDDB, Shots, _ready, _store, _synced
from tests.server.department_files import ROUND, county_households, workbook
from tests.server.test_department_lists import AS_OF, MEDICAL_HEADERS, PERIOD, medical_rows
from tests.web.test_field_store import _photo_png

NOTE = "户主已于十月病故，家属出示死亡证明"


@pytest.fixture
def county(tmp_path: Path) -> Iterator[CountyServer]:
    """SQLite only: the task rules run on both engines in tests/server/test_tasks.py; this story
    is about the browser and the wire."""
    server = start_county_server(f"sqlite:///{tmp_path / 'county.db'}", tmp_path / "county")
    try:
        yield server
    finally:
        server.stop()


def _in_county(county: CountyServer, work: Any) -> Any:
    """Run ``work(ctx)`` in an app on the county's database (a scheduled job's path)."""
    settings = {
        k[len("VILLAGE_SYNC_") :]: v for k, v in county.env.items() if k.startswith("VILLAGE_SYNC_")
    }
    app = create_app({**settings, "DATABASE_URL": county.database_url})
    try:
        with app.app_context():
            return work(app.extensions[EXTENSION_KEY])
    finally:
        with app.app_context():
            db.engine.dispose()


def _task_item(page: Any, task_id: str) -> Any:
    return page.locator(f"li.task[data-task='{task_id}']")


def test_tasks_arrive_are_worked_offline_with_a_photo_and_reach_the_server(
    county: CountyServer, chromium: Any, tmp_path: Path
) -> None:
    admin = county.admin()
    households = county_households()
    number = {i: h["household_roster"]["household_no"] for i, h in enumerate(households, 1)}
    lines = tmp_path / "households.jsonl"
    # Five earlier rounds too (loaded first; the list is matched with the newest roster): the
    # village's 216 records are two download pages, which one sync run takes both of.
    rounds = [f"{year}-annual" for year in range(2021, 2026)] + [ROUND]
    lines.write_text(
        "\n".join(
            json.dumps(
                {
                    "village_code": h["household_roster"]["village_code"],
                    "household_no": h["household_roster"]["household_no"],
                    "round": round_,
                    "records": h,
                },
                ensure_ascii=False,
            )
            for round_ in rounds
            for h in households
        ),
        encoding="utf-8",
    )
    loaded = county.cli("load-households", str(lines))
    assert loaded.returncode == 0, loaded.stderr

    context = chromium.new_context(viewport={"width": 360, "height": 780}, locale="zh-CN")
    page = context.new_page()
    shots = Shots(page)
    page.goto(f"{county.url}/field/")
    _ready(page)
    page.wait_for_function("() => navigator.serviceWorker.controller !== null", timeout=30_000)
    page.fill("#enrol-code", admin.issue_code(VILLAGE))
    page.click("#enrol-form button[type='submit']")
    page.wait_for_selector("#sync-message:has-text('同步完成')", timeout=60_000)
    page.wait_for_selector("#task-empty:not([hidden])")
    in_village = [h for h in households if h["household_roster"]["village_code"] == VILLAGE]
    assert len(_store(page, "recordHeads")) == len(rounds) * 6 * len(in_village) > 200
    # The county's forms came down, the system form among them, yet it is no new record.
    forms = {f["id"] for f in _store(page, "setting", "forms")}
    assert "verification_outcome" in forms and "housing_safety" in forms
    offered = page.eval_on_selector_all("#form-list button", "bs => bs.map(b => b.dataset.form)")
    assert "verification_outcome" not in offered and "housing_safety" in offered

    # The county imports this month's 医保 list: matching, reasons and tasks, as in production.
    listing = tmp_path / "医保2026-11.xlsx"
    listing.write_bytes(workbook(MEDICAL_HEADERS, medical_rows(households)))
    imported = county.cli(
        "import-department",
        "--department",
        "medical_insurance",
        "--period",
        PERIOD,
        "--as-of",
        AS_OF,
        "--area",
        VILLAGE[:6],
        str(listing),
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    on_server = admin.get("/api/v1/tasks?status=open&limit=200")["items"]
    here = [t for t in on_server if t["village_code"] == VILLAGE]
    ours = {t["household_no"]: t for t in here if t["household_no"]}
    assert set(ours) == {number[1], number[3], number[4]}, sorted(ours)
    # The stranger on the list whom no household has: a task of the village itself.
    (stranger,) = [t for t in here if not t["household_no"]]
    assert stranger["level"] == "village"
    assert any(t["village_code"] != VILLAGE for t in on_server)  # the far village's task

    _synced(page)
    page.wait_for_selector("#task-list li.task >> nth=2")
    shown = page.eval_on_selector_all("li.task", "ls => ls.map(l => l.dataset.task)")
    # Only this village's, its village-level task among them.
    assert sorted(shown) == sorted([stranger["id"], *(t["id"] for t in ours.values())])
    dead = ours[number[4]]
    item = _task_item(page, dead["id"])
    text = item.text_content()
    head_name = households[3]["household_roster"]["members"][0]["name"]
    assert f"户编号 {number[4]}" in text and f"户主 {head_name}" in text, text
    assert "【医保】" in text and f"截止 {dead['deadline']}" in text and "待核查" in text
    for reason in dead["reasons"]:
        assert reason["message"]["zh"] in text
    # The member a reason points at (a row of the household's record), named from the records.
    assert f"成员：{head_name}" in text, text
    assert item.get_attribute("data-overdue") == "no"
    shots.take("tasks-list")

    # Offline at the household: the outcome with its sub-reason, a photo in its row, a note.
    context.set_offline(True)
    item.locator("button[data-work]").click()
    page.wait_for_selector("#task-box:not([hidden])")
    box = page.text_content("#task-box")
    assert f"户主 {head_name}" in box and "家庭成员" in box and "本机已有" in box, box
    assert page.is_hidden("#household-box") and page.is_hidden("#round-box")
    assert page.locator("[data-path='task_id']").count() == 0  # set from the task, not typed
    page.check("[data-path='outcome'] input[value='data_error']")
    page.check("[data-path='data_error'] input[value='death']")
    page.fill("[data-path='note'] input", NOTE)
    picture = tmp_path / "certificate.png"
    picture.write_bytes(_photo_png(1600, 1200))
    page.set_input_files("[data-path='photo'] input[type=file]", str(picture))
    page.wait_for_selector("#photo-message:has-text('照片已加密保存')", timeout=30_000)
    page.wait_for_selector("[data-path='photo'] img.vf-thumb")
    page.wait_for_selector("#draft-state:has-text('已加密保存')")
    shots.take("task-work")

    # A reload offline keeps the half-worked task (sealed draft), then it goes to the outbox.
    page.reload()
    _ready(page)
    page.wait_for_selector("#task-box:not([hidden])")
    assert page.input_value("[data-path='note'] input") == NOTE
    assert f"核查任务结果（户 {number[4]}）" in page.text_content("#draft-list")
    assert _task_item(page, dead["id"]).locator(".badge:has-text('草稿')").count() == 1
    page.click("#draft-submit")
    page.wait_for_selector("#sync-message:has-text('已放入待同步')")
    page.wait_for_selector(
        f"#task-done-list li.task[data-task='{dead['id']}'][data-status='submitted']"
    )
    assert "已填写，待同步" in _task_item(page, dead["id"]).text_content()
    ((queued),) = _store(page, "outboxItems", ["pending"])
    op = queued["op"]
    photo_address = op["changes"]["photo"]
    # The op `village-device task … --outcome data_error --detail death` queues.
    assert op["changes"] == outcome_data(
        dead["id"], "data_error", detail="death", note=NOTE, photo=photo_address
    )
    assert (op["record_id"], op["form_id"], op["kind"]) == (
        dead["record_id"],
        "verification_outcome",
        "put",
    )
    assert op["household"] == {"village_code": VILLAGE, "household_no": number[4]}
    assert op["round"] == "task-" + dead["id"].replace("-", "")[:35]
    assert op["base_revision"] == 0 and set(op["base"].values()) == {None}
    shots.take("task-submitted-offline")

    # Online: the normal sync carries it; the task is worked on the server and on the tablet.
    context.set_offline(False)
    _synced(page)
    page.wait_for_selector(f"li.task[data-task='{dead['id']}'][data-status='worked']")
    assert page.text_content("#pending-count") == "0"
    worked = admin.get(f"/api/v1/tasks/{dead['id']}")
    assert worked["status"] == "worked"
    assert worked["outcome"] == {
        "outcome": "data_error",
        "data_error": "death",
        "note": NOTE,
        "photo": photo_address,
        "record_id": dead["record_id"],
    }
    assert worked["outcome_label"]["zh"] == "数据错误：人员已死亡"
    request = urllib.request.Request(
        f"{county.url}/api/v1/uploads/{photo_address.removeprefix('sha256:')}/content",
        headers=admin.headers,
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        stored = answer.read()
    assert "sha256:" + hashlib.sha256(stored).hexdigest() == photo_address
    done = _task_item(page, dead["id"]).text_content()
    assert "已核查" in done and "数据错误：人员已死亡" in done and NOTE in done
    # The outcome record is the task's: no 修改 / 新一轮 of it among the household's records.
    assert page.locator(f"#household-list button[data-edit='{dead['record_id']}']").count() == 0
    assert (
        page.locator("#household-list button[data-new-round='verification_outcome']").count() == 0
    )
    shots.take("tasks-worked")

    desk = context.new_page()
    desk.goto(f"{county.url}/login")
    desk.fill("input[name=username]", "admin")
    desk.fill("input[name=password]", county.admin_password)
    desk.click("form button[type=submit]")
    desk.goto(f"{county.url}/tasks?status=worked")
    row = desk.text_content("main")
    assert number[4] in row and "数据错误：人员已死亡" in row, row
    Shots(desk).take("tasks-server-page")
    desk.close()

    # Past the deadline the job escalates the open tasks: the tablet marks them overdue.
    deadline = datetime.date.fromisoformat(dead["deadline"])
    later = datetime.datetime.combine(
        deadline + datetime.timedelta(days=1), datetime.time(4), tzinfo=datetime.UTC
    )
    escalated = _in_county(county, lambda ctx: task_service.escalate_overdue(ctx, CLI_ACTOR, later))
    assert escalated["escalated"] >= 2
    _synced(page)
    still_open = [t["id"] for t in ours.values() if t["id"] != dead["id"]]
    for task_id in still_open:
        page.wait_for_selector(f"#task-list li.task[data-task='{task_id}'][data-overdue='yes']")
        assert "已逾期，已上报乡镇" in _task_item(page, task_id).text_content()
    assert _task_item(page, dead["id"]).get_attribute("data-overdue") == "no"
    shots.take("tasks-overdue")

    # The county accepts the outcome: the task is closed on the tablet too, and no longer worked.
    admin.post(f"/api/v1/tasks/{dead['id']}/close", {"note": "已核实"})
    _synced(page)
    page.wait_for_selector(
        f"#task-done-list li.task[data-task='{dead['id']}'][data-status='closed']"
    )
    closed = _task_item(page, dead["id"])
    assert "已关闭" in closed.text_content() and closed.locator("button").count() == 0

    # An outcome the server refuses (a value outside the coded list) shows 被退回; 更正 reopens
    # it through its task, and the corrected outcome is taken.
    other = ours[number[1]]
    page.evaluate(
        """async ([taskId]) => {
      const engines = await import('/field/static/app/engines.js');
      const { openSealedStore } = await import('/field/static/app/sealed-store.js');
      const storage = await openSealedStore();
      const form = (await storage.setting('forms')).find((f) => f.id === 'verification_outcome');
      const draft = await engines.taskDraft({ storage, taskId, formId: form.id, formVersion: form.version });
      await engines.submitRecord({ storage, draft: { ...draft, values: { ...draft.values, outcome: 'bogus' } } });
    }""",
        [other["id"]],
    )
    _synced(page)
    page.wait_for_selector(f"li.task[data-task='{other['id']}'][data-status='rejected']")
    assert "被退回" in _task_item(page, other["id"]).text_content()
    page.click(f"#rejected-list button.correct[data-record='{other['record_id']}']")
    page.wait_for_selector("#task-box:not([hidden])")
    assert page.is_hidden("#household-box") and page.locator("[data-path='task_id']").count() == 0
    page.check("[data-path='outcome'] input[value='already_solved']")
    page.click("#draft-submit")
    page.wait_for_selector("#sync-message:has-text('已放入待同步')")
    _synced(page)
    page.wait_for_selector(f"li.task[data-task='{other['id']}'][data-status='worked']")
    assert admin.get(f"/api/v1/tasks/{other['id']}")["outcome"]["outcome"] == "already_solved"
    page.wait_for_selector("#rejected[hidden]", state="attached")

    # The village-level task: no household to show, only the outcomes that fit a listed person
    # the roster lacks (as the CLI offers them); the team finds they do not live here.
    village_item = _task_item(page, stranger["id"])
    assert "村级核实" in village_item.text_content() and "task-" not in village_item.text_content()
    village_item.locator("button[data-work]").click()
    page.wait_for_selector("#task-box:not([hidden])")
    assert "请核实此人是否为本村人员" in page.text_content("#task-box")
    offered = page.eval_on_selector_all(
        "[data-path='outcome'] input", "inputs => inputs.map(i => i.value)"
    )
    assert sorted(offered) == ["add_to_roster", "data_error", "not_village_resident"], offered
    page.check("[data-path='outcome'] input[value='not_village_resident']")
    page.click("#draft-submit")
    page.wait_for_selector("#sync-message:has-text('已放入待同步')")
    _synced(page)
    page.wait_for_selector(f"li.task[data-task='{stranger['id']}'][data-status='worked']")
    assert admin.get(f"/api/v1/tasks/{stranger['id']}")["outcome"]["outcome"] == (
        "not_village_resident"
    )
    shots.take("task-village-worked")

    # A household's task does not offer the village-level outcomes.
    household_task = ours[number[3]]["id"]
    _task_item(page, household_task).locator("button[data-work]").click()
    page.wait_for_selector("#task-box:not([hidden])")
    offered = page.eval_on_selector_all(
        "[data-path='outcome'] input", "inputs => inputs.map(i => i.value)"
    )
    assert "not_village_resident" not in offered and "start_identification" in offered, offered

    # Read raw: the tasks, their reasons, the household and the outcome are sealed.
    raw = page.evaluate(RAW_INDEXEDDB)
    secrets = [NOTE, head_name, dead["id"], dead["record_id"], VILLAGE, "人员已死亡", "医保"]
    secrets += [r["message"]["zh"] for t in ours.values() for r in t["reasons"]]
    for secret in secrets:
        assert secret not in raw["text"], secret
    assert "extractable=false" in raw["text"] and "extractable=true" not in raw["text"]
    context.close()


def test_a_server_from_before_the_tasks_stream_still_syncs_the_app(
    tmp_path: Path, chromium: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault injected (as in tests/client/test_tasks_cli.py): the server knows no ``tasks``
    cursor and refuses a hello naming it with scope_denied; the app makes the exchange again
    without the stream, and the sync completes."""
    with server_before_tasks_stream(tmp_path, monkeypatch) as (url, admin):
        context = chromium.new_context(viewport={"width": 360, "height": 780}, locale="zh-CN")
        page = context.new_page()
        page.goto(f"{url}/field/")
        _ready(page)
        page.fill("#enrol-code", admin.issue_code(VILLAGE))
        page.click("#enrol-form button[type='submit']")
        page.wait_for_selector("#sync-message:has-text('同步完成')", timeout=60_000)
        assert _store(page, "tasks") == []
        assert "tasks" not in _store(page, "cursors")
        assert {f["id"] for f in _store(page, "setting", "forms")} >= {"housing_safety"}
        page.wait_for_selector("#task-empty:not([hidden])")
        context.close()
