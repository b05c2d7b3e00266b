"""Interactive ``fill``: questions follow skip logic, answers are checked as they are typed.

Driven three ways: in-process with text streams, through a pipe into the real console script,
and through a real pseudo-terminal, answering each question only once it has been asked.
"""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from forms.expressions import EvaluationContext
from forms.instruments import BUILTIN_IDS, builtin_json, load_builtin
from tests.client.test_records import id_number
from village_client_stub.prompts import FormPrompter, InputEnded, LineReader
from village_client_stub.store import DeviceStore

VILLAGE_DEVICE = Path(sys.executable).with_name("village-device")
ENV = {**os.environ, "PYTHONIOENCODING": "utf-8", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


def label(form_id: str, path: str) -> str:
    fld = load_builtin(form_id).field(path)
    assert fld.label is not None
    return fld.label.zh


@pytest.fixture
def device(tmp_path: Path) -> Path:
    db = tmp_path / "device.db"
    with DeviceStore.create(db) as store:
        for form_id in BUILTIN_IDS:
            store.put_form(builtin_json(form_id))
    return db


# --- in-process -----------------------------------------------------------------------------


def prompter(form_id: str, answers: list[str]) -> tuple[FormPrompter, io.StringIO]:
    out = io.StringIO()
    reader = LineReader(io.StringIO("".join(a + "\n" for a in answers)))
    context = EvaluationContext(today=date(2026, 11, 25))
    return FormPrompter(load_builtin(form_id), context, reader, out), out


def test_skip_logic_hides_questions_and_shows_others() -> None:
    answers = ["A", "2026-03-01", "9", "2005", "2", "120.5", "鉴定安全", "否", ""]
    asker, out = prompter("housing_safety", answers)
    data = asker.run()
    assert data == {
        "appraisal_grade": "A",
        "appraisal_date": "2026-03-01",
        "structure": "钢筋混凝土",
        "build_year": 2005,
        "storeys": 2,
        "floor_area": 120.5,
        "safety_basis": "鉴定安全",
    }
    text = out.getvalue()
    # Grade A: the renovation block is never asked.
    assert label("housing_safety", "renovation_method") not in text


def test_typed_answers_are_checked_and_asked_again() -> None:
    answers = [
        "Z",  # not a choice
        "1",  # A, by number
        "2099-01-01",  # after today: the constraint says no
        "2026-03-01",
        "",  # structure is required
        "钢筋混凝土",
        "很多",  # not a number
        "1800",  # before 1900
        "1990",
        "",
        "",
        "",
        "否",
        "",
    ]
    asker, out = prompter("housing_safety", answers)
    data = asker.run()
    assert data["appraisal_grade"] == "A" and data["build_year"] == 1990
    text = out.getvalue()
    assert text.count("✗") == 5
    assert "鉴定日期不能晚于今天" in text
    assert "此项为必填项" in text
    assert "应为整数" in text


def test_nested_repeats_and_skip_logic_on_a_calculated_age() -> None:
    answers = [
        "",  # survey date: today
        "是",  # add a child
        "张小",
        id_number("20160301", "003"),  # ten years old on the school-age date: asked about school
        "健康",
        "",  # not in school ...
        "外出打工",  # ... so the dropout reason is required and asked
        "",
        "是",  # a persuade-back visit (a repeat inside the child's row)
        "2026-10-01",
        "王老师",
        "劝返中",
        "否",  # no second visit
        "是",  # a second child
        "张幼",
        id_number("20220301", "004"),  # four: the school questions are skipped
        "健康",
        "否",
    ]
    asker, out = prompter("compulsory_education", answers)
    data = asker.run()
    first, second = data["children"]
    assert first["age"] == 10 and first["dropout_reason"] == "外出打工"
    (visit,) = first["persuasions"]
    assert visit["visited_by"] == "王老师" and visit["result"] == "劝返中"
    assert second["age"] == 4
    assert "dropout_reason" not in second and "persuasions" not in second
    assert out.getvalue().count(label("compulsory_education", "children/dropout_reason")) == 1


def test_end_of_input_returns_what_was_typed() -> None:
    asker, _ = prompter("household_roster", ["530102001201", "", "0009", "1", "", "", "王五"])
    with pytest.raises(InputEnded) as info:
        asker.run()
    assert info.value.data["household_no"] == "0009"
    assert info.value.data["members"][0]["name"] == "王五"


# --- a pipe into the real console script ----------------------------------------------------


def test_piped_answers_follow_skip_logic_and_register_photos(device: Path, tmp_path: Path) -> None:
    photo = tmp_path / "house.jpg"
    photo.write_bytes(b"\xff\xd8photo bytes")
    answers = [
        "无房",  # no house: structure, year, storeys and area are skipped
        "",  # basis of safety
        "选址新建",
        "1999",  # before 2000: asked again
        "2025",
        "是",
        "两万",  # not a number: asked again
        "20000",
        "是",
        "是",  # add a photo row
        str(photo),
        "新房正面",
        "否",
        "25.04,102.71",
    ]
    done = subprocess.run(
        [str(VILLAGE_DEVICE), "fill", "housing_safety", "--household", "530102001201/0001"],
        input="".join(a + "\n" for a in answers),
        capture_output=True,
        text=True,
        env={**ENV, "VILLAGE_DEVICE_DB": str(device)},
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "已保存记录" in done.stdout
    assert label("housing_safety", "structure") not in done.stdout
    assert done.stdout.count("✗") == 2
    with DeviceStore.open(device) as store:
        (record,) = store.records()
        (attachment,) = store.attachments()
    assert record.household == {"village_code": "530102001201", "household_no": "0001"}
    assert "structure" not in record.data
    assert record.data["renovation_year"] == 2025
    assert record.data["renovation_subsidy"] == 20000
    assert record.data["location"] == {"lat": 25.04, "lon": 102.71}
    assert record.data["photos"][0]["photo"] == f"sha256:{attachment['sha256']}"


def test_a_form_without_household_fields_asks_for_the_household_first(device: Path) -> None:
    answers = [
        "530102/3",  # not a 12-digit village code: asked again
        "530102001201/0003",
        "集中供水入户",
        "60",
        "检测报告",
        "是",
        "2",
    ]
    done = subprocess.run(
        [str(VILLAGE_DEVICE), "fill", "drinking_water", "--json"],
        input="".join(a + "\n" for a in answers),
        capture_output=True,
        text=True,
        env={**ENV, "VILLAGE_DEVICE_DB": str(device)},
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "12位行政村代码" in done.stderr  # the question and its complaint, on stderr
    assert json.loads(done.stdout)["seq"] == 1  # stdout stays one JSON object
    with DeviceStore.open(device) as store:
        (record,) = store.records()
    assert record.household == {"village_code": "530102001201", "household_no": "0003"}
    assert record.data["water_safe"] is True


def test_no_input_at_all_saves_nothing(device: Path) -> None:
    done = subprocess.run(
        [str(VILLAGE_DEVICE), "fill", "drinking_water"],
        input="",
        capture_output=True,
        text=True,
        env={**ENV, "VILLAGE_DEVICE_DB": str(device)},
        timeout=60,
    )
    assert done.returncode == 1 and "未保存" in done.stderr
    with DeviceStore.open(device) as store:
        assert store.drafts() == []


def test_piped_input_that_ends_early_is_kept_as_a_draft(device: Path) -> None:
    done = subprocess.run(
        [str(VILLAGE_DEVICE), "fill", "housing_safety", "--household", "530102001201/0002"],
        input="C\n2026-02-02\n",
        capture_output=True,
        text=True,
        env={**ENV, "VILLAGE_DEVICE_DB": str(device)},
        timeout=60,
    )
    assert done.returncode == 1
    assert "草稿" in done.stderr and "Traceback" not in done.stderr
    with DeviceStore.open(device) as store:
        (draft,) = store.drafts()
        assert store.records() == []
    assert draft.data == {"appraisal_grade": "C", "appraisal_date": "2026-02-02"}
    assert draft.household == {"village_code": "530102001201", "household_no": "0002"}


# --- a real pseudo-terminal -----------------------------------------------------------------


class Terminal:
    """A child process on a pseudo-terminal, answered only after each question appears."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
        )
        os.close(slave)
        self.master = master
        self.buffer = ""
        self.position = 0

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 4096)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not chunk:
            return False
        self.buffer += chunk.decode("utf-8", errors="replace")
        return True

    def expect(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            found = self.buffer.find(text, self.position)
            if found >= 0:
                self.position = found + len(text)
                return
            if time.monotonic() > deadline or not self._read(0.2):
                raise AssertionError(f"never saw {text!r}; output so far:\n{self.buffer}")

    def answer(self, question: str, reply: str) -> None:
        self.expect(question)
        os.write(self.master, (reply + "\n").encode("utf-8"))

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(0.2):
            if self.proc.poll() is not None and not select.select([self.master], [], [], 0)[0]:
                break
        code = self.proc.wait(timeout=10)
        os.close(self.master)
        return code, self.buffer


def test_a_roster_with_two_members_on_a_real_terminal(device: Path) -> None:
    form = "household_roster"

    def q(path: str) -> str:
        return "\n" + label(form, path)

    term = Terminal([str(VILLAGE_DEVICE), "fill", form], {**ENV, "VILLAGE_DEVICE_DB": str(device)})
    try:
        term.answer(q("village_code"), "530102001201")
        term.answer(q("natural_village"), "上村")
        term.answer(q("household_no"), "0001")
        term.answer(q("household_type"), "1")
        term.answer(q("low_income_flags"), "1,3")
        term.answer(q("phone"), "12345")
        term.expect("手机号应为1开头的11位数字")
        term.answer(q("phone"), "13800138000")
        people = [
            ("张三", id_number("19700101", "003"), "户主", "男"),
            ("李梅", id_number("19720305", "002"), "配偶", "女"),
        ]
        for number, (name, id_no, relation, sex) in enumerate(people, start=1):
            if number > 1:
                term.answer(f"第 {number} 行？", "是")
            term.answer(q("members/name"), name)
            term.answer(q("members/person_no"), "")
            term.answer(q("members/id_type"), "1")
            term.answer(q("members/id_number"), id_no)
            term.answer(q("members/relation"), relation)
            term.answer(q("members/sex"), sex)
            term.answer(q("members/education_level"), "初中")
            term.answer(q("members/schooling"), "")
            term.answer(q("members/health"), "健康")
            term.answer(q("members/labour_capacity"), "普通劳动力")
            term.answer(q("members/work_location"), "")
            term.answer(q("members/work_months"), "")
        term.answer("第 3 行？", "否")
        code, output = term.finish()
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
            term.proc.wait()
    assert code == 0, output
    assert "已保存记录" in output
    with DeviceStore.open(device) as store:
        (record,) = store.records()
        ops = store.pending_ops()
    assert [m["name"] for m in record.data["members"]] == ["张三", "李梅"]
    assert record.data["low_income_flags"] == ["农村低保户", "贫困残疾人户"]
    assert record.household == {"village_code": "530102001201", "household_no": "0001"}
    assert [op.seq for op in ops] == [1]
    assert json.loads(json.dumps(ops[0].to_dict()))["changes"]["phone"] == "13800138000"


def test_ctrl_c_ends_the_interview_like_end_of_input() -> None:
    answers = iter(["A", "2026-03-01"])

    def read() -> str | None:
        try:
            return next(answers)
        except StopIteration:
            raise KeyboardInterrupt from None

    asker = FormPrompter(
        load_builtin("housing_safety"),
        EvaluationContext(today=date(2026, 11, 25)),
        read,
        io.StringIO(),
    )
    with pytest.raises(InputEnded) as info:
        asker.run()
    assert info.value.data == {"appraisal_grade": "A", "appraisal_date": "2026-03-01"}


# --- XLSForm features: choice_filter, repeat_count, default ---------------------------------

CASCADE_FORM = """
| survey |
|        | type                              | name    | label::中文 (zh) | choice_filter    | repeat_count | default |
|        | select_one county                 | county  | 县               |                  |              | c1      |
|        | select_one_from_file villages.csv | village | 村               | county=${county} |              |         |
|        | integer                           | size    | 人数             |                  |              | 2       |
|        | begin_repeat                      | member  | 成员             |                  | ${size}      |         |
|        | text                              | mname   | 姓名             |                  |              |         |
|        | end_repeat                        |         |                  |                  |              |         |
| choices |
|         | list_name | name | label::中文 (zh) |
|         | county    | c1   | 一县             |
|         | county    | c2   | 二县             |
| settings |
|          | form_id | version    | form_title |
|          | pick    | 2026112501 | 选村       |
"""
CASCADE_VILLAGES = "name,label::中文 (zh),county\nv1,上寨,c1\nv2,下寨,c2\nv3,河边,c1\n"


def cascade_prompter(answers: list[str]) -> tuple[FormPrompter, io.StringIO]:
    from forms.xlsform import read_xlsform

    read = read_xlsform(
        CASCADE_FORM.encode(),
        "pick.md",
        attachments={"villages.csv": CASCADE_VILLAGES.encode()},
    )
    out = io.StringIO()
    reader = LineReader(io.StringIO("".join(a + "\n" for a in answers)))
    context = EvaluationContext(today=date(2026, 11, 25))
    return FormPrompter(read.definition, context, reader, out), out


def test_choices_follow_the_filter_defaults_are_proposed_and_the_count_sets_the_rows() -> None:
    # Enter takes the default county (c1); "2" is the second village OFFERED (河边, not 下寨);
    # Enter takes the default size 2; exactly two rows are asked, no "add another?".
    asker, out = cascade_prompter(["", "2", "", "王一", "王二"])
    data = asker.run()
    assert data["county"] == "c1" and data["village"] == "v3" and data["size"] == 2
    assert [row["mname"] for row in data["member"]] == ["王一", "王二"]
    text = out.getvalue()
    assert "默认：一县（直接回车采用）" in text
    assert "1.上寨  2.河边" in text and "下寨" not in text  # only c1's villages were offered
    assert "「成员」共 2 行" in text and "添加「成员」" not in text


def test_a_typed_choice_the_filter_does_not_offer_is_refused_and_asked_again() -> None:
    # County c2, then the village typed by its value v1 (a c1 village): refused, then v2.
    asker, out = cascade_prompter(["2", "v1", "v2", "0"])
    data = asker.run()
    assert data["county"] == "c2" and data["village"] == "v2" and data["size"] == 0
    assert "member" not in data
    text = out.getvalue()
    assert "✗ 按前面的回答，不能选「上寨」" in text
    assert "1.下寨" in text
