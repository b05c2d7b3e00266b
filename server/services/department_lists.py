"""Department lists (部门数据比对, issue 17): import a department's Excel list as a round, match
its people to the roster, seal the rows at rest, and hand the cross-checks' findings — one
:class:`~server.services.task_reasons.HouseholdSignal` per household with all its reasons — to
the task service.

* **Mapping.** Which header holds the ID number, name, birth date, village code and the
  department's own values (:data:`VALUE_FIELDS`) is saved per (area, department) and reused by
  the next import; a mapped header missing from a file is an error naming it and the row where
  the header was looked for.
* **Round.** Each file is a round: department, period (``2026-11``), as-of date and the file's
  SHA-256; the same file again is a no-op that says so. Title rows before the header are
  skipped, every cell is read as text, IDs are normalised and checked (GB 11643).
* **Matching.** By normalised ID against the newest roster record of each household of the
  area; else by name + birth date + village (``matched_by: "name_birth_village"``); else the
  row is kept as unmatched with its Excel row and why (:data:`PROBLEMS`), never dropped.
* **Privacy.** Rows are sealed (``server.services.sealing``); reading them back is audited and
  shows IDs masked; a township reviewer sees only rows of its townships.
* **Cross-checks.** ``forms.household.compare_with_departments`` where it fits (insurance,
  enrolment, disability card, 低保/特困 flags) plus this module's rules (on a list but not in
  the roster, reported deceased, house A/B vs 住建 C/D, large medical out-of-pocket for an
  unmonitored household above the configured threshold). Reason codes: docs/department-data.md.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from itertools import groupby
from operator import itemgetter
from typing import Any

import openpyxl
import orjson
from python_calamine import CalamineWorkbook

from forms.household import DepartmentLists, compare_with_departments
from forms.identity import (
    IdInfo,
    IdNumberError,
    VillageCodeError,
    parse_id_number,
    parse_village_code,
)
from forms.indicators import MonitoringConfig
from forms.instruments import EDUCATION, HOUSING, INSURANCE, MONITORING, ROSTER
from server.errors import Forbidden, NotFound, ValidationFailed
from server.services import tasks
from server.services.access import COUNTY_ADMIN, Actor, Principal
from server.services.context import ServiceContext
from server.services.masking import mask
from server.services.monitoring import monitoring_config
from server.services.roster_import import cell_text, header_text
from server.services.sealing import Sealer
from server.services.task_reasons import (
    DEPARTMENTS,
    HouseholdKey,
    HouseholdSignal,
    TaskReason,
    TaskSink,
)
from server.storage import areas as area_store
from server.storage import department_lists as store
from server.storage.database import end_read, writing
from sync_protocol.crypto import b64decode, b64encode

__all__ = [
    "DEFAULT_COLUMNS",
    "PROBLEMS",
    "REASONS",
    "VALUE_FIELDS",
    "ImportResult",
    "default_task_sink",
    "get_mapping",
    "housing_appraisal_list",
    "import_department_list",
    "list_rounds",
    "read_department_file",
    "round_rows",
    "save_mapping",
]

# --- what a department file holds ---------------------------------------------------------------

#: The person columns every department's list has (ID number and name are required).
KEY_FIELDS: dict[str, tuple[str, str, str]] = {
    "id_number": ("证件号码", "身份证号/证件号码", "ID number"),
    "name": ("姓名", "姓名", "name"),
    "birth_date": ("出生日期", "出生日期", "birth date"),
    "village_code": ("行政区划代码", "行政村代码", "village code"),
    "address": ("住址", "住址（所属村）", "address (names the village)"),
}
REQUIRED_FIELDS = ("id_number", "name")

#: Each department's value columns: field → (default header, label zh, label en).
VALUE_FIELDS: dict[str, dict[str, tuple[str, str, str]]] = {
    "medical_insurance": {
        "status": ("参保状态", "参保状态", "enrolment status"),
        "scheme": ("险种", "险种", "scheme"),
        "out_of_pocket": ("个人自付", "个人自付金额（元）", "out-of-pocket (yuan)"),
    },
    "education": {
        "status": ("在校状态", "在校状态", "enrolment status"),
        "school": ("学校", "学校", "school"),
    },
    "disability": {
        "card_no": ("残疾证号", "残疾证号", "card number"),
        "category": ("残疾类别", "残疾类别", "category"),
        "grade": ("残疾等级", "残疾等级", "grade"),
    },
    "civil_affairs": {
        "assistance": ("救助类别", "救助类别（低保/特困）", "assistance (低保/特困)"),
    },
    "housing": {
        "grade": ("鉴定等级", "鉴定等级（A/B/C/D）", "appraisal grade (A-D)"),
    },
    "human_resources": {"status": ("就业状态", "就业状态", "employment status")},
    "public_security": {"status": ("人员状态", "人员状态", "person status")},
    "emergency": {"status": ("受灾情况", "受灾情况", "disaster status")},
}

#: The mapping a department starts with (the headers of its usual export).
DEFAULT_COLUMNS: dict[str, dict[str, str]] = {
    department: {
        **{name: spec[0] for name, spec in KEY_FIELDS.items()},
        **{name: spec[0] for name, spec in VALUE_FIELDS[department].items()},
    }
    for department in DEPARTMENTS
}

#: Why a row matched no household (stored with the row, shown with its Excel row).
PROBLEMS: dict[str, tuple[str, str]] = {
    "not_in_roster": ("花名册中没有此人", "not in the roster"),
    "bad_id": ("证件号码有误", "the ID number is not valid"),
    "other_county": ("不在本次导入的范围内（外县）", "outside the area of this import"),
    "duplicate_row": ("与前面一行是同一人", "the same person as an earlier row"),
}

#: This module's own reason codes (those of ``compare_with_departments`` are listed in docs).
REASONS: dict[str, tuple[str, str]] = {
    "department_not_in_roster": (
        "部门名单上有此人，但花名册中没有",
        "on a department list but not in the roster",
    ),
    "department_reports_deceased": (
        "部门数据显示该成员已死亡，请核实",
        "a department reports this member deceased; please verify",
    ),
    "department_house_unsafe": (
        "住建部门鉴定为危房（C/D级），调查记录为安全（A/B级），请核实",
        "the housing department grades the house C/D, the survey recorded A/B; please verify",
    ),
    "department_medical_out_of_pocket_high": (
        "医保个人自付金额超过监测标准，该户尚未纳入监测，请入户核实",
        "medical out-of-pocket above the threshold for a household not monitored; please visit",
    ),
}

#: Rows looked at for the header before giving up (title rows are a handful).
HEADER_SEARCH_ROWS = 50
#: The largest department file accepted (100,000 rows of a list are ~10 MB).
MAX_FILE_BYTES = 64 * 1024 * 1024
_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_SEALING_PURPOSE = "department_rows"
_DECEASED = ("死亡", "已故", "注销（死亡）")
_NOT_INSURED = ("未参保", "停保", "终止", "退保", "中断", "未缴费", "死亡")
_NOT_IN_SCHOOL = ("辍学", "失学", "离校", "退学", "休学", "毕业", "死亡")


def default_task_sink(ctx: ServiceContext, actor: Actor) -> TaskSink:
    """The one place the department lists meet the task service: its ``open_tasks`` bound to
    the importer (the tasks join the import's write transaction, so a round and its tasks
    commit together or not at all).

    A person on a list whom no household has, in a village the row names, is a village-level
    signal (``subject`` set, no household): a task of that village, whose team finds out who
    the person is (docs/tasks.md)."""
    return tasks.task_sink(ctx, actor)


# --- mappings -------------------------------------------------------------------------------------


def _check_department(department: str) -> str:
    if department not in DEPARTMENTS:
        raise ValidationFailed(
            en=f"department must be one of {', '.join(DEPARTMENTS)}",
            zh="部门应为：" + "、".join(f"{zh}（{key}）" for key, (zh, _) in DEPARTMENTS.items()),
            code="department_unknown",
            details={"fields": {"department": [f"one of {', '.join(DEPARTMENTS)}"]}},
        )
    return department


def _check_area(actor_area: str, area: str) -> str:
    area = (area or "").strip()
    if not (area.isascii() and area.isdigit() and len(area) in (6, 9, 12)):
        raise ValidationFailed(
            en="the area is a 6-, 9- or 12-digit code prefix",
            zh="导入范围应为6位（县）、9位（乡镇）或12位（村）行政区划代码",
            code="department_import_invalid",
            details={"fields": {"area": ["6, 9 or 12 digits"]}},
        )
    if not area.startswith(actor_area):
        raise Forbidden(
            en=f"{area} is outside your area {actor_area}",
            zh=f"{area} 不在您的管辖范围 {actor_area} 内",
            code="outside_area",
        )
    return area


def field_labels(department: str) -> dict[str, tuple[str, str]]:
    """Every field a mapping of ``department`` may name: field → (label zh, label en)."""
    _check_department(department)
    specs = {**KEY_FIELDS, **VALUE_FIELDS[department]}
    return {name: (spec[1], spec[2]) for name, spec in specs.items()}


def _checked_columns(department: str, columns: Mapping[str, Any]) -> dict[str, str]:
    known = field_labels(department)
    errors: dict[str, list[str]] = {}
    out: dict[str, str] = {}
    for name, header in columns.items():
        if name not in known:
            errors[name] = ["unknown field"]
            continue
        text = unicodedata.normalize("NFKC", str(header or "")).strip()
        if len(text) > 60:
            errors[name] = ["at most 60 characters"]
        elif text:
            out[name] = text
    for name in REQUIRED_FIELDS:
        if name not in out:
            errors.setdefault(name, []).append("required")
    seen: dict[str, str] = {}
    for name, header in out.items():
        if header in seen:
            errors.setdefault(name, []).append(f"the same header as {seen[header]}")
        seen.setdefault(header, name)
    if errors:
        raise ValidationFailed(
            en="the column mapping needs the ID number and name headers, each header once",
            zh="列对应关系有误：必须填写证件号码和姓名的表头，且每个表头只能对应一项",
            code="department_mapping_invalid",
            details={"fields": errors},
        )
    return out


@dataclass(frozen=True)
class ColumnMapping:
    """The mapping an import of one department into one area uses, and whether it was saved."""

    area: str
    department: str
    columns: dict[str, str]
    saved: bool


def get_mapping(principal: Principal, area: str, department: str) -> ColumnMapping:
    """The saved mapping of ``department`` for ``area``, or its default (``saved=False``)."""
    _check_department(department)
    area = _check_area(principal.area_prefix, area)
    try:
        saved = store.get_mapping(area, department)
    finally:
        end_read()
    if saved is not None:
        return ColumnMapping(area, department, saved, True)
    return ColumnMapping(area, department, dict(DEFAULT_COLUMNS[department]), False)


def save_mapping(
    actor: Actor, area: str, department: str, columns: Mapping[str, Any]
) -> ColumnMapping:
    """Save the mapping of ``department`` for ``area`` (inside the actor's area); audited.

    Raises :class:`ValidationFailed` (``department_mapping_invalid``, ``department_unknown``)
    and :class:`Forbidden` outside the actor's area.
    """
    _check_department(department)
    area = _check_area(actor.area_prefix, area)
    checked = _checked_columns(department, columns)
    with writing():
        store.save_mapping(area, department, checked, by=actor.name)
        actor.audit(
            "department_mapping.save",
            target_type="department",
            target_id=department,
            area_code=area,
            details={"columns": checked},
        )
    return ColumnMapping(area, department, checked, True)


# --- reading a file ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DepartmentRow:
    """One person row of a department file: Excel row, every mapped cell as text, and the
    ID's problem when the cell held a number whose digits are lost."""

    row: int
    cells: dict[str, str]
    id_error: IdNumberError | None = None


def read_department_file(
    content: bytes,
    columns: Mapping[str, str],
    *,
    optional: Iterable[str] = (),
    found: dict[str, str] | None = None,
) -> Iterator[DepartmentRow]:
    """The person rows of a department workbook (first sheet), read with ``columns``.

    The header is the first of the first :data:`HEADER_SEARCH_ROWS` rows naming every mapped
    header but those of the ``optional`` fields (rows before it are titles); ``found``, when
    given, is filled with the fields whose header the file has. Every cell comes back as text; an ID cell holding a
    number is checked with ``forms.identity`` and, when its digits are lost, carries the
    "retype as text" error. Empty rows are skipped.

    Raises :class:`ValidationFailed` (``department_file_unreadable``; ``department_header_missing``
    with ``details.missing`` headers and ``details.row``, the row that came closest).
    """
    # calamine (Rust) reads a 100,000-row list in seconds; openpyxl's reader took over a minute.
    try:
        book = CalamineWorkbook.from_filelike(io.BytesIO(content))
        sheet = book.get_sheet_by_index(0)
        # calamine's range starts at the first used cell: count Excel rows from there.
        first_row = (sheet.start or (0, 0))[0] + 1
        rows = sheet.iter_rows()
    except Exception as exc:  # calamine raises its own errors for a file that is not a workbook
        raise ValidationFailed(
            en=f"the file is not an Excel workbook (.xlsx, .xls): {exc}",
            zh="文件不是 Excel 工作簿（.xlsx/.xls），无法读取",
            code="department_file_unreadable",
        ) from None
    try:
        yield from _rows_of(rows, first_row, columns, frozenset(optional), found)
    finally:
        book.close()


def _rows_of(
    rows: Iterable[list[Any]],
    first_row: int,
    columns: Mapping[str, str],
    optional: frozenset[str],
    found_columns: dict[str, str] | None,
) -> Iterator[DepartmentRow]:
    wanted = {header: name for name, header in columns.items()}
    needed = {header for header, name in wanted.items() if name not in optional}
    positions: dict[str, int] | None = None
    best: tuple[int, int, set[str]] = (0, 0, set())  # (found, row, headers found)
    for number, values in enumerate(rows, start=first_row):
        if positions is None:
            headers = [header_text(v) for v in values]
            found = {h for h in headers if h in wanted}
            if needed <= found:
                positions = {wanted[h]: headers.index(h) for h in found}
                if found_columns is not None:
                    found_columns.update({wanted[h]: h for h in found})
                continue
            if len(found) > best[0]:
                best = (len(found), number, found)
            if number - first_row + 1 >= HEADER_SEARCH_ROWS:
                break
            continue
        if not any(v is not None and v != "" and cell_text(v) != "" for v in values):
            continue
        cells: dict[str, str] = {}
        id_error = None
        for name, index in positions.items():
            raw = values[index] if index < len(values) else None
            if name == "id_number" and isinstance(raw, int | float) and not isinstance(raw, bool):
                try:
                    parse_id_number(raw)
                except IdNumberError as exc:
                    id_error = exc
            cells[name] = cell_text(raw)
        yield DepartmentRow(number, cells, id_error)
    if positions is None:
        missing = [h for h in wanted if h in needed and h not in best[2]]
        where = f"第{best[1]}行最接近表头，" if best[1] else ""
        raise ValidationFailed(
            en=f"the file has no header row with {', '.join(missing)} "
            + (f"(row {best[1]} came closest)" if best[1] else "")
            + "; fix the file or the column mapping",
            zh=f"未找到表头行：{where}缺少列“" + "”“".join(missing) + "”，请修改文件或列对应关系",
            code="department_header_missing",
            details={"missing": missing, "row": best[1] or None},
        )


# --- the roster index -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RosterPerson:
    """A member of a household in the roster, as the matching finds them."""

    village_code: str
    household_no: str
    id_number: str  # 18 characters, normalised
    name: str


@dataclass
class RosterIndex:
    """The newest roster of every household of an area, indexed for matching."""

    by_id: dict[str, RosterPerson] = field(default_factory=dict)
    # (village, name, birth) → the person; None when two people share the key (no fallback).
    by_name_birth: dict[tuple[str, str, str], RosterPerson | None] = field(default_factory=dict)


def _members(data: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    rows = data.get("members")
    if isinstance(rows, Mapping):
        rows = list(rows.values())
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, Mapping):
            yield row


def _parse_id(value: Any) -> IdInfo | None:
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    try:
        return parse_id_number(value)
    except IdNumberError:
        return None


def _roster_index(area: str) -> RosterIndex:
    index = RosterIndex()
    for village, household, _, data in store.latest_records(area, [ROSTER]):
        for member in _members(data):
            info = _parse_id(member.get("id_number"))
            if info is None:
                continue
            person = RosterPerson(
                village, household, info.resident_number, str(member.get("name") or "").strip()
            )
            index.by_id.setdefault(person.id_number, person)
            key = (village, person.name, info.birth_date.isoformat())
            index.by_name_birth[key] = None if key in index.by_name_birth else person
    return index


# --- matching ---------------------------------------------------------------------------------------


@dataclass
class _Matched:
    """A row after matching: the person found (if any), how, or why not."""

    row: DepartmentRow
    number: str | None  # the normalised resident number of the row's ID, if valid
    person: RosterPerson | None
    matched_by: str
    problem: str
    village: str  # the village the row belongs to, "" when unknown or outside the area
    detail: dict[str, str]


_DATE_PATTERNS = (
    re.compile(r"^(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?"),
    re.compile(r"^(\d{4})(\d{2})(\d{2})$"),
)


def _birth_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).strip()
    for pattern in _DATE_PATTERNS:
        found = pattern.match(text)
        if found:
            try:
                return date(*(int(g) for g in found.groups())).isoformat()
            except ValueError:
                return ""
    return ""


