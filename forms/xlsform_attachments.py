"""Choice lists from the files attached to an XLSForm (``select_one_from_file villages.csv``).

ODK reads the choices of ``select_one_from_file`` / ``select_multiple_from_file`` from a CSV or
XML file uploaded with the form. Here the admin uploads the same file with the workbook; its
rows become a choice list of the definition, so the tablet needs no file of its own. The files
arrive as bytes (the server upload, the CLI edge): nothing here touches the disk.

CSV: a header row with ``name`` (the value stored) and ``label`` or ``label::<language>``
columns, as ODK's; any other column is a filter column a ``choice_filter`` may read. XML: ODK's
``<root><item><name>…</name><label>…</label>…</item></root>``, each child of an item a column.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from xml.etree import ElementTree

__all__ = [
    "MAX_ATTACHMENT_BYTES",
    "MAX_ATTACHMENT_ROWS",
    "AttachmentError",
    "read_choice_file",
    "read_data_table",
]

#: An attached choices file larger than this is refused (a county's villages fit many times).
MAX_ATTACHMENT_BYTES = 4 * 1024 * 1024
MAX_ATTACHMENT_ROWS = 20_000
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class AttachmentError(Exception):
    """An attached choices file that cannot be read; ``row`` is its 1-based line/item."""

    message: str
    message_zh: str
    row: int | None = None


def read_choice_file(
    filename: str, data: bytes, language_of: Callable[[str], str]
) -> list[dict[str, object]]:
    """The choices of an attached ``.csv`` or ``.xml`` file, as contracts §1 choice entries
    (``{"value", "label", "filters"}``). ``language_of`` turns a header suffix (``English
    (en)``) into a language tag, as the workbook's headers are read; a plain ``label`` is Chinese.

    Raises:
        AttachmentError: too large, not UTF-8, not CSV/XML, no ``name`` column, an empty or
            duplicate name (with its row).
    """
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise AttachmentError(
            f"{filename} is larger than {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB",
            f"{filename} 超过 {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AttachmentError(
            f"{filename} is not UTF-8 text", f"{filename} 不是 UTF-8 文本"
        ) from None
    suffix = filename.rpartition(".")[2].lower()
    if suffix == "csv":
        rows = _csv_rows(filename, text)
    elif suffix == "xml":
        rows = _xml_rows(filename, text)
    else:
        raise AttachmentError(
            f"{filename}: choices come from a .csv or .xml file",
            f"{filename}：选项文件必须是 .csv 或 .xml",
        )
    choices: list[dict[str, object]] = []
    seen: dict[str, int] = {}
    for number, row in rows:
        value = (row.get("name") or "").strip()
        if not value:
            raise AttachmentError(
                f"{filename} row {number}: the choice name is empty",
                f"{filename} 第 {number} 行：选项 name 为空",
                number,
            )
        if value in seen:
            raise AttachmentError(
                f"{filename} row {number}: choice {value!r} already appears at row {seen[value]}",
                f"{filename} 第 {number} 行：选项 {value!r} 已在第 {seen[value]} 行出现",
                number,
            )
        seen[value] = number
        label: dict[str, str] = {}
        filters: dict[str, str] = {}
        for header, cell in row.items():
            cell = (cell or "").strip()
            key, _, lang = header.strip().partition("::")
            if key == "name" or not cell:
                continue
            if key == "label":
                label.setdefault(language_of(lang) if lang else "zh", cell)
            elif _NAME.match(key):
                filters[key.lower()] = cell
        if "zh" not in label:
            label = {"zh": next(iter(label.values()), value), **label}
        choice: dict[str, object] = {"value": value, "label": label}
        if filters:
            choice["filters"] = filters
        choices.append(choice)
    if not choices:
        raise AttachmentError(f"{filename} holds no choices", f"{filename} 中没有选项")
    return choices


def read_data_table(filename: str, data: bytes) -> list[dict[str, str]]:
    """The rows of an attached CSV that ``pulldata('name', …)`` reads (``name.csv``): each row
    a map column → text, empty cells left out.

    Raises:
        AttachmentError: too large, not UTF-8, not a readable CSV with a header row.
    """
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise AttachmentError(
            f"{filename} is larger than {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB",
            f"{filename} 超过 {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AttachmentError(
            f"{filename} is not UTF-8 text", f"{filename} 不是 UTF-8 文本"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader, [])]
        if not any(header):
            raise AttachmentError(
                f"{filename} needs a header row", f"{filename} 第一行必须是列名", 1
            )
        rows = []
        for number, cells in enumerate(reader, start=2):
            if number > MAX_ATTACHMENT_ROWS + 1:
                raise AttachmentError(
                    f"{filename} has more than {MAX_ATTACHMENT_ROWS} rows",
                    f"{filename} 超过 {MAX_ATTACHMENT_ROWS} 行",
                )
            row = {h: c.strip() for h, c in zip(header, cells, strict=False) if h and c.strip()}
            if row:
                rows.append(row)
    except csv.Error as exc:
        raise AttachmentError(
            f"{filename} is not a readable CSV file: {exc}", f"{filename} 不是有效的 CSV 文件"
        ) from None
    return rows


def _csv_rows(filename: str, text: str) -> list[tuple[int, dict[str, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or "name" not in [h.strip() for h in header]:
            raise AttachmentError(
                f"{filename} needs a header row with a name column",
                f"{filename} 第一行必须是列名，且有 name 列",
                1,
            )
        rows = []
        for number, cells in enumerate(reader, start=2):
            if number > MAX_ATTACHMENT_ROWS + 1:
                raise AttachmentError(
                    f"{filename} has more than {MAX_ATTACHMENT_ROWS} rows",
                    f"{filename} 超过 {MAX_ATTACHMENT_ROWS} 行",
                )
            if any(c.strip() for c in cells):
                rows.append((number, dict(zip(header, cells, strict=False))))
    except csv.Error as exc:
        raise AttachmentError(
            f"{filename} is not a readable CSV file: {exc}", f"{filename} 不是有效的 CSV 文件"
        ) from None
    return rows


def _xml_rows(filename: str, text: str) -> list[tuple[int, dict[str, str]]]:
    # Entity declarations are what makes XML expand without bound; ODK's files have none.
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise AttachmentError(
            f"{filename}: XML with a DOCTYPE or entities is not accepted",
            f"{filename}：不接受带 DOCTYPE 或实体声明的 XML",
        )
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise AttachmentError(
            f"{filename} is not readable XML: {exc}", f"{filename} 不是有效的 XML 文件"
        ) from None
    items = root.findall("item") or list(root)
    if len(items) > MAX_ATTACHMENT_ROWS:
        raise AttachmentError(
            f"{filename} has more than {MAX_ATTACHMENT_ROWS} items",
            f"{filename} 超过 {MAX_ATTACHMENT_ROWS} 项",
        )
    return [
        (number, {child.tag: (child.text or "") for child in item})
        for number, item in enumerate(items, start=1)
    ]
