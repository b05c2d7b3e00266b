"""``village-forms``: the form engine on the command line.

Commands::

    village-forms demo                                   # six instruments, one sample household
    village-forms validate-form FILE.json|FILE.xlsx      # located problems of a definition
    village-forms validate-record FORM RECORD.json       # validate one record's data
    village-forms import-xlsform FILE.xlsx [--out FILE.json]
    village-forms export-xlsform [FILE.json ...] [--builtin ID|all] --out PATH

Exit codes (also in ``--help`` and docs/xlsform.md):

* 0 — done; the form or record is valid (warnings may have been printed);
* 1 — the input was refused: a definition or record with errors, a file that is not valid JSON
  or .xlsx, an unknown instrument id (one clear line, or the located issues; never a traceback);
* 2 — the command line itself was wrong (unknown option, missing argument, absent file).

Messages are printed in Chinese followed by English, the way county staff read them.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import click

from forms.definition import FormDefinition, load_definition
from forms.errors import FormDefinitionError, FormsError
from forms.expressions import EvaluationContext
from forms.indicators import HouseholdIndicators, MonitoringConfig, household_indicators
from forms.instruments import BUILTIN_IDS, load_builtin
from forms.instruments.samples import (
    DEFAULT_TODAY,
    PROBLEM_CASES,
    problem_household,
    sample_household,
)
from forms.validation import Issue, ValidationResult, validate_record
from forms.xlsform import (
    XLSFormError,
    XLSFormImport,
    XLSFormIssue,
    export_xlsform,
    read_xlsform,
)

__all__ = ["EXIT_INVALID", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2  # click's own code for usage errors

_EXIT_HELP = (
    "Exit codes: 0 valid/done, 1 input refused (errors printed), 2 wrong command line. "
    "退出码：0 通过，1 输入有误，2 命令行用法错误。"
)


class InputRefused(click.ClickException):
    """One clear line for input we cannot use; exits with :data:`EXIT_INVALID`."""

    exit_code = EXIT_INVALID

    def __init__(self, message_zh: str, message_en: str) -> None:
        super().__init__(f"{message_zh} / {message_en}")
        self.messages = {"zh": message_zh, "en": message_en}

    def show(self, file: Any = None) -> None:
        click.echo(f"错误 error: {self.message}", err=True)


def _refused_by(exc: FormsError) -> InputRefused:
    """One line for an error; a workbook refused as a whole says only why."""
    if isinstance(exc, XLSFormError) and len(exc.issues) == 1:
        return InputRefused(exc.issues[0].message_zh, exc.issues[0].message)
    return InputRefused(exc.message_zh, exc.message)


def _read_json(path: Path) -> Any:
    """Read a JSON file.

    Raises:
        InputRefused: the file cannot be read or is not JSON (with line and column).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputRefused(f"无法读取 {path}", f"cannot read {path}: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputRefused(
            f"{path} 不是有效的 JSON（第 {exc.lineno} 行第 {exc.colno} 列）",
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from exc


def _print_definition_issues(exc: FormDefinitionError | XLSFormError, source: Path) -> None:
    """Print every located issue, one per line, on stdout."""
    issues: Sequence[Any] = exc.issues
    click.echo(f"✗ {source}: {len(issues)} 处问题 / {len(issues)} problem(s)")
    for issue in issues:
        if isinstance(exc, XLSFormError):
            click.echo(f"  {issue}")
        else:
            where = issue.path + (f" @{issue.position}" if issue.position is not None else "")
            click.echo(f"  {where}: [{issue.code}] {issue.message}")


XLSFORM_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".md")


def _read_xlsform_file(path: Path, attachments: Sequence[Path] = ()) -> XLSFormImport:
    """Read an XLSForm file and the choices files attached to it (the CLI is the edge that
    touches the disk) and print its warnings on stderr, one located line each.

    Raises:
        XLSFormError: as :func:`forms.xlsform.read_xlsform` (``file_not_found`` too).
    """
    files: dict[str, bytes] = {}
    for source in (path, *attachments):
        try:
            files[source.name] = source.read_bytes()
        except OSError as exc:
            raise XLSFormError(
                [
                    XLSFormIssue(
                        None, None, None, None, "file_not_found", str(exc), f"无法读取 {source}"
                    )
                ],
                code="file_not_found",
            ) from exc
    data = files.pop(path.name)
    result = read_xlsform(data, path.name, files)
    for warning in result.warnings:
        click.echo(f"⚠ {warning}", err=True)
    return result


