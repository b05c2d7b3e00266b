"""The JS protocol client against a real county server process, in Chromium.

A browser device enrols with a one-time code, creates a housing record through the JS engine
(memory storage) and syncs; the server holds it. A CLI ``village-device`` edits the same
record; the browser's next sync receives the merged state. Then a reply is lost on the way
(the loopback server in front of the county server delivers the request and cuts the
connection): the op stays in the outbox as sent, the retry carries the same op, the server
answers with the ack it stored and holds the op once, with nothing lost.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.harness.county_server import CountyServer, start_county_server
from forms.instruments import load_builtin
from tests.e2e.conftest import VILLAGE, cli_json, device_cli, server_record
from tests.web.field_static import serve_field_static

HOUSEHOLD = {"village_code": VILLAGE, "household_no": "0031"}


@pytest.fixture
def county(tmp_path: Path) -> Iterator[CountyServer]:
    server = start_county_server(f"sqlite:///{tmp_path / 'county.db'}", tmp_path / "county")
    try:
        yield server
    finally:
        server.stop()


def _call(page: Any, function: str, argument: Any = None) -> Any:
    return page.evaluate(
        f"""async (argument) => {{
            const module = await import("/tests/device_page.js");
            return module.{function}(argument);
        }}""",
        argument,
    )


def test_browser_device_enrols_syncs_merges_and_survives_a_lost_reply(
    chromium: Any, county: CountyServer, tmp_path: Path
) -> None:
    admin = county.admin()
    housing = load_builtin("housing_safety")
    structure = housing.choice_lists["structure"][0].value
    record_id = str(uuid.uuid4())
    values = {"appraisal_grade": "B", "appraisal_date": "2026-03-01", "structure": structure}
    with serve_field_static(upstream=county.url) as static:
        page = chromium.new_page()
        page.goto(f"{static.url}/")
        enrolled = _call(page, "enrolDevice", admin.issue_code(VILLAGE))
        assert enrolled["scope"] == VILLAGE
        assert enrolled["privateKeysExtractable"] == [False, False]

        op = _call(
            page,
            "edit",
            {
                "recordId": record_id,
                "formId": housing.id,
                "formVersion": housing.version,
                "household": HOUSEHOLD,
                "round": "2026-annual",
                "changes": values,
            },
        )
        assert op["seq"] == 1 and op["base"] == dict.fromkeys(values)
        report = _call(page, "sync")
        assert report == {
            "done": True,
            "exchanges": report["exchanges"],
            "failures": 0,
            "opsAcked": 1,
            "lastError": None,
        }
        state = _call(page, "snapshot")
        assert state["outbox"] == [] and state["counters"]["acked_through"] == 1
        on_server = server_record(admin, record_id)
        assert on_server["data"] == values
        assert [(h["device_id"], h["op_seq"]) for h in on_server["history"]] == [
            (enrolled["deviceId"], 1)
        ]

        # A CLI tablet of the same village downloads the record and adds the storeys.
        db = tmp_path / "tablet.db"
        assert cli_json(device_cli(db, "init"))["ok"]
        code = admin.issue_code(VILLAGE)
        assert cli_json(device_cli(db, "enroll", "--server", county.url, "--code", code))["ok"]
        assert cli_json(device_cli(db, "edit", record_id, "--set", "storeys=2"))["ok"]
        assert cli_json(device_cli(db, "sync"))["ops_acked"] == 1

        assert _call(page, "sync")["failures"] == 0
        held = _call(page, "snapshot")["records"][record_id]
        assert held["values"] == {**values, "storeys": 2}
        assert held["server_revision"] == server_record(admin, record_id)["revision"]
        assert server_record(admin, record_id)["data"] == {**values, "storeys": 2}

        # The reply to the next edit is lost: the server committed it, the browser never heard.
        edit = {"recordId": record_id, "changes": {"floor_area": 86.5}}
        sent = _call(page, "edit", {**edit, "formId": housing.id, "formVersion": 1})
        static.controls["drop_replies"] = 1
        lost = _call(page, "sync", False)
        assert lost == {"ok": False, "code": "network_failed"}
        state = _call(page, "snapshot")
        assert [(o["seq"], o["state"], o["attempts"]) for o in state["outbox"]] == [
            (sent["seq"], "sent", 1)
        ]
        retried = _call(page, "sync", False)
        assert retried["ok"], retried
        # The same op again; the server replays the ack it stored for it (same result, once).
        assert retried["opsSent"] == [sent["seq"]] and retried["statusCounts"] == {"applied": 1}
        assert _call(page, "snapshot")["outbox"] == []
        page.close()

    on_server = server_record(admin, record_id)
    assert on_server["data"] == {**values, "storeys": 2, "floor_area": 86.5}
    ops = [(h["device_id"], h["op_seq"]) for h in on_server["history"]]
    assert ops.count((enrolled["deviceId"], sent["seq"])) == 1, json.dumps(on_server["history"])
