"""Households over survey rounds for the round-over-round and 动态清零 board tests.

Each household is a realistic sample (``forms.instruments.samples``) with the parts a test
needs set by hand: an unsafe house or water supply taken from the named problem cases, and a
monitoring record whose income and rigid expenses are chosen so the change between rounds is
known (net income = wages + 5,000 business + 1,000 transfers − 1,000 costs, four members).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Flask

from forms.instruments.samples import problem_household, sample_household
from server.services import monitoring as monitoring_service
from server.services.access import CLI_ACTOR
from tests.server.survey_data import store_household

VILLAGE_A = "530102001201"
VILLAGE_B = "530102001202"
#: A village of the other township (530102002).
VILLAGE_C = "530102002201"
FIRST, SECOND, THIRD = "2026-05", "2026-11", "2026-12"
#: When each round's records reached the server.
ROUND_AT = {
    FIRST: datetime(2026, 5, 10, 2, tzinfo=UTC),
    SECOND: datetime(2026, 11, 10, 2, tzinfo=UTC),
    THIRD: datetime(2026, 12, 1, 2, tzinfo=UTC),
}


def monitoring(
    *,
    wage: float = 40_000.0,
    medical: float = 0.0,
    category: str = "无",
    risk_removed: bool | None = None,
) -> dict[str, Any]:
    """A monitoring record with a known income (4 members) and medical out-of-pocket."""
    data: dict[str, Any] = {
        "household_type": "普通农户",
        "member_count": 4,
        "wage_income": wage,
        "business_income": 5_000.0,
        "property_income": 0.0,
        "transfer_income": 1_000.0,
        "production_costs": 1_000.0,
        "insurance_payouts": 0.0,
        "medical_out_of_pocket": medical,
        "category": category,
    }
    if risk_removed is not None:
        data["risk_removed"] = risk_removed
    return data


def household(
    seed: int,
    village: str,
    *,
    house_unsafe: bool = False,
    water_unsafe: bool = False,
    monitoring_record: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """A household's six records; the named problems swapped in from the problem cases."""
    data = sample_household(seed, village_code=village)
    if house_unsafe:
        data["housing_safety"] = problem_household("dangerous_house", seed, village_code=village)[
            "housing_safety"
        ]
    if water_unsafe:
        data["drinking_water"] = problem_household("too_little_water", seed, village_code=village)[
            "drinking_water"
        ]
    data["monitoring_household"] = monitoring_record or monitoring()
    return data


def store(
    app: Flask,
    data: dict[str, dict[str, Any]],
    village: str,
    number: str,
    round_: str,
    *,
    forms: tuple[str, ...] | None = None,
) -> dict[str, str]:
    """Store the household's records in ``round_`` at that round's time; form id → record id."""
    return store_household(
        app,
        data,
        village_code=village,
        household_no=number,
        round=round_,
        at=ROUND_AT[round_],
        forms=forms,
    )


def set_thresholds(
    app: Flask, *, income_drop: float, expense_rise: float, year: int = 2026, line: float = 8700
) -> None:
    """Configure Yunnan's line and change thresholds for ``year`` as a county admin would."""
    with app.app_context():
        monitoring_service.set_line(
            "53",
            year,
            line,
            {"income_drop_percent": income_drop, "expense_rise_percent": expense_rise},
            actor=CLI_ACTOR,
        )


class CollectingSink:
    """A task sink that keeps what it was handed (the real one is the task service)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any]]] = []

    def __call__(self, signals: Any, *, origin: str) -> None:
        self.calls.append((origin, list(signals)))
