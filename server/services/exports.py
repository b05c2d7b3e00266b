"""Exports of one form's records as CSV or XLSX, with Chinese headers and sensitive fields masked.

Layout (the documented flattening):

- the **main sheet** has one row per record: 记录ID, 行政村代码, 户编号, 调查轮次, 表单版本,
  更新时间, then every top-level field of the form in document order, headed by its Chinese label;
- every **repeat group** (household members, persuade-back visits …) is a sheet of its own, one
  row per repeat row, keyed by 记录ID + 行ID (the row's own id; ``parent/child`` for a repeat
  inside a repeat) and 行号 (1-based position), then the row's fields;
- XLSX holds all sheets in one workbook; CSV carries one sheet per request (``sheet=main``, the
  default, or ``sheet=<repeat path>``, e.g. ``sheet=members``).

Columns come from the newest published (or retired) version of the form, or the ``version``
asked for; records of every version are exported under those columns (``表单版本`` says which
version a record was made on). Select fields show their Chinese choice labels, booleans 是/否,
multiple choices joined by 、, geopoints ``lat,lon``.

Sensitive fields (the definition marks ID numbers, phones, health) are masked — an ID keeps its
first 6 and last 4 characters, a phone its first 3 and last 4, anything else becomes ``***`` —
unless a county admin asks with ``unmasked=true`` (audited as such); a township reviewer never
gets them. Every text cell that a spreadsheet would run as a formula (starting ``= + -
@``, a tab or a carriage return) is prefixed with ``'`` — headers, record ids, household numbers
and rounds included. Every export is audited before the first byte leaves.

Records are read in keyset pages (``server.storage.exports``) and written as they come: a CSV is
streamed to the client, an XLSX is written by openpyxl's write-only mode to a temporary file and
then streamed, so memory stays bounded for a county of 100,000 households.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from forms import Field, FieldType, FormDefinition, load_definition
from server.errors import Forbidden, NotFound, ValidationFailed
from server.services.access import COUNTY_ADMIN, Actor, Principal
from server.services.indicators import CHINA_TIME, effective_area
from server.services.masking import Sensitivity, mask
from server.storage import forms as form_store
from server.storage.database import writing
from server.storage.exports import ExportedRecord, form_records

FORMATS: Final = ("csv", "xlsx")
MAIN_SHEET: Final = "main"
#: Fixed columns of the main sheet: header and the record attribute they show.
RECORD_COLUMNS: Final = (
    ("记录ID", "record_id"),
    ("行政村代码", "village_code"),
    ("户编号", "household_no"),
    ("调查轮次", "round"),
    ("表单版本", "form_version"),
    ("更新时间", "updated_at"),
)
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
_SHEET_FORBIDDEN: Final = str.maketrans({c: "_" for c in "[]:*?/\\"})
_CSV_ROWS_PER_CHUNK: Final = 500


def _safe_text(text: str) -> str:
    # A leading = + - @ (or tab/CR) makes Excel (and openpyxl) treat the cell as a formula.
    return "'" + text if text.startswith(_FORMULA_START) else text


def _inert(row: list[Any]) -> list[Any]:
    """Every text cell of ``row`` made inert, the fixed columns (ids, household, round) too."""
    return [_safe_text(cell) if isinstance(cell, str) else cell for cell in row]


def _label(fld: Field) -> str:
    return fld.label["zh"] if fld.label is not None else fld.name


@dataclass(frozen=True)
class Column:
    """One exported column: its header and the field it shows."""

    header: str
    field: Field


@dataclass
class Sheet:
    """One sheet (or CSV file): the main record rows, or the rows of one repeat group."""

    key: str  # "main" or the repeat's schema path, e.g. "members"
    title: str
    columns: list[Column] = field(default_factory=list)

    @property
    def headers(self) -> list[str]:
        """The header row."""
        fixed = (
            [h for h, _ in RECORD_COLUMNS]
            if self.key == MAIN_SHEET
            else ["记录ID", "行ID", "行号", "户编号"]
        )
        return fixed + [c.header for c in self.columns]


def _unique(name: str, taken: set[str], suffix: str) -> str:
    if name not in taken:
        taken.add(name)
        return name
    candidate = f"{name}（{suffix}）"
    n = 2
    while candidate in taken:
        candidate = f"{name}（{suffix}{n}）"
        n += 1
    taken.add(candidate)
    return candidate


def plan_sheets(defn: FormDefinition) -> list[Sheet]:
    """The sheets of an export of ``defn``: main first, then one per repeat (document order)."""
    sheets: list[Sheet] = []
    titles: set[str] = set()

    def add_sheet(key: str, title: str, fields: tuple[Field, ...], fixed: list[str]) -> None:
        clean = title.translate(_SHEET_FORBIDDEN)[:28] or key[:28]
        sheet = Sheet(key, _unique(clean, titles, str(len(titles))))
        sheets.append(sheet)
        headers = set(fixed)
        for fld in fields:
            if fld.type is FieldType.NOTE:
                continue
            if fld.is_repeat:
                continue
            sheet.columns.append(Column(_unique(_label(fld), headers, fld.name), fld))
        for fld in fields:
            if fld.is_repeat:
                path = fld.name if key == MAIN_SHEET else f"{key}/{fld.name}"
                add_sheet(path, _label(fld), fld.fields, ["记录ID", "行ID", "行号", "户编号"])

    add_sheet(MAIN_SHEET, defn.title["zh"], defn.fields, [h for h, _ in RECORD_COLUMNS])
    return sheets


@dataclass(frozen=True)
class Formatter:
    """Turns stored values into cells: choice labels, 是/否, masking.

    Whether a path is masked and a field's choice labels are worked out once per path and field
    and remembered: an export of a county asks them for every cell (1.3 million for one
    instrument at 100,000 households), and asking the form's versions each time was half of the
    export's time.
    """

    definition: FormDefinition
    masked: bool
    #: Whether a schema path is sensitive in any version of the form (``services.masking``).
    sensitive: Callable[[str], bool] | None = None
    _masks: dict[tuple[str, str], bool] = field(default_factory=dict, compare=False, repr=False)
    _labels: dict[str, dict[str, str]] = field(default_factory=dict, compare=False, repr=False)

    def _masks_cell(self, fld: Field, path: str) -> bool:
        key = (fld.name, path)
        found = self._masks.get(key)
        if found is None:
            found = self._masks[key] = self.masked and (
                fld.sensitive or (self.sensitive is not None and self.sensitive(path))
            )
        return found

    def _choice_labels(self, fld: Field, path: str) -> dict[str, str]:
        found = self._labels.get(path)
        if found is None:
            found = self._labels[path] = {
                c.value: c.label["zh"] for c in self.definition.choices_of(fld)
            }
        return found

    def cell(self, fld: Field, value: Any, path: str | None = None) -> Any:
        """The cell of ``value`` of field ``fld`` at schema ``path`` (a string, number or '')."""
        if self._masks_cell(fld, path or fld.name):
            return mask(value) or ""
        if value is None:
            return ""
        if isinstance(value, bool):
            return "是" if value else "否"
        if isinstance(value, int | float):
            return value
        if fld.type in (FieldType.SELECT_ONE, FieldType.SELECT_MULTIPLE):
            labels = self._choice_labels(fld, path or fld.name)
            values = value if isinstance(value, list) else [value]
            return _safe_text("、".join(labels.get(str(v), str(v)) for v in values))
        if isinstance(value, list):
            return _safe_text("、".join(str(v) for v in value))
        if isinstance(value, dict):
            if "lat" in value and "lon" in value:
                return f"{value['lat']},{value['lon']}"
            return _safe_text(str(value))
        return _safe_text(str(value))


def _record_cell(record: ExportedRecord, attribute: str) -> Any:
    value = getattr(record, attribute)
    if isinstance(value, datetime):
        # County staff read times in Beijing time; the offset keeps it unambiguous.
        return value.astimezone(CHINA_TIME).isoformat(timespec="seconds")
    return value


def _rows_of(data: dict[str, Any], path: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(row key, 1-based position, row) of the repeat at schema ``path`` inside ``data``."""
    head, _, rest = path.partition("/")
    rows = data.get(head)
    if not isinstance(rows, list):
        return
    for position, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            continue
        row_id = str(row.get("_id", position))
        if rest:
            for inner_id, inner_pos, inner in _rows_of(row, rest):
                yield f"{row_id}/{inner_id}", inner_pos, inner
        else:
            yield row_id, position, row


