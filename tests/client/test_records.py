"""Offline fill and edit: validation on the device, ops with the right seq and base, drafts."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from forms.definition import FieldType
from forms.identity import id_check_char
from forms.instruments import BUILTIN_IDS, builtin_json
from forms.paths import flatten
from sync_protocol.clock import Stamp
from sync_protocol.crypto import generate_server_keys
from sync_protocol.merge import RecordState, merge
from sync_protocol.ops import TOMBSTONE
from tests.client.conftest import START_MS, FakeClock
from village_client_stub.errors import BadAssignment, BadInput, RecordInvalid, UnknownRecord
from village_client_stub.records import (
    RecordEditor,
    coerce_value,
    default_round,
    parse_assignment,
    parse_household,
)
from village_client_stub.store import DeviceStore

TODAY = date(2026, 11, 25)
HOUSEHOLD = {"village_code": "530102001201", "household_no": "0001"}


def id_number(birth: str, serial: str = "001") -> str:
    first17 = "530102" + birth + serial
    return first17 + id_check_char(first17)


def member(name: str, relation: str, sex: str, birth: str, **extra: Any) -> dict[str, Any]:
    row = {
        "name": name,
        "id_type": "resident_id",
        "id_number": id_number(birth, "003" if sex == "男" else "002"),
        "relation": relation,
        "sex": sex,
        "education_level": "初中",
        "health": ["健康"],
        "labour_capacity": "普通劳动力",
    }
    row.update(extra)
    return row


def roster() -> dict[str, Any]:
    return {
        **HOUSEHOLD,
        "household_type": "脱贫户",
        "members": [
            member("张三", "户主", "男", "19700101"),
            member("李梅", "配偶", "女", "19720305"),
        ],
    }


@pytest.fixture
def editor(store: DeviceStore) -> RecordEditor:
    for form_id in BUILTIN_IDS:
        store.put_form(builtin_json(form_id))
    return RecordEditor(store, today=TODAY)


class Server:
    """The server's half of an exchange, done with the real merge: ops in, record states out."""

    def __init__(self) -> None:
        self.states: dict[str, RecordState] = {}

    def exchange(self, store: DeviceStore) -> list[dict[str, Any]]:
        """Deliver the device's outstanding ops, ack them, and send every touched state back."""
        ops = store.pending_ops()
        store.mark_sent([o.seq for o in ops])
        acks = []
        for op in ops:
            defn = store.form(op.form_id, op.form_version)
            result = merge(
                self.states.get(op.record_id),
                op,
                defn.merge_policy,
                reference_ms=Stamp.parse(op.hlc).ms,
            )
            state = result.state
            if result.changed:
                state.revision += 1
            self.states[op.record_id] = state
            acks.append(
                {
                    "seq": op.seq,
                    "status": result.status,
                    "conflict_ids": [c.conflict_id for c in result.conflicts],
                    "revision": state.revision,
                }
            )
        store.mark_acked([o.seq for o in ops], acks)
        for record_id in {o.record_id for o in ops}:
            store.apply_server_state(self.states[record_id].to_dict())
        return acks

    def send(self, store: DeviceStore, record_id: str) -> None:
        """Download one record's state to a device."""
        store.apply_server_state(self.states[record_id].to_dict())


def _ack_and_sync(store: DeviceStore) -> None:
    Server().exchange(store)


# --- fill ---------------------------------------------------------------------------------------


def test_fill_queues_one_put_with_fresh_stamp_and_no_base(
    editor: RecordEditor, store: DeviceStore
) -> None:
    result = editor.fill("household_roster", roster())
    op = result.op
    assert op is not None and op.seq == 1 and op.kind == "put"
    assert op.device_id == store.device_id
    assert op.base_revision == 0
    assert op.household == HOUSEHOLD and op.round == default_round(TODAY) == "2026-annual"
    assert set(op.base) == set(op.changes) and all(v is None for v in op.base.values())
    record = store.record(result.record_id)
    assert op.changes == {p: v for p, v in flatten(record.data).items() if v is not None}
    # Every repeat row got a device-made id, and the rows keep their order.
    names = [m["name"] for m in record.data["members"]]
    assert names == ["张三", "李梅"] and all(m["_id"] for m in record.data["members"])
    assert Stamp.parse(op.hlc).node == store.device_id
    assert [o.seq for o in store.pending_ops()] == [1]


