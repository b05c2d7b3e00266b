"""Generated department lists in the layouts departments export (title rows, then a header,
IDs as text), and a small county to match them against: six households of one village, one of
another township, loaded through the bulk ingest path."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import openpyxl
from flask import Flask

from forms.identity import id_check_char
from forms.instruments.samples import sample_household
from server.services.household_load import load_households
from tests.server.sync_device import FAR_VILLAGE, VILLAGE

ROUND = "2026-annual"
COUNTY = VILLAGE[:6]
OTHER_COUNTY_VILLAGE = "530202001201"


def county_households() -> list[dict[str, dict[str, Any]]]:
    """Six households of :data:`VILLAGE` (seeds 1-6) and one of :data:`FAR_VILLAGE` (seed 7)."""
    return [sample_household(seed) for seed in range(1, 7)] + [
        sample_household(7, village_code=FAR_VILLAGE)
    ]


def load_county(app: Flask, households: Sequence[dict[str, dict[str, Any]]]) -> None:
    """Load the households' records (round :data:`ROUND`) through the ingest rules."""
    lines = [
        json.dumps(
            {
                "village_code": h["household_roster"]["village_code"],
                "household_no": h["household_roster"]["household_no"],
                "round": ROUND,
                "records": h,
            },
            ensure_ascii=False,
        )
        for h in households
    ]
    with app.app_context():
        report = load_households(lines)
    assert set(report.statuses) == {"applied"}, report.statuses


def workbook(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, titles: int = 2) -> bytes:
    """An .xlsx with ``titles`` title rows, the header and the rows; text cells stay text."""
    book = openpyxl.Workbook()
    sheet = book.active
    for n in range(titles):
        sheet.append([f"2026年11月 部门数据 导出（标题第{n + 1}行）"])
    sheet.append(list(headers))
    for row in rows:
        sheet.append(list(row))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def full_width(number: str) -> str:
    """``number`` with its first digit typed full-width (as some input methods do)."""
    return chr(ord(number[0]) + 0xFEE0) + number[1:]


def wrong_check(number: str) -> str:
    """``number`` with a wrong check character (a typing error the GB 11643 check catches)."""
    right = id_check_char(number[:17])
    return number[:17] + ("1" if right != "1" else "2")


def valid_id(region: str, birth: str, sequence: int) -> str:
    """A valid 18-character ID of someone born on ``birth`` (YYYYMMDD) registered in ``region``."""
    first17 = f"{region}{birth}{sequence:03d}"
    return first17 + id_check_char(first17)


def birth_of(number: str) -> str:
    """The birth date an ID number says, as YYYY-MM-DD."""
    return f"{number[6:10]}-{number[10:12]}-{number[12:14]}"