def sheet_rows(sheet: Sheet, record: ExportedRecord, fmt: Formatter) -> Iterator[list[Any]]:
    """The rows ``record`` contributes to ``sheet`` (one for main, one per repeat row)."""
    if sheet.key == MAIN_SHEET:
        fixed = [_record_cell(record, attribute) for _, attribute in RECORD_COLUMNS]
        yield _inert(
            fixed
            + [
                fmt.cell(c.field, record.data.get(c.field.name), c.field.name)
                for c in sheet.columns
            ]
        )
        return
    for row_key, position, row in _rows_of(record.data, sheet.key):
        fixed = [record.record_id, row_key, position, record.household_no]
        cells = [
            fmt.cell(c.field, row.get(c.field.name), f"{sheet.key}/{c.field.name}")
            for c in sheet.columns
        ]
        yield _inert(fixed + cells)


@dataclass(frozen=True)
class Export:
    """An audited export, ready to write: what to read and how to lay it out."""

    definition: FormDefinition
    area: str
    round: str | None
    masked: bool
    sheets: list[Sheet]
    #: Called with the running count after each record is read (background progress).
    on_record: Callable[[int], None] | None = None

    @property
    def formatter(self) -> Formatter:
        """The cell formatter of this export."""
        return Formatter(self.definition, self.masked, Sensitivity(self.definition.id))

    def records(self) -> Iterator[ExportedRecord]:
        """The records, streamed from storage."""
        stream = form_records(self.definition.id, self.area, round=self.round)
        if self.on_record is None:
            return stream
        return self._counted(stream, self.on_record)

    @staticmethod
    def _counted(
        stream: Iterator[ExportedRecord], on_record: Callable[[int], None]
    ) -> Iterator[ExportedRecord]:
        for count, record in enumerate(stream, start=1):
            yield record
            on_record(count)

    def sheet(self, key: str) -> Sheet:
        """One sheet by key. Raises :class:`ValidationFailed` for an unknown one."""
        for sheet in self.sheets:
            if sheet.key == key:
                return sheet
        raise ValidationFailed(
            en=f"no sheet {key!r}; sheets: {', '.join(s.key for s in self.sheets)}",
            zh=f"没有数据表 {key!r}",
            details={"fields": {"sheet": [f"one of {', '.join(s.key for s in self.sheets)}"]}},
        )

    def csv_chunks(self, key: str = MAIN_SHEET) -> Iterator[bytes]:
        """The CSV of one sheet as UTF-8 chunks (with a BOM, so Excel reads the Chinese)."""
        sheet = self.sheet(key)
        fmt = self.formatter
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(_inert(sheet.headers))
        yield b"\xef\xbb\xbf" + buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
        pending = 0
        for record in self.records():
            for row in sheet_rows(sheet, record, fmt):
                writer.writerow(row)
                pending += 1
            if pending >= _CSV_ROWS_PER_CHUNK:
                yield buffer.getvalue().encode("utf-8")
                buffer.seek(0)
                buffer.truncate()
                pending = 0
        if buffer.tell():
            yield buffer.getvalue().encode("utf-8")

    def write_xlsx(self, target: str | os.PathLike[str]) -> int:
        """Write every sheet to an XLSX file at ``target``; returns the number of records.

        openpyxl's write-only mode spools each sheet to its own temporary file, so rows are
        never all held in memory.
        """
        from openpyxl import Workbook

        workbook = Workbook(write_only=True)
        sheets = [(sheet, workbook.create_sheet(sheet.title)) for sheet in self.sheets]
        for sheet, worksheet in sheets:
            worksheet.append(_inert(sheet.headers))
        fmt = self.formatter
        count = 0
        for record in self.records():
            count += 1
            for sheet, worksheet in sheets:
                for row in sheet_rows(sheet, record, fmt):
                    worksheet.append(row)
        workbook.save(target)
        return count

    def xlsx_file(self) -> str:
        """Write the XLSX to a new temporary file and return its path (the caller deletes it)."""
        handle, path = tempfile.mkstemp(prefix="village-sync-export-", suffix=".xlsx")
        os.close(handle)
        try:
            self.write_xlsx(path)
        except BaseException:
            os.unlink(path)
            raise
        return path