@dataclass(frozen=True)
class VillageFinder:
    """Tells a row's village when it has no village code: from its address, by the names the
    county gave its villages (the 区划名称 page), or — an import into one village — that
    village. A row it cannot place stays on the unmatched list only."""

    area: str
    names: Mapping[str, str]  # 12-digit village code → name, under the area

    @classmethod
    def of(cls, area: str, names: Mapping[str, str]) -> VillageFinder:
        """The finder for an import into ``area`` (``names``: every named code under it)."""
        return cls(area, {c: n for c, n in names.items() if len(c) == 12 and n.strip()})

    def village_of(self, address: str) -> str:
        """The village the address names ("" when none or more than one fits)."""
        if len(self.area) == 12:
            return self.area
        text = unicodedata.normalize("NFKC", address or "").strip()
        if not text:
            return ""
        hits = [code for code, name in self.names.items() if name.strip() in text]
        if len(hits) > 1:
            # 新村 inside 新村一组 … the longest name that fits wins, if only one is that long.
            longest = max(len(self.names[c].strip()) for c in hits)
            hits = [c for c in hits if len(self.names[c].strip()) == longest]
        return hits[0] if len(hits) == 1 else ""


def _match(
    row: DepartmentRow,
    area: str,
    index: RosterIndex,
    seen: dict[str, int],
    villages: VillageFinder | None = None,
) -> _Matched:
    cells = row.cells
    village = ""
    village_text = cells.get("village_code", "")
    outside = False
    if village_text:
        try:
            code = parse_village_code(village_text).code
        except VillageCodeError:
            code = ""
        if code and code.startswith(area):
            village = code
        elif code:
            outside = True
    if not village and not outside and villages is not None:
        village = villages.village_of(cells.get("address", ""))
    info: IdInfo | None = None
    id_problem: dict[str, str] = {}
    error = row.id_error
    if error is None:
        try:
            info = parse_id_number(cells.get("id_number", ""))
        except IdNumberError as exc:
            error = exc
    if error is not None:
        id_problem = {
            "id_error": error.code,
            "id_error_zh": error.message_zh,
            "id_error_en": error.message_en,
        }
    number = info.resident_number if info else None
    if number is not None:
        if number in seen:
            return _Matched(
                row, number, None, "", "duplicate_row", village, {"first_row": str(seen[number])}
            )
        seen[number] = row.row
        person = index.by_id.get(number)
        if person is not None:
            return _Matched(row, number, person, "id_number", "", person.village_code, {})
    birth = info.birth_date.isoformat() if info else _birth_text(cells.get("birth_date", ""))
    name = unicodedata.normalize("NFKC", cells.get("name", "")).strip()
    if village and name and birth:
        person = index.by_name_birth.get((village, name, birth))
        if person is not None:
            return _Matched(row, number, person, "name_birth_village", "", village, {})
    if outside:
        return _Matched(row, number, None, "", "other_county", "", {"village_code": village_text})
    if number is None:
        return _Matched(row, None, None, "", "bad_id", village, id_problem)
    return _Matched(row, number, None, "", "not_in_roster", village, {})


