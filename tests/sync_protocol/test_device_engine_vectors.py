"""The device-engine vectors (sync_protocol/vectors/device_engine.json) hold, step by step."""

from __future__ import annotations

import copy
import itertools
import json
from importlib import resources
from typing import Any

import pytest

from sync_protocol.device_memory import MemoryStorage
from sync_protocol.device_vectors import FORMAT, run_scenario
from tests.sync_protocol.device_engine_vector_builder import build_vectors


def _load() -> dict[str, Any]:
    # Read through importlib.resources: proves the file ships with the package.
    text = (resources.files("sync_protocol") / "vectors" / "device_engine.json").read_text("utf-8")
    return json.loads(text)


DOCUMENT = _load()
SCENARIOS = {scenario["name"]: scenario for scenario in DOCUMENT["scenarios"]}


def test_vectors_file_is_exactly_what_the_builder_produces() -> None:
    assert DOCUMENT["format"] == FORMAT
    assert build_vectors() == DOCUMENT


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_replays_on_a_fresh_memory_storage(name: str) -> None:
    assert run_scenario(SCENARIOS[name], MemoryStorage) == []


def test_vectors_cover_every_step_kind_and_both_outcomes() -> None:
    kinds = {step["do"] for s in DOCUMENT["scenarios"] for step in s["steps"]}
    assert kinds == {
        "queue",
        "mark_sent",
        "fold_acks",
        "mark_rejected",
        "apply_state",
        "fold_reply",
        "observe_server_time",
        "hello",
        "pending_ops",
        "put_base",
        "delete_base",
        "resend_rejected",
        "envelope",
    }
    errors = {
        step["expect"]["error"]
        for s in DOCUMENT["scenarios"]
        for step in s["steps"]
        if "error" in step["expect"]
    }
    assert errors == {"ack_mismatch", "state_invalid", "unexpected_batch"}


def test_a_failed_step_leaves_the_state_as_it_was() -> None:
    for scenario in DOCUMENT["scenarios"]:
        steps = scenario["steps"]
        for before, step in itertools.pairwise(steps):
            if "error" in step["expect"]:
                assert step["expect"]["state"] == before["expect"]["state"], step["do"]


def test_runner_reports_the_step_and_part_that_differ() -> None:
    # The runner is only worth something if it notices a difference.
    scenario = copy.deepcopy(SCENARIOS["outbox_lifecycle"])
    scenario["steps"][9]["expect"]["result"]["acked_through"] = 1
    scenario["steps"][9]["expect"]["state"]["counters"]["acked_through"] = 1
    problems = run_scenario(scenario, MemoryStorage)
    assert problems == [
        "outbox_lifecycle step 9 (fold_acks): result "
        '{"acked_through": 2, "conflicts": [], "rejected": [], "removed": [1, 2]} != '
        '{"acked_through": 1, "conflicts": [], "rejected": [], "removed": [1, 2]}',
        "outbox_lifecycle step 9 (fold_acks): state.counters differs",
    ]


def test_lean_acks_without_conflict_ids_or_reasons_settle_ops() -> None:
    # protocol.md may let the server omit empty lists; the engine must read them as empty.
    step = SCENARIOS["outbox_lifecycle"]["steps"][9]
    assert "conflict_ids" not in step["acks"][0] and "reasons" not in step["acks"][0]
    assert step["expect"]["result"]["removed"] == [1, 2]
