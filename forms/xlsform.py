"""XLSForm import and export for the form engine.

County staff author instruments in the spreadsheet format they already know from ODK and Kobo
(``survey`` / ``choices`` / ``settings`` sheets). This module reads such a workbook into the JSON
form definition of docs/contracts.md §1 and writes a definition back as a workbook, so the
built-in instruments ship as editable ``.xlsx`` files.

Only a documented subset of XLSForm is accepted (docs/xlsform.md). Anything outside it is refused
with :class:`XLSFormError`, whose ``issues`` name the sheet, the row and column as Excel shows them,
the column header and what was wrong, in Chinese and English. A workbook never produces a Python
traceback: every problem openpyxl or the definition loader reports is turned into a located issue.

Cells are read as text wherever text is meant: Excel stores ``1`` in a choice-name column or ``2``
in the version column as numbers, and those come back as ``"1"`` and ``"2"``, never ``"1.0"``.
"""

from __future__ import annotations

import io
import re
import unicodedata
import warnings
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import IO, Any

import openpyxl
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.utils.exceptions import IllegalCharacterError
from openpyxl.worksheet.worksheet import Worksheet

from forms.definition import FormDefinition, dump_definition, load_definition
from forms.errors import DefinitionIssue, FormDefinitionError, FormsError
from forms.text import LANGUAGE_TAG

__all__ = [
    "BOOLEAN_TYPE",
    "MAX_WORKBOOK_BYTES",
    "XLSFormError",
    "XLSFormIssue",
    "export_xlsform",
    "import_xlsform",
    "load_xlsform",
]

#: ODK has no boolean question type; ours is spelled ``boolean`` in the ``type`` column.
BOOLEAN_TYPE = "boolean"
#: A form workbook is a few hundred KiB at most; larger files (or zip bombs, checked unpacked
#: against ten times this) are refused before openpyxl reads them.
MAX_WORKBOOK_BYTES = 10 * 2**20

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_PATH_RE = re.compile(r"^[a-z][a-z0-9_]*(/[a-z][a-z0-9_]*)*$")
_DIGITS_RE = re.compile(r"^[0-9]+$")

# Question types that map one to one onto the definition's field types.
_PLAIN_TYPES = {
    "text",
    "integer",
    "decimal",
    "date",
    BOOLEAN_TYPE,
    "geopoint",
    "image",
    "note",
    "calculate",
}
_SELECT_TYPES = {"select_one", "select_multiple"}

# ODK types we know and refuse, with the reason county staff should read.
_REFUSED_TYPES: dict[str, tuple[str, str]] = {
    "range": ("use an integer or decimal question with a constraint", "请改用整数或小数题并加约束"),
    "time": ("time-of-day questions are not supported", "不支持时间题"),
    "datetime": ("date-time questions are not supported; use date", "不支持日期时间题，请用日期题"),
    "audio": ("audio attachments are not supported; use image", "不支持录音附件，请用图片题"),
    "video": ("video attachments are not supported; use image", "不支持视频附件，请用图片题"),
    "file": ("file attachments are not supported; use image", "不支持文件附件，请用图片题"),
    "barcode": ("barcode questions are not supported; use text", "不支持条码题，请用文本题"),
    "geotrace": ("only geopoint is supported", "只支持 geopoint 定位题"),
    "geoshape": ("only geopoint is supported", "只支持 geopoint 定位题"),
    "rank": ("rank questions are not supported", "不支持排序题"),
    "acknowledge": ("use boolean (our spelling) instead", "请改用 boolean（是/否）题"),
    "trigger": ("use boolean (our spelling) instead", "请改用 boolean（是/否）题"),
    "hidden": ("use calculate instead", "请改用 calculate 计算题"),
    "select_one_from_file": ("external choice files are not supported", "不支持外部选项文件"),
    "select_multiple_from_file": ("external choice files are not supported", "不支持外部选项文件"),
    "select_one_external": ("external choices are not supported", "不支持外部选项"),
    "xml-external": ("external instances are not supported", "不支持外部数据"),
    "csv-external": ("external instances are not supported", "不支持外部数据"),
    "begin_loop": ("loops are not supported; use begin_repeat", "不支持 loop，请用 begin_repeat"),
    "end_loop": ("loops are not supported; use begin_repeat", "不支持 loop，请用 begin_repeat"),
}
# Metadata the sync envelope records by itself (device, times, user).
_METADATA_TYPES = {
    "start",
    "end",
    "today",
    "deviceid",
    "subscriberid",
    "simserial",
    "phonenumber",
    "username",
    "email",
    "audit",
    "start-geopoint",
    "background-audio",
}

# appearance values that only change how a tablet draws a question; we accept and drop them.
# Others (month-year, year, signature, draw, ...) change what is recorded and are refused.
_PRESENTATIONAL_APPEARANCES = {
    "minimal",
    "compact",
    "horizontal",
    "horizontal-compact",
    "likert",
    "multiline",
    "field-list",
    "table-list",
    "label",
    "list-nolabel",
    "list",
    "no-calendar",
    "numbers",
    "thousands-sep",
    "quick",
    "columns",
    "columns-pack",
    "autocomplete",
    "search",
}

_TRUE_WORDS = {"yes", "true", "true()", "1", "y", "是"}
_FALSE_WORDS = {"", "no", "false", "false()", "0", "n", "否"}

# Columns of each sheet: key -> translatable?
_SURVEY_COLUMNS: dict[str, bool] = {
    "type": False,
    "name": False,
    "label": True,
    "hint": True,
    "required": False,
    "relevant": False,
    "constraint": False,
    "constraint_message": True,
    "calculation": False,
    "appearance": False,
    "unit": False,
    "merge": False,
    "sensitive": False,
    "min_rows": False,
    "max_rows": False,
}
_CHOICES_COLUMNS: dict[str, bool] = {"list_name": False, "name": False, "label": True}
_SETTINGS_COLUMNS: dict[str, bool] = {
    "form_id": False,
    "version": False,
    "form_title": True,
    "subject": False,
    "default_language": False,
}
_CHECKS_COLUMNS: dict[str, bool] = {
    "id": False,
    "severity": False,
    "field": False,
    "rule": False,
    "message": True,
}
_UPGRADE_COLUMNS: dict[str, bool] = {
    "from_version": False,
    "action": False,
    "field": False,
    "new_name": False,
}

# Header spellings other tools write, mapped onto ours.
_HEADER_ALIASES = {
    "calculate": "calculation",
    "list name": "list_name",
    "constraint message": "constraint_message",
    "form title": "form_title",
    "form id": "form_id",
    "id_string": "form_id",
}

# Columns we know from ODK and cannot honour, with the reason.
_REFUSED_COLUMNS: dict[str, tuple[str, str]] = {
    "default": (
        "defaults are not supported: a default would be stored as if someone had typed it",
        "不支持默认值：默认值会被当作调查员填写的数据",
    ),
    "choice_filter": ("cascading selects (choice_filter) are not supported", "不支持级联选项"),
    "repeat_count": ("use min_rows / max_rows instead of repeat_count", "请用 min_rows / max_rows"),
    "read_only": ("read_only is not supported; use calculate", "不支持 read_only，请用 calculate"),
    "required_message": (
        "per-question required messages are not supported",
        "不支持自定义必填提示",
    ),
    "parameters": ("question parameters are not supported", "不支持题目参数"),
    "trigger": ("triggers are not supported", "不支持触发器"),
    "media": ("media columns are not supported", "不支持多媒体列"),
    "image": ("media columns are not supported", "不支持多媒体列"),
    "audio": ("media columns are not supported", "不支持多媒体列"),
    "video": ("media columns are not supported", "不支持多媒体列"),
    "guidance_hint": (
        "guidance hints are not supported; use hint",
        "不支持 guidance_hint，请用 hint",
    ),
}

# Sheets from ODK that we refuse; any other extra sheet (notes for staff, ...) is ignored.
_REFUSED_SHEETS = {"external_choices", "entities", "osm"}


