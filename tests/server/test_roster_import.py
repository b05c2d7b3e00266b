"""The roster in and out in the national system's layout: generated workbooks with title rows,
text IDs ending in X, a full-width digit, a duplicate person, a person of another county and an
ID Excel already turned into a number (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from click.testing import CliRunner
from flask import Flask

from forms.identity import id_check_char
from server.cli import main
from server.errors import Forbidden, ValidationFailed
from server.services.access import CLI_ACTOR, CLI_PRINCIPAL, TOWNSHIP_REVIEWER, Actor, Principal
from server.services.roster_import import COLUMNS, export_roster, import_roster, read_roster
from server.storage import records
from tests.server.sync_device import VILLAGE, county

__all__ = ["county"]  # the fixture, imported for pytest

HEADERS = [header for header, _ in COLUMNS]
COUNTY = VILLAGE[:6]
ROUND = "2026-annual"


def _id(birth: str, sequence: int, *, male: bool, ending_x: bool = False) -> str:
    for seq in range(sequence, sequence + 100):
        first17 = f"530102{birth}{seq % 100:02d}{1 if male else 2}"
        check = id_check_char(first17)
        if (check == "X") == ending_x:
            return first17 + check
    raise AssertionError("no such number")


HEAD = _id("19700101", 10, male=True, ending_x=True)
SPOUSE = _id("19720305", 20, male=False)
SON = _id("20100601", 30, male=True)
FAR = _id("19800101", 40, male=True)


def _person(
    household_no: str, name: str, sex: str, number: Any, relation: str, **more: str
) -> dict[str, Any]:
    row = {
        "行政区划代码": VILLAGE,
        "户编号": household_no,
        "户类型": "脱贫户",
        "联系电话": "13800138000",
        "姓名": name,
        "性别": sex,
        "证件类型": "居民身份证",
        "证件号码": number,
        "与户主关系": relation,
        "文化程度": "初中",
        "在校生状况": "",
        "健康状况": "健康",
        "劳动技能": "普通劳动力",
    }
    row.update(more)
    return row


def _workbook(rows: list[dict[str, Any]], *, title_rows: int = 2) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    for n in range(title_rows):
        sheet.append([f"防止返贫监测信息系统 家庭成员信息（第{n + 1}行标题）"])
    sheet.append(HEADERS)
    for row in rows:
        sheet.append([row.get(h) for h in HEADERS])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _full_width_digit(number: str) -> str:
    return chr(ord(number[0]) + 0xFEE0) + number[1:]


def roster_rows() -> list[dict[str, Any]]:
    return [
        # a trailing lower-case x and leading-zero household number, read as text
        _person("0053010200101", "张三", "男", HEAD.lower(), "户主"),
        _person("0053010200101", "李梅", "女", _full_width_digit(SPOUSE), "配偶"),
        _person(
            "0053010200101",
            "张小",
            "男",
            SON,
            "之子",
            文化程度="",
            在校生状况="九年级",
            劳动技能="无劳动力",
        ),
        _person("0053010200101", "张三", "男", HEAD, "户主"),  # listed twice
        _person("F1", "王五", "男", FAR, "户主", 行政区划代码="530202001201"),  # another county
        _person("0053010200102", "赵六", "男", 530102199001011230, "户主"),  # a number cell
    ]


def test_import_then_reimport_changes_nothing_and_lists_what_it_refused(county: Flask) -> None:
    content = _workbook(roster_rows())
    with county.app_context():
        report = import_roster(CLI_ACTOR, content, round=ROUND, area=COUNTY)
    assert report.created == [f"{VILLAGE}/0053010200101"]
    assert report.people == 3
    problems = {(p.row, p.column, p.code) for p in report.problems}
    # Title rows 1-2, header row 3, people from row 4.
    assert problems == {
        (7, "证件号码", "duplicate_person"),
        (8, "行政区划代码", "outside_area"),
        (9, "证件号码", "lossy_number"),
    }
    duplicate = next(p for p in report.problems if p.code == "duplicate_person")
    assert duplicate.message["zh"].startswith("证件号码与第4行相同")
    assert "row 4" in duplicate.message["en"]

    with county.app_context():
        again = import_roster(CLI_ACTOR, content, round=ROUND, area=COUNTY)
    assert again.created == [] and again.changed == []
    assert again.unchanged == [f"{VILLAGE}/0053010200101"]

    # Export in the same layout, re-import: still nothing changes; the IDs are in standard form.
    with county.app_context():
        data = _roster_data(county)
    assert [m["id_number"] for m in data["members"]] == [HEAD, SPOUSE, SON]
    assert HEAD.endswith("X")
    with county.app_context():
        exported = export_roster(CLI_PRINCIPAL, CLI_ACTOR, area=COUNTY, round=ROUND)
    people, unread = read_roster(exported)
    assert unread == []
    assert [p.cells["id_number"] for p in people] == [HEAD, SPOUSE, SON]
    assert {p.cells["household_no"] for p in people} == {"0053010200101"}
    with county.app_context():
        third = import_roster(CLI_ACTOR, exported, round=ROUND, area=COUNTY)
    assert third.unchanged == [f"{VILLAGE}/0053010200101"] and third.problems == []


def test_a_changed_value_is_one_change_and_keeps_what_the_team_recorded(county: Flask) -> None:
    rows = roster_rows()[:3]
    with county.app_context():
        import_roster(CLI_ACTOR, _workbook(rows), round=ROUND, area=COUNTY)
    rows[0]["联系电话"] = "13900139000"
    with county.app_context():
        report = import_roster(CLI_ACTOR, _workbook(rows), round=ROUND, area=COUNTY)
        assert report.changed == [f"{VILLAGE}/0053010200101"]
        assert _roster_data(county)["phone"] == "13900139000"


def test_a_household_the_form_refuses_is_listed_with_its_row(county: Flask) -> None:
    rows = [
        _person("H9", "孙八", "男", HEAD, "户主"),
        _person("H9", "钱七", "女", SON, "配偶"),  # the ID says a man
    ]
    with county.app_context():
        report = import_roster(CLI_ACTOR, _workbook(rows, title_rows=0), round=ROUND, area=COUNTY)
    assert report.created == []
    (problem,) = report.problems
    assert (problem.row, problem.column) == (3, "性别")
    assert {p.code for p in report.problems} == {"household_invalid"}
    assert all(p.message["zh"] and p.message["en"] for p in report.problems)


def test_a_file_without_the_header_or_not_a_workbook_is_a_clear_error(county: Flask) -> None:
    book = openpyxl.Workbook()
    book.active.append(["姓名", "身份证"])
    out = io.BytesIO()
    book.save(out)
    with county.app_context():
        with pytest.raises(ValidationFailed) as header:
            import_roster(CLI_ACTOR, out.getvalue(), round=ROUND, area=COUNTY)
        with pytest.raises(ValidationFailed) as garbage:
            import_roster(CLI_ACTOR, b"not a workbook", round=ROUND, area=COUNTY)
    assert header.value.code == "roster_header_missing" and "表头" in header.value.message_zh
    assert garbage.value.code == "roster_unreadable"


def test_the_cli_imports_and_prints_located_problems(
    county: Flask, database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "roster.xlsx"
    path.write_bytes(_workbook(roster_rows()))
    env = {"VILLAGE_SYNC_DATABASE_URL": database_url, "VILLAGE_SYNC_KEY_DIR": str(tmp_path / "k")}
    result = CliRunner().invoke(
        main, ["import-roster", str(path), "--area", COUNTY, "--round", ROUND], env=env
    )
    assert result.exit_code == 0, result.output
    assert "households created 1" in result.output
    assert "第8行「行政区划代码」 [outside_area]" in result.output


def _roster_data(app: Flask) -> dict[str, Any]:
    from server.services.record_ops import record_data
    from sync_protocol.merge import RecordState

    rows = records.live_household_records([(VILLAGE, "0053010200101")])
    (row,) = [r for r in rows if r["form_id"] == "household_roster"]
    return record_data(RecordState.from_dict(row["state"]))


def test_an_admin_imports_only_inside_their_area(county: Flask) -> None:
    township_admin = Actor("reviewer", area_prefix=VILLAGE[:9])
    with county.app_context():
        with pytest.raises(ValidationFailed) as outside:
            import_roster(township_admin, _workbook(roster_rows()), round=ROUND, area=COUNTY)
        report = import_roster(
            township_admin, _workbook(roster_rows()), round=ROUND, area=VILLAGE[:9]
        )
    assert outside.value.code == "roster_area_invalid"
    assert report.created == [f"{VILLAGE}/0053010200101"]


def test_the_roster_leaves_with_ids_for_county_admins_only(
    county: Flask, database_url: str, tmp_path: Path
) -> None:
    with county.app_context():
        import_roster(CLI_ACTOR, _workbook(roster_rows()), round=ROUND, area=COUNTY)
        reviewer = Principal(7, "reviewer", TOWNSHIP_REVIEWER, VILLAGE[:9])
        with pytest.raises(Forbidden) as refused:
            export_roster(reviewer, Actor("reviewer"), area=VILLAGE[:9], round=ROUND)
    assert refused.value.code == "unmasked_export_forbidden"
    out = tmp_path / "out" / "roster.xlsx"
    env = {"VILLAGE_SYNC_DATABASE_URL": database_url, "VILLAGE_SYNC_KEY_DIR": str(tmp_path / "k")}
    result = CliRunner().invoke(
        main,
        ["export-roster", "--area", COUNTY, "--round", ROUND, "--out", str(out)],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert out.stat().st_mode & 0o777 == 0o600
    sheet = openpyxl.load_workbook(out).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[1][: len(HEADERS)] == tuple(HEADERS)
    assert [r[HEADERS.index("证件号码")] for r in rows[2:]] == [HEAD, SPOUSE, SON]
    assert all(isinstance(r[HEADERS.index("户编号")], str) for r in rows[2:])