def _load_form_file(
    path: Path, *, report: bool, attachments: Sequence[Path] = ()
) -> FormDefinition:
    """Load a definition from .json or .xlsx.

    Raises:
        click.exceptions.Exit: (code 1) after printing the located issues when ``report``.
        InputRefused: the file is unreadable or not a definition (one line).
    """
    suffix = path.suffix.lower()
    try:
        if suffix in XLSFORM_SUFFIXES:
            return _read_xlsform_file(path, attachments).definition
        if suffix == ".json":
            return load_definition(_read_json(path))
    except (FormDefinitionError, XLSFormError) as exc:
        only_file_issue = isinstance(exc, XLSFormError) and all(i.sheet is None for i in exc.issues)
        if report and not only_file_issue:
            _print_definition_issues(exc, path)
            raise click.exceptions.Exit(EXIT_INVALID) from exc
        raise _refused_by(exc) from exc
    raise InputRefused(
        f"{path}：只支持 .json 或 XLSForm（.xlsx、.xlsm、.xls、.md）表单文件",
        f"{path}: a form file must be .json or an XLSForm (.xlsx, .xlsm, .xls, .md)",
    )


def _load_form(spec: str) -> FormDefinition:
    """A form given as a file path, or as the id of a built-in instrument."""
    path = Path(spec)
    if path.exists():
        return _load_form_file(path, report=True)
    if spec in BUILTIN_IDS:
        return load_builtin(spec)
    raise InputRefused(
        f"找不到表单文件，也没有内置调查表 {spec!r}（内置：{', '.join(BUILTIN_IDS)}）",
        f"no form file and no built-in instrument {spec!r} (built-ins: {', '.join(BUILTIN_IDS)})",
    )


def _describe(defn: FormDefinition) -> str:
    fields = sum(1 for _ in defn.iter_fields())
    return (
        f"{defn.id} v{defn.version}「{defn.title.zh}」: {fields} 个字段 fields, "
        f"{len(defn.choice_lists)} 个选项列表 choice lists, {len(defn.checks)} 条检查 checks"
    )


@click.group(epilog=_EXIT_HELP)
@click.version_option(package_name="village-sync")
def cli() -> None:
    """Village Sync form engine: instruments, XLSForm, validation.

    村级调查表引擎：内置调查表、XLSForm 导入导出、数据校验。
    """


@cli.command("validate-form", epilog=_EXIT_HELP)
@click.argument("form_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--attach",
    "attachments",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A choices file (.csv/.xml) of select_one_from_file; repeat for each.",
)
def validate_form(form_file: Path, as_json: bool, attachments: tuple[Path, ...]) -> None:
    """Check a form definition (.json or XLSForm .xlsx) and print every located problem."""
    if not as_json:
        defn = _load_form_file(form_file, report=True, attachments=attachments)
        click.echo(f"✓ {form_file}: {_describe(defn)}")
        return
    try:
        defn = _load_form_file(form_file, report=False, attachments=attachments)
    except InputRefused as exc:
        cause = exc.__cause__
        issues = [i.to_dict() for i in getattr(cause, "issues", [])]
        body = {"valid": False, "message": exc.messages, "issues": issues}
        click.echo(json.dumps(body, ensure_ascii=False, indent=2))
        raise click.exceptions.Exit(EXIT_INVALID) from exc
    click.echo(json.dumps({"valid": True, "id": defn.id, "version": defn.version}))


@cli.command("import-xlsform", epilog=_EXIT_HELP)
@click.argument("xlsx_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the JSON definition here (default: print it).",
)
@click.option(
    "--attach",
    "attachments",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A choices file (.csv/.xml) of select_one_from_file; repeat for each.",
)
def import_xlsform_command(
    xlsx_file: Path, out: Path | None, attachments: tuple[Path, ...]
) -> None:
    """Convert an XLSForm workbook into a JSON form definition (contracts §1)."""
    try:
        document = _read_xlsform_file(xlsx_file, attachments).document
    except XLSFormError as exc:
        if all(i.sheet is None for i in exc.issues):
            raise _refused_by(exc) from exc
        _print_definition_issues(exc, xlsx_file)
        raise click.exceptions.Exit(EXIT_INVALID) from exc
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputRefused(f"无法写入 {out}", f"cannot write {out}: {exc}") from exc
    click.echo(f"✓ {xlsx_file} → {out}", err=True)