# --------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class XLSFormIssue:
    """One located problem of a workbook.

    Attributes:
        sheet: sheet name as written in the workbook, or None for the file as a whole.
        row: 1-based row number as Excel shows it, or None for the whole sheet.
        column: column letter (``"C"``), or None when the problem is not in one column.
        header: the column's header text (``"label::zh"``), or None.
        code: stable machine code (``unknown_type``, ``duplicate_name``, ...).
        message: English explanation.
        message_zh: Chinese explanation.
        position: for malformed expressions, the 0-based character offset in the cell text.
    """

    sheet: str | None
    row: int | None
    column: str | None
    header: str | None
    code: str
    message: str
    message_zh: str
    position: int | None = None

    def location(self) -> str:
        """Return the place as people say it: ``survey!C7 (type)``, ``choices``, ``(file)``."""
        if self.sheet is None:
            return "(file)"
        place = self.sheet
        if self.row is not None or self.column is not None:
            place += f"!{self.column or ''}{self.row or ''}"
        if self.header:
            place += f" ({self.header})"
        return place

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict with the location and ``message`` as a ``{zh, en}`` map."""
        out: dict[str, Any] = {
            "sheet": self.sheet,
            "row": self.row,
            "column": self.column,
            "header": self.header,
            "code": self.code,
            "message": {"zh": self.message_zh, "en": self.message},
        }
        if self.position is not None:
            out["position"] = self.position
        return out

    def __str__(self) -> str:
        return f"{self.location()}: {self.message_zh} / {self.message}"


class XLSFormError(FormsError):
    """A workbook was refused (or a definition cannot be written as one).

    Attributes:
        issues: every located problem found, in sheet and row order.
    """

    code = "xlsform_invalid"
    default_message = "the XLSForm workbook is invalid"
    default_message_zh = "XLSForm 表格有误"

    def __init__(self, issues: Sequence[XLSFormIssue], code: str | None = None) -> None:
        self.issues = list(issues)
        first = str(self.issues[0]) if self.issues else ""
        more = f" (+{len(self.issues) - 1} more)" if len(self.issues) > 1 else ""
        more_zh = f"（另有 {len(self.issues) - 1} 处）" if len(self.issues) > 1 else ""
        super().__init__(
            code,
            f"the XLSForm workbook is invalid: {first}{more}",
            message_zh=f"XLSForm 表格有误：{first}{more_zh}",
        )


# --------------------------------------------------------------------------------------------
# Reading cells


def _cell_text(value: Any) -> str:
    """Return a cell's value as the text a person sees in it.

    Excel turns ``1`` into the number 1.0 and TRUE into a boolean; names, choice values and
    versions must come back as ``"1"``, not ``"1.0"``.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, datetime):
        if value.time() == time(0, 0):
            return value.date().isoformat()
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value).strip()


def _normalise_header(raw: str) -> tuple[str, str | None]:
    """Split a header into (column key, language or None).

    ``label::zh`` → (``label``, ``zh``); ODK's ``label::Chinese (zh)`` → (``label``, ``zh``);
    ``constraint message`` → (``constraint_message``, None).
    """
    text = raw.strip()
    lang: str | None = None
    if "::" in text:
        text, _, lang_part = text.partition("::")
        lang_part = lang_part.strip()
        bracket = re.search(r"\(([^()]+)\)\s*$", lang_part)
        lang = (bracket.group(1) if bracket else lang_part).strip().lower().replace("_", "-")
    key = re.sub(r"\s+", " ", text.strip().lower())
    key = _HEADER_ALIASES.get(key, key).replace(" ", "_").replace("-", "_")
    return key, lang


@dataclass
class _Column:
    index: int  # 1-based
    key: str
    lang: str | None
    header: str

    @property
    def letter(self) -> str:
        return get_column_letter(self.index)


@dataclass
class _Row:
    sheet: _Sheet
    number: int  # 1-based, as Excel shows it
    cells: dict[tuple[str, str | None], str]

    def get(self, key: str, lang: str | None = None) -> str:
        return self.cells.get((key, lang), "")

    def texts(self, key: str) -> dict[str, str]:
        """Return the non-empty texts of a translatable column, keyed by language (plain = zh)."""
        out: dict[str, str] = {}
        for (col_key, lang), text in self.cells.items():
            if col_key == key and text:
                out[lang or "zh"] = text
        return out

    def has_any(self) -> bool:
        return any(self.cells.values())


@dataclass
class _Sheet:
    title: str
    columns: dict[tuple[str, str | None], _Column]
    rows: list[_Row]

    def column(self, key: str, lang: str | None = None) -> _Column | None:
        col = self.columns.get((key, lang))
        if col is None and lang == "zh":
            col = self.columns.get((key, None))
        return col


class _Collector:
    """Gathers located issues while the workbook is read."""

    def __init__(self) -> None:
        self.issues: list[XLSFormIssue] = []

    def add(
        self,
        code: str,
        message: str,
        message_zh: str,
        *,
        sheet: _Sheet | str | None,
        row: int | None = None,
        column: _Column | None = None,
        position: int | None = None,
    ) -> None:
        sheet_name = sheet.title if isinstance(sheet, _Sheet) else sheet
        self.issues.append(
            XLSFormIssue(
                sheet=sheet_name,
                row=row,
                column=column.letter if column else None,
                header=column.header if column else None,
                code=code,
                message=message,
                message_zh=message_zh,
                position=position,
            )
        )

    def at(
        self,
        row: _Row,
        key: str,
        code: str,
        message: str,
        message_zh: str,
        *,
        lang: str | None = None,
        position: int | None = None,
    ) -> None:
        """Add an issue located at ``row``'s cell in column ``key`` (language ``lang``)."""
        self.add(
            code,
            message,
            message_zh,
            sheet=row.sheet,
            row=row.number,
            column=row.sheet.column(key, lang),
            position=position,
        )


def _read_sheet(ws: Worksheet, known: Mapping[str, bool], issues: _Collector) -> _Sheet:
    """Read a worksheet: the first row is the header; blank rows are skipped.

    Unknown columns are refused only when they hold data (Kobo templates carry many empty
    columns); columns whose header starts with ``$`` are Kobo bookkeeping and are ignored.
    """
    sheet = _Sheet(title=ws.title, columns={}, rows=[])
    grid = list(ws.iter_rows())
    if not grid:
        return sheet
    header_cells = grid[0]
    body = grid[1:]

    def column_has_data(index: int) -> bool:
        return any(len(row) >= index and _cell_text(row[index - 1].value) != "" for row in body)

    for cell in header_cells:
        raw = _cell_text(cell.value)
        index = cell.column
        if not raw:
            if column_has_data(index):
                issues.add(
                    "missing_header",
                    "this column holds data but has no header",
                    "该列有数据但没有列名",
                    sheet=sheet,
                    row=1,
                    column=_Column(index, "", None, ""),
                )
            continue
        if raw.startswith("$"):
            continue
        key, lang = _normalise_header(raw)
        col = _Column(index, key, lang, raw)
        refused = _REFUSED_COLUMNS.get(key)
        if key not in known or refused is not None:
            if column_has_data(index):
                if refused is not None:
                    issues.add("unsupported_column", *refused, sheet=sheet, row=1, column=col)
                else:
                    issues.add(
                        "unknown_column",
                        f"column {raw!r} is not part of the supported XLSForm subset "
                        "(see docs/xlsform.md)",
                        f"不支持的列 {raw!r}（见 docs/xlsform.md）",
                        sheet=sheet,
                        row=1,
                        column=col,
                    )
            continue
        if lang is not None and not known[key]:
            issues.add(
                "unexpected_language",
                f"column {key!r} does not take a language suffix",
                f"列 {key!r} 不能带语言后缀",
                sheet=sheet,
                row=1,
                column=col,
            )
            continue
        if lang is not None and not LANGUAGE_TAG.match(lang):
            issues.add(
                "bad_language",
                f"{lang!r} is not a language code (write e.g. label::zh, label::ug)",
                f"{lang!r} 不是语言代码（例如 label::zh、label::ug）",
                sheet=sheet,
                row=1,
                column=col,
            )
            continue
        slot = (key, lang if lang != "zh" else None) if known[key] else (key, None)
        if slot in sheet.columns:
            other = sheet.columns[slot]
            plain = known[key] and (lang is None) != (other.lang is None)
            issues.add(
                "duplicate_column",
                f"column {raw!r} repeats column {other.letter} ({other.header!r})"
                + (f"; plain {key} means {key}::zh" if plain else ""),
                f"列 {raw!r} 与 {other.letter} 列（{other.header!r}）重复"
                + (f"；不带语言的 {key} 即 {key}::zh" if plain else ""),
                sheet=sheet,
                row=1,
                column=col,
            )
            continue
        sheet.columns[slot] = col

    for row_cells in body:
        if not row_cells:
            continue
        number = row_cells[0].row
        cells: dict[tuple[str, str | None], str] = {}
        by_index = {c.column: c for c in row_cells}
        for slot, col in sheet.columns.items():
            cell = by_index.get(col.index)
            if cell is None:
                continue
            if cell.data_type == "f":
                issues.add(
                    "formula_cell",
                    "formulas are not supported here; type the value itself",
                    "此处不能用公式，请直接填写内容",
                    sheet=sheet,
                    row=number,
                    column=col,
                )
                # Keep the formula text so the row raises no follow-on "empty" issues.
            elif cell.data_type == "e":
                issues.add(
                    "error_cell",
                    f"the cell shows the Excel error {cell.value}; type the value itself",
                    f"单元格显示 Excel 错误 {cell.value}，请直接填写内容",
                    sheet=sheet,
                    row=number,
                    column=col,
                )
            cells[slot] = _cell_text(cell.value)
        row = _Row(sheet, number, cells)
        if row.has_any():
            sheet.rows.append(row)
    return sheet


