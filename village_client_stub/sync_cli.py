"""The networked verbs of ``village-device``: ``enroll``, ``sync`` and ``simulate``.

They live here, next to the sync client, and are attached to the ``village-device`` group by
:func:`add_sync_commands` (called once from ``village_client_stub.cli``), so they share its
``--db``/``--json`` options and its one-line error handling.

* ``enroll --server URL --code CODE`` — enrol this device and download forms and records.
* ``sync`` — upload the outbox and download what changed, with a progress bar (records and
  bytes) on stderr, retrying with backoff after drops; one line when the server refuses; then
  upload the photos not yet confirmed, resuming each from the server's offset.
* ``simulate --server URL …`` — enrol N fresh devices in a folder, fill realistic households
  on each and sync them all (load tests, demos, benchmarks).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from sync_protocol import outbox_file
from village_client_stub.enrollment import enroll as enroll_device
from village_client_stub.errors import BadInput
from village_client_stub.store import DeviceStore
from village_client_stub.sync_client import SyncClient, SyncProgress, SyncReport
from village_client_stub.transport import DEFAULT_TIMEOUT_S, HttpTransport
from village_client_stub.uploads import UploadClient

__all__ = ["ProgressBar", "add_sync_commands"]


class ProgressBar:
    """A click progress bar over ops (records) whose label shows bytes up and down.

    Draws on stderr, so ``--json`` output on stdout stays one object; hidden when ``enabled``
    is False.
    """

    def __init__(self, label: str, *, enabled: bool = True) -> None:
        self.label = label
        self.enabled = enabled
        self._bar: Any = None
        self._done = 0

    def __call__(self, progress: SyncProgress) -> None:
        """Take one progress report (the sync client's ``on_progress``)."""
        if not self.enabled:
            return
        if self._bar is None:
            self._bar = click.progressbar(
                length=max(progress.ops_total, 1),
                label=self.label,
                file=sys.stderr,
                show_pos=True,
                item_show_func=lambda _item: None,
            )
            self._bar.__enter__()
        self._bar.length = max(progress.ops_total, progress.ops_done, 1)
        wait = f" 等待 {progress.waiting_s:.0f}s 后重试" if progress.waiting_s >= 1 else ""
        self._bar.label = (
            f"{self.label} ↑{_size(progress.bytes_up)} ↓{_size(progress.bytes_down)}"
            f" 记录↓{progress.records_received}{wait}"
        )
        step = progress.ops_done - self._done
        self._done = progress.ops_done
        self._bar.update(max(step, 0))

    def close(self) -> None:
        """Finish the bar's line."""
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.2f} MiB"


def _report_lines(report: SyncReport) -> list[str]:
    lines = [
        f"同步完成：确认 {report.ops_acked} 个操作，收到 {report.records_received} 条记录、"
        f"{report.forms_received} 个表单；上传 {_size(report.bytes_up)}，下载 "
        f"{_size(report.bytes_down)}，{report.exchanges} 次交换，{report.failures} 次重试，"
        f"用时 {report.elapsed_s:.1f} 秒"
    ]
    if report.ops_rejected:
        lines.append(
            f"被服务器拒绝、等待修改的操作 {len(report.ops_rejected)} 个（见 village-device status）"
        )
    if report.conflicts:
        lines.append(f"产生冲突 {len(report.conflicts)} 个，等待县里审核")
    if report.forms_kept_local:
        lines.append(
            f"服务器发来的表单 {'、'.join(report.forms_kept_local)} 与本机同版本的内容不同，"
            "保留本机的版本（请联系管理员核对）"
        )
    return lines


