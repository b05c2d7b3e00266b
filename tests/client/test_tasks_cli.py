"""``village-device tasks`` / ``task``: the tasks a sync stored, worked offline by questions or
flags; the outcome is the task's derived ``verification_outcome`` record, queued in the outbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from forms.instruments import VERIFICATION_OUTCOME, builtin_json
from forms.verification import outcome_record_id, outcome_round
from tests.client.server_before_tasks import server_before_tasks_stream
from tests.client.test_cli import run, run_json
from village_client_stub.store import DeviceStore

VILLAGE = "530102001201"
TASK_ID = "0f6a2c1e-7d3b-4a5e-9c21-000000000017"


def _entry(status: str = "open", revision: int = 3) -> dict[str, Any]:
    return {
        "task_id": TASK_ID,
        "household": {"village_code": VILLAGE, "household_no": "0017"},
        "status": status,
        "reasons": [
            {
                "code": "suspected_dropout",
                "source": "dept:education",
                "message": {"zh": "教育部门名单显示疑似辍学", "en": "suspected dropout"},
                "details": {"member": "李四"},
            }
        ],
        "deadline": "2026-12-14",
        "escalated": True,
        "outcome": None,
        "record_id": outcome_record_id(TASK_ID),
        "round": outcome_round(TASK_ID),
        "revision": revision,
    }


@pytest.fixture
def device(tmp_path: Path) -> Path:
    db = tmp_path / "device.db"
    assert run(["init"], db).exit_code == 0
    with DeviceStore.open(db) as store:
        store.put_form(builtin_json(VERIFICATION_OUTCOME))
        with store.transaction():
            store.engine.apply_task(_entry())
    return db


def test_tasks_are_listed_chinese_first_and_worked_by_questions(device: Path) -> None:
    assert run_json(["status"], device)["tasks_open"] == 1
    assert "待核查任务 1 个" in run(["status"], device).stdout
    listing = run(["tasks"], device)
    assert listing.exit_code == 0
    assert "教育部门名单显示疑似辍学" in listing.stdout and "已逾期上报乡镇" in listing.stdout
    assert "待核查" in listing.stdout and "截止 2026-12-14" in listing.stdout

    # Outcome 3 = 数据错误, kind 1 = 人员已死亡, then the note.
    asked = run(["task", TASK_ID[:8]], device, input="3\n1\n户主已于十月去世\n")
    assert asked.exit_code == 0, asked.output
    assert "核查结果" in asked.stdout and "已记录任务" in asked.stdout
    with DeviceStore.open(device) as store:
        (op,) = store.pending_ops()
        record = store.record(outcome_record_id(TASK_ID))
    assert op.record_id == outcome_record_id(TASK_ID) and op.form_id == VERIFICATION_OUTCOME
    assert op.round == outcome_round(TASK_ID)
    assert op.household == {"village_code": VILLAGE, "household_no": "0017"}
    assert record.data == {
        "task_id": TASK_ID,
        "outcome": "data_error",
        "data_error": "death",
        "note": "户主已于十月去世",
    }
    assert run_json(["tasks", "--status", "worked"], device)["tasks"][0]["task_id"] == TASK_ID


def test_a_changed_outcome_is_an_edit_of_the_same_record_and_a_closed_task_refuses(
    device: Path,
) -> None:
    first = run_json(["task", TASK_ID, "--outcome", "data_error", "--detail", "moved"], device)
    second = run_json(["task", TASK_ID, "--outcome", "already_solved", "--note", "已返校"], device)
    assert first["record_id"] == second["record_id"] == outcome_record_id(TASK_ID)
    assert second["seq"] == 2 and second["paths"] == ["data_error", "note", "outcome"]
    with DeviceStore.open(device) as store:
        assert store.record(second["record_id"]).data == {
            "task_id": TASK_ID,
            "outcome": "already_solved",
            "note": "已返校",
        }
        with store.transaction():
            store.engine.apply_task(_entry("closed", revision=9))
    refused = run_json(["task", TASK_ID, "--outcome", "not_eligible"], device, expect_code=1)
    assert refused["error"]["message"]["zh"].startswith("该任务已关闭")
    unknown = run(["task", "nope"], device)
    assert unknown.exit_code == 1 and "没有唯一匹配" in unknown.stderr
    shown = run_json(["task", TASK_ID], device)["task"]
    assert shown["status"] == shown["local_status"] == "closed"
    assert json.dumps(shown, ensure_ascii=False).count("教育部门名单显示疑似辍学") == 1


def test_a_server_from_before_the_tasks_stream_still_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault injected: the server knows no ``tasks`` cursor (as before issue 17) and
    refuses it with scope_denied; the device syncs on without the stream."""
    from village_client_stub.enrollment import enroll
    from village_client_stub.sync_client import Backoff, SyncClient
    from village_client_stub.transport import HttpTransport

    with (
        server_before_tasks_stream(tmp_path, monkeypatch) as (url, admin),
        DeviceStore.create(tmp_path / "tablet.db") as store,
    ):
        enroll(store, url, admin.issue_code(VILLAGE), transport=HttpTransport(url))
        client = SyncClient(store, HttpTransport(url), backoff=Backoff(base_s=0.01))
        report = client.sync()
        assert report.failures == 1 and client.asks_tasks is False
        assert report.exchanges == 2 and store.tasks() == []
        assert store.sync_state().last_sync_at is not None  # the second exchange synced