def test_fill_computes_derived_values(editor: RecordEditor, store: DeviceStore) -> None:
    data = {
        "supply_type": "集中供水入户",
        "litres_per_person_day": 60,
        "quality_method": "检测报告",
        "quality_ok": True,
        "interruption_days": 3,
    }
    result = editor.fill("drinking_water", data, household=HOUSEHOLD)
    record = store.record(result.record_id)
    assert record.data["quantity_ok"] is True
    assert record.data["water_safe"] is True
    assert result.op is not None and result.op.changes["water_safe"] is True
    # A calculated value follows its inputs on the next edit, in the same op.
    edited = editor.edit(result.record_id, ["litres_per_person_day=10"])
    assert edited.op is not None
    assert edited.op.changes["quantity_ok"] is False
    assert edited.op.changes["water_safe"] is False


def test_invalid_fill_keeps_everything_typed_as_a_draft(
    editor: RecordEditor, store: DeviceStore
) -> None:
    typed = roster()
    typed["members"][1]["relation"] = "户主"  # two heads of household
    typed["members"][0]["work_months"] = 14
    with pytest.raises(RecordInvalid) as info:
        editor.fill("household_roster", typed)
    error = info.value
    assert "户主" in " ".join(i["message"]["zh"] for i in error.issues)
    assert "草稿" in error.message_zh
    assert store.pending_ops() == [] and store.records() == []
    assert store.sync_state().last_seq == 0
    draft = store.draft(error.draft_id)
    assert draft is not None and draft.record_id is None
    assert [m["name"] for m in draft.data["members"]] == ["张三", "李梅"]
    assert draft.data["members"][0]["work_months"] == 14
    assert draft.issues and all(i["severity"] == "error" for i in draft.issues)
    # Correcting the draft turns it into the record; the draft is gone, the op is seq 1.
    result = editor.edit(
        error.draft_id,
        ["members/#2/relation=配偶", "members/#1/work_months=", "members/#1/work_location="],
    )
    assert result.op is not None and result.op.seq == 1
    assert store.draft(error.draft_id) is None
    assert store.record(result.record_id).data["members"][1]["relation"] == "配偶"


def test_a_failed_correction_updates_the_same_draft(
    editor: RecordEditor, store: DeviceStore
) -> None:
    with pytest.raises(RecordInvalid) as first:
        editor.fill("housing_safety", {"appraisal_grade": "C"}, household=HOUSEHOLD)
    with pytest.raises(RecordInvalid) as second:
        editor.edit(first.value.draft_id, ["build_year=1850"])
    assert second.value.draft_id == first.value.draft_id
    assert len(store.drafts()) == 1
    assert store.drafts()[0].data == {"appraisal_grade": "C", "build_year": 1850}


def test_household_forms_need_a_household(editor: RecordEditor, store: DeviceStore) -> None:
    with pytest.raises(RecordInvalid) as info:
        editor.fill("housing_safety", {"appraisal_grade": "A", "structure": "钢筋混凝土"})
    assert info.value.issues[0]["code"] == "household_required"
    assert store.drafts()[0].data["appraisal_grade"] == "A"
    with pytest.raises(BadInput):
        editor.fill(
            "household_roster",
            roster(),
            household={"village_code": "530102001201", "household_no": "0999"},
        )


# --- edit ---------------------------------------------------------------------------------------


def test_edit_sends_only_what_changed_with_the_right_base(
    editor: RecordEditor, store: DeviceStore
) -> None:
    created = editor.fill("household_roster", roster())
    assert created.op is not None
    # Before any sync, the base of a path is the device's own pending write.
    first = editor.edit(created.record_id[:8], ["phone=13800138000"])
    assert first.op is not None and first.op.seq == 2
    assert first.op.changes == {"phone": "13800138000"}
    assert first.op.base == {"phone": None}
    second = editor.edit(created.record_id, ["phone=13900139000", "household_type=普通农户"])
    assert second.op is not None and second.op.seq == 3
    assert second.op.base == {"phone": first.op.hlc, "household_type": created.op.hlc}
    # After the server acknowledged and echoed the record, bases are the server's stamps.
    _ack_and_sync(store)
    third = editor.edit(created.record_id, ["natural_village=上村"])
    assert third.op is not None
    assert third.op.base == {"natural_village": None}
    assert third.op.base_revision == 3  # three ops merged, each a new revision
    fourth = editor.edit(created.record_id, ["phone=13700137000"])
    assert fourth.op is not None and fourth.op.base == {"phone": second.op.hlc}
    assert [o.seq for o in store.pending_ops()] == [4, 5]


