"""The whole department-data chain as a county drives it (issue 17), on a real server process.

A county imports its roster in the national system's layout (``python -m server import-roster``:
title rows, text IDs, a lower-case x, a full-width digit, a person listed twice, a person of
another county), its survey of the month (``load-households``), and a month of department lists
through the API (医保 with a dead person, strangers and repeats; 教育; 残联; 民政) and 住建's
grades the other way round (``export-housing-appraisal``, grades filled in, imported back).
The cross-checks become verification tasks — one per household with every department's
reasons, and a village-level task for a listed person the roster lacks — that travel to the
village's tablet (the real ``village-device`` CLI over loopback HTTP), are worked offline with
coded outcomes beside the month's survey records, and come back on the next sync. The outcomes
go back per department (``export-task-outcomes``); the 动态清零 board (API and page) shows what
is open by type with its age, moves a problem to "awaiting the next round" on evidence, clears
it only when the next round does not bring it back, and counts a recurring one; the
false-positive rate per department and rule comes from the outcomes; a township reviewer sees
only its township. SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import http.cookiejar
import io
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openpyxl

from forms.identity import id_check_char
from forms.instruments.samples import sample_household
from tests.e2e.conftest import CountyServer, cli_json, device_cli
from village_client_stub.simulator import AdminSession
from village_client_stub.transport import HttpTransport

V1 = "530102001201"  # 一村, township 530102001
V2 = "530102002201"  # 二村, township 530102002
T1, T2 = V1[:9], V2[:9]
COUNTY = V1[:6]
ROUND_1, ROUND_2, ROUND_3 = "2026-11", "2026-12", "2027-01"
ROSTER_HEADERS = [
    "行政区划代码",
    "户编号",
    "户类型",
    "联系电话",
    "姓名",
    "性别",
    "证件类型",
    "证件号码",
    "与户主关系",
    "文化程度",
    "在校生状况",
    "健康状况",
    "劳动技能",
]
MEDICAL_HEADERS = [
    "序号",
    "行政区划代码",
    "住址",
    "姓名",
    "证件号码",
    "参保状态",
    "险种",
    "个人自付",
]


def _id(region: str, birth: str, sequence: int, *, ending_x: bool = False) -> str:
    for seq in range(sequence, sequence + 200):
        first17 = f"{region}{birth}{seq % 1000:03d}"
        if (id_check_char(first17) == "X") == ending_x:
            return first17 + id_check_char(first17)
    raise AssertionError("no such number")


# Three households from the sample generator (their survey records agree with their rosters).
H1 = sample_household(3, village_code=V1)  # 郭正华, 彭秀英 (配偶), 郭家豪 (之子, 小学)
H2 = sample_household(2, village_code=V1)  # 刘海林, 刘翠萍, 刘美玲 (之女)
H3 = sample_household(1, village_code=V2)  # 吴老三, and a spouse whose ID ends in X
N1, N2, N3 = (h["household_roster"]["household_no"] for h in (H1, H2, H3))
WIFE_X = _id("530102", "19520304", 100, ending_x=True)
STRANGER_V1 = _id("530102", "19880808", 300)  # 赵六: on the list, in 一村, not in the roster
STRANGER_V2 = _id("530102", "19790707", 400)  # 钱七: the address names 二村
STRANGER_NOWHERE = _id("530102", "19660606", 500)  # 孙八: no village to tell
OTHER_COUNTY = _id("530202", "19800101", 600)


def _members(household: dict[str, Any]) -> list[dict[str, Any]]:
    return list(household["household_roster"]["members"])


def _name_of(household: dict[str, Any], index: int) -> str:
    return str(_members(household)[index]["name"])


def _id_of(household: dict[str, Any], index: int) -> str:
    return str(_members(household)[index]["id_number"])


# --- the files a county gets -----------------------------------------------------------------


def _book(titles: Sequence[str], headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    for title in titles:
        sheet.append([title])
    sheet.append(list(headers))
    for row in rows:
        sheet.append(list(row))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def roster_file() -> bytes:
    """The national system's 家庭成员信息 export of the three households."""
    rows = []
    for household in (H1, H2, H3):
        roster = household["household_roster"]
        for n, member in enumerate(roster["members"]):
            number = member["id_number"]
            if household is H2 and n == 1:
                number = chr(ord(number[0]) + 0xFEE0) + number[1:]  # a full-width digit
            rows.append(
                [
                    roster["village_code"],
                    roster["household_no"],
                    roster.get("household_type") or "普通农户",
                    roster.get("phone") or "",
                    member["name"],
                    member.get("sex") or "男",
                    "居民身份证",
                    number,
                    member.get("relation") or "户主",
                    member.get("education_level") or "",
                    member.get("schooling") or "",
                    "、".join(member.get("health") or ["健康"]),
                    member.get("labour_capacity") or "",
                ]
            )
        if household is H3:  # a spouse whose ID ends in a lower-case x, as typed
            rows.append(
                [V2, N3, "普通农户", "", "吴老伴", "女", "居民身份证", WIFE_X.lower(), "配偶"]
            )
            rows[-1].extend(["小学", "", "健康", "普通劳动力"])
    rows.append(rows[3])  # 刘海林 listed twice
    rows.append(["530202001201", "F1", "普通农户", "", "外县人", "男", "居民身份证", OTHER_COUNTY])
    return _book(["防止返贫监测信息系统", "家庭成员信息（导出）"], ROSTER_HEADERS, rows)


