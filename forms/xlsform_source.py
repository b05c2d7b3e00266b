"""Reading an XLSForm's cells, bounded, the way pyxform reads them; and pyxform's verdict on them.

A form reaches us as bytes (an upload, a file the CLI read): ``.xlsx`` / ``.xlsm`` (Office Open
XML), ``.xls`` (BIFF, Excel 97-2003) or XLSForm written as Markdown tables (as pyxform's own tests
write them). :func:`read_sheets` turns them into plain sheets of located text cells; nothing here
touches a file or the network.

Why not ``openpyxl.load_workbook(...)`` and ``ws.iter_rows()``: that builds a cell object for every
cell of the sheet's *used range*, and one formatted empty cell far away (Excel, WPS and Google
Sheets leave them) makes the range millions of cells — 28 s for a 5 KB file with a cell at ZZ5000,
and the server's upload path calls this code. Here the workbook is streamed (openpyxl read-only)
with pyxform's own stopping rules — the header ends after a run of 20 empty columns, a sheet after
a run of 60 empty rows — so the work is bounded by the cells that hold text, which
:data:`MAX_CELLS` caps, and by the unpacked size, which :data:`MAX_UNPACKED_BYTES` caps before
anything is parsed (a zip bomb). Only the sheets an XLSForm defines (and our ``checks`` /
``upgrade`` extensions) are read at all.

:func:`pyxform_verdict` asks pyxform (ODK's reference XLSForm converter) whether the same cells
make an XForm ODK Collect could fill, so what we accept never drifts from what ODK accepts.
"""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

__all__ = [
    "MAX_CELLS",
    "MAX_UNPACKED_BYTES",
    "MAX_WORKBOOK_BYTES",
    "XLSFORM_SHEETS",
    "RawSheet",
    "SourceError",
    "cell_text",
    "pyxform_verdict",
    "read_sheets",
]

#: A form workbook is a few hundred KiB at most; larger uploads are refused unread.
MAX_WORKBOOK_BYTES = 10 * 2**20
#: Unpacked size of an .xlsx's members, checked before any XML is parsed (zip bombs).
MAX_UNPACKED_BYTES = 64 * 2**20
#: Cells holding text, over the whole workbook. The largest real forms we have seen hold about
#: 30 000; a sheet beyond this is data, not a form.
MAX_CELLS = 500_000
#: pyxform's stopping rules (``pyxform.xls2json_backends``): a run of this many empty header
#: cells ends the header, a run of this many empty rows ends the sheet.
EMPTY_COLUMNS_END = 20
EMPTY_ROWS_END = 60

#: Sheets XLSForm defines (pyxform reads these and ignores any other), plus our two extensions.
XLSFORM_SHEETS = (
    "survey",
    "choices",
    "settings",
    "external_choices",
    "entities",
    "osm",
    "checks",
    "upgrade",
)
_PYXFORM_SHEETS = ("survey", "choices", "settings", "external_choices", "entities", "osm")

_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