def add_sync_commands(
    group: click.Group,
    device_command: Callable[[Callable[..., Any]], Callable[..., Any]],
    emit_json: Callable[[Mapping[str, Any]], None],
) -> None:
    """Attach ``enroll``, ``sync`` and ``simulate`` to ``group`` (the ``village-device`` CLI).

    ``device_command`` is the CLI's decorator adding ``--db``/``--json`` and error handling;
    ``emit_json`` prints one JSON object.
    """

    @group.command(help="向县级服务器注册本设备。Enrol this device with the county server.")
    @click.option("--server", "server_url", required=True, help="Server URL, http://host:port.")
    @click.option("--code", required=True, help="One-time enrollment code from the county.")
    @click.option("--label", default="", help="A note the county sees (team, tablet).")
    @click.option("--timeout", type=float, default=DEFAULT_TIMEOUT_S, show_default=True)
    @device_command
    def enroll(
        db_path: Path, as_json: bool, server_url: str, code: str, label: str, timeout: float
    ) -> None:
        if urlsplit(server_url).path.rstrip("/").endswith("/api/v1"):
            raise BadInput(
                f"--server should be the server root (e.g. http://host:8000), without /api/v1: "
                f"got {server_url}",
                message_zh=f"服务器地址应为根地址（如 http://host:8000），不要带 /api/v1：{server_url}",
            )
        bar = ProgressBar("下载表单和记录", enabled=not as_json and sys.stderr.isatty())
        with DeviceStore.open(db_path) as store:
            try:
                result = enroll_device(
                    store,
                    server_url,
                    code,
                    label=label,
                    transport=HttpTransport(server_url, timeout=timeout),
                    on_progress=bar,
                )
            finally:
                bar.close()
        if as_json:
            emit_json({"ok": True, **result.to_dict()})
            return
        click.echo(
            f"已注册：服务器分配的设备编号 {result.device_id}，范围 {result.scope}，"
            f"服务器 {result.server_url}"
        )
        click.echo(f"设备上的表单 {len(result.forms_on_device)} 个")
        if result.first_sync_error:
            click.echo(
                f"首次下载未完成（{result.first_sync_error}），请稍后运行 village-device sync"
            )

    @group.command(
        "export-outbox",
        help="把待发送的修改写入文件，带到有网络的地方导入服务器。"
        "Write the pending outbox to FILE (sealed, as a sync would send it).",
    )
    @click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
    @device_command
    def export_outbox(db_path: Path, as_json: bool, file: Path) -> None:
        with DeviceStore.open(db_path) as store:
            identity = store.identity()
            client = SyncClient(store)
            body, ops = client.seal_outbox()
            data = outbox_file.encode(
                {
                    "device_id": store.device_id,
                    "server_url": identity.server_url or "",
                    "created_at_ms": store.now_ms(),
                    "ops": len(ops),
                    "first_seq": ops[0].seq if ops else 0,
                    "last_seq": ops[-1].seq if ops else 0,
                },
                body,
            )
        try:
            # Never over an existing file: it may be another export not yet carried.
            with open(file, "xb") as handle:
                handle.write(data)
        except FileExistsError:
            raise BadInput(
                f"{file} exists already; choose another name",
                message_zh=f"文件 {file} 已存在，请换一个文件名",
            ) from None
        summary = {"file": str(file), "ops": len(ops), "bytes": len(data)}
        if as_json:
            emit_json(summary)
            return
        click.echo(
            f"已写入 {file}：{len(ops)} 项待发送修改，{len(data)} 字节。"
            f"在县/乡镇管理页面“设备”中导入，或运行 python -m server import-batch {file.name}；"
            "下次联网同步时本机会收到确认。"
        )
        click.echo(f"wrote {file}: {len(ops)} pending ops, {len(data)} bytes")

    @group.command(help="与服务器同步（上传、下载，断线自动重试）。Sync with the server.")
    @click.option(
        "--max-failures",
        type=int,
        default=10,
        show_default=True,
        help="Give up after this many failed attempts in a row (backoff 1 s, 2 s, 4 s … 5 min).",
    )
    @click.option(
        "--keep-trying",
        is_flag=True,
        help="Keep retrying (up to --max-failures) even when the server refuses the connection "
        "from the start; by default sync gives up after 3 refused connections.",
    )
    @click.option("--timeout", type=float, default=DEFAULT_TIMEOUT_S, show_default=True)
    @device_command
    def sync(
        db_path: Path, as_json: bool, max_failures: int, keep_trying: bool, timeout: float
    ) -> None:
        bar = ProgressBar("同步", enabled=not as_json and sys.stderr.isatty())

        def retrying(delay: float, reason: str, reason_zh: str) -> None:
            prefix = "网络中断或服务器无应答（"
            if reason_zh.startswith(prefix) and reason_zh.endswith("）"):
                reason_zh = reason_zh[len(prefix) : -1]
            click.echo(
                f"服务器无应答（{reason_zh}），{delay:.0f} 秒后重试… / "
                f"server unreachable ({reason}), retrying in {delay:.0f} s",
                err=True,
            )

        with DeviceStore.open(db_path) as store:
            url = store.identity().server_url
            transport = HttpTransport(url, timeout=timeout) if url else None
            client = SyncClient(
                store,
                transport,
                on_progress=bar,
                max_failures=max_failures,
                refused_limit=None if keep_trying else 3,
                on_retry=retrying,
            )
            try:
                report = client.sync()
            finally:
                bar.close()
            # Photos go after the records: a record is useful without its photo, not vice versa.
            uploads = UploadClient(store, client.transport, max_failures=max_failures).upload_all()
            status = store.status()
        if as_json:
            emit_json(
                {
                    "ok": True,
                    **report.to_dict(),
                    "pending_ops": status["pending_ops"],
                    "attachments": uploads.to_dict(),
                }
            )
            return
        for line in _report_lines(report):
            click.echo(line)
        if uploads.uploaded or uploads.failed:
            click.echo(
                f"照片上传 {len(uploads.uploaded)} 张，未完成 {len(uploads.failed)} 张"
                "（已确认的部分会保留，下次继续）"
            )

    @group.command(
        help="模拟多台设备：注册、填写样例农户并同步。Simulate N devices with sample households."
    )
    @click.option("--server", "server_url", required=True, help="Server URL, http://host:port.")
    @click.option("--admin-user", default="admin", show_default=True)
    @click.option(
        "--admin-password",
        envvar="VILLAGE_ADMIN_PASSWORD",
        required=True,
        help="Admin password (or $VILLAGE_ADMIN_PASSWORD); used to issue enrollment codes.",
    )
    @click.option("--devices", type=int, default=3, show_default=True)
    @click.option("--households", type=int, default=10, show_default=True, help="Per device.")
    @click.option("--village", default="530102001201", show_default=True, help="First village.")
    @click.option(
        "--forms",
        "form_ids",
        default="",
        help="Comma-separated instruments to fill (default: all six).",
    )
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option(
        "--dir",
        "folder",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("simulated-devices"),
        show_default=True,
    )
    @click.option("--parallel", is_flag=True, help="Sync all devices at once (threads).")
    @device_command
    def simulate(
        db_path: Path,
        as_json: bool,
        server_url: str,
        admin_user: str,
        admin_password: str,
        devices: int,
        households: int,
        village: str,
        form_ids: str,
        seed: int,
        folder: Path,
        parallel: bool,
    ) -> None:
        from village_client_stub.simulator import Simulator

        os.makedirs(folder, exist_ok=True)
        simulator = Simulator(
            server_url,
            folder,
            admin_user=admin_user,
            admin_password=admin_password,
            form_ids=tuple(f for f in form_ids.split(",") if f) or None,
        )
        result = simulator.run(
            devices=devices,
            households=households,
            first_village=village,
            seed=seed,
            parallel=parallel,
        )
        if as_json:
            emit_json({"ok": True, **result.to_dict()})
            return
        for line in result.lines():
            click.echo(line)