# --- cross-checks -------------------------------------------------------------------------------------


def _reason(code: str, department: str, zh: str, en: str, /, **details: Any) -> TaskReason:
    return TaskReason(code, f"dept:{department}", zh, en, details)


def _contains(text: str, words: Iterable[str]) -> bool:
    return any(word in text for word in words)


def _amount(text: str) -> float:
    try:
        return float(unicodedata.normalize("NFKC", text).replace(",", "").strip() or 0)
    except ValueError:
        return 0.0


def _lists_for(department: str, rows: list[_Matched]) -> DepartmentLists:
    """The household's rows as ``forms.household.DepartmentLists`` (keyed by the roster ID)."""
    keyed = [(m.person.id_number, m.row.cells) for m in rows if m.person is not None]
    if department == "medical_insurance":
        return DepartmentLists(
            insured={
                key: "employee" if "职工" in c.get("scheme", "") else "resident"
                for key, c in keyed
                if not _contains(c.get("status", ""), _NOT_INSURED)
            }
        )
    if department == "education":
        return DepartmentLists(
            enrolled={
                key: c.get("school") or c.get("status") or "在校"
                for key, c in keyed
                if not _contains(c.get("status", ""), _NOT_IN_SCHOOL)
            }
        )
    if department == "disability":
        return DepartmentLists(
            disability_cards={key: c.get("card_no") or "持证" for key, c in keyed}
        )
    if department == "civil_affairs":
        return DepartmentLists(
            assistance={
                key: kind
                for key, c in keyed
                for kind in ("低保", "特困")
                if kind in c.get("assistance", "")
            }
        )
    return DepartmentLists()