# --------------------------------------------------------------------------------------------
# Where each part of the definition came from (to locate the loader's issues)


@dataclass
class _Origins:
    survey: _Sheet | None = None
    settings: _Sheet | None = None
    choices: _Sheet | None = None
    checks: _Sheet | None = None
    upgrade: _Sheet | None = None
    settings_row: int | None = None
    field_rows: dict[tuple[str, ...], int] = field(default_factory=dict)
    level_rows: dict[tuple[str, ...], list[int]] = field(default_factory=dict)
    choice_rows: dict[str, int] = field(default_factory=dict)
    check_rows: dict[str, int] = field(default_factory=dict)
    check_order: list[int] = field(default_factory=list)
    upgrade_rows: list[int] = field(default_factory=list)
    upgrade_field_rows: dict[str, int] = field(default_factory=dict)
    choice_value_rows: dict[tuple[str, str], int] = field(default_factory=dict)
    relevance: dict[tuple[str, ...], _Relevance] = field(default_factory=dict)


# Definition property -> (sheet attribute, column key)
_FIELD_PROPERTY_COLUMNS = {
    "name": "name",
    "type": "type",
    "choices": "type",
    "label": "label",
    "hint": "hint",
    "required": "required",
    "relevant": "relevant",
    "constraint": "constraint",
    "constraint_message": "constraint_message",
    "calculate": "calculation",
    "unit": "unit",
    "merge": "merge",
    "sensitive": "sensitive",
    "min_rows": "min_rows",
    "max_rows": "max_rows",
}
_CHECK_PROPERTY_COLUMNS = {k: k for k in _CHECKS_COLUMNS}
_SETTINGS_PROPERTY_COLUMNS = {
    "id": "form_id",
    "version": "version",
    "title": "form_title",
    "subject": "subject",
}


# The definition loader explains in English; county staff get a Chinese lead-in by code.
_LOADER_CODES_ZH = {
    "unknown_reference": "表达式引用了不存在或不在范围内的字段",
    "unexpected_token": "表达式格式错误",
    "unexpected_character": "表达式中有无法识别的字符",
    "unexpected_end": "表达式不完整",
    "unterminated_string": "表达式中的字符串缺少结束引号",
    "unknown_function": "表达式使用了不支持的函数",
    "arity": "函数参数个数不对",
    "bad_argument": "函数参数有误",
    "bad_field_reference": "字段引用格式错误",
    "bad_number": "数字格式错误",
    "bad_regex": "正则表达式有误",
    "too_long": "表达式太长",
    "too_deep": "表达式嵌套太深",
    "empty": "表达式为空",
    "unexpected_attribute": "此类题目不能设置该项",
    "missing_label": "缺少题目文字",
    "missing_calculate": "计算题缺少 calculation",
    "missing_choices": "选择题缺少选项列表",
    "unknown_choice_list": "选项列表不存在",
    "duplicate_name": "名称重复",
    "duplicate_choice": "选项重复",
    "empty_repeat": "重复组里没有题目",
    "repeat_too_deep": "重复组嵌套太深",
    "bad_rows": "行数限制有误",
    "bad_upgrade": "升级规则有误",
    "schema": "格式不符合要求",
}


def _path_tokens(path: str) -> list[str]:
    """Split a loader issue path (``fields/members/fields/x/label`` or ``fields[3]/type``)."""
    return [t for t in re.split(r"/|(?=\[)", path) if t]


def _locate(issue: DefinitionIssue, origins: _Origins) -> XLSFormIssue:
    """Turn one issue of the definition loader into a located workbook issue.

    The loader names places by document path; we map the path back to the row and column the
    value came from. Where the path cannot be mapped (a shape we did not write), the issue is
    kept with its document path in the message, located at the sheet.
    """
    tokens = _path_tokens(issue.path)
    lead_zh = _LOADER_CODES_ZH.get(issue.code, "表单定义有误")
    zh = f"{lead_zh}：{issue.message}（{issue.path}）"
    en = f"{issue.message} ({issue.path})"
    sheet: _Sheet | None = None
    row: int | None = None
    key: str | None = None
    lang: str | None = None
    position = issue.position

    if tokens and tokens[0] == "fields" and origins.survey is not None:
        sheet = origins.survey
        names: tuple[str, ...] = ()
        i = 0
        while i + 1 < len(tokens) and tokens[i] == "fields":
            ref = tokens[i + 1]
            if ref.startswith("[") and ref.endswith("]") and ref[1:-1].isdigit():
                rows = origins.level_rows.get(names, [])
                pos = int(ref[1:-1])
                if pos < len(rows):
                    row = rows[pos]
                    names = (*names, f"#{pos}")
                else:
                    break
            else:
                names = (*names, ref)
                row = origins.field_rows.get(names, row)
            i += 2
        rest = tokens[i:]
        if rest:
            key = _FIELD_PROPERTY_COLUMNS.get(rest[0])
            if len(rest) > 1 and key in ("label", "hint", "constraint_message"):
                lang = rest[1]
            relevance = origins.relevance.get(names)
            if key == "relevant" and relevance is not None and position is not None:
                # The problem may lie in an enclosing group's relevance, on the group's row.
                found = relevance.origin(position)
                if found is not None:
                    row, position = found
    elif tokens and tokens[0] == "checks" and origins.checks is not None:
        sheet = origins.checks
        if len(tokens) > 1:
            ref = tokens[1]
            if ref.startswith("[") and ref[1:-1].isdigit():
                pos = int(ref[1:-1])
                row = origins.check_order[pos] if pos < len(origins.check_order) else None
            else:
                row = origins.check_rows.get(ref)
            if len(tokens) > 2:
                key = _CHECK_PROPERTY_COLUMNS.get(tokens[2])
                if len(tokens) > 3 and key == "message":
                    lang = tokens[3]
    elif tokens and tokens[0] in ("choice_lists", "choices") and origins.choices is not None:
        sheet = origins.choices
        if len(tokens) > 1:
            row = origins.choice_rows.get(tokens[1])
        if len(tokens) > 2:
            row = origins.choice_value_rows.get((tokens[1], tokens[2]), row)
            key = "label" if tokens[-1] == "label" else "name"
    elif tokens and tokens[0] == "upgrade":
        sheet = origins.upgrade or origins.settings
        if origins.upgrade is not None and origins.upgrade_rows:
            row = origins.upgrade_rows[0]
            key = "from_version"
            if len(tokens) > 2 and tokens[1] in ("renames", "drops"):
                old = "/".join(tokens[2:])
                row = origins.upgrade_field_rows.get(old, row)
                key = "new_name" if tokens[1] == "renames" else "field"
    elif origins.settings is not None:
        sheet = origins.settings
        row = origins.settings_row
        if tokens:
            key = _SETTINGS_PROPERTY_COLUMNS.get(tokens[0])
            if len(tokens) > 1 and key == "form_title":
                lang = tokens[1]

    if sheet is None:
        return XLSFormIssue(None, None, None, None, issue.code, en, zh, position)
    col = sheet.column(key, lang if lang and lang != "zh" else None) if key else None
    if col is None and key and lang:
        col = sheet.column(key, None)
    return XLSFormIssue(
        sheet.title,
        row,
        col.letter if col else None,
        col.header if col else None,
        issue.code,
        en,
        zh,
        position,
    )


