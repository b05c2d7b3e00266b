"""The household roster in and out in the national system's layout (issue 17).

The national platform exports one row per person: a few title rows, then a header row, then the
people, their household's number (户编号) and ID number (证件号码) on every row. An import reads
every cell as text (so a trailing X and leading zeros survive; an ID that a spreadsheet already
turned into a number is refused with the re-type message of ``forms.identity``), groups the rows
into households, and writes each household's ``household_roster`` record as a server-made op
through :func:`server.services.record_ops.apply_ops` — the one write path of survey data, so the
record is validated, merged, logged in its history and downloaded by the village's tablets like
any other. IDs land in standard form (``forms.validation.standard_changes``).

Re-importing the same file changes nothing: records and rows have ids derived from
(village, 户编号, round) and (village, 户编号, 证件号码), and only values that differ from the
stored record are written; a value the village team recorded that the file does not carry is never
removed. Rows that cannot be imported are listed with their Excel row and column, never dropped
silently: a bad ID, a person listed twice, a village outside the importer's area, a household the
roster form refuses.
"""

from __future__ import annotations

import io
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import openpyxl

from forms.identity import IdNumberError, VillageCodeError, parse_id_number, parse_village_code
from forms.instruments import load_builtin
from forms.paths import ROW_ID_KEY, flatten
from server.errors import Forbidden, NotFound, ValidationFailed
from server.services.access import COUNTY_ADMIN, Actor, Principal
from server.services.checking import definition, ingest_context
from server.services.record_ops import (
    SERVER_DEVICE,
    apply_ops,
    next_server_seq,
    record_data,
    server_stamp,
)
from server.storage import audit, records
from server.storage.database import writing
from sync_protocol.merge import RecordState, current_values
from sync_protocol.ops import Op, put_op

__all__ = [
    "COLUMNS",
    "FORM_ID",
    "RosterProblem",
    "RosterReport",
    "RosterRow",
    "export_roster",
    "import_roster",
    "read_roster",
    "write_roster",
]

FORM_ID = "household_roster"
#: The national layout: header → the roster form's field (household-level fields first).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("行政区划代码", "village_code"),
    ("户编号", "household_no"),
    ("户类型", "household_type"),
    ("联系电话", "phone"),
    ("姓名", "name"),
    ("性别", "sex"),
    ("证件类型", "id_type"),
    ("证件号码", "id_number"),
    ("与户主关系", "relation"),
    ("文化程度", "education_level"),
    ("在校生状况", "schooling"),
    ("健康状况", "health"),
    ("劳动技能", "labour_capacity"),
)
HOUSEHOLD_FIELDS = ("village_code", "household_no", "household_type", "phone")
REQUIRED_HEADERS = ("行政区划代码", "户编号", "证件号码", "姓名")
TITLE = "家庭成员信息"
_ID_TYPES = {"居民身份证": "resident_id", "残疾人证": "disability_card", "其他": "other"}
_ID_TYPE_NAMES = {value: name for name, value in _ID_TYPES.items()}
# Ids derived from the household and person, so a re-import addresses the same record and rows.
_NAMESPACE = uuid.UUID("3f1d7c52-9a0e-4f4e-8d61-5b7a2c9e0d17")
# The national system separates the answers of a multiple choice with 、 (some exports use , or ;).
_MULTI_SEPARATORS = str.maketrans({"、": " ", ",": " ", "，": " ", ";": " ", "；": " "})


@dataclass(frozen=True)
class RosterProblem:
    """One row that was not (fully) imported, located in the file."""

    row: int  # the Excel row number, 1-based as the spreadsheet shows it
    column: str  # the header, "" for the whole row
    code: str
    message: dict[str, str]  # {"zh", "en"}

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"row": self.row, "column": self.column, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class RosterRow:
    """One person row of the file: its Excel row number and every cell as text."""

    row: int
    cells: dict[str, str]  # field name → text ("" when empty)