def _monitored(record: Mapping[str, Any] | None) -> bool:
    if not record:
        return False
    return record.get("category") not in (None, "", "无") and record.get("risk_removed") is not True


def _household_reasons(
    department: str,
    key: tuple[str, str],
    rows: list[_Matched],
    records: Mapping[str, Mapping[str, Any] | None],
    *,
    config: MonitoringConfig,
    year: int,
    today: date,
    where: dict[str, Any],
) -> list[TaskReason]:
    reasons: list[TaskReason] = []
    issues = compare_with_departments(records, _lists_for(department, rows), today=today)
    for issue in issues:
        if issue.check_id == "department_appraisal_differs":
            continue  # 住建 grades are judged by department_house_unsafe below
        reasons.append(
            TaskReason(
                str(issue.check_id),
                f"dept:{department}",
                issue.message.to_dict()["zh"],
                issue.message.to_dict()["en"],
                {**where, "form_id": issue.form_id, "path": issue.path},
            )
        )
    for m in rows:
        if _contains(m.row.cells.get("status", ""), _DECEASED) and m.person is not None:
            en = REASONS["department_reports_deceased"][1]
            reasons.append(
                _reason(
                    "department_reports_deceased",
                    department,
                    f"{DEPARTMENTS[department][0]}数据显示{m.person.name}已死亡，请核实",
                    en,
                    **where,
                    excel_row=m.row.row,
                    name=m.person.name,
                    id_number=mask(m.person.id_number),
                )
            )
    if department == "housing":
        survey = (records.get(HOUSING) or {}).get("appraisal_grade")
        grades = {
            g
            for m in rows
            for g in [unicodedata.normalize("NFKC", m.row.cells.get("grade", "")).strip().upper()]
            if g
        }
        unsafe = sorted(grades & {"C", "D"})
        # The appraisal export lists the houses not known safe (no record, 未鉴定, C, D): a
        # C/D grade for one the survey never graded is a 危房 the team has not seen yet, as
        # much a finding as one the survey has as A/B. A survey C/D already knows it.
        if unsafe and survey not in ("C", "D", "无房"):
            recorded = f"调查记录为{survey}级" if survey in ("A", "B") else "调查尚未鉴定"
            recorded_en = (
                f"the survey recorded {survey}"
                if survey in ("A", "B")
                else "the survey has no grade"
            )
            reasons.append(
                _reason(
                    "department_house_unsafe",
                    department,
                    f"住建部门鉴定为{unsafe[-1]}级危房，{recorded}，请核实",
                    f"the housing department grades the house {unsafe[-1]}, {recorded_en}; "
                    "please verify",
                    **where,
                    department_grade=unsafe[-1],
                    survey_grade=survey or "",
                )
            )
    if department == "medical_insurance":
        threshold = config.medical_out_of_pocket_threshold(key[0], year)
        total = sum(_amount(m.row.cells.get("out_of_pocket", "")) for m in rows)
        if threshold is not None and total > threshold and not _monitored(records.get(MONITORING)):
            reasons.append(
                _reason(
                    "department_medical_out_of_pocket_high",
                    department,
                    f"医保个人自付合计{total:.0f}元，超过{threshold:.0f}元，该户尚未纳入监测，请入户核实",
                    f"medical out-of-pocket {total:.0f} yuan is above {threshold:.0f} yuan for a "
                    "household not monitored; please visit",
                    **where,
                    out_of_pocket=round(total, 2),
                    threshold=threshold,
                )
            )
    return reasons