@cli.command("export-xlsform", epilog=_EXIT_HELP)
@click.argument(
    "form_files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--builtin",
    "builtins",
    multiple=True,
    help=f"A built-in instrument id, or 'all' ({', '.join(BUILTIN_IDS)}). Repeatable.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="An .xlsx file (one form) or a directory (written as <form_id>.xlsx).",
)
def export_xlsform_command(
    form_files: tuple[Path, ...], builtins: tuple[str, ...], out: Path
) -> None:
    """Write JSON definitions (files or built-ins) as XLSForm workbooks county staff can edit."""
    definitions: list[FormDefinition] = []
    for name in builtins:
        if name == "all":
            definitions.extend(load_builtin(i) for i in BUILTIN_IDS)
        elif name in BUILTIN_IDS:
            definitions.append(load_builtin(name))
        else:
            raise InputRefused(
                f"没有内置调查表 {name!r}（内置：{', '.join(BUILTIN_IDS)}、all）",
                f"no built-in instrument {name!r} (known: {', '.join(BUILTIN_IDS)}, all)",
            )
    definitions.extend(_load_form_file(path, report=True) for path in form_files)
    if not definitions:
        raise click.UsageError("give FORM_FILE.json arguments or --builtin ID|all")
    single_file = out.suffix.lower() == ".xlsx"
    if single_file and len(definitions) > 1:
        raise click.UsageError("--out must be a directory when exporting several forms")
    for defn in definitions:
        target = out if single_file else out / f"{defn.id}.xlsx"
        try:
            data = export_xlsform(defn)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        except XLSFormError as exc:
            raise _refused_by(exc) from exc
        except OSError as exc:
            raise InputRefused(f"无法写入 {target}", f"cannot write {target}: {exc}") from exc
        click.echo(f"✓ {defn.id} v{defn.version} → {target}")


# --------------------------------------------------------------------------------------------
# Records


