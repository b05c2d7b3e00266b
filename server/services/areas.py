"""Area names: what a county calls its townships and villages, so pages read "name (code)".

The registry is one table of code → name, set by a county admin one at a time or as a CSV
table (``code,name`` per line, as county offices keep them in a spreadsheet). A code without a
name is shown as the bare code, so nothing depends on the table being complete.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from server.errors import ValidationFailed
from server.services.access import Actor, Principal
from server.storage import areas as store
from server.storage.areas import NamedArea
from server.storage.database import writing

#: Codes that can carry a name: county (6 digits), township (9), village (12).
NAMED_LENGTHS = (6, 9, 12)
MAX_NAME = 80
#: A CSV larger than any county's village list is a wrong file, not a table.
MAX_ROWS = 20_000
#: First-row headers a spreadsheet export may carry (skipped).
HEADER_WORDS = frozenset({"code", "代码", "区划代码", "地区代码", "编码"})


@dataclass(frozen=True)
class Issue:
    """One problem of an uploaded table, located by row (1-based) and column."""

    row: int
    column: str
    zh: str
    en: str

    def as_dict(self) -> dict[str, Any]:
        """The issue as error details carry it."""
        return {"row": self.row, "column": self.column, "message": {"zh": self.zh, "en": self.en}}


def _code_issue(code: str) -> tuple[str, str] | None:
    if not (code.isascii() and code.isdigit() and len(code) in NAMED_LENGTHS):
        return ("地区代码应为6、9或12位数字", "an area code is 6, 9 or 12 digits")
    return None


def _name_issue(name: str) -> tuple[str, str] | None:
    if not name:
        return ("名称不能为空", "the name is empty")
    if len(name) > MAX_NAME:
        return (f"名称不能超过{MAX_NAME}个字", f"a name has at most {MAX_NAME} characters")
    return None


def label(names: dict[str, str], code: str) -> str:
    """``name（code）`` when the code is named, else the code."""
    name = names.get(code)
    return f"{name}（{code}）" if name else code


def names_under(prefix: str) -> dict[str, str]:
    """Code → name of every named area inside ``prefix`` (one query; a county has a few
    hundred villages, so a page loads its area's names at once rather than one per code)."""
    return store.names_under(prefix)


def list_names(principal: Principal) -> list[NamedArea]:
    """The named areas of the principal's area, by code."""
    return store.list_names(principal.area_prefix)


def set_name(code: str, name: str, *, actor: Actor) -> None:
    """Name ``code`` (an empty ``name`` forgets it); audited.

    Raises :class:`ValidationFailed` (``details.fields`` for ``code`` / ``name``) for a code
    that is not 6, 9 or 12 digits or a name too long, and :class:`server.errors.Forbidden`
    (``outside_area``) for a code outside the actor's area.
    """
    code, name = (code or "").strip(), " ".join((name or "").split())
    fields: dict[str, list[str]] = {}
    if (bad := _code_issue(code)) is not None:
        fields["code"] = [bad[0]]
    if name and (bad := _name_issue(name)) is not None:
        fields["name"] = [bad[0]]
    if fields:
        raise ValidationFailed(
            en="the code or the name is not valid",
            zh="地区代码或名称有误",
            details={"fields": fields},
        )
    actor.require_area(code)
    with writing():
        if name:
            store.set_names({code: name}, updated_by=actor.name)
        elif not store.delete_name(code):
            return
        actor.audit(
            "area_name.set" if name else "area_name.delete",
            target_type="area",
            target_id=code,
            area_code=code,
            details={"name": name} if name else {},
        )


def parse_table(text: str, area_prefix: str = "") -> tuple[dict[str, str], list[Issue]]:
    """Code → name from a ``code,name`` CSV, and every problem found, by row and column.

    A header row (``code``/``代码`` …) is skipped; blank lines are ignored; a code outside
    ``area_prefix`` or named twice with different names is a problem.
    """
    names: dict[str, str] = {}
    first_row: dict[str, int] = {}
    issues: list[Issue] = []
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    for number, row in enumerate(reader, start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if number == 1 and cells[0].lower() in HEADER_WORDS:
            continue
        if number > MAX_ROWS:
            issues.append(Issue(number, "", f"超过{MAX_ROWS}行", f"more than {MAX_ROWS} rows"))
            break
        if len(cells) < 2:
            issues.append(Issue(number, "B", "缺少名称列", "the name column is missing"))
            continue
        code, name = cells[0], " ".join(cells[1].split())
        if (bad := _code_issue(code)) is not None:
            issues.append(Issue(number, "A", *bad))
            continue
        if not code.startswith(area_prefix):
            issues.append(
                Issue(number, "A", f"{code} 不在您的管辖范围内", f"{code} is outside your area")
            )
            continue
        if (bad := _name_issue(name)) is not None:
            issues.append(Issue(number, "B", *bad))
            continue
        if code in names and names[code] != name:
            issues.append(
                Issue(
                    number,
                    "A",
                    f"{code} 在第{first_row[code]}行已有另一个名称",
                    f"{code} already has another name on row {first_row[code]}",
                )
            )
            continue
        names[code] = name
        first_row.setdefault(code, number)
    return names, issues


def _decoded(data: bytes) -> str | None:
    for encoding in ("utf-8", "gb18030"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        # A binary file (an .xlsx given by mistake) decodes as GB18030 but holds NULs.
        return None if "\x00" in text else text
    return None


def import_table(data: bytes, *, actor: Actor) -> int:
    """Load a ``code,name`` CSV (UTF-8, or GB18030 as Chinese Excel saves it): all rows or
    none; audited once. Returns how many codes were named.

    Raises :class:`ValidationFailed` (``area_names_invalid``, ``details.issues`` each with
    row, column and a bilingual message) when any row is wrong or the file is not a table.
    """
    text = _decoded(data)
    if text is None:
        names: dict[str, str] = {}
        issues = [Issue(1, "", "文件不是文本表格（CSV）", "the file is not a CSV text table")]
    else:
        names, issues = parse_table(text, actor.area_prefix)
        if not names and not issues:
            issues = [Issue(1, "", "文件中没有任何一行", "the file holds no rows")]
    if issues:
        raise ValidationFailed(
            en="the area-name table has errors; nothing was imported",
            zh="地区名称表有误，未导入任何一行",
            code="area_names_invalid",
            details={"issues": [i.as_dict() for i in issues]},
        )
    with writing():
        store.set_names(names, updated_by=actor.name)
        actor.audit(
            "area_names.import",
            target_type="area",
            target_id="",
            area_code=actor.area_prefix,
            details={"count": len(names)},
        )
    return len(names)
