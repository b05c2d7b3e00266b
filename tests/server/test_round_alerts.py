"""Round over round: problems new / persisting / resolved, 收入骤减 and 支出骤增 under the
configured thresholds, the signals handed to the task sink, and runs that are never rewritten —
through the real storage (SQLite and PostgreSQL), the HTTP API and the command line."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from server.cli import main
from server.services import round_alerts
from server.services.access import CLI_ACTOR
from tests.server.board_data import (
    FIRST,
    SECOND,
    VILLAGE_A,
    VILLAGE_B,
    CollectingSink,
    household,
    monitoring,
    set_thresholds,
    store,
)
from tests.server.conftest import add_user, assert_error, login


def _county(app: Flask) -> None:
    """Five households over two rounds (see each line)."""
    # H1 ordinary: wages halve → per-capita income 11,250 → 6,250 (−44.44 %), now below the line.
    store(app, household(1, VILLAGE_A), VILLAGE_A, "H1", FIRST)
    store(
        app,
        household(1, VILLAGE_A, monitoring_record=monitoring(wage=20_000)),
        VILLAGE_A,
        "H1",
        SECOND,
    )
    # H2 ordinary: medical out-of-pocket 0 → 30,000 against last year's net 45,000 (66.67 %).
    store(app, household(2, VILLAGE_A), VILLAGE_A, "H2", FIRST)
    store(
        app,
        household(2, VILLAGE_A, monitoring_record=monitoring(medical=30_000)),
        VILLAGE_A,
        "H2",
        SECOND,
    )
    # H3 a monitoring object whose risk is now removed.
    watched = monitoring(category="边缘易致贫户", risk_removed=False)
    store(app, household(3, VILLAGE_B, monitoring_record=watched), VILLAGE_B, "H3", FIRST)
    removed = monitoring(category="边缘易致贫户", risk_removed=True)
    store(app, household(3, VILLAGE_B, monitoring_record=removed), VILLAGE_B, "H3", SECOND)
    # H4 ordinary: the house rebuilt (resolved), the water still short (persisting).
    store(
        app, household(4, VILLAGE_B, house_unsafe=True, water_unsafe=True), VILLAGE_B, "H4", FIRST
    )
    store(app, household(4, VILLAGE_B, water_unsafe=True), VILLAGE_B, "H4", SECOND)
    # H5 surveyed in the first round only: not part of the second round's run.
    store(app, household(5, VILLAGE_A), VILLAGE_A, "H5", FIRST)


def _codes(signals: list) -> dict[str, list[str]]:
    return {s.household.household_no: [r.code for r in s.reasons] for s in signals}


def test_a_round_against_the_previous_one(app: Flask) -> None:
    set_thresholds(app, income_drop=30, expense_rise=50)
    _county(app)
    # H6 a monitoring object surveyed for the first time, its house dangerous: no previous
    # round, so nothing "changed" (the board counts the problem, the run sends no reason).
    first_time = household(
        6, VILLAGE_B, house_unsafe=True, monitoring_record=monitoring(category="突发严重困难户")
    )
    store(app, first_time, VILLAGE_B, "H6", SECOND)
    sink = CollectingSink()
    with app.app_context():
        result = round_alerts.run_round_alerts(SECOND, actor=CLI_ACTOR, sink=sink)
        detail = round_alerts.run_detail(CLI_ACTOR, result["run"]["id"])
    assert result["created"] is True
    run = result["run"]
    [(origin, signals)] = sink.calls
    assert origin == f"round:{SECOND}:run-{run['id']}"
    assert _codes(signals) == {
        "H1": ["income_drop"],
        "H2": ["expense_rise"],
        "H3": ["monitored_status_changed"],
    }
    by_no = {s.household.household_no: s for s in signals}
    drop = by_no["H1"].reasons[0]
    assert drop.source == "round"
    assert drop.details["income_change_percent"] == -44.44
    assert drop.details["threshold_percent"] == 30
    assert drop.details["previous_round"] == FIRST
    assert "收入骤减" in drop.message_zh and "44.44%" in drop.message_zh
    assert by_no["H2"].reasons[0].details["expense_rise_percent"] == 66.67
    assert by_no["H3"].reasons[0].details["changes"]["risk_removed"] == {
        "before": False,
        "now": True,
    }
    assert run["households"] == 5 and run["counts"]["compared"] == 4
    assert run["signals"] == 3
    assert run["counts"]["reasons"] == {
        "income_drop": 1,
        "expense_rise": 1,
        "monitored_status_changed": 1,
    }
    problems = run["counts"]["problems"]
    assert problems["housing"]["resolved"] == 1
    assert problems["water"]["persisting"] == 1
    assert problems["income"]["new"] == 1
    assert run["thresholds"]["income_drop_percents"] == {"53": {"2026": 30.0}}
    findings = {f["household_no"]: f for f in detail["findings"]}
    assert findings["H4"]["problems"]["resolved"] == ["housing"]
    assert findings["H4"]["problems"]["persisting"] == ["water"]
    assert findings["H4"]["reasons"] == []
    assert findings["H1"]["problems"]["new"] == ["income"]
    assert "H5" not in findings
    assert findings["H6"]["previous_round"] is None and findings["H6"]["reasons"] == []
    assert findings["H6"]["problems"]["new"] == ["housing"]


def test_a_changed_threshold_makes_a_new_run_and_never_rewrites_the_old(
    sqlite_url: str, app_on
) -> None:
    app = app_on(sqlite_url)
    set_thresholds(app, income_drop=30, expense_rise=50)
    _county(app)
    sink = CollectingSink()
    with app.app_context():
        first = round_alerts.run_round_alerts(SECOND, actor=CLI_ACTOR, sink=sink)["run"]
        again = round_alerts.run_round_alerts(SECOND, actor=CLI_ACTOR, sink=sink)
    # Same configuration, same records: the stored run, nothing sent twice.
    assert again["created"] is False and again["run"]["id"] == first["id"]
    assert len(sink.calls) == 1

    set_thresholds(app, income_drop=50, expense_rise=80)  # H1's 44 % and H2's 67 % no longer flag
    with app.app_context():
        second = round_alerts.run_round_alerts(SECOND, actor=CLI_ACTOR, sink=sink)
        old = round_alerts.run_detail(CLI_ACTOR, first["id"])
        runs = round_alerts.list_runs(CLI_ACTOR, round=SECOND)
    assert second["created"] is True and second["run"]["id"] != first["id"]
    assert _codes(sink.calls[-1][1]) == {"H3": ["monitored_status_changed"]}
    assert second["run"]["thresholds"]["income_drop_percents"] == {"53": {"2026": 50.0}}
    # The first run's findings and counts are as they were.
    old_findings = {f["household_no"]: f for f in old["findings"]}
    assert [r["code"] for r in old_findings["H1"]["reasons"]] == ["income_drop"]
    assert old["counts"] == first["counts"]
    assert old["thresholds"]["income_drop_percents"] == {"53": {"2026": 30.0}}
    assert [r["id"] for r in runs] == [second["run"]["id"], first["id"]]


def test_without_thresholds_changes_are_recorded_never_flagged(sqlite_url: str, app_on) -> None:
    app = app_on(sqlite_url)
    _county(app)
    sink = CollectingSink()
    with app.app_context():
        run = round_alerts.run_round_alerts(SECOND, actor=CLI_ACTOR, sink=sink)["run"]
        detail = round_alerts.run_detail(CLI_ACTOR, run["id"])
    assert _codes(sink.calls[0][1]) == {"H3": ["monitored_status_changed"]}
    h1 = next(f for f in detail["findings"] if f["household_no"] == "H1")
    assert h1["income_change_percent"] == -44.44 and h1["reasons"] == []


def test_api_runs_scoped_and_refused_with_catalogue_errors(
    sqlite_url: str, app_on, tmp_path: Path
) -> None:
    app = app_on(sqlite_url)
    client: FlaskClient = app.test_client()
    set_thresholds(app, income_drop=30, expense_rise=50)
    _county(app)
    add_user(app, "admin")
    add_user(app, "reviewer", role="township_reviewer", area="530102002")
    admin = login(client, "admin")
    reviewer = login(client, "reviewer")

    created = client.post("/api/v1/round-alerts/runs", json={"round": SECOND}, headers=admin)
    assert created.status_code == 200, created.json
    assert created.json["created"] is True and created.json["run"]["signals"] == 3
    same = client.post("/api/v1/round-alerts/runs", json={"round": SECOND}, headers=admin)
    assert same.status_code == 200 and same.json["created"] is False
    listed = client.get(f"/api/v1/round-alerts/runs?round={SECOND}", headers=admin)
    assert [r["id"] for r in listed.json["runs"]] == [created.json["run"]["id"]]
    run_id = created.json["run"]["id"]
    detail = client.get(f"/api/v1/round-alerts/runs/{run_id}", headers=admin)
    assert {f["household_no"] for f in detail.json["findings"]} == {"H1", "H2", "H3", "H4"}

    # A reviewer of the other township sees the county's run but none of its households.
    seen = client.get(f"/api/v1/round-alerts/runs/{run_id}", headers=reviewer)
    assert seen.status_code == 200 and seen.json["findings"] == []
    assert_error(
        client.post("/api/v1/round-alerts/runs", json={"round": SECOND}, headers=reviewer),
        403,
        "role_forbidden",
    )
    error = assert_error(
        client.post("/api/v1/round-alerts/runs", json={"round": "1999-01"}, headers=admin),
        404,
        "round_not_found",
    )
    assert "1999-01" in error["message"]["zh"]
    assert_error(
        client.post("/api/v1/round-alerts/runs", json={"round": ""}, headers=admin),
        400,
        "validation_failed",
    )
    assert_error(
        client.get("/api/v1/round-alerts/runs/999999", headers=admin),
        404,
        "round_alert_run_not_found",
    )
    document = client.get("/api/v1/openapi.json").json
    codes = {c["code"]: c for c in document["components"]["schemas"]["Error"]["x-error-codes"]}
    assert codes["round_not_found"]["message"]["zh"]
    assert codes["round_alert_run_not_found"]["status"] == 404
    assert "post" in document["paths"]["/api/v1/round-alerts/runs"]

    # The command line runs the same comparison; unchanged since the API's run.
    env = {"VILLAGE_SYNC_DATABASE_URL": sqlite_url, "VILLAGE_SYNC_KEY_DIR": str(tmp_path / "keys")}
    out = CliRunner().invoke(main, ["run-round-alerts", "--round", SECOND], env=env)
    assert out.exit_code == 0, out.output
    assert f"unchanged since run {run_id} of round {SECOND}: 4 households" in out.output
    refused = CliRunner().invoke(main, ["run-round-alerts", "--round", "1999-01"], env=env)
    assert refused.exit_code != 0 and "round_not_found" in refused.output