def _parse_config(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs for ``config('key')``; numbers become numbers.

    Raises:
        click.BadParameter: a pair without ``=``.
    """
    config: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="--config")
        value: Any = raw.strip()
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            value = int(number) if number.is_integer() and "." not in value else number
        config[key.strip()] = value
    return config


def _issue_line(issue: Issue) -> str:
    """``错误 error  members 第2行 row 2 · id_number: 中文 / English``."""
    kind = "错误 error  " if issue.severity == "error" else "警告 warning"
    where = issue.path.split("/")[0] if issue.row is not None else ""
    row = f"{where} 第{issue.row}行 row {issue.row} · " if issue.row is not None else ""
    name = issue.field or "(记录 record)"
    message = issue.message.to_dict()
    text = message["zh"] + (f" / {message['en']}" if "en" in message else "")
    return f"  {kind} {row}{name}: {text}"


def _print_result(title: str, result: ValidationResult) -> None:
    mark = "✓" if result.ok else "✗"
    click.echo(
        f"{mark} {title}: {len(result.errors)} 个错误 error(s), "
        f"{len(result.warnings)} 个警告 warning(s)"
    )
    for issue in result.issues:
        click.echo(_issue_line(issue))


@cli.command("validate-record", epilog=_EXIT_HELP)
@click.argument("form")
@click.argument("record_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--today",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="The date today() means (default: the real date).",
)
@click.option(
    "--config",
    "config_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A value for config('KEY'), e.g. monitoring_line=8700. Repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def validate_record_command(
    form: str, record_file: Path, today: Any, config_pairs: tuple[str, ...], as_json: bool
) -> None:
    """Validate one record against a form (a .json/.xlsx file or a built-in id).

    RECORD_FILE holds the record's data (field → value), or an envelope with ``data`` and
    optionally ``form_id`` / ``form_version``, which must then match the form.
    """
    config = _parse_config(config_pairs)  # a usage error comes before any file is read
    defn = _load_form(form)
    raw = _read_json(record_file)
    data = raw
    if isinstance(raw, dict) and isinstance(raw.get("data"), dict):
        data = raw["data"]
        claimed = (raw.get("form_id", defn.id), raw.get("form_version", defn.version))
        if claimed != (defn.id, defn.version):
            raise InputRefused(
                f"记录属于 {claimed[0]} v{claimed[1]}，不是 {defn.id} v{defn.version}",
                f"the record belongs to {claimed[0]} v{claimed[1]}, not {defn.key}",
            )
    context = EvaluationContext(
        today=today.date() if today is not None else date.today(),
        config=config,
    )
    result = validate_record(defn, data, context)
    if as_json:
        body = {
            "valid": result.ok,
            "errors": [i.to_dict() for i in result.errors],
            "warnings": [i.to_dict() for i in result.warnings],
            "cleaned": result.cleaned,
        }
        click.echo(json.dumps(body, ensure_ascii=False, indent=2))
    else:
        _print_result(f"{record_file} ({defn.key}「{defn.title.zh}」)", result)
    if not result.ok:
        raise click.exceptions.Exit(EXIT_INVALID)


# --------------------------------------------------------------------------------------------
# Demo

_HOUSING_REASONS = {
    "appraised_safe": "鉴定安全（A/B级）",
    "renovated": "改造安全（已竣工验收）",
    "public_housing": "保障安全（公租房/集体房）",
    "dangerous_house": "危房，尚未完成改造",
    "no_house": "无房，尚未完成新建",
    "not_appraised": "未鉴定",
    "no_data": "无数据",
}
_WATER_INDICATORS = {
    "quantity": "水量",
    "quality": "水质",
    "convenience": "用水方便程度",
    "reliability": "供水保证率",
}
_PROBLEMS = {
    "housing": "住房安全",
    "water": "饮水安全",
    "education": "义务教育",
    "insurance": "基本医疗保险",
    "income": "收入（低于监测线）",
}
_REGION_TYPES = {"water_rich": "丰水地区（≥35升/人·天）", "water_short": "缺水地区（≥20升/人·天）"}


def _pad(text: str, width: int) -> str:
    """Pad to ``width`` terminal columns: Chinese characters take two columns each."""
    used = sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)
    return text + " " * max(1, width - used)


def _verdict(ok: bool | None) -> str:
    return {True: "✓", False: "✗", None: "?"}[ok]


def _money(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f} 元"


def _print_indicators(pic: HouseholdIndicators, *, has_education_record: bool) -> None:
    click.echo("")
    click.echo(f"两不愁三保障 + 饮水安全（{pic.year} 年）/ derived indicators")
    housing = _HOUSING_REASONS.get(pic.housing_reason or "no_data", pic.housing_reason or "")
    click.echo(f"  {_verdict(pic.housing_safe)} {_pad('住房安全', 14)}{housing}")
    if pic.water_safe is None:
        water = "无法判断（缺少数据）"
    elif pic.water_safe:
        water = "四项指标全部达标"
    else:
        water = "未达标：" + "、".join(_WATER_INDICATORS.get(x, x) for x in pic.water_failed)
    region = _REGION_TYPES.get(pic.water_region_type, pic.water_region_type)
    click.echo(f"  {_verdict(pic.water_safe)} {_pad('饮水安全', 14)}{water}；{region}")
    if pic.dropout_present is None:
        if pic.unknown_age:
            education = f"{pic.unknown_age} 名儿童身份证号缺失或无效，无法计算年龄（不判断）"
        else:
            # An education record without children is not judged by the indicator; say so.
            education = "调查表中没有学龄儿童（不判断）" if has_education_record else "无数据"
    elif pic.dropout_present:
        education = "有辍学：" + "、".join(
            f"{d.name or '?'}（{d.age}岁，{d.reason or '原因未填'}）" for d in pic.dropouts
        )
    else:
        education = "无义务教育阶段辍学"
    ok_education = None if pic.dropout_present is None else not pic.dropout_present
    click.echo(f"  {_verdict(ok_education)} {_pad('义务教育', 14)}{education}")
    if pic.everyone_insured is None:
        insurance = "无数据"
    elif pic.everyone_insured:
        insurance = "家庭成员全部参加基本医疗保险"
    else:
        insurance = "未参保：" + "、".join(m.name or "?" for m in pic.uninsured)
    click.echo(f"  {_verdict(pic.everyone_insured)} {_pad('基本医疗保险', 14)}{insurance}")
    line = _money(pic.monitoring_line) if pic.monitoring_line is not None else "未配置"
    ok_income = None if pic.income_below_line is None else not pic.income_below_line
    relation = {True: "低于", False: "不低于", None: "对比"}[pic.income_below_line]
    click.echo(
        f"  {_verdict(ok_income)} {_pad('收入', 14)}人均纯收入 {_money(pic.per_capita_income)}，"
        f"{relation}监测线 {line}（家庭纯收入 {_money(pic.net_income)}）"
    )
    category = pic.monitoring_category or "未填"
    removed = {True: "已消除", False: "未消除", None: "未填"}[pic.risk_removed]
    click.echo(f"    监测对象类别：{category}；风险：{removed}")
    if pic.open_problems:
        problems = "、".join(_PROBLEMS.get(p, p) for p in pic.open_problems)
        click.echo(f"  待清零问题 open problems: {problems}")
    else:
        click.echo("  待清零问题 open problems: 无 none")


@cli.command("demo", epilog=_EXIT_HELP)
@click.option("--seed", default=5, show_default=True, help="Which made-up household.")
@click.option(
    "--case",
    type=click.Choice(sorted(PROBLEM_CASES)),
    help="A household showing one problem the county must clear.",
)
@click.option(
    "--monitoring-line",
    "line",
    default=8700.0,
    show_default=True,
    help="Per-capita monitoring income line, yuan/year (Yunnan 2025: 8,700).",
)
@click.option(
    "--water-region",
    type=click.Choice(["water_rich", "water_short"]),
    default="water_rich",
    show_default=True,
    help="The village's water region type (local configuration).",
)
@click.option(
    "--today",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=DEFAULT_TODAY.isoformat(),
    show_default=True,
    help="The survey date.",
)
def demo(seed: int, case: str | None, line: float, water_region: str, today: Any) -> None:
    """Fill the six built-in instruments for a made-up household, validate, show indicators.

    演示：为一户虚构农户填写六张内置调查表，校验，并计算两不愁三保障指标（不需要服务器）。
    """
    survey_date: date = today.date()
    definitions = [load_builtin(form_id) for form_id in BUILTIN_IDS]
    click.echo(f"内置调查表 built-in instruments（{len(definitions)}）:")
    for defn in definitions:
        fields = sum(1 for _ in defn.iter_fields())
        click.echo(f"  · {_pad(defn.title.zh, 26)}{_pad(defn.key, 24)}{fields} 个字段 fields")

    if case is None:
        records = sample_household(seed, today=survey_date, monitoring_line=line)
    else:
        records = problem_household(case, seed, today=survey_date, monitoring_line=line)
    roster = records["household_roster"]
    village = str(roster.get("village_code") or "")
    members = roster.get("members") or []
    head = next((m for m in members if m.get("relation") == "户主"), members[0] if members else {})
    click.echo("")
    heading = f"示例农户 sample household（虚构 made up，seed {seed}"
    heading += f"，问题 {PROBLEM_CASES[case]}）" if case else "）"
    click.echo(heading)
    click.echo(
        f"  村代码 {village}  户编号 {roster.get('household_no', '')}  "
        f"{roster.get('natural_village', '')}  {roster.get('household_type', '')}"
    )
    click.echo(
        f"  户主 {head.get('name', '?')}，{len(members)} 口人："
        + "、".join(f"{m.get('name', '?')}（{m.get('relation', '?')}）" for m in members)
    )
    click.echo("  （身份证号、电话、健康状况为敏感信息，不显示 / sensitive fields not shown）")

    config = MonitoringConfig(default_monitoring_line=line, default_water_region_type=water_region)
    context = EvaluationContext(
        today=survey_date, config=config.evaluation_config(village, survey_date.year)
    )
    click.echo("")
    click.echo(f"校验 validation（{survey_date.isoformat()}）:")
    cleaned: dict[str, dict[str, Any]] = {}
    any_error = False
    for defn in definitions:
        result = validate_record(defn, records.get(defn.id) or {}, context)
        cleaned[defn.id] = result.cleaned
        any_error = any_error or not result.ok
        _print_result(f"{defn.title.zh}（{defn.id}）", result)

    picture = household_indicators(cleaned, village, survey_date.year, config, on=survey_date)
    _print_indicators(picture, has_education_record="compulsory_education" in records)
    click.echo("")
    click.echo(
        "以上为虚构示例数据，只在本机计算，未上传任何数据。"
        " / Made-up sample data, computed on this machine; nothing was uploaded."
    )
    click.echo(
        "试试 try: village-forms demo --case dropout · "
        "village-forms export-xlsform --builtin all --out ./xlsx"
    )
    if any_error:
        raise click.exceptions.Exit(EXIT_INVALID)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``village-forms`` command line; return the exit code.

    Never raises for bad input: click prints usage errors (exit 2) and :class:`InputRefused`
    prints one line (exit 1).
    """
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="village-forms")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_INVALID)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
