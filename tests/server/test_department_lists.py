"""Department lists: generated files in the departments' layouts (title rows, text IDs ending
in X, a full-width digit, a duplicate person, a dead person, a person of another county, an ID
Excel turned into a number) imported as rounds, matched to the roster, sealed at rest, scoped
and audited; the cross-checks' signals per household (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from click.testing import CliRunner
from flask import Flask

from forms.instruments.samples import sample_household
from server.cli import main
from server.errors import Forbidden, ValidationFailed
from server.services import department_lists as dept
from server.services import monitoring
from server.services.access import (
    CLI_ACTOR,
    COUNTY_ADMIN,
    TOWNSHIP_REVIEWER,
    Actor,
    Principal,
)
from server.services.context import EXTENSION_KEY
from server.services.task_reasons import HouseholdSignal
from server.storage import audit
from tests.server.conftest import add_user, assert_error, login
from tests.server.department_files import (
    COUNTY,
    OTHER_COUNTY_VILLAGE,
    birth_of,
    county_households,
    full_width,
    load_county,
    valid_id,
    workbook,
    wrong_check,
)
from tests.server.sync_device import FAR_VILLAGE, TOWNSHIP, VILLAGE, county

__all__ = ["county"]  # the fixture, imported for pytest

MEDICAL_HEADERS = [
    "序号",
    "行政区划代码",
    "姓名",
    "证件号码",
    "出生日期",
    "参保状态",
    "险种",
    "个人自付",
]
PERIOD = "2026-11"
AS_OF = "2026-11-30"
ADMIN = Principal(user_id=0, username="cli", role=COUNTY_ADMIN, area_prefix="")


class CollectingSink:
    """The task-service contract, as a list: every call's signals and origin."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[HouseholdSignal]]] = []

    def __call__(self, signals: Iterable[HouseholdSignal], *, origin: str) -> None:
        self.calls.append((origin, list(signals)))


@pytest.fixture
def households() -> list[dict[str, Any]]:
    return county_households()


@pytest.fixture
def loaded(county: Flask, households: list[dict[str, Any]]) -> Flask:
    load_county(county, households)
    with county.app_context():
        # An out-of-pocket threshold for the prefecture in 2026 (configuration, not code).
        monitoring.set_line(
            "5301", 2026, 8700, {"medical_out_of_pocket_yuan": 20000}, actor=CLI_ACTOR
        )
    return county


def _members(household: dict[str, Any]) -> list[dict[str, Any]]:
    return household["household_roster"]["members"]


def medical_rows(households: list[dict[str, Any]]) -> list[list[Any]]:
    """The 医保 list: H1 left out, H2 all insured with a large out-of-pocket (and its head
    twice), H3 one member not enrolled and one with a mistyped ID, H4's head dead, H5 and H6
    all insured, the far household with one member not enrolled, and four people nobody has."""
    _h1, h2, h3, h4, h5, h6, far = households
    rows: list[list[Any]] = []

    def add(
        h: dict[str, Any], member: dict[str, Any], status: str = "正常参保", **more: Any
    ) -> None:
        rows.append(
            [
                len(rows) + 1,
                h["household_roster"]["village_code"],
                member["name"],
                more.get("id_number", member["id_number"]),
                birth_of(member["id_number"]),
                status,
                "城乡居民基本医疗保险",
                more.get("out_of_pocket", ""),
            ]
        )

    a, b, c = _members(h2)
    add(h2, a, out_of_pocket="18000")
    add(h2, b, id_number=full_width(b["id_number"]), out_of_pocket="12000.50")
    add(h2, c, id_number=c["id_number"].lower())
    add(h2, a)  # the same person twice
    head, spouse, son = _members(h3)
    add(h3, head)
    add(h3, spouse, status="未参保")
    add(h3, son, id_number=wrong_check(son["id_number"]))  # found by name + birth + village
    add(h4, _members(h4)[0], status="终止参保（死亡）", out_of_pocket="50000")
    for h in (h5, h6):
        for member in _members(h):
            add(h, member)
    far_members = _members(far)
    for member in far_members[:-1]:
        assert member["id_number"].endswith("X")  # typed with a lower-case x
        add(far, member, id_number=member["id_number"].lower())
    add(far, far_members[-1], status="未参保")
    stranger = valid_id("530102", "19851010", 77)
    rows.append([90, VILLAGE, "李四", stranger, birth_of(stranger), "正常参保", "", ""])
    far_away = valid_id("530202", "19800101", 12)
    rows.append([91, OTHER_COUNTY_VILLAGE, "王五", far_away, "", "正常参保", "", ""])
    rows.append([92, VILLAGE, "查无此人", "12345", "", "正常参保", "", ""])
    rows.append([93, VILLAGE, "赵七", 5.30102199001011e17, "", "正常参保", "", ""])
    return rows