def survey_lines(path: Path) -> None:
    """The month's survey records (round 2026-11) beside the roster: 一户's house graded C,
    一户's son in school, 二户's daughter 刘美玲 not insured, 三户's house A."""
    h1_housing = {**_housing(H1, "C")}
    h2_insurance = _insurance(H2, uninsured={_id_of(H2, 2)})
    lines = [
        {
            "village_code": V1,
            "household_no": N1,
            "round": ROUND_1,
            "records": {
                "housing_safety": h1_housing,
                "medical_insurance": _insurance(H1),
                "compulsory_education": H1["compulsory_education"],
            },
        },
        {
            "village_code": V1,
            "household_no": N2,
            "round": ROUND_1,
            "records": {"medical_insurance": h2_insurance},
        },
        {
            "village_code": V2,
            "household_no": N3,
            "round": ROUND_1,
            "records": {"housing_safety": _housing(H3, "A")},
        },
    ]
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines), "utf-8")


def _housing(household: dict[str, Any], grade: str) -> dict[str, Any]:
    data = {k: v for k, v in household["housing_safety"].items() if k != "photos"}
    data["appraisal_grade"] = grade
    if grade in ("C", "D"):
        data.pop("safety_basis", None)  # a 危房 is not safe on any basis
    return data


def _insurance(household: dict[str, Any], uninsured: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    """The household's insurance survey; the ``uninsured`` are left off it (the form records
    the insured: a roster member it does not list is the 基本医保 problem)."""
    data = json.loads(json.dumps(household["medical_insurance"]))
    data["members"] = [m for m in data["members"] if m["id_number"] not in uninsured]
    for member in data["members"]:
        member["_id"] = str(uuid.uuid5(uuid.NAMESPACE_OID, member["id_number"]))
    return data


def medical_list(*, month: int) -> bytes:
    """医保's list. November: 彭秀英 reported dead, 刘美玲 停保 (as the survey has it), two
    strangers of known villages, one of none, a repeat and a person of another county.
    December: everyone insured but 刘美玲 停保 again, 钱七 still listed."""
    rows: list[list[Any]] = []
    people = [(V1, H1, i) for i in range(3)] + [(V1, H2, i) for i in range(3)] + [(V2, H3, 0)]
    for village, household, index in people:
        status = "正常参保"
        if month == 11 and household is H1 and index == 1:
            status = "死亡"
        if household is H2 and index == 2:
            status = "停保"
        rows.append(
            [
                0,
                village,
                "",
                _name_of(household, index),
                _id_of(household, index),
                status,
                "城乡居民",
                "",
            ]
        )
    rows.append([0, V2, "", "吴老伴", WIFE_X, "正常参保", "城乡居民", ""])
    if month == 11:
        rows.append([0, V1, "", "赵六", STRANGER_V1, "正常参保", "城乡居民", "1200"])
        rows.append(
            [0, "", "云南省昆明市五华区二村12号", "钱七", STRANGER_V2, "正常参保", "城乡居民", ""]
        )
        rows.append([0, "", "", "孙八", STRANGER_NOWHERE, "正常参保", "城乡居民", ""])
        rows.append(rows[0])  # the same person twice
        rows.append([0, "530202001201", "", "外县人", OTHER_COUNTY, "正常参保", "城乡居民", ""])
    else:
        rows.append([0, "", "二村", "钱七", STRANGER_V2, "正常参保", "城乡居民", ""])
    for n, row in enumerate(rows, 1):
        row[0] = n
    title = f"2026年{month}月 城乡居民基本医疗保险参保人员名单"
    return _book([title, "导出单位：县医保局"], MEDICAL_HEADERS, rows)


def education_list() -> bytes:
    rows = [[V1, _name_of(H1, 2), _id_of(H1, 2), "辍学", "一村小学"]]
    return _book(
        ["2026年11月 义务教育在校生名单"],
        ["行政区划代码", "姓名", "证件号码", "在校状态", "学校"],
        rows,
    )


def disability_list() -> bytes:
    rows = [[V1, _name_of(H2, 0), _id_of(H2, 0) + "43", "肢体", "四级"]]
    return _book(
        ["2026年11月 持证残疾人名单"],
        ["行政区划代码", "姓名", "证件号码", "残疾类别", "残疾等级"],
        rows,
    )


def civil_affairs_list() -> bytes:
    rows = [[V2, _name_of(H3, 0), _id_of(H3, 0), "农村低保"]]
    return _book(
        ["2026年11月 低保特困人员名单"], ["行政区划代码", "姓名", "证件号码", "救助类别"], rows
    )


# --- talking to the county server ----------------------------------------------------------------


def import_list(
    admin: AdminSession, department: str, period: str, content: bytes, name: str
) -> dict[str, Any]:
    """POST a department file to ``/api/v1/department-lists`` (multipart, as the page does)."""
    boundary = uuid.uuid4().hex
    fields = {"department": department, "period": period, "as_of": f"{period}-28", "area": COUNTY}
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        "\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    response = admin.transport.request(
        "POST",
        "/api/v1/department-lists",
        body,
        {**admin.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status in (200, 201), response.body[:500]
    return response.json()


class WebSession:
    """A browser's session on the admin pages (cookie, CSRF token) over real HTTP."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        self.token = ""
        self.get("/login")
        self.post("/login", {"username": username, "password": password})
        self.get("/")  # the session is new after signing in: so is its CSRF token

    def get(self, path: str) -> str:
        with self.opener.open(self.url + path, timeout=60) as response:
            text = response.read().decode("utf-8")
        found = re.search(r'name="csrf_token" value="([^"]+)"', text)
        self.token = found.group(1) if found else self.token
        return text

    def post(self, path: str, form: dict[str, str]) -> str:
        data = urllib.parse.urlencode({**form, "csrf_token": self.token}).encode()
        try:
            with self.opener.open(self.url + path, data=data, timeout=60) as response:
                return response.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"POST {path}: {exc.code} {exc.read().decode()[:2000]}") from None


def _server_cli(county: CountyServer, *args: str) -> str:
    run = county.cli(*args)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def _device(db: Path, *args: str) -> dict[str, Any]:
    run = device_cli(db, *args)
    assert run.returncode == 0, run.stdout + run.stderr
    return cli_json(run)


def _tasks(admin: AdminSession, status: str = "all") -> list[dict[str, Any]]:
    return list(admin.get(f"/api/v1/tasks?status={status}&limit=500")["items"])


def _codes(task: dict[str, Any]) -> set[str]:
    return {r["code"] for r in task["reasons"]}


def _board_problems(board: dict[str, Any], status: str) -> set[tuple[str, str]]:
    return {(p["household_no"], p["problem"]) for p in board[status]["items"]}


# --- the story ---------------------------------------------------------------------------------


def test_a_county_imports_its_roster_and_lists_the_villages_close_their_tasks_and_the_board_moves(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    web = WebSession(county.url, "admin", county.admin_password)
    web.post("/areas", {"code": V2, "name": "二村"})  # the name 医保's 住址 column uses

    # 1. The roster, in the national layout, twice: the second import changes nothing.
    roster = tmp_path / "家庭成员信息.xlsx"
    roster.write_bytes(roster_file())
    first = _server_cli(county, "import-roster", str(roster), "--area", COUNTY, "--round", ROUND_1)
    again = _server_cli(county, "import-roster", str(roster), "--area", COUNTY, "--round", ROUND_1)
    assert first.startswith("households created 3, changed 0, unchanged 0; people 8"), first
    assert "[duplicate_person]" in first and "[outside_area]" in first  # listed, not imported
    assert again.startswith("households created 0, changed 0, unchanged 3"), again
    households = admin.get("/api/v1/records?form_id=household_roster&limit=50")["items"]
    assert {(r["village_code"], r["household_no"]) for r in households} == {
        (V1, N1),
        (V1, N2),
        (V2, N3),
    }
    survey = tmp_path / "survey.jsonl"
    survey_lines(survey)
    loaded = _server_cli(county, "load-households", str(survey))
    assert "applied 5" in loaded and "rejected" not in loaded, loaded

    # 2. A month of department lists; 住建 the other way round.
    november = medical_list(month=11)
    medical = import_list(admin, "medical_insurance", "2026-11", november, "医保.xlsx")
    assert medical["counts"]["problems"] == {
        "not_in_roster": 3,
        "duplicate_row": 1,
        "other_county": 1,
    }, medical
    assert import_list(admin, "medical_insurance", "2026-11", november, "医保.xlsx")[
        "already_imported"
    ]  # the same file twice: nothing new
    import_list(admin, "education", "2026-11", education_list(), "教育.xlsx")
    import_list(admin, "disability", "2026-11", disability_list(), "残联.xlsx")
    import_list(admin, "civil_affairs", "2026-11", civil_affairs_list(), "民政.xlsx")
    to_appraise = tmp_path / "待鉴定.xlsx"
    _server_cli(county, "export-housing-appraisal", "--area", COUNTY, "--out", str(to_appraise))
    book = openpyxl.load_workbook(to_appraise)
    sheet = book.active
    header_row = next(
        n for n, row in enumerate(sheet.iter_rows(values_only=True), 1) if "鉴定等级" in row
    )
    headers = [c.value for c in sheet[header_row]]
    listed = {}
    for cells in sheet.iter_rows(min_row=header_row + 1):
        number = cells[headers.index("户编号")].value
        listed[number] = cells
        cells[headers.index("鉴定等级")].value = "D" if number == N1 else "C"
    assert set(listed) == {N1, N2}  # 一户's house is C, 二户 has no appraisal; 三户's is A
    graded = io.BytesIO()
    book.save(graded)
    import_list(admin, "housing", "2026-11", graded.getvalue(), "住建鉴定.xlsx")

    # 3. One task per household with every department's reasons; village-level tasks for the
    #    listed strangers of known villages; the one of no village stays on the round's list.
    opened = _tasks(admin)
    by_household = {t["household_no"]: t for t in opened if t["household_no"]}
    assert _codes(by_household[N1]) == {
        "department_not_insured",
        "department_reports_deceased",
        "department_not_enrolled",
    }
    assert _codes(by_household[N2]) == {"department_disability_card", "department_house_unsafe"}
    assert _codes(by_household[N3]) == {"department_assistance_flag_missing"}
    village_tasks = {t["village_code"]: t for t in opened if t["level"] == "village"}
    assert set(village_tasks) == {V1, V2} and len(opened) == 5
    assert all(_codes(t) == {"department_not_in_roster"} for t in village_tasks.values())
    assert "赵六" in village_tasks[V1]["reasons"][0]["message"]["zh"]
    unmatched = admin.get(f"/api/v1/department-lists/{medical['round_id']}/unmatched")["items"]
    assert {r["name"] for r in unmatched if r["problem"] == "not_in_roster"} == {
        "赵六",
        "钱七",
        "孙八",
    }
    (nowhere,) = [r for r in unmatched if r["name"] == "孙八"]
    assert "村级核实任务" not in nowhere["message"]["zh"]  # no village to tell: the list only
    assert not any(STRANGER_V1 in json.dumps(t, ensure_ascii=False) for t in opened)
    task_page = web.get("/tasks")
    assert "村级任务（核实名单人员是否为本村人员）" in task_page and N1 in task_page

    # 4. 一村's tablet: the tasks of its village only, worked offline beside December's records.
    tablet = tmp_path / "tablet.db"
    assert device_cli(tablet, "init").returncode == 0
    _device(tablet, "enroll", "--server", county.url, "--code", admin.issue_code(V1))
    _device(tablet, "sync")  # (enrolling already brought the tasks down)
    on_tablet = {
        (t["household"]["household_no"] if t.get("level") != "village" else "village"): t
        for t in _device(tablet, "tasks")["tasks"]
    }
    assert set(on_tablet) == {N1, N2, "village"} and len(on_tablet) == 3
    listing = device_cli(tablet, "tasks", as_json=False).stdout
    assert "村级任务" in listing and "赵六" in listing
    for form_id, household, data in (
        ("housing_safety", N1, _housing(H1, "B")),  # renovated: the evidence
        ("medical_insurance", N2, _insurance(H2)),  # 刘美玲 insured now
    ):
        record = tmp_path / f"{form_id}.json"
        record.write_text(json.dumps(data, ensure_ascii=False), "utf-8")
        _device(
            tablet, "fill", form_id, "--household", f"{V1}/{household}", "--round", ROUND_2,
            "--from", str(record),
        )  # fmt: skip
    _device(tablet, "task", on_tablet[N1]["task_id"], "--outcome", "data_error", "--detail",
            "death", "--note", "彭秀英十月去世")  # fmt: skip
    _device(tablet, "task", on_tablet[N2]["task_id"], "--outcome", "start_identification")
    stranger = on_tablet["village"]["task_id"]
    refused = device_cli(tablet, "task", stranger, "--outcome", "start_identification")
    assert refused.returncode == 1
    assert "村级任务的核查结果应为" in cli_json(refused)["error"]["message"]["zh"]
    _device(tablet, "task", stranger, "--outcome", "not_village_resident", "--note", "外村务工人员")
    synced = _device(tablet, "sync")
    assert synced["ops_acked"] == 5 and synced["pending_ops"] == 0, synced

    worked = {t["id"]: t for t in _tasks(admin, "worked")}
    assert set(worked) == {on_tablet[k]["task_id"] for k in (N1, N2, "village")}
    assert worked[stranger]["outcome"]["outcome"] == "not_village_resident"
    for task_id in worked:
        admin.post(f"/api/v1/tasks/{task_id}/close", {"note": "核实无误"})

    # 5. The outcomes back to the department, one row per its reason (the village-level one too).
    out = tmp_path / "医保结果.csv"
    _server_cli(
        county, "export-task-outcomes", "--department", "medical_insurance", "--out", str(out)
    )
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert {(r["户编号"], r["问题代码"], r["核查结果代码"]) for r in rows} == {
        (N1, "department_not_insured", "data_error"),
        (N1, "department_reports_deceased", "data_error"),
        ("", "department_not_in_roster", "not_village_resident"),
        ("", "department_not_in_roster", ""),  # 钱七's task in 二村: still open
    }

    # 6. The board: both problems of November await the next round, with their evidence.
    board = admin.get("/api/v1/board?level=village")
    assert _board_problems(board, "clearing") == {(N1, "housing"), (N2, "insurance")}, (
        board["total"],
        board["cleared"],
    )
    assert board["cleared"]["total"] == 0
    evidence = {p["household_no"]: p["evidence"] for p in board["clearing"]["items"]}
    assert evidence[N1]["form_id"] == "housing_safety" and evidence[N1]["round"] == ROUND_2
    rates = {(r["source"], r["code"]): r for r in board["false_positives"]}
    assert rates[("dept:medical_insurance", "department_reports_deceased")]["rate"] == 1.0
    assert rates[("dept:disability", "department_disability_card")]["rate"] == 0.0
    assert rates[("dept:medical_insurance", "department_not_in_roster")]["rate"] == 1.0

    # 7. Next month: 医保 lists 刘美玲 停保 again — her household's problem is back; 一户's
    #    house stays safe in the next round, so its problem is cleared.
    import_list(admin, "medical_insurance", "2026-12", medical_list(month=12), "医保12月.xlsx")
    fresh = [t for t in _tasks(admin, "open") if t["village_code"] == V1]
    assert [(t["household_no"], _codes(t)) for t in fresh] == [(N2, {"department_not_insured"})]
    still = [t for t in _tasks(admin, "open") if t["level"] == "village"]
    assert len(still) == 1 and len(still[0]["reasons"]) == 2  # 钱七 again: the same open task
    assert _device(tablet, "sync")["tasks_received"] >= 1
    # The round's own roster beside its insurance record: a round judges 基本医保 by its own
    # records, and 刘美玲 is on the roster but not insured.
    for form_id, household, data in (
        ("housing_safety", N1, _housing(H1, "B")),
        ("household_roster", N2, H2["household_roster"]),
        ("medical_insurance", N2, _insurance(H2, uninsured={_id_of(H2, 2)})),
    ):
        record = tmp_path / f"{form_id}-3.json"
        record.write_text(json.dumps(data, ensure_ascii=False), "utf-8")
        _device(
            tablet, "fill", form_id, "--household", f"{V1}/{household}", "--round", ROUND_3,
            "--from", str(record),
        )  # fmt: skip
    _device(tablet, "task", fresh[0]["id"], "--outcome", "already_monitored")
    synced = _device(tablet, "sync")
    assert synced["pending_ops"] == 0 and not synced.get("ops_rejected"), synced

    board = admin.get("/api/v1/board?level=village")
    assert _board_problems(board, "cleared") == {(N1, "housing")}, board
    assert _board_problems(board, "open_problems") == {(N2, "insurance")}, board
    (back,) = board["open_problems"]["items"]
    assert back["recurring"] and back["found_round"] == ROUND_1 and back["days_open"] >= 0
    v1 = next(a for a in board["areas"] if a["area"] == V1)
    assert v1["open"]["insurance"] == 1 and v1["recurring"]["insurance"] == 1
    assert v1["cleared"]["housing"] == 1 and v1["oldest_open_days"] is not None
    page = web.get("/board?level=village")
    assert "未清零" in page and "已清零" in page and N2 in page

    # 8. A township reviewer of 一村's township sees its own villages only.
    admin.post(
        "/api/v1/users",
        {
            "username": "reviewer",
            "password": "reviewer-password-16",
            "role": "township_reviewer",
            "area_prefix": T1,
        },
    )
    reviewer = AdminSession(HttpTransport(county.url), "reviewer", "reviewer-password-16")
    seen = reviewer.get("/api/v1/tasks?status=all&limit=100")["items"]
    assert seen and {t["village_code"] for t in seen} == {V1}
    reviewed = reviewer.get("/api/v1/board?level=village")
    assert {a["area"] for a in reviewed["areas"]} <= {V1}
    assert all(p["village_code"] == V1 for p in reviewed["open_problems"]["items"])
    forbidden = reviewer.transport.request(
        "GET", f"/api/v1/board?area={T2}", None, reviewer.headers
    )
    assert forbidden.status == 403