# --------------------------------------------------------------------------------------------
# Parsing the sheets


@dataclass(frozen=True)
class _Relevance:
    """A relevance expression and the sheet row each stretch of its text came from.

    Flattened groups AND their relevance into their questions'; when the loader finds a problem
    at some character of the combined text, ``origin`` tells which row (the group's or the
    question's) and which character of that cell it was.
    """

    text: str
    segments: tuple[tuple[int, int, int], ...]  # (start, end, sheet row)

    @classmethod
    def of_cell(cls, text: str | None, row: int) -> _Relevance | None:
        return cls(text, ((0, len(text), row),)) if text else None

    def and_(self, other: _Relevance | None) -> _Relevance:
        """``(self) and (other)``, keeping track of where each part came from."""
        if other is None:
            return self
        shift_other = 1 + len(self.text) + len(") and (")
        return _Relevance(
            f"({self.text}) and ({other.text})",
            tuple((a + 1, b + 1, r) for a, b, r in self.segments)
            + tuple((a + shift_other, b + shift_other, r) for a, b, r in other.segments),
        )

    def origin(self, position: int) -> tuple[int, int] | None:
        """Return (sheet row, 0-based position in that cell) of a character, or None."""
        for start, end, row in self.segments:
            if start <= position <= end:
                return row, position - start
        return None


def _and(first: _Relevance | None, second: _Relevance | None) -> _Relevance | None:
    """Combine an enclosing group's relevance with a question's (either may be absent)."""
    return first.and_(second) if first is not None else second


@dataclass
class _Level:
    """Fields at one level of the definition: the top level or one repeat."""

    kind: str  # "root" | "repeat" | "group"
    name: str
    row: int
    fields: list[dict[str, Any]]
    names: dict[str, int]  # name -> row, shared by a group with its enclosing level
    path: tuple[str, ...]
    group_relevant: _Relevance | None  # relevance inherited from enclosing groups (flattened)


