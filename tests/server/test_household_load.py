"""``python -m server load-households`` and ``rebuild-indicators``: the bulk path and the rebuild.

The load applies each record through the ingest rules (a refused record lands in the
quarantine, nothing is lost), keeps the dashboard rows in step, and loading the same file twice
stores no second copy.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from flask import Flask

from forms.instruments.samples import problem_household, sample_household
from server.cli import main
from server.services import indicators
from server.services.access import Principal
from tests.server.sync_device import county

__all__ = ["county"]  # the fixture (built-in forms published), imported for pytest

COUNTY_ADMIN = Principal(1, "admin", "county_admin", "")
VILLAGE = "530102001201"


def _line(number: str, data: dict) -> str:
    household = {
        "village_code": VILLAGE,
        "household_no": number,
        "round": "2026-annual",
        "records": data,
    }
    return json.dumps(household, ensure_ascii=False)


def _invoke(app: Flask, tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {
        "VILLAGE_SYNC_DATABASE_URL": app.config["DATABASE_URL"],
        "VILLAGE_SYNC_KEY_DIR": str(tmp_path / "cli-keys"),
    }
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_load_households_applies_every_record_and_keeps_the_dashboard(
    county: Flask, tmp_path: Path
) -> None:
    app = county
    broken = dict(sample_household(3, village_code=VILLAGE))
    broken["housing_safety"] = {**broken["housing_safety"], "appraisal_grade": "Z"}
    source = tmp_path / "county.jsonl"
    source.write_text(
        "\n".join(
            [
                _line("H1", sample_household(1, village_code=VILLAGE)),
                _line("H2", problem_household("dangerous_house", 2, village_code=VILLAGE)),
                "{not json",
                _line("H3", broken),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    code, out = _invoke(app, tmp_path, "load-households", str(source))
    assert code == 1 and "line 3 skipped: not JSON" in out, out
    assert "loaded 3 households, 18 records (applied 17, rejected 1)" in out, out
    with app.app_context():
        body = indicators.rollup(COUNTY_ADMIN, level="county")
        assert body == indicators.recomputed_rollup(COUNTY_ADMIN, level="county")
    assert body["total"]["households"] == 3
    assert body["total"]["indicators"]["housing"]["failing"] == 1
    # H3's refused housing record is undecided, not safe.
    assert body["total"]["indicators"]["housing"]["unknown"] == 1

    again = tmp_path / "again.jsonl"
    again.write_text(_line("H1", sample_household(1, village_code=VILLAGE)) + "\n")
    code, out = _invoke(app, tmp_path, "load-households", str(again))
    assert code == 0, out
    with app.app_context():
        listed = indicators.household_list(COUNTY_ADMIN)
    assert [h["household_no"] for h in listed["households"]] == ["H1", "H2", "H3"]
    assert len(listed["households"][0]["record_ids"]) == 6  # the same six records, not twelve

    code, out = _invoke(app, tmp_path, "rebuild-indicators")
    assert code == 0 and "rebuilt the indicator rows of 3 households" in out, out
    with app.app_context():
        assert indicators.rollup(COUNTY_ADMIN, level="county") == body
