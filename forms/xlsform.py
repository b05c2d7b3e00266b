"""XLSForm import and export for the form engine.

County staff, NGOs and survey firms author instruments in XLSForm for ODK and Kobo. This module
maps such a workbook onto the JSON form definition of docs/contracts.md §1, and writes a
definition back as an ODK XLSForm, so the built-in instruments ship as editable ``.xlsx`` files.

The cells are read, bounded, by :mod:`forms.xlsform_source`; type spellings come from pyxform
(ODK's reference implementation), and pyxform converts the same cells so that what we accept
never drifts from what ODK accepts. Every feature is supported, mapped (with a warning), ignored
(with a warning) or refused (docs/xlsform.md); a refusal is an :class:`XLSFormError` whose
``issues`` name the sheet, the row and column as Excel shows them, the header and what was
wrong, in Chinese and English. A workbook never produces a Python traceback.

:func:`read_xlsform` takes bytes and does no I/O; :func:`import_xlsform` / :func:`load_xlsform`
are the edge for a path or a stream.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import openpyxl
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.utils.exceptions import IllegalCharacterError
from openpyxl.worksheet.worksheet import Worksheet
from pyxform import aliases as pyxform_aliases

from forms.definition import FormDefinition, dump_definition, load_definition
from forms.errors import DefinitionIssue, FormDefinitionError, FormsError
from forms.text import LANGUAGE_TAG
from forms.xlsform_attachments import AttachmentError, read_choice_file, read_data_table
from forms.xlsform_source import (
    MAX_WORKBOOK_BYTES,
    RawSheet,
    SourceError,
    pyxform_verdict,
    read_sheets,
)

__all__ = [
    "BOOLEAN_TYPE",
    "EXPORT_BOOLEAN_LIST",
    "MAX_VERSION",
    "MAX_WORKBOOK_BYTES",
    "XLSFormError",
    "XLSFormImport",
    "XLSFormIssue",
    "export_xlsform",
    "import_xlsform",
    "load_xlsform",
    "read_xlsform",
]

#: ODK has no boolean question type; ours is spelled ``boolean`` in the ``type`` column.
BOOLEAN_TYPE = "boolean"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_PATH_RE = re.compile(r"^[a-z][a-z0-9_]*(/[a-z][a-z0-9_]*)*$")
_DIGITS_RE = re.compile(r"^[0-9]+$")
_NUMBER_RE = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
_REFERENCE_RE = re.compile(r"\$\{([^{}\s]+)\}")
_PULLDATA_RE = re.compile(r"""pulldata\(\s*['"]([^'"]+)['"]""")
_POSITION_RE = re.compile(r"position\(\s*\.\.\s*\)")
_NODESET_RE = re.compile(r"\b(sum|count)\(\s*\$\{([A-Za-z_][A-Za-z0-9_]*)\}\s*\)")
# Tokens of a choice_filter: strings, ${…} and numbers stay; a bare word is a choice column
# unless a '(' follows (a function, ODK's names may hold ':' and '-').
_FILTER_TOKEN_RE = re.compile(
    r"'[^']*'|\"[^\"]*\"|\$\{[^{}]*\}|[0-9]+(?:\.[0-9]*)?|\.[0-9]+"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_:\-]*)(?P<call>\s*\()?"
)
#: Versions are stored as whole numbers (PostgreSQL ``integer``); ODK's date stamps fit.
MAX_VERSION = 2**31 - 1
#: The choice list our exports use for a yes/no question (ODK has no boolean type); a
#: ``select_one`` of it whose choices are exactly ``true`` and ``false`` reads back as boolean.
EXPORT_BOOLEAN_LIST = "vs_boolean"


def _our_name(name: str) -> str | None:
    """The name an XLSForm name takes here: ``Age`` → ``age``, ``building:material`` →
    ``building_material``, ``hh-size`` → ``hh_size``, ``2nd_visit`` → ``f_2nd_visit``; None when
    nothing usable is left. Non-ASCII names (``户主``) are not ours to guess and stay as written."""
    if _NAME_RE.match(name):
        return name
    lowered = unicodedata.normalize("NFKC", name).strip().lower()
    if not lowered.isascii():
        return None
    ours = re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", lowered)).strip("_")
    if not ours:
        return None
    if not ours[0].isalpha():
        ours = f"f_{ours}"
    return ours


def _our_version(text: str) -> int | None:
    """A version string as the whole number versions are ordered by here: ``3`` → 3,
    ``2026112501`` → 2026112501, ``v3`` → 3, ``2026-11-25`` → 20261125; None when it holds no
    digits, is 0, or exceeds :data:`MAX_VERSION`. ODK orders versions as strings; for the
    date stamps and ``vN`` counters forms use, the digits order the same way."""
    digits = "".join(re.findall(r"[0-9]+", text))
    if not digits or len(digits) > 10:
        return None
    number = int(digits)
    return number if 1 <= number <= MAX_VERSION else None


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
    "time",
    "datetime",
    "audio",
    "video",
    "file",
    "geotrace",
    "geoshape",
}
_SELECT_TYPES = {"select_one", "select_multiple", "rank"}

# Other spellings of our types that XLSForm (pyxform's question type table) accepts.
_TYPE_SPELLINGS = {
    "string": "text",
    "q string": "text",
    "add text prompt": "text",
    "int": "integer",
    "q int": "integer",
    "add integer prompt": "integer",
    "q decimal": "decimal",
    "add decimal prompt": "decimal",
    "q date": "date",
    "add date prompt": "date",
    "gps": "geopoint",
    "location": "geopoint",
    "q location": "geopoint",
    "q geopoint": "geopoint",
    "add location prompt": "geopoint",
    "photo": "image",
    "q picture": "image",
    "q image": "image",
    "add image prompt": "image",
    "add photo prompt": "image",
    "q note": "note",
    "add note prompt": "note",
    "q calculate": "calculate",
    "add calculate prompt": "calculate",
}
_BARCODE = ("text", "typed (or scanned) into a text question", "作为文本题填写")
_ACKNOWLEDGE = ("boolean", "recorded as yes when acknowledged", "确认后记为“是”")
# ODK types recorded as one of ours without losing what the field worker enters; warned.
_MAPPED_TYPES: dict[str, tuple[str, str, str]] = {
    "barcode": _BARCODE,
    "q barcode": _BARCODE,
    "add barcode prompt": _BARCODE,
    "acknowledge": _ACKNOWLEDGE,
    "q acknowledge": _ACKNOWLEDGE,
    "add acknowledge prompt": _ACKNOWLEDGE,
    "trigger": _ACKNOWLEDGE,
    "range": ("number", "a number box with the range as its constraint", "数字题，范围作为约束"),
    "hidden": (
        "calculate",
        "a value nobody types: its calculation, else its default",
        "无人填写的值：取 calculation，否则取 default",
    ),
}
# ODK types we cannot keep yet, with the reason county staff should read.
_REFUSED_TYPES: dict[str, tuple[str, str]] = {
    "select_one_external": ("external choices are not supported", "不支持外部选项"),
    "xml-external": ("external instances are not supported yet", "暂不支持外部数据"),
    "csv-external": ("external instances are not supported yet", "暂不支持外部数据"),
    "begin_loop": ("loops are not supported; use begin_repeat", "不支持 loop，请用 begin_repeat"),
    "end_loop": ("loops are not supported; use begin_repeat", "不支持 loop，请用 begin_repeat"),
    "osm": ("OpenStreetMap questions need a map service", "OpenStreetMap 题需要地图服务"),
}
_EDIT_START = ("the record's first edit time (change log)", "记录的首次编辑时间（修改日志）")
_EDIT_END = ("the record's last edit time (change log)", "记录的最后编辑时间（修改日志）")
_DEVICE = ("the enrolled device id of every sync", "每次同步的已登记设备编号")
_USER = ("the enrolled device's user", "已登记设备的使用人")
_NOT_GIVEN = ("not collected (Android no longer gives it to apps)", "不采集（安卓不再提供）")
_NO_PLACE = ("not collected: add a geopoint question", "不采集：请加 geopoint 定位题")
# Metadata rows: what our records already keep in their place. The row adds no field.
_METADATA_TYPES: dict[str, tuple[str, str]] = {
    "start": _EDIT_START,
    "get start time": _EDIT_START,
    "end": _EDIT_END,
    "end time": _EDIT_END,
    "get end time": _EDIT_END,
    "today": ("the record's edit dates (change log)", "记录的编辑日期（修改日志）"),
    "get today": ("the record's edit dates (change log)", "记录的编辑日期（修改日志）"),
    "deviceid": _DEVICE,
    "imei": _DEVICE,
    "device id": _DEVICE,
    "username": _USER,
    "email": _USER,
    "phonenumber": _NOT_GIVEN,
    "phone number": _NOT_GIVEN,
    "get phone number": _NOT_GIVEN,
    "simserial": _NOT_GIVEN,
    "sim id": _NOT_GIVEN,
    "get sim id": _NOT_GIVEN,
    "subscriberid": _NOT_GIVEN,
    "subscriber id": _NOT_GIVEN,
    "audit": (
        "every value's history (who, when, which device)",
        "每个值的修改历史（谁、何时、哪台设备）",
    ),
    "start-geopoint": _NO_PLACE,
    "background-geopoint": _NO_PLACE,
    "background-audio": ("not recorded", "不录音"),
}
# Names pyxform gives rows that are metadata whatever their type (a calculate named instanceID).
_METADATA_NAMES = {"instanceid": ("the record's own UUID", "记录自身的 UUID")}

_BLOCK_RE = re.compile(
    r"^(begin|end)[ _](group|repeat|lgroup|looped[ _]group|loop)(?:\s+(?:over\s+)?\S+)?$"
)
_SELECT_RE = re.compile(
    r"^(?P<command>"
    + "|".join(sorted((re.escape(k) for k in pyxform_aliases.select), key=len, reverse=True))
    + r")\s+(?P<list_name>\S+)(?:\s+(?P<other>or_other|or specify other|or other))?$"
)
_SELECT_KINDS = {"select one": "select_one", "select all that apply": "select_multiple"}


def _parse_type(raw: str) -> tuple[str, str | None, bool]:
    """Read a ``type`` cell as pyxform reads it: (kind, choice list, or_other).

    ``select one from X`` / ``select1 X`` → (``select_one``, X, False); ``select_multiple X
    or_other`` → (``select_multiple``, X, True); ``begin group`` / ``begin lgroup`` →
    ``begin_group`` / ``begin_repeat``; ``int`` → ``integer``; anything else lower-cased.
    """
    text = re.sub(r"\s+", " ", raw.strip())
    lowered = text.lower()
    block = _BLOCK_RE.match(lowered)
    if block:
        kind = {"group": "group", "loop": "loop"}.get(block.group(2), "repeat")
        return f"{block.group(1)}_{kind}", None, False
    select = _SELECT_RE.match(lowered)
    if select:
        command = select.group("command")
        list_name = text.split(" ")[len(command.split(" "))]
        if command in pyxform_aliases.select_from_file:
            kind = "select_one_from_file" if "one" in command else "select_multiple_from_file"
        else:
            canonical = pyxform_aliases.select.get(command, command)
            kind = _SELECT_KINDS.get(canonical, canonical.replace(" ", "_"))
        return kind, list_name, select.group("other") is not None
    lowered = pyxform_aliases._type_alias_map.get(lowered, lowered)
    return _TYPE_SPELLINGS.get(lowered, lowered), None, False


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
    "required_message": True,
    "guidance_hint": True,
    "calculation": False,
    # The value a new record is prefilled with (for ``hidden`` rows: their value).
    "default": False,
    # Cascading selects: which choices are offered, per the answers so far.
    "choice_filter": False,
    # A calculation recomputed when another answer changes: the tablet's value stands (once()).
    "trigger": False,
    "appearance": False,
    "unit": False,
    "merge": False,
    "sensitive": False,
    "min_rows": False,
    "max_rows": False,
    "parameters": False,
    "repeat_count": False,
    "read_only": False,
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
    "vs_form_title": "form_title",
}

# Columns whose meaning we cannot keep yet: a form using them is refused at the header cell.
_REFUSED_COLUMNS: dict[str, tuple[str, str]] = {}
# Columns ODK knows that only change how a question is shown (or its help texts): ignored with a
# located warning, the form imports.
_IGNORED_COLUMNS: dict[str, tuple[str, str]] = {
    "media": ("media in questions are not shown", "不显示题目中的多媒体"),
    "image": ("media in questions are not shown", "不显示题目中的多媒体"),
    "big_image": ("media in questions are not shown", "不显示题目中的多媒体"),
    "audio": ("media in questions are not shown", "不显示题目中的多媒体"),
    "video": ("media in questions are not shown", "不显示题目中的多媒体"),
    "autoplay": ("media are not played", "不播放多媒体"),
    "body": ("presentation only", "仅影响显示"),
    "style": ("presentation only", "仅影响显示"),
    "instance_name": ("record names are built by the tablet", "记录名称由平板生成"),
    "public_key": ("records are sealed by the sync protocol", "记录由同步协议加密"),
    "submission_url": ("records go to this county server", "记录提交到本县服务器"),
    "allow_choice_duplicates": ("presentation only", "仅影响显示"),
    "clean_text_values": ("presentation only", "仅影响显示"),
    "namespaces": ("XForm namespaces are not used", "不使用 XForm 命名空间"),
    "style_": ("presentation only", "仅影响显示"),
}
# Sheets from ODK that we refuse; any other extra sheet (notes for staff, ...) is ignored.
_REFUSED_SHEETS: dict[str, tuple[str, str]] = {
    "external_choices": (
        "choices from another list at fill time (select_one_external)",
        "填写时从外部列表取选项（select_one_external）",
    ),
    "entities": (
        "ODK entities would create and update shared data the field worker does not see here",
        "ODK 实体会创建和修改共享数据，本系统尚不能保留",
    ),
    "osm": ("OpenStreetMap tags need a map service", "OpenStreetMap 标签需要地图服务"),
}


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


# Language names ODK and Kobo users write in headers (``label::English``), by lower-case name.
_LANGUAGE_NAMES = {
    "english": "en",
    "chinese": "zh",
    "中文": "zh",
    "汉语": "zh",
    "汉文": "zh",
    "简体中文": "zh",
    "普通话": "zh",
    "繁體中文": "zh-hant",
    "繁体中文": "zh-hant",
    "uyghur": "ug",
    "uighur": "ug",
    "维吾尔文": "ug",
    "维吾尔语": "ug",
    "ئۇيغۇرچە": "ug",
    "tibetan": "bo",
    "藏文": "bo",
    "藏语": "bo",
    "yi": "ii",
    "彝文": "ii",
    "mongolian": "mn",
    "蒙古文": "mn",
    "kazakh": "kk",
    "哈萨克文": "kk",
    "korean": "ko",
    "朝鲜文": "ko",
    "zhuang": "za",
    "壮文": "za",
    "french": "fr",
    "spanish": "es",
    "portuguese": "pt",
    "arabic": "ar",
    "russian": "ru",
    "swahili": "sw",
    "hindi": "hi",
}
_SIMPLIFIED_CHINESE = {"zh", "zh-cn", "zh-hans", "zh-hans-cn", "zh-sg", "cmn", "zho", "chi"}
_TRADITIONAL_CHINESE = {"zh-tw", "zh-hk", "zh-mo", "zh-hant", "zh-hant-tw", "zh-hant-hk"}
# Columns that take a language; ``label:English`` (one colon) is an old spelling pyxform reads.
_TRANSLATABLE_KEYS = {
    "label",
    "hint",
    "guidance_hint",
    "constraint_message",
    "required_message",
    "form_title",
    "message",
    "image",
    "audio",
    "video",
    "big_image",
}


def _language_tag(text: str) -> str:
    """The language tag a header suffix names: ``English (en)`` → ``en``, ``zh_CN`` → ``zh``,
    ``简体中文 (zh-Hans)`` → ``zh``, ``中文`` → ``zh``, ``Uyghur`` → ``ug``; other text lower-cased
    (and then checked against the tag pattern by the caller)."""
    text = text.strip()
    bracket = re.search(r"\(([^()]+)\)\s*$", text)
    if bracket:
        code = bracket.group(1)
    else:
        named = _LANGUAGE_NAMES.get(text.lower())
        if named is not None:
            return named
        code = text
    code = code.strip().lower().replace("_", "-")
    if code in _SIMPLIFIED_CHINESE:
        return "zh"
    if code in _TRADITIONAL_CHINESE:
        return "zh-hant"
    return _LANGUAGE_NAMES.get(code, code)


def _normalise_header(raw: str) -> tuple[str, str | None]:
    """Split a header into (column key, language or None).

    ``label::zh`` → (``label``, ``zh``); ODK's ``label::Chinese (zh)`` → (``label``, ``zh``);
    ``label:English`` → (``label``, ``en``); ``constraint message`` → (``constraint_message``,
    None); ``media::image`` → (``media``, …) (ignored by the caller).
    """
    text = re.sub(r"\s+", " ", raw.strip())
    lang: str | None = None
    if "::" in text:
        text, _, lang_part = text.partition("::")
        lang = _language_tag(lang_part)
    elif ":" in text:
        head, _, tail = text.partition(":")
        head_key = _HEADER_ALIASES.get(head.strip().lower(), head.strip().lower())
        if head_key.replace(" ", "_").replace("-", "_") in _TRANSLATABLE_KEYS:
            text, lang = head, _language_tag(tail)
    key = text.strip().lower()
    key = _HEADER_ALIASES.get(key, key).replace(" ", "_").replace("-", "_")
    if lang == "default":
        lang = None
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
        self.warnings: list[XLSFormIssue] = []

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
        warning: bool = False,
    ) -> None:
        sheet_name = sheet.title if isinstance(sheet, _Sheet) else sheet
        (self.warnings if warning else self.issues).append(
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
        warning: bool = False,
    ) -> None:
        """Add an issue (or warning) at ``row``'s cell in column ``key`` (language ``lang``)."""
        self.add(
            code,
            message,
            message_zh,
            sheet=row.sheet,
            row=row.number,
            column=row.sheet.column(key, lang),
            position=position,
            warning=warning,
        )


def _read_sheet(
    raw: RawSheet,
    known: Mapping[str, bool],
    issues: _Collector,
    plain_language: str = "zh",
) -> _Sheet:
    """Read one sheet: the first row is the header; blank rows are skipped.

    A column we do not know, or know as presentation only, is ignored with a located warning
    when it holds data (Kobo templates carry many empty columns); a column whose meaning we
    cannot keep is refused. Columns whose header starts with ``$`` are Kobo bookkeeping and
    ignored silently. A plain translatable column (``label``) is in ``plain_language``.
    """
    sheet = _Sheet(title=raw.title, columns={}, rows=[])
    filled = {index for _, cells in raw.rows for index in cells}
    headed = {index for index, _ in raw.header}
    for index in sorted(filled - headed):
        issues.add(
            "missing_header",
            "this column holds data but has no header; it is ignored",
            "该列有数据但没有列名，已忽略",
            sheet=sheet,
            row=1,
            column=_Column(index, "", None, ""),
            warning=True,
        )
    for index, raw_header in raw.header:
        if raw_header.startswith("$"):
            continue
        key, lang = _normalise_header(raw_header)
        col = _Column(index, key, lang, raw_header)
        has_data = index in filled
        refused = _REFUSED_COLUMNS.get(key)
        if refused is not None:
            if has_data:
                issues.add("unsupported_column", *refused, sheet=sheet, row=1, column=col)
            continue
        ignored = _IGNORED_COLUMNS.get(key)
        if key not in known or ignored is not None:
            if has_data:
                reason, reason_zh = ignored or (
                    "not an XLSForm column we use",
                    "不是本系统使用的 XLSForm 列",
                )
                issues.add(
                    "ignored_column",
                    f"column {raw_header!r} is ignored: {reason}",
                    f"已忽略列 {raw_header!r}：{reason_zh}",
                    sheet=sheet,
                    row=1,
                    column=col,
                    warning=True,
                )
            if key not in known:
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
            if has_data:
                issues.add(
                    "bad_language",
                    f"{lang!r} is not a language we can name (write e.g. label::English (en), "
                    "label::中文 (zh)); the column is ignored",
                    f"无法识别语言 {lang!r}（例如 label::English (en)、label::中文 (zh)），已忽略该列",
                    sheet=sheet,
                    row=1,
                    column=col,
                    warning=True,
                )
            continue
        effective = (lang or plain_language) if known[key] else None
        slot = (key, None if effective == "zh" else effective)
        if slot in sheet.columns:
            other = sheet.columns[slot]
            plain = known[key] and (lang is None) != (other.lang is None)
            issues.add(
                "duplicate_column",
                f"column {raw_header!r} repeats column {other.letter} ({other.header!r})"
                + (f"; plain {key} means {key}::{plain_language}" if plain else ""),
                f"列 {raw_header!r} 与 {other.letter} 列（{other.header!r}）重复"
                + (f"；不带语言的 {key} 即 {key}::{plain_language}" if plain else ""),
                sheet=sheet,
                row=1,
                column=col,
            )
            continue
        sheet.columns[slot] = col

    for number, texts in raw.rows:
        cells = {
            slot: texts[col.index] for slot, col in sheet.columns.items() if col.index in texts
        }
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
    "required_message": "required_message",
    "guidance_hint": "guidance_hint",
    "calculate": "calculation",
    "unit": "unit",
    "merge": "merge",
    "sensitive": "sensitive",
    "min_rows": "min_rows",
    "max_rows": "max_rows",
    "choice_filter": "choice_filter",
    "repeat_count": "repeat_count",
    "default": "default",
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


#: Field properties that are texts with a language (a problem in one is located in its column).
_TEXT_PROPERTIES = ("label", "hint", "constraint_message", "required_message", "guidance_hint")


def _literal(text: str) -> str:
    """A cell's text as an expression that evaluates to it: ``5`` → ``5``, ``A1`` → ``'A1'``,
    empty → ``''``."""
    if _NUMBER_RE.match(text):
        return text
    return f'"{text}"' if "'" in text else f"'{text}'"


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
            if len(rest) > 1 and key in _TEXT_PROPERTIES:
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
    """Reads one workbook's sheets into a contracts §1 dict, collecting located issues and
    warnings."""

    def __init__(
        self,
        sheets: Sequence[RawSheet],
        file_stem: str | None = None,
        attachments: Mapping[str, bytes] | None = None,
    ) -> None:
        self.raw = {s.title: s for s in sheets}
        # Files uploaded with the form, by their name without directory.
        self.attachments = {
            re.split(r"[\\/]", name)[-1]: data for name, data in (attachments or {}).items()
        }
        self.file_lists: dict[str, str] = {}  # attached file name -> its choice list
        self.tables: dict[str, list[dict[str, str]]] = {}  # pulldata('name') -> name.csv rows
        self.lone = any(s.lone for s in sheets)
        self.file_stem = file_stem
        self.issues = _Collector()
        self.origins = _Origins()
        self.choice_lists: dict[str, list[dict[str, Any]]] = {}
        self.field_paths: set[str] = set()
        # Lists named in the choices sheet, even when all their rows are broken (already reported).
        self.named_lists: set[str] = set()
        self.plain_language = "zh"
        # ODK names we cannot use as they are (capitals, '-', '.', ':'), and what they become.
        self.renamed: dict[str, str] = {}
        self.renamed_lists: dict[str, str] = {}
        self.zh_warned: set[tuple[str, str]] = set()
        self.boolean_lists: set[str] = set()
        # Extra columns of the choices sheet (ODK's filter columns: ``county`` of a village
        # list), kept on each choice for choice_filter; those no filter reads are dropped after
        # the survey is read, with a warning.
        self.filter_columns: dict[str, _Column] = {}
        self.filters_read: set[str] = set()

    # -- sheets ---------------------------------------------------------------------------

    def _find_sheet(self, name: str) -> RawSheet | None:
        if self.lone and name == "survey":
            return next(iter(self.raw.values()))
        for title, sheet in self.raw.items():
            if title.strip().lower() == name:
                return sheet
        return None

    def read(self) -> dict[str, Any]:
        for title in self.raw:
            if title.strip().lower() in _REFUSED_SHEETS and not self.lone:
                reason = _REFUSED_SHEETS[title.strip().lower()]
                self.issues.add(
                    "unsupported_sheet",
                    f"sheet {title!r} is not supported yet: {reason[0]}",
                    f"暂不支持工作表 {title!r}：{reason[1]}",
                    sheet=title,
                )
        self._plan_names()
        settings = self._read_settings()
        self._read_choices()
        fields = self._read_survey()
        self._keep_read_filters()
        checks = self._read_checks()
        upgrade = self._read_upgrade(settings.get("version"))
        for list_name in self.boolean_lists:
            self.choice_lists.pop(list_name, None)
        doc: dict[str, Any] = {}
        doc.update(settings)
        doc["fields"] = fields
        doc["choice_lists"] = self.choice_lists
        doc["checks"] = checks
        if self.tables:
            doc["tables"] = self.tables
        if upgrade is not None:
            doc["upgrade"] = upgrade
        return doc

    def _plan_names(self) -> None:
        """Give every name XLSForm allows and we do not (``Age``, ``building:material``,
        ``hh-size``, ``q1.2``) the name it takes here, before any expression is read."""
        survey = self._find_sheet("survey")
        choices = self._find_sheet("choices")
        names: list[str] = []
        lists: list[str] = []
        for raw, column, target in ((survey, "name", names), (choices, "list_name", lists)):
            if raw is None:
                continue
            index = next((i for i, h in raw.header if _normalise_header(h)[0] == column), None)
            if index is None:
                continue
            target.extend(cells[index] for _, cells in raw.rows if index in cells)
        if survey is not None:
            type_index = next(
                (i for i, h in survey.header if _normalise_header(h)[0] == "type"), None
            )
            for _, cells in survey.rows:
                if type_index in cells:
                    _, list_name, _ = _parse_type(cells[type_index])
                    if list_name:
                        lists.append(list_name)
        for found, plan in ((names, self.renamed), (lists, self.renamed_lists)):
            taken = {n for n in found if _NAME_RE.match(n)}
            for name in found:
                if _NAME_RE.match(name) or name in plan:
                    continue
                ours = _our_name(name)
                if ours is not None and ours not in taken:
                    plan[name] = ours
                    taken.add(ours)

    def _required_sheet(self, name: str, known: Mapping[str, bool]) -> _Sheet | None:
        raw = self._find_sheet(name)
        if raw is None:
            self.issues.add(
                "missing_sheet",
                f"the workbook has no {name!r} sheet",
                f"表格缺少工作表 {name!r}",
                sheet=None,
            )
            return None
        return _read_sheet(raw, known, self.issues, self.plain_language)

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
        """Read a translatable column. Without a Chinese text, the text in the form's default
        language (else the first one) stands in for it and the admin is warned once per column."""
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
            stand_in = texts.get(self.plain_language) or next(iter(texts.values()))
            language = next(lang for lang, text in texts.items() if text == stand_in)
            place = (row.sheet.title, key)
            if place not in self.zh_warned:
                self.zh_warned.add(place)
                column = next(
                    (
                        c
                        for (k, lang), c in row.sheet.columns.items()
                        if k == key and lang == language
                    ),
                    None,
                )
                self.issues.add(
                    "missing_zh",
                    f"{key} has no Chinese text: the {language} text is shown in its place "
                    f"until a {key}::zh column is added",
                    f"{key} 没有中文：在添加 {key}::zh 列之前，用 {language} 文字代替中文显示",
                    sheet=row.sheet,
                    row=1,
                    column=column,
                    warning=True,
                )
            texts = {"zh": stand_in, **texts}
        ordered = {"zh": texts["zh"]}
        ordered.update((lang, text) for lang, text in texts.items() if lang != "zh")
        return ordered

    def _expression(self, row: _Row, key: str) -> str | None:
        """Read an expression cell, with ``${Name}`` references renamed as the names are.
        Its syntax is checked by the definition loader, whose issue (with the character
        position) is mapped back to this cell."""
        text = row.get(key)
        if not text:
            return None
        if self.renamed:
            text = _REFERENCE_RE.sub(
                lambda m: "${" + self.renamed.get(m.group(1), m.group(1)) + "}", text
            )
        for table in _PULLDATA_RE.findall(text):
            self._data_table(row, key, table)
        return self._odk_functions(text)

    def _data_table(self, row: _Row, key: str, table: str) -> None:
        """Read ``table.csv`` for ``pulldata('table', …)`` from the attachments, once; a missing
        or unreadable file is refused at the cell that reads it."""
        if table in self.tables:
            return
        filename = table if table.lower().endswith(".csv") else f"{table}.csv"
        data = self.attachments.get(filename)
        if data is None:
            self.issues.at(
                row,
                key,
                "missing_attachment",
                f"pulldata reads {filename!r}: upload that file with the form",
                f"pulldata 读取 {filename!r}：请与表单一起上传该文件",
            )
            return
        try:
            self.tables[table] = read_data_table(filename, data)
        except AttachmentError as exc:
            self.issues.at(row, key, "bad_attachment", exc.message, exc.message_zh)

    def _odk_functions(self, text: str) -> str:
        """ODK's XPath spellings in our language: ``position(..)`` → ``position()``; the
        one-argument ``sum(${x})`` / ``count(${x})`` over a question ``x`` of a repeat ``r``
        (an XPath node-set) → ``sum(${r}, ${x})`` / ``count(${r})``."""
        text = _POSITION_RE.sub("position()", text)
        containers = {path.rsplit("/", 1)[0] for path in self.field_paths if "/" in path}
        repeat_of = {
            path.rsplit("/", 1)[1]: path.rsplit("/", 2)[-2]
            for path in self.field_paths
            if "/" in path and path not in containers  # count(${inner_repeat}) stays
        }

        def over_rows(match: re.Match[str]) -> str:
            function, name = match.group(1), match.group(2)
            repeat = repeat_of.get(name)
            if repeat is None:
                return match.group(0)
            if function == "sum":
                return f"sum(${{{repeat}}}, ${{{name}}})"
            return f"count(${{{repeat}}})"

        return _NODESET_RE.sub(over_rows, text)

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
        raw = self._find_sheet("settings") if not self.lone else None
        out: dict[str, Any] = {"subject": "household"}
        row: _Row | None = None
        if raw is not None:
            language_index = next(
                (i for i, h in raw.header if _normalise_header(h)[0] == "default_language"), None
            )
            if language_index is not None and raw.rows and language_index in raw.rows[0][1]:
                tag = _language_tag(raw.rows[0][1][language_index])
                if LANGUAGE_TAG.match(tag):
                    self.plain_language = tag
            sheet = _read_sheet(raw, _SETTINGS_COLUMNS, self.issues, self.plain_language)
            self.origins.settings = sheet
            if sheet.rows:
                row = sheet.rows[0]
                self.origins.settings_row = row.number
                for extra in sheet.rows[1:]:
                    self.issues.add(
                        "extra_row",
                        "the settings sheet takes one row below the header; this one is ignored",
                        "settings 工作表表头下只用一行，此行已忽略",
                        sheet=sheet,
                        row=extra.number,
                        warning=True,
                    )
            language = row.get("default_language") if row is not None else ""
            if language and not LANGUAGE_TAG.match(_language_tag(language)):
                self.issues.at(
                    row,
                    "default_language",
                    "bad_default_language",
                    f"default_language {language!r} names no language we know; plain columns "
                    "are read as Chinese",
                    f"default_language {language!r} 不是可识别的语言；不带语言的列按中文读取",
                    warning=True,
                )
        stem = self.file_stem or "form"
        form_id = row.get("form_id") if row is not None else ""
        if not form_id:
            form_id = stem
            self.issues.add(
                "id_from_file_name",
                f"no form_id in a settings sheet: the form id is taken from the file name, "
                f"{stem!r} (as pyxform does)",
                f"settings 中没有 form_id：按文件名 {stem!r} 作为表单编号（与 pyxform 相同）",
                sheet=self.origins.settings,
                row=row.number if row is not None else None,
                warning=True,
            )
        ours = _our_name(form_id)
        if ours is None:
            message = f"form_id {form_id!r} has no Latin letter or digit to build an id from" + (
                "" if row is not None else "; add a settings sheet with a form_id"
            )
            message_zh = f"form_id {form_id!r} 中没有可用作编号的拉丁字母或数字" + (
                "" if row is not None else "；请添加 settings 工作表并填写 form_id"
            )
            if row is not None and row.get("form_id"):
                self.issues.at(row, "form_id", "bad_name", message, message_zh)
            else:
                self.issues.add("bad_name", message, message_zh, sheet=None)
        else:
            if ours != form_id:
                self._renamed_warning(row, "form_id", form_id, ours)
                if row is not None and row.get("form_id"):
                    out["odk_form_id"] = form_id  # shown to the admin as written
            out["id"] = ours
        version = row.get("version") if row is not None else ""
        number = _our_version(version)
        if not version:
            out["version"] = 1
            if row is not None:
                self.issues.at(
                    row,
                    "version",
                    "version_defaulted",
                    "no version: the form is version 1",
                    "没有 version：表单版本为 1",
                    warning=True,
                )
        elif number is None:
            # No usable digits: kept as written; the county server gives it the next number
            # of its internal sequence when it is uploaded (ordered by the string, as ODK).
            out["version"] = 1
            out["odk_version"] = version
            self.issues.at(
                row,  # type: ignore[arg-type]
                "version",
                "version_mapped",
                f"version {version!r} is kept as written; the county server numbers it after "
                "the versions already uploaded, ordered by the string as ODK orders them",
                f"version {version!r} 按原样保存；县服务器按字符串顺序（与 ODK 相同）在已上传版本之后编号",
                warning=True,
            )
        else:
            out["version"] = number
            if str(number) != version:
                out["odk_version"] = version
                self.issues.at(
                    row,  # type: ignore[arg-type]
                    "version",
                    "version_mapped",
                    f"version {version!r} is kept as the number {number} (its digits)",
                    f"version {version!r} 按其中的数字记为 {number}",
                    warning=True,
                )
        title = (
            self._texts(row, "form_title", required=False, what="form_title")
            if row is not None
            else None
        )
        out["title"] = title or {"zh": form_id}
        if row is not None and row.get("subject"):
            out["subject"] = row.get("subject")
        return out

    def _renamed_warning(self, row: _Row | None, key: str, old: str, new: str) -> None:
        if row is None:
            return
        self.issues.at(
            row,
            key,
            "renamed",
            f"{key} {old!r} is kept as {new!r} (names here are lower-case letters, digits and _); "
            "expressions that name it are renamed too",
            f"{key} {old!r} 记为 {new!r}（名称只用小写字母、数字和下划线），引用它的表达式同步改名",
            warning=True,
        )

    # -- choices --------------------------------------------------------------------------

    def _read_choices(self) -> None:
        raw = self._find_sheet("choices")
        if raw is None or self.lone:
            return
        filter_keys = {
            key: False
            for key, lang in (_normalise_header(h) for _, h in raw.header if not h.startswith("$"))
            if lang is None
            and key not in _CHOICES_COLUMNS
            and key not in _IGNORED_COLUMNS
            and key not in _TRANSLATABLE_KEYS
            and _NAME_RE.match(key)
        }
        sheet = _read_sheet(
            raw, {**_CHOICES_COLUMNS, **filter_keys}, self.issues, self.plain_language
        )
        self.filter_columns = {
            key: col for (key, _), col in sheet.columns.items() if key in filter_keys
        }
        self.origins.choices = sheet
        if not self._has_columns(sheet, ("list_name", "name")):
            # Name the lists anyway, so select questions do not also report them missing.
            self.named_lists.update(r.get("list_name") for r in sheet.rows if r.get("list_name"))
            return
        seen: dict[tuple[str, str], int] = {}
        for row in sheet.rows:
            list_name = row.get("list_name")
            value = row.get("name")
            if list_name in self.renamed_lists:
                list_name = self.renamed_lists[list_name]
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
            choice: dict[str, Any] = {"value": value, "label": label or {"zh": value}}
            filters = {key: row.get(key) for key in self.filter_columns if row.get(key)}
            if filters:
                choice["filters"] = filters
            self.choice_lists.setdefault(list_name, []).append(choice)

    def _file_choices(self, row: _Row, filename: str) -> str | None:
        """The choice list read from an attached file (``villages.csv`` → ``villages_csv``),
        read once however many questions use it; ``None`` when it is missing or unreadable
        (refused at the type cell: the choices cannot be guessed)."""
        if filename in self.file_lists:
            return self.file_lists[filename]
        data = self.attachments.get(filename)
        if data is None:
            self.issues.at(
                row,
                "type",
                "missing_attachment",
                f"the choices of this question come from {filename!r}: upload that file with "
                "the form",
                f"此题的选项来自 {filename!r}：请与表单一起上传该文件",
            )
            return None
        try:
            choices = read_choice_file(filename, data, _language_tag)
        except AttachmentError as exc:
            self.issues.at(row, "type", "bad_attachment", exc.message, exc.message_zh)
            return None
        list_name = _our_name(filename) or "file_choices"
        while list_name in self.named_lists or list_name in self.choice_lists:
            list_name += "_file"
        self.file_lists[filename] = list_name
        self.named_lists.add(list_name)
        self.choice_lists[list_name] = choices
        return list_name

    def _keep_read_filters(self) -> None:
        """Keep on the choices only the filter columns some choice_filter reads; any other
        extra column of the choices sheet is ignored, with a warning at its header."""
        for key, col in self.filter_columns.items():
            if key in self.filters_read or self.origins.choices is None:
                continue
            if any(row.get(key) for row in self.origins.choices.rows):
                self.issues.add(
                    "ignored_column",
                    f"column {col.header!r} is ignored: no choice_filter reads it",
                    f"已忽略列 {col.header!r}：没有 choice_filter 使用该列",
                    sheet=self.origins.choices,
                    row=1,
                    column=col,
                    warning=True,
                )
        for entries in self.choice_lists.values():
            for choice in entries:
                kept = {
                    k: v for k, v in choice.pop("filters", {}).items() if k in self.filters_read
                }
                if kept:
                    choice["filters"] = kept

    def _choice_filter(self, row: _Row) -> str | None:
        """A ``choice_filter`` cell in our expression language: XLSForm names the columns of
        the choice being tested by bare words (``county = ${county}``, ``name != 'x'``); each
        becomes ``choice('county')``. ``${…}``, strings, function names and ``and or div mod``
        stay as written."""
        text = self._expression(row, "choice_filter")
        if text is None:
            return None

        def bare(match: re.Match[str]) -> str:
            word = match.group("word")
            if word is None or match.group("call") or word in ("and", "or", "div", "mod"):
                return match.group(0)
            key = word.lower()
            if key != "name":
                self.filters_read.add(key)
            return f"choice('{key}')"

        return _FILTER_TOKEN_RE.sub(bare, text)

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
        kind, list_name, or_other = _parse_type(raw_type)
        level = stack[-1]

        if kind in ("end_repeat", "end_group"):
            self._end_block(row, stack, kind[4:])
            return
        metadata = _METADATA_TYPES.get(kind) or _METADATA_NAMES.get(row.get("name").lower())
        if metadata is not None:
            self.issues.at(
                row,
                "type",
                "metadata_mapped",
                f"metadata row {raw_type!r} adds no question: our records keep {metadata[0]}",
                f"元数据行 {raw_type!r} 不生成题目：记录已保存{metadata[1]}",
                warning=True,
            )
            return
        if kind in _REFUSED_TYPES:
            reason, reason_zh = _REFUSED_TYPES[kind]
            self.issues.at(
                row,
                "type",
                "unsupported_type",
                f"type {raw_type!r} cannot be kept: {reason}",
                f"无法保留题型 {raw_type!r}：{reason_zh}",
            )
            return
        mapped = _MAPPED_TYPES.get(kind)
        hidden = kind == "hidden"
        range_constraint: str | None = None
        if mapped is not None:
            kind, reason, reason_zh = mapped
            if kind == "number":
                kind, range_constraint = self._range(row)
                if kind == "":
                    return
            self.issues.at(
                row,
                "type",
                "type_mapped",
                f"type {raw_type!r} is read as {kind}: {reason}",
                f"题型 {raw_type!r} 按 {kind} 读取：{reason_zh}",
                warning=True,
            )
        if kind in ("select_one_from_file", "select_multiple_from_file") and list_name:
            file_list = self._file_choices(row, list_name)
            if file_list is None:
                return
            kind, list_name = kind.removesuffix("_from_file"), file_list
        if kind in _SELECT_TYPES:
            if list_name is None:
                self.issues.at(
                    row,
                    "type",
                    "bad_select",
                    f"write {kind} followed by one choice list name, not {raw_type!r}",
                    f"{kind} 后面要跟一个选项列表名，不能是 {raw_type!r}",
                )
                return
            list_name = self.renamed_lists.get(list_name, list_name)
            if list_name not in self.named_lists:
                self.issues.at(
                    row,
                    "type",
                    "missing_choice_list",
                    f"choice list {list_name!r} is not in the choices sheet",
                    f"choices 工作表中没有选项列表 {list_name!r}",
                )
                return
            if list_name == EXPORT_BOOLEAN_LIST and kind == "select_one" and not or_other:
                values = {c["value"] for c in self.choice_lists.get(list_name, [])}
                if values == {"true", "false"}:
                    kind, list_name = BOOLEAN_TYPE, None
                    self.boolean_lists.add(EXPORT_BOOLEAN_LIST)
        elif kind not in _PLAIN_TYPES and kind not in ("begin_repeat", "begin_group"):
            self.issues.at(
                row,
                "type",
                "unknown_type",
                f"unknown type {raw_type!r} (see docs/xlsform.md for the supported types)",
                f"未知题型 {raw_type!r}（支持的题型见 docs/xlsform.md）",
            )
            return

        appearance = row.get("appearance")
        if appearance:
            self.issues.at(
                row,
                "appearance",
                "ignored_appearance",
                f"appearance {appearance!r} is not drawn: the tablet shows the question its "
                "own way (the value recorded is the same)",
                f"外观 {appearance!r} 不生效：平板按自己的方式显示（记录的值不变）",
                warning=True,
            )
        if row.get("parameters") and range_constraint is None:
            self.issues.at(
                row,
                "parameters",
                "ignored_parameters",
                f"parameters {row.get('parameters')!r} only change how the question is drawn",
                f"参数 {row.get('parameters')!r} 只影响显示，已忽略",
                warning=True,
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
        if range_constraint is not None:
            constraint = (
                f"({constraint}) and {range_constraint}" if constraint else range_constraint
            )
        if constraint is not None:
            fdef["constraint"] = constraint
        for key in ("constraint_message", "required_message", "guidance_hint"):
            message = self._texts(row, key, required=False, what=key)
            if message is not None:
                fdef[key] = message
        calculation = self._expression(row, "calculation")
        if calculation is None and hidden:
            calculation = _literal(row.get("default"))
        trigger = row.get("trigger")
        if trigger and calculation is None:
            self.issues.at(
                row,
                "trigger",
                "unsupported_column",
                "a trigger without a calculation would set the value to nothing; add a calculation",
                "trigger 行没有 calculation，会把值清空；请填写 calculation",
            )
        elif trigger and calculation is not None:
            calculation = f"once({calculation})"
            self.issues.at(
                row,
                "trigger",
                "trigger_mapped",
                f"trigger {trigger!r}: the value the tablet computed when {trigger} changed is kept "
                "(calculated as once(…) where the record has none)",
                f"trigger {trigger!r}：保留平板在 {trigger} 变化时计算的值（记录中没有时按 once(…) 计算）",
                warning=True,
            )
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
            fdef["choices"] = list_name
            if or_other and list_name is not None:
                fdef["choices"] = self._or_other_list(list_name)
        choice_filter = self._choice_filter(row)
        if choice_filter is not None and kind in _SELECT_TYPES:
            fdef["choice_filter"] = choice_filter
        elif choice_filter is not None:
            self.issues.at(
                row,
                "choice_filter",
                "misplaced_value",
                "choice_filter only applies to select questions",
                "choice_filter 只能用于选择题",
            )
        if not hidden:
            self._default(row, ftype, fdef)
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
        self._repeat_count(row, ftype, fdef)
        self._read_only(row, ftype, fdef)

        if name is None:
            return
        path = (*level.path, name)
        self.origins.field_rows[path] = row.number
        if relevant is not None:
            self.origins.relevance[path] = relevant
        self.origins.level_rows.setdefault(level.path, []).append(row.number)
        self.field_paths.add("/".join(path))
        level.fields.append(fdef)
        if or_other and kind in _SELECT_TYPES:
            other = f"{name}_other"
            if other in level.names:
                self.issues.at(
                    row,
                    "type",
                    "duplicate_name",
                    f"or_other adds the question {other!r}, but that name is already used",
                    f"or_other 会添加题目 {other!r}，但该名称已被使用",
                )
            else:
                level.names[other] = row.number
                other_relevant = f"selected(${{{name}}}, 'other')"
                level.fields.append(
                    {
                        "name": other,
                        "type": "text",
                        "label": {"zh": "其他（请注明）", "en": "Specify other"},
                        "relevant": other_relevant,
                        "required": True,
                    }
                )
                self.origins.field_rows[(*level.path, other)] = row.number
                self.origins.level_rows[level.path].append(row.number)
                self.field_paths.add("/".join((*level.path, other)))
        if ftype == "repeat":
            children: list[dict[str, Any]] = []
            fdef["fields"] = children
            # min_rows/max_rows read above stay after "fields" for readability of the JSON.
            for key in ("min_rows", "max_rows"):
                if key in fdef:
                    fdef[key] = fdef.pop(key)
            stack.append(_Level("repeat", name, row.number, children, {}, path, None))

    def _range(self, row: _Row) -> tuple[str, str | None]:
        """A ``range`` question as a number with its range as a constraint: (type, constraint);
        ``("", None)`` when its parameters cannot be read (reported)."""
        values = {"start": "0", "end": "10", "step": "1"}
        for part in re.split(r"[\s;,]+", row.get("parameters").strip()):
            key, _, value = part.partition("=")
            if key.strip().lower() in values and value.strip():
                values[key.strip().lower()] = value.strip()
        if not all(_NUMBER_RE.match(v) for v in values.values()):
            self.issues.at(
                row,
                "parameters",
                "bad_number",
                f"range parameters need numbers for start, end and step, not "
                f"{row.get('parameters')!r}",
                f"range 的 start、end、step 必须是数字，不能是 {row.get('parameters')!r}",
            )
            return "", None
        integral = all("." not in v for v in values.values())
        low, high = sorted((values["start"], values["end"]), key=float)
        return ("integer" if integral else "decimal"), f". >= {low} and . <= {high}"

    def _repeat_count(self, row: _Row, ftype: str, fdef: dict[str, Any]) -> None:
        """``repeat_count``: a whole number n is exactly n rows (min_rows = max_rows = n); a
        count computed from other answers cannot be kept yet and is refused at its cell."""
        text = row.get("repeat_count")
        if not text or ftype != "repeat":
            return
        if not _DIGITS_RE.match(text):
            # Computed from other answers (``${household_size}``): validated per record.
            fdef["repeat_count"] = self._expression(row, "repeat_count")
            return
        for key in ("min_rows", "max_rows"):
            fdef.setdefault(key, int(text))
        self.issues.at(
            row,
            "repeat_count",
            "type_mapped",
            f"repeat_count {text} is kept as exactly {text} rows (min_rows = max_rows)",
            f"repeat_count {text} 记为正好 {text} 行（min_rows = max_rows）",
            warning=True,
        )

    def _default(self, row: _Row, ftype: str, fdef: dict[str, Any]) -> None:
        """``default``: the value a new record starts with. A static default is kept as a
        literal (``5``, ``'B-7'``); one with ``${…}`` or a function call is an expression the
        tablet evaluates when the record is made (ODK's dynamic defaults)."""
        text = row.get("default")
        if not text:
            return
        if ftype in ("note", "calculate", "repeat"):
            self.issues.at(
                row,
                "default",
                "ignored_column",
                f"a default on a {ftype} row means nothing (nobody types its value); ignored",
                f"{ftype} 行的 default 没有意义（无人填写其值），已忽略",
                warning=True,
            )
            return
        dynamic = "${" in text or re.search(r"[A-Za-z][A-Za-z0-9:\-]*\s*\(", text)
        if dynamic:
            fdef["default"] = self._expression(row, "default")
        elif ftype == "date" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            fdef["default"] = f"date('{text}')"
        else:
            fdef["default"] = _literal(text)

    def _read_only(self, row: _Row, ftype: str, fdef: dict[str, Any]) -> None:
        """``read_only``: fine on a note, on a calculation and on a question whose value is
        calculated (nobody types it). A read-only question with a default keeps the default
        as its value (nobody can change it: it is calculated from the default); one with
        neither stays empty, as ODK Collect shows it: kept as a calculation of the empty
        text (shown, never typed), with a warning."""
        text = row.get("read_only")
        if not text or text.lower() in _FALSE_WORDS:
            return
        if ftype in ("note", "calculate", "repeat") or fdef.get("calculate"):
            return
        if fdef.get("default"):
            fdef["calculate"] = f"once({fdef.pop('default')})"
            return
        fdef["calculate"] = "''"
        self.issues.at(
            row,
            "read_only",
            "read_only_empty",
            "a read-only question with neither a calculation nor a default always stays empty "
            "(as in ODK Collect); it is kept as a question shown but never typed",
            "只读题既无计算公式也无默认值，将始终为空（与 ODK Collect 相同）：保留为只显示、不可填写的题目",
            warning=True,
        )

    def _or_other_list(self, list_name: str) -> str:
        """XLSForm's ``or_other``: the list gains an "other" choice (a copy of the list, so other
        questions keep theirs); the text typed for it is a question of its own (added by the
        caller's row handling)."""
        name = f"{list_name}_or_other"
        if name not in self.choice_lists:
            items = [dict(c) for c in self.choice_lists.get(list_name, [])]
            if all(c["value"] != "other" for c in items):
                items.append({"value": "other", "label": {"zh": "其他", "en": "Other"}})
            self.choice_lists[name] = items
            self.named_lists.add(name)
        return name

    def _name(self, row: _Row, level: _Level) -> str | None:
        name = row.get("name")
        if not name:
            self.issues.at(row, "name", "empty_required", "name is empty", "name 为空")
            return None
        if name in self.renamed:
            self._renamed_warning(row, "name", name, self.renamed[name])
            name = self.renamed[name]
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
            value = row.get(key)
            if key == "required" and value.lower() in _FALSE_WORDS:
                continue
            if key == "required":
                self.issues.at(
                    row,
                    key,
                    "ignored_column",
                    "required on a group is ignored: mark its questions required",
                    "分组上的 required 已忽略：请把分组中的题目设为必填",
                    warning=True,
                )
                continue
            if value:
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
        name = self.renamed.get(row.get("name"), row.get("name"))
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
        sheet = _read_sheet(ws, _CHECKS_COLUMNS, self.issues, self.plain_language)
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
        sheet = _read_sheet(ws, _UPGRADE_COLUMNS, self.issues, self.plain_language)
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


#: A workbook to import: its bytes or an open binary stream (an upload).
Workbook = bytes | IO[bytes]


def _file_refusal(code: str, message: str, message_zh: str) -> XLSFormError:
    return XLSFormError(
        [XLSFormIssue(None, None, None, None, code, message, message_zh)], code=code
    )


@dataclass(frozen=True)
class XLSFormImport:
    """What :func:`read_xlsform` read: the contracts §1 ``document``, the loaded ``definition``,
    and the located ``warnings`` for the admin (ignored columns and appearances, metadata rows,
    renamed names, a missing Chinese text, …), in sheet order."""

    document: dict[str, Any]
    definition: FormDefinition
    warnings: tuple[XLSFormIssue, ...]


# pyxform is shown our own ``boolean`` of older exports as a type it knows.
_PYXFORM_STAND_INS = {BOOLEAN_TYPE: "text"}


def read_xlsform(
    data: bytes, filename: str | None = None, attachments: Mapping[str, bytes] | None = None
) -> XLSFormImport:
    """Read an XLSForm given as bytes (.xlsx, .xlsm, .xls or Markdown tables).

    The cells are read bounded (:mod:`forms.xlsform_source`), mapped onto a definition with our
    domain checks, and the same cells are converted by pyxform, ODK's reference converter: a
    form pyxform refuses is refused with its message (``pyxform_refused``) even when nothing
    else is wrong. ``filename`` (no directory needed) gives the form id when there is no
    ``form_id``, as in pyxform. ``attachments`` are the files uploaded with the form, by
    file name: the choices of ``select_one_from_file villages.csv`` come from
    ``attachments["villages.csv"]`` (CSV or XML, :mod:`forms.xlsform_attachments`). Nothing is
    read from or written to disk.

    Raises:
        XLSFormError: ``not_xlsx`` / ``too_large`` for the file as a whole, else
            ``xlsform_invalid`` with every located problem in ``issues``.
    """
    name = filename or "(upload)"
    stem = _file_stem(filename)
    try:
        sheets = read_sheets(data, filename)
    except SourceError as exc:
        raise _file_refusal(exc.code, f"{name}: {exc.message}", f"{name} {exc.message_zh}") from exc
    reader = _Reader(sheets, stem, attachments)
    document = reader.read()
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
    verdict = pyxform_verdict(sheets, stem or "data", _PYXFORM_STAND_INS)
    if verdict.error is not None:
        survey = reader.origins.survey
        raise XLSFormError(
            [
                XLSFormIssue(
                    survey.title if survey is not None and verdict.row else None,
                    verdict.row,
                    None,
                    None,
                    "pyxform_refused",
                    f"ODK's XLSForm converter (pyxform) refuses this form: {verdict.error}",
                    f"ODK 的 XLSForm 转换器（pyxform）不接受此表单：{verdict.error}",
                )
            ]
        )
    return XLSFormImport(document, definition, tuple(reader.issues.warnings))


def _file_stem(filename: str | None) -> str | None:
    if not filename:
        return None
    base = re.split(r"[\\/]", filename)[-1]
    stem, dot, _ = base.rpartition(".")
    return (stem if dot else base) or None


def _source_bytes(source: Workbook) -> tuple[bytes, str | None]:
    """Bytes, or a stream read to at most one byte over the limit. Paths are the callers' to
    open (the CLI edge): the form engine does no file I/O."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), None
    if isinstance(source, str | Path):
        raise TypeError("pass the workbook's bytes or an open binary stream, not a path")
    # An upload (werkzeug's FileStorage) knows its file name; a plain stream may know a path.
    name = getattr(source, "filename", None) or getattr(source, "name", None)
    return source.read(MAX_WORKBOOK_BYTES + 1), str(name) if isinstance(name, str) else None


def import_xlsform(source: Workbook) -> dict[str, Any]:
    """Read an XLSForm workbook into a form definition document (contracts §1).

    ``source`` is the workbook's bytes or a binary file object (read into memory, then
    :func:`read_xlsform`).
    The document is also checked by :func:`forms.definition.load_definition`, so what this
    returns always loads. Warnings are dropped; use :func:`read_xlsform` to show them.

    Raises:
        XLSFormError: the file is not a workbook, uses something we cannot keep, or describes
            an invalid definition; ``issues`` locates every problem.
    """
    data, name = _source_bytes(source)
    return read_xlsform(data, name).document


def load_xlsform(source: Workbook) -> FormDefinition:
    """Read an XLSForm workbook straight into a :class:`FormDefinition`.

    Raises:
        XLSFormError: as :func:`import_xlsform`.
    """
    data, name = _source_bytes(source)
    return read_xlsform(data, name).definition


# --------------------------------------------------------------------------------------------
# Public API: export

_BOOLEAN_CHOICES = (
    {"value": "true", "label": {"zh": "是", "en": "Yes"}},
    {"value": "false", "label": {"zh": "否", "en": "No"}},
)

_FIELD_KEYS = {
    "choice_filter",
    "repeat_count",
    "default",
    "name",
    "type",
    "label",
    "hint",
    "required",
    "relevant",
    "constraint",
    "constraint_message",
    "required_message",
    "guidance_hint",
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
    "odk_version",
    "odk_form_id",
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


_CHOICE_COLUMN_RE = re.compile(r"""choice\((['"])([a-z][a-z0-9_]*)\1\)""")


def _default_cell(expression: str) -> str:
    """A default as ODK writes it: a literal's text (``'大寨'`` → ``大寨``, ``date('2026-12-01')``
    → ``2026-12-01``), an expression as it is (read back as the same by the importer)."""
    literal = re.fullmatch(r"'([^']*)'|\"([^\"]*)\"|date\('(\d{4}-\d{2}-\d{2})'\)", expression)
    if literal is None:
        return expression
    text = next(g for g in literal.groups() if g is not None)
    if "${" in text or re.search(r"[A-Za-z][A-Za-z0-9:\-]*\s*\(", text):
        return expression  # text that would read back as an expression stays quoted
    return text


def export_xlsform(
    definition: FormDefinition | Mapping[str, Any], destination: IO[bytes] | None = None
) -> bytes:
    """A form definition as an XLSForm workbook that :func:`import_xlsform` reads back: its
    bytes, also written to the binary stream ``destination`` when one is given (writing a file
    is the caller's: the CLI edge).

    ``definition`` is a :class:`FormDefinition` or a contracts §1 document (checked with
    :func:`load_definition` first). Every cell is written as text. The workbook reads back to the
    same definition (same :func:`dump_definition`); bytes differ between runs because the file
    carries its creation time.

    Raises:
        FormDefinitionError: ``definition`` is a document that does not load.
        XLSFormError: (code ``export_unsupported``) the definition holds something XLSForm cannot
            carry, so writing it would silently lose it.
        OSError: ``destination`` cannot be written.
        TypeError: ``destination`` is a path, not a stream.
    """
    if isinstance(destination, str | Path):
        raise TypeError("export_xlsform writes to a binary stream; write the bytes to the file")
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
    required_langs = _languages(f.get("required_message") for f in all_fields)
    guidance_langs = _languages(f.get("guidance_hint") for f in all_fields)
    headers = ["type", "name", *(f"label::{lang}" for lang in label_langs)]
    optional = [
        *(f"hint::{lang}" for lang in hint_langs),
        "required",
        "relevant",
        "constraint",
        *(f"constraint_message::{lang}" for lang in message_langs),
        *(f"required_message::{lang}" for lang in required_langs),
        *(f"guidance_hint::{lang}" for lang in guidance_langs),
        "calculation",
        "unit",
        "merge",
        "sensitive",
        "min_rows",
        "max_rows",
        "repeat_count",
        "choice_filter",
        "default",
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
            elif ftype == BOOLEAN_TYPE:
                # ODK has no boolean type: a yes/no list whose values are our true/false.
                row["type"] = f"select_one {EXPORT_BOOLEAN_LIST}"
            else:
                row["type"] = ftype
            for key, column in (
                ("label", "label"),
                ("hint", "hint"),
                ("constraint_message", "constraint_message"),
                ("required_message", "required_message"),
                ("guidance_hint", "guidance_hint"),
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
            if item.get("repeat_count"):
                row["repeat_count"] = item["repeat_count"]
            if item.get("choice_filter"):
                # ODK names the tested choice's columns by bare words.
                row["choice_filter"] = _CHOICE_COLUMN_RE.sub(r"\2", item["choice_filter"])
            if item.get("default"):
                row["default"] = _default_cell(item["default"])
            rows.append(row)
            if ftype == "repeat":
                add_fields(item.get("fields") or [])
                rows.append({"type": "end_repeat", "name": item["name"]})

    add_fields(doc.get("fields") or [])
    headers += [h for h in optional if any(r.get(h) for r in rows)]
    _write_table(survey, headers, rows)

    choice_lists: Mapping[str, Sequence[Mapping[str, Any]]] = doc.get("choice_lists") or {}
    if any(f["type"] == BOOLEAN_TYPE for f in all_fields):
        if EXPORT_BOOLEAN_LIST in choice_lists:
            raise _export_refusal(
                f"choice list {EXPORT_BOOLEAN_LIST!r} (it spells yes/no questions)", "definition"
            )
        choice_lists = {**choice_lists, EXPORT_BOOLEAN_LIST: _BOOLEAN_CHOICES}
    choice_langs = _languages(c.get("label") for items in choice_lists.values() for c in items)
    filter_columns = list(
        dict.fromkeys(
            k for items in choice_lists.values() for c in items for k in c.get("filters", {})
        )
    )
    choice_rows = [
        {
            "list_name": list_name,
            "name": str(choice["value"]),
            **{f"label::{lang}": text for lang, text in (choice.get("label") or {}).items()},
            **dict(choice.get("filters") or {}),
        }
        for list_name, items in choice_lists.items()
        for choice in items
    ]
    _write_table(
        workbook.create_sheet("choices"),
        ["list_name", "name", *(f"label::{lang}" for lang in choice_langs), *filter_columns],
        choice_rows,
    )

    # ODK titles have one language (pyxform fails on form_title::en): the Chinese title is
    # ODK's form_title, the translations go in our vs_form_title::<lang> columns ODK ignores.
    title = dict(doc.get("title") or {})
    title_langs = [lang for lang in _languages([title]) if lang != "zh"]
    _write_table(
        workbook.create_sheet("settings"),
        [
            "form_id",
            "version",
            "form_title",
            *(f"vs_form_title::{lang}" for lang in title_langs),
            "subject",
        ],
        [
            {
                "form_id": doc.get("odk_form_id") or doc["id"],
                "version": doc.get("odk_version") or str(doc["version"]),
                "form_title": title.get("zh", ""),
                **{f"vs_form_title::{lang}": title[lang] for lang in title_langs},
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

    buffer = io.BytesIO()
    workbook.save(buffer)
    data = buffer.getvalue()
    if destination is not None:
        destination.write(data)
    return data
