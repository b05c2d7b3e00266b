"""``village-device``: every verb through click's CliRunner, plus real subprocess runs."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from forms.instruments.samples import sample_household
from sync_protocol.crypto import generate_server_keys
from tests.client.test_records import id_number, member, roster
from village_client_stub.cli import main
from village_client_stub.store import DeviceStore
from village_client_stub.sync_client import Backoff, SyncClient, SyncFailed

VILLAGE_DEVICE = Path(sys.executable).with_name("village-device")


def run(args: list[str], db: Path, input: str | None = None) -> Any:
    runner = CliRunner()
    return runner.invoke(main, [*args, "--db", str(db)], input=input, catch_exceptions=False)


def run_json(args: list[str], db: Path, expect_code: int = 0) -> dict[str, Any]:
    result = run([*args, "--json"], db)
    assert result.exit_code == expect_code, result.output + result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def device(tmp_path: Path) -> Path:
    db = tmp_path / "device.db"
    assert run(["init"], db).exit_code == 0
    assert run(["load-forms", "--builtin"], db).exit_code == 0
    return db


def test_init_creates_an_owner_only_store_and_refuses_twice(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    body = run_json(["init"], db)
    assert body["ok"] and body["device_id"].startswith("dev-")
    assert set(body["public_keys"]) >= {"encryption_public", "signing_public"}
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    again = run(["init"], db)
    assert again.exit_code == 1
    assert again.stderr.count("\n") == 1 and "已有设备数据文件" in again.stderr
    assert "Traceback" not in again.output + again.stderr


def test_verbs_without_a_store_say_so_in_one_line(tmp_path: Path) -> None:
    for verb in (["forms"], ["records"], ["status"], ["edit", "x", "--set", "a=1"]):
        result = run(verb, tmp_path / "none.db")
        assert result.exit_code == 1
        assert result.stderr.count("\n") == 1
        assert "village-device init" in result.stderr
    body = run_json(["status"], tmp_path / "none.db", expect_code=1)
    assert body["ok"] is False and body["error"]["code"] == "store_not_found"


def test_forms_lists_the_builtin_instruments(device: Path) -> None:
    body = run_json(["forms"], device)
    ids = [f["form_id"] for f in body["forms"]]
    assert "household_roster" in ids and len(ids) == 6
    text = run(["forms"], device).stdout
    assert "农村住房安全" in text


def test_fill_from_a_file_edit_records_and_status(device: Path, tmp_path: Path) -> None:
    record_file = tmp_path / "roster.json"
    record_file.write_text(json.dumps(roster(), ensure_ascii=False), encoding="utf-8")
    filled = run_json(["fill", "household_roster", "--from", str(record_file)], device)
    assert filled["seq"] == 1
    record_id = filled["record_id"]

    edited = run_json(["edit", record_id[:8], "--set", "phone=13800138000"], device)
    assert edited["seq"] == 2 and edited["paths"] == ["phone"]
    human = run(["edit", record_id, "--set", "members/+1/name=张小", *_child_sets()], device)
    assert human.exit_code == 0, human.stderr
    assert "操作序号 3" in human.stdout

    listed = run_json(["records"], device)
    (only,) = listed["records"]
    assert only["record_id"] == record_id and only["pending"] is True
    assert len(only["data"]["members"]) == 3

    shown = run_json(["show", record_id[:8]], device)
    assert shown["record"]["data"]["phone"] == "13800138000"

    status = run_json(["status"], device)
    assert status["pending_ops"] == 3 and status["last_seq"] == 3
    deleted = run_json(["delete", record_id[:8]], device)
    assert deleted["seq"] == 4
    assert run_json(["records"], device)["records"] == []
    status = run_json(["status"], device)
    assert status["pending_ops"] == 4 and status["last_seq"] == 4
    assert status["last_sync_at"] is None and status["rejected"] == []
    text = run(["status"], device).stdout
    assert "待同步操作 4 个" in text and "从未" in text


def _child_sets() -> list[str]:
    child = member("张小", "之子", "男", "20150601", education_level=None, schooling="小学")
    out = []
    for key, value in child.items():
        if value and key != "name":
            shown = ",".join(value) if isinstance(value, list) else value
            out += ["--set", f"members/+1/{key}={shown}"]
    return out


def test_invalid_fill_prints_the_reasons_and_keeps_a_draft(device: Path, tmp_path: Path) -> None:
    bad = roster()
    bad["members"][0]["id_number"] = "530102197001010011"  # wrong check digit
    record_file = tmp_path / "bad.json"
    record_file.write_text(json.dumps(bad, ensure_ascii=False), encoding="utf-8")
    result = run(["fill", "household_roster", "--from", str(record_file)], device)
    assert result.exit_code == 1
    assert "身份证号无效" in result.stderr and "草稿" in result.stderr
    assert "Traceback" not in result.stderr
    body = run_json(["fill", "household_roster", "--from", str(record_file)], device, 1)
    draft_id = body["error"]["draft_id"]
    assert body["error"]["issues"][0]["path"].endswith("/id_number")
    status = run_json(["status"], device)
    assert draft_id in [d["draft_id"] for d in status["drafts"]]
    assert status["pending_ops"] == 0
    fixed = run_json(
        ["edit", draft_id, "--set", f"members/#1/id_number={id_number('19700101', '003')}"], device
    )
    assert fixed["seq"] == 1


@pytest.mark.parametrize(
    "args",
    [
        ["fill", "no_such_form", "--from", "x.json"],
        ["fill", "housing_safety", "--household", "12/3", "--from", "x.json"],
        ["fill", "housing_safety", "--from", "does-not-exist.json"],
        ["edit", "no-such-record", "--set", "a=1"],
        ["edit", "no-such-record"],
        ["load-forms"],
    ],
)
def test_bad_input_is_one_clear_line(device: Path, args: list[str]) -> None:
    result = run(args, device)
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("错误：")
    assert "Traceback" not in result.output + result.stderr


def test_an_unreadable_json_file_is_refused(device: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    result = run(["fill", "housing_safety", "--from", str(broken)], device)
    assert result.exit_code == 1 and "无法读取 JSON" in result.stderr
    array = tmp_path / "array.json"
    array.write_text("[1, 2]", encoding="utf-8")
    result = run(["fill", "housing_safety", "--from", str(array)], device)
    assert result.exit_code == 1 and "JSON 对象" in result.stderr


def test_edit_with_a_bad_value_names_the_field(device: Path, tmp_path: Path) -> None:
    record_file = tmp_path / "roster.json"
    record_file.write_text(json.dumps(roster(), ensure_ascii=False), encoding="utf-8")
    record_id = run_json(["fill", "household_roster", "--from", str(record_file)], device)[
        "record_id"
    ]
    result = run(["edit", record_id, "--set", "members/#1/work_months=很多"], device)
    assert result.exit_code == 1
    assert "务工时间" in result.stderr or "work_months" in result.stderr
    assert result.stderr.count("\n") == 1


def test_load_forms_with_a_config_file(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    run(["init"], db)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"water_region_type": "water_short"}), encoding="utf-8")
    body = run_json(["load-forms", "--builtin", "--config", str(config)], db)
    assert body["config"] is True and len(body["loaded"]) == 6


def test_the_installed_console_script_runs_for_real(tmp_path: Path) -> None:
    db = tmp_path / "real.db"
    env = {**os.environ, "VILLAGE_DEVICE_DB": str(db)}
    for args in (["init", "--json"], ["load-forms", "--builtin", "--json"]):
        done = subprocess.run(
            [str(VILLAGE_DEVICE), *args], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 0, done.stderr
    record_file = tmp_path / "roster.json"
    record_file.write_text(json.dumps(roster(), ensure_ascii=False), encoding="utf-8")
    done = subprocess.run(
        [str(VILLAGE_DEVICE), "fill", "household_roster", "--from", str(record_file), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["seq"] == 1
    status = subprocess.run(
        [str(VILLAGE_DEVICE), "status"], capture_output=True, text=True, env=env, timeout=60
    )
    assert status.returncode == 0 and "待同步操作 1 个" in status.stdout
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_status_lists_unfinished_photos_with_their_reason(device: Path, tmp_path: Path) -> None:
    photo = tmp_path / "front.jpg"
    photo.write_bytes(b"\xff\xd8photo")
    with DeviceStore.open(device) as store:
        digest = store.add_attachment(photo).removeprefix("sha256:")
        store.note_upload_error(digest, "无法连接服务器", "server unreachable")
    result = run(["status"], device)
    assert result.exit_code == 0
    assert "尚未上传完的照片 1 张" in result.stdout
    assert f"{digest[:12]}…" in result.stdout and "无法连接服务器" in result.stdout


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _enrolled_at(db: Path, url: str) -> None:
    keys = generate_server_keys()
    with DeviceStore.open(db) as store:
        store.set_enrollment(
            server_url=url,
            server_encryption_public=keys.encryption_public.raw(),
            server_signing_public=keys.signing_public.raw(),
            server_key_id=keys.encryption_public.key_id(),
            scope="530102001201",
        )


def test_sync_with_nothing_listening_says_each_retry_and_gives_up(device: Path) -> None:
    _enrolled_at(device, f"http://127.0.0.1:{_closed_port()}")
    result = run(["sync"], device)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 3
    assert all("服务器无应答" in line and "retrying in" in line for line in lines[:2])
    assert "连续 3 次拒绝连接" in lines[2] and "Traceback" not in result.stderr
    with DeviceStore.open(device) as store:
        assert "refused the connection" in (store.sync_state().last_error or "")


def test_keep_trying_retries_refused_connections_up_to_max_failures(device: Path) -> None:
    _enrolled_at(device, f"http://127.0.0.1:{_closed_port()}")
    waits: list[float] = []
    notes: list[str] = []
    with DeviceStore.open(device) as store:
        client = SyncClient(
            store,
            max_failures=5,
            refused_limit=None,
            backoff=Backoff(base_s=0.001, cap_s=0.002),
            sleep=waits.append,
            on_retry=lambda delay, _en, zh: notes.append(zh),
        )
        with pytest.raises(SyncFailed) as info:
            client.sync()
    assert "连续 5 次同步失败" in info.value.message_zh
    assert len(waits) == len(notes) == 4


def test_init_calls_its_id_temporary(tmp_path: Path) -> None:
    result = run(["init"], tmp_path / "t.db")
    assert result.exit_code == 0
    assert "临时编号" in result.stdout and "注册后由服务器分配" in result.stdout
    assert run_json(["init"], tmp_path / "u.db")["device_id_temporary"] is True


def test_records_and_status_speak_the_field_workers_language(device: Path, tmp_path: Path) -> None:
    house = tmp_path / "house.json"
    sample = sample_household(1, village_code="530102001201")["housing_safety"]
    sample.pop("photos")
    house.write_text(json.dumps(sample, ensure_ascii=False), encoding="utf-8")
    ids = [
        run_json(
            [
                "fill",
                "housing_safety",
                "--household",
                f"530102001201/5301020012010000{n}",
                "--from",
                str(house),
            ],
            device,
        )["record_id"]
        for n in (1, 2, 3)
    ]
    conflict_id = "c-" + "ab" * 16
    with DeviceStore.open(device) as store:
        store.mark_rejected(1, [{"code": "invalid", "message": {"zh": "不对", "en": "wrong"}}])
        store.mark_sent([2])
        store.mark_acked(
            [2], [{"seq": 2, "status": "conflict", "revision": 1, "conflict_ids": [conflict_id]}]
        )
        store.db.execute(
            "UPDATE conflicts SET listed = 1, detail = ? WHERE conflict_id = ?",
            [
                json.dumps(
                    {"kind": "field", "path": "appraisal_grade", "mine": "A", "theirs": "D"}
                ),
                conflict_id,
            ],
        )
    text = run(["records"], device).stdout
    lines = {line.split()[0]: line for line in text.splitlines()}
    assert "被拒绝" in lines[ids[0]] and "有冲突" in lines[ids[1]] and "待同步" in lines[ids[2]]
    assert "农户住房安全" in lines[ids[2]] or "住房" in lines[ids[2]]
    assert "530102001201/53010200120100003 户" in lines[ids[2]]
    states = [r["state"] for r in run_json(["records"], device)["records"]]
    assert sorted(states) == ["conflict", "pending", "rejected"]

    status = run(["status"], device).stdout
    (line,) = [line for line in status.splitlines() if conflict_id in line]
    assert "户 530102001201/53010200120100002" in line
    assert '本机 "A"，对方 "D"' in line
    assert "字段「" in line and "appraisal_grade" not in line


def test_a_revoked_device_and_its_last_error_show_in_chinese(device: Path) -> None:
    _enrolled_at(device, "http://127.0.0.1:9")
    with DeviceStore.open(device) as store:
        store.record_sync_result(
            ok=False,
            error="device_revoked: this device was revoked",
            error_zh="本设备已被县里停用",
            code="device_revoked",
        )
    text = run(["status"], device).stdout
    assert "已停用" in text and "已注册" not in text
    assert "上次同步错误：本设备已被县里停用" in text
    body = run_json(["status"], device)
    assert body["revoked"] is True and body["last_error_code"] == "device_revoked"


def test_household_help_shows_a_17_digit_household_number() -> None:
    result = CliRunner().invoke(main, ["fill", "--help"])
    assert "530102001201/53010200120100017" in result.output


def test_records_of_an_unknown_form_is_one_line(device: Path) -> None:
    result = run(["records", "--form", "nosuch"], device)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    body = run_json(["records", "--form", "nosuch"], device, expect_code=1)
    assert body["error"]["code"] == "unknown_form"


def test_a_damaged_device_file_is_one_clear_line_on_every_verb(device: Path) -> None:
    data = bytearray(device.read_bytes())
    assert len(data) > 8192
    data[4096:] = b"\x5a" * (len(data) - 4096)  # every page after the first overwritten
    device.write_bytes(bytes(data))
    verbs = [
        ["records"],
        ["status"],
        ["forms"],
        ["show", "x"],
        ["edit", "x", "--set", "a=1"],
        ["delete", "x"],
        ["sync"],
        ["enroll", "--server", "http://127.0.0.1:9", "--code", "AAAA-BBBB-CCCC-DDDD"],
    ]
    for verb in verbs:
        body = run_json(verb, device, expect_code=1)
        assert body["error"]["code"] == "store_unusable", (verb, body)
        text = run(verb, device)
        assert text.exit_code == 1 and text.stderr.count("\n") == 1
        assert "已损坏" in text.stderr and "程序内部错误" not in text.stderr


def test_enroll_with_an_api_url_hints_at_the_server_root(device: Path) -> None:
    body = run_json(
        ["enroll", "--server", "http://127.0.0.1:9/api/v1", "--code", "AAAA-BBBB-CCCC-DDDD"],
        device,
        expect_code=1,
    )
    assert (
        "/api/v1" in body["error"]["message"]["zh"] and "根地址" in body["error"]["message"]["zh"]
    )