class _Reader:
    """Reads one workbook into a contracts §1 dict, collecting located issues."""

    def __init__(self, workbook: openpyxl.Workbook) -> None:
        self.wb = workbook
        self.issues = _Collector()
        self.origins = _Origins()
        self.choice_lists: dict[str, list[dict[str, Any]]] = {}
        self.field_paths: set[str] = set()
        # Lists named in the choices sheet, even when all their rows are broken (already reported).
        self.named_lists: set[str] = set()

    # -- sheets ---------------------------------------------------------------------------

    def _find_sheet(self, name: str) -> Worksheet | None:
        for ws in self.wb.worksheets:
            if ws.title.strip().lower() == name:
                return ws
        return None

    def read(self) -> dict[str, Any]:
        for ws in self.wb.worksheets:
            if ws.title.strip().lower() in _REFUSED_SHEETS:
                self.issues.add(
                    "unsupported_sheet",
                    f"sheet {ws.title!r} is not supported (see docs/xlsform.md)",
                    f"不支持工作表 {ws.title!r}（见 docs/xlsform.md）",
                    sheet=ws.title,
                )
        settings = self._read_settings()
        self._read_choices()
        fields = self._read_survey()
        checks = self._read_checks()
        upgrade = self._read_upgrade(settings.get("version"))
        doc: dict[str, Any] = {}
        doc.update(settings)
        doc["fields"] = fields
        doc["choice_lists"] = self.choice_lists
        doc["checks"] = checks
        if upgrade is not None:
            doc["upgrade"] = upgrade
        return doc

    def _required_sheet(self, name: str, known: Mapping[str, bool]) -> _Sheet | None:
        ws = self._find_sheet(name)
        if ws is None:
            self.issues.add(
                "missing_sheet",
                f"the workbook has no {name!r} sheet",
                f"表格缺少工作表 {name!r}",
                sheet=None,
            )
            return None
        return _read_sheet(ws, known, self.issues)

    def _has_columns(self, sheet: _Sheet, keys: Sequence[str]) -> bool:
        """Report each missing column once (not on every row); True when none is missing."""
        missing = [key for key in keys if sheet.column(key) is None]
        if missing and sheet.rows:
            names = ", ".join(missing)
            self.issues.add(
                "missing_column",
                f"the {sheet.title} sheet lacks the column(s): {names}",
                f"{sheet.title} 工作表缺少 {names} 列",
                sheet=sheet,
                row=1,
            )
        return not missing

    def _texts(self, row: _Row, key: str, *, required: bool, what: str) -> dict[str, str] | None:
        """Read a translatable column; ``zh`` (or the plain column) is required when any is set."""
        texts = row.texts(key)
        if not texts:
            if required:
                self.issues.at(
                    row,
                    key,
                    "empty_required",
                    f"{what} is empty: {key}::zh (or plain {key}) is required",
                    f"{what}为空：必须填写 {key}::zh（或不带语言的 {key}）",
                    lang="zh",
                )
            return None
        if "zh" not in texts:
            self.issues.at(
                row,
                key,
                "missing_zh",
                f"{what} has other languages but no Chinese: fill {key}::zh (or plain {key})",
                f"{what}有其他语言但缺少中文：请填写 {key}::zh（或不带语言的 {key}）",
                lang="zh",
            )
            return None
        ordered = {"zh": texts["zh"]}
        ordered.update((lang, text) for lang, text in texts.items() if lang != "zh")
        return ordered

    def _expression(self, row: _Row, key: str) -> str | None:
        """Read an expression cell. Its syntax is checked by the definition loader, whose
        issue (with the character position) is mapped back to this cell."""
        return row.get(key) or None

    def _flag(self, row: _Row, key: str) -> bool | str | None:
        """Read a yes/no cell; for ``required`` an expression is also accepted."""
        text = row.get(key)
        lowered = text.lower()
        if lowered in _TRUE_WORDS:
            return True
        if lowered in _FALSE_WORDS:
            return None
        if key == "required":
            return self._expression(row, key)
        self.issues.at(
            row,
            key,
            "bad_flag",
            f"{key} must be yes or no, not {text!r}",
            f"{key} 只能填 yes 或 no，不能是 {text!r}",
        )
        return None

    def _count(self, row: _Row, key: str) -> int | None:
        text = row.get(key)
        if not text:
            return None
        if not _DIGITS_RE.match(text):
            self.issues.at(
                row,
                key,
                "bad_number",
                f"{key} must be a whole number >= 0, not {text!r}",
                f"{key} 必须是不小于 0 的整数，不能是 {text!r}",
            )
            return None
        return int(text)

    # -- settings -------------------------------------------------------------------------

    def _read_settings(self) -> dict[str, Any]:
        sheet = self._required_sheet("settings", _SETTINGS_COLUMNS)
        out: dict[str, Any] = {}
        if sheet is None:
            return out
        self.origins.settings = sheet
        if not sheet.rows:
            self.issues.add(
                "empty_sheet",
                "the settings sheet needs one row below the header (form_id, version, form_title)",
                "settings 工作表在表头下需要一行（form_id、version、form_title）",
                sheet=sheet,
                row=2,
            )
            return out
        row = sheet.rows[0]
        self.origins.settings_row = row.number
        for extra in sheet.rows[1:]:
            self.issues.add(
                "extra_row",
                "the settings sheet takes exactly one row below the header",
                "settings 工作表表头下只能有一行",
                sheet=sheet,
                row=extra.number,
            )
        form_id = row.get("form_id")
        if not form_id:
            self.issues.at(row, "form_id", "empty_required", "form_id is empty", "form_id 为空")
        elif not _NAME_RE.match(form_id):
            self.issues.at(
                row,
                "form_id",
                "bad_name",
                f"form_id {form_id!r} must be lower-case letters, digits and _ "
                "and start with a letter",
                f"form_id {form_id!r} 只能由小写字母、数字和下划线组成，且以字母开头",
            )
        out["id"] = form_id
        version = row.get("version")
        if not version:
            self.issues.at(row, "version", "empty_required", "version is empty", "version 为空")
        elif not _DIGITS_RE.match(version) or int(version) < 1:
            self.issues.at(
                row,
                "version",
                "bad_version",
                f"version must be a whole number >= 1, not {version!r}",
                f"version 必须是不小于 1 的整数，不能是 {version!r}",
            )
        else:
            out["version"] = int(version)
        title = self._texts(row, "form_title", required=True, what="form_title")
        if title is not None:
            out["title"] = title
        out["subject"] = row.get("subject") or "household"
        language = row.get("default_language").lower()
        if language not in ("", "zh") and not language.endswith("(zh)"):
            self.issues.at(
                row,
                "default_language",
                "bad_default_language",
                "default_language can only be zh: plain label always means label::zh",
                "default_language 只能是 zh：不带语言的 label 就是中文",
            )
        return out

    # -- choices --------------------------------------------------------------------------

    def _read_choices(self) -> None:
        ws = self._find_sheet("choices")
        if ws is None:
            return
        sheet = _read_sheet(ws, _CHOICES_COLUMNS, self.issues)
        self.origins.choices = sheet
        if not self._has_columns(sheet, ("list_name", "name")):
            # Name the lists anyway, so select questions do not also report them missing.
            self.named_lists.update(r.get("list_name") for r in sheet.rows if r.get("list_name"))
            return
        seen: dict[tuple[str, str], int] = {}
        for row in sheet.rows:
            list_name = row.get("list_name")
            value = row.get("name")
            if not list_name:
                self.issues.at(
                    row, "list_name", "empty_required", "list_name is empty", "list_name 为空"
                )
                continue
            if not _NAME_RE.match(list_name):
                self.issues.at(
                    row,
                    "list_name",
                    "bad_name",
                    f"list_name {list_name!r} must be lower-case letters, digits and _ "
                    "and start with a letter",
                    f"list_name {list_name!r} 只能由小写字母、数字和下划线组成，且以字母开头",
                )
                continue
            self.origins.choice_rows.setdefault(list_name, row.number)
            self.named_lists.add(list_name)
            if not value:
                self.issues.at(
                    row,
                    "name",
                    "empty_required",
                    "the choice name (the value stored) is empty",
                    "选项 name（保存的值）为空",
                )
                continue
            if (list_name, value) in seen:
                self.issues.at(
                    row,
                    "name",
                    "duplicate_choice",
                    f"choice {value!r} already appears in list {list_name!r} "
                    f"at row {seen[(list_name, value)]}",
                    f"选项 {value!r} 已在列表 {list_name!r} 第 {seen[(list_name, value)]} 行出现",
                )
                continue
            seen[(list_name, value)] = row.number
            self.origins.choice_value_rows[(list_name, value)] = row.number
            label = self._texts(row, "label", required=True, what="choice label")
            self.choice_lists.setdefault(list_name, []).append(
                {"value": value, "label": label or {"zh": value}}
            )

    # -- survey ---------------------------------------------------------------------------

    def _read_survey(self) -> list[dict[str, Any]]:
        sheet = self._required_sheet("survey", _SURVEY_COLUMNS)
        root: list[dict[str, Any]] = []
        if sheet is None:
            return root
        self.origins.survey = sheet
        if not self._has_columns(sheet, ("type", "name")):
            return root
        stack = [_Level("root", "", 1, root, {}, (), None)]
        for row in sheet.rows:
            self._survey_row(row, stack)
        for level in reversed(stack[1:]):
            what = "begin_repeat" if level.kind == "repeat" else "begin_group"
            self.issues.add(
                "unclosed_block",
                f"{what} {level.name!r} is never closed (no matching end_{level.kind})",
                f"{what} {level.name!r} 没有对应的 end_{level.kind}",
                sheet=sheet,
                row=level.row,
                column=sheet.column("type"),
            )
        return root

    def _survey_row(self, row: _Row, stack: list[_Level]) -> None:
        raw_type = row.get("type")
        if not raw_type:
            self.issues.at(
                row,
                "type",
                "empty_required",
                "this row has content but its type is empty",
                "该行有内容但 type 为空",
            )
            return
        words = raw_type.lower().split()
        kind = words[0]
        if len(words) >= 2 and words[0] in ("begin", "end") and words[1] in ("repeat", "group"):
            kind = f"{words[0]}_{words[1]}"
            words = [kind, *words[2:]]
        level = stack[-1]

        if kind in ("end_repeat", "end_group"):
            self._end_block(row, stack, kind[4:])
            return
        if kind in _METADATA_TYPES:
            self.issues.at(
                row,
                "type",
                "unsupported_type",
                f"metadata type {raw_type!r} is not needed: device, user and times travel with "
                "every record; remove this row",
                f"无需元数据题 {raw_type!r}：设备、用户和时间随记录自动保存，请删除此行",
            )
            return
        if kind in _REFUSED_TYPES:
            reason, reason_zh = _REFUSED_TYPES[kind]
            self.issues.at(
                row,
                "type",
                "unsupported_type",
                f"type {raw_type!r} is not supported: {reason}",
                f"不支持题型 {raw_type!r}：{reason_zh}",
            )
            return
        if kind in _SELECT_TYPES:
            if len(words) != 2:
                self.issues.at(
                    row,
                    "type",
                    "bad_select",
                    f"write {kind} followed by exactly one choice list name, not {raw_type!r}"
                    + (" (or_other is not supported)" if "or_other" in words else ""),
                    f"{kind} 后面只能跟一个选项列表名，不能是 {raw_type!r}",
                )
                return
            list_name = raw_type.split()[1]
            if list_name not in self.named_lists:
                self.issues.at(
                    row,
                    "type",
                    "missing_choice_list",
                    f"choice list {list_name!r} is not in the choices sheet",
                    f"choices 工作表中没有选项列表 {list_name!r}",
                )
                return
        elif kind not in _PLAIN_TYPES and kind not in ("begin_repeat", "begin_group"):
            self.issues.at(
                row,
                "type",
                "unknown_type",
                f"unknown type {raw_type!r} (see docs/xlsform.md for the supported types)",
                f"未知题型 {raw_type!r}（支持的题型见 docs/xlsform.md）",
            )
            return
        elif len(words) != 1:
            self.issues.at(
                row,
                "type",
                "unknown_type",
                f"type {raw_type!r} takes nothing after {kind!r}",
                f"题型 {raw_type!r} 中 {kind!r} 后面不能再有内容",
            )
            return

        appearance = row.get("appearance").lower()
        for word in appearance.split():
            if word not in _PRESENTATIONAL_APPEARANCES:
                self.issues.at(
                    row,
                    "appearance",
                    "unsupported_appearance",
                    f"appearance {word!r} changes what is recorded and is not supported",
                    f"不支持外观 {word!r}（它会改变记录的内容）",
                )

        name = self._name(row, level)
        if kind == "begin_group":
            self._begin_group(row, stack, name)
            return

        ftype = "repeat" if kind == "begin_repeat" else kind
        fdef: dict[str, Any] = {"name": name, "type": ftype}
        label = self._texts(row, "label", required=ftype != "calculate", what="label")
        if label is not None:
            fdef["label"] = label
        hint = self._texts(row, "hint", required=False, what="hint")
        if hint is not None:
            fdef["hint"] = hint
        required = self._flag(row, "required")
        if required is not None:
            fdef["required"] = required
        relevant = _and(
            level.group_relevant, _Relevance.of_cell(self._expression(row, "relevant"), row.number)
        )
        if relevant is not None:
            fdef["relevant"] = relevant.text
        constraint = self._expression(row, "constraint")
        if constraint is not None:
            fdef["constraint"] = constraint
        message = self._texts(row, "constraint_message", required=False, what="constraint_message")
        if message is not None:
            fdef["constraint_message"] = message
        calculation = self._expression(row, "calculation")
        if calculation is not None:
            fdef["calculate"] = calculation
        elif ftype == "calculate":
            self.issues.at(
                row,
                "calculation",
                "empty_required",
                "a calculate question needs a calculation",
                "calculate 计算题必须填写 calculation",
            )
        if kind in _SELECT_TYPES:
            fdef["choices"] = raw_type.split()[1]
        unit = row.get("unit")
        if unit:
            fdef["unit"] = unit
        merge = row.get("merge").lower()
        if merge in ("lww", "review"):
            fdef["merge"] = merge
        elif merge:
            self.issues.at(
                row,
                "merge",
                "bad_merge",
                f"merge must be lww or review, not {row.get('merge')!r}",
                f"merge 只能是 lww 或 review，不能是 {row.get('merge')!r}",
            )
        sensitive = self._flag(row, "sensitive")
        if sensitive is True:
            fdef["sensitive"] = True
        for key in ("min_rows", "max_rows"):
            count = self._count(row, key)
            if count is None:
                continue
            if ftype != "repeat":
                self.issues.at(
                    row,
                    key,
                    "misplaced_value",
                    f"{key} only applies to begin_repeat rows",
                    f"{key} 只能用于 begin_repeat 行",
                )
            else:
                fdef[key] = count

        if name is None:
            return
        path = (*level.path, name)
        self.origins.field_rows[path] = row.number
        if relevant is not None:
            self.origins.relevance[path] = relevant
        self.origins.level_rows.setdefault(level.path, []).append(row.number)
        self.field_paths.add("/".join(path))
        level.fields.append(fdef)
        if ftype == "repeat":
            children: list[dict[str, Any]] = []
            fdef["fields"] = children
            # min_rows/max_rows read above stay after "fields" for readability of the JSON.
            for key in ("min_rows", "max_rows"):
                if key in fdef:
                    fdef[key] = fdef.pop(key)
            stack.append(_Level("repeat", name, row.number, children, {}, path, None))

    def _name(self, row: _Row, level: _Level) -> str | None:
        name = row.get("name")
        if not name:
            self.issues.at(row, "name", "empty_required", "name is empty", "name 为空")
            return None
        if not _NAME_RE.match(name):
            self.issues.at(
                row,
                "name",
                "bad_name",
                f"name {name!r} must be lower-case letters, digits and _ and start with a letter",
                f"name {name!r} 只能由小写字母、数字和下划线组成，且以字母开头",
            )
            return None
        if name in level.names:
            self.issues.at(
                row,
                "name",
                "duplicate_name",
                f"name {name!r} is already used at this level, in row {level.names[name]} "
                "(groups do not start a new level)",
                f"name {name!r} 在同一层已用于第 {level.names[name]} 行（分组不构成新的一层）",
            )
            return None
        level.names[name] = row.number
        return name

    def _begin_group(self, row: _Row, stack: list[_Level], name: str | None) -> None:
        level = stack[-1]
        for key in ("required", "constraint", "calculation", "min_rows", "max_rows", "merge"):
            if row.get(key):
                self.issues.at(
                    row,
                    key,
                    "misplaced_value",
                    f"{key} does not apply to a group (groups only carry a label and relevant)",
                    f"分组不能设置 {key}（分组只有 label 和 relevant）",
                )
        relevant = _and(
            level.group_relevant, _Relevance.of_cell(self._expression(row, "relevant"), row.number)
        )
        # A group adds no level: its questions land in the enclosing level's list and names.
        stack.append(
            _Level("group", name or "", row.number, level.fields, level.names, level.path, relevant)
        )

    def _end_block(self, row: _Row, stack: list[_Level], kind: str) -> None:
        level = stack[-1]
        if level.kind != kind:
            opened = (
                f"begin_{level.kind} {level.name!r} (row {level.row})"
                if level.kind != "root"
                else "nothing"
            )
            self.issues.at(
                row,
                "type",
                "unbalanced_block",
                f"end_{kind} does not match the open block: {opened}",
                f"end_{kind} 与当前打开的块不匹配：{opened}",
            )
            return
        name = row.get("name")
        if name and name != level.name:
            self.issues.at(
                row,
                "name",
                "unbalanced_block",
                f"end_{kind} names {name!r} but the open block is {level.name!r} (row {level.row})",
                f"end_{kind} 的 name 是 {name!r}，但打开的块是 {level.name!r}（第 {level.row} 行）",
            )
        stack.pop()

    # -- checks ---------------------------------------------------------------------------

    def _read_checks(self) -> list[dict[str, Any]]:
        ws = self._find_sheet("checks")
        out: list[dict[str, Any]] = []
        if ws is None:
            return out
        sheet = _read_sheet(ws, _CHECKS_COLUMNS, self.issues)
        self.origins.checks = sheet
        if not self._has_columns(sheet, ("id", "rule")):
            return out
        ids: dict[str, int] = {}
        for row in sheet.rows:
            check_id = row.get("id")
            if not check_id:
                self.issues.at(row, "id", "empty_required", "id is empty", "id 为空")
                continue
            if not _NAME_RE.match(check_id):
                self.issues.at(
                    row,
                    "id",
                    "bad_name",
                    f"id {check_id!r} must be lower-case letters, digits and _ "
                    "and start with a letter",
                    f"id {check_id!r} 只能由小写字母、数字和下划线组成，且以字母开头",
                )
                continue
            if check_id in ids:
                self.issues.at(
                    row,
                    "id",
                    "duplicate_name",
                    f"check id {check_id!r} is already used in row {ids[check_id]}",
                    f"检查 id {check_id!r} 已用于第 {ids[check_id]} 行",
                )
                continue
            ids[check_id] = row.number
            self.origins.check_rows[check_id] = row.number
            self.origins.check_order.append(row.number)
            severity = row.get("severity").lower()
            if severity not in ("error", "warning"):
                self.issues.at(
                    row,
                    "severity",
                    "bad_severity",
                    f"severity must be error or warning, not {row.get('severity')!r}",
                    f"severity 只能是 error 或 warning，不能是 {row.get('severity')!r}",
                )
            field_name = row.get("field")
            # An empty field is allowed: the check's message then belongs to the whole record.
            if field_name and field_name not in self.field_paths:
                self.issues.at(
                    row,
                    "field",
                    "unknown_field",
                    f"field {field_name!r} is not a question of the survey sheet "
                    "(inside a repeat write repeat/name, e.g. members/age)",
                    f"survey 工作表中没有题目 {field_name!r}（重复组内的题目写作 members/age 形式）",
                )
            rule = self._expression(row, "rule")
            if rule is None:
                self.issues.at(row, "rule", "empty_required", "rule is empty", "rule 为空")
            message = self._texts(row, "message", required=True, what="message")
            check: dict[str, Any] = {"id": check_id, "severity": severity}
            if field_name:
                check["field"] = field_name
            check.update(rule=rule or "", message=message or {})
            out.append(check)
        return out

    # -- upgrade --------------------------------------------------------------------------

    def _read_upgrade(self, version: int | None) -> dict[str, Any] | None:
        ws = self._find_sheet("upgrade")
        if ws is None:
            return None
        sheet = _read_sheet(ws, _UPGRADE_COLUMNS, self.issues)
        self.origins.upgrade = sheet
        if not self._has_columns(sheet, ("from_version",)):
            return None
        if not sheet.rows:
            return None
        from_version: int | None = None
        renames: dict[str, str] = {}
        drops: list[str] = []
        touched: dict[str, int] = {}
        for row in sheet.rows:
            self.origins.upgrade_rows.append(row.number)
            text = row.get("from_version")
            if not _DIGITS_RE.match(text) or int(text) < 1:
                self.issues.at(
                    row,
                    "from_version",
                    "bad_version",
                    f"from_version must be a whole number >= 1, not {text!r}",
                    f"from_version 必须是不小于 1 的整数，不能是 {text!r}",
                )
                continue
            if from_version is None:
                from_version = int(text)
                if version is not None and from_version >= version:
                    self.issues.at(
                        row,
                        "from_version",
                        "bad_version",
                        f"from_version {from_version} must be lower than the form's version "
                        f"{version}",
                        f"from_version {from_version} 必须小于表单版本 {version}",
                    )
            elif int(text) != from_version:
                self.issues.at(
                    row,
                    "from_version",
                    "bad_version",
                    f"every row must upgrade from the same version ({from_version})",
                    f"每一行的 from_version 必须相同（{from_version}）",
                )
            action = row.get("action").lower()
            old = row.get("field")
            new = row.get("new_name")
            if not action:
                if old or new:
                    self.issues.at(
                        row,
                        "action",
                        "empty_required",
                        "action is empty: write rename or drop",
                        "action 为空：请填 rename 或 drop",
                    )
                continue
            if action not in ("rename", "drop"):
                self.issues.at(
                    row,
                    "action",
                    "bad_action",
                    f"action must be rename or drop, not {row.get('action')!r}",
                    f"action 只能是 rename 或 drop，不能是 {row.get('action')!r}",
                )
                continue
            if not _PATH_RE.match(old):
                self.issues.at(
                    row,
                    "field",
                    "bad_name",
                    f"field must be a field path such as members/age, not {old!r}",
                    f"field 必须是字段路径（如 members/age），不能是 {old!r}",
                )
                continue
            if old in touched:
                self.issues.at(
                    row,
                    "field",
                    "duplicate_name",
                    f"{old!r} is already renamed or dropped in row {touched[old]}",
                    f"{old!r} 已在第 {touched[old]} 行改名或删除",
                )
                continue
            touched[old] = row.number
            self.origins.upgrade_field_rows[old] = row.number
            if action == "rename":
                if not _PATH_RE.match(new):
                    self.issues.at(
                        row,
                        "new_name",
                        "bad_name",
                        f"rename needs new_name, a field path, not {new!r}",
                        f"rename 需要 new_name（字段路径），不能是 {new!r}",
                    )
                    continue
                renames[old] = new
            else:
                if new:
                    self.issues.at(
                        row,
                        "new_name",
                        "misplaced_value",
                        "drop takes no new_name",
                        "drop 不需要 new_name",
                    )
                    continue
                drops.append(old)
        if from_version is None:
            return None
        if version == 1:
            self.issues.add(
                "misplaced_value",
                "version 1 has no earlier version to upgrade from: remove the upgrade sheet",
                "版本 1 没有可升级的旧版本：请删除 upgrade 工作表",
                sheet=sheet,
                row=sheet.rows[0].number,
            )
        return {"from_version": from_version, "renames": renames, "drops": drops}