def _import(app: Flask, content: bytes, sink: Any, **kwargs: Any) -> dept.ImportResult:
    with app.app_context():
        ctx = app.extensions[EXTENSION_KEY]
        return dept.import_department_list(
            ctx,
            kwargs.pop("actor", CLI_ACTOR),
            content,
            department=kwargs.pop("department", "medical_insurance"),
            period=PERIOD,
            as_of=AS_OF,
            area=kwargs.pop("area", COUNTY),
            sink=sink,
            **kwargs,
        )


def _by_household(signals: list[HouseholdSignal]) -> dict[tuple[str, str], set[str]]:
    return {
        (s.household.village_code, s.household.household_no): {r.code for r in s.reasons}
        for s in signals
    }


def test_a_medical_list_is_a_round_with_the_right_reasons_per_household(
    loaded: Flask, households: list[dict[str, Any]]
) -> None:
    sink = CollectingSink()
    content = workbook(MEDICAL_HEADERS, medical_rows(households))
    result = _import(loaded, content, sink, file_name="医保2026-11.xlsx")

    assert result.already_imported is False and result.signals_delivered is True
    counts = result.counts
    assert counts["rows"] == 23
    assert counts["matched"] == 18 and counts["matched_by_name_birth_village"] == 1
    assert counts["problems"] == {
        "duplicate_row": 1,
        "not_in_roster": 1,
        "other_county": 1,
        "bad_id": 2,
    }

    ((origin, signals),) = sink.calls
    assert origin == f"department_round:{result.round_id}"
    number = {i: h["household_roster"]["household_no"] for i, h in enumerate(households, 1)}
    found = _by_household(signals)
    assert found == {
        (VILLAGE, number[1]): {"department_not_insured"},  # left off the list
        (VILLAGE, number[2]): {"department_medical_out_of_pocket_high"},  # 30,000.50 > 20,000
        (VILLAGE, number[3]): {"department_not_insured"},
        # dead and not insured; its 50,000 out-of-pocket is no finding: it is monitored
        (VILLAGE, number[4]): {"department_reports_deceased", "department_not_insured"},
        (FAR_VILLAGE, number[7]): {"department_not_insured"},
        (VILLAGE, ""): {"department_not_in_roster"},  # a village-level finding
    }
    assert all(r.source == "dept:medical_insurance" for s in signals for r in s.reasons)
    # The head whose ID ends in x (typed lower-case) matched and is insured: one reason only,
    # for the member the list has as not enrolled.
    (far_signal,) = [s for s in signals if s.household.village_code == FAR_VILLAGE]
    assert [r.code for r in far_signal.reasons] == ["department_not_insured"]
    stranger = next(s for s in signals if s.household.household_no == "")
    assert stranger.subject.startswith("person:") and stranger.village_level
    (reason,) = stranger.reasons
    assert reason.details["excel_row"] == 3 + 20  # two title rows, the header, row 20 of data
    assert reason.details["id_number"].startswith("530102") and "*" in reason.details["id_number"]
    assert reason.message_zh.startswith("医保名单第23行的李四")
    # Every reason is bilingual and carries no ID in clear.
    ids = {m["id_number"] for h in households for m in _members(h)}
    for s in signals:
        for r in s.reasons:
            assert r.message_zh and r.message_en
            assert not any(i in str(r.to_dict()) for i in ids)

    with loaded.app_context():
        rows, total = dept.round_rows(
            loaded.extensions[EXTENSION_KEY], ADMIN, CLI_ACTOR, result.round_id
        )
    assert total == 5
    shown = {(r.excel_row, r.problem) for r in rows}
    assert shown == {(7, "duplicate_row"), (23, "not_in_roster"), (24, "other_county")} | {
        (25, "bad_id"),
        (26, "bad_id"),
    }
    lossy = next(r for r in rows if r.excel_row == 26)
    assert "lossy_number" in lossy.message["en"]
    duplicate = next(r for r in rows if r.problem == "duplicate_row")
    assert duplicate.message["zh"] == "与第4行是同一人"
    stranger_row = next(r for r in rows if r.problem == "not_in_roster")
    assert stranger_row.message["zh"].endswith(f"已转为村 {VILLAGE} 的村级核实任务")
    assert all("*" in r.id_number or r.id_number in ("", "***") for r in rows)


