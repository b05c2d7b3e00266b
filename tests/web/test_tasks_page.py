"""The verification-task page: the reviewer's area only, overdue marked, a worked task closed
with one CSRF-protected click, Chinese first."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from flask import Flask

from server.services import tasks
from server.services.access import CLI_ACTOR, CLI_PRINCIPAL, Principal
from server.services.context import EXTENSION_KEY, ServiceContext
from server.services.task_reasons import HouseholdKey, HouseholdSignal, TaskReason
from tests.server.test_tasks import _work
from tests.web.conftest import Browser, add_account, text

REASON = TaskReason("suspected_dropout", "dept:education", "疑似辍学", "suspected dropout", {})


def test_the_task_list_is_scoped_marks_overdue_and_closes_a_worked_task(
    app: Flask, browser_for: Callable[[str], Browser]
) -> None:
    base: ServiceContext = app.extensions[EXTENSION_KEY]
    january = ServiceContext(
        base.settings, base.keys, clock=lambda: datetime(2026, 1, 5, tzinfo=UTC)
    )
    with app.app_context():
        made = tasks.open_tasks(
            january,
            CLI_ACTOR,
            [
                HouseholdSignal(HouseholdKey("530102001201", "0001"), (REASON,)),
                HouseholdSignal(HouseholdKey("530102002301", "0009"), (REASON,)),
            ],
            origin="dept:education:2026-01",
        )
    add_account(app, "reviewer", role="township_reviewer", area="530102001")
    reviewer = browser_for("reviewer")
    page = text(reviewer.get("/tasks"))
    assert "核查任务" in page and "疑似辍学" in page and "已逾期" in page
    assert "0001" in page and "0009" not in page
    assert len(made.created) == 2
    with app.app_context():
        listed = tasks.list_tasks(base, _cli(), village="530102001201")["items"]
        own = listed[0]["id"]
        _work(app, own, "530102001201", "0001", {"outcome": "already_solved", "note": "已返校"})
    worked = text(reviewer.get("/tasks?status=worked"))
    assert "<strong>问题已解决</strong>：已返校" in worked and "确认并关闭" in worked
    refused = reviewer.post(f"/tasks/{own}/close", {}, csrf=False)
    assert refused.status_code == 400  # no CSRF token: refused, nothing closed
    closed = reviewer.post(f"/tasks/{own}/close", {})
    assert closed.status_code == 302
    assert "已关闭" in text(reviewer.get("/tasks?status=closed"))
    again = reviewer.post(f"/tasks/{own}/close", {})
    assert again.status_code == 409 and "只有已核查的任务才能关闭" in text(again)


def _cli() -> Principal:
    return CLI_PRINCIPAL


def test_a_village_level_task_shows_its_village_and_no_household(
    app: Flask, browser_for: Callable[[str], Browser]
) -> None:
    stranger = TaskReason(
        "department_not_in_roster",
        "dept:medical_insurance",
        "医保名单第9行的赵六不在本村花名册中，请核实名单人员是否为本村人员",
        "row 9 of the medical insurance list is not in the village's roster",
        {"excel_row": 9},
    )
    with app.app_context():
        tasks.open_tasks(
            app.extensions[EXTENSION_KEY],
            CLI_ACTOR,
            [HouseholdSignal(HouseholdKey("530102001201", ""), (stranger,), subject="person:z6")],
            origin="department_round:1",
        )
    add_account(app, "admin")
    page = text(browser_for("admin").get("/tasks"))
    assert "村级任务（核实名单人员是否为本村人员）" in page and "赵六" in page