#: Lists that name everyone who has the thing (insurance, enrolment): absence is a finding.
COVERAGE_LISTS = frozenset({"medical_insurance", "education"})
#: Which survey records each department's comparison reads besides the roster.
_FORMS_FOR: dict[str, tuple[str, ...]] = {
    "medical_insurance": (INSURANCE, MONITORING),
    "education": (EDUCATION,),
    "housing": (HOUSING,),
}


def _signals(
    department: str,
    area: str,
    matched: list[_Matched],
    *,
    config: MonitoringConfig,
    year: int,
    today: date,
    where: dict[str, Any],
) -> list[HouseholdSignal]:
    by_household: dict[tuple[str, str], list[_Matched]] = {}
    not_listed: dict[str, list[_Matched]] = {}
    for m in matched:
        if m.person is not None:
            by_household.setdefault((m.person.village_code, m.person.household_no), []).append(m)
        elif m.problem == "not_in_roster" and m.village:
            not_listed.setdefault(m.village, []).append(m)
    # A coverage list (everyone insured, every pupil enrolled) speaks of the households it
    # leaves out too: each household of the area is compared; other lists only of those listed.
    # The records stream in household order and each household is judged and dropped, so
    # memory holds one household's records, not the county's.
    everyone = department in COVERAGE_LISTS
    forms = (ROSTER, *_FORMS_FOR.get(department, ()))
    signals: list[HouseholdSignal] = []
    for key, group in groupby(store.latest_records(area, forms), key=itemgetter(0, 1)):
        rows = by_household.get(key)
        if rows is None and not everyone:
            continue
        records = {form_id: data for _, _, form_id, data in group}
        if ROSTER not in records:
            continue  # survey records of a household the roster does not have
        reasons = _household_reasons(
            department,
            key,
            rows or [],
            records,
            config=config,
            year=year,
            today=today,
            where=where,
        )
        if reasons:
            signals.append(HouseholdSignal(HouseholdKey(*key), tuple(reasons)))
    zh_dept = DEPARTMENTS[department][0]
    for village in sorted(not_listed):
        # No household to visit: a village-level task per person, whose team finds out
        # whether the person lives here (add to the roster), moved, or is not ours.
        for m in not_listed[village]:
            name = m.row.cells.get("name", "")
            masked = mask(m.number) if m.number else ""
            reason = _reason(
                "department_not_in_roster",
                department,
                f"{zh_dept}名单第{m.row.row}行的{name}（{masked}）不在本村花名册中，"
                "请核实名单人员是否为本村人员",
                f"row {m.row.row} of the {DEPARTMENTS[department][1]} list is not in the "
                "village's roster; please verify whether this person belongs to the village",
                **where,
                excel_row=m.row.row,
                name=name,
                id_number=masked,
            )
            signals.append(
                HouseholdSignal(
                    HouseholdKey(village, ""), (reason,), subject=person_subject(masked, name)
                )
            )
    return signals


def person_subject(masked_id: str, name: str) -> str:
    """The key of a village-level task's person: a digest of what its reason already shows
    (masked ID and name), so it reveals nothing the task does not, and the same person on next
    month's list — of any department — finds the same open task."""
    digest = hashlib.sha256(f"{masked_id}|{name}".encode()).hexdigest()[:40]
    return f"person:{digest}"


def _signal_document(
    sealer: Sealer, round_id: int, signals: list[HouseholdSignal]
) -> dict[str, Any]:
    """The round's signals as stored: sealed (reasons name people and medical amounts), with
    each signal's village in clear so a township's share can be counted without opening them."""
    households = [
        {
            "village_code": s.household.village_code,
            "household_no": s.household.household_no,
            "subject": s.subject,
            "reasons": [r.to_dict() for r in s.reasons],
        }
        for s in signals
    ]
    key_id, sealed = sealer.seal(orjson.dumps(households), f"{round_id}:signals".encode())
    return {
        "villages": [s.household.village_code for s in signals],
        "key_id": key_id,
        "sealed": b64encode(sealed),
    }