# --------------------------------------------------------------------------------------------
# Public API: import


Source = str | Path | IO[bytes]


def _file_refusal(code: str, message: str, message_zh: str) -> XLSFormError:
    return XLSFormError(
        [XLSFormIssue(None, None, None, None, code, message, message_zh)], code=code
    )


def _open_workbook(source: Source) -> openpyxl.Workbook:
    """Open a workbook.

    Raises:
        XLSFormError: code ``file_not_found``, ``too_large`` (over :data:`MAX_WORKBOOK_BYTES`
            on disk or unpacked) or ``not_xlsx`` (anything openpyxl cannot read).
    """
    if isinstance(source, str | Path):
        name = str(source)
    else:
        # An upload (werkzeug's FileStorage) knows its file name; a plain stream may know a path.
        name = str(getattr(source, "filename", None) or getattr(source, "name", None) or "(upload)")
    try:
        if isinstance(source, str | Path):
            with open(source, "rb") as handle:
                data = handle.read(MAX_WORKBOOK_BYTES + 1)
        else:
            data = source.read(MAX_WORKBOOK_BYTES + 1)
        if len(data) > MAX_WORKBOOK_BYTES or _unpacked_size(data) > MAX_WORKBOOK_BYTES * 10:
            raise _file_refusal(
                "too_large",
                f"{name} is too large for a form (limit {MAX_WORKBOOK_BYTES // 2**20} MiB)",
                f"{name} 太大，不像是调查表（上限 {MAX_WORKBOOK_BYTES // 2**20} MiB）",
            )
        with warnings.catch_warnings():
            # Excel and WPS save extensions openpyxl drops with a UserWarning (data validation
            # lists, conditional formatting, slicers). We read cell values only, so the loss
            # is of no concern, and the warning would only confuse county staff. (The filter is
            # process-wide while the block runs; at worst another thread's openpyxl warning is
            # also silenced for that moment.)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"openpyxl(\..*)?$")
            # Load from memory so openpyxl never keeps a file handle open.
            return openpyxl.load_workbook(io.BytesIO(data), data_only=False)
    except XLSFormError:
        raise
    except FileNotFoundError as exc:
        raise _file_refusal(
            "file_not_found", f"no such file: {name}", f"找不到文件：{name}"
        ) from exc
    except Exception as exc:
        # openpyxl parses untrusted bytes and fails in many ways (zip, XML, styles, missing
        # parts: InvalidFileException, BadZipFile, KeyError, ValueError, TypeError, ...);
        # to the person who uploaded the file they all mean one thing.
        raise _file_refusal(
            "not_xlsx",
            f"{name} is not a readable .xlsx workbook (save it from Excel or WPS as .xlsx): "
            f"{type(exc).__name__}: {exc}",
            f"{name} 不是可读取的 .xlsx 表格（请在 Excel 或 WPS 中另存为 .xlsx）",
        ) from exc


