"""The JS protocol client against a real county server process, in Chromium.

Every whole-exchange script of ``sync_protocol/vectors/exchanges.json`` (upload and download,
a review conflict resolved by the county, a replayed request and replayed ops, a cut inside the
last batch, a server key rotation, clock skew) is played with JS devices, each script in a
township of its own; every reply must be what the script says.

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
from forms.paths import flatten
from tests.e2e.conftest import VILLAGE, cli_json, device_cli, new_device, server_record
from tests.web.field_static import ROOT, serve_field_static

HOUSEHOLD = {"village_code": VILLAGE, "household_no": "0031"}


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CountyServer]:
    """One county server process for this module (its tests use separate townships)."""
    tmp_path = tmp_path_factory.mktemp("county")
    server = start_county_server(f"sqlite:///{tmp_path / 'county.db'}", tmp_path / "county")
    try:
        yield server
    finally:
        server.stop()


def _call(page: Any, function: str, argument: Any = None, module: str = "device_page") -> Any:
    return page.evaluate(
        f"""async (argument) => {{
            const module = await import("/tests/{module}.js");
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

        # A tablet of the same village downloads the record (enrolled in process, to save two
        # interpreter starts) and adds the storeys with the village-device command.
        db = tmp_path / "tablet.db"
        new_device(county, admin, db).close()
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


SCRIPTS = json.loads((ROOT / "sync_protocol" / "vectors" / "exchanges.json").read_text("utf-8"))
DAY_MS = 24 * 3600 * 1000


class _Player:
    """Plays one script: the server-side steps here, the device steps in the page."""

    def __init__(self, page: Any, county: CountyServer, township: str) -> None:
        self.page, self.county, self.admin = page, county, county.admin()
        self.township = township
        self.records: dict[str, str] = {}
        self.conflicts: dict[str, str] = {}
        self.forms: dict[str, str] = {}
        self.scopes: dict[str, str] = {}
        self.checks = 0

    def call(self, function: str, argument: dict[str, Any]) -> Any:
        return _call(self.page, function, argument, module="script_player")

    def step(self, step: dict[str, Any], where: str) -> None:
        if "enroll" in step:
            scope = step["scope"].replace("530102001", self.township, 1)
            offset = int(step.get("clock_offset_days", 0)) * DAY_MS
            code = self.admin.issue_code(scope)
            self.call("enrolAlias", {"alias": step["enroll"], "code": code, "offsetMs": offset})
            self.scopes[step["enroll"]] = scope
        elif "rotate_keys" in step:
            rotated = self.county.cli("rotate-keys")
            assert rotated.returncode == 0, (where, rotated.stdout + rotated.stderr)
        elif "resolve" in step:
            conflict = self.conflicts[step["resolve"]]
            self.admin.post(f"/api/v1/conflicts/{conflict}/resolve", {"value": step["value"]})
        elif "create" in step:
            scope = self.scopes[step["device"]]
            record_id = self.records[step["create"]] = str(uuid.uuid4())
            self.forms[record_id] = step["form_id"]
            household = {
                "village_code": scope if len(scope) == 12 else scope + "201",
                "household_no": step["household_no"],
            }
            self.call(
                "put",
                {
                    "alias": step["device"],
                    "recordId": record_id,
                    "formId": step["form_id"],
                    "changes": flatten(step["data"]),
                    "household": household,
                },
            )
        elif "put" in step:
            record_id = self.records[step["put"]]
            argument = {"recordId": record_id, "formId": self.forms[record_id]}
            self.call("put", {"alias": step["device"], **argument, "changes": step["changes"]})
        elif "adopt_server_keys" in step:
            assert self.call("adopt", {"alias": step["device"]}), where
        else:
            self.exchange(step["device"], step["exchange"], step.get("expect", {}), where)

    def exchange(
        self, alias: str, options: dict[str, Any], expect: dict[str, Any], where: str
    ) -> None:
        got = self.call(
            "exchange",
            {
                "alias": alias,
                "batchSize": int(options.get("batch_size", 50)),
                "resendLast": bool(options.get("resend_last")),
                "resendOps": bool(options.get("resend_ops")),
                "cutBytes": int(options.get("cut_bytes", 0)),
            },
        )
        assert got["status"] == expect.get("http_status", 200), (where, got)
        assert got["sealed"] is (expect.get("content_type", "exchange") == "exchange"), where
        self.checks += 2
        if not got["sealed"]:
            assert got["error"] == expect["error"], (where, got)
            self.checks += 1
            return
        assert got["refusal"] == expect.get("refusal"), (where, got)
        self.checks += 1
        for key, name in (("frames", "frames"), ("acks", "acks"), ("key_change", "keyChange")):
            if key in expect:
                assert got[name] == expect[key], (where, key, got[name])
                self.checks += 1
        if "save_conflicts" in expect:
            assert len(got["conflictIds"]) == len(expect["save_conflicts"]), (where, got)
            self.conflicts.update(zip(expect["save_conflicts"], got["conflictIds"], strict=True))
        for alias_, values in expect.get("values", {}).items():
            held = got["values"].get(self.records[alias_], {})
            assert {path: held.get(path) for path in values} == values, (where, held)
            self.checks += 1


def test_the_whole_exchange_scripts_with_browser_devices(
    chromium: Any, county: CountyServer
) -> None:
    assert len(SCRIPTS["scripts"]) >= 6
    checks = 0
    with serve_field_static(upstream=county.url) as static:
        page = chromium.new_page()
        page.goto(f"{static.url}/")
        for index, script in enumerate(SCRIPTS["scripts"]):
            # Township 530102002, 003 …: no script sees another's households.
            player = _Player(page, county, f"5301020{index + 2:02d}")
            for number, step in enumerate(script["steps"]):
                player.step(step, f"{script['id']} step {number}")
            checks += player.checks
        # The player is not vacuous: the first script with one wrong expectation fails.
        script = json.loads(json.dumps(SCRIPTS["scripts"][0]))
        script["steps"][3]["expect"]["acks"] = [["conflict"]]
        player = _Player(page, county, "530102009")
        with pytest.raises(AssertionError):
            for number, step in enumerate(script["steps"]):
                player.step(step, f"step {number}")
        page.close()
    assert checks >= 60  # every expectation of every script was compared
