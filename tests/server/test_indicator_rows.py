"""The maintained household indicator rows give exactly the from-scratch dashboard.

A seeded generator makes a small county (households of every problem case, some instruments
missing, up to three rounds, some monitoring records with sharp changes); the dashboard read from
the maintained rows (:func:`rollup`, :func:`household_list`, :func:`households_with`) is compared
field by field with the computation over every record (:func:`recomputed_rollup`, ...), on SQLite
and PostgreSQL, after ingest through the real op path, after an edit, after a change of the
monitoring line and after a rebuild.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from forms import flatten
from forms.indicators import MonitoringConfig
from forms.instruments import load_builtin
from forms.instruments.samples import PROBLEM_CASES, problem_household, sample_household
from server.services import forms as form_service
from server.services import indicators, monitoring
from server.services.access import Actor, Principal
from server.services.checking import ingest_context
from server.services.record_ops import apply_ops
from server.storage.database import db, writing
from server.storage.models import HouseholdIndicatorRow, VillageIndicatorCounts
from sync_protocol.ops import put_op
from tests.server.survey_data import store_household
from tests.server.sync_device import SyncDevice, county

__all__ = ["county"]  # the fixture, imported for pytest

COUNTY_ADMIN = Principal(1, "admin", "county_admin", "")
REVIEWER = Principal(2, "reviewer", "township_reviewer", "530102002")
VILLAGES = ("530102001201", "530102001202", "530102002201")
ROUNDS = ("2025-annual", "2026-annual", "2026-visit-2")
FORMS = (
    "household_roster",
    "housing_safety",
    "drinking_water",
    "compulsory_education",
    "medical_insurance",
    "monitoring_household",
)


def _household(rng: random.Random, village: str) -> dict[str, dict[str, Any]]:
    seed = rng.randrange(10_000)
    case = rng.choice([None, None, *PROBLEM_CASES])
    if case is None:
        return sample_household(seed, village_code=village)
    return problem_household(case, seed, village_code=village)


def _generated_county(app: Flask, seed: int, households: int) -> list[tuple[str, str]]:
    """Store ``households`` generated households; half through the ingest path (ops)."""
    rng = random.Random(seed)
    start = datetime(2025, 9, 1, 4, tzinfo=UTC)
    keys = []
    ops = []
    for index in range(households):
        village = rng.choice(VILLAGES)
        number = f"H{index:03d}"
        keys.append((village, number))
        rounds = ROUNDS[: rng.randint(1, len(ROUNDS))]
        if index % 2:
            for step, round_ in enumerate(rounds):
                data = _household(rng, village)
                forms = tuple(f for f in FORMS if rng.random() < 0.85)
                at = start + timedelta(days=200 * step + rng.randrange(30))
                store_household(
                    app,
                    data,
                    village_code=village,
                    household_no=number,
                    round=round_,
                    at=at,
                    forms=forms,
                )
        else:
            data = _household(rng, village)
            for form_id, values in data.items():
                if rng.random() < 0.1:
                    continue
                ops.append(
                    put_op(
                        device_id="dev-gen",
                        seq=len(ops) + 1,
                        record_id=str(uuid.uuid4()),
                        form_id=form_id,
                        form_version=load_builtin(form_id).version,
                        changes=flatten(values),
                        hlc=f"{1_764_000_000_000 + len(ops):012x}-0000-dev-gen",
                        household={"village_code": village, "household_no": number},
                        round=rng.choice(rounds),
                    )
                )
    with app.app_context():
        form_service.publish_builtins()
    with app.app_context(), writing():
        outcomes = apply_ops(ops, ingest_context(), scope=None, by="test")
    assert {o.status for o in outcomes} <= {"applied", "merged", "conflict"}, [
        o.ack for o in outcomes if o.status == "rejected"
    ][:2]
    return keys


def _assert_same(
    app: Flask, principal: Principal = COUNTY_ADMIN, rounds: tuple[str | None, ...] = (None,)
) -> None:
    with app.app_context():
        for round_ in rounds:
            # Every level and list for the newest records; one of each for the other rounds.
            levels = indicators.LEVELS if round_ is None else ("township",)
            problems = (None, *indicators.PROBLEMS) if round_ is None else ("housing",)
            for level in levels:
                expected = indicators.recomputed_rollup(
                    principal, level=level, round=round_, limit=7
                )
                assert indicators.rollup(principal, level=level, round=round_, limit=7) == expected
            for problem in problems:
                args: dict[str, Any] = {"round": round_, "problem": problem, "limit": 9}
                assert indicators.household_list(
                    principal, **args, offset=2
                ) == indicators.recomputed_household_list(principal, **args, offset=2)
            config = indicators.monitoring_config()
            today = indicators.china_today()
            pictures = list(
                indicators.iter_pictures(
                    principal.area_prefix, round=round_, today=today, config=config
                )
            )
            for name, decided in indicators._DECIDED_BY.items():
                for failing in (True, False, None):
                    expected_set = {
                        (p.indicators.village_code, p.household_no)
                        for p in pictures
                        if getattr(p.indicators, decided) is not None
                        and (failing is None or (name in p.indicators.open_problems) == failing)
                    }
                    found = indicators.households_with(
                        principal, name, failing=failing, round=round_
                    )
                    assert found == expected_set, (name, failing, round_)


def test_maintained_rows_match_the_computation_from_records(app: Flask) -> None:
    actor = Actor(name="admin")
    with app.app_context():
        monitoring.set_line("53", 2026, 8700, {"income_drop_percent": 20}, actor=actor)
        monitoring.set_line("53", 2025, 8000, {}, actor=actor)
    _generated_county(app, seed=18, households=20)
    with app.app_context():
        body = indicators.rollup(COUNTY_ADMIN, level="county")
    assert body["total"]["households"] == 20
    # The generator reached every kind of figure the rows carry.
    total = body["total"]
    assert total["open_problems"] and total["monitoring_objects"] and body["below_line"]["total"]
    _assert_same(app, rounds=(None, *ROUNDS))
    _assert_same(app, REVIEWER)

    # A new line for this year makes every row stale; the next read recomputes them.
    with app.app_context():
        monitoring.set_line("530102", 2026, 12000, {}, actor=actor)
    _assert_same(app)

    # Rebuilding from scratch changes nothing.
    with app.app_context():
        assert indicators.rebuild(chunk=7) == 20
    _assert_same(app)


#: A D-grade house rebuilt and accepted: housing safe.
HOUSE_REBUILT: dict[str, Any] = {
    "appraisal_grade": "D",
    "appraisal_date": "2025-08-04",
    "structure": "土坯/夯土房（无立柱）",
    "build_year": 1985,
    "storeys": 1,
    "floor_area": 60.0,
    "safety_basis": "改造安全",
    "renovation_method": "拆除重建",
    "renovation_year": 2024,
    "renovation_accepted": True,
}


def test_sync_batches_keep_the_rows_in_step(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    village = VILLAGES[0]
    device = SyncDevice.enroll(client, admin_headers, village)
    safe = device.create("housing_safety", HOUSE_REBUILT, village=village, household_no="H1")
    dangerous = problem_household("dangerous_house", 5, village_code=village)["housing_safety"]
    device.create("housing_safety", dangerous, village=village, household_no="H2")
    device.sync()

    def housing() -> tuple[int, int, int]:
        with county.app_context():
            body = indicators.rollup(COUNTY_ADMIN, level="county")
            assert body == indicators.recomputed_rollup(COUNTY_ADMIN, level="county")
        figures = body["total"]["indicators"]["housing"]
        return body["total"]["households"], figures["passing"], figures["failing"]

    assert housing() == (2, 1, 1)
    device.delete(safe)
    device.sync()
    # The tombstone took H1 (its only record) off the dashboard in the batch's transaction.
    assert housing() == (1, 0, 1)
    response = client.get(
        "/api/v1/records",
        query_string={"indicator": "housing", "failing": "true"},
        headers=admin_headers,
    )
    assert response.status_code == 200, response.json
    assert [r["household_no"] for r in response.json["items"]] == ["H2"]


def test_an_explicit_configuration_is_honoured(app: Flask) -> None:
    village = VILLAGES[1]
    store_household(
        app,
        problem_household("below_line", 3, village_code=village),
        village_code=village,
        household_no="H9",
    )
    config = MonitoringConfig(monitoring_lines={"53": {2026: 1.0}})
    with app.app_context():
        low = indicators.rollup(COUNTY_ADMIN, level="county", round="2026-annual", config=config)
        expected = indicators.recomputed_rollup(
            COUNTY_ADMIN, level="county", round="2026-annual", config=config
        )
    assert low == expected
    assert low["total"]["indicators"]["income"]["failing"] == 0


def _stored_rows() -> dict[str, list[tuple[Any, ...]]]:
    """Every maintained row (household and village), as stored, in key order."""
    tables = {"households": HouseholdIndicatorRow, "villages": VillageIndicatorCounts}
    out = {}
    for name, model in tables.items():
        table = model.__table__
        keys = [c for c in table.primary_key.columns]
        rows = db.session.execute(sa.select(table).order_by(*keys)).all()
        out[name] = [tuple(row) for row in rows]
    return out


def test_rows_written_by_batches_equal_a_rebuild_from_scratch(app: Flask) -> None:
    actor = Actor(name="admin")
    with app.app_context():
        monitoring.set_line("53", 2026, 8700, {"income_drop_percent": 20}, actor=actor)
        monitoring.set_line("530102001202", 2026, 9100, {}, actor=actor)
    keys = _generated_county(app, seed=7, households=16)
    # A second batch through the op path: new monitoring records for households the first one
    # made, so batches rewrite rows and village sums that are already there.
    rng = random.Random(3)
    ops = []
    for index, (village, number) in enumerate(keys[::3]):
        data = _household(rng, village)["monitoring_household"]
        ops.append(
            put_op(
                device_id="dev-second",
                seq=index + 1,
                record_id=str(uuid.uuid4()),
                form_id="monitoring_household",
                form_version=load_builtin("monitoring_household").version,
                changes=flatten(data),
                hlc=f"{1_765_000_000_000 + index:012x}-0000-dev-second",
                household={"village_code": village, "household_no": number},
                round="2026-visit-2",
            )
        )
    with app.app_context(), writing():
        outcomes = apply_ops(ops, ingest_context(), scope=None, by="test")
    assert {o.status for o in outcomes} <= {"applied", "merged", "conflict"}
    with app.app_context():
        by_batches = _stored_rows()
        assert len(by_batches["households"]) > len(keys) and by_batches["villages"]
        with writing():
            db.session.execute(sa.delete(HouseholdIndicatorRow))
            db.session.execute(sa.delete(VillageIndicatorCounts))
        assert indicators.rebuild(chunk=5) == len(keys)
        assert _stored_rows() == by_batches