def _signals_from(
    sealer: Sealer, round_id: int, document: Mapping[str, Any]
) -> list[HouseholdSignal]:
    if not document.get("sealed"):
        return []
    households = orjson.loads(
        sealer.open(
            document["key_id"], b64decode(document["sealed"]), f"{round_id}:signals".encode()
        )
    )
    return [
        HouseholdSignal(
            HouseholdKey(h["village_code"], h["household_no"]),
            tuple(
                TaskReason(
                    r["code"],
                    r["source"],
                    r["message"]["zh"],
                    r["message"]["en"],
                    r.get("details") or {},
                )
                for r in h["reasons"]
            ),
            subject=h.get("subject") or "",
        )
        for h in households
    ]


# --- the import -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult:
    """What an import did: the round, whether it was this very file again, the counts, how
    many households got signals and whether the task service took them."""

    round_id: int
    department: str
    period: str
    as_of: date
    already_imported: bool
    counts: dict[str, Any]
    households_signalled: int
    signals_delivered: bool
    mapping: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the API and the CLI print it)."""
        return {
            "round_id": self.round_id,
            "department": self.department,
            "period": self.period,
            "as_of": self.as_of.isoformat(),
            "already_imported": self.already_imported,
            "counts": self.counts,
            "households_signalled": self.households_signalled,
            "signals_delivered": self.signals_delivered,
            "mapping": self.mapping,
        }


def _check_period(period: str, as_of: date | str) -> tuple[str, date]:
    period = (period or "").strip()
    errors: dict[str, list[str]] = {}
    if not _PERIOD.match(period):
        errors["period"] = ["YYYY-MM, e.g. 2026-11"]
    if isinstance(as_of, str):
        try:
            as_of = date.fromisoformat(as_of.strip())
        except ValueError:
            errors["as_of"] = ["a date YYYY-MM-DD"]
    if errors:
        raise ValidationFailed(
            en="period is YYYY-MM and as_of a date YYYY-MM-DD",
            zh="期别应为“年-月”（如2026-11），截至日期应为“年-月-日”",
            code="department_import_invalid",
            details={"fields": errors},
        )
    return period, as_of  # type: ignore[return-value]


def _deliver(sink: TaskSink, signals: list[HouseholdSignal], origin: str) -> bool:
    """Hand ``signals`` to the sink inside the caller's write (a sink that fails fails the
    import: the round and its tasks commit together). True once handed over."""
    sink(signals, origin=origin)
    return True


def import_department_list(
    ctx: ServiceContext,
    actor: Actor,
    content: bytes,
    *,
    department: str,
    period: str,
    as_of: date | str,
    area: str,
    sink: TaskSink | None = None,
    file_name: str = "",
    columns: Mapping[str, Any] | None = None,
    config: MonitoringConfig | None = None,
    today: date | None = None,
) -> ImportResult:
    """Import one department file into ``area`` as a round; audited (see the module docstring).

    ``columns`` (field → header), when given, is saved as the department's mapping for the
    area first; otherwise the saved mapping (or the department's default, then saved) is used.
    The same file (same SHA-256) of the same department into the same area again changes
    nothing and says so (``already_imported``); a round saved before its signals were handed
    over (``signals_delivered`` false: rounds from before the task service) hands them over
    then. One write transaction: the round, its sealed rows, the audit entry and the sink's
    tasks commit together.

    Raises :class:`ValidationFailed` (``department_unknown``, ``department_import_invalid``,
    ``department_mapping_invalid``, ``department_file_unreadable``,
    ``department_header_missing``) and :class:`Forbidden` outside the actor's area.
    """
    sink = sink or default_task_sink(ctx, actor)
    _check_department(department)
    area = _check_area(actor.area_prefix, area)
    period, as_of_date = _check_period(period, as_of)
    if len(content) > MAX_FILE_BYTES:
        raise ValidationFailed(
            en=f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB",
            zh=f"文件超过{MAX_FILE_BYTES // (1024 * 1024)} MB",
            code="department_file_unreadable",
        )
    checked = _checked_columns(department, columns) if columns is not None else None
    digest = hashlib.sha256(content).hexdigest()
    sealer = Sealer(ctx.keys, _SEALING_PURPOSE)
    config = config or monitoring_config()
    today = today or as_of_date
    with writing():
        existing = store.find_round(area, department, digest)
        if existing is not None:
            delivered = existing.signals_delivered
            signals = _signals_from(sealer, existing.id, existing.signals)
            if not delivered and _deliver(sink, signals, f"department_round:{existing.id}"):
                store.mark_delivered(existing.id)
                delivered = True
            actor.audit(
                "department_list.import_again",
                target_type="department_round",
                target_id=str(existing.id),
                area_code=area,
                details={"department": department, "sha256": digest},
            )
            return ImportResult(
                existing.id,
                department,
                existing.period,
                existing.as_of,
                True,
                existing.counts,
                len(signals),
                delivered,
                store.get_mapping(area, department) or DEFAULT_COLUMNS[department],
            )
        if checked is not None:
            store.save_mapping(area, department, checked, by=actor.name)
        mapping = checked or store.get_mapping(area, department)
        # The first import of a department reads its default headers, those it finds saved as
        # the mapping; from then on every mapped header is required.
        optional: frozenset[str] = frozenset()
        if mapping is None:
            mapping = dict(DEFAULT_COLUMNS[department])
            optional = frozenset(mapping) - set(REQUIRED_FIELDS)
        found_columns: dict[str, str] = {}
        index = _roster_index(area)
        villages = VillageFinder.of(area, area_store.names_under(area))
        round_id = store.add_round(
            area=area,
            department=department,
            period=period,
            as_of=as_of_date,
            file_sha256=digest,
            file_name=file_name,
            created_by=actor.name,
        )
        seen: dict[str, int] = {}
        matched: list[_Matched] = []
        key_id = sealer.current_key_id()
        kept = {"name", *VALUE_FIELDS[department]}

        def stored_rows() -> Iterator[dict[str, Any]]:
            for row in read_department_file(
                content, mapping, optional=optional, found=found_columns
            ):
                m = _match(row, area, index, seen, villages)
                payload = orjson.dumps({"cells": row.cells, "number": m.number, **m.detail})
                _, sealed = sealer.seal(payload, f"{round_id}:{row.row}".encode(), key_id=key_id)
                # Only what the cross-checks read stays in memory: a 100,000-row list is
                # matched in one pass, and its ID, birth and village cells are sealed now.
                m.row = DepartmentRow(
                    row.row, {k: v for k in kept if (v := row.cells.get(k))}, row.id_error
                )
                matched.append(m)
                yield {
                    "excel_row": row.row,
                    "village_code": m.village,
                    "household_no": m.person.household_no if m.person else "",
                    "matched_by": m.matched_by,
                    "problem": m.problem,
                    "key_id": key_id,
                    "sealed": sealed,
                }

        total = store.add_rows(round_id, stored_rows())
        # The roster index is done with: free it before the cross-checks.
        index.by_id.clear()
        index.by_name_birth.clear()
        seen.clear()
        if optional:
            mapping = found_columns
            store.save_mapping(area, department, mapping, by=actor.name)
        where = {"department": department, "period": period, "round_id": round_id}
        signals = _signals(
            department,
            area,
            matched,
            config=config,
            year=int(period[:4]),
            today=today,
            where=where,
        )
        problems: dict[str, int] = {}
        for m in matched:
            if m.problem:
                problems[m.problem] = problems.get(m.problem, 0) + 1
        counts = {
            "rows": total,
            "matched": sum(1 for m in matched if m.person is not None),
            "matched_by_name_birth_village": sum(
                1 for m in matched if m.matched_by == "name_birth_village"
            ),
            "unmatched": sum(problems.values()),
            "problems": problems,
            "households": len(
                {(m.person.village_code, m.person.household_no) for m in matched if m.person}
            ),
        }
        matched.clear()  # the rows' cells are sealed now; nothing keeps them in clear
        delivered = _deliver(sink, signals, f"department_round:{round_id}")
        store.finish_round(
            round_id,
            counts=counts,
            signals=_signal_document(sealer, round_id, signals),
            delivered=delivered,
        )
        actor.audit(
            "department_list.import",
            target_type="department_round",
            target_id=str(round_id),
            area_code=area,
            details={
                "department": department,
                "period": period,
                "sha256": digest,
                "rows": total,
                "unmatched": counts["unmatched"],
                "households_signalled": len(signals),
            },
        )
    return ImportResult(
        round_id,
        department,
        period,
        as_of_date,
        False,
        counts,
        len(signals),
        delivered,
        dict(mapping),
    )


# --- reading rounds back --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundSummary:
    """A round as a principal sees it: counts over the principal's part of the area only."""

    id: int
    area: str
    department: str
    period: str
    as_of: date
    file_name: str
    created_at: Any
    created_by: str
    counts: dict[str, Any]
    signals_delivered: bool
    households_signalled: int

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "id": self.id,
            "area": self.area,
            "department": self.department,
            "department_name": {
                "zh": DEPARTMENTS[self.department][0],
                "en": DEPARTMENTS[self.department][1],
            },
            "period": self.period,
            "as_of": self.as_of.isoformat(),
            "file_name": self.file_name,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "created_by": self.created_by,
            "counts": self.counts,
            "signals_delivered": self.signals_delivered,
            "households_signalled": self.households_signalled,
        }