def _unpacked_size(data: bytes) -> int:
    """Total unpacked size of a zip's members (0 when it is not a zip: openpyxl will say so)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError):
        return 0


def _read_and_load(source: Source) -> tuple[dict[str, Any], FormDefinition]:
    workbook = _open_workbook(source)
    try:
        reader = _Reader(workbook)
        document = reader.read()
    finally:
        workbook.close()
    if reader.issues.issues:
        raise XLSFormError(reader.issues.issues)
    try:
        definition = load_definition(document)
    except FormDefinitionError as exc:
        located: dict[tuple[Any, ...], XLSFormIssue] = {}
        for issue in exc.issues:
            place = _locate(issue, reader.origins)
            # A group's faulty relevance reaches every question in it: report it once.
            key = (place.sheet, place.row, place.column, place.code, place.position)
            if place.row is None or key not in located:
                located[key if place.row is not None else (len(located),)] = place
        raise XLSFormError(list(located.values())) from exc
    return document, definition


def import_xlsform(source: Source) -> dict[str, Any]:
    """Read an XLSForm workbook into a form definition document (contracts §1).

    ``source`` is a path or a binary file object. The document is also checked by
    :func:`forms.definition.load_definition`, so what this returns always loads.

    Raises:
        XLSFormError: the file is not an .xlsx workbook, uses something outside the supported
            subset, or describes an invalid definition; ``issues`` locates every problem.
    """
    document, _ = _read_and_load(source)
    return document


def load_xlsform(source: Source) -> FormDefinition:
    """Read an XLSForm workbook straight into a :class:`FormDefinition`.

    Raises:
        XLSFormError: as :func:`import_xlsform`.
    """
    _, definition = _read_and_load(source)
    return definition


# --------------------------------------------------------------------------------------------
# Public API: export

_FIELD_KEYS = {
    "name",
    "type",
    "label",
    "hint",
    "required",
    "relevant",
    "constraint",
    "constraint_message",
    "calculate",
    "choices",
    "unit",
    "merge",
    "sensitive",
    "fields",
    "min_rows",
    "max_rows",
}
_DOCUMENT_KEYS = {
    "id",
    "version",
    "title",
    "subject",
    "fields",
    "choice_lists",
    "checks",
    "upgrade",
}


def _export_refusal(what: str, where: str) -> XLSFormError:
    return XLSFormError(
        [
            XLSFormIssue(
                None,
                None,
                None,
                None,
                "export_unsupported",
                f"{where}: {what} cannot be written as XLSForm",
                f"{where}：{what} 无法写入 XLSForm",
            )
        ],
        code="export_unsupported",
    )


def _languages(texts: Iterable[Mapping[str, str] | None]) -> list[str]:
    """Languages used, zh first, then in order of first use."""
    langs = ["zh"]
    for text in texts:
        for lang in text or {}:
            if lang not in langs:
                langs.append(lang)
    return langs


def _walk_fields(fields: Sequence[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for item in fields:
        yield item
        yield from _walk_fields(item.get("fields") or [])


def _write_table(ws: Worksheet, headers: list[str], rows: list[dict[str, str]]) -> None:
    """Write a header row and text rows, styled so county staff can edit them comfortably.

    Raises:
        XLSFormError: (``export_unsupported``) a text holds a control character Excel cannot store.
    """
    ws.append(headers)
    for values in rows:
        try:
            ws.append([values.get(h, "") for h in headers])
        except IllegalCharacterError as exc:
            raise _export_refusal(
                "a text with a control character", f"sheet {ws.title!r}, {values!r}"
            ) from exc
        for cell in ws[ws.max_row]:
            # openpyxl takes "=..." for a formula and "#N/A" for an error; ours are texts.
            if isinstance(cell.value, str):
                cell.data_type = "s"
    bold = Font(bold=True)
    fill = PatternFill("solid", fgColor="DDEBF7")
    for cell in ws[1]:
        cell.font = bold
        cell.fill = fill
    ws.freeze_panes = "A2"
    for index, header in enumerate(headers, start=1):
        longest = max([_display_width(header)] + [_display_width(r.get(header, "")) for r in rows])
        ws.column_dimensions[get_column_letter(index)].width = min(60, max(10, longest + 2))
    for row in ws.iter_rows(min_row=2):
        for cell in row:
            cell.alignment = Alignment(vertical="top", wrap_text=False)


def _display_width(text: str) -> int:
    """Width in Excel's character units: Chinese (wide) characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _flag_text(value: Any) -> str:
    if value is True:
        return "yes"
    if value is False or value is None:
        return ""
    return str(value)


