"""XLSForm workbooks for the page tests: a new version of a built-in instrument, a broken one."""

from __future__ import annotations

import io
from pathlib import Path

import openpyxl

XLSX_DIR = Path(__file__).resolve().parents[2] / "forms" / "instruments" / "xlsx"


def housing_form(version: int, *, break_it: bool = False) -> bytes:
    """The built-in housing-safety XLSForm as version ``version``.

    ``break_it`` gives the second question an unknown type, which the importer must locate
    (sheet ``survey``, row 3, column ``type``).
    """
    book = openpyxl.load_workbook(XLSX_DIR / "housing_safety.xlsx")
    book["settings"]["B2"] = str(version)
    if break_it:
        book["survey"]["A3"] = "telepathy"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
