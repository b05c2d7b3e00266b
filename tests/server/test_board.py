"""The 动态清零 board: problems found → open with their age; cleared only with evidence and only
if the next round does not bring them back; back in the next round → reopened and recurring;
counts moving as rounds come in; township scoping; false positives per department and rule."""

from __future__ import annotations

from datetime import date

from flask import Flask

from server.services import board
from server.services.access import Principal
from tests.server.board_data import (
    FIRST,
    SECOND,
    THIRD,
    VILLAGE_A,
    VILLAGE_B,
    VILLAGE_C,
    household,
    set_thresholds,
    store,
)
from tests.server.conftest import add_user, assert_error, login
from tests.server.sync_device import county

__all__ = ["county"]  # the fixture, imported for pytest

COUNTY_ADMIN = Principal(1, "admin", "county_admin", "")
REVIEWER = Principal(2, "reviewer", "township_reviewer", "530102002")
TODAY = date(2026, 12, 3)


def _board(app: Flask, principal: Principal = COUNTY_ADMIN, **kwargs) -> dict:
    with app.app_context():
        return board.board(principal, today=TODAY, outcomes=lambda area: [], **kwargs)


def _items(block: dict) -> list[tuple[str, str, str]]:
    return [(i["village_code"], i["household_no"], i["problem"]) for i in block["items"]]


def test_problems_open_clear_with_evidence_and_reopen_when_back(app: Flask) -> None:
    set_thresholds(app, income_drop=30, expense_rise=50)
    # Round 1: P1's house is dangerous, P2's water short, P3 (other township) a dangerous house.
    store(app, household(1, VILLAGE_A, house_unsafe=True), VILLAGE_A, "P1", FIRST)
    store(app, household(2, VILLAGE_B, water_unsafe=True), VILLAGE_B, "P2", FIRST)
    store(app, household(3, VILLAGE_C, house_unsafe=True), VILLAGE_C, "P3", SECOND)

    first = _board(app)
    assert _items(first["open_problems"]) == [
        (VILLAGE_A, "P1", "housing"),
        (VILLAGE_B, "P2", "water"),
        (VILLAGE_C, "P3", "housing"),
    ]  # oldest first: P1 and P2 found in May, P3 in November
    p1 = first["open_problems"]["items"][0]
    assert p1["found_on"] == "2026-05-10" and p1["days_open"] == (TODAY - date(2026, 5, 10)).days
    assert first["total"]["open"]["housing"] == 2 and first["total"]["open"]["water"] == 1
    assert first["total"]["oldest_open_days"] == p1["days_open"]
    assert first["total"]["cleared_total"] == 0

    # Round 2: P1's house rebuilt, P2's water fixed — evidence, but not cleared yet.
    fixed_house = store(app, household(1, VILLAGE_A), VILLAGE_A, "P1", SECOND)
    fixed_water = store(app, household(2, VILLAGE_B), VILLAGE_B, "P2", SECOND)
    second = _board(app)
    assert _items(second["open_problems"]) == [(VILLAGE_C, "P3", "housing")]
    clearing = {i["household_no"]: i for i in second["clearing"]["items"]}
    assert clearing["P1"]["evidence"] == {
        "record_id": fixed_house["housing_safety"],
        "form_id": "housing_safety",
        "round": SECOND,
        "date": "2026-11-10",
    }
    assert clearing["P2"]["evidence"]["record_id"] == fixed_water["drinking_water"]
    assert second["total"]["clearing_total"] == 2 and second["total"]["cleared_total"] == 0

    # Round 3: P1 stays fixed (cleared); P2's water is short again (reopened, recurring).
    store(app, household(1, VILLAGE_A), VILLAGE_A, "P1", THIRD, forms=("household_roster",))
    store(app, household(2, VILLAGE_B, water_unsafe=True), VILLAGE_B, "P2", THIRD)
    third = _board(app, level="township")
    cleared = third["cleared"]["items"]
    assert [(i["household_no"], i["problem"], i["status"]) for i in cleared] == [
        ("P1", "housing", "cleared")
    ]
    assert cleared[0]["evidence"]["record_id"] == fixed_house["housing_safety"]
    assert cleared[0]["days_open"] == (date(2026, 11, 10) - date(2026, 5, 10)).days
    reopened = next(i for i in third["open_problems"]["items"] if i["household_no"] == "P2")
    assert reopened["recurring"] is True and reopened["recurrences"] == 1
    assert reopened["found_on"] == "2026-05-10" and reopened["evidence"] is None
    assert third["total"]["recurring"]["water"] == 1
    townships = {a["area"]: a for a in third["areas"]}
    assert set(townships) == {"530102001", "530102002"}
    assert townships["530102001"]["open"]["water"] == 1
    assert townships["530102001"]["cleared"]["housing"] == 1
    assert townships["530102002"]["open"]["housing"] == 1

    # A township reviewer sees its own township only.
    own = _board(app, REVIEWER)
    assert own["area"] == "530102002"
    assert _items(own["open_problems"]) == [(VILLAGE_C, "P3", "housing")]
    assert [a["area"] for a in own["areas"]] == [VILLAGE_C]