class SourceError(Exception):
    """The bytes are not a workbook we can read. ``code`` is ``not_xlsx`` or ``too_large``."""

    def __init__(self, code: str, message: str, message_zh: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.message_zh = message_zh


@dataclass
class RawSheet:
    """One sheet as text: ``header`` is ``[(column index, text)]`` (1-based, non-empty only);
    ``rows`` is ``[(row number as Excel shows it, {column index: text})]`` (non-empty cells)."""

    title: str
    header: list[tuple[int, str]] = field(default_factory=list)
    #: the workbook's only sheet, read as the survey whatever its name (as pyxform does)
    lone: bool = False
    rows: list[tuple[int, dict[int, str]]] = field(default_factory=list)


def cell_text(value: Any) -> str:
    """A cell's value as the text a person sees: Excel's 1.0 is ``"1"``, TRUE is ``"yes"``.

    Non-breaking and full-width spaces at either end are dropped, as pyxform drops them.
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
    return str(value).replace("\xa0", " ").strip()


class _Budget:
    def __init__(self) -> None:
        self.cells = 0

    def take(self, n: int) -> None:
        self.cells += n
        if self.cells > MAX_CELLS:
            raise SourceError(
                "too_large",
                f"the workbook holds more than {MAX_CELLS} filled cells: that is data, not a form",
                f"表格中有内容的单元格超过 {MAX_CELLS} 个：这是数据表，不是调查表",
            )


def _bounded_sheet(
    title: str, rows: Iterator[Iterable[tuple[int, Any]]], budget: _Budget, lone: bool = False
) -> RawSheet:
    """Apply pyxform's stopping rules to rows of ``(column index, value)`` pairs."""
    sheet = RawSheet(title, lone=lone)
    first = next(rows, None)
    if first is None:
        return sheet
    empty_run = 0
    last = 0
    for index, value in sorted(first, key=lambda pair: pair[0]):
        if index - last - 1 > EMPTY_COLUMNS_END:
            break
        text = cell_text(value)
        if text:
            sheet.header.append((index, text))
            last = index
            empty_run = 0
        else:
            empty_run += 1
            if empty_run > EMPTY_COLUMNS_END:
                break
    budget.take(len(sheet.header))
    if not sheet.header:
        return sheet
    width = sheet.header[-1][0]
    empty_rows = 0
    for number, cells in enumerate(rows, start=2):
        texts = {}
        for index, value in cells:
            if index > width:
                break
            text = cell_text(value)
            if text:
                texts[index] = text
        if texts:
            budget.take(len(texts))
            sheet.rows.append((number, texts))
            empty_rows = 0
        else:
            empty_rows += 1
            if empty_rows > EMPTY_ROWS_END:
                break
    return sheet


def _wanted(titles: list[str]) -> dict[str, str]:
    """Sheets worth reading, by title: XLSForm's and ours; a lone sheet is the survey."""
    if len(titles) == 1:
        return {titles[0]: titles[0]}
    return {t: t for t in titles if t.strip().lower() in XLSFORM_SHEETS}


def _read_xlsx(data: bytes, budget: _Budget) -> list[RawSheet]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise _not_a_workbook(exc) from exc
    if unpacked > MAX_UNPACKED_BYTES:
        raise SourceError(
            "too_large",
            f"the workbook unpacks to {unpacked // 2**20} MiB "
            f"(limit {MAX_UNPACKED_BYTES // 2**20} MiB): not a form",
            f"表格解压后有 {unpacked // 2**20} MiB（上限 {MAX_UNPACKED_BYTES // 2**20} MiB），"
            "不像是调查表",
        )
    from openpyxl.reader.excel import ExcelReader

    with warnings.catch_warnings():
        # Excel and WPS save extensions openpyxl drops with a UserWarning (data validation
        # lists, conditional formatting); only cell values are read, so the loss is of no
        # concern and the warning would only confuse county staff.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"openpyxl(\..*)?$")
        reader = ExcelReader(io.BytesIO(data), read_only=True, data_only=True)
        reader.read()
        try:
            wb = reader.wb
            titles = [ws.title for ws in wb.worksheets]
            sheets = []
            for title in _wanted(titles):
                ws = wb[title]
                lone = len(titles) == 1
                # Forget the declared used range: cells are streamed as the XML holds them,
                # so a formatted cell at XFD1048576 costs nothing until it is reached.
                ws.reset_dimensions()
                sheets.append(_bounded_sheet(title, _numbered(ws), budget, lone))
            return sheets
        finally:
            reader.archive.close()


def _numbered(ws: Any) -> Iterator[list[tuple[int, Any]]]:
    """Rows of a read-only worksheet as ``(column, value)`` lists, gaps as empty rows.

    Read-only rows carry their row number; rows missing from the XML come back empty so that
    row numbers stay those Excel shows.
    """
    expected = 1
    for row in ws.iter_rows():
        cells = [c for c in row if getattr(c, "row", None) is not None]
        number = cells[0].row if cells else expected
        while expected < number:
            yield []
            expected += 1
        # An Excel error (#N/A, #REF!) shows no value a person typed: read it as empty.
        yield [(c.column, None if c.data_type == "e" else c.value) for c in cells]
        expected = number + 1


def _read_xls(data: bytes, budget: _Budget) -> list[RawSheet]:
    import xlrd

    try:
        book = xlrd.open_workbook(file_contents=data, on_demand=True, logfile=io.StringIO())
    except Exception as exc:  # xlrd fails on junk in many ways; all mean "not a workbook"
        raise _not_a_workbook(exc) from exc
    try:
        names = book.sheet_names()
        sheets = []
        for title in _wanted(names):
            ws = book.sheet_by_name(title)
            budget.take(0)

            def rows(ws: Any = ws) -> Iterator[list[tuple[int, Any]]]:
                for r in range(ws.nrows):
                    values = ws.row_values(r)
                    types = ws.row_types(r)
                    yield [
                        (c + 1, _xls_value(v, t, book.datemode))
                        for c, (v, t) in enumerate(zip(values, types, strict=False))
                    ]

            sheets.append(_bounded_sheet(title, rows(), budget, len(names) == 1))
        return sheets
    finally:
        book.release_resources()


def _xls_value(value: Any, ctype: int, datemode: int) -> Any:
    import xlrd

    if ctype == xlrd.XL_CELL_BOOLEAN:
        return bool(value)
    if ctype == xlrd.XL_CELL_ERROR:
        return None
    if ctype == xlrd.XL_CELL_DATE:
        try:
            return xlrd.xldate.xldate_as_datetime(value, datemode)
        except Exception:  # an ambiguous or impossible date: keep the number
            return value
    return value


def _read_markdown(text: str, budget: _Budget) -> list[RawSheet]:
    from pyxform.xls2json_backends import _md_table_to_ss_structure

    sheets = []
    for title, table in _md_table_to_ss_structure(text).items():
        if not title:
            continue
        rows = ([(i + 1, v) for i, v in enumerate(row) if v is not None] for row in table)
        sheets.append(_bounded_sheet(title, rows, budget))
    titles = [s.title for s in sheets]
    if len(sheets) == 1:
        sheets[0].lone = True
    wanted = _wanted(titles)
    return [s for s in sheets if s.title in wanted]


def _not_a_workbook(exc: BaseException | None) -> SourceError:
    detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
    return SourceError(
        "not_xlsx",
        "not a readable XLSForm workbook (.xlsx, .xlsm, .xls, or Markdown tables; save it from "
        "Excel or WPS as .xlsx)" + detail,
        "不是可读取的 .xlsx 表格（请在 Excel 或 WPS 中另存为 .xlsx；也可读 .xls、.xlsm、Markdown 表格）",
    )


_MD_LINE = re.compile(r"^\s*\|", re.MULTILINE)


def read_sheets(data: bytes, filename: str | None = None) -> list[RawSheet]:
    """Read the XLSForm sheets of a workbook given as bytes.

    The format is taken from the bytes (zip → .xlsx/.xlsm, OLE → .xls, text with ``|`` tables →
    Markdown); ``filename`` is only used in messages by callers.

    Raises:
        SourceError: ``too_large`` (over :data:`MAX_WORKBOOK_BYTES`, :data:`MAX_UNPACKED_BYTES`
            or :data:`MAX_CELLS`) or ``not_xlsx`` (anything that is not a readable workbook).
    """
    if len(data) > MAX_WORKBOOK_BYTES:
        raise SourceError(
            "too_large",
            f"the file is too large for a form (limit {MAX_WORKBOOK_BYTES // 2**20} MiB)",
            f"文件太大，不像是调查表（上限 {MAX_WORKBOOK_BYTES // 2**20} MiB）",
        )
    budget = _Budget()
    try:
        if data.startswith(_ZIP_MAGIC):
            return _read_xlsx(data, budget)
        if data.startswith(_OLE_MAGIC):
            return _read_xls(data, budget)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _not_a_workbook(None) from exc
        if "\x00" in text or not _MD_LINE.search(text):
            raise _not_a_workbook(None)
        return _read_markdown(text, budget)
    except SourceError:
        raise
    except Exception as exc:
        # openpyxl and xlrd parse untrusted bytes and fail in many ways (zip, XML, styles,
        # missing parts); to the person who uploaded the file they all mean one thing.
        raise _not_a_workbook(exc) from exc


_ROW_IN_MESSAGE = re.compile(r"\[row\s*:\s*(\d+)\]")


@dataclass(frozen=True)
class PyxformVerdict:
    """What pyxform said: ``error`` (its message, None when it converted the form), the row it
    names if any, and its warnings."""

    error: str | None
    row: int | None
    warnings: tuple[str, ...]


def _plain_title(names: dict[int, str]) -> dict[int, str]:
    """Settings headers as pyxform is shown them: one plain ``form_title``.

    Our titles are translated (``form_title::en``); pyxform 4.5 crashes building the XForm title
    from a translated one (ODK titles have one language), so it sees the first title column.
    """
    titles = [i for i, h in names.items() if re.match(r"^\s*(vs_)?(form_)?title\s*:", h.lower())]
    if not titles:
        return names
    kept = {i: h for i, h in names.items() if i not in titles}
    if "form_title" not in {h.strip().lower() for h in kept.values()}:
        kept[titles[0]] = "form_title"
    return kept


def pyxform_verdict(
    sheets: list[RawSheet], fallback_name: str, replace_types: dict[str, str] | None = None
) -> PyxformVerdict:
    """Convert the sheets with pyxform (ODK's reference XLSForm → XForm converter).

    ``replace_types`` maps a ``type`` cell (lower-case) onto what pyxform is shown instead — our
    own ``boolean`` of older exports is not an ODK type. Nothing is written anywhere.
    """
    from pyxform.errors import PyXFormError
    from pyxform.xls2xform import convert

    book: dict[str, Any] = {"sheet_names": [s.title for s in sheets]}
    lone = any(s.lone for s in sheets)
    for sheet in sheets:
        key = "survey" if lone else sheet.title.strip().lower()
        if key not in _PYXFORM_SHEETS:
            continue
        names = dict(sheet.header)
        if key == "settings":
            names = _plain_title(names)
        rows: list[dict[str, str]] = []
        expected = 2
        for number, cells in sheet.rows:
            rows.extend({} for _ in range(expected, number))  # keep pyxform's row numbers
            row = {names[i]: t for i, t in cells.items() if i in names}
            if key == "survey" and replace_types and "type" in row:
                row["type"] = replace_types.get(row["type"].strip().lower(), row["type"])
            rows.append(row)
            expected = number + 1
        book[key] = rows
        book[f"{key}_header"] = [dict.fromkeys(names.values())]
    book["fallback_form_name"] = fallback_name
    found: list[str] = []
    try:
        convert(xlsform=book, warnings=found)
    except PyXFormError as exc:
        message = str(exc)
        match = _ROW_IN_MESSAGE.search(message)
        return PyxformVerdict(message, int(match.group(1)) if match else None, tuple(found))
    except Exception as exc:
        # pyxform's own failures on odd input (it crashes on a translated form_title, for one)
        # are still its refusal of the form, never our crash.
        return PyxformVerdict(f"{type(exc).__name__}: {exc}", None, tuple(found))
    return PyxformVerdict(None, None, tuple(found))