def test_edit_inside_repeat_rows_add_and_delete(editor: RecordEditor, store: DeviceStore) -> None:
    created = editor.fill("household_roster", roster())
    assert created.op is not None
    _ack_and_sync(store)
    record = store.record(created.record_id)
    head_id, spouse_id = (m["_id"] for m in record.data["members"])

    edited = editor.edit(created.record_id, [f"members/{head_id[:6]}/labour_capacity=技能劳动力"])
    assert edited.op is not None
    path = f"members/{head_id}/labour_capacity"
    assert edited.op.changes == {path: "技能劳动力"}
    assert edited.op.base == {path: created.op.hlc}

    child = member("张小", "之子", "男", "20150601", education_level=None, schooling="小学")
    assignments = [
        f"members/+1/{k}={','.join(v) if isinstance(v, list) else v}" for k, v in child.items() if v
    ]
    added = editor.edit(created.record_id, assignments)
    assert added.op is not None
    (new_row,) = {p.split("/")[1] for p in added.op.changes}
    assert new_row not in (head_id, spouse_id)
    assert added.op.changes[f"members/{new_row}/_order"] == 2
    assert added.op.changes[f"members/{new_row}/name"] == "张小"
    assert all(v is None for v in added.op.base.values())

    removed = editor.edit(created.record_id, deletions=[f"members/{spouse_id}"])
    assert removed.op is not None
    assert removed.op.changes == {f"members/{spouse_id}": TOMBSTONE}
    # The delete lists what it saw under the row, so an unseen edit there becomes a conflict.
    assert removed.op.base[f"members/{spouse_id}/name"] == created.op.hlc
    assert removed.op.base[f"members/{spouse_id}"] is None
    names = [m["name"] for m in store.record(created.record_id).data["members"]]
    assert names == ["张三", "张小"]
    assert [o.seq for o in store.pending_ops()] == [2, 3, 4]


def test_invalid_edit_keeps_the_record_and_drafts_the_change(
    editor: RecordEditor, store: DeviceStore
) -> None:
    created = editor.fill("household_roster", roster())
    before = store.record(created.record_id).data
    with pytest.raises(RecordInvalid) as info:
        editor.edit(created.record_id, ["members/#1/relation=之子"])  # no head left
    assert store.record(created.record_id).data == before
    assert [o.seq for o in store.pending_ops()] == [1]
    draft = store.draft(info.value.draft_id)
    assert draft is not None and draft.record_id == created.record_id
    assert draft.data["members"][0]["relation"] == "之子"
    fixed = editor.edit(draft.draft_id, ["members/#2/relation=户主", "members/#2/sex=女"])
    assert fixed.op is not None and fixed.op.seq == 2
    assert store.draft(draft.draft_id) is None


def test_a_rejected_op_is_corrected_by_the_next_edit(
    editor: RecordEditor, store: DeviceStore
) -> None:
    created = editor.fill("household_roster", roster())
    _ack_and_sync(store)
    wrong = editor.edit(created.record_id, ["phone=13800138000", "natural_village=下村"])
    assert wrong.op is not None
    store.mark_sent([wrong.op.seq])
    store.mark_acked(
        [wrong.op.seq],
        [{"seq": wrong.op.seq, "status": "rejected", "reasons": [{"code": "constraint"}]}],
    )
    assert store.status()["rejected"][0]["seq"] == wrong.op.seq
    fixed = editor.edit(created.record_id, ["phone=13900139000"])
    assert fixed.op is not None
    # The rejected write of natural_village never reached the server: it goes out again.
    assert fixed.op.changes == {"phone": "13900139000", "natural_village": "下村"}
    assert store.rejected_ops() == []
    (corrected,) = store.outbox(["corrected"])
    assert corrected.seq == wrong.op.seq and corrected.corrected_by == fixed.op.seq


def test_an_edit_that_changes_nothing_queues_nothing(
    editor: RecordEditor, store: DeviceStore
) -> None:
    created = editor.fill("household_roster", roster())
    result = editor.edit(created.record_id, ["household_type=脱贫户"])
    assert result.op is None
    assert [o.seq for o in store.pending_ops()] == [1]