def test_board_api_scoped_by_role(sqlite_url: str, app_on) -> None:
    app = app_on(sqlite_url)
    client = app.test_client()
    store(app, household(1, VILLAGE_A, house_unsafe=True), VILLAGE_A, "P1", FIRST)
    store(app, household(3, VILLAGE_C, water_unsafe=True), VILLAGE_C, "P3", FIRST)
    add_user(app, "admin")
    add_user(app, "reviewer", role="township_reviewer", area="530102002")
    admin, reviewer = login(client, "admin"), login(client, "reviewer")

    whole = client.get("/api/v1/board?level=township", headers=admin)
    assert whole.status_code == 200, whole.json
    assert [a["area"] for a in whole.json["areas"]] == ["530102001", "530102002"]
    assert whole.json["total"]["open_total"] == 2
    own = client.get("/api/v1/board", headers=reviewer)
    assert [(i["household_no"], i["problem"]) for i in own.json["open_problems"]["items"]] == [
        ("P3", "water")
    ]
    assert_error(client.get("/api/v1/board?area=530102001", headers=reviewer), 403, "outside_area")
    assert_error(client.get("/api/v1/board?level=county", headers=admin), 400, "validation_failed")
    assert_error(client.get("/api/v1/board"), 401, "missing_token")


def test_false_positive_rate_per_department_and_rule() -> None:
    rows = [
        board.TaskOutcome(
            "dept:medical_insurance", "insured_not_enrolled", "data_error", VILLAGE_A
        ),
        board.TaskOutcome(
            "dept:medical_insurance", "insured_not_enrolled", "not_eligible", VILLAGE_A
        ),
        board.TaskOutcome(
            "dept:medical_insurance", "insured_not_enrolled", "start_identification", VILLAGE_B
        ),
        board.TaskOutcome("round", "income_drop", "already_monitored", VILLAGE_A),
        board.TaskOutcome("round", "income_drop", "data_error", VILLAGE_C),
    ]
    rates = board.false_positive_rates(rows, "530102001")
    assert rates == [
        {
            "source": "dept:medical_insurance",
            "source_name": "医保",
            "code": "insured_not_enrolled",
            "closed": 3,
            "false_positives": 2,
            "rate": 0.6667,
        },
        {
            "source": "round",
            "source_name": "轮次比对",
            "code": "income_drop",
            "closed": 1,
            "false_positives": 0,
            "rate": 0.0,
        },
    ]


def test_the_board_from_the_maintained_rows_is_the_board_from_the_records(county: Flask) -> None:
    """A generated county (every problem case, up to three rounds, half through the ingest
    path): each problem's state read from the rows equals the one recomputed from the records."""
    from server.services.monitoring import monitoring_config
    from server.storage import indicators as records_store
    from tests.server.test_indicator_rows import _generated_county

    app = county
    set_thresholds(app, income_drop=30, expense_rise=50)
    _generated_county(app, seed=17, households=40)
    shown = _board(app, limit=5000)

    def key(p: dict) -> tuple:
        return (
            p["village_code"],
            p["household_no"],
            p["problem"],
            p["status"],
            p["found_on"],
            p["recurrences"],
            p["solved_round"],
        )

    from_rows = sorted(
        key(p) for block in ("open_problems", "clearing", "cleared") for p in shown[block]["items"]
    )
    with app.app_context():
        config = monitoring_config()
        expected = sorted(
            key(p.to_dict(TODAY))
            for household in records_store.household_records("")
            for p in board.recomputed_household_problems(household, today=TODAY, config=config)
        )
    assert from_rows == expected
    assert len({k[3] for k in expected}) >= 2  # the county has open and cleared-or-clearing ones


def test_a_task_outcome_is_no_round_so_it_clears_nothing(app: Flask) -> None:
    """A verification task's outcome is filed in a round of its own (``task-<id>``); counted
    as a survey round it stood as "the next round" and cleared a problem its evidence had only
    just shown solved (found by tests/e2e/test_department_chain.py)."""
    from datetime import UTC, datetime

    from forms.verification import outcome_round
    from tests.server.survey_data import store_household

    store(app, household(1, VILLAGE_A, house_unsafe=True), VILLAGE_A, "P1", FIRST)
    store(app, household(1, VILLAGE_A), VILLAGE_A, "P1", SECOND)  # rebuilt: the evidence
    task_id = "0b0e7c9e-4a55-4d8f-9f57-2f1f3b9c0a11"
    store_household(
        app,
        {"verification_outcome": {"task_id": task_id, "outcome": "already_solved"}},
        village_code=VILLAGE_A,
        household_no="P1",
        round=outcome_round(task_id),
        at=datetime(2026, 11, 20, tzinfo=UTC),
    )
    shown = _board(app)
    assert _items(shown["clearing"]) == [(VILLAGE_A, "P1", "housing")]
    assert shown["cleared"]["total"] == 0
