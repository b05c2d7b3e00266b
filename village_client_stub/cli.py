"""``village-device``: the command line standing in for the village tablet app.

Every verb takes ``--db PATH`` (default ``./device.db``, or ``$VILLAGE_DEVICE_DB``) and ``--json``
(one JSON object on stdout, for scripts). Text output is Chinese. A user mistake prints one line
on stderr (Chinese, then English) and exits 1; a usage mistake exits 2; nothing prints a
traceback. The verbs are described in docs/device.md.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from forms.errors import FormsError
from forms.instruments import BUILTIN_IDS, builtin_json
from forms.verification import DATA_ERRORS
from sync_protocol.errors import ProtocolError
from village_client_stub.errors import BadInput, DeviceError, RecordInvalid
from village_client_stub.prompts import FormPrompter, InputEnded, LineReader, ask_household
from village_client_stub.records import RecordEditor, default_round, parse_household
from village_client_stub.store import DeviceStore
from village_client_stub.sync_cli import add_sync_commands
from village_client_stub.tasks import (
    DETAIL_CHOICES,
    OUTCOME_CHOICES,
    local_status,
    outcome_choices,
    task_lines,
    work_task,
)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USER_ERROR = 1
EXIT_INTERNAL = 70


def _emit_json(payload: Mapping[str, Any]) -> None:
    click.echo(json.dumps(payload, ensure_ascii=False, indent=2, sort_keys=True, default=str))


def _fail(
    as_json: bool, code: str, zh: str, en: str, extra: Mapping[str, Any] | None = None
) -> None:
    if as_json:
        _emit_json(
            {"ok": False, "error": {"code": code, "message": {"zh": zh, "en": en}, **(extra or {})}}
        )
    else:
        click.echo(f"错误：{zh}（{en}）", err=True)


def device_command(func: F) -> F:
    """Add ``--db`` and ``--json`` and turn every known error into one line (or one JSON)."""

    @click.option(
        "--db",
        "db_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=Path("device.db"),
        envvar="VILLAGE_DEVICE_DB",
        show_default=True,
        help="The device's data file.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")
    @functools.wraps(func)
    def wrapper(*args: Any, db_path: Path, as_json: bool, **kwargs: Any) -> None:
        try:
            func(*args, db_path=db_path, as_json=as_json, **kwargs)
        except RecordInvalid as exc:
            _fail(
                as_json,
                exc.code,
                exc.message_zh,
                exc.message,
                {"draft_id": exc.draft_id, "issues": exc.issues},
            )
            if not as_json:
                for line in _issue_lines(exc.issues, exc.labels):
                    click.echo(line, err=True)
            sys.exit(EXIT_USER_ERROR)
        except (DeviceError, FormsError, ProtocolError) as exc:
            _fail(as_json, exc.code, exc.message_zh, exc.message)
            sys.exit(EXIT_USER_ERROR)
        except sqlite3.DatabaseError as exc:
            _fail(
                as_json,
                "store_unusable",
                f"设备数据文件 {db_path} 已损坏或无法使用（{exc}），请联系管理员用备份恢复",
                f"the device file {db_path} is damaged or unusable: {exc}",
            )
            sys.exit(EXIT_USER_ERROR)
        except OSError as exc:
            _fail(as_json, "os_error", f"文件操作失败：{exc.strerror or exc}", str(exc))
            sys.exit(EXIT_USER_ERROR)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:  # the promise is one line, never a traceback
            _fail(as_json, "internal_error", f"程序内部错误：{type(exc).__name__}", str(exc))
            sys.exit(EXIT_INTERNAL)

    return wrapper  # type: ignore[return-value]


def _issue_lines(
    issues: list[Mapping[str, Any]], labels: Mapping[str, str] | None = None
) -> list[str]:
    lines = []
    for issue in issues:
        mark = "✗" if issue.get("severity", "error") == "error" else "!"
        path = issue.get("path") or ""
        where = (labels or {}).get(path) or issue.get("field") or path
        row = issue.get("row")
        prefix = f"第{row}行 " if row else ""
        text = (issue.get("message") or {}).get("zh", "")
        lines.append(f"  {mark} {prefix}{where}：{text}")
    return lines


def _open(db_path: Path) -> DeviceStore:
    return DeviceStore.open(db_path)


@click.group(help="村级调查设备（离线采集）— the village survey device, offline.")
def main() -> None:
    """Entry point of the ``village-device`` console script."""


# --- init and forms -------------------------------------------------------------------------


@main.command(help="创建设备数据文件和设备密钥。Create the device store and keys.")
@device_command
def init(db_path: Path, as_json: bool) -> None:
    with DeviceStore.create(db_path) as store:
        identity = store.identity()
    if as_json:
        _emit_json(
            {
                "ok": True,
                "db": str(db_path),
                "device_id": identity.device_id,
                "device_id_temporary": True,
                "public_keys": identity.public_keys,
            }
        )
        return
    click.echo(f"已创建设备数据文件 {db_path}（仅本人可读）")
    click.echo(
        f"临时编号 {identity.device_id}（临时编号，注册后由服务器分配正式设备编号）"
        " / temporary local id, the server assigns the device id at enrollment"
    )
    click.echo(f"加密密钥 {identity.encryption_key_id}，签名密钥 {identity.signing_key_id}")
    click.echo("没有服务器时可用 `village-device load-forms --builtin` 载入内置调查表。")


@main.command("load-forms", help="载入表单（离线/开发用）。Load forms without a server.")
@click.option("--builtin", is_flag=True, help="The six built-in instruments.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON object of evaluation configuration (e.g. monitoring).",
)
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@device_command
def load_forms(
    db_path: Path, as_json: bool, builtin: bool, config_file: Path | None, files: tuple[Path, ...]
) -> None:
    if not builtin and not files and config_file is None:
        raise BadInput(
            "give --builtin, form JSON files or --config",
            message_zh="请指定 --builtin、表单 JSON 文件或 --config",
        )
    documents = [builtin_json(form_id) for form_id in BUILTIN_IDS] if builtin else []
    documents += [_read_json(path) for path in files]
    loaded = []
    with _open(db_path) as store:
        for document in documents:
            defn = store.put_form(document)
            loaded.append({"form_id": defn.id, "version": defn.version, "title": defn.title.zh})
        if config_file is not None:
            config = _read_json(config_file)
            if not isinstance(config, dict):
                raise BadInput(
                    "the config file must hold a JSON object", message_zh="配置文件应为 JSON 对象"
                )
            store.set_config(config)
    if as_json:
        _emit_json({"ok": True, "loaded": loaded, "config": config_file is not None})
        return
    for item in loaded:
        click.echo(f"已载入 {item['form_id']} 第{item['version']}版 {item['title']}")
    if config_file is not None:
        click.echo("已载入配置")


@main.command(help="列出设备上的表单。List the forms on the device.")
@device_command
def forms(db_path: Path, as_json: bool) -> None:
    with _open(db_path) as store:
        summaries = store.forms()
    if as_json:
        _emit_json(
            {
                "ok": True,
                "forms": [
                    {
                        "form_id": f.form_id,
                        "version": f.version,
                        "title": f.title_zh,
                        "current": f.current,
                    }
                    for f in summaries
                ],
            }
        )
        return
    if not summaries:
        click.echo("设备上还没有表单。")
        return
    for f in summaries:
        click.echo(f"{f.form_id:24} 第{f.version}版{' (当前)' if f.current else ''}  {f.title_zh}")


# --- fill and edit --------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(
            f"cannot read JSON from {path}: {exc}", message_zh=f"无法读取 JSON 文件 {path}"
        ) from exc


def _report_saved(as_json: bool, result: Any, verb_zh: str) -> None:
    if as_json:
        _emit_json({"ok": True, **result.to_dict()})
        return
    if result.op is None:
        click.echo(f"记录 {result.record_id} 没有改动。")
        return
    click.echo(f"已{verb_zh}记录 {result.record_id}（操作序号 {result.op.seq}，待同步）")
    for line in _issue_lines(result.warnings):
        click.echo(line)


@main.command(help="填写新记录。Fill a new record (interactive without --from).")
@click.argument("form_id")
@click.option("--household", help="VILLAGECODE/HOUSEHOLDNO, e.g. 530102001201/53010200120100017.")
@click.option("--round", "round_", help="Survey round, default <year>-annual.")
@click.option(
    "--from",
    "from_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Record data as a JSON object instead of questions.",
)
@device_command
def fill(
    db_path: Path,
    as_json: bool,
    form_id: str,
    household: str | None,
    round_: str | None,
    from_file: Path | None,
) -> None:
    where = parse_household(household) if household else None
    with _open(db_path) as store:
        editor = RecordEditor(store)
        defn = store.form(form_id)
        if from_file is not None:
            data = _read_json(from_file)
            if not isinstance(data, dict):
                raise BadInput(
                    "the record file must hold a JSON object", message_zh="记录文件应为 JSON 对象"
                )
        else:
            # Questions go to stderr under --json so stdout stays one JSON object.
            out = click.get_text_stream("stderr" if as_json else "stdout")
            read = LineReader(click.get_text_stream("stdin"))
            try:
                if where is None and defn.find_field("village_code") is None:
                    # The form does not ask for its household itself: ask first, not after
                    # the whole interview.
                    where = ask_household(read, out, editor.check_scope)
                elif where is not None:
                    editor.check_scope(where)
                prompter = FormPrompter(defn, editor.context(where), read, out, store=store)
                data = prompter.run()
            except InputEnded as ended:
                if not ended.data:
                    raise BadInput(
                        "input ended before anything was answered; nothing saved",
                        message_zh="输入中断，尚未填写任何内容，未保存",
                    ) from None
                draft_id = store.save_draft(
                    form_id=defn.id,
                    form_version=defn.version,
                    data=ended.data,
                    issues=[],
                    household=where,
                    round=round_ or default_round(editor.today),
                )
                raise BadInput(
                    f"input ended before the form was finished; kept as draft {draft_id}",
                    message_zh=f"输入中断，表单未填完；已保存为草稿 {draft_id}",
                ) from None
        result = editor.fill(form_id, data, household=where, round=round_)
    _report_saved(as_json, result, "保存")


@main.command(help="修改记录或草稿。Edit a record or a draft: --set path=value.")
@click.argument("target")
@click.option("--set", "assignments", multiple=True, help="path=value; rows as #N, +N or row id.")
@click.option("--delete-row", "deletions", multiple=True, help="repeat/<row> to delete.")
@device_command
def edit(
    db_path: Path,
    as_json: bool,
    target: str,
    assignments: tuple[str, ...],
    deletions: tuple[str, ...],
) -> None:
    if not assignments and not deletions:
        raise BadInput(
            "nothing to change: give --set or --delete-row",
            message_zh="没有要修改的内容：请用 --set 或 --delete-row",
        )
    with _open(db_path) as store:
        result = RecordEditor(store).edit(target, assignments, deletions)
    _report_saved(as_json, result, "修改")


@main.command(help="删除整条记录。Delete a whole record (sent as a delete op).")
@click.argument("record")
@device_command
def delete(db_path: Path, as_json: bool, record: str) -> None:
    with _open(db_path) as store:
        result = RecordEditor(store).delete(record)
    _report_saved(as_json, result, "删除")


# --- looking around -------------------------------------------------------------------------


@main.command(help="列出记录。List the records on the device.")
@click.option("--form", "form_id", help="Only this form.")
@device_command
def records(db_path: Path, as_json: bool, form_id: str | None) -> None:
    with _open(db_path) as store:
        if form_id is not None:
            store.form(form_id)  # UnknownForm: one line, exit 1
        found = store.records(form_id=form_id)
        pending = {op.record_id for op in store.pending_ops()}
        rejected = {entry.op.record_id for entry in store.rejected_ops()}
        conflicted = {c["record_id"] for c in store.conflicts("open")}
        titles = {f.form_id: f.title_zh for f in store.forms() if f.current}
    states = {
        r.record_id: (
            "rejected"
            if r.record_id in rejected
            else "conflict"
            if r.record_id in conflicted
            else "pending"
            if r.record_id in pending
            else "synced"
        )
        for r in found
    }
    if as_json:
        _emit_json(
            {
                "ok": True,
                "records": [
                    {**r.to_dict(), "pending": r.record_id in pending, "state": states[r.record_id]}
                    for r in found
                ],
            }
        )
        return
    if not found:
        click.echo("没有记录。")
        return
    words = {"rejected": "被拒绝", "conflict": "有冲突", "pending": "待同步", "synced": "已同步"}
    for r in found:
        hh = (
            f"{r.household['village_code']}/{r.household['household_no']} 户"
            if r.household
            else "-"
        )
        title = titles.get(r.form_id) or r.form_id
        click.echo(
            f"{r.record_id}  {title}（{r.form_id}@{r.form_version}）  {hh}  {r.round or '-'}  "
            f"{words[states[r.record_id]]}"
        )


@main.command(help="显示一条记录。Show one record.")
@click.argument("record")
@device_command
def show(db_path: Path, as_json: bool, record: str) -> None:
    with _open(db_path) as store:
        found = store.find_record(record)
    if as_json:
        _emit_json({"ok": True, "record": found.to_dict()})
        return
    click.echo(json.dumps(found.to_dict(), ensure_ascii=False, indent=2, sort_keys=True))


@main.command(help="同步状态：待发送、被拒绝、冲突、草稿。Outbox, rejections, conflicts, drafts.")
@device_command
def status(db_path: Path, as_json: bool) -> None:
    with _open(db_path) as store:
        info = store.status()
    if as_json:
        _emit_json({"ok": True, **info})
        return
    if info["revoked"]:
        where = f"已停用（县里已停用本设备，请联系管理员）{info['server_url']}"
    elif info["enrolled"]:
        where = f"已注册 {info['server_url']}"
    else:
        where = "未注册服务器（临时编号）"
    click.echo(f"设备 {info['device_id']}  {where}")
    click.echo(
        f"记录 {info['records']} 条；待同步操作 {info['pending_ops']} 个（序号至 {info['last_seq']}，已确认至 {info['acked_through']}）"
    )
    click.echo(f"上次成功同步：{info['last_sync_at'] or '从未'}")
    if info["last_error"]:
        click.echo(f"上次同步错误：{info['last_error_zh'] or info['last_error']}")
    if info["rejected"]:
        click.echo(f"被服务器拒绝、等待修改的操作 {len(info['rejected'])} 个：")
        for entry in info["rejected"]:
            click.echo(f"  操作 {entry['seq']}  记录 {entry['record_id']}")
            click.echo("\n".join(_issue_lines(entry["reasons"] or [])) or "  （无原因）")
    if info["conflicts"]:
        click.echo(f"等待审核的冲突 {len(info['conflicts'])} 个：")
        for conflict in info["conflicts"]:
            click.echo("  " + _conflict_line(conflict))
    if info["photos_unfinished"]:
        click.echo(f"尚未上传完的照片 {len(info['photos_unfinished'])} 张：")
        for photo in info["photos_unfinished"]:
            reason = photo["reason"]["zh"] if photo["reason"] else "等待同步时上传"
            click.echo(
                f"  {photo['sha256'][:12]}…  已上传 {photo['confirmed_offset']}/{photo['size']} 字节  {reason}"
            )
    if info["tasks_open"]:
        click.echo(f"待核查任务 {info['tasks_open']} 个（用 tasks 查看，task 任务编号 填写结果）")
    if info["drafts"]:
        click.echo(f"未完成的草稿 {len(info['drafts'])} 个（用 edit 草稿编号 --set 修改）：")
        for draft in info["drafts"]:
            click.echo(f"  {draft['draft_id']}  {draft['form_id']}  {draft['issues']} 处问题")


def _conflict_line(conflict: Mapping[str, Any]) -> str:
    detail = conflict["detail"]
    parts = [f"冲突 {conflict['conflict_id']}"]
    if conflict.get("household"):
        parts.append(f"户 {conflict['household']}")
    parts.append(f"记录 {conflict['record_id']}")
    if detail.get("kind") == "duplicate_household" or conflict.get("listed") == 0:
        parts.append("同户重复记录，等待审核")
    elif conflict.get("field_label") or detail.get("path"):
        parts.append(f"字段「{conflict.get('field_label') or detail.get('path')}」")
    if "mine" in detail and "theirs" in detail:
        mine = json.dumps(detail["mine"], ensure_ascii=False)
        theirs = json.dumps(detail["theirs"], ensure_ascii=False)
        parts.append(f"本机 {mine}，对方 {theirs}")
    return "  ".join(parts)


# --- verification tasks ---------------------------------------------------------------------


@main.command("tasks", help="列出核查任务。List the verification tasks on the device.")
@click.option(
    "--status", type=click.Choice(["open", "worked", "closed"]), help="Only tasks in this state."
)
@device_command
def list_tasks(db_path: Path, as_json: bool, status: str | None) -> None:
    with _open(db_path) as store:
        found = [{**task, "local_status": local_status(store, task)} for task in store.tasks()]
        if status is not None:
            found = [task for task in found if task["local_status"] == status]
        if as_json:
            _emit_json({"ok": True, "tasks": found})
            return
        if not found:
            click.echo("没有核查任务。")
            return
        for task in found:
            for line in task_lines(store, task):
                click.echo(line)


@main.command("task", help="查看核查任务并填写结果。Show a task; record its outcome.")
@click.argument("task_id")
@click.option(
    "--outcome",
    type=click.Choice(OUTCOME_CHOICES),
    help="start_identification / not_eligible / data_error / already_solved / already_monitored; "
    "a village-level task: not_village_resident / add_to_roster / data_error (moved).",
)
@click.option(
    "--detail",
    type=click.Choice(DETAIL_CHOICES),
    help="For data_error: death / empty_household / duplicate / wrong_id / moved.",
)
@click.option("--note", default="", help="What was checked and found.")
@click.option("--photo", help="An evidence photo: a file path or a sha256: address.")
@click.option("--show", "show_only", is_flag=True, help="Only show the task.")
@device_command
def task(
    db_path: Path,
    as_json: bool,
    task_id: str,
    outcome: str | None,
    detail: str | None,
    note: str,
    photo: str | None,
    show_only: bool,
) -> None:
    with _open(db_path) as store:
        found = store.task(task_id)
        if show_only or (outcome is None and as_json):
            if as_json:
                _emit_json(
                    {"ok": True, "task": {**found, "local_status": local_status(store, found)}}
                )
            else:
                for line in task_lines(store, found, full=True):
                    click.echo(line)
            return
        if outcome is None:
            # Interactive: the questions of the outcome, with the coded choices numbered.
            for line in task_lines(store, found, full=True):
                click.echo(line)
            outcome = _choose("核查结果 Outcome", outcome_choices(found))
            if outcome == "data_error" and detail is None:
                detail = _choose("数据错误类型 Kind of data error", DATA_ERRORS)
            if not note:
                note = click.prompt("核查说明 Note", default="", show_default=False)
        result = work_task(store, found["task_id"], outcome, detail=detail, note=note, photo=photo)
    if as_json:
        _emit_json({"ok": True, **result.to_dict()})
        return
    click.echo(
        f"已记录任务 {result.task_id} 的核查结果（记录 {result.result.record_id}，"
        f"操作序号 {result.result.op.seq if result.result.op else '-'}，待同步）"
    )


def _choose(title: str, choices: Mapping[str, tuple[str, str]]) -> str:
    keys = list(choices)
    click.echo(title)
    for number, key in enumerate(keys, 1):
        zh, en = choices[key]
        click.echo(f"  {number}. {zh}（{en}）")
    picked = click.prompt("请输入序号 Number", type=click.IntRange(1, len(keys)))
    return keys[picked - 1]


# enroll, sync and simulate: the networked verbs (village_client_stub/sync_cli.py).
add_sync_commands(main, device_command, _emit_json)


if __name__ == "__main__":
    main()