@pytest.mark.parametrize(
    ("assignment", "code"),
    [
        ("no_such_field=1", "bad_assignment"),
        ("members/#9/name=王五", "bad_assignment"),
        ("members=1", "bad_assignment"),
        ("household_type=富裕户", "bad_assignment"),
        ("members/#1/work_months=很多", "bad_assignment"),
        ("missing-equals", "bad_assignment"),
        ("household_no/x=1", "bad_assignment"),
    ],
)
def test_bad_assignments_are_refused_with_a_chinese_message(
    editor: RecordEditor, store: DeviceStore, assignment: str, code: str
) -> None:
    created = editor.fill("household_roster", roster())
    with pytest.raises(BadAssignment) as info:
        editor.edit(created.record_id, [assignment])
    assert info.value.code == code
    assert any("\u4e00" <= ch <= "\u9fff" for ch in info.value.message_zh)
    assert [o.seq for o in store.pending_ops()] == [1]


def test_unknown_targets(editor: RecordEditor) -> None:
    with pytest.raises(UnknownRecord):
        editor.edit("nothing-like-this", ["phone=1"])


# --- typed values -------------------------------------------------------------------------------


def test_coerce_value_by_field_type(editor: RecordEditor, store: DeviceStore) -> None:
    roster_def = store.form("household_roster")
    water = store.form("drinking_water")
    housing = store.form("housing_safety")

    def field_of(defn: Any, kind: FieldType) -> Any:
        return next(f for _, f in defn.iter_fields() if f.type is kind and not f.calculate)

    integer = field_of(roster_def, FieldType.INTEGER)
    assert coerce_value(roster_def, integer, "１２") == 12  # full-width digits
    assert coerce_value(roster_def, integer, "") is None
    decimal = field_of(water, FieldType.DECIMAL)
    assert coerce_value(water, decimal, "35.5") == 35.5
    boolean = field_of(water, FieldType.BOOLEAN)
    assert coerce_value(water, boolean, "是") is True
    assert coerce_value(water, boolean, "no") is False
    multi = roster_def.field("members/health")
    assert coerce_value(roster_def, multi, "长期慢性病，残疾") == ["长期慢性病", "残疾"]
    select = roster_def.field("members/id_type")
    assert coerce_value(roster_def, select, "居民身份证") == "resident_id"  # by label
    date_field = field_of(housing, FieldType.DATE)
    assert coerce_value(housing, date_field, "2026-01-05") == "2026-01-05"
    with pytest.raises(BadAssignment):
        coerce_value(housing, date_field, "2026/13/40")
    with pytest.raises(BadAssignment):
        coerce_value(water, boolean, "maybe")


def test_parse_household_and_assignment() -> None:
    assert parse_household("530102001201/0007") == {
        "village_code": "530102001201",
        "household_no": "0007",
    }
    assert parse_household("５３０１０２００１２０１/7") == {
        "village_code": "530102001201",
        "household_no": "7",
    }
    for bad in ("5301/7", "530102001201", "530102001201/", "abc/1"):
        with pytest.raises(BadInput):
            parse_household(bad)
    assert parse_assignment("members/#1/name=张=三") == ("members/#1/name", "张=三")


def test_two_devices_meet_through_the_real_merge(
    editor: RecordEditor, store: DeviceStore, tmp_path: Path
) -> None:
    server = Server()
    created = editor.fill(
        "housing_safety",
        {"appraisal_grade": "B", "structure": "砖混（有构造柱/圈梁）", "storeys": 1},
        household=HOUSEHOLD,
    )
    server.exchange(store)
    other_clock = FakeClock(START_MS + 5_000)
    with DeviceStore.create(tmp_path / "other.db", now_ms=other_clock) as other:
        other.put_form(builtin_json("housing_safety"))
        server.send(other, created.record_id)
        assert other.record(created.record_id).data["appraisal_grade"] == "B"
        other_editor = RecordEditor(other, today=TODAY)
        # Both change the appraisal grade (a review field) while offline; the other device also
        # changes the number of storeys.
        editor.edit(created.record_id, ["appraisal_grade=D"])
        other_editor.edit(created.record_id, ["appraisal_grade=C", "storeys=2"])
        assert server.exchange(store)[0]["status"] == "applied"
        (ack,) = server.exchange(other)
        assert ack["status"] == "conflict" and len(ack["conflict_ids"]) == 1
        assert [c["conflict_id"] for c in other.conflicts()] == ack["conflict_ids"]
        assert other.pending_ops() == []
    # The first device learns of both: the other's storeys, and the open conflict.
    server.send(store, created.record_id)
    record = store.record(created.record_id)
    assert record.data["storeys"] == 2
    assert record.data["appraisal_grade"] in {"C", "D"}  # provisional until reviewed
    assert [c["conflict_id"] for c in store.conflicts()] == ack["conflict_ids"]
    assert store.status()["conflicts"][0]["record_id"] == created.record_id