def export_xlsform(definition: FormDefinition | Mapping[str, Any], destination: Source) -> None:
    """Write a form definition as an XLSForm workbook that :func:`import_xlsform` reads back.

    ``definition`` is a :class:`FormDefinition` or a contracts §1 document (checked with
    :func:`load_definition` first). Every cell is written as text. The workbook reads back to the
    same definition (same :func:`dump_definition`); bytes differ between runs because the file
    carries its creation time.

    Raises:
        FormDefinitionError: ``definition`` is a document that does not load.
        XLSFormError: (code ``export_unsupported``) the definition holds something XLSForm cannot
            carry, so writing it would silently lose it.
        OSError: ``destination`` cannot be written.
    """
    loaded = definition if isinstance(definition, FormDefinition) else load_definition(definition)
    doc = dump_definition(loaded)
    for key, value in doc.items():
        if key not in _DOCUMENT_KEYS and value not in (None, [], {}):
            raise _export_refusal(f"document key {key!r}", "definition")

    all_fields = list(_walk_fields(doc.get("fields") or []))
    for item in all_fields:
        for key, value in item.items():
            if key not in _FIELD_KEYS and value not in (None, [], {}, False):
                raise _export_refusal(f"field key {key!r}", f"field {item.get('name')!r}")

    workbook = openpyxl.Workbook()
    survey = workbook.worksheets[0]
    survey.title = "survey"

    label_langs = _languages(f.get("label") for f in all_fields)
    hint_langs = _languages(f.get("hint") for f in all_fields)
    message_langs = _languages(f.get("constraint_message") for f in all_fields)
    headers = ["type", "name", *(f"label::{lang}" for lang in label_langs)]
    optional = [
        *(f"hint::{lang}" for lang in hint_langs),
        "required",
        "relevant",
        "constraint",
        *(f"constraint_message::{lang}" for lang in message_langs),
        "calculation",
        "unit",
        "merge",
        "sensitive",
        "min_rows",
        "max_rows",
    ]
    rows: list[dict[str, str]] = []

    def add_fields(fields: Sequence[Mapping[str, Any]]) -> None:
        for item in fields:
            ftype = item["type"]
            row: dict[str, str] = {"name": item["name"]}
            if ftype == "repeat":
                row["type"] = "begin_repeat"
            elif ftype in _SELECT_TYPES:
                row["type"] = f"{ftype} {item['choices']}"
            else:
                row["type"] = ftype
            for key, column in (
                ("label", "label"),
                ("hint", "hint"),
                ("constraint_message", "constraint_message"),
            ):
                for lang, text in (item.get(key) or {}).items():
                    row[f"{column}::{lang}"] = text
            row["required"] = _flag_text(item.get("required"))
            row["sensitive"] = _flag_text(item.get("sensitive"))
            for key, column in (
                ("relevant", "relevant"),
                ("constraint", "constraint"),
                ("calculate", "calculation"),
                ("unit", "unit"),
            ):
                if item.get(key):
                    row[column] = str(item[key])
            if item.get("merge") and item["merge"] != "lww":
                row["merge"] = item["merge"]
            for key in ("min_rows", "max_rows"):
                if item.get(key) is not None:
                    row[key] = str(item[key])
            rows.append(row)
            if ftype == "repeat":
                add_fields(item.get("fields") or [])
                rows.append({"type": "end_repeat", "name": item["name"]})

    add_fields(doc.get("fields") or [])
    headers += [h for h in optional if any(r.get(h) for r in rows)]
    _write_table(survey, headers, rows)

    choice_lists: Mapping[str, Sequence[Mapping[str, Any]]] = doc.get("choice_lists") or {}
    choice_langs = _languages(c.get("label") for items in choice_lists.values() for c in items)
    choice_rows = [
        {
            "list_name": list_name,
            "name": str(choice["value"]),
            **{f"label::{lang}": text for lang, text in (choice.get("label") or {}).items()},
        }
        for list_name, items in choice_lists.items()
        for choice in items
    ]
    _write_table(
        workbook.create_sheet("choices"),
        ["list_name", "name", *(f"label::{lang}" for lang in choice_langs)],
        choice_rows,
    )

    title_langs = _languages([doc.get("title")])
    _write_table(
        workbook.create_sheet("settings"),
        ["form_id", "version", *(f"form_title::{lang}" for lang in title_langs), "subject"],
        [
            {
                "form_id": doc["id"],
                "version": str(doc["version"]),
                **{f"form_title::{lang}": t for lang, t in (doc.get("title") or {}).items()},
                "subject": doc.get("subject") or "household",
            }
        ],
    )

    checks: Sequence[Mapping[str, Any]] = doc.get("checks") or []
    if checks:
        message_langs = _languages(c.get("message") for c in checks)
        _write_table(
            workbook.create_sheet("checks"),
            ["id", "severity", "field", "rule", *(f"message::{lang}" for lang in message_langs)],
            [
                {
                    "id": c["id"],
                    "severity": c.get("severity") or "error",
                    "field": c.get("field") or "",
                    "rule": c["rule"],
                    **{f"message::{lang}": t for lang, t in (c.get("message") or {}).items()},
                }
                for c in checks
            ],
        )

    upgrade: Mapping[str, Any] | None = doc.get("upgrade")
    if upgrade:
        start = str(upgrade["from_version"])
        upgrade_rows = [
            {"from_version": start, "action": "rename", "field": old, "new_name": new}
            for old, new in (upgrade.get("renames") or {}).items()
        ] + [
            {"from_version": start, "action": "drop", "field": old}
            for old in upgrade.get("drops") or []
        ]
        _write_table(
            workbook.create_sheet("upgrade"),
            ["from_version", "action", "field", "new_name"],
            upgrade_rows or [{"from_version": start}],
        )

    if isinstance(destination, str | Path):
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        workbook.save(str(destination))
    else:
        workbook.save(destination)