def _covers(principal: Principal, round_area: str) -> bool:
    return round_area.startswith(principal.area_prefix)


def _summary(principal: Principal, found: store.RoundView) -> RoundSummary:
    villages = list(found.signals.get("villages", [])) if found.signals else []
    if _covers(principal, found.area):
        counts = dict(found.counts)
        signalled = len(villages)
    else:
        # A reviewer of one township sees the county's round counted over its townships only.
        by = store.round_counts(found.id, principal.area_prefix, include_unlocated=False)
        problems = {k: v for k, v in by.items() if k != "matched"}
        counts = {
            "rows": sum(by.values()),
            "matched": by.get("matched", 0),
            "unmatched": sum(problems.values()),
            "problems": problems,
        }
        signalled = sum(1 for v in villages if v.startswith(principal.area_prefix))
    return RoundSummary(
        found.id,
        found.area,
        found.department,
        found.period,
        found.as_of,
        found.file_name,
        found.created_at,
        found.created_by,
        counts,
        found.signals_delivered,
        signalled,
    )


def list_rounds(principal: Principal, *, department: str | None = None) -> list[RoundSummary]:
    """The rounds a principal may see (imported into its area or one covering it), newest
    first, each counted over the principal's area."""
    if department:
        _check_department(department)
    # A read: no write lock, so a page of rounds never queues behind an import.
    try:
        return [
            _summary(principal, found)
            for found in store.list_rounds(principal.area_prefix, department=department)
        ]
    finally:
        end_read()


def _visible_round(principal: Principal, round_id: int) -> store.RoundView:
    found = store.get_round(round_id)
    if found is None or not (
        found.area.startswith(principal.area_prefix) or principal.area_prefix.startswith(found.area)
    ):
        raise NotFound(
            en=f"no department round {round_id} in your area",
            zh=f"您的管辖范围内没有第{round_id}批部门名单",
            code="department_round_not_found",
        )
    return found


def get_round(principal: Principal, round_id: int) -> RoundSummary:
    """One round as :func:`list_rounds` shows it. Raises :class:`NotFound`."""
    try:
        return _summary(principal, _visible_round(principal, round_id))
    finally:
        end_read()