def test_the_same_file_twice_is_a_no_op_that_says_so(
    loaded: Flask, households: list[dict[str, Any]]
) -> None:
    sink = CollectingSink()
    content = workbook(MEDICAL_HEADERS, medical_rows(households))
    first = _import(loaded, content, sink)
    again = _import(loaded, content, sink)
    assert again.already_imported is True and again.round_id == first.round_id
    assert again.counts == first.counts
    assert len(sink.calls) == 1  # nothing handed over twice
    with loaded.app_context():
        rounds = dept.list_rounds(ADMIN)
    assert [r.id for r in rounds] == [first.round_id]


def test_rows_are_sealed_at_rest(
    loaded: Flask, households: list[dict[str, Any]], database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the file check reads the SQLite file")
    content = workbook(MEDICAL_HEADERS, medical_rows(households))
    _import(loaded, content, CollectingSink())
    from server.settings import sqlite_path

    db_file = sqlite_path(database_url)
    assert db_file is not None
    stored = b"".join(p.read_bytes() for p in (db_file, Path(f"{db_file}-wal")) if p.exists())
    # The stranger and the person of another county exist only in the department file.
    stranger = valid_id("530102", "19851010", 77)
    far_away = valid_id("530202", "19800101", 12)
    for number in (stranger, far_away):
        assert number.encode() not in stored
    # Nor a name that only the file has, nor a medical amount (a cell, a household's total).
    for text in ("李四", "12000.50", "30000.5"):
        assert text.encode() not in stored, text
    # After a key rotation the rows sealed under the old key still open.
    with loaded.app_context():
        ctx = loaded.extensions[EXTENSION_KEY]
        ctx.keys.rotate()
        rows, total = dept.round_rows(ctx, ADMIN, CLI_ACTOR, 1)
    assert total == 5 and {r.name for r in rows} >= {"李四", "王五"}


def test_a_township_reviewer_sees_only_its_townships(
    loaded: Flask, households: list[dict[str, Any]]
) -> None:
    result = _import(loaded, workbook(MEDICAL_HEADERS, medical_rows(households)), CollectingSink())
    near = Principal(user_id=5, username="near", role=TOWNSHIP_REVIEWER, area_prefix=TOWNSHIP)
    far = Principal(user_id=6, username="far", role=TOWNSHIP_REVIEWER, area_prefix=FAR_VILLAGE[:9])
    with loaded.app_context():
        ctx = loaded.extensions[EXTENSION_KEY]
        (seen_near,) = dept.list_rounds(near)
        (seen_far,) = dept.list_rounds(far)
        near_rows, _ = dept.round_rows(ctx, near, Actor("near", None, TOWNSHIP), result.round_id)
        far_rows, _ = dept.round_rows(
            ctx, far, Actor("far", None, FAR_VILLAGE[:9]), result.round_id
        )
        all_near, _ = dept.round_rows(
            ctx, near, Actor("near", None, TOWNSHIP), result.round_id, unmatched_only=False
        )
    far_count = len(_members(households[6]))
    assert seen_far.counts["rows"] == far_count and seen_far.counts["unmatched"] == 0
    assert seen_far.households_signalled == 1
    assert seen_near.households_signalled == 5
    assert seen_near.counts["rows"] == 23 - far_count - 1  # minus the row of no known village
    # The unmatched rows of the reviewer's village; the ones of no known village stay hidden.
    assert {r.excel_row for r in near_rows} == {7, 23, 25, 26}
    assert far_rows == []
    assert {r.village_code for r in all_near} == {VILLAGE}
    with loaded.app_context():
        entries = audit.list_entries("", limit=20)
    reads = [e for e in entries if e.action == "department_rows.read"]
    assert {e.actor for e in reads} == {"near", "far"}
    assert any(e.action == "department_list.import" for e in entries)


def test_a_saved_mapping_is_reused_and_a_missing_header_is_located(
    loaded: Flask, households: list[dict[str, Any]]
) -> None:
    h2 = households[1]
    headers = ["姓名", "身份证号", "在校情况", "就读学校"]
    child = _members(h2)[1]  # 刘翠萍, born 2009: 17 in the 2026 school year
    rows = [[child["name"], child["id_number"], "在校", "某某中学"]]
    with loaded.app_context():
        dept.save_mapping(
            CLI_ACTOR,
            COUNTY,
            "education",
            {"id_number": "身份证号", "name": "姓名", "status": "在校情况", "school": "就读学校"},
        )
        mapping = dept.get_mapping(ADMIN, COUNTY, "education")
    assert mapping.saved and mapping.columns["id_number"] == "身份证号"
    result = _import(
        loaded, workbook(headers, rows, titles=3), CollectingSink(), department="education"
    )
    assert result.counts["matched"] == 1 and result.counts["unmatched"] == 0

    # Next month's file lost a column: the error names it and the row that came closest.
    with pytest.raises(ValidationFailed) as missing:
        _import(
            loaded,
            workbook(["姓名", "身份证号", "在校情况"], rows, titles=1),
            CollectingSink(),
            department="education",
        )
    assert missing.value.code == "department_header_missing"
    assert missing.value.details == {"missing": ["就读学校"], "row": 2}
    assert "就读学校" in missing.value.message_zh and "第2行" in missing.value.message_zh

    with loaded.app_context(), pytest.raises(ValidationFailed) as bad:
        dept.save_mapping(CLI_ACTOR, COUNTY, "education", {"name": "姓名", "status": "姓名"})
    assert bad.value.code == "department_mapping_invalid"
    assert set(bad.value.details["fields"]) == {"id_number", "status"}


def test_disability_and_housing_lists_contradicting_the_survey(
    loaded: Flask, households: list[dict[str, Any]]
) -> None:
    h2, h5 = households[1], households[4]
    healthy = _members(h2)[0]
    assert healthy["health"] == ["健康"]
    content = workbook(
        ["姓名", "证件号码", "残疾证号", "残疾类别", "残疾等级"],
        [
            [
                healthy["name"],
                healthy["id_number"] + "43",
                healthy["id_number"] + "43",
                "肢体",
                "三级",
            ]
        ],
    )
    sink = CollectingSink()
    _import(loaded, content, sink, department="disability")
    number = h2["household_roster"]["household_no"]
    assert _by_household(sink.calls[0][1]) == {(VILLAGE, number): {"department_disability_card"}}

    assert h5["housing_safety"]["appraisal_grade"] == "B"
    head = _members(h5)[0]
    content = workbook(
        ["户主姓名", "证件号码", "鉴定等级"], [[head["name"], head["id_number"], "Ｄ"]]
    )
    sink = CollectingSink()
    with loaded.app_context():
        dept.save_mapping(
            CLI_ACTOR,
            COUNTY,
            "housing",
            {"id_number": "证件号码", "name": "户主姓名", "grade": "鉴定等级"},
        )
    _import(loaded, content, sink, department="housing")
    # The disability file had no birth date or village column: the saved mapping has neither.
    with loaded.app_context():
        saved = dept.get_mapping(ADMIN, COUNTY, "disability")
    assert saved.saved
    assert set(saved.columns) == {"id_number", "name", "card_no", "category", "grade"}
    ((_, signals),) = sink.calls
    (signal,) = signals
    (reason,) = signal.reasons
    assert reason.code == "department_house_unsafe"
    assert reason.details["department_grade"] == "D" and reason.details["survey_grade"] == "B"


def test_bad_parameters_are_clear_errors(loaded: Flask) -> None:
    with pytest.raises(ValidationFailed) as unknown:
        _import(loaded, b"", CollectingSink(), department="tax_office")
    assert unknown.value.code == "department_unknown"
    with pytest.raises(ValidationFailed) as garbage:
        _import(loaded, b"not a workbook", CollectingSink())
    assert garbage.value.code == "department_file_unreadable"
    reviewer = Actor("r", 9, "530102001")
    with pytest.raises(Forbidden):
        _import(loaded, b"", CollectingSink(), actor=reviewer, area="530102002")


def test_the_cli_imports_a_list(
    loaded: Flask, households: list[dict[str, Any]], database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "医保.xlsx"
    path.write_bytes(workbook(MEDICAL_HEADERS, medical_rows(households)))
    env = {
        "VILLAGE_SYNC_DATABASE_URL": database_url,
        "VILLAGE_SYNC_KEY_DIR": loaded.config["KEY_DIR"],
    }
    args = [
        "import-department",
        "--department",
        "medical_insurance",
        "--period",
        PERIOD,
        "--as-of",
        AS_OF,
        "--area",
        COUNTY,
        str(path),
    ]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert "rows 23, matched 18" in result.output
    assert "第24行 [other_county]" in result.output
    assert "tasks handed over" in result.output
    again = CliRunner().invoke(main, args, env=env)
    assert again.exit_code == 0 and "already imported" in again.output


def test_the_api_imports_lists_and_shows_rounds_and_unmatched_rows(
    loaded: Flask, households: list[dict[str, Any]]
) -> None:
    client = loaded.test_client()
    add_user(loaded, "admin")
    add_user(loaded, "near", TOWNSHIP_REVIEWER, TOWNSHIP)
    admin, near = login(client, "admin"), login(client, "near")
    content = workbook(MEDICAL_HEADERS, medical_rows(households))

    def upload() -> Any:
        return client.post(
            "/api/v1/department-lists",
            data={
                "department": "medical_insurance",
                "period": PERIOD,
                "as_of": AS_OF,
                "area": COUNTY,
                "file": (io.BytesIO(content), "医保.xlsx"),
            },
            headers=admin,
            content_type="multipart/form-data",
        )

    first = upload()
    assert first.status_code == 201, first.get_json()
    body = first.get_json()
    assert body["counts"]["rows"] == 23 and body["already_imported"] is False
    # The findings become verification tasks, one per household, in the same transaction.
    assert body["signals_delivered"] is True and body["households_signalled"] == 6
    opened = client.get("/api/v1/tasks", headers=admin).get_json()
    assert opened["total"] == 6
    # The listed stranger of a known village is that village's task, with no household.
    (village_task,) = [t for t in opened["items"] if t["level"] == "village"]
    assert village_task["household_no"] is None
    assert [r["code"] for r in village_task["reasons"]] == ["department_not_in_roster"]
    origins = {r["origin"] for t in opened["items"] for r in t["reasons"]}
    assert origins == {f"department_round:{body['round_id']}"}
    again = upload()
    assert again.status_code == 200 and again.get_json()["already_imported"] is True
    assert client.get("/api/v1/tasks", headers=admin).get_json()["total"] == opened["total"]

    round_id = body["round_id"]
    (listed,) = client.get("/api/v1/department-lists", headers=near).get_json()
    assert listed["id"] == round_id and listed["department_name"]["zh"] == "医保"
    assert listed["households_signalled"] == 5
    page = client.get(f"/api/v1/department-lists/{round_id}/unmatched", headers=near).get_json()
    assert [r["excel_row"] for r in page["items"]] == [7, 23, 25, 26] and page["total"] == 4
    ids = {m["id_number"] for h in households for m in _members(h)}
    assert not any(i in json.dumps(page, ensure_ascii=False) for i in ids)
    stranger = page["items"][1]
    assert stranger["problem"] == "not_in_roster" and "*" in stranger["id_number"]

    assert_error(
        client.post(
            "/api/v1/department-lists",
            data={
                "department": "medical_insurance",
                "period": PERIOD,
                "as_of": AS_OF,
                "area": COUNTY,
            },
            headers=admin,
            content_type="multipart/form-data",
        ),
        400,
        "department_import_invalid",
    )
    assert_error(
        client.post("/api/v1/department-lists", data={}, headers=near),
        403,
        "role_forbidden",
    )
    assert_error(
        client.get("/api/v1/department-lists/999/unmatched", headers=admin),
        404,
        "department_round_not_found",
    )

    mapping = client.get(
        f"/api/v1/department-lists/mappings/medical_insurance?area={COUNTY}", headers=admin
    ).get_json()
    assert mapping["saved"] and mapping["columns"]["out_of_pocket"] == "个人自付"
    saved = client.put(
        "/api/v1/department-lists/mappings/medical_insurance",
        json={"area": COUNTY, "columns": {**mapping["columns"], "out_of_pocket": "自付金额"}},
        headers=admin,
    )
    assert saved.status_code == 200 and saved.get_json()["columns"]["out_of_pocket"] == "自付金额"
    document = client.get("/api/v1/openapi.json").get_json()
    assert "/api/v1/department-lists/{round_id}/unmatched" in document["paths"]


def test_housing_goes_the_other_way_round_export_to_appraise_then_import_the_grades(
    loaded: Flask, households: list[dict[str, Any]]
) -> None:
    # A household the team has not surveyed for housing yet: it is the one to appraise.
    newcomer = sample_household(8, village_code=VILLAGE)
    load_county(loaded, [{"household_roster": newcomer["household_roster"]}])
    assert all(h["housing_safety"]["appraisal_grade"] in ("A", "B") for h in households)
    with loaded.app_context():
        content, listed = dept.housing_appraisal_list(ADMIN, CLI_ACTOR, area=COUNTY)
    assert listed == 1
    sheet = openpyxl.load_workbook(io.BytesIO(content)).active
    rows = [[c.value for c in row] for row in sheet.iter_rows()]
    header, (row,) = rows[1], rows[2:]
    head = next(m for m in _members(newcomer) if m["relation"] == "户主")
    filled = dict(zip(header, row, strict=True))
    assert filled["证件号码"] == head["id_number"] and filled["调查记录等级"] == "无记录"

    # 住建 fills the grade in and sends the file back: it imports with the default mapping.
    sheet.cell(row=3, column=header.index("鉴定等级") + 1, value="C")
    back = io.BytesIO()
    sheet.parent.save(back)
    sink = CollectingSink()
    result = _import(loaded, back.getvalue(), sink, department="housing")
    assert result.counts["matched"] == 1 and result.counts["unmatched"] == 0
    # A 危房 the survey never graded is a finding: the grade does not stop at the import.
    ((_, signals),) = sink.calls
    (signal,) = signals
    (reason,) = signal.reasons
    assert reason.code == "department_house_unsafe" and reason.details["survey_grade"] == ""
    assert reason.message_zh == "住建部门鉴定为C级危房，调查尚未鉴定，请核实"

    reviewer = Principal(user_id=5, username="near", role=TOWNSHIP_REVIEWER, area_prefix=TOWNSHIP)
    with loaded.app_context(), pytest.raises(Forbidden):
        dept.housing_appraisal_list(reviewer, CLI_ACTOR, area=TOWNSHIP)