@dataclass
class RosterReport:
    """What an import did: households created / changed / unchanged, people, problems."""

    created: list[str] = field(default_factory=list)  # "village/户编号"
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    people: int = 0
    problems: list[RosterProblem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (what the CLI prints)."""
        return {
            "created": len(self.created),
            "changed": len(self.changed),
            "unchanged": len(self.unchanged),
            "people": self.people,
            "problems": [p.to_dict() for p in self.problems],
        }


def _problem(row: int, column: str, code: str, zh: str, en: str) -> RosterProblem:
    return RosterProblem(row, column, code, {"zh": zh, "en": en})


def header_text(value: Any) -> str:
    """A header cell as text (NFKC, so full-width letters read as the layout's)."""
    return unicodedata.normalize("NFKC", str(value)).strip() if value is not None else ""


def cell_text(value: Any) -> str:
    """A cell as the text a person sees; numbers without a float's ``.0``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()[:10]
    return str(value).strip()


def read_roster(content: bytes) -> tuple[list[RosterRow], list[RosterProblem]]:
    """The person rows of a national-layout workbook (first sheet), and the rows it cannot read.

    Title rows before the header are skipped: the header is the first row that names every one
    of :data:`REQUIRED_HEADERS`. Unknown columns are ignored. An ID cell that holds a number
    (not text) is listed with ``forms.identity``'s ``lossy_number`` message when its digits are
    already lost.

    Raises :class:`ValidationFailed` (``roster_unreadable``, ``roster_header_missing``).
    """
    try:
        book = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a file that is not a workbook
        raise ValidationFailed(
            en=f"the file is not an Excel workbook (.xlsx): {exc}",
            zh="文件不是 Excel 工作簿（.xlsx），无法读取",
            code="roster_unreadable",
        ) from None
    sheet = book.worksheets[0]
    positions: dict[str, int] | None = None
    people: list[RosterRow] = []
    problems: list[RosterProblem] = []
    names = dict(COLUMNS)
    for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
        if positions is None:
            headers = [header_text(v) for v in values]
            if all(h in headers for h in REQUIRED_HEADERS):
                positions = {names[h]: i for i, h in enumerate(headers) if h in names}
            continue
        if all(v is None or cell_text(v) == "" for v in values):
            continue
        cells: dict[str, str] = {}
        for name, index in positions.items():
            raw = values[index] if index < len(values) else None
            if name == "id_number" and isinstance(raw, int | float) and not isinstance(raw, bool):
                try:
                    parse_id_number(raw)
                except IdNumberError as exc:
                    problems.append(
                        _problem(number, "证件号码", exc.code, exc.message_zh, exc.message_en)
                    )
                    cells = {}
                    break
            cells[name] = cell_text(raw)
        if cells:
            people.append(RosterRow(number, cells))
    book.close()
    if positions is None:
        raise ValidationFailed(
            en="no header row naming " + ", ".join(REQUIRED_HEADERS) + " was found",
            zh="未找到表头行（须包含" + "、".join(REQUIRED_HEADERS) + "）",
            code="roster_header_missing",
        )
    return people, problems


def _person(cells: Mapping[str, str], key: str) -> dict[str, Any]:
    member: dict[str, Any] = {ROW_ID_KEY: str(uuid.uuid5(_NAMESPACE, key))}
    for _, name in COLUMNS:
        text = cells.get(name, "")
        if name in HOUSEHOLD_FIELDS or not text:
            continue
        if name == "id_type":
            member[name] = _ID_TYPES.get(text, text)
        elif name == "health":
            member[name] = text.translate(_MULTI_SEPARATORS).split()
        else:
            member[name] = text
    member.setdefault("id_type", "resident_id")
    return member


def _households(
    rows: Iterable[RosterRow], area: str, problems: list[RosterProblem]
) -> dict[tuple[str, str], tuple[dict[str, Any], list[int]]]:
    """Household data keyed by (village, 户编号), with the Excel rows of its people."""
    seen: dict[str, int] = {}
    out: dict[tuple[str, str], tuple[dict[str, Any], list[int]]] = {}
    for person in rows:
        cells = person.cells
        try:
            village = parse_village_code(cells.get("village_code", "")).code
        except VillageCodeError as exc:
            problems.append(
                _problem(person.row, "行政区划代码", exc.code, exc.message_zh, exc.message_en)
            )
            continue
        if not village.startswith(area):
            problems.append(
                _problem(
                    person.row,
                    "行政区划代码",
                    "outside_area",
                    f"行政村 {village} 不在本次导入的范围 {area} 内，未导入",
                    f"village {village} is outside the area {area} of this import; not imported",
                )
            )
            continue
        try:
            number = parse_id_number(cells.get("id_number", "")).number
        except IdNumberError as exc:
            problems.append(
                _problem(person.row, "证件号码", exc.code, exc.message_zh, exc.message_en)
            )
            continue
        if number in seen:
            problems.append(
                _problem(
                    person.row,
                    "证件号码",
                    "duplicate_person",
                    f"证件号码与第{seen[number]}行相同，同一人只导入一次",
                    f"the same ID number as row {seen[number]}; a person is imported once",
                )
            )
            continue
        seen[number] = person.row
        household_no = cells.get("household_no", "")
        key = (village, household_no)
        if key not in out:
            data: dict[str, Any] = {"village_code": village, "household_no": household_no}
            for name in ("household_type", "phone"):
                if cells.get(name):
                    data[name] = cells[name]
            out[key] = (data, [])
        data, at = out[key]
        data.setdefault("members", []).append(
            _person({**cells, "id_number": number}, f"{village}/{household_no}/{number}")
        )
        at.append(person.row)
    return out


_HEADER_OF = {name: header for header, name in COLUMNS}


def _located(
    household: tuple[dict[str, Any], list[int]], reasons: Iterable[Mapping[str, Any]]
) -> list[RosterProblem]:
    """The form's reasons for refusing a household, at the Excel row and column they are about:
    the person's row for a member's field (path ``members/<row id>/…``), else the first row."""
    data, rows = household
    row_of = {m[ROW_ID_KEY]: at for m, at in zip(data.get("members", []), rows, strict=True)}
    out = []
    for issue in reasons:
        parts = str(issue.get("path", "")).split("/")
        at = row_of.get(parts[1], rows[0]) if len(parts) > 2 and parts[0] == "members" else rows[0]
        name = str(issue.get("field", ""))
        message = issue.get("message") or {"zh": "记录未通过校验", "en": "the record is invalid"}
        out.append(RosterProblem(at, _HEADER_OF.get(name, name), "household_invalid", message))
    return out


def import_roster(actor: Actor, content: bytes, *, round: str, area: str) -> RosterReport:
    """Import a national-layout roster workbook into ``area`` (a village-code prefix inside the
    actor's area) for survey ``round``; audited. See the module docstring.

    Raises :class:`ValidationFailed` for an unreadable file or an area outside the actor's,
    :class:`NotFound` (``form_not_found``) when the roster form is not published.
    """
    if not (area.isascii() and area.isdigit() and area.startswith(actor.area_prefix)):
        raise ValidationFailed(
            en=f"the area must be a code prefix inside {actor.area_prefix or 'the country'}",
            zh="导入范围应为本人管辖范围内的行政区划代码前缀",
            code="roster_area_invalid",
        )
    version = load_builtin(FORM_ID).version
    defn = definition(FORM_ID, version)
    if defn is None:
        raise NotFound(
            en=f"form {FORM_ID} version {version} is not published",
            zh=f"表单 {FORM_ID} 第{version}版尚未发布",
            code="form_not_found",
        )
    rows, problems = read_roster(content)
    report = RosterReport(problems=problems)
    households = _households(rows, area, report.problems)
    ctx = ingest_context()
    with writing():
        ids = {
            key: str(uuid.uuid5(_NAMESPACE, f"{FORM_ID}/{key[0]}/{key[1]}/{round}"))
            for key in households
        }
        stored = records.lock_states(list(ids.values()))
        ops: list[tuple[tuple[str, str], Op, bool]] = []
        for key, (data, _) in households.items():
            record_id = ids[key]
            existing = stored.get(record_id)
            state = RecordState.from_dict(existing["state"]) if existing else None
            now = current_values(state) if state else {}
            changes = {p: v for p, v in flatten(data).items() if now.get(p) != v}
            if not changes:
                report.unchanged.append("/".join(key))
                continue
            op = put_op(
                device_id=SERVER_DEVICE,
                seq=next_server_seq(),
                record_id=record_id,
                form_id=FORM_ID,
                form_version=state.form_version if state else version,
                changes=changes,
                base=state.heads_for(changes) if state else dict.fromkeys(changes),
                hlc=server_stamp(),
                base_revision=existing["revision"] if existing else 0,
                household={"village_code": key[0], "household_no": key[1]},
                round=round,
            )
            ops.append((key, op, state is None))
        outcomes = apply_ops(
            [op for _, op, _ in ops], ctx, scope=None, by=actor.name, keep_rejected=False
        )
        for (key, _, new), outcome in zip(ops, outcomes, strict=True):
            if outcome.status == "rejected":
                report.problems.extend(_located(households[key], outcome.ack.get("reasons", [])))
                continue
            (report.created if new else report.changed).append("/".join(key))
        imported = {*report.created, *report.changed, *report.unchanged}
        report.people = sum(
            len(data.get("members", []))
            for key, (data, _) in households.items()
            if "/".join(key) in imported
        )
        audit.add_entry(
            actor=actor.name,
            actor_user_id=actor.user_id,
            action="roster.import",
            target_type="form",
            target_id=FORM_ID,
            area_code=area,
            ip=actor.ip,
            details={
                "round": round,
                "created": len(report.created),
                "changed": len(report.changed),
                "unchanged": len(report.unchanged),
                "problems": len(report.problems),
            },
        )
    report.problems.sort(key=lambda p: p.row)
    return report


def write_roster(households: Iterable[Mapping[str, Any]]) -> bytes:
    """A workbook in the national layout (a title row, the header, one row per person) of
    roster records' data; every cell is text, so IDs and household numbers survive a round trip.
    """
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = TITLE
    sheet.append([TITLE])
    sheet.append([header for header, _ in COLUMNS])
    for data in households:
        for member in data.get("members", []):
            row = []
            for _, name in COLUMNS:
                value = data.get(name) if name in HOUSEHOLD_FIELDS else member.get(name)
                if name == "id_type":
                    value = _ID_TYPE_NAMES.get(value, value)
                elif isinstance(value, list):
                    value = "、".join(value)
                row.append("" if value is None else str(value))
            sheet.append(row)
    for column in sheet.iter_cols(min_row=3):
        for cell in column:
            cell.number_format = "@"  # text: Excel must not turn an ID into a number
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


_PAGE = 500


def export_roster(principal: Principal, actor: Actor, *, area: str, round: str) -> bytes:
    """The ``household_roster`` records of ``area`` and ``round`` in the national layout
    (:func:`write_roster`), unmasked so the file can go back into the national system; audited
    as ``actor``.

    Raises :class:`Forbidden` (``unmasked_export_forbidden``) for anyone but a county admin,
    :class:`ValidationFailed` (``roster_area_invalid``) for an area outside the principal's.
    """
    if principal.role != COUNTY_ADMIN:
        raise Forbidden(
            en="only a county admin may export the roster with ID numbers",
            zh="只有县级管理员可以导出含证件号码的花名册",
            code="unmasked_export_forbidden",
        )
    if not (area.isascii() and area.isdigit() and area.startswith(principal.area_prefix)):
        raise ValidationFailed(
            en=f"the area must be a code prefix inside {principal.area_prefix or 'the country'}",
            zh="导出范围应为本人管辖范围内的行政区划代码前缀",
            code="roster_area_invalid",
        )
    households: list[dict[str, Any]] = []
    with writing():
        offset = 0
        while True:
            page, total = records.list_records(
                area, form_id=FORM_ID, round=round, limit=_PAGE, offset=offset
            )
            households.extend(record_data(RecordState.from_dict(row.state)) for row in page)
            offset += len(page)
            if not page or offset >= total:
                break
        audit.add_entry(
            actor=actor.name,
            actor_user_id=actor.user_id,
            action="roster.export",
            target_type="form",
            target_id=FORM_ID,
            area_code=area,
            ip=actor.ip,
            details={"round": round, "households": len(households)},
        )
    return write_roster(households)