@dataclass(frozen=True)
class ShownRow:
    """A department row as pages and the API show it: masked ID, no department values."""

    excel_row: int
    village_code: str
    household_no: str
    matched_by: str
    problem: str
    message: dict[str, str]
    name: str
    id_number: str  # masked

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "excel_row": self.excel_row,
            "village_code": self.village_code,
            "household_no": self.household_no,
            "matched_by": self.matched_by,
            "problem": self.problem,
            "message": self.message,
            "name": self.name,
            "id_number": self.id_number,
        }


def _problem_message(problem: str, detail: Mapping[str, Any], village: str = "") -> dict[str, str]:
    zh, en = PROBLEMS.get(problem, ("", ""))
    if problem == "not_in_roster" and village:
        # Kept on the list (never dropped), and said where it went: the village's team.
        zh, en = (
            f"{zh}；已转为村 {village} 的村级核实任务",
            f"{en}; made a village-level task of {village}",
        )
    elif problem == "duplicate_row" and detail.get("first_row"):
        zh, en = (
            f"与第{detail['first_row']}行是同一人",
            f"the same person as row {detail['first_row']}",
        )
    elif problem == "bad_id" and detail.get("id_error"):
        zh = f"{zh}：{detail.get('id_error_zh') or detail['id_error']}"
        en = f"{en}: {detail.get('id_error_en') or detail['id_error']} ({detail['id_error']})"
    return {"zh": zh, "en": en}


def round_rows(
    ctx: ServiceContext,
    principal: Principal,
    actor: Actor,
    round_id: int,
    *,
    unmatched_only: bool = True,
    limit: int = 200,
    offset: int = 0,
) -> tuple[list[ShownRow], int]:
    """A page of a round's rows (unmatched ones by default) inside the principal's area, opened
    from their seal and shown masked; the read is audited. Raises :class:`NotFound`."""
    sealer = Sealer(ctx.keys, _SEALING_PURPOSE)
    limit = max(1, min(limit, 1000))
    with writing():
        found = _visible_round(principal, round_id)
        covers = _covers(principal, found.area)
        area = principal.area_prefix if not covers else found.area
        rows, total = store.rows_of_round(
            round_id,
            area,
            problems_only=unmatched_only,
            include_unlocated=covers,
            limit=limit,
            offset=max(0, offset),
        )
        shown = []
        for row in rows:
            payload = orjson.loads(
                sealer.open(row.key_id, row.sealed, f"{round_id}:{row.excel_row}".encode())
            )
            cells = payload.get("cells", {})
            number = payload.get("number") or cells.get("id_number", "")
            shown.append(
                ShownRow(
                    row.excel_row,
                    row.village_code,
                    row.household_no,
                    row.matched_by,
                    row.problem,
                    _problem_message(row.problem, payload, row.village_code),
                    cells.get("name", ""),
                    mask(number) or "",
                )
            )
        actor.audit(
            "department_rows.read",
            target_type="department_round",
            target_id=str(round_id),
            area_code=principal.area_prefix or found.area,
            details={"rows": len(shown), "unmatched_only": unmatched_only, "offset": offset},
        )
    return shown, total


# --- 住建 the other way round: the households to appraise --------------------------------------------

#: The layout of the appraisal list sent to 住建; its headers are the housing department's
#: default mapping, so the file comes back with the grades filled in and imports as it is.
APPRAISAL_HEADERS: tuple[tuple[str, str], ...] = (
    ("village_code", "行政区划代码"),
    ("household_no", "户编号"),
    ("name", "姓名"),
    ("id_number", "证件号码"),
    ("birth_date", "出生日期"),
    ("survey_grade", "调查记录等级"),
    ("grade", "鉴定等级"),
)
APPRAISAL_TITLE = "待鉴定农户名单（请在“鉴定等级”列填写 A/B/C/D）"
#: Survey grades that need no appraisal: the house is safe by appraisal already.
_APPRAISED_SAFE = frozenset({"A", "B"})


def housing_appraisal_list(principal: Principal, actor: Actor, *, area: str) -> tuple[bytes, int]:
    """An .xlsx of the households of ``area`` whose house is not known safe (no housing record,
    未鉴定, C, D or no house): the head's name and ID (unmasked, for 住建 to find the house —
    so county admins only, audited), the survey's grade, an empty 鉴定等级 column. Returns the
    file and how many households it lists.

    Raises :class:`Forbidden` for anyone but a county admin or outside the admin's area.
    """
    if principal.role != COUNTY_ADMIN:
        raise Forbidden(
            en="only a county admin may export the appraisal list with ID numbers",
            zh="只有县级管理员可以导出含证件号码的待鉴定名单",
            code="unmasked_export_forbidden",
        )
    area = _check_area(principal.area_prefix, area)
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "待鉴定农户"
    sheet.append([APPRAISAL_TITLE])
    sheet.append([header for _, header in APPRAISAL_HEADERS])
    listed = 0
    with writing():
        grades: dict[tuple[str, str], Any] = {
            (village, household): data.get("appraisal_grade")
            for village, household, _, data in store.latest_records(area, [HOUSING])
        }
        for village, household, _, data in store.latest_records(area, [ROSTER]):
            grade = grades.get((village, household))
            if grade in _APPRAISED_SAFE:
                continue
            head = next((m for m in _members(data) if m.get("relation") == "户主"), None)
            info = _parse_id(head.get("id_number")) if head else None
            row = {
                "village_code": village,
                "household_no": household,
                "name": str(head.get("name") or "") if head else "",
                "id_number": info.number if info else str((head or {}).get("id_number") or ""),
                "birth_date": info.birth_date.isoformat() if info else "",
                "survey_grade": grade or "无记录",
                "grade": "",
            }
            sheet.append([row[name] for name, _ in APPRAISAL_HEADERS])
            listed += 1
        actor.audit(
            "housing_appraisal.export",
            target_type="department",
            target_id="housing",
            area_code=area,
            details={"households": listed},
        )
    for column in sheet.iter_cols(min_row=3):
        for cell in column:
            cell.number_format = "@"  # text: Excel must not turn an ID into a number
    out = io.BytesIO()
    book.save(out)
    return out.getvalue(), listed
