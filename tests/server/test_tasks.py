"""Verification tasks (issue 17): one open task per household, deadlines in working days,
escalation to the township, role scoping, the ``tasks`` download stream and outcomes coming back
as ordinary records — on SQLite and PostgreSQL, through the real services, API and sync."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from forms.instruments import builtin_json
from forms.verification import FORM_ID, outcome_household_no, outcome_record_id, outcome_round
from server import jobs
from server.errors import ValidationFailed
from server.services import tasks
from server.services.access import (
    CLI_ACTOR,
    SCHEDULER_ACTOR,
    TOWNSHIP_REVIEWER,
    Principal,
)
from server.services.context import EXTENSION_KEY, ServiceContext
from server.services.task_reasons import HouseholdKey, HouseholdSignal, TaskReason
from server.storage import audit as audit_store
from tests.server.conftest import add_user, login
from tests.server.sync_device import (
    FAR_VILLAGE,
    OTHER_VILLAGE,
    TOWNSHIP,
    VILLAGE,
    SyncDevice,
    county,  # noqa: F401 - fixture
)

INSURED = TaskReason(
    "insurance_not_enrolled",
    "dept:medical_insurance",
    "户籍成员在医保名单中未参保",
    "a member is not enrolled in medical insurance",
    {"member": "张三", "id_number": "530102199001011234"},
)
DROPOUT = TaskReason(
    "suspected_dropout",
    "dept:education",
    "教育部门名单显示疑似辍学",
    "the education list shows a suspected dropout",
    {"member": "李四"},
)
INCOME_DROP = TaskReason("income_drop", "round", "收入骤减", "income fell sharply", {"ratio": 0.4})


def _ctx(app: Flask) -> ServiceContext:
    context: ServiceContext = app.extensions[EXTENSION_KEY]
    return context


def _at(app: Flask, when: datetime) -> ServiceContext:
    base = _ctx(app)
    return ServiceContext(settings=base.settings, keys=base.keys, clock=lambda: when)


def _signal(village: str, number: str, *reasons: TaskReason) -> HouseholdSignal:
    return HouseholdSignal(HouseholdKey(village, number), tuple(reasons))


# --- pure: working days ----------------------------------------------------------------------


def test_working_deadline_skips_weekends_and_holidays() -> None:
    thursday = date(2026, 10, 1)
    assert thursday.weekday() == 3
    assert tasks.working_deadline(thursday, 1) == date(2026, 10, 2)  # Friday
    assert tasks.working_deadline(thursday, 2) == date(2026, 10, 5)  # over the weekend
    holidays = [date(2026, 10, 2), date(2026, 10, 5), date(2026, 10, 6)]
    assert tasks.working_deadline(thursday, 2, holidays) == date(2026, 10, 8)
    assert tasks.working_deadline(thursday, 0) == thursday
    saturday = date(2026, 10, 3)
    assert tasks.working_deadline(saturday, 1) == date(2026, 10, 5)


# --- merge rules -----------------------------------------------------------------------------


def test_one_open_task_per_household_carrying_every_reason(county: Flask) -> None:  # noqa: F811
    app = county
    monday = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # 10:00 Beijing, a Monday
    ctx = _at(app, monday)
    with app.app_context():
        first = tasks.open_tasks(
            ctx,
            CLI_ACTOR,
            [_signal(VILLAGE, "H1", INSURED), _signal(VILLAGE, "H2", INSURED)],
            origin="dept:medical_insurance:2026-11",
        )
        assert len(first.created) == 2 and not first.extended

        again = tasks.open_tasks(
            ctx,
            CLI_ACTOR,
            [_signal(VILLAGE, "H1", INSURED)],
            origin="dept:medical_insurance:2026-11",
        )
        assert again.created == [] and again.extended == [] and again.unchanged == 1

        other = tasks.open_tasks(
            ctx, CLI_ACTOR, [_signal(VILLAGE, "H1", DROPOUT)], origin="dept:education:2026-11"
        )
        assert other.created == [] and len(other.extended) == 1

        listed = tasks.list_tasks(ctx, _principal(), village=VILLAGE)
    assert listed["total"] == 2
    h1 = next(t for t in listed["items"] if t["household_no"] == "H1")
    assert [r["code"] for r in h1["reasons"]] == ["insurance_not_enrolled", "suspected_dropout"]
    assert h1["origins"] == ["dept:medical_insurance:2026-11", "dept:education:2026-11"]
    # Ten working days (the default) after Monday 2026-11-30: Monday 2026-12-14.
    assert h1["deadline"] == date(2026, 12, 14)
    # An ID number that slipped into the details is masked before it is stored.
    assert h1["reasons"][0]["details"]["id_number"] == "530102********1234"


def test_a_worked_task_is_not_extended_a_new_finding_opens_a_new_task(
    county: Flask,  # noqa: F811
) -> None:
    app = county
    ctx = _ctx(app)
    with app.app_context():
        created = tasks.open_tasks(ctx, CLI_ACTOR, [_signal(VILLAGE, "H1", INSURED)], origin="o1")
        task_id = created.created[0]
        _work(app, task_id, VILLAGE, "H1", {"outcome": "already_solved", "note": "已参保"})
        shown = tasks.show_task(ctx, _principal(), task_id)
        assert shown["status"] == "worked" and shown["outcome"]["outcome"] == "already_solved"

        # The same reason from the same run: still nothing new, even with the task worked.
        rerun = tasks.open_tasks(ctx, CLI_ACTOR, [_signal(VILLAGE, "H1", INSURED)], origin="o1")
        assert rerun.created == [] and rerun.unchanged == 1
        # A new run's finding opens a second task; the worked one keeps its outcome.
        later = tasks.open_tasks(
            ctx, CLI_ACTOR, [_signal(VILLAGE, "H1", INCOME_DROP)], origin="round:2026-12"
        )
        assert len(later.created) == 1 and later.created[0] != task_id
        assert tasks.show_task(ctx, _principal(), task_id)["status"] == "worked"


def test_bad_signals_are_refused_clearly(county: Flask) -> None:  # noqa: F811
    from server.errors import ValidationFailed

    with county.app_context():
        with pytest.raises(ValidationFailed):
            tasks.open_tasks(_ctx(county), CLI_ACTOR, [_signal("5301", "H1", INSURED)], origin="o")
        with pytest.raises(ValidationFailed):
            tasks.open_tasks(_ctx(county), CLI_ACTOR, [_signal(VILLAGE, "H1", INSURED)], origin="")


# --- escalation ------------------------------------------------------------------------------


def test_overdue_tasks_escalate_to_the_township_once(county: Flask) -> None:  # noqa: F811
    app = county
    app.config["TASK_HOLIDAYS"] = "2026-12-01"
    opened = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    with app.app_context():
        made = tasks.open_tasks(
            _at(app, opened),
            CLI_ACTOR,
            [_signal(VILLAGE, "H1", INSURED), _signal(FAR_VILLAGE, "H9", INSURED)],
            origin="o1",
        )
        shown = tasks.show_task(_ctx(app), _principal(), made.created[0])
        # 2026-12-01 is a holiday: ten working days end on Tuesday 2026-12-15.
        assert shown["deadline"] == date(2026, 12, 15)

    on_deadline = datetime(2026, 12, 15, 1, 0, tzinfo=UTC)
    assert jobs.run_job(app, "escalate_overdue_tasks", on_deadline) == {
        "escalated": 0,
        "townships": [],
    }
    with app.app_context():
        tasks.open_tasks(_ctx(app), CLI_ACTOR, [_signal(OTHER_VILLAGE, "H5", DROPOUT)], origin="o2")
    after = datetime(2026, 12, 16, 1, 0, tzinfo=UTC)
    with app.app_context():
        result = tasks.escalate_overdue(_ctx(app), SCHEDULER_ACTOR, after)
        assert result == {"escalated": 2, "townships": [TOWNSHIP, FAR_VILLAGE[:9]]}
        assert tasks.escalate_overdue(_ctx(app), SCHEDULER_ACTOR, after)["escalated"] == 0
        entries = [e for e in audit_store.list_entries(TOWNSHIP) if e.action == "task.escalated"]
        reviewer = Principal(7, "reviewer", TOWNSHIP_REVIEWER, TOWNSHIP)
        escalated = tasks.list_tasks(_ctx(app), reviewer, escalated=True)
        still_open = tasks.list_tasks(_ctx(app), reviewer, escalated=False)
    assert len(entries) == 1 and entries[0].details["tasks"] == 1
    # The township reviewer sees its escalated task (not the other township's), flagged.
    assert [t["household_no"] for t in escalated["items"]] == ["H1"]
    assert escalated["items"][0]["escalated_at"] is not None
    assert [t["household_no"] for t in still_open["items"]] == ["H5"]


# --- the API, scoped by role -----------------------------------------------------------------


def test_township_reviewer_sees_only_its_townships(
    county: Flask,  # noqa: F811
    client: FlaskClient,
) -> None:
    app = county
    add_user(app, "reviewer", role="township_reviewer", area=TOWNSHIP)
    add_user(app, "admin")
    with app.app_context():
        made = tasks.open_tasks(
            _at(app, datetime(2026, 1, 5, 2, tzinfo=UTC)),
            CLI_ACTOR,
            [_signal(VILLAGE, "H1", INSURED), _signal(FAR_VILLAGE, "H9", INSURED)],
            origin="o1",
        )
    assert len(made.created) == 2
    reviewer = login(client, "reviewer")
    listed = client.get("/api/v1/tasks?status=open", headers=reviewer).get_json()
    assert [t["household_no"] for t in listed["items"]] == ["H1"]
    assert listed["items"][0]["overdue"] is True  # opened in January, long past its deadline
    admin = login(client, "admin")
    everything = client.get("/api/v1/tasks", headers=admin).get_json()
    assert everything["total"] == 2
    far_id = next(t["id"] for t in everything["items"] if t["household_no"] == "H9")
    response = client.get(f"/api/v1/tasks/{far_id}", headers=reviewer)
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "task_not_found"
    assert client.get(f"/api/v1/tasks/{far_id}", headers=admin).status_code == 200
    overdue = client.get("/api/v1/tasks?overdue=true", headers=admin).get_json()
    assert overdue["total"] == 2
    refused = client.post(f"/api/v1/tasks/{far_id}/close", headers=admin)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "task_not_worked"
    assert client.get("/api/v1/tasks?status=nope", headers=admin).status_code == 400
    exported = client.get("/api/v1/tasks/outcomes?department=medical_insurance", headers=admin)
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(exported.get_data().decode("utf-8-sig"))))
    assert sorted(row[2] for row in rows[1:]) == ["H1", "H9"]
    xlsx = client.get("/api/v1/tasks/outcomes?department=education&format=xlsx", headers=admin)
    assert xlsx.status_code == 200 and xlsx.get_data()[:2] == b"PK"
    denied = client.get("/api/v1/tasks/outcomes?department=education", headers=reviewer)
    assert denied.status_code == 403
    unknown = client.get("/api/v1/tasks/outcomes?department=tax", headers=admin)
    assert unknown.status_code == 400
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    assert "/api/v1/tasks" in paths and "/api/v1/tasks/{task_id}" in paths


# --- the download stream and outcomes coming back over sync -------------------------------------


def test_tasks_stream_reaches_only_devices_that_ask_within_their_scope(
    county: Flask,  # noqa: F811
    client: FlaskClient,
    admin_headers: dict[str, str],
) -> None:
    app = county
    with app.app_context():
        made = tasks.open_tasks(
            _ctx(app),
            CLI_ACTOR,
            [_signal(VILLAGE, "H1", INSURED, DROPOUT), _signal(OTHER_VILLAGE, "H2", INSURED)],
            origin="o1",
        )
    old = SyncDevice.enroll(client, admin_headers, VILLAGE)
    reply = old.sync()
    assert [p.scope for p in reply.downloads] == [VILLAGE, "manifest"]  # an old device: no tasks

    device = SyncDevice.enroll(client, admin_headers, VILLAGE)
    device.cursors["tasks"] = 0
    reply = device.sync()
    page = next(p for p in reply.downloads if p.scope == "tasks")
    assert [t["household"]["household_no"] for t in page.tasks] == ["H1"]
    entry = page.tasks[0]
    assert entry["task_id"] in made.created
    assert [r["code"] for r in entry["reasons"]] == ["insurance_not_enrolled", "suspected_dropout"]
    assert entry["reasons"][0]["message"]["zh"] == "户籍成员在医保名单中未参保"
    assert "530102199001011234" not in str(entry)
    assert entry["record_id"] == outcome_record_id(entry["task_id"])
    cursor = page.next_cursor
    assert device.cursors["tasks"] == cursor > 0
    assert not next(p for p in device.sync().downloads if p.scope == "tasks").tasks

    # The outcome comes back as an ordinary record; the task is worked in the same transaction.
    device.put(
        entry["record_id"],
        FORM_ID,
        {
            "task_id": entry["task_id"],
            "outcome": "data_error",
            "data_error": "death",
            "note": "户主已故",
        },
        household=entry["household"],
        round=entry["round"],
        version=int(builtin_json(FORM_ID)["version"]),
    )
    reply = device.sync()
    assert reply.acks[0].acks[0].status == "applied"
    again = next(p for p in reply.downloads if p.scope == "tasks")
    assert again.tasks[0]["status"] == "worked" and again.tasks[0]["revision"] > cursor
    assert again.tasks[0]["outcome"]["data_error"] == "death"

    with app.app_context():
        body = tasks.export_outcomes(CLI_ACTOR, "medical_insurance")
        education = tasks.export_outcomes(CLI_ACTOR, "education", fmt="csv")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0][:3] == ["任务编号", "行政区划代码", "户编号"]
    by_household = {row[2]: row for row in rows[1:]}
    assert by_household["H1"][7:10] == ["data_error", "数据错误：人员已死亡", "death"]
    assert by_household["H2"][6:8] == ["open", ""]
    assert [r[2] for r in list(csv.reader(io.StringIO(education.decode("utf-8-sig"))))[1:]] == [
        "H1"
    ]


def test_an_outcome_under_another_record_id_changes_no_task(county: Flask) -> None:  # noqa: F811
    app = county
    with app.app_context():
        task_id = tasks.open_tasks(
            _ctx(app), CLI_ACTOR, [_signal(VILLAGE, "H1", INSURED)], origin="o1"
        ).created[0]
        _work(app, task_id, VILLAGE, "H1", {"outcome": "not_eligible"}, derived=False)
        assert tasks.show_task(_ctx(app), _principal(), task_id)["status"] == "open"
        _work(app, task_id, OTHER_VILLAGE, "H1", {"outcome": "not_eligible"})
        assert tasks.show_task(_ctx(app), _principal(), task_id)["status"] == "open"


# --- helpers -----------------------------------------------------------------------------------


def _principal() -> Any:
    from server.services.access import CLI_PRINCIPAL

    return CLI_PRINCIPAL


def _work(
    app: Flask,
    task_id: str,
    village: str,
    number: str,
    data: dict[str, Any],
    *,
    derived: bool = True,
) -> None:
    """Apply a verification-outcome op through the one write path (as a sync batch would)."""
    import uuid

    from server.services.checking import ingest_context
    from server.services.record_ops import apply_ops, server_stamp
    from server.storage.database import writing
    from sync_protocol.ops import put_op

    rid = outcome_record_id(task_id) if derived else str(uuid.uuid4())
    changes = {"task_id": task_id, **data}
    op = put_op(
        device_id="server",
        seq=1,
        record_id=rid,
        form_id=FORM_ID,
        form_version=int(builtin_json(FORM_ID)["version"]),
        changes=changes,
        base=dict.fromkeys(changes),
        hlc=server_stamp(),
        base_revision=0,
        household={"village_code": village, "household_no": number},
        round=outcome_round(task_id) + ("x" if village != VILLAGE else ""),
    )
    with writing():
        outcomes = apply_ops([op], ingest_context(), scope=None, by="test")
    assert outcomes[0].status == "applied", outcomes[0].ack


def test_a_worked_task_closes_once_and_a_closed_task_keeps_its_outcome(
    county: Flask,  # noqa: F811
    client: FlaskClient,
) -> None:
    app = county
    add_user(app, "reviewer", role="township_reviewer", area=TOWNSHIP)
    with app.app_context():
        task_id = tasks.open_tasks(
            _ctx(app), CLI_ACTOR, [_signal(VILLAGE, "H1", INSURED)], origin="o1"
        ).created[0]
        _work(app, task_id, VILLAGE, "H1", {"outcome": "already_monitored"})
        tasks.escalate_overdue(_ctx(app), SCHEDULER_ACTOR, datetime(2030, 1, 1, tzinfo=UTC))
    reviewer = login(client, "reviewer")
    # Worked before its deadline passed: not escalated (only open tasks go to the township).
    assert client.get("/api/v1/tasks?escalated=true", headers=reviewer).get_json()["total"] == 0
    closed = client.post(
        f"/api/v1/tasks/{task_id}/close", json={"note": "核实无误"}, headers=reviewer
    )
    assert closed.status_code == 200, closed.get_json()
    assert closed.get_json()["status"] == "closed" and closed.get_json()["closed_by"] == "reviewer"
    again = client.post(f"/api/v1/tasks/{task_id}/close", headers=reviewer)
    assert again.status_code == 409
    with app.app_context():
        from server.storage.database import writing
        from server.storage.records import get_record

        with writing():
            # A late edit of the outcome record (another tablet) no longer moves a closed task.
            assert get_record(outcome_record_id(task_id)) is not None
            assert (
                tasks.record_outcomes(
                    [
                        {
                            "record_id": outcome_record_id(task_id),
                            "form_id": FORM_ID,
                            "village_code": VILLAGE,
                            "household_no": "H1",
                            "deleted": False,
                            "data": {"task_id": task_id, "outcome": "not_eligible"},
                        }
                    ]
                )
                == []
            )
        shown = tasks.show_task(_ctx(app), _principal(), task_id)
    assert shown["status"] == "closed" and shown["outcome"]["outcome"] == "already_monitored"
    entries = client.get("/api/v1/tasks?status=closed", headers=reviewer).get_json()["items"]
    assert [t["id"] for t in entries] == [task_id]


def test_the_outcome_export_makes_a_formula_note_inert(county: Flask) -> None:  # noqa: F811
    app = county
    with app.app_context():
        task_id = tasks.open_tasks(
            _ctx(app), CLI_ACTOR, [_signal(VILLAGE, "H1", INSURED)], origin="o1"
        ).created[0]
        _work(app, task_id, VILLAGE, "H1", {"outcome": "not_eligible", "note": "=HYPERLINK(1)"})
        body = tasks.export_outcomes(CLI_ACTOR, "medical_insurance", fmt="xlsx")
    import openpyxl

    sheet = openpyxl.load_workbook(io.BytesIO(body)).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[1][10] == "'=HYPERLINK(1)"
    assert sheet.title == "医保"


# --- village-level tasks (a listed person the roster lacks) -------------------------------------

STRANGER = TaskReason(
    "department_not_in_roster",
    "dept:medical_insurance",
    "医保名单第23行的李四不在本村花名册中，请核实名单人员是否为本村人员",
    "row 23 of the medical insurance list is not in the village's roster; please verify",
    {"excel_row": 23, "name": "李四", "id_number": "530102********0012"},
)


def _stranger(subject: str = "person:li-si", reason: TaskReason = STRANGER) -> HouseholdSignal:
    return HouseholdSignal(HouseholdKey(VILLAGE, ""), (reason,), subject=subject)


def test_a_listed_stranger_is_a_village_task_one_open_per_person(county: Flask) -> None:  # noqa: F811
    from server.storage.database import db
    from server.storage.models import Household

    app = county
    ctx = _ctx(app)
    with app.app_context():
        first = tasks.open_tasks(
            ctx, CLI_ACTOR, [_stranger(), _stranger("person:wang-wu")], origin="round:1"
        )
        assert len(first.created) == 2
        assert tasks.open_tasks(ctx, CLI_ACTOR, [_stranger()], origin="round:1").unchanged == 1
        # Next month's list brings the same person again: the open task takes the reason.
        later = TaskReason(**{**STRANGER.__dict__, "details": {**STRANGER.details, "excel_row": 9}})
        again = tasks.open_tasks(ctx, CLI_ACTOR, [_stranger(reason=later)], origin="round:2")
        assert again.created == [] and again.extended == [first.created[0]]
        shown = tasks.show_task(ctx, _principal(), first.created[0])
        assert shown["level"] == "village" and shown["household_no"] is None
        assert len(shown["reasons"]) == 2
        # A village-level signal without a subject is refused.
        with pytest.raises(ValidationFailed):
            tasks.open_tasks(ctx, CLI_ACTOR, [_stranger("")], origin="round:3")

        # The tablet files the outcome under the task's own 户编号; the task is worked and no
        # household appears for it (not in the households table, not on the dashboard).
        task_id = first.created[0]
        entry = tasks.device_entry(store_task(task_id))
        assert entry["level"] == "village"
        number = entry["household"]["household_no"]
        assert number == outcome_household_no(task_id) and number.startswith("task-")
        _work(app, task_id, VILLAGE, number, {"outcome": "not_village_resident", "note": "外村人"})
        shown = tasks.show_task(ctx, _principal(), task_id)
        assert shown["status"] == "worked" and shown["outcome"]["outcome"] == "not_village_resident"
        assert db.session.query(Household).filter_by(household_no=number).count() == 0
        from server.storage.models import HouseholdIndicatorRow

        assert db.session.query(HouseholdIndicatorRow).filter_by(household_no=number).count() == 0
        # Filed under a real household's number instead, the outcome changes nothing.
        other = first.created[1]
        _work(app, other, VILLAGE, "H1", {"outcome": "add_to_roster"})
        assert tasks.show_task(ctx, _principal(), other)["status"] == "open"


def store_task(task_id: str) -> Any:
    from server.storage import tasks as task_store

    found = task_store.get_task(task_id)
    assert found is not None
    return found