def _definition(form_id: str, version: int | None) -> FormDefinition:
    usable = [
        row
        for row in form_store.list_versions(form_id)
        if row.status in (form_store.PUBLISHED, form_store.RETIRED)
        and (version is None or row.version == version)
    ]
    if not usable:
        raise NotFound(
            en=f"no published version {version or ''} of form {form_id}".replace("  ", " "),
            zh=f"表单 {form_id} 没有已发布的版本",
            code="form_not_found",
        )
    return load_definition(usable[0].definition)


def prepared_export(
    form_id: str,
    version: int,
    area: str,
    round: str | None,
    *,
    masked: bool,
    on_record: Callable[[int], None] | None = None,
) -> Export:
    """The export of an already checked and audited request (a background job re-opening it).

    Raises :class:`NotFound` (``form_not_found``) when the version is no longer published."""
    defn = _definition(form_id, version)
    return Export(defn, area, round, masked, plan_sheets(defn), on_record=on_record)


def start_export(
    principal: Principal,
    actor: Actor,
    form_id: str,
    *,
    fmt: str,
    village: str | None = None,
    round: str | None = None,
    version: int | None = None,
    unmasked: bool = False,
    sheet: str = MAIN_SHEET,
) -> Export:
    """Check and audit an export request; returns the :class:`Export` to write.

    ``village`` is a code prefix (village, township or county) inside the caller's area.
    Raises :class:`Forbidden` (``unmasked_export_forbidden``) when someone other than a county
    admin asks for unmasked data, or (``outside_area``) for an area outside the caller's;
    :class:`NotFound` (``form_not_found``) without a published version; and
    :class:`ValidationFailed` for an unknown format or sheet.
    """
    if fmt not in FORMATS:
        raise ValidationFailed(
            en="format must be csv or xlsx",
            zh="导出格式应为 csv 或 xlsx",
            details={"fields": {"format": ["csv or xlsx"]}},
        )
    if unmasked and principal.role != COUNTY_ADMIN:
        raise Forbidden(
            en="only a county admin may export unmasked ID numbers, phones and health data",
            zh="只有县级管理员可以导出未脱敏的证件号码、电话和健康信息",
            code="unmasked_export_forbidden",
        )
    area = effective_area(principal, village)
    defn = _definition(form_id, version)
    export = Export(defn, area, round, not unmasked, plan_sheets(defn))
    if fmt == "csv":
        export.sheet(sheet)
    with writing():
        actor.audit(
            "export.unmasked" if unmasked else "export",
            target_type="form",
            target_id=form_id,
            area_code=area,
            details={
                "format": fmt,
                "form_version": defn.version,
                "village": area,
                "round": round,
                "unmasked": unmasked,
                "sheet": sheet if fmt == "csv" else "all",
            },
        )
    return export
