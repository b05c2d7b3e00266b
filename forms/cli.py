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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from forms.definition import FormDefinition, load_definition
from forms.errors import FormDefinitionError, FormsError
from forms.instruments import BUILTIN_IDS, load_builtin
from forms.xlsform import XLSFormError, export_xlsform, import_xlsform, load_xlsform

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


def _load_form_file(path: Path, *, report: bool) -> FormDefinition:
    """Load a definition from .json or .xlsx.

    Raises:
        click.exceptions.Exit: (code 1) after printing the located issues when ``report``.
        InputRefused: the file is unreadable or not a definition (one line).
    """
    suffix = path.suffix.lower()
    try:
        if suffix in (".xlsx", ".xlsm"):
            return load_xlsform(path)
        if suffix == ".json":
            return load_definition(_read_json(path))
    except (FormDefinitionError, XLSFormError) as exc:
        only_file_issue = isinstance(exc, XLSFormError) and all(i.sheet is None for i in exc.issues)
        if report and not only_file_issue:
            _print_definition_issues(exc, path)
            raise click.exceptions.Exit(EXIT_INVALID) from exc
        raise _refused_by(exc) from exc
    raise InputRefused(
        f"{path}：只支持 .json 或 .xlsx 表单文件",
        f"{path}: a form file must be .json or .xlsx",
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
def validate_form(form_file: Path, as_json: bool) -> None:
    """Check a form definition (.json or XLSForm .xlsx) and print every located problem."""
    if not as_json:
        defn = _load_form_file(form_file, report=True)
        click.echo(f"✓ {form_file}: {_describe(defn)}")
        return
    try:
        defn = _load_form_file(form_file, report=False)
    except InputRefused as exc:
        cause = exc.__cause__
        issues = [i.to_dict() for i in getattr(cause, "issues", [])]
        click.echo(json.dumps({"valid": False, "issues": issues}, ensure_ascii=False, indent=2))
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
def import_xlsform_command(xlsx_file: Path, out: Path | None) -> None:
    """Convert an XLSForm workbook into a JSON form definition (contracts §1)."""
    try:
        document = import_xlsform(xlsx_file)
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
            export_xlsform(defn, target)
        except XLSFormError as exc:
            raise _refused_by(exc) from exc
        except OSError as exc:
            raise InputRefused(f"无法写入 {target}", f"cannot write {target}: {exc}") from exc
        click.echo(f"✓ {defn.id} v{defn.version} → {target}")


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
