"""The ``village-forms`` command line, driven through click's CliRunner and once as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from forms.cli import EXIT_INVALID, EXIT_OK, EXIT_USAGE, cli, main
from forms.definition import dump_definition, load_definition
from forms.instruments import BUILTIN_IDS, builtin_json, load_builtin
from forms.instruments.samples import sample_household
from forms.xlsform import export_xlsform, load_xlsform
from tests.forms.conftest import HOUSING_V1


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def write_xlsx(path: Path, survey: list[list[object]]) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.worksheets[0]
    ws.title = "survey"
    for row in survey:
        ws.append(row)
    settings = wb.create_sheet("settings")
    settings.append(["form_id", "version", "form_title"])
    settings.append(["mini", 1, "小表"])
    wb.save(path)
    return path


def test_validate_form_accepts_json_and_xlsx(runner: CliRunner, tmp_path: Path) -> None:
    json_file = tmp_path / "housing.json"
    json_file.write_text(json.dumps(HOUSING_V1, ensure_ascii=False), encoding="utf-8")
    xlsx_file = tmp_path / "housing.xlsx"
    xlsx_file.write_bytes(export_xlsform(HOUSING_V1))
    for path in (json_file, xlsx_file):
        result = runner.invoke(cli, ["validate-form", str(path)])
        assert result.exit_code == EXIT_OK, result.output
        assert "housing_mini v1「住房安全（测试）」" in result.output


def test_validate_form_prints_located_xlsx_errors(runner: CliRunner, tmp_path: Path) -> None:
    bad = write_xlsx(
        tmp_path / "bad.xlsx",
        [["type", "name", "label"], ["osm", "score", "地图"], ["text", "score2", None]],
    )
    result = runner.invoke(cli, ["validate-form", str(bad)])
    assert result.exit_code == EXIT_INVALID
    lines = result.output.splitlines()
    assert lines[0] == f"✗ {bad}: 2 处问题 / 2 problem(s)"
    assert lines[1].startswith("  survey!A2 (type): 无法保留题型 'osm'")
    assert lines[2].startswith("  survey!C3 (label): ")
    assert "Traceback" not in result.output


def test_validate_form_json_output(runner: CliRunner, tmp_path: Path) -> None:
    bad = write_xlsx(tmp_path / "bad.xlsx", [["type", "name", "label"], ["osm", "r", "地图"]])
    result = runner.invoke(cli, ["validate-form", "--json", str(bad)])
    assert result.exit_code == EXIT_INVALID
    body = json.loads(result.output)
    assert body["valid"] is False
    assert body["issues"][0]["sheet"] == "survey"
    assert (body["issues"][0]["row"], body["issues"][0]["column"]) == (2, "A")

    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    result = runner.invoke(cli, ["validate-form", "--json", str(broken)])
    assert result.exit_code == EXIT_INVALID
    body = json.loads(result.output)
    assert body["issues"] == [] and "不是有效的 JSON" in body["message"]["zh"]

    good = tmp_path / "good.json"
    good.write_text(json.dumps(HOUSING_V1), encoding="utf-8")
    result = runner.invoke(cli, ["validate-form", "--json", str(good)])
    assert result.exit_code == EXIT_OK
    assert json.loads(result.output) == {"valid": True, "id": "housing_mini", "version": 1}


def test_validate_form_prints_json_definition_issues(runner: CliRunner, tmp_path: Path) -> None:
    doc = json.loads(json.dumps(HOUSING_V1))
    doc["fields"][0]["type"] = "range"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    result = runner.invoke(cli, ["validate-form", str(path)])
    assert result.exit_code == EXIT_INVALID
    assert "fields/head_name/type" in result.output


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("broken.json", '{"id": "x",', "不是有效的 JSON（第 1 行"),
        ("table.xlsx", "type,name\ntext,a\n", "不是可读取的 .xlsx 表格"),
        ("form.yaml", "id: x\n", "只支持 .json 或 XLSForm"),
    ],
)
def test_bad_files_give_one_clear_line(
    runner: CliRunner, tmp_path: Path, name: str, content: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    result = runner.invoke(cli, ["validate-form", str(path)])
    assert result.exit_code == EXIT_INVALID
    assert len(result.output.strip().splitlines()) == 1
    assert expected in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_missing_file_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["validate-form", str(tmp_path / "absent.xlsx")])
    assert result.exit_code == EXIT_USAGE
    assert "does not exist" in result.output


def test_import_xlsform_writes_the_json_definition(runner: CliRunner, tmp_path: Path) -> None:
    source = tmp_path / "housing.xlsx"
    source.write_bytes(export_xlsform(HOUSING_V1))
    out = tmp_path / "json" / "housing.json"
    result = runner.invoke(cli, ["import-xlsform", str(source), "--out", str(out)])
    assert result.exit_code == EXIT_OK, result.output
    written = json.loads(out.read_text(encoding="utf-8"))
    assert dump_definition(load_definition(written)) == dump_definition(load_definition(HOUSING_V1))
    assert "住房安全（测试）" in out.read_text(encoding="utf-8")  # not \u-escaped

    printed = runner.invoke(cli, ["import-xlsform", str(source)])
    assert printed.exit_code == EXIT_OK
    assert json.loads(printed.output) == written


def test_import_xlsform_refuses_with_locations(runner: CliRunner, tmp_path: Path) -> None:
    bad = write_xlsx(
        tmp_path / "bad.xlsx", [["type", "name", "label"], ["begin_repeat", "m", "成员"]]
    )
    out = tmp_path / "out.json"
    result = runner.invoke(cli, ["import-xlsform", str(bad), "--out", str(out)])
    assert result.exit_code == EXIT_INVALID
    assert "survey!A2 (type)" in result.output
    assert not out.exists()


def test_export_xlsform_builtins_and_files(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["export-xlsform", "--builtin", "all", "--out", str(tmp_path)])
    assert result.exit_code == EXIT_OK, result.output
    for form_id in BUILTIN_IDS:
        exported = load_xlsform((tmp_path / f"{form_id}.xlsx").read_bytes())
        assert dump_definition(exported) == dump_definition(load_builtin(form_id))

    source = tmp_path / "housing.json"
    source.write_text(json.dumps(HOUSING_V1, ensure_ascii=False), encoding="utf-8")
    single = tmp_path / "one" / "mine.xlsx"
    result = runner.invoke(cli, ["export-xlsform", str(source), "--out", str(single)])
    assert result.exit_code == EXIT_OK, result.output
    assert load_xlsform(single.read_bytes()) == load_definition(HOUSING_V1)


def test_export_xlsform_refusals(runner: CliRunner, tmp_path: Path) -> None:
    unknown = runner.invoke(cli, ["export-xlsform", "--builtin", "census", "--out", str(tmp_path)])
    assert unknown.exit_code == EXIT_INVALID
    assert "没有内置调查表 'census'" in unknown.output
    nothing = runner.invoke(cli, ["export-xlsform", "--out", str(tmp_path)])
    assert nothing.exit_code == EXIT_USAGE
    several = runner.invoke(
        cli, ["export-xlsform", "--builtin", "all", "--out", str(tmp_path / "x.xlsx")]
    )
    assert several.exit_code == EXIT_USAGE


def test_main_returns_exit_codes_instead_of_raising(tmp_path: Path) -> None:
    assert main(["validate-form", str(tmp_path / "absent.json")]) == EXIT_USAGE
    bad = tmp_path / "bad.json"
    bad.write_text("[", encoding="utf-8")
    assert main(["validate-form", str(bad)]) == EXIT_INVALID
    assert main(["export-xlsform", "--builtin", BUILTIN_IDS[0], "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"{BUILTIN_IDS[0]}.xlsx").exists()


def test_installed_console_script_runs_as_a_process(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("village-forms")
    assert script.exists(), "village-forms is declared in setup.cfg; run pip install -e ."
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    source = tmp_path / "roster.json"
    source.write_text(json.dumps(builtin_json("household_roster")), encoding="utf-8")
    exported = subprocess.run(
        [str(script), "export-xlsform", str(source), "--out", str(tmp_path / "roster.xlsx")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert exported.returncode == 0, exported.stderr
    checked = subprocess.run(
        [str(script), "validate-form", str(tmp_path / "roster.xlsx")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("✓ ")
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    refused = subprocess.run(
        [str(script), "validate-form", str(broken)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert refused.returncode == EXIT_INVALID
    assert "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1


# --------------------------------------------------------------------------------------------
# validate-record


def write_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    return path


def test_validate_record_accepts_a_sample_record(runner: CliRunner, tmp_path: Path) -> None:
    records = sample_household(5)
    record = write_json(tmp_path / "housing.json", records["housing_safety"])
    result = runner.invoke(
        cli, ["validate-record", "housing_safety", str(record), "--today", "2026-11-25"]
    )
    assert result.exit_code == EXIT_OK, result.output
    assert "✓" in result.output and "0 个错误 error(s)" in result.output


def test_validate_record_reports_row_and_field(runner: CliRunner, tmp_path: Path) -> None:
    form = write_json(tmp_path / "form.json", HOUSING_V1)
    data = {
        "head_name": "王建国",
        "build_year": 1850,
        "has_house": True,
        "grade": "B",
        "members": [
            {"_id": "8c6c1f0e-7f57-4b7e-9a39-0d3f3b1a2c01", "name": "王建国", "age": 50},
            {"_id": "8c6c1f0e-7f57-4b7e-9a39-0d3f3b1a2c02", "age": 20},
        ],
    }
    record = write_json(tmp_path / "record.json", data)
    result = runner.invoke(cli, ["validate-record", str(form), str(record)])
    assert result.exit_code == EXIT_INVALID
    assert "✗" in result.output
    assert "build_year:" in result.output
    assert "members 第2行 row 2 · name:" in result.output

    as_json = runner.invoke(cli, ["validate-record", "--json", str(form), str(record)])
    assert as_json.exit_code == EXIT_INVALID
    body = json.loads(as_json.output)
    assert body["valid"] is False
    codes = {(e["field"], e["code"]) for e in body["errors"]}
    assert ("name", "required") in codes
    assert ("build_year", "constraint") in codes


def test_validate_record_envelope_and_config(runner: CliRunner, tmp_path: Path) -> None:
    records = sample_household(5)
    envelope = {
        "form_id": "monitoring_household",
        "form_version": 1,
        "data": records["monitoring_household"],
    }
    record = write_json(tmp_path / "monitoring.json", envelope)
    ok = runner.invoke(
        cli,
        [
            "validate-record",
            "monitoring_household",
            str(record),
            "--config",
            "monitoring_line=8700",
            "--today",
            "2026-11-25",
        ],
    )
    assert ok.exit_code == EXIT_OK, ok.output
    wrong = runner.invoke(cli, ["validate-record", "housing_safety", str(record)])
    assert wrong.exit_code == EXIT_INVALID
    assert "记录属于 monitoring_household v1" in wrong.output
    bad_pair = runner.invoke(
        cli, ["validate-record", "housing_safety", str(record), "--config", "nonsense"]
    )
    assert bad_pair.exit_code == EXIT_USAGE


def test_validate_record_unknown_form(runner: CliRunner, tmp_path: Path) -> None:
    record = write_json(tmp_path / "r.json", {})
    result = runner.invoke(cli, ["validate-record", "census_2020", str(record)])
    assert result.exit_code == EXIT_INVALID
    assert "没有内置调查表 'census_2020'" in result.output


# --------------------------------------------------------------------------------------------
# demo


def test_demo_shows_a_clean_household_and_its_indicators(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["demo"])
    assert result.exit_code == EXIT_OK, result.output
    out = result.output
    for form_id in BUILTIN_IDS:
        assert f"（{form_id}）: 0 个错误 error(s), 0 个警告 warning(s)" in out
    assert "示例农户 sample household（虚构 made up，seed 5）" in out
    assert "✓ 住房安全" in out and "✓ 饮水安全" in out
    assert "待清零问题 open problems: 无 none" in out
    # Sensitive values never reach the screen.
    roster = sample_household(5)["household_roster"]
    assert roster["phone"] not in out
    assert all(m["id_number"] not in out for m in roster["members"])


@pytest.mark.parametrize(
    ("case", "marker"),
    [
        ("dropout", "✗ 义务教育      有辍学："),
        ("dangerous_house", "✗ 住房安全      危房，尚未完成改造"),
        ("too_little_water", "✗ 饮水安全      未达标：水量"),
        ("uninsured", "✗ 基本医疗保险  未参保："),
        ("below_line", "低于监测线 8,700.00 元"),
    ],
)
def test_demo_problem_cases_show_the_open_problem(
    runner: CliRunner, case: str, marker: str
) -> None:
    result = runner.invoke(cli, ["demo", "--case", case, "--seed", "2"])
    assert result.exit_code == EXIT_OK, result.output
    assert marker in result.output
    assert "待清零问题 open problems: 无 none" not in result.output


def test_demo_runs_as_the_installed_command() -> None:
    script = Path(sys.executable).with_name("village-forms")
    done = subprocess.run(
        [str(script), "demo", "--seed", "3"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "两不愁三保障" in done.stdout
    assert done.stderr == ""


def test_the_cli_and_xlsform_import_no_server_or_database_code() -> None:
    probe = (
        "import sys, forms.cli, forms.xlsform; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('flask', 'sqlalchemy', 'flask_sqlalchemy', 'server', 'psycopg')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_xlsform_warnings_are_printed_located_on_stderr(runner: CliRunner, tmp_path: Path) -> None:
    form = tmp_path / "Village-Survey.md"
    form.write_text(
        "| survey |\n|  | type | name | label | appearance |\n|  | start | start | | |\n"
        "|  | text | a | 甲 | minimal |\n",
        encoding="utf-8",
    )
    result = runner.invoke(cli, ["import-xlsform", str(form)])
    assert result.exit_code == EXIT_OK, result.output
    assert json.loads(result.stdout)["id"] == "village_survey"
    warnings = [line for line in result.stderr.splitlines() if line.startswith("⚠ ")]
    assert any(line.startswith("⚠ survey!A2 (type): 元数据行 'start'") for line in warnings)
    assert any(line.startswith("⚠ survey!D3 (appearance): ") for line in warnings)


def test_import_xlsform_reads_the_choices_file_given_with_attach(
    runner: CliRunner, tmp_path: Path
) -> None:
    form = write_xlsx(
        tmp_path / "pick.xlsx",
        [["type", "name", "label"], ["select_one_from_file villages.csv", "village", "村"]],
    )
    villages = tmp_path / "villages.csv"
    villages.write_text("name,label\nv1,上寨\nv2,下寨\n", encoding="utf-8")
    missing = runner.invoke(cli, ["import-xlsform", str(form)])
    assert missing.exit_code == EXIT_INVALID and "villages.csv" in missing.output
    result = runner.invoke(cli, ["import-xlsform", str(form), "--attach", str(villages)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [c["value"] for c in document["choice_lists"]["villages_csv"]] == ["v1", "v2"]