def test_delete_a_record_lists_everything_it_saw(editor: RecordEditor, store: DeviceStore) -> None:
    created = editor.fill("household_roster", roster())
    _ack_and_sync(store)
    edited = editor.edit(created.record_id, ["phone=13800138000"])
    assert created.op is not None and edited.op is not None
    result = editor.delete(created.record_id)
    op = result.op
    assert op is not None and op.kind == "delete" and op.changes == {}
    assert op.base["phone"] == edited.op.hlc  # its own unsent write counts as seen
    assert op.base["household_type"] == created.op.hlc
    assert len(op.base) == len(flatten(store.record(created.record_id).data))
    assert store.records() == [] and store.record(created.record_id).deleted
    with pytest.raises(UnknownRecord):
        editor.edit(created.record_id, ["phone=1"])
    with pytest.raises(UnknownRecord):
        editor.delete(created.record_id)


def test_households_outside_the_enrolled_scope_are_refused(
    editor: RecordEditor, store: DeviceStore
) -> None:
    server_keys = generate_server_keys()
    store.set_enrollment(
        server_url="http://127.0.0.1:5000",
        server_encryption_public=server_keys.encryption_public.raw(),
        server_signing_public=server_keys.signing_public.raw(),
        server_key_id=server_keys.encryption_public.key_id(),
        scope="530102001",  # one township
    )
    outside = {"village_code": "530102002201", "household_no": "0001"}
    with pytest.raises(BadInput) as info:
        editor.fill("housing_safety", {"appraisal_grade": "A"}, household=outside)
    assert "数据范围" in info.value.message_zh
    assert editor.fill("household_roster", roster()).op is not None


def test_household_numbers_and_rounds_not_of_their_shape_are_refused(
    editor: RecordEditor, store: DeviceStore
) -> None:
    """Leak 4: a household number or round that a spreadsheet would run never leaves the device."""
    for bad in ("530102001201/=HYPERLINK(1)", "530102001201/@x", "530102001201/a b"):
        with pytest.raises(BadInput):
            parse_household(bad)
    household = {"village_code": "530102001201", "household_no": "0007"}
    for bad_round in ("=1+1", "-2026", "2026 annual"):
        with pytest.raises(BadInput):
            editor.fill(
                "housing_safety", {"appraisal_grade": "A"}, household=household, round=bad_round
            )
    with pytest.raises(BadInput):
        editor.fill(
            "household_roster",
            {**roster(), "household_no": "+SUM(1)"},
        )


# --- ID numbers in standard form --------------------------------------------------------------


def _ending_in_x(birth: str) -> str:
    for sequence in range(100):
        first17 = f"530102{birth}{sequence:02d}3"  # 3: odd, a man
        if id_check_char(first17) == "X":
            return first17 + "X"
    raise AssertionError("no sequence gives a check character X")


def test_the_op_keeps_the_typed_id_and_the_record_the_standard_form(
    editor: RecordEditor, store: DeviceStore
) -> None:
    standard = _ending_in_x("19700101")
    typed = "".join(chr(ord(c) + 0xFEE0) for c in standard[:17]) + "x"  # full-width, lower x
    data = roster()
    data["members"][0]["id_number"] = typed
    created = editor.fill("household_roster", data)
    record = store.record(created.record_id)
    row = record.data["members"][0]["_id"]
    assert record.data["members"][0]["id_number"] == standard
    assert created.op is not None
    assert created.op.changes[f"members/{row}/id_number"] == typed

    # The same number in another spelling is no change; a new number goes out as typed.
    assert editor.edit(created.record_id, [f"members/#1/id_number={standard.lower()}"]).op is None
    other = _ending_in_x("19700102")
    edited = editor.edit(created.record_id, [f"members/#1/id_number={other.lower()}"])
    assert edited.op is not None
    assert edited.op.changes == {f"members/{row}/id_number": other.lower()}
    assert store.record(created.record_id).data["members"][0]["id_number"] == other
